//! Create, list, read, update and delete a tenant's subscriptions.

use actix_web::{web, HttpResponse};
use diesel_async::AsyncConnection;
use shared::{
    crypto, db, header_values,
    models::{endpoint_health, subscription},
};
use uuid::Uuid;

use super::{
    dto::{
        CreateSubscriptionRequest, ListParams, Rules, SubscriptionPage, SubscriptionView, SubscriptionWithSecret,
        UpdateSubscriptionRequest,
    },
    page,
};
use crate::{
    auth::{Tenant, TenantScope},
    error::ApiError,
    extract::{Json, Query},
    openapi::{ErrorBody, TenantAuthErrors},
    state::AppState,
};

/// Creates a subscription and returns it with its signing secret (shown only here).
#[utoipa::path(post, path = "/api/v1/webhooks/subscriptions", tag = "subscriptions",
    request_body = CreateSubscriptionRequest,
    responses(
        (status = 201, body = SubscriptionWithSecret, description = "Created; `secret` is shown only now"),
        (status = 400, body = ErrorBody, description = "The body is not JSON"),
        TenantAuthErrors,
        (status = 422, body = ErrorBody, description = "A field is missing or invalid; `details.field` names it"),
    ),
    security(("bearer" = [])))]
pub async fn create_subscription(
    tenant: Tenant,
    state: web::Data<AppState>,
    Json(body): Json<CreateSubscriptionRequest>,
) -> Result<HttpResponse, ApiError> {
    let tenant_id = tenant.0.as_str();
    let id = Uuid::now_v7();
    let secret = crypto::generate_signing_secret()?;
    let new = body.validate(&Rules::of(&state), id, tenant_id, state.secrets.seal(&id, &secret)?)?;
    let mut conn = db::conn(&state.pool).await?;
    let row = subscription::insert(&mut conn, new).await?;
    log::info!("subscription created tenant_id={tenant_id} subscription_id={id}");
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/webhooks/subscriptions/{id}")))
        .json(SubscriptionWithSecret::new(row, None, secret, &state.secrets)?))
}

/// Lists the tenant's subscriptions, oldest first, a page at a time.
#[utoipa::path(get, path = "/api/v1/webhooks/subscriptions", tag = "subscriptions",
    params(ListParams),
    responses(
        (status = 200, body = SubscriptionPage),
        (status = 400, body = ErrorBody, description = "Malformed query string (e.g. a non-numeric limit)"),
        TenantAuthErrors,
        (status = 422, body = ErrorBody, description = "`limit` out of 1–100, or a `cursor` this API did not issue"),
    ),
    security(("bearer" = [])))]
pub async fn list_subscriptions(
    tenant: Tenant,
    state: web::Data<AppState>,
    Query(params): Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    let tenant_id = tenant.0.as_str();
    let limit = page::parse_limit(params.limit)?;
    let after = params.cursor.as_deref().map(page::decode_cursor).transpose()?;
    let mut conn = db::conn(&state.pool).await?;
    let rows = subscription::list(&mut conn, tenant_id, after, limit).await?;
    let (rows, next_cursor) = page::split_page(rows, limit, |row| page::encode_cursor(row.id));
    let ids: Vec<Uuid> = rows.iter().map(|row| row.id).collect();
    let health = endpoint_health::for_subscriptions(&mut conn, &ids).await?;
    let items = rows
        .into_iter()
        .map(|row| {
            let h = health.get(&row.id);
            SubscriptionView::new(row, h, &state.secrets)
        })
        .collect::<Result<_, _>>()?;
    Ok(HttpResponse::Ok().json(SubscriptionPage { items, next_cursor }))
}

/// One subscription (without its secret).
#[utoipa::path(get, path = "/api/v1/webhooks/subscriptions/{id}", tag = "subscriptions",
    params(("id" = Uuid, Path, description = "Subscription id")),
    responses(
        (status = 200, body = SubscriptionView),
        TenantAuthErrors,
        (status = 404, body = ErrorBody, description = "No such subscription for this tenant"),
    ),
    security(("bearer" = [])))]
pub async fn get_subscription(scope: TenantScope, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (tenant_id, id) = (scope.tenant_id.as_str(), scope.id);
    let mut conn = db::conn(&state.pool).await?;
    let row = super::live_subscription(&mut conn, tenant_id, id).await?;
    let health = endpoint_health::for_subscriptions(&mut conn, &[id]).await?;
    Ok(HttpResponse::Ok().json(SubscriptionView::new(row, health.get(&id), &state.secrets)?))
}

/// Changes any subset of the fields; absent fields stay as they are.
#[utoipa::path(patch, path = "/api/v1/webhooks/subscriptions/{id}", tag = "subscriptions",
    params(("id" = Uuid, Path, description = "Subscription id")),
    request_body = UpdateSubscriptionRequest,
    responses(
        (status = 200, body = SubscriptionView),
        (status = 400, body = ErrorBody, description = "The body is not JSON"),
        TenantAuthErrors,
        (status = 404, body = ErrorBody, description = "No such subscription for this tenant"),
        (status = 422, body = ErrorBody, description = "A field is invalid; `details.field` names it"),
    ),
    security(("bearer" = [])))]
pub async fn update_subscription(
    scope: TenantScope,
    state: web::Data<AppState>,
    Json(body): Json<UpdateSubscriptionRequest>,
) -> Result<HttpResponse, ApiError> {
    let (tenant_id, id) = (scope.tenant_id.as_str(), scope.id);
    let (mut changes, headers) = body.validate(&Rules::of(&state))?;
    let reenabled = changes.is_active == Some(true);
    let secrets = &state.secrets;
    let mut conn = db::conn(&state.pool).await?;
    let row = conn
        .transaction(async move |conn| {
            if let Some(mut headers) = headers {
                // `"***"` keeps a stored value: read it under a row lock, so a
                // concurrent PATCH cannot slip in between.
                if headers.has_masked() {
                    let current =
                        subscription::find_for_update(conn, tenant_id, id).await?.ok_or(ApiError::NotFound)?;
                    let stored = header_values::open(secrets, &id, &current.headers, current.headers_encrypted)?;
                    headers = headers.keep_masked(&stored)?;
                }
                changes.headers = Some(header_values::seal(secrets, &id, headers.as_map())?);
                changes.headers_encrypted = Some(true);
            }
            subscription::update(conn, tenant_id, id, changes).await?.ok_or(ApiError::NotFound)
        })
        .await?;
    if reenabled {
        // Re-enabling is the user saying the endpoint works again: its health starts over.
        endpoint_health::reset(&mut conn, id).await?;
    }
    log::info!("subscription updated tenant_id={tenant_id} subscription_id={id}");
    let health = endpoint_health::for_subscriptions(&mut conn, &[id]).await?;
    Ok(HttpResponse::Ok().json(SubscriptionView::new(row, health.get(&id), &state.secrets)?))
}

/// Deletes a subscription: nothing more is delivered to it; its delivery log stays.
#[utoipa::path(delete, path = "/api/v1/webhooks/subscriptions/{id}", tag = "subscriptions",
    params(("id" = Uuid, Path, description = "Subscription id")),
    responses(
        (status = 204, description = "Deleted"),
        TenantAuthErrors,
        (status = 404, body = ErrorBody, description = "No such subscription for this tenant"),
    ),
    security(("bearer" = [])))]
pub async fn delete_subscription(scope: TenantScope, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (tenant_id, id) = (scope.tenant_id.as_str(), scope.id);
    let mut conn = db::conn(&state.pool).await?;
    if !subscription::soft_delete(&mut conn, tenant_id, id).await? {
        return Err(ApiError::NotFound);
    }
    log::info!("subscription deleted tenant_id={tenant_id} subscription_id={id}");
    Ok(HttpResponse::NoContent().finish())
}

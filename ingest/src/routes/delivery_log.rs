//! `GET /webhooks/deliveries`: the tenant-wide delivery log, newest first,
//! in the same page shape as a subscription's log.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use shared::{
    db,
    models::delivery::{self, LogFilter},
};
use utoipa::IntoParams;
use uuid::Uuid;

use super::{
    deliveries::{decode_cursor, encode_cursor, parse_status, DeliveryPage, DeliveryView},
    window::parse_optional_time,
};
use crate::{
    auth::Tenant,
    error::ApiError,
    extract::Query,
    openapi::{ErrorBody, TenantAuthErrors},
    routes::subscriptions::page,
    state::AppState,
};

/// `GET /webhooks/deliveries` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantLogParams {
    /// `pending`, `retrying`, `succeeded` or `failed`.
    pub status: Option<String>,
    /// Only deliveries of this event type.
    pub event_type: Option<String>,
    /// Only deliveries to this subscription (also a deleted one).
    pub subscription_id: Option<String>,
    /// Only deliveries created at or after this RFC 3339 time.
    pub since: Option<String>,
    /// Only deliveries created before this RFC 3339 time.
    pub until: Option<String>,
    /// 1 to 100, default 50.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Every delivery of the tenant, newest first, a page at a time.
#[utoipa::path(get, path = "/api/v1/webhooks/deliveries", tag = "deliveries",
    params(TenantLogParams),
    responses(
        (status = 200, body = DeliveryPage),
        (status = 400, body = ErrorBody, description = "Malformed query string (e.g. a non-numeric limit)"),
        TenantAuthErrors,
        (status = 422, body = ErrorBody, description = "Unknown `status`, a malformed `subscription_id` or time, `limit` out of 1–100, or a `cursor` this API did not issue"),
    ),
    security(("bearer" = [])))]
pub async fn list_tenant_deliveries(
    Tenant(tenant_id): Tenant,
    state: web::Data<AppState>,
    Query(params): Query<TenantLogParams>,
) -> Result<HttpResponse, ApiError> {
    let tenant_id = tenant_id.as_str();
    let limit = page::parse_limit(params.limit)?;
    let subscription_id = params
        .subscription_id
        .as_deref()
        .map(|raw| {
            Uuid::parse_str(raw)
                .map_err(|_| ApiError::invalid_value("subscription_id", raw, "must be a subscription id"))
        })
        .transpose()?;
    let filter = LogFilter {
        status: params.status.as_deref().map(parse_status).transpose()?,
        event_type: params.event_type,
        subscription_id,
        since: parse_optional_time("since", params.since.as_deref())?,
        until: parse_optional_time("until", params.until.as_deref())?,
        after: params.cursor.as_deref().map(decode_cursor).transpose()?,
    };
    let mut conn = db::conn(&state.pool).await?;
    let rows = delivery::list(&mut conn, tenant_id, &filter, limit).await?;
    let (rows, next_cursor) = page::split_page(rows, limit, encode_cursor);
    let items = rows.into_iter().map(DeliveryView::from).collect();
    Ok(HttpResponse::Ok().json(DeliveryPage { items, next_cursor }))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/webhooks/deliveries").route(web::get().to(list_tenant_deliveries)));
}

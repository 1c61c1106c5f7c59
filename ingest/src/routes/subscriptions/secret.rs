//! Rotating a subscription's signing secret. The previous secret keeps
//! signing `webhook-signature` for 24 hours, so receivers can switch over.

use actix_web::{web, HttpResponse};
use shared::{crypto, db, models::subscription};

use super::{dto::SubscriptionWithSecret, parse_id};
use crate::{auth::Auth, error::ApiError, openapi::ErrorBody, state::AppState};

/// Replaces the signing secret and returns the subscription with the new one.
#[utoipa::path(post, path = "/api/v1/webhooks/subscriptions/{id}/rotate-secret", tag = "subscriptions",
    params(("id" = Uuid, Path, description = "Subscription id")),
    responses(
        (status = 200, body = SubscriptionWithSecret, description = "The new `secret`, shown only now"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "Not a tenant key"),
        (status = 404, body = ErrorBody, description = "No such subscription for this tenant"),
    ),
    security(("bearer" = [])))]
pub async fn rotate_secret(
    auth: Auth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tenant_id = auth.tenant()?;
    let id = parse_id(&path)?;
    let secret = crypto::generate_signing_secret()?;
    let sealed = state.secrets.seal(&id, &secret)?;
    let mut conn = db::conn(&state.pool).await?;
    let row = subscription::rotate_secret(&mut conn, tenant_id, id, sealed).await?.ok_or(ApiError::NotFound)?;
    log::info!("subscription secret rotated tenant_id={tenant_id} subscription_id={id}");
    Ok(HttpResponse::Ok().json(SubscriptionWithSecret::new(row, secret, &state.secrets)?))
}

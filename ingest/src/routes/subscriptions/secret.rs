//! Rotating a subscription's signing secret. The previous secret keeps
//! signing `webhook-signature` for 24 hours, so receivers can switch over.

use actix_web::{web, HttpResponse};
use shared::{
    crypto, db,
    models::{endpoint_health, subscription},
};

use super::dto::SubscriptionWithSecret;
use crate::{
    auth::TenantScope,
    error::ApiError,
    openapi::{ErrorBody, TenantAuthErrors},
    state::AppState,
};

/// Replaces the signing secret and returns the subscription with the new one.
#[utoipa::path(post, path = "/api/v1/webhooks/subscriptions/{id}/rotate-secret", tag = "subscriptions",
    params(("id" = Uuid, Path, description = "Subscription id")),
    responses(
        (status = 200, body = SubscriptionWithSecret, description = "The new `secret`, shown only now"),
        TenantAuthErrors,
        (status = 404, body = ErrorBody, description = "No such subscription for this tenant"),
    ),
    security(("bearer" = [])))]
pub async fn rotate_secret(scope: TenantScope, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (tenant_id, id) = (scope.tenant_id.as_str(), scope.id);
    let secret = crypto::generate_signing_secret()?;
    let sealed = state.secrets.seal(&id, &secret)?;
    let mut conn = db::conn(&state.pool).await?;
    let row = subscription::rotate_secret(&mut conn, tenant_id, id, sealed).await?.ok_or(ApiError::NotFound)?;
    log::info!("subscription secret rotated tenant_id={tenant_id} subscription_id={id}");
    let health = endpoint_health::for_subscriptions(&mut conn, &[id]).await?;
    Ok(HttpResponse::Ok().json(SubscriptionWithSecret::new(row, health.get(&id), secret, &state.secrets)?))
}

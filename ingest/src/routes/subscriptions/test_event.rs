//! `POST /webhooks/subscriptions/{id}/test`: sends a `webhook.test` event to
//! one subscription. A paused subscription is a 409: nothing would be sent.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use shared::db;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    auth::TenantScope,
    error::ApiError,
    openapi::{ErrorBody, TenantAuthErrors},
    publishing::body::EventToPublish,
    routes::subscriptions::live_subscription,
    state::AppState,
};

/// What the test endpoint queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestEventQueued {
    pub event_id: String,
    pub delivery_id: Uuid,
}

/// Sends a `webhook.test` event to this one subscription, whatever its `events`.
#[utoipa::path(post, path = "/api/v1/webhooks/subscriptions/{id}/test", tag = "deliveries",
    params(("id" = Uuid, Path, description = "Subscription id")),
    responses(
        (status = 202, body = TestEventQueued),
        TenantAuthErrors,
        (status = 404, body = ErrorBody, description = "No such subscription for this tenant"),
        (status = 409, body = ErrorBody, description = "The subscription is paused"),
    ),
    security(("bearer" = [])))]
pub async fn send_test_event(scope: TenantScope, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (tenant_id, subscription_id) = (scope.tenant_id.as_str(), scope.id);
    let mut conn = db::conn(&state.pool).await?;
    let sub = live_subscription(&mut conn, tenant_id, subscription_id).await?;
    drop(conn);
    if !sub.is_active {
        return Err(ApiError::Conflict("the subscription is paused (is_active is false); activate it first".into()));
    }
    let event = EventToPublish {
        event_id: format!("evt_{}", Uuid::now_v7().simple()),
        event_type: "webhook.test".to_owned(),
        tenant_id: tenant_id.to_owned(),
        data: serde_json::json!({ "message": "test event", "subscription_id": subscription_id }),
        metadata: serde_json::json!({}),
        source: "test",
    };
    // Stored like any publish (the batcher queues the delivery once committed).
    let result = state.fanout.send_test(&event, subscription_id).await?;
    // Deleted between the check and the fan-out: nothing was created.
    // Queued, or parked behind the subscription's open circuit.
    let delivery_id = result.created.iter().chain(&result.parked).next().ok_or(ApiError::NotFound)?.delivery_id;
    log::info!("test event queued tenant_id={tenant_id} subscription_id={subscription_id} delivery_id={delivery_id}");
    Ok(HttpResponse::Accepted().json(TestEventQueued { event_id: result.event_id, delivery_id }))
}

//! `POST /webhooks/subscriptions/{id}/test`: sends a `webhook.test` event to
//! one subscription. A paused subscription is a 409: nothing would be sent.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use shared::db;
use utoipa::ToSchema;
use uuid::Uuid;

use super::parse_id;
use crate::{
    auth::Auth,
    error::ApiError,
    openapi::ErrorBody,
    publishing::fanout::{self, Audience, EventToPublish},
    routes::deliveries::live_subscription,
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
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody, description = "Not a tenant key"),
        (status = 404, body = ErrorBody, description = "No such subscription for this tenant"),
        (status = 409, body = ErrorBody, description = "The subscription is paused"),
    ),
    security(("bearer" = [])))]
pub async fn send_test_event(
    auth: Auth,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tenant_id = auth.tenant()?;
    let subscription_id = parse_id(&path)?;
    let mut conn = db::conn(&state.pool).await?;
    let sub = live_subscription(&mut conn, tenant_id, subscription_id).await?;
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
    let result = fanout::fan_out(&mut conn, &state.catalog, &event, Audience::Subscription(subscription_id)).await?;
    drop(conn);
    // Deleted between the check and the fan-out: nothing was created.
    let delivery_id = *result.created.first().ok_or(ApiError::NotFound)?;
    state.dispatch.enqueue_new(&result.created);
    log::info!("test event queued tenant_id={tenant_id} subscription_id={subscription_id} delivery_id={delivery_id}");
    Ok(HttpResponse::Accepted().json(TestEventQueued { event_id: result.event_id, delivery_id }))
}

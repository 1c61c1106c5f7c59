//! `POST /events`: publishing over HTTP.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use shared::models::api_key::Principal;

use crate::{
    auth::Auth, error::ApiError, extract::BudgetedJson, metric_names, publishing::body::PublishBody, state::AppState,
};

/// The publish answer: the event id and how many deliveries it has.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PublishResponse {
    pub event_id: String,
    /// Matched subscriptions (on a repeated `event_id`: those of the first publish).
    pub deliveries: i32,
}

/// Publishes an event for a tenant: 202 once the event and its deliveries are
/// durable (with `INGEST_BACKPRESSURE_LAG` set, held while one of its
/// subscriptions is behind, at most `INGEST_BACKPRESSURE_MAX_WAIT`); 200 with
/// the first result when the `event_id` was seen before.
#[utoipa::path(post, path = "/api/v1/events", tag = "publishing", request_body = PublishBody,
    responses((status = 202, body = PublishResponse), (status = 200, body = PublishResponse),
              (status = 400), (status = 401), (status = 403), (status = 408), (status = 413), (status = 422), (status = 503)),
    security(("bearer" = [])))]
pub async fn publish_event(
    auth: Auth,
    state: web::Data<AppState>,
    BudgetedJson { body, guard }: BudgetedJson<PublishBody>,
) -> Result<HttpResponse, ApiError> {
    let event = body.validate(&state.catalog, "http")?;
    if let Principal::Tenant(tenant) = &auth.0 {
        if *tenant != event.tenant_id {
            return Err(ApiError::Forbidden("a tenant key may publish only for its own tenant".into()));
        }
    }
    // Answered once the batch holding this event is committed; the batcher
    // has queued its new deliveries by then.
    let prepared = state.fanout.prepare(&event)?;
    let event_type = event.event_type;
    // Only the serialized envelope is held from here on, not the parsed data.
    drop(event.data);
    let result = state.fanout.submit(&prepared).await?;
    // The body's bytes were taken from the budget until the event was stored.
    drop((prepared, guard));
    let response = PublishResponse { event_id: result.event_id, deliveries: result.delivery_count };
    if !result.is_new {
        return Ok(HttpResponse::Ok().json(response));
    }
    metrics::counter!(metric_names::EVENTS_ACCEPTED, "source" => "http", "event_type" => event_type).increment(1);
    metrics::counter!(metric_names::DELIVERIES_CREATED).increment(result.delivery_count as u64);
    // Durable and queued already: a subscription that is behind only delays this answer.
    state.admission.hold(result.created.iter().map(|attempt| attempt.subscription_id)).await;
    Ok(HttpResponse::Accepted().json(response))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/events", web::post().to(publish_event));
}

//! `GET /events/{event_id}`: one published event of the tenant, its exact
//! envelope and every delivery it has.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::{
    db,
    models::{
        delivery::{self, Delivery, DeliveryStatus},
        event,
    },
};
use utoipa::ToSchema;
use uuid::Uuid;

use super::deliveries::envelope_object;
use crate::{
    auth::Tenant,
    error::ApiError,
    openapi::{ErrorBody, TenantAuthErrors},
    state::AppState,
};

/// A published event with its deliveries.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub event_id: String,
    pub event_type: String,
    pub tenant_id: String,
    /// The envelope every subscriber receives, as the JSON object sent.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
    /// One per subscription the event was delivered to, oldest first.
    pub deliveries: Vec<EventDelivery>,
}

/// A delivery of an event, in brief (`GET /webhooks/deliveries/{id}` has the rest).
#[derive(Debug, Serialize, ToSchema)]
pub struct EventDelivery {
    pub id: Uuid,
    pub subscription_id: Uuid,
    pub status: DeliveryStatus,
    pub attempt_count: i32,
    pub last_status_code: Option<i32>,
}

impl From<Delivery> for EventDelivery {
    fn from(row: Delivery) -> Self {
        Self {
            id: row.id,
            subscription_id: row.subscription_id,
            status: row.status,
            attempt_count: row.attempt_count,
            last_status_code: row.last_status_code,
        }
    }
}

/// One of the tenant's events by the `event_id` it was published with.
#[utoipa::path(get, path = "/api/v1/events/{event_id}", tag = "publishing",
    params(("event_id" = String, Path, description = "The event's `event_id`")),
    responses(
        (status = 200, body = EventView),
        TenantAuthErrors,
        (status = 404, body = ErrorBody, description = "No such event for this tenant"),
    ),
    security(("bearer" = [])))]
pub async fn get_event(
    Tenant(tenant_id): Tenant,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let tenant_id = tenant_id.as_str();
    // No event was ever stored under an id publishing refuses (and a NUL would
    // not even reach PostgreSQL): a malformed id is simply not found.
    if !crate::publishing::body::is_valid_event_id(&path) {
        return Err(ApiError::NotFound);
    }
    let mut conn = db::conn(&state.pool).await?;
    let row = event::find_by_event_id(&mut conn, tenant_id, &path).await?.ok_or(ApiError::NotFound)?;
    let deliveries = delivery::for_event(&mut conn, row.id).await?.into_iter().map(EventDelivery::from).collect();
    Ok(HttpResponse::Ok().json(EventView {
        payload: envelope_object(&row.payload)?,
        event_id: row.event_id,
        event_type: row.event_type,
        tenant_id: row.tenant_id,
        created_at: row.created_at,
        deliveries,
    }))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/events/{event_id}").route(web::get().to(get_event)));
}

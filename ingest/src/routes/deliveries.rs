//! The delivery log and its controls: a subscription's deliveries, one
//! delivery with its attempts, and a manual retry.
//!
//! Tenant-scoped in every query. The log of a deleted subscription answers
//! 404 like the subscription itself; its deliveries stay readable one by one
//! (`GET /webhooks/deliveries/{id}`). A retry for a paused or deleted
//! subscription is a 409: nothing would be sent.

use actix_web::{web, HttpResponse};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    db,
    models::{
        attempt::{self, Attempt},
        delivery::{self, Delivery, DeliveryStatus, LogFilter, LogPosition, RetryScope},
        event, subscription,
    },
};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    auth::TenantScope,
    error::ApiError,
    extract::Query,
    openapi::{ErrorBody, TenantAuthErrors},
    routes::subscriptions::{live_subscription, page},
    state::AppState,
};

/// A delivery: one event to one subscription.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: Uuid,
    pub subscription_id: Uuid,
    pub event_id: String,
    pub event_type: String,
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempt_count: i32,
    /// When the next automatic attempt is due (`retrying`), else `null`.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// HTTP status of the last attempt, if the endpoint answered.
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Delivery> for DeliveryView {
    fn from(row: Delivery) -> Self {
        Self {
            id: row.id,
            subscription_id: row.subscription_id,
            event_id: row.event_id,
            event_type: row.event_type,
            status: row.status,
            attempt_count: row.attempt_count,
            next_attempt_at: row.next_attempt_at,
            last_status_code: row.last_status_code,
            last_error: row.last_error,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// One HTTP attempt of a delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    /// Every header sent (values of credential-like names read `***`); `{}` if nothing was sent.
    #[schema(value_type = Object)]
    pub request_headers: serde_json::Value,
    /// The answer's headers (the first 8 KiB); `{}` if there was no answer.
    #[schema(value_type = Object)]
    pub response_headers: serde_json::Value,
    /// 1, 2, …
    pub attempt: i32,
    /// Stable outcome code: `success`, `http_status`, `redirect`, `timeout`,
    /// `connect`, `dns`, `tls`, `blocked_address`, `request`, `body`, `internal`.
    pub outcome: String,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i32,
    /// The first 4 KiB of the answer.
    pub response_body: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<Attempt> for AttemptView {
    fn from(row: Attempt) -> Self {
        let object = |headers: Option<serde_json::Value>| headers.unwrap_or_else(|| serde_json::json!({}));
        Self {
            request_headers: object(row.request_headers),
            response_headers: object(row.response_headers),
            attempt: row.attempt,
            outcome: row.outcome,
            status_code: row.status_code,
            error: row.error,
            duration_ms: row.duration_ms,
            response_body: row.response_body,
            created_at: row.created_at,
        }
    }
}

/// A delivery with every attempt, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryWithAttempts {
    #[serde(flatten)]
    pub delivery: DeliveryView,
    /// The envelope the subscriber receives (the same JSON object on every attempt).
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub attempts: Vec<AttemptView>,
}

/// One page of a delivery log, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    pub items: Vec<DeliveryView>,
    /// Pass as `?cursor=` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /webhooks/subscriptions/{id}/deliveries` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryLogParams {
    /// `pending`, `retrying`, `succeeded` or `failed`.
    pub status: Option<String>,
    /// Only deliveries of this event type.
    pub event_type: Option<String>,
    /// 1 to 100, default 50.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Cursor: base64url of the last row's `created_at` (microseconds) and id.
pub(crate) fn encode_cursor(row: &Delivery) -> String {
    let mut bytes = row.created_at.timestamp_micros().to_be_bytes().to_vec();
    bytes.extend_from_slice(row.id.as_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn decode_cursor(cursor: &str) -> Result<LogPosition, ApiError> {
    let invalid = || ApiError::validation("cursor", "is not a cursor this API returned; pass next_cursor unchanged");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    if bytes.len() != 24 {
        return Err(invalid());
    }
    let (micros, id) = bytes.split_at(8);
    let micros = i64::from_be_bytes(micros.try_into().map_err(|_| invalid())?);
    // A cursor we issued holds a time PostgreSQL stored; a forged one may not.
    let created_at = crate::domain::timestamp::from_micros("cursor", micros).map_err(|_| invalid())?;
    let id = Uuid::from_slice(id).map_err(|_| invalid())?;
    Ok(LogPosition { created_at, id })
}

/// `?status=`: one of the contract's delivery states, else a 422 naming it.
pub(crate) fn parse_status(status: &str) -> Result<DeliveryStatus, ApiError> {
    DeliveryStatus::parse(status)
        .ok_or_else(|| ApiError::invalid_value("status", status, "must be one of pending, retrying, succeeded, failed"))
}

/// A subscription's deliveries, newest first, a page at a time.
#[utoipa::path(get, path = "/api/v1/webhooks/subscriptions/{id}/deliveries", tag = "deliveries",
    params(("id" = Uuid, Path, description = "Subscription id"), DeliveryLogParams),
    responses(
        (status = 200, body = DeliveryPage),
        (status = 400, body = ErrorBody, description = "Malformed query string (e.g. a non-numeric limit)"),
        TenantAuthErrors,
        (status = 404, body = ErrorBody, description = "No such subscription for this tenant (or it was deleted)"),
        (status = 422, body = ErrorBody, description = "Unknown `status`, `limit` out of 1–100, or a `cursor` this API did not issue"),
    ),
    security(("bearer" = [])))]
pub async fn list_deliveries(
    scope: TenantScope,
    state: web::Data<AppState>,
    Query(params): Query<DeliveryLogParams>,
) -> Result<HttpResponse, ApiError> {
    let (tenant_id, subscription_id) = (scope.tenant_id.as_str(), scope.id);
    let limit = page::parse_limit(params.limit)?;
    let status = params.status.as_deref().map(parse_status).transpose()?;
    let after = params.cursor.as_deref().map(decode_cursor).transpose()?;
    let filter = LogFilter {
        status,
        event_type: params.event_type,
        subscription_id: Some(subscription_id),
        after,
        ..LogFilter::default()
    };
    let mut conn = db::conn(&state.pool).await?;
    live_subscription(&mut conn, tenant_id, subscription_id).await?;
    let rows = delivery::list(&mut conn, tenant_id, &filter, limit).await?;
    let (rows, next_cursor) = page::split_page(rows, limit, encode_cursor);
    let items = rows.into_iter().map(DeliveryView::from).collect();
    Ok(HttpResponse::Ok().json(DeliveryPage { items, next_cursor }))
}

/// One delivery with all its attempts.
#[utoipa::path(get, path = "/api/v1/webhooks/deliveries/{id}", tag = "deliveries",
    params(("id" = Uuid, Path, description = "Delivery id")),
    responses(
        (status = 200, body = DeliveryWithAttempts),
        TenantAuthErrors,
        (status = 404, body = ErrorBody, description = "No such delivery for this tenant"),
    ),
    security(("bearer" = [])))]
pub async fn get_delivery(scope: TenantScope, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (tenant_id, id) = (scope.tenant_id.as_str(), scope.id);
    let mut conn = db::conn(&state.pool).await?;
    let row = delivery::find(&mut conn, tenant_id, id).await?.ok_or(ApiError::NotFound)?;
    let attempts = attempt::for_delivery(&mut conn, id).await?.into_iter().map(AttemptView::from).collect();
    let payload = envelope_object(&event::payload_of(&mut conn, row.event_ref).await?)?;
    Ok(HttpResponse::Ok().json(DeliveryWithAttempts { delivery: row.into(), payload, attempts }))
}

/// A stored envelope as the JSON object it is.
pub(crate) fn envelope_object(payload: &str) -> Result<serde_json::Value, ApiError> {
    serde_json::from_str(payload).map_err(|e| ApiError::Internal(format!("a stored envelope is not JSON: {e}")))
}

/// Queues a new attempt now, whatever the delivery's status. No automatic
/// retries follow it: if it fails, the delivery is `failed` again. While an
/// attempt is in flight the answer is 409: recording that attempt would
/// overwrite the retry, and an accepted retry must never be dropped.
#[utoipa::path(post, path = "/api/v1/webhooks/deliveries/{id}/retry", tag = "deliveries",
    params(("id" = Uuid, Path, description = "Delivery id")),
    responses(
        (status = 202, body = DeliveryView, description = "Queued; the delivery is `pending` until the attempt ends"),
        TenantAuthErrors,
        (status = 404, body = ErrorBody, description = "No such delivery for this tenant"),
        (status = 409, body = ErrorBody, description = "The subscription is paused or deleted, or an attempt is in flight"),
    ),
    security(("bearer" = [])))]
pub async fn retry_delivery(scope: TenantScope, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (tenant_id, id) = (scope.tenant_id.as_str(), scope.id);
    let mut conn = db::conn(&state.pool).await?;
    let row = delivery::find(&mut conn, tenant_id, id).await?.ok_or(ApiError::NotFound)?;
    match subscription::find(&mut conn, tenant_id, row.subscription_id).await? {
        None => return Err(ApiError::Conflict("the subscription of this delivery was deleted".into())),
        Some(sub) if !sub.is_active => {
            return Err(ApiError::Conflict(
                "the subscription is paused (is_active is false); activate it before retrying".into(),
            ))
        }
        Some(_) => {}
    }
    let Some(requeued) = delivery::request_retries(&mut conn, tenant_id, &[id], RetryScope::AnyStatus).await?.pop()
    else {
        return Err(if delivery::attempt_in_flight(&mut conn, id).await? {
            ApiError::Conflict("an attempt of this delivery is in flight; retry once it has been recorded".into())
        } else {
            ApiError::Conflict("the subscription is paused or deleted; activate it before retrying".into())
        });
    };
    let row = delivery::find(&mut conn, tenant_id, id).await?.ok_or(ApiError::NotFound)?;
    drop(conn);
    // The row is durable with `enqueued = false`: if this message is lost, the outbox relay sends it.
    state.dispatch.enqueue(&[requeued]);
    metrics::counter!(crate::metric_names::MANUAL_RETRIES).increment(1);
    log::info!("manual retry queued tenant_id={tenant_id} delivery_id={id} attempt={}", requeued.attempt);
    Ok(HttpResponse::Accepted().json(DeliveryView::from(row)))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/webhooks/subscriptions/{id}/deliveries").route(web::get().to(list_deliveries)))
        .service(web::resource("/webhooks/deliveries/{id}").route(web::get().to(get_delivery)))
        .service(web::resource("/webhooks/deliveries/{id}/retry").route(web::post().to(retry_delivery)));
}

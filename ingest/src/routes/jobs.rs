//! Recovery: recover a subscription's window, retry failed deliveries in
//! bulk, and follow the background job either one starts (`crate::jobs`
//! runs it).

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    db, fanout,
    models::{
        job::{self, Job, JobKind, JobStatus, NewJob},
        subscription,
    },
};
use utoipa::ToSchema;
use uuid::Uuid;

use super::window::window;
use crate::{
    auth::{Tenant, TenantScope},
    error::ApiError,
    extract::Json,
    jobs::candidates::{self, FailedFilter},
    openapi::{ErrorBody, TenantAuthErrors},
    state::AppState,
};

/// `POST /webhooks/subscriptions/{id}/recover` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverBody {
    /// Start of the window (RFC 3339), inclusive.
    pub since: DateTime<Utc>,
    /// End of the window (RFC 3339), exclusive; default now.
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
    /// Also deliver the tenant's events of the window that this subscription
    /// matches (by its current `events`) and never got.
    #[serde(default)]
    pub include_missed: Option<bool>,
}

/// `POST /webhooks/deliveries/retry` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRetryBody {
    /// Start of the window (RFC 3339), inclusive.
    pub since: DateTime<Utc>,
    /// End of the window (RFC 3339), exclusive; default now.
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
    /// Only deliveries to this subscription.
    #[serde(default)]
    pub subscription_id: Option<Uuid>,
    /// Only deliveries of this event type.
    #[serde(default)]
    pub event_type: Option<String>,
}

/// A background job and how far it got.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub id: Uuid,
    pub kind: JobKind,
    pub status: JobStatus,
    /// Deliveries (and missed events) the job found when it started.
    pub total: i64,
    /// New attempts queued so far (a delivery that stopped being `failed` meanwhile is skipped).
    pub queued: i64,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Why a `failed` job stopped.
    pub error: Option<String>,
}

impl From<Job> for JobView {
    fn from(row: Job) -> Self {
        Self {
            id: row.id,
            kind: row.kind,
            status: row.status,
            total: row.total,
            queued: row.queued,
            created_at: row.created_at,
            finished_at: row.finished_at,
            error: row.error,
        }
    }
}

/// Queues a new attempt for every `failed` delivery of the subscription
/// created in `[since, until)`, and with `include_missed` creates and queues
/// deliveries of the tenant's events in the window that it matches and never
/// got (published while it was paused, or before it existed). Runs in the
/// background: follow it with `GET /webhooks/jobs/{id}`.
#[utoipa::path(post, path = "/api/v1/webhooks/subscriptions/{id}/recover", tag = "recovery",
    params(("id" = Uuid, Path, description = "Subscription id")),
    request_body = RecoverBody,
    responses(
        (status = 202, body = JobView),
        (status = 400, body = ErrorBody),
        TenantAuthErrors,
        (status = 404, body = ErrorBody, description = "No such subscription for this tenant"),
        (status = 409, body = ErrorBody, description = "The subscription is paused or disabled: activate it first"),
        (status = 422, body = ErrorBody, description = "A missing or malformed time, or `until` not after `since`"),
    ),
    security(("bearer" = [])))]
pub async fn recover_subscription(
    scope: TenantScope,
    state: web::Data<AppState>,
    Json(body): Json<RecoverBody>,
) -> Result<HttpResponse, ApiError> {
    let (tenant_id, subscription_id) = (scope.tenant_id.as_str(), scope.id);
    let (since, until) = window(body.since, body.until)?;
    let include_missed = body.include_missed.unwrap_or(false);
    let mut conn = db::conn(&state.pool).await?;
    let sub = subscription::find(&mut conn, tenant_id, subscription_id).await?.ok_or(ApiError::NotFound)?;
    if !sub.is_active {
        let why = if sub.disabled_reason.is_some() { "disabled" } else { "paused" };
        return Err(ApiError::Conflict(format!(
            "the subscription is {why} (is_active is false); set is_active to true before recovering"
        )));
    }
    let filter = FailedFilter {
        tenant_id: tenant_id.to_owned(),
        since,
        until,
        subscription_id: Some(subscription_id),
        event_type: None,
    };
    let mut total = candidates::count_failed(&mut conn, &filter).await?;
    if include_missed {
        let event_types = state.catalog.types_matching(&sub.events);
        total += fanout::count_missed(&mut conn, tenant_id, subscription_id, (since, until), &event_types).await?;
    }
    let new = NewJob {
        id: Uuid::now_v7(),
        tenant_id: tenant_id.to_owned(),
        kind: JobKind::Recover,
        since,
        until,
        subscription_id: Some(subscription_id),
        event_type: None,
        include_missed,
        total,
    };
    let row = job::insert(&mut conn, new).await?;
    log::info!(
        "recover job created tenant_id={tenant_id} job_id={} subscription_id={subscription_id} total={total}",
        row.id
    );
    Ok(HttpResponse::Accepted().json(JobView::from(row)))
}

/// Queues a new attempt for every `failed` delivery of the tenant created in
/// `[since, until)`, optionally only to one subscription or of one event type.
/// Deliveries of paused or deleted subscriptions are skipped.
#[utoipa::path(post, path = "/api/v1/webhooks/deliveries/retry", tag = "recovery",
    request_body = BulkRetryBody,
    responses(
        (status = 202, body = JobView),
        (status = 400, body = ErrorBody),
        TenantAuthErrors,
        (status = 404, body = ErrorBody, description = "`subscription_id` is not a subscription of this tenant"),
        (status = 422, body = ErrorBody, description = "A malformed time, `until` not after `since`, or an unknown `event_type`"),
    ),
    security(("bearer" = [])))]
pub async fn retry_deliveries(
    Tenant(tenant_id): Tenant,
    state: web::Data<AppState>,
    Json(body): Json<BulkRetryBody>,
) -> Result<HttpResponse, ApiError> {
    let tenant_id = tenant_id.as_str();
    let (since, until) = window(body.since, body.until)?;
    if let Some(event_type) = &body.event_type {
        if !state.catalog.contains(event_type) {
            return Err(ApiError::invalid_value(
                "event_type",
                event_type.as_str(),
                "is not a catalog event type; see GET /api/v1/webhooks/events",
            ));
        }
    }
    let mut conn = db::conn(&state.pool).await?;
    if let Some(subscription_id) = body.subscription_id {
        subscription::find(&mut conn, tenant_id, subscription_id).await?.ok_or(ApiError::NotFound)?;
    }
    let filter = FailedFilter {
        tenant_id: tenant_id.to_owned(),
        since,
        until,
        subscription_id: body.subscription_id,
        event_type: body.event_type.clone(),
    };
    let total = candidates::count_failed(&mut conn, &filter).await?;
    let new = NewJob {
        id: Uuid::now_v7(),
        tenant_id: tenant_id.to_owned(),
        kind: JobKind::Retry,
        since,
        until,
        subscription_id: body.subscription_id,
        event_type: body.event_type,
        include_missed: false,
        total,
    };
    let row = job::insert(&mut conn, new).await?;
    log::info!("bulk retry job created tenant_id={tenant_id} job_id={} total={total}", row.id);
    Ok(HttpResponse::Accepted().json(JobView::from(row)))
}

/// A recover or bulk-retry job.
#[utoipa::path(get, path = "/api/v1/webhooks/jobs/{id}", tag = "recovery",
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, body = JobView),
        TenantAuthErrors,
        (status = 404, body = ErrorBody, description = "No such job for this tenant"),
    ),
    security(("bearer" = [])))]
pub async fn get_job(scope: TenantScope, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (tenant_id, id) = (scope.tenant_id.as_str(), scope.id);
    let mut conn = db::conn(&state.pool).await?;
    let row = job::find(&mut conn, tenant_id, id).await?.ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(JobView::from(row)))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/webhooks/subscriptions/{id}/recover").route(web::post().to(recover_subscription)))
        .service(web::resource("/webhooks/deliveries/retry").route(web::post().to(retry_deliveries)))
        .service(web::resource("/webhooks/jobs/{id}").route(web::get().to(get_job)));
}

//! Background jobs that queue many deliveries: recover a subscription's
//! window, or retry the tenant's failed deliveries in bulk. A job row holds
//! its own progress (a keyset cursor), so any ingest can carry it on.

use chrono::{DateTime, Utc};
use diesel::{deserialize::FromSqlRow, expression::AsExpression, prelude::*, sql_types::Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;

use crate::schema::jobs;

/// What a job does (`jobs.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// `POST /webhooks/subscriptions/{id}/recover`.
    Recover,
    /// `POST /webhooks/deliveries/retry`.
    Retry,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recover => "recover",
            Self::Retry => "retry",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "recover" => Some(Self::Recover),
            "retry" => Some(Self::Retry),
            _ => None,
        }
    }
}

/// Where a job is (`jobs.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Running,
    Completed,
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "running" => Some(Self::Running),
            "completed" => Some(Self::Completed),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// Which rows a job walks (`jobs.phase`): the failed deliveries, then
/// (recover with `include_missed`) the tenant's events without a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub enum JobPhase {
    Failed,
    Missed,
}

impl JobPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Missed => "missed",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "failed" => Some(Self::Failed),
            "missed" => Some(Self::Missed),
            _ => None,
        }
    }
}

super::text_column!(JobKind, "job kind");
super::text_column!(JobStatus, "job status");
super::text_column!(JobPhase, "job phase");

/// A job row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = jobs)]
pub struct Job {
    pub id: uuid::Uuid,
    pub tenant_id: String,
    pub kind: JobKind,
    pub status: JobStatus,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub subscription_id: Option<uuid::Uuid>,
    pub event_type: Option<String>,
    pub include_missed: bool,
    pub total: i64,
    pub queued: i64,
    pub phase: JobPhase,
    pub cursor_created_at: Option<DateTime<Utc>>,
    pub cursor_id: Option<uuid::Uuid>,
    pub lease_owner: Option<uuid::Uuid>,
    pub lease_until: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A job to start.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = jobs)]
pub struct NewJob {
    pub id: uuid::Uuid,
    pub tenant_id: String,
    pub kind: JobKind,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub subscription_id: Option<uuid::Uuid>,
    pub event_type: Option<String>,
    pub include_missed: bool,
    pub total: i64,
}

pub async fn insert(conn: &mut AsyncPgConnection, new: NewJob) -> QueryResult<Job> {
    diesel::insert_into(jobs::table).values(new).returning(Job::as_returning()).get_result(conn).await
}

/// The tenant's job `id`, if any.
pub async fn find(conn: &mut AsyncPgConnection, tenant_id: &str, id: uuid::Uuid) -> QueryResult<Option<Job>> {
    jobs::table
        .filter(jobs::id.eq(id))
        .filter(jobs::tenant_id.eq(tenant_id))
        .select(Job::as_select())
        .first(conn)
        .await
        .optional()
}

/// Takes the oldest running job nobody holds (no lease, or a lapsed one: its
/// ingest died or stopped) and holds it for runner `owner` for `lease`.
pub async fn lease_next(
    conn: &mut AsyncPgConnection,
    owner: uuid::Uuid,
    lease: std::time::Duration,
) -> QueryResult<Option<Job>> {
    let lease_until = Utc::now() + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(10));
    let free = jobs::table
        .filter(jobs::status.eq(JobStatus::Running))
        .filter(jobs::lease_until.is_null().or(jobs::lease_until.lt(diesel::dsl::now)))
        .order(jobs::created_at.asc())
        .select(jobs::id)
        .limit(1)
        .for_update()
        .skip_locked();
    let next: Option<uuid::Uuid> = free.get_result(conn).await.optional()?;
    let Some(id) = next else { return Ok(None) };
    // Conditional again: between the two statements another runner may have taken it.
    diesel::update(
        jobs::table
            .filter(jobs::id.eq(id))
            .filter(jobs::status.eq(JobStatus::Running))
            .filter(jobs::lease_until.is_null().or(jobs::lease_until.lt(diesel::dsl::now))),
    )
    .set((jobs::lease_owner.eq(owner), jobs::lease_until.eq(lease_until)))
    .returning(Job::as_returning())
    .get_result(conn)
    .await
    .optional()
}

/// Locks a running job that runner `owner` holds, for one step (steps of one
/// job never overlap, also across ingests), and reads its current progress.
/// `None` when the job is over or another runner took it over (this one let
/// its lease lapse).
pub async fn lock_running(conn: &mut AsyncPgConnection, id: uuid::Uuid, owner: uuid::Uuid) -> QueryResult<Option<Job>> {
    jobs::table
        .filter(jobs::id.eq(id))
        .filter(jobs::status.eq(JobStatus::Running))
        .filter(jobs::lease_owner.eq(owner))
        .select(Job::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()
}

/// The status of job `id` and its tenant, totals (for the runner's log line).
pub async fn outcome(conn: &mut AsyncPgConnection, id: uuid::Uuid) -> QueryResult<(String, JobStatus, i64, i64)> {
    jobs::table.find(id).select((jobs::tenant_id, jobs::status, jobs::total, jobs::queued)).get_result(conn).await
}

/// Gives a job runner `owner` holds back (its ingest is stopping): the lease
/// ends now, so any runner may take the job on from its cursor.
pub async fn release(conn: &mut AsyncPgConnection, id: uuid::Uuid, owner: uuid::Uuid) -> QueryResult<()> {
    diesel::update(jobs::table.filter(jobs::id.eq(id)).filter(jobs::lease_owner.eq(owner)))
        .set(jobs::lease_until.eq(diesel::dsl::now))
        .execute(conn)
        .await
        .map(drop)
}

/// What one step did to a job.
#[derive(Debug, Clone)]
pub struct Progress {
    pub queued: i64,
    pub phase: JobPhase,
    pub cursor: Option<(DateTime<Utc>, uuid::Uuid)>,
    /// `Some` once the job is over.
    pub finished: Option<JobStatus>,
    pub error: Option<String>,
    /// The lease, renewed with every step.
    pub lease_until: DateTime<Utc>,
}

/// Stores a step's progress (in the step's transaction).
pub async fn save_progress(conn: &mut AsyncPgConnection, id: uuid::Uuid, progress: Progress) -> QueryResult<()> {
    let finished_at = progress.finished.map(|_| Utc::now());
    diesel::update(jobs::table.filter(jobs::id.eq(id)))
        .set((
            jobs::queued.eq(jobs::queued + progress.queued),
            jobs::phase.eq(progress.phase),
            jobs::cursor_created_at.eq(progress.cursor.map(|c| c.0)),
            jobs::cursor_id.eq(progress.cursor.map(|c| c.1)),
            jobs::status.eq(progress.finished.unwrap_or(JobStatus::Running)),
            jobs::error.eq(progress.error),
            jobs::finished_at.eq(finished_at),
            jobs::lease_until.eq(if progress.finished.is_some() { None } else { Some(progress.lease_until) }),
        ))
        .execute(conn)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_reads_back() {
        for kind in [JobKind::Recover, JobKind::Retry] {
            assert_eq!(JobKind::parse(kind.as_str()), Some(kind));
        }
        for status in [JobStatus::Running, JobStatus::Completed, JobStatus::Failed] {
            assert_eq!(JobStatus::parse(status.as_str()), Some(status));
        }
        for phase in [JobPhase::Failed, JobPhase::Missed] {
            assert_eq!(JobPhase::parse(phase.as_str()), Some(phase));
        }
        assert_eq!(JobStatus::parse("Running"), None);
    }
}

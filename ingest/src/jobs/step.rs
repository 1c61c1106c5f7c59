//! One step of a job, in one transaction: lock the job row (steps of one job
//! never overlap, on any ingest), take the next batch after its cursor,
//! requeue or create those deliveries, and store the new cursor and count.
//!
//! The cursor and the requeue commit together, so a crash before the commit
//! redoes the step and a crash after it never repeats it; each requeue is
//! also conditional on the delivery still being `failed`. Queueing the
//! messages happens after the commit: the rows are durable with
//! `enqueued = false`, and the outbox relay queues whatever the caller does not.

use chrono::Utc;
use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use shared::{
    catalog::Catalog,
    fanout,
    models::{
        delivery::{self, QueuedAttempt, RetryScope},
        job::{self, JobKind, JobPhase, JobStatus, Progress},
        subscription,
    },
};

use super::candidates::{self, FailedFilter, Position};

/// What a step queued, to publish after its commit.
#[derive(Debug, Default)]
pub struct StepResult {
    /// Requeued failed deliveries and new deliveries of missed events
    /// (attempt 1 each): the attempts to queue.
    pub queued: Vec<QueuedAttempt>,
    /// The job is over (completed or failed), or this runner no longer holds it.
    pub finished: bool,
}

/// Runs the next step of job `job_id` for runner `owner`.
pub async fn run(
    conn: &mut AsyncPgConnection,
    catalog: &Catalog,
    job_id: uuid::Uuid,
    owner: uuid::Uuid,
    batch: i64,
    lease: std::time::Duration,
) -> diesel::QueryResult<StepResult> {
    conn.transaction(async move |conn| {
        let Some(job) = job::lock_running(conn, job_id, owner).await? else {
            return Ok(StepResult { finished: true, ..StepResult::default() });
        };
        let lease_until = Utc::now() + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(10));
        let cursor = job.cursor_created_at.zip(job.cursor_id);
        let mut progress =
            Progress { queued: 0, phase: JobPhase::Failed, cursor, finished: None, error: None, lease_until };
        // A recovery is for a subscription that can receive: stop if it was paused or deleted meanwhile.
        let mut events_wanted = Vec::new();
        if let (JobKind::Recover, Some(subscription_id)) = (job.kind, job.subscription_id) {
            match subscription::find(conn, &job.tenant_id, subscription_id).await? {
                Some(sub) if sub.is_active => events_wanted = sub.events,
                _ => {
                    progress.finished = Some(JobStatus::Failed);
                    progress.error = Some("the subscription was paused or deleted during the recovery".into());
                    job::save_progress(conn, job.id, progress).await?;
                    return Ok(StepResult { finished: true, ..StepResult::default() });
                }
            }
        }
        let mut result = StepResult::default();
        match job.phase {
            JobPhase::Failed => {
                let rows = candidates::next_failed(conn, &FailedFilter::of(&job), cursor, batch).await?;
                let ids: Vec<uuid::Uuid> = rows.iter().map(|(_, id)| *id).collect();
                let requeued = delivery::request_retries(conn, &job.tenant_id, &ids, RetryScope::OnlyFailed).await?;
                progress.queued = requeued.len() as i64;
                result.queued = requeued;
                advance(&mut progress, rows.last().copied(), rows.len() as i64 == batch, job.include_missed);
            }
            JobPhase::Missed => {
                progress.phase = JobPhase::Missed;
                let subscription_id = job.subscription_id.unwrap_or_default();
                lock_subscription(conn, subscription_id).await?;
                let event_types = catalog.types_matching(&events_wanted);
                let rows = candidates::next_events(conn, &job.tenant_id, (job.since, job.until), cursor, batch).await?;
                let refs: Vec<uuid::Uuid> = rows.iter().map(|(_, id)| *id).collect();
                result.queued = fanout::deliver_missed(conn, subscription_id, &refs, &event_types).await?;
                progress.queued = result.queued.len() as i64;
                advance(&mut progress, rows.last().copied(), rows.len() as i64 == batch, false);
            }
        }
        result.finished = progress.finished.is_some();
        job::save_progress(conn, job.id, progress).await?;
        Ok(result)
    })
    .await
}

/// Moves the cursor past the batch; at the end of a phase, on to the next
/// phase (`missed`, fresh cursor) or to `completed`.
fn advance(progress: &mut Progress, last: Option<Position>, full: bool, then_missed: bool) {
    if full {
        progress.cursor = last.or(progress.cursor);
    } else if then_missed {
        progress.phase = JobPhase::Missed;
        progress.cursor = None;
    } else {
        progress.cursor = last.or(progress.cursor);
        progress.finished = Some(JobStatus::Completed);
    }
}

/// Serializes the missed-event phases of every job for one subscription
/// (until the transaction ends), so two recoveries never give it two
/// deliveries of one event.
async fn lock_subscription(conn: &mut AsyncPgConnection, subscription_id: uuid::Uuid) -> diesel::QueryResult<()> {
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 12)) IS NULL")
        .bind::<Text, _>(format!("recover-missed:{subscription_id}"))
        .execute(conn)
        .await
        .map(drop)
}

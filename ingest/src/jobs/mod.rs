//! Recover and bulk-retry jobs, run in the background by every ingest.
//!
//! A runner leases the oldest running job nobody holds, runs its steps
//! ([`step::run`]) until it is over, renewing the lease with each step, and
//! queues each step's attempts after its commit. An ingest that stops or
//! dies mid-job simply stops renewing: once the lease lapses another runner
//! (here or on a replica) carries on from the cursor in the job row.
//!
//! Pacing: a step queues at most `RECOVERY_BATCH_SIZE` deliveries, then the
//! runner waits `RECOVERY_BATCH_PAUSE_MS`, and longer while more than half of
//! that step's deliveries still wait for a dispatcher (up to
//! [`BACKLOG_WAIT`]). A job so never runs far ahead of the dispatchers, and
//! live traffic shares the queue with at most one batch per running job.

pub mod candidates;
pub mod step;

use std::time::Duration;

use diesel::{
    sql_types::{Array, BigInt, Uuid as SqlUuid},
    QueryableByName,
};
use diesel_async::RunQueryDsl;
use shared::{db, models::job};
use tokio::sync::watch;

use crate::state::AppState;

/// How long a runner holds a job without renewing; another takes over after.
/// Longer than the most a runner waits between steps (the longest
/// `RECOVERY_BATCH_PAUSE_MS` plus [`BACKLOG_WAIT`]).
pub const LEASE: Duration = Duration::from_secs(15);
/// How often an idle runner looks for a job.
const POLL: Duration = Duration::from_millis(500);
/// Runners per ingest (jobs it runs at once).
const RUNNERS: usize = 2;
/// Longest wait for the dispatchers to take up a step's deliveries.
pub const BACKLOG_WAIT: Duration = Duration::from_secs(8);

/// Starts this ingest's runners; they stop when `stop` turns true.
pub fn start(state: AppState, stop: watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
    (0..RUNNERS).map(|_| tokio::spawn(run(state.clone(), stop.clone()))).collect()
}

async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    let owner = uuid::Uuid::now_v7();
    while !*stop.borrow() {
        let leased = match db::conn(&state.pool).await {
            Ok(mut conn) => job::lease_next(&mut conn, owner, LEASE).await.map_err(db::DbError::from),
            Err(err) => Err(err),
        };
        let idle = match leased {
            Ok(Some(job)) => {
                log::info!("job started job_id={} tenant_id={} kind={}", job.id, job.tenant_id, job.kind.as_str());
                run_job(&state, job.id, owner, &mut stop).await;
                continue;
            }
            Ok(None) => POLL,
            Err(err) => {
                log::warn!("looking for jobs failed error={err}");
                POLL * 4
            }
        };
        pause(idle, &mut stop).await;
    }
}

/// Sleeps for `duration`, or less if `stop` turns true meanwhile.
async fn pause(duration: Duration, stop: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = crate::publishing::stopped(stop) => {}
        _ = tokio::time::sleep(duration) => {}
    }
}

/// Runs steps until the job is over or ingest stops; on a stop the lease is
/// given back, so another ingest carries the job on at once.
async fn run_job(state: &AppState, job_id: uuid::Uuid, owner: uuid::Uuid, stop: &mut watch::Receiver<bool>) {
    let batch = i64::try_from(state.config.recovery_batch_size).unwrap_or(100);
    loop {
        if *stop.borrow() {
            if let Ok(mut conn) = db::conn(&state.pool).await {
                if let Err(err) = job::release(&mut conn, job_id, owner).await {
                    log::warn!("giving a job back failed job_id={job_id} error={err}");
                }
            }
            log::info!("job given back: ingest stopping job_id={job_id}");
            return;
        }
        let result = match db::conn(&state.pool).await {
            Ok(mut conn) => {
                step::run(&mut conn, &state.catalog, job_id, owner, batch, LEASE).await.map_err(db::DbError::from)
            }
            Err(err) => Err(err),
        };
        let result = match result {
            Ok(result) => result,
            Err(err) => {
                // The step rolled back; try again (another runner takes over if this one stays stuck).
                log::warn!("job step failed job_id={job_id} error={err}");
                pause(Duration::from_secs(1), stop).await;
                continue;
            }
        };
        state.dispatch.enqueue(&result.queued);
        let queued = result.queued.len() as u64;
        metrics::counter!(crate::metric_names::JOB_ATTEMPTS_QUEUED).increment(queued);
        if result.finished {
            log_finished(state, job_id).await;
            return;
        }
        let step_ids: Vec<uuid::Uuid> = result.queued.iter().map(|q| q.delivery_id).collect();
        pause(state.config.recovery_batch_pause, stop).await;
        wait_for_dispatchers(state, &step_ids, stop).await;
    }
}

async fn log_finished(state: &AppState, job_id: uuid::Uuid) {
    let Ok(mut conn) = db::conn(&state.pool).await else { return };
    if let Ok((tenant_id, status, total, queued)) = job::outcome(&mut conn, job_id).await {
        if status == job::JobStatus::Running {
            log::info!("job taken over by another runner job_id={job_id}");
            return;
        }
        let status = status.as_str();
        metrics::counter!(crate::metric_names::JOBS_FINISHED, "status" => status).increment(1);
        log::info!("job finished job_id={job_id} tenant_id={tenant_id} status={status} total={total} queued={queued}");
    }
}

#[derive(QueryableByName)]
struct Waiting {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Waits (up to [`BACKLOG_WAIT`]) while more than half of `ids` are still
/// `pending`: queued, not yet attempted.
async fn wait_for_dispatchers(state: &AppState, ids: &[uuid::Uuid], stop: &mut watch::Receiver<bool>) {
    if ids.is_empty() {
        return;
    }
    let deadline = tokio::time::Instant::now() + BACKLOG_WAIT;
    while tokio::time::Instant::now() < deadline && !*stop.borrow() {
        let waiting = match db::conn(&state.pool).await {
            Ok(mut conn) => {
                diesel::sql_query("SELECT count(*) AS n FROM deliveries WHERE id = ANY($1) AND status = 'pending'")
                    .bind::<Array<SqlUuid>, _>(ids)
                    .get_result::<Waiting>(&mut conn)
                    .await
                    .map(|w| w.n)
                    .unwrap_or(0)
            }
            Err(_) => 0,
        };
        if waiting * 2 <= ids.len() as i64 {
            return;
        }
        pause(Duration::from_millis(100), stop).await;
    }
}

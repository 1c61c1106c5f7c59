//! The reconciler: the database, not the broker, decides what still has to be
//! sent. It queues again every unfinished delivery whose message may be lost.
//!
//! The outbox relay only looks at rows whose message the broker never
//! confirmed (`NOT enqueued`). A confirmed message can still vanish: a purged
//! queue, a lost disk or node of a single broker, or classic-queue
//! dead-lettering (at most once) out of a retry queue. Such a delivery would
//! stay `pending`/`retrying` forever with a past due time.
//!
//! Every `RECONCILE_INTERVAL` the reconciler takes up to [`BATCH`] deliveries
//! that are `pending` or `retrying`, due more than `RECONCILE_GRACE` ago (a
//! pending delivery without `next_attempt_at` is due since it was created),
//! not claimed by a dispatcher right now, not leased by an outbox relay, and
//! not re-queued by a reconciler within the grace period — whatever their
//! `enqueued` flag says — and publishes `attempt_count + 1` for each to the
//! dispatch exchange with confirms. Taking a row sets `requeued_at` in the
//! same statement (`FOR UPDATE SKIP LOCKED`), which is also the lease that
//! keeps other ingest processes off it. A message that was only late, not
//! lost, becomes a duplicate; the dispatcher's claim (`attempt_count =
//! attempt - 1`, no live claim) drops whichever copy comes second.

use std::time::Duration;

use diesel::sql_types::{BigInt, Interval};
use diesel_async::RunQueryDsl;
use shared::{
    amqp::{Broker, Topology},
    db::DbPool,
    models::delivery::QueuedAttempt,
};

use super::outbox::{publish_leased, to_interval, Lease, RelayError};

/// Most deliveries re-queued per round.
pub const BATCH: i64 = 500;

/// One reconciler; several (in one or many processes) may share a database.
#[derive(Clone)]
pub struct Reconciler {
    pub broker: Broker,
    pub topology: Topology,
    pub pool: DbPool,
    /// Time between rounds.
    pub interval: Duration,
    /// How long past due a delivery must be before it is queued again.
    pub grace: Duration,
}

/// Takes overdue unfinished deliveries and stamps `requeued_at` (the lease) in
/// one statement. `deliveries_due_idx` serves it: an index scan in due order
/// over unfinished rows only.
pub const TAKE_OVERDUE_SQL: &str = "\
WITH overdue AS ( \
  SELECT id FROM deliveries \
  WHERE status IN ('pending', 'retrying') \
    AND coalesce(next_attempt_at, created_at) < now() - $1 \
    AND (claimed_until IS NULL OR claimed_until < now()) \
    AND (relay_lease_until IS NULL OR relay_lease_until < now()) \
    AND (requeued_at IS NULL OR requeued_at < now() - $1) \
  ORDER BY coalesce(next_attempt_at, created_at) \
  LIMIT $2 \
  FOR UPDATE SKIP LOCKED) \
UPDATE deliveries d SET requeued_at = now() \
FROM overdue WHERE d.id = overdue.id \
RETURNING d.id AS delivery_id, d.attempt_count + 1 AS attempt, d.subscription_id";

impl Reconciler {
    /// Runs rounds every `interval` (at once again after a full batch) until `stop` turns true.
    pub fn start(self, mut stop: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while !*stop.borrow() {
                let full = match self.run_once().await {
                    Ok(requeued) => requeued as i64 >= BATCH,
                    Err(err) => {
                        log::warn!("reconciler round failed error={err}");
                        false
                    }
                };
                if !full {
                    tokio::select! {
                        _ = super::stopped(&mut stop) => {}
                        _ = tokio::time::sleep(self.interval) => {}
                    }
                }
            }
        })
    }

    /// One round: take overdue deliveries, publish them with confirms, mark
    /// the confirmed ones enqueued. Returns how many were taken.
    pub async fn run_once(&self) -> Result<usize, RelayError> {
        if !self.broker.is_connected() {
            return Ok(0);
        }
        let mut conn = shared::db::conn(&self.pool).await?;
        let batch: Vec<QueuedAttempt> = diesel::sql_query(TAKE_OVERDUE_SQL)
            .bind::<Interval, _>(to_interval(self.grace))
            .bind::<BigInt, _>(BATCH)
            .load(&mut conn)
            .await?;
        if batch.is_empty() {
            return Ok(0);
        }
        let confirmed = publish_leased(&self.broker, &self.topology, &mut conn, &batch, Lease::Requeue).await?;
        metrics::counter!(crate::metric_names::RECONCILER_REQUEUED).increment(confirmed.len() as u64);
        log::warn!(
            "reconciler queued overdue deliveries again count={} taken={} grace_s={}",
            confirmed.len(),
            batch.len(),
            self.grace.as_secs()
        );
        Ok(batch.len())
    }
}

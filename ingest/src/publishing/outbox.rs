//! The outbox relay: queues deliveries whose next message the broker never
//! confirmed (ingest died after commit, the broker was down, a dispatcher died
//! between scheduling a retry and its confirm).
//!
//! Every `OUTBOX_INTERVAL_MS` it leases up to [`BATCH`] such rows that have
//! been due for longer than `OUTBOX_GRACE_MS`, publishes `attempt_count + 1` for each
//! to the dispatch exchange with confirms, and marks the confirmed ones
//! `enqueued`. The lease (`relay_lease_until`, taken with `FOR UPDATE SKIP
//! LOCKED`) keeps several ingest replicas from publishing the same row. A due
//! `retrying` delivery goes straight to dispatch: its delay has passed.

use std::{collections::HashSet, sync::LazyLock, time::Duration};

use tokio::sync::watch;

use diesel::{
    sql_types::{Array, BigInt, Interval, Uuid as SqlUuid},
    QueryableByName,
};
use diesel_async::RunQueryDsl;
use shared::{
    amqp::{Broker, BrokerError, Topology},
    db::{DbError, DbPool},
    models::{
        delivery::{self, QueuedAttempt, UNFINISHED_SQL},
        endpoint_health::NOT_PARKED,
    },
};

use super::dispatch_queue::publish_batch;
use crate::metric_names;

/// Most rows leased and published per round.
pub const BATCH: i64 = 500;
/// How long a lease keeps other relays off a row; far above a round's duration
/// (publishing waits at most `BROKER_TIMEOUT` for confirms).
const LEASE: Duration = Duration::from_secs(30);
/// The backlog gauge counts at most this many rows, so it stays cheap in an outage.
const BACKLOG_COUNT_CAP: i64 = 100_000;

/// Why a relay round failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl From<diesel::result::Error> for RelayError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Db(err.into())
    }
}

/// One relay; several (in one or many processes) may share a database.
#[derive(Clone)]
pub struct OutboxRelay {
    pub broker: Broker,
    pub topology: Topology,
    pub pool: DbPool,
    /// Time between rounds.
    pub interval: Duration,
    /// Minimum age of a row before the relay takes it.
    pub grace: Duration,
}

#[derive(QueryableByName)]
struct Backlog {
    #[diesel(sql_type = BigInt)]
    count: i64,
}

impl OutboxRelay {
    /// Runs rounds every `interval` (at once again after a full batch) until
    /// `stop` turns true; a round in progress finishes first.
    pub fn start(self, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while !*stop.borrow() {
                let full = match self.run_once().await {
                    Ok(relayed) => relayed as i64 >= BATCH,
                    Err(err) => {
                        log::warn!("outbox relay round failed error={err}");
                        false
                    }
                };
                if let Err(err) = self.record_backlog().await {
                    log::debug!("outbox backlog not measured error={err}");
                }
                crate::queue_depths::record(&self.broker, &self.topology).await;
                if !full {
                    tokio::select! {
                        _ = super::stopped(&mut stop) => {}
                        _ = tokio::time::sleep(self.interval) => {}
                    }
                }
            }
        })
    }

    /// One round: lease due rows, publish them with confirms, mark the
    /// confirmed ones enqueued. Returns how many were leased.
    pub async fn run_once(&self) -> Result<usize, RelayError> {
        // Leasing rows we cannot publish would only delay them by the lease.
        if !self.broker.is_connected() {
            return Ok(0);
        }
        let mut conn = shared::db::conn(&self.pool).await?;
        let batch = lease_due(&mut conn, self.grace).await?;
        if batch.is_empty() {
            return Ok(0);
        }
        let confirmed = publish_leased(&self.broker, &self.topology, &mut conn, &batch, Lease::Relay).await?;
        metrics::counter!(metric_names::OUTBOX_RELAYED).increment(confirmed.len() as u64);
        log::info!("outbox relay queued deliveries count={} leased={}", confirmed.len(), batch.len());
        Ok(batch.len())
    }

    /// Sets the `outbox_backlog` gauge: unfinished deliveries not yet queued
    /// (capped, so the count stays cheap when the broker has been down long).
    pub async fn record_backlog(&self) -> Result<i64, RelayError> {
        let mut conn = shared::db::conn(&self.pool).await?;
        let backlog: Backlog = diesel::sql_query(BACKLOG_SQL.as_str())
            .bind::<BigInt, _>(BACKLOG_COUNT_CAP)
            .bind::<Interval, _>(to_interval(self.grace))
            .get_result(&mut conn)
            .await?;
        metrics::gauge!(metric_names::OUTBOX_BACKLOG).set(backlog.count as f64);
        Ok(backlog.count)
    }
}

/// Counts unqueued unfinished deliveries due for longer than the grace `$2`
/// (what the relay has to send), at most `$1`. `deliveries_due_idx` serves it
/// (the status list is written out, see [`UNFINISHED_SQL`]); `enqueued` is
/// read from the rows, as no index may name it (see [`LEASE_SQL`]). A row
/// under a live dispatcher claim is not counted: its message arrived (ingest
/// does not mark claimed rows; the dispatcher marks them when it records).
static BACKLOG_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT count(*) AS count FROM (SELECT 1 FROM deliveries WHERE {} \
           AND (claimed_until IS NULL OR claimed_until < now()) LIMIT $1) AS unqueued",
        unqueued_due_longer_than("$2")
    )
});

/// The relay's rows: unfinished, never confirmed, due for longer than the
/// interval `grace` (a parameter placeholder). A new delivery is due since it
/// was created, a retry or a manual retry since its `next_attempt_at`; that
/// order is `deliveries_due_idx`'s.
fn unqueued_due_longer_than(grace: &str) -> String {
    format!("status IN {UNFINISHED_SQL} AND coalesce(next_attempt_at, created_at) < now() - {grace} AND NOT enqueued")
}

/// Leases due rows (see [`lease_due`]). `deliveries_due_idx` serves it, in due
/// order. `enqueued` is in no index, so that marking a row enqueued is a HOT
/// update (migration `000015`).
pub static LEASE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH due AS ( \
           SELECT id FROM deliveries d \
           WHERE {} \
             AND (relay_lease_until IS NULL OR relay_lease_until < now()) \
             AND (claimed_until IS NULL OR claimed_until < now()) \
             AND {NOT_PARKED} \
           ORDER BY coalesce(next_attempt_at, created_at) \
           LIMIT $2 \
           FOR UPDATE SKIP LOCKED) \
         UPDATE deliveries d SET relay_lease_until = now() + $3 \
         FROM due WHERE d.id = due.id \
         RETURNING d.id AS delivery_id, d.attempt_count + 1 AS attempt, d.subscription_id",
        unqueued_due_longer_than("$1")
    )
});

/// Leases due rows in one statement (rows parked behind a circuit that is not
/// closed are not due, whatever their time; nor is a row under a live
/// dispatcher claim: its message arrived, and the `enqueued` mark leaves
/// claimed rows to the dispatcher's record): the CTE locks them (skipping rows another
/// relay holds), the UPDATE sets the lease, and the commit of this statement
/// makes the lease visible to every other relay. `updated_at` is left alone:
/// it is the delivery's API-visible time.
async fn lease_due(
    conn: &mut diesel_async::AsyncPgConnection,
    grace: Duration,
) -> Result<Vec<QueuedAttempt>, diesel::result::Error> {
    diesel::sql_query(LEASE_SQL.as_str())
        .bind::<Interval, _>(to_interval(grace))
        .bind::<BigInt, _>(BATCH)
        .bind::<Interval, _>(to_interval(LEASE))
        .load(conn)
        .await
}

/// The lease a round took on its rows, which a failed publish gives back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// The outbox relay's (and the dispatchers' scheduler's) `relay_lease_until`.
    Relay,
    /// The reconciler's `requeued_at`.
    Requeue,
}

/// The one way a background round queues rows it leased: publish them with
/// confirms, give the unconfirmed rows their lease back at once (instead of
/// at its expiry), mark the confirmed ones `enqueued`. Returns the confirmed.
pub(crate) async fn publish_leased(
    broker: &Broker,
    topology: &Topology,
    conn: &mut diesel_async::AsyncPgConnection,
    batch: &[QueuedAttempt],
    lease: Lease,
) -> Result<Vec<QueuedAttempt>, RelayError> {
    let confirmed = match publish_batch(broker, &topology.dispatch_exchange(), batch).await {
        Ok(confirmed) => confirmed,
        Err(err) => {
            release(conn, batch, lease).await;
            return Err(err.into());
        }
    };
    metrics::counter!(metric_names::DISPATCH_MESSAGES_PUBLISHED).increment(confirmed.len() as u64);
    if confirmed.len() < batch.len() {
        let confirmed_set: HashSet<&QueuedAttempt> = confirmed.iter().collect();
        let unconfirmed: Vec<_> = batch.iter().filter(|b| !confirmed_set.contains(b)).copied().collect();
        release(conn, &unconfirmed, lease).await;
    }
    mark_leased(conn, &confirmed).await?;
    Ok(confirmed)
}

/// Tries of [`mark_leased`], and the pause between two.
const MARK_TRIES: usize = 3;
const MARK_RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Marks confirmed rows `enqueued`, trying again for a row the mark skipped.
/// The mark skips rows locked at that moment (SKIP LOCKED, see
/// [`delivery::mark_enqueued`]), and another relay's lease statement holds
/// locks for its duration on rows it then finds leased by us (a row that fails
/// the recheck after its lock stays locked). A row left unmarked is queued
/// again when this lease runs out: a duplicate message. A row a dispatcher
/// claimed is never marked here (its record marks it), so after the last try
/// the rest is left as it is.
async fn mark_leased(
    conn: &mut diesel_async::AsyncPgConnection,
    confirmed: &[QueuedAttempt],
) -> Result<(), RelayError> {
    let mut marked = 0;
    for try_number in 1..=MARK_TRIES {
        // Rows marked by an earlier try are `enqueued` now: each try counts only its own.
        marked += delivery::mark_enqueued(conn, confirmed).await?;
        if marked >= confirmed.len() || try_number == MARK_TRIES {
            break;
        }
        tokio::time::sleep(MARK_RETRY_PAUSE).await;
    }
    Ok(())
}

/// Gives rows back at once after a failed publish, instead of at lease expiry.
async fn release(conn: &mut diesel_async::AsyncPgConnection, batch: &[QueuedAttempt], lease: Lease) {
    let ids: Vec<uuid::Uuid> = batch.iter().map(|q| q.delivery_id).collect();
    let statement = match lease {
        Lease::Relay => "UPDATE deliveries SET relay_lease_until = NULL WHERE id = ANY($1) AND NOT enqueued",
        Lease::Requeue => "UPDATE deliveries SET requeued_at = NULL WHERE id = ANY($1)",
    };
    let result = diesel::sql_query(statement).bind::<Array<SqlUuid>, _>(ids).execute(conn).await;
    if let Err(err) = result {
        log::debug!("releasing leases failed lease={lease:?} error={err}; they expire on their own");
    }
}

/// A `Duration` as a PostgreSQL interval (microseconds, saturating).
pub fn to_interval(duration: Duration) -> diesel::data_types::PgInterval {
    diesel::data_types::PgInterval::from_microseconds(duration.as_micros().min(i64::MAX as u128) as i64)
}

//! Retention: events older than `RETENTION` are deleted with their deliveries
//! and attempts, in small batches, and soft-deleted subscriptions are purged
//! once their last delivery is gone. An event with a delivery still `pending`
//! or `retrying` is kept, whole, until that delivery finishes.
//!
//! Each batch is one short statement (at most [`BATCH`] events, their
//! deliveries and, by `ON DELETE CASCADE`, their attempts), so no lock is held
//! long and no transaction grows with the backlog; a pause between batches
//! leaves the database to the hot paths. Rows are taken with `FOR UPDATE SKIP
//! LOCKED`, so several ingest processes can purge side by side. Why batches
//! and not time partitions: docs/design.md, "Retention".

use std::time::Duration;

use diesel::{
    sql_types::{BigInt, Bool, Interval},
    QueryableByName,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use shared::db::{DbError, DbPool};

use crate::publishing::outbox::to_interval;

/// Most events deleted by one statement.
pub const BATCH: i64 = 500;
/// Most soft-deleted subscriptions purged by one statement.
const SUBSCRIPTION_BATCH: i64 = 100;
/// Pause between two batches of one round.
const BATCH_PAUSE: Duration = Duration::from_millis(20);
/// Longest time between two rounds.
const MAX_INTERVAL: Duration = Duration::from_secs(60);
/// Shortest time between two `VACUUM`s of the purged tables.
const VACUUM_INTERVAL: Duration = Duration::from_secs(60);

/// What one round deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub events: u64,
    pub deliveries: u64,
    pub subscriptions: u64,
}

/// The retention task; several (in one or many processes) may share a database.
#[derive(Clone)]
pub struct Retention {
    pub pool: DbPool,
    /// Events older than this are deleted.
    pub retention: Duration,
}

#[derive(QueryableByName)]
struct Counts {
    #[diesel(sql_type = BigInt)]
    events: i64,
    #[diesel(sql_type = BigInt)]
    deliveries: i64,
}

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = Bool)]
    on: bool,
}

/// Deletes up to `$2` events created before `now() - $1` that have no
/// unfinished delivery, with their deliveries (attempts follow by cascade).
/// Deliveries are locked in id order, as the dispatcher locks them, and only
/// finished ones are deleted: if one became pending meanwhile (a manual
/// retry), its event's foreign key stops the statement and the next round
/// skips that event. Rows are matched through `= ANY(ARRAY(...))`, so each
/// step is an index lookup whatever the tables' sizes (a join against the
/// CTE may be planned as a hash join over a whole table).
pub const DELETE_BATCH_SQL: &str = "\
WITH old AS ( \
  SELECT e.id FROM events e \
  WHERE e.created_at < now() - $1 \
    AND NOT EXISTS (SELECT 1 FROM deliveries d \
                    WHERE d.event_ref = e.id AND d.status IN ('pending', 'retrying')) \
  ORDER BY e.created_at \
  LIMIT $2 \
  FOR UPDATE SKIP LOCKED), \
doomed AS ( \
  SELECT d.id FROM deliveries d \
  WHERE d.event_ref = ANY (ARRAY(SELECT id FROM old)) AND d.status NOT IN ('pending', 'retrying') \
  ORDER BY d.id FOR UPDATE), \
gone_deliveries AS ( \
  DELETE FROM deliveries WHERE id = ANY (ARRAY(SELECT id FROM doomed)) RETURNING id), \
gone_events AS ( \
  DELETE FROM events WHERE id = ANY (ARRAY(SELECT id FROM old)) RETURNING id) \
SELECT (SELECT count(*) FROM gone_events) AS events, (SELECT count(*) FROM gone_deliveries) AS deliveries";

/// Purges soft-deleted subscriptions none of whose deliveries is left.
const PURGE_SUBSCRIPTIONS_SQL: &str = "\
DELETE FROM subscriptions WHERE id IN ( \
  SELECT s.id FROM subscriptions s \
  WHERE s.deleted_at IS NOT NULL \
    AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.subscription_id = s.id) \
  ORDER BY s.deleted_at \
  LIMIT $1 \
  FOR UPDATE SKIP LOCKED)";

impl Retention {
    /// How often rounds run: a tenth of the retention period, at most a minute.
    pub fn interval(&self) -> Duration {
        (self.retention / 10).clamp(Duration::from_secs(1), MAX_INTERVAL)
    }

    /// Runs rounds until `stop` turns true.
    pub fn start(self, mut stop: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut last_vacuum: Option<tokio::time::Instant> = None;
            while !*stop.borrow() {
                match self.run_once().await {
                    Ok(purged) if purged != Purged::default() => {
                        log::info!(
                            "retention purged events={} deliveries={} subscriptions={}",
                            purged.events,
                            purged.deliveries,
                            purged.subscriptions
                        );
                        if last_vacuum.is_none_or(|at| at.elapsed() >= VACUUM_INTERVAL) {
                            last_vacuum = Some(tokio::time::Instant::now());
                            if let Err(err) = self.vacuum_if_no_autovacuum().await {
                                log::warn!("vacuum after retention failed error={err}");
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(err) => log::warn!("retention round failed error={err}"),
                }
                tokio::select! {
                    _ = crate::publishing::stopped(&mut stop) => {}
                    _ = tokio::time::sleep(self.interval()) => {}
                }
            }
        })
    }

    /// One round: delete batches of old events until none is left, then purge
    /// soft-deleted subscriptions without deliveries.
    pub async fn run_once(&self) -> Result<Purged, DbError> {
        let mut purged = Purged::default();
        loop {
            let counts: Counts = {
                let mut conn = shared::db::conn(&self.pool).await?;
                diesel::sql_query(DELETE_BATCH_SQL)
                    .bind::<Interval, _>(to_interval(self.retention))
                    .bind::<BigInt, _>(BATCH)
                    .get_result(&mut conn)
                    .await?
            };
            purged.events += counts.events as u64;
            purged.deliveries += counts.deliveries as u64;
            metrics::counter!(crate::metric_names::RETENTION_DELETED, "table" => "events")
                .increment(counts.events as u64);
            metrics::counter!(crate::metric_names::RETENTION_DELETED, "table" => "deliveries")
                .increment(counts.deliveries as u64);
            if counts.events < BATCH {
                break;
            }
            tokio::time::sleep(BATCH_PAUSE).await;
        }
        loop {
            let mut conn = shared::db::conn(&self.pool).await?;
            let deleted = diesel::sql_query(PURGE_SUBSCRIPTIONS_SQL)
                .bind::<BigInt, _>(SUBSCRIPTION_BATCH)
                .execute(&mut conn)
                .await? as u64;
            purged.subscriptions += deleted;
            metrics::counter!(crate::metric_names::RETENTION_DELETED, "table" => "subscriptions").increment(deleted);
            if deleted < SUBSCRIPTION_BATCH as u64 {
                break;
            }
        }
        Ok(purged)
    }

    /// Deleted rows only become free space once vacuumed. Autovacuum does that
    /// where it runs; where it is off (as on the benchmark machine), ingest
    /// vacuums the purged tables itself (plain `VACUUM`: no exclusive lock).
    pub async fn vacuum_if_no_autovacuum(&self) -> Result<bool, DbError> {
        let mut conn = shared::db::conn(&self.pool).await?;
        let autovacuum: Setting =
            diesel::sql_query("SELECT current_setting('autovacuum') = 'on' AS on").get_result(&mut conn).await?;
        if autovacuum.on {
            return Ok(false);
        }
        vacuum(&mut conn).await?;
        Ok(true)
    }
}

async fn vacuum(conn: &mut AsyncPgConnection) -> Result<(), DbError> {
    // The pool's statement_timeout (30 s) would cut a long vacuum short; it is
    // lifted for this statement only and set back before the connection returns.
    conn.batch_execute("SET statement_timeout = 0").await?;
    let result = conn.batch_execute("VACUUM delivery_attempts, deliveries, events, subscriptions").await;
    conn.batch_execute(&format!("SET statement_timeout = '{}s'", shared::db::STATEMENT_TIMEOUT.as_secs())).await?;
    Ok(result?)
}

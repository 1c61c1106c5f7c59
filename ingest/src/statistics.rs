//! Planner statistics for the tables the hot paths grow, kept where autovacuum
//! does not keep them.
//!
//! The hot statements (claim, record, mark enqueued, fan-out) are cached
//! prepared statements. PostgreSQL plans each one the first times it runs on a
//! connection, often while `deliveries` is still a few pages, and keeps that plan
//! until the table's statistics change. On a table that is never analyzed, a
//! lookup by primary key stays a sequential scan. One run on the benchmark
//! machine, with autovacuum off, scanned 61 million rows for 4,817 deliveries
//! (BENCHMARKS.md). Autovacuum analyzes only after its naptime (a minute by
//! default), so a fresh deployment has the same problem for its first minute.
//!
//! Every [`INTERVAL`] (a second), one statement finds the tables whose changes since their
//! last analyze pass autovacuum's own threshold (50 rows + 10 %). A table
//! qualifies when autovacuum is off, or when the table was never analyzed at all.
//! Like autovacuum (whose naptime is a minute), a table is analyzed again only
//! [`MIN_GAP`] after its last analyze, unless it has more than doubled since:
//! a growing table is analyzed at every doubling, a churning one (the soak's
//! 500 inserts, 1,500 updates and 500 deletes a second) once a minute, not at
//! every round. Every 5 s cost the soak about 15 % of the machine.
//! Each such table is then analyzed: `ANALYZE (SKIP_LOCKED)`, so it never waits
//! for another ingest's `ANALYZE` or a `VACUUM`. The new statistics invalidate
//! the cached plans, and the next execution plans with the table's real size.

use std::time::Duration;

use diesel::{sql_types::Text, QueryableByName};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use shared::db::{DbError, DbPool};

/// How often the tables are looked at. Short, because until the first
/// analyze every plan is made for a table of a few pages: the generic plan of
/// a lookup by id array on `deliveries` is then a sequential scan, kept by
/// every connection until statistics exist. At 5 s, a 20,000-delivery
/// `fanout10` run (about 6 s) seq-scanned `deliveries` 229–565 times and read
/// 2.9–7.5 million rows, and its throughput swung between 3,600 and 5,900/s
/// with which plan each connection happened to make (BENCHMARKS.md). A look
/// is one catalog query; what it analyzes is bounded by the rules above.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Least time between two analyzes of a table that has not doubled meanwhile.
pub const MIN_GAP_SECONDS: i32 = 60;

/// The tables whose growth the hot statements' plans depend on.
const TABLES: [&str; 6] = ["deliveries", "events", "delivery_attempts", "endpoint_health", "subscriptions", "jobs"];

/// Tables (of [`TABLES`], bound as `$1`) whose statistics are missing or stale
/// and that autovacuum will not analyze soon.
/// `reltuples` is the row count the last analyze saw (-1: never analyzed).
const STALE_SQL: &str = "\
SELECT s.relname::text AS table_name FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid \
WHERE s.schemaname = current_schema() AND s.relname = ANY($1) \
  AND s.n_mod_since_analyze > 50 + 0.1 * greatest(s.n_live_tup, 0) \
  AND (current_setting('autovacuum') = 'off' OR (s.last_analyze IS NULL AND s.last_autoanalyze IS NULL)) \
  AND (greatest(s.last_analyze, s.last_autoanalyze) IS NULL \
       OR greatest(s.last_analyze, s.last_autoanalyze) < now() - make_interval(secs => $2) \
       OR s.n_live_tup > 2 * greatest(c.reltuples, 0) + 50) \
ORDER BY s.relname";

#[derive(QueryableByName)]
struct Stale {
    #[diesel(sql_type = Text)]
    table_name: String,
}

/// The statistics keeper; one per ingest process (several may share a database).
pub struct Statistics {
    pub pool: DbPool,
}

impl Statistics {
    /// Runs rounds every [`INTERVAL`] until `stop` turns true.
    pub fn start(self, mut stop: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while !*stop.borrow() {
                if let Err(err) = self.run_once().await {
                    log::debug!("statistics round failed error={err}");
                }
                tokio::select! {
                    _ = crate::publishing::stopped(&mut stop) => {}
                    _ = tokio::time::sleep(INTERVAL) => {}
                }
            }
        })
    }

    /// One round: analyzes every stale table; returns their names.
    pub async fn run_once(&self) -> Result<Vec<String>, DbError> {
        let mut conn = shared::db::conn(&self.pool).await?;
        let tables = TABLES.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>();
        let stale: Vec<Stale> = diesel::sql_query(STALE_SQL)
            .bind::<diesel::sql_types::Array<Text>, _>(tables)
            .bind::<diesel::sql_types::Int4, _>(MIN_GAP_SECONDS)
            .load(&mut conn)
            .await?;
        let mut analyzed = Vec::with_capacity(stale.len());
        for Stale { table_name } in stale {
            // Only names of TABLES come back, so the name is safe to splice in.
            let Some(table) = TABLES.iter().find(|t| **t == table_name) else { continue };
            conn.batch_execute(&format!("ANALYZE (SKIP_LOCKED) {table}")).await?;
            metrics::counter!(crate::metric_names::TABLES_ANALYZED, "table" => *table).increment(1);
            log::debug!("analyzed table={table}");
            analyzed.push(table_name);
        }
        Ok(analyzed)
    }
}

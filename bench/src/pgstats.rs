//! PostgreSQL's own counters for the services' database, before and after a
//! phase: transactions, rows written and WAL flushes per delivery explain
//! most of the database's CPU.
//!
//! Backends publish their counters at the end of a transaction at most once
//! a second (PostgreSQL 15), so the numbers are approximate; they are read
//! after the phase's settle time to let most of them arrive.

use serde::Serialize;

/// Counters of `pg_stat_database` (this database) and `pg_stat_wal` (the whole server).
#[derive(Debug, Clone, Copy, Default, Serialize, diesel::QueryableByName)]
pub struct PgCounters {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub commits: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub rollbacks: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub rows_inserted: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub rows_updated: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub rows_fetched: i64,
    /// Deadlocks PostgreSQL detected (each one stalls its transactions for `deadlock_timeout`, 1 s by default).
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub deadlocks: i64,
    /// Server-wide: other databases' writes count too.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub wal_bytes: i64,
    /// Server-wide WAL flushes to disk (`fsync`s).
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub wal_syncs: i64,
}

impl PgCounters {
    /// `after - self`.
    pub fn until(&self, after: &PgCounters) -> PgCounters {
        PgCounters {
            commits: after.commits - self.commits,
            rollbacks: after.rollbacks - self.rollbacks,
            rows_inserted: after.rows_inserted - self.rows_inserted,
            rows_updated: after.rows_updated - self.rows_updated,
            rows_fetched: after.rows_fetched - self.rows_fetched,
            deadlocks: after.deadlocks - self.deadlocks,
            wal_bytes: after.wal_bytes - self.wal_bytes,
            wal_syncs: after.wal_syncs - self.wal_syncs,
        }
    }
}

/// Reads the counters of `database` through the server's admin database.
pub async fn read(admin_url: &str, database: &str) -> Option<PgCounters> {
    let (url, database) = (admin_url.to_owned(), database.to_owned());
    tokio::task::spawn_blocking(move || {
        use diesel::{Connection as _, RunQueryDsl as _};
        let mut conn =
            diesel_async::async_connection_wrapper::AsyncConnectionWrapper::<diesel_async::AsyncPgConnection>::establish(&url).ok()?;
        diesel::sql_query(
            "SELECT d.xact_commit AS commits, d.xact_rollback AS rollbacks, d.tup_inserted AS rows_inserted, \
                    d.tup_updated AS rows_updated, d.tup_fetched AS rows_fetched, d.deadlocks, \
                    w.wal_bytes::bigint AS wal_bytes, w.wal_sync AS wal_syncs \
             FROM pg_stat_database d, pg_stat_wal w WHERE d.datname = $1",
        )
        .bind::<diesel::sql_types::Text, _>(database)
        .get_result::<PgCounters>(&mut conn)
        .ok()
    })
    .await
    .ok()
    .flatten()
}

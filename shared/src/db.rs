//! PostgreSQL: the connection pool and the embedded migrations.

use std::time::Duration;

use diesel::ConnectionError;
use diesel_async::{
    async_connection_wrapper::AsyncConnectionWrapper,
    pooled_connection::{deadpool::Pool, AsyncDieselConnectionManager, ManagerConfig},
    AsyncConnection, AsyncPgConnection, SimpleAsyncConnection,
};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use futures_util::FutureExt;

/// The migrations in `migrations/`, compiled into both binaries.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations");

/// `statement_timeout` of every pooled connection.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A pool of async PostgreSQL connections.
pub type DbPool = Pool<AsyncPgConnection>;
/// One connection checked out of the pool.
pub type DbConn = diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>;

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had: the database is down or the pool is exhausted.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// The statement failed because its connection went away (the server shut
    /// it down, or the network broke): see [`statement_failed`].
    #[error("database connection lost: {0}")]
    ConnectionLost(diesel::result::Error),
    /// A batched statement answered another number of requests than it got.
    #[error("a batched statement answered {answered} of {asked} requests")]
    Miscounted { asked: usize, answered: usize },
    /// The batcher that runs the statement has stopped (the service is stopping).
    #[error("the database batcher has stopped")]
    BatcherStopped,
    #[error("migration failed: {0}")]
    Migration(String),
}

impl DbError {
    /// Whether the failure says "not now" rather than "never": answer 503,
    /// requeue, retry later. The one place that classifies database errors.
    ///
    /// Decided by SQLSTATE, as far as diesel-async passes it on: it maps
    /// 40001 (`serialization_failure`) and 25006 (`read_only_sql_transaction`,
    /// e.g. a primary that became a standby) to error kinds, and a failure
    /// without SQLSTATE (the connection broke) to `UnableToSendCommand` or
    /// `ClosedConnection`. Other SQLSTATEs reach us only as `Unknown`, so a
    /// connection the server shut (57P01–57P03) is recognised by the
    /// connection being gone ([`statement_failed`]), never by the server's
    /// message, whose language depends on `lc_messages`.
    pub fn is_transient(&self) -> bool {
        use diesel::result::{DatabaseErrorKind as Kind, Error};
        match self {
            Self::Unavailable(_) | Self::ConnectionLost(_) | Self::BatcherStopped => true,
            Self::Query(Error::DatabaseError(kind, info)) => {
                matches!(
                    kind,
                    Kind::UnableToSendCommand
                        | Kind::ClosedConnection
                        | Kind::SerializationFailure
                        | Kind::ReadOnlyTransaction
                ) || (matches!(kind, Kind::Unknown) && says_not_now(info.message()))
            }
            Self::Query(Error::BrokenTransactionManager) => true,
            Self::Query(_) | Self::Miscounted { .. } | Self::Migration(_) => false,
        }
    }
}

/// Whether a PostgreSQL error without a diesel kind of its own says "not now":
/// a deadlock (40P01), a statement cancelled or timed out (57014), a lock not
/// obtained in time (55P03), the server ending the session (57P01). diesel-async
/// keeps the SQLSTATE of only a few errors, so these are told by the server's
/// message. With a localized `lc_messages` they do not match and stay what they
/// were before: a query failure (500).
fn says_not_now(message: &str) -> bool {
    const NOT_NOW: [&str; 4] = [
        "deadlock detected",
        "canceling statement due to",
        "could not obtain lock",
        "terminating connection due to administrator command",
    ];
    NOT_NOW.iter().any(|prefix| message.starts_with(prefix))
}

/// Classifies a failed statement on `conn`: [`DbError::ConnectionLost`] when
/// the connection is gone (checked with a round trip, since the failure can
/// arrive before the client notices the closed socket), else
/// [`DbError::Query`].
pub async fn statement_failed(conn: &mut AsyncPgConnection, err: diesel::result::Error) -> DbError {
    use diesel_async::pooled_connection::PoolableConnection;
    let query = DbError::Query(err);
    if query.is_transient() {
        return query;
    }
    let DbError::Query(err) = query else { return query };
    if conn.is_broken() || conn.batch_execute("SELECT 1").await.is_err() {
        DbError::ConnectionLost(err)
    } else {
        DbError::Query(err)
    }
}

/// Builds a pool whose connections set `application_name` and a
/// `statement_timeout`, and whose checkouts give up after 5 seconds.
pub fn pool(database_url: &str, max_size: usize, application_name: &'static str) -> Result<DbPool, DbError> {
    build_pool(database_url, max_size, application_name, true)
}

/// A pool whose connections commit asynchronously (`synchronous_commit = off`):
/// a commit returns before its WAL is flushed, so a PostgreSQL crash can lose
/// the last few hundred milliseconds of these transactions (never corrupt
/// them). Only for bookkeeping whose loss is harmless: marking a delivery
/// `enqueued` (if lost, the outbox relay queues a duplicate message that the
/// dispatcher's claim drops) and a dispatcher's claim (if lost, the message is
/// redelivered anyway). Every state a user sees or relies on — events,
/// deliveries, attempts — is written through [`pool`], durably.
pub fn bookkeeping_pool(
    database_url: &str,
    max_size: usize,
    application_name: &'static str,
) -> Result<DbPool, DbError> {
    build_pool(database_url, max_size, application_name, false)
}

fn build_pool(
    database_url: &str,
    max_size: usize,
    application_name: &'static str,
    synchronous_commit: bool,
) -> Result<DbPool, DbError> {
    let synchronous_commit = if synchronous_commit { "on" } else { "off" };
    let mut config = ManagerConfig::default();
    // No `SELECT 1` on every checkout (the default): it doubled the round trips
    // of the hot paths. A connection that broke is found by its next query,
    // which fails like any database outage (503 / requeue), and the pool drops it.
    config.recycling_method = diesel_async::pooled_connection::RecyclingMethod::Fast;
    config.custom_setup = Box::new(move |url| {
        async move {
            let mut conn = tokio::time::timeout(Duration::from_secs(5), AsyncPgConnection::establish(url))
                .await
                .map_err(|_| ConnectionError::BadConnection("connect timed out".into()))??;
            // Generic plans for the cached statements: PostgreSQL otherwise re-plans
            // the hot array-parameter statements (claim, record, mark enqueued) on
            // most executions, since a custom plan looks cheaper for a known array
            // length; planning the claim cost 3.2 ms against 1.6 ms to run it
            // (pg_stat_statements, BENCHMARKS.md). A generic plan is made once per
            // connection and made again when ANALYZE changes the statistics.
            // Unnamed (uncached) statements are always planned for their values.
            conn.batch_execute(&format!(
                "SET application_name = '{application_name}'; SET statement_timeout = '{}s'; \
                 SET synchronous_commit = {synchronous_commit}; SET plan_cache_mode = force_generic_plan",
                STATEMENT_TIMEOUT.as_secs()
            ))
            .await
            .map_err(ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        }
        .boxed()
    });
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(database_url, config);
    Pool::builder(manager)
        .max_size(max_size)
        .wait_timeout(Some(Duration::from_secs(5)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| DbError::Unavailable(e.to_string()))
}

/// Checks a connection out of the pool.
pub async fn conn(pool: &DbPool) -> Result<DbConn, DbError> {
    pool.get().await.map_err(|e| DbError::Unavailable(e.to_string()))
}

/// Applies pending migrations. Blocking: diesel's harness is synchronous, and
/// diesel-async's own harness panics on a current-thread runtime, so async
/// callers run this through `spawn_blocking`.
/// Several processes (ingest, dispatchers, replicas) may start together on a
/// fresh database: a session advisory lock lets one migrate while the others
/// wait, then find nothing pending.
pub fn run_migrations_blocking(database_url: &str) -> Result<usize, DbError> {
    use diesel::RunQueryDsl as _;
    let mut conn = <AsyncConnectionWrapper<AsyncPgConnection> as diesel::Connection>::establish(database_url)
        .map_err(|e| DbError::Unavailable(e.to_string()))?;
    diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
        .execute(&mut conn)
        .map_err(|e| DbError::Migration(format!("taking the migration lock: {e}")))?;
    let applied = conn.run_pending_migrations(MIGRATIONS).map(|applied| applied.len());
    // The lock also ends with the session; unlocking is a courtesy.
    let _ = diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")).execute(&mut conn);
    applied.map_err(|e| DbError::Migration(e.to_string()))
}

/// Advisory lock key that serializes migrations ("webhook" in ASCII).
const MIGRATION_LOCK_KEY: i64 = 0x0077_6562_686f_6f6b;

/// Reverts every migration (tests check that `down.sql` works).
pub fn revert_all_migrations_blocking(database_url: &str) -> Result<usize, DbError> {
    let mut conn = <AsyncConnectionWrapper<AsyncPgConnection> as diesel::Connection>::establish(database_url)
        .map_err(|e| DbError::Unavailable(e.to_string()))?;
    let reverted = conn.revert_all_migrations(MIGRATIONS).map_err(|e| DbError::Migration(e.to_string()))?;
    Ok(reverted.len())
}

/// Applies pending migrations from async code.
pub async fn run_migrations(database_url: &str) -> Result<usize, DbError> {
    let url = database_url.to_owned();
    tokio::task::spawn_blocking(move || run_migrations_blocking(&url))
        .await
        .map_err(|e| DbError::Migration(e.to_string()))?
}

/// Marks a raw SQL query (`diesel::sql_query(…).bind(…)`) as safe to keep as a
/// prepared statement in the connection's statement cache. diesel never
/// caches `sql_query`, so each call cost a Parse/Describe round trip and a
/// fresh plan; the hot paths (fan-out, claims, records, outbox marks) run
/// the same text thousands of times a second. Only for queries whose SQL text
/// is fixed (the cache is keyed by the text and bind types).
#[derive(Debug, Clone)]
pub struct Prepared<Q>(pub Q);

impl<Q: diesel::query_builder::Query> diesel::query_builder::Query for Prepared<Q> {
    type SqlType = Q::SqlType;
}

impl<Q: diesel::query_builder::QueryFragment<diesel::pg::Pg>> diesel::query_builder::QueryFragment<diesel::pg::Pg>
    for Prepared<Q>
{
    fn walk_ast<'b>(&'b self, pass: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>) -> diesel::QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &diesel::pg::Pg) -> diesel::QueryResult<bool> {
        Ok(true)
    }
}

impl<Q> diesel::query_builder::QueryId for Prepared<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

/// How many migrations `migrations/` holds (tests check that all ran once).
pub fn migration_count() -> usize {
    diesel::migration::MigrationSource::<diesel::pg::Pg>::migrations(&MIGRATIONS).map_or(0, |m| m.len())
}

/// `url` with its database name replaced (query parameters kept).
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let base = match base.rfind('/') {
        Some(slash) if slash > "postgres://".len() => &base[..slash],
        _ => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

/// Runs one statement (`CREATE DATABASE`, `DROP DATABASE`…) on the admin
/// database at `admin_url`, on a plain blocking connection. For tests and the
/// bench, which make and drop databases of their own.
pub fn admin_execute_blocking(admin_url: &str, sql: &str) -> Result<(), DbError> {
    use diesel::RunQueryDsl as _;
    let mut conn = <AsyncConnectionWrapper<AsyncPgConnection> as diesel::Connection>::establish(admin_url)
        .map_err(|e| DbError::Unavailable(format!("connecting to the admin database: {e}")))?;
    diesel::sql_query(sql).execute(&mut conn).map(drop).map_err(DbError::Query)
}

/// [`admin_execute_blocking`] on a blocking thread.
pub async fn admin_execute(admin_url: &str, sql: String) -> Result<(), DbError> {
    let url = admin_url.to_owned();
    tokio::task::spawn_blocking(move || admin_execute_blocking(&url, &sql))
        .await
        .map_err(|e| DbError::Unavailable(format!("the admin statement's thread failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use diesel::result::{DatabaseErrorKind as Kind, Error};

    use super::*;

    fn database_error(kind: Kind, message: &str) -> DbError {
        DbError::Query(Error::DatabaseError(kind, Box::new(message.to_owned())))
    }

    #[test]
    fn only_failures_that_say_not_now_are_transient() {
        assert!(database_error(Kind::UnableToSendCommand, "connection closed").is_transient());
        assert!(database_error(Kind::ClosedConnection, "closed").is_transient());
        assert!(database_error(Kind::SerializationFailure, "could not serialize").is_transient());
        assert!(DbError::Unavailable("pool".into()).is_transient());
        assert!(DbError::ConnectionLost(Error::NotFound).is_transient(), "a lost connection is transient");
        assert!(!DbError::Query(Error::NotFound).is_transient());
        assert!(!database_error(Kind::CheckViolation, "new row violates check constraint").is_transient());
        assert!(!DbError::Miscounted { asked: 2, answered: 1 }.is_transient());
        // No diesel kind of their own: told by PostgreSQL's message (then 503, not 500).
        assert!(database_error(Kind::Unknown, "deadlock detected").is_transient());
        assert!(database_error(Kind::Unknown, "canceling statement due to statement timeout").is_transient());
        assert!(database_error(Kind::Unknown, "could not obtain lock on row in relation \"deliveries\"").is_transient());
        assert!(database_error(Kind::Unknown, "terminating connection due to administrator command").is_transient());
        assert!(!database_error(Kind::Unknown, "division by zero").is_transient());
    }

    #[test]
    fn with_database_replaces_only_the_database_name() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(with_database("postgres://u@h/postgres?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }

    #[test]
    fn a_localized_server_message_stays_a_query_failure() {
        // Only PostgreSQL's English prefixes are known; in another `lc_messages`
        // a deadlock reads differently and stays what it was before (a 500).
        assert!(!database_error(Kind::Unknown, "Verklemmung (Deadlock) entdeckt").is_transient());
        assert!(!database_error(Kind::Unknown, "annulation de la requête à cause du délai").is_transient());
    }
}

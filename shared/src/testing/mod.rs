//! The test harness of every crate (ingest's and the dispatcher's integration
//! tests, the bench's smoke test): a database per test, an AMQP prefix per
//! test, API keys, waiting on conditions, and a TCP proxy that can cut a
//! connection. Everything is real: PostgreSQL and RabbitMQ on this machine.

mod proxy;

use std::{collections::HashMap, time::Duration};

use base64::Engine;

pub use proxy::TcpProxy;

use crate::{
    amqp::Topology,
    config::{Config, ConfigError},
    db::{admin_execute_blocking, with_database},
    models::api_key::{self, Principal},
};

/// Where the test server's admin database is (`TEST_DATABASE_ADMIN_URL`).
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_ADMIN_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The broker tests use (`TEST_AMQP_URL`, else `AMQP_URL`, else local guest).
pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .or_else(|_| std::env::var("AMQP_URL"))
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A fresh, migrated database, dropped when this value is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// Creates `wh_test_<uuid>` and applies every migration.
    pub async fn create() -> Self {
        let name = format!("wh_test_{}", uuid::Uuid::new_v4().simple());
        let url = with_database(&admin_url(), &name);
        let create = format!("CREATE DATABASE \"{name}\"");
        let migrate_url = url.clone();
        tokio::task::spawn_blocking(move || {
            admin_execute_blocking(&admin_url(), &create).map_err(|e| format!("create test database: {e}"))?;
            crate::db::run_migrations_blocking(&migrate_url).map_err(|e| format!("migrate test database: {e}"))
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
        .unwrap_or_else(|e| panic!("{e} (is PostgreSQL running on {}?)", admin_url()));
        Self { name, url }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let _ = std::thread::spawn(move || admin_execute_blocking(&admin_url(), &sql)).join();
    }
}

/// A unique `AMQP_PREFIX`; its exchanges and queues are deleted on drop.
pub struct TestPrefix {
    pub prefix: String,
    topology: Option<Topology>,
}

impl TestPrefix {
    pub fn new() -> Self {
        Self { prefix: format!("test_{}", uuid::Uuid::new_v4().simple()), topology: None }
    }

    /// Remembers which topology to delete (the retry delays decide the queue names).
    pub fn track(&mut self, topology: Topology) {
        self.topology = Some(topology);
    }
}

impl Default for TestPrefix {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestPrefix {
    fn drop(&mut self) {
        let Some(topology) = self.topology.take() else { return };
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async move {
                let connection = crate::amqp::connect(&amqp_url()).await.ok()?;
                let channel = connection.create_channel().await.ok()?;
                let _ = tokio::time::timeout(Duration::from_secs(5), topology.delete(&channel)).await;
                let _ = connection.close(200, "test done".into()).await;
                Some(())
            })
        })
        .join();
    }
}

/// Runs `future` to completion from synchronous code on a multi-thread tokio
/// runtime, e.g. a test fixture's `Drop` stopping its services before its
/// database goes. On any other runtime (or none) it does nothing.
pub fn finish_in_drop(future: impl std::future::Future<Output = ()>) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
    if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
        tokio::task::block_in_place(|| handle.block_on(future));
    }
}

/// What every integration test starts from: a fresh database, an AMQP prefix
/// of its own (its queues deleted on drop) and a test config for both.
/// Dropping it drops the database and the queues, so keep it alive, and drop
/// it last, for as long as any service of the test runs.
pub struct TestEnvironment {
    pub config: Config,
    pub prefix: TestPrefix,
    pub db: TestDb,
}

impl TestEnvironment {
    /// Turns logging on and makes the database, prefix and config;
    /// `overrides` win over [`test_config`]'s settings.
    pub async fn create(overrides: &[(&str, &str)]) -> Self {
        crate::telemetry::init_logging();
        let db = TestDb::create().await;
        let mut prefix = TestPrefix::new();
        let config = test_config(&db.url, &prefix.prefix, overrides)
            .unwrap_or_else(|e| panic!("test config with overrides {overrides:?}: {e}"));
        prefix.track(Topology::from_config(&config));
        Self { config, prefix, db }
    }
}

/// Creates an API key for `principal` and returns its token.
pub async fn create_api_key(pool: &crate::db::DbPool, principal: &Principal, name: &str) -> String {
    let mut conn = crate::db::conn(pool).await.unwrap_or_else(|e| panic!("a connection for an API key: {e}"));
    api_key::create(&mut conn, principal, Some(name)).await.unwrap_or_else(|e| panic!("creating an API key: {e}"))
}

/// A config for tests: http and private targets allowed, `RETRY_SCHEDULE=1s,2s,3s`, `RETRY_JITTER=0`,
/// a random secret key, ports chosen by the OS; `overrides` wins.
pub fn test_config(database_url: &str, amqp_prefix: &str, overrides: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let key = base64::engine::general_purpose::STANDARD.encode(crate::crypto::random_bytes::<32>().unwrap_or([9; 32]));
    let mut vars: HashMap<String, String> = [
        ("DATABASE_URL", database_url.to_owned()),
        ("AMQP_URL", amqp_url()),
        ("AMQP_PREFIX", amqp_prefix.to_owned()),
        ("INGEST_BIND", "127.0.0.1:0".to_owned()),
        ("DISPATCHER_BIND", "127.0.0.1:0".to_owned()),
        ("WEBHOOK_SECRET_KEY", key),
        ("RETRY_SCHEDULE", "1s,2s,3s".to_owned()),
        // Exact retry times: tests that time retries must not see jitter.
        ("RETRY_JITTER", "0".to_owned()),
        ("ALLOW_HTTP_TARGETS", "true".to_owned()),
        ("ALLOW_PRIVATE_TARGETS", "true".to_owned()),
        ("DATABASE_POOL_SIZE", "8".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in overrides {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    Config::from_lookup(|name| vars.get(name).cloned())
}

/// Polls `check` every 50 ms until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks `check` every 50 ms for `window` and says whether it held every
/// time, stopping at the first time it does not. For "nothing more happens"
/// assertions, which need a window by nature; waiting for something to happen
/// is [`eventually`].
pub async fn holds_for<F, Fut>(window: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + window;
    loop {
        if !check().await {
            return false;
        }
        if tokio::time::Instant::now() >= deadline {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

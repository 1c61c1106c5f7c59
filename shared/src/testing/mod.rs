//! Test helpers both crates' integration tests use: a database per test, an
//! AMQP prefix per test, and a TCP proxy that can cut the broker connection.
//! Everything is real: PostgreSQL and RabbitMQ on this machine.

mod proxy;

use std::{collections::HashMap, time::Duration};

use base64::Engine;

pub use proxy::TcpProxy;

use crate::{
    amqp::Topology,
    config::{Config, ConfigError},
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

fn with_database(url: &str, database: &str) -> String {
    match url.rfind('/') {
        Some(slash) => format!("{}/{database}", &url[..slash]),
        None => format!("{url}/{database}"),
    }
}

fn admin_execute(sql: String) -> Result<(), String> {
    use diesel::RunQueryDsl as _;
    let mut conn = <diesel_async::async_connection_wrapper::AsyncConnectionWrapper<
        diesel_async::AsyncPgConnection,
    > as diesel::Connection>::establish(&admin_url())
    .map_err(|e| e.to_string())?;
    diesel::sql_query(sql).execute(&mut conn).map(|_| ()).map_err(|e| e.to_string())
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
            admin_execute(create).map_err(|e| format!("create test database: {e}"))?;
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
        let _ = std::thread::spawn(move || admin_execute(sql)).join();
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

/// A config for tests: http and private targets allowed, `RETRY_SCHEDULE=1s,2s,3s`,
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

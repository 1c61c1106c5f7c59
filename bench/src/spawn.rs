//! `--spawn`: starts ingest and dispatchers from the release binaries next
//! to the bench's own executable, against a fresh database and AMQP prefix,
//! creates API keys with `webhooks-ingest api-key create`, and removes it
//! all again at the end (also after an error or Ctrl-C).

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use base64::Engine;
use shared::{
    amqp::Topology,
    config::QueueType,
    db::{self, admin_execute},
};
use tokio::process::{Child, Command};

use crate::{
    api,
    error::BenchError,
    services::{Services, Target, TenantKey},
};

/// Name of the ingest binary.
pub const INGEST_BIN: &str = "webhooks-ingest";
/// Name of the dispatcher binary.
pub const DISPATCHER_BIN: &str = "webhooks-dispatcher";

/// What to start.
#[derive(Debug, Clone)]
pub struct SpawnOptions {
    /// A database on the server where `webhooks_bench_<random>` is created.
    pub admin_url: String,
    pub amqp_url: String,
    /// Tenant keys to create.
    pub tenants: usize,
    /// Dispatchers to start at first.
    pub dispatchers: usize,
    /// `RETRY_SCHEDULE` of the services.
    pub retry_schedule: String,
    /// `DISPATCHER_CONCURRENCY`, if set.
    pub dispatcher_concurrency: Option<usize>,
    /// Where the binaries are; default: the directory of this executable.
    pub bin_dir: Option<PathBuf>,
    /// More environment for every service (`--service-env`), applied last.
    pub extra_env: Vec<(String, String)>,
}

/// Services this process started, and everything needed to remove them.
pub struct Spawned {
    options: SpawnOptions,
    id: String,
    target: Target,
    bin_dir: PathBuf,
    log_dir: PathBuf,
    env: Vec<(String, String)>,
    ingest: Option<Child>,
    dispatchers: Vec<Child>,
    database: Option<String>,
    topology: Option<Topology>,
}

impl Spawned {
    /// Prepares; nothing runs until [`Spawned::boot`].
    pub fn new(options: SpawnOptions) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let log_dir = std::env::temp_dir().join(format!("webhooks-bench-{id}"));
        Self {
            target: Target {
                ingest_url: String::new(),
                tenants: Vec::new(),
                publisher_token: String::new(),
                amqp_url: options.amqp_url.clone(),
                amqp_prefix: format!("bench_{id}"),
                dispatcher_metrics_urls: Vec::new(),
                database_name: None,
                admin_url: Some(options.admin_url.clone()),
                ingest_pids: Vec::new(),
                dispatcher_pids: Vec::new(),
                delete_subscriptions: false,
            },
            bin_dir: PathBuf::new(),
            log_dir,
            env: Vec::new(),
            ingest: None,
            dispatchers: Vec::new(),
            database: None,
            topology: None,
            options,
            id,
        }
    }

    /// Where the services' logs are.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Creates the database, starts ingest and the dispatchers, creates keys.
    pub async fn boot(&mut self) -> Result<(), BenchError> {
        self.bin_dir = locate_binaries(self.options.bin_dir.clone()).await?;
        std::fs::create_dir_all(&self.log_dir)?;

        let name = format!("webhooks_bench_{}", self.id);
        let create = format!("CREATE DATABASE \"{name}\"");
        admin_execute(&self.options.admin_url, create).await.map_err(|e| BenchError::Spawn(e.to_string()))?;
        self.database = Some(name.clone());
        self.target.database_name = Some(name.clone());

        shared::config::parse_schedule(&self.options.retry_schedule).map_err(|e| BenchError::Options(e.to_string()))?;
        self.topology = Some(Topology { prefix: self.target.amqp_prefix.clone(), queue_type: QueueType::Classic });

        let key = base64::engine::general_purpose::STANDARD
            .encode(shared::crypto::random_bytes::<32>().map_err(|e| BenchError::Spawn(e.to_string()))?);
        self.env = vec![
            ("DATABASE_URL".into(), db::with_database(&self.options.admin_url, &name)),
            ("AMQP_URL".into(), self.options.amqp_url.clone()),
            ("AMQP_PREFIX".into(), self.target.amqp_prefix.clone()),
            ("WEBHOOK_SECRET_KEY".into(), key),
            ("ALLOW_HTTP_TARGETS".into(), "true".into()),
            ("ALLOW_PRIVATE_TARGETS".into(), "true".into()),
            ("RETRY_SCHEDULE".into(), self.options.retry_schedule.clone()),
            ("RUST_LOG".into(), "warn".into()),
        ];
        if let Some(n) = self.options.dispatcher_concurrency {
            self.env.push(("DISPATCHER_CONCURRENCY".into(), n.to_string()));
        }
        self.env.extend(self.options.extra_env.iter().cloned());

        // Ingest first: it applies the migrations, so two processes never race to.
        let port = free_port()?;
        let child = self.command(INGEST_BIN, "ingest.log", &[("INGEST_BIND", format!("127.0.0.1:{port}"))])?;
        self.target.ingest_pids.extend(child.id());
        self.ingest = Some(child);
        self.target.ingest_url = format!("http://127.0.0.1:{port}");
        api::wait_ready(&probe_client()?, &self.target.ingest_url, Duration::from_secs(60))
            .await
            .map_err(|e| self.with_log_hint(e))?;

        for _ in 0..self.options.dispatchers.max(1) {
            self.start_dispatcher().await?;
        }

        self.target.publisher_token = self.create_key(&["--publisher"]).await?;
        let mut keys = Vec::new();
        for k in 0..self.options.tenants.max(1) {
            let tenant_id = format!("bench-{}-{k}", self.id);
            let token = self.create_key(&["--tenant", &tenant_id]).await?;
            keys.push(TenantKey { tenant_id, token });
        }
        self.target.tenants = keys;
        Ok(())
    }

    async fn start_dispatcher(&mut self) -> Result<(), BenchError> {
        let n = self.dispatchers.len() + 1;
        let port = free_port()?;
        let child = self.command(
            DISPATCHER_BIN,
            &format!("dispatcher-{n}.log"),
            &[("DISPATCHER_BIND", format!("127.0.0.1:{port}"))],
        )?;
        self.target.dispatcher_pids.extend(child.id());
        self.dispatchers.push(child);
        let base = format!("http://127.0.0.1:{port}");
        api::wait_ready(&probe_client()?, &base, Duration::from_secs(60)).await.map_err(|e| self.with_log_hint(e))?;
        self.target.dispatcher_metrics_urls.push(format!("{base}/metrics"));
        Ok(())
    }

    fn command(&self, binary: &str, log: &str, extra_env: &[(&str, String)]) -> Result<Child, BenchError> {
        let log_file = std::fs::File::create(self.log_dir.join(log))?;
        let child = Command::new(self.bin_dir.join(binary))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra_env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::Spawn(format!("{binary}: {e}")))?;
        Ok(child)
    }

    /// Runs `webhooks-ingest api-key create …`; the token is the last line of stdout.
    async fn create_key(&self, scope: &[&str]) -> Result<String, BenchError> {
        let output = Command::new(self.bin_dir.join(INGEST_BIN))
            .args(["api-key", "create"])
            .args(scope)
            .args(["--name", "webhooks-bench"])
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .output()
            .await?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        match stdout.lines().rev().find(|l| !l.trim().is_empty()) {
            Some(token) if output.status.success() => Ok(token.trim().to_owned()),
            _ => Err(BenchError::Spawn(format!(
                "api-key create failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))),
        }
    }

    fn with_log_hint(&self, err: BenchError) -> BenchError {
        BenchError::Spawn(format!("{err} (logs in {})", self.log_dir.display()))
    }

    /// Stops every process (SIGTERM, then SIGKILL after 5 s), deletes the
    /// queues and drops the database. Safe to call after a partial boot.
    pub async fn shutdown(&mut self, keep_logs: bool) {
        let mut children: Vec<Child> = self.dispatchers.drain(..).collect();
        children.extend(self.ingest.take());
        for child in &children {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
            }
        }
        for mut child in children {
            if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
        if let Some(topology) = self.topology.take() {
            let url = self.options.amqp_url.clone();
            let deleted = tokio::time::timeout(Duration::from_secs(10), async move {
                let (connection, _) = shared::amqp::connect_any(&shared::config::split_urls(&url), 0).await.ok()?;
                let channel = connection.create_channel().await.ok()?;
                let _ = topology.delete(&channel).await;
                let _ = connection.close(200, "bench done".into()).await;
                Some(())
            })
            .await;
            if !matches!(deleted, Ok(Some(()))) {
                log::warn!("could not delete the queues of prefix {}", self.target.amqp_prefix);
            }
        }
        if let Some(name) = self.database.take() {
            let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            if let Err(err) = admin_execute(&self.options.admin_url, drop).await {
                log::warn!("could not drop database {name}: {err}");
            }
        }
        if !keep_logs {
            let _ = std::fs::remove_dir_all(&self.log_dir);
        }
    }
}

impl Services for Spawned {
    fn target(&self) -> &Target {
        &self.target
    }

    async fn add_dispatcher(&mut self) -> Result<(), BenchError> {
        self.start_dispatcher().await
    }
}

/// The directory holding both service binaries; builds them with cargo
/// (same profile and target directory as this executable) when missing.
async fn locate_binaries(bin_dir: Option<PathBuf>) -> Result<PathBuf, BenchError> {
    let dir = match bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()?
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| BenchError::Spawn("the bench executable has no directory".into()))?,
    };
    let present = |dir: &Path| dir.join(INGEST_BIN).is_file() && dir.join(DISPATCHER_BIN).is_file();
    if present(&dir) {
        return Ok(dir);
    }
    let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
    let target_dir = dir.parent().map(Path::to_path_buf);
    let (Some(target_dir), "release" | "debug") = (target_dir, profile.as_str()) else {
        return Err(BenchError::Spawn(format!(
            "{INGEST_BIN} and {DISPATCHER_BIN} are not in {}; build them with `cargo build --release -p ingest -p dispatcher`",
            dir.display()
        )));
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    eprintln!("building {INGEST_BIN} and {DISPATCHER_BIN} ({profile}) …");
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build.current_dir(&workspace).env("CARGO_TARGET_DIR", &target_dir).args([
        "build",
        "-p",
        "ingest",
        "-p",
        "dispatcher",
    ]);
    if profile == "release" {
        build.arg("--release");
    }
    let status = build.status().await?;
    if !status.success() || !present(&dir) {
        return Err(BenchError::Spawn(format!("building the services failed ({status})")));
    }
    Ok(dir)
}

fn probe_client() -> Result<reqwest::Client, BenchError> {
    Ok(reqwest::Client::builder().no_proxy().build()?)
}

/// A port nothing listens on right now.
fn free_port() -> Result<u16, BenchError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

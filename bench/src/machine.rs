//! The machine a run was measured on.

use serde::Serialize;

/// Hardware and server versions, for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MachineInfo {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub postgres: String,
    pub rabbitmq: String,
    /// 1-minute load average when the run started (other work on the box skews results).
    pub load_average_at_start: f64,
}

impl MachineInfo {
    /// Reads `/proc`, asks PostgreSQL for its version, and finds RabbitMQ's.
    pub async fn collect(admin_url: &str) -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_owned()))
            .unwrap_or_default();
        let memory_kib: f64 = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:")?.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        Self {
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model,
            memory_gib: memory_kib / 1024.0 / 1024.0,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            postgres: postgres_version(admin_url).await.unwrap_or_else(|| "unknown".into()),
            rabbitmq: rabbitmq_version().unwrap_or_else(|| "unknown".into()),
            load_average_at_start: load_average().unwrap_or(0.0),
        }
    }
}

/// The 1-minute load average.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

#[derive(diesel::QueryableByName)]
struct Version {
    #[diesel(sql_type = diesel::sql_types::Text)]
    server_version: String,
}

async fn postgres_version(admin_url: &str) -> Option<String> {
    let url = admin_url.to_owned();
    tokio::task::spawn_blocking(move || {
        use diesel::{Connection as _, RunQueryDsl as _};
        let mut conn =
            diesel_async::async_connection_wrapper::AsyncConnectionWrapper::<diesel_async::AsyncPgConnection>::establish(&url).ok()?;
        let version: Version = diesel::sql_query("SHOW server_version").get_result(&mut conn).ok()?;
        Some(version.server_version)
    })
    .await
    .ok()
    .flatten()
}

/// From the installed server's directory name (`rabbitmq_server-3.10.8`).
fn rabbitmq_version() -> Option<String> {
    std::fs::read_dir("/usr/lib/rabbitmq/lib")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("rabbitmq_server-").map(str::to_owned))
        .max()
}

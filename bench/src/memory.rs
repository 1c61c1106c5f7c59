//! `--memory`: ingest's resident memory under the two loads issue 10 bounds:
//! 200 concurrent publishes of 256 KiB over HTTP, then large (default 20 MB)
//! messages arriving over AMQP. Ingest's RSS is sampled every 20 ms.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
use serde::Serialize;
use serde_json::json;

use crate::{error::BenchError, procstat::status_kib, services::Target};

/// What the memory run measured.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    pub ingest_rss_baseline_mib: f64,
    /// HTTP: concurrent publishes, and their answers by status code.
    pub http_publishes: usize,
    pub http_statuses: BTreeMap<u16, usize>,
    pub http_rss_peak_mib: f64,
    pub http_seconds: f64,
    /// AMQP: large messages published, and how many reached the rejected queue.
    pub amqp_messages: usize,
    pub amqp_message_bytes: usize,
    pub amqp_rejected: u32,
    pub amqp_rss_peak_mib: f64,
    pub amqp_seconds: f64,
}

impl MemoryReport {
    /// The human-readable summary.
    pub fn table(&self) -> String {
        format!(
            "ingest RSS baseline {:.1} MiB\n\
             {} concurrent 256 KiB publishes: answers {:?} in {:.1} s, ingest RSS peak {:.1} MiB\n\
             {} AMQP messages of {} MB: {} in the rejected queue after {:.1} s, ingest RSS peak {:.1} MiB\n",
            self.ingest_rss_baseline_mib,
            self.http_publishes,
            self.http_statuses,
            self.http_seconds,
            self.http_rss_peak_mib,
            self.amqp_messages,
            self.amqp_message_bytes / 1_000_000,
            self.amqp_rejected,
            self.amqp_seconds,
            self.amqp_rss_peak_mib
        )
    }
}

/// Samples a process's VmRSS every 20 ms, keeping the peak.
struct RssPeak {
    peak_kib: Arc<AtomicU64>,
    running: Arc<AtomicBool>,
}

impl RssPeak {
    fn start(pid: u32) -> Self {
        let peak_kib = Arc::new(AtomicU64::new(0));
        let running = Arc::new(AtomicBool::new(true));
        let (peak, run) = (peak_kib.clone(), running.clone());
        tokio::spawn(async move {
            while run.load(Ordering::Relaxed) {
                if let Some(rss) = status_kib(pid, "VmRSS") {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Self { peak_kib, running }
    }

    fn finish(self) -> f64 {
        self.running.store(false, Ordering::Relaxed);
        self.peak_kib.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

/// Runs both loads against `target` (whose ingest must be a local process).
pub async fn run(
    target: &Target,
    http_publishes: usize,
    amqp_messages: usize,
    amqp_message_bytes: usize,
) -> Result<MemoryReport, BenchError> {
    let pid = *target.ingest_pids.first().ok_or_else(|| BenchError::Options("ingest's process is unknown".into()))?;
    let rss_now = || status_kib(pid, "VmRSS").map_or(0.0, |kib| kib as f64 / 1024.0);
    let tenant = target.tenants.first().ok_or_else(|| BenchError::Options("no tenant key".into()))?;
    let baseline = rss_now();

    // `http_publishes` concurrent publishes of (just under) 256 KiB each.
    let client = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(256).build()?;
    let blob = "x".repeat(256 * 1024 - 300);
    let peak = RssPeak::start(pid);
    let started = Instant::now();
    let requests = (0..http_publishes).map(|n| {
        let body = json!({"event_type": "invoice.created", "tenant_id": tenant.tenant_id,
                          "event_id": format!("evt_memory_{n}"), "event_data": {"blob": blob}})
        .to_string();
        let request = client
            .post(format!("{}/api/v1/events", target.ingest_url.trim_end_matches('/')))
            .bearer_auth(&target.publisher_token)
            .header("content-type", "application/json")
            .body(body);
        async move { request.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
    });
    let statuses = futures_util::future::join_all(requests).await;
    let http_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let http_rss_peak_mib = peak.finish();
    let mut http_statuses = BTreeMap::new();
    for status in statuses {
        *http_statuses.entry(status).or_insert(0) += 1;
    }

    // Large AMQP messages, published back to back with confirms.
    let urls = shared::config::split_urls(&target.amqp_url);
    let (connection, _) = shared::amqp::connect_any(&urls, 0).await?;
    let channel = connection.create_channel().await.map_err(shared::amqp::BrokerError::from)?;
    channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(shared::amqp::BrokerError::from)?;
    let big = json!({"event_type": "invoice.created", "tenant_id": tenant.tenant_id,
                     "event_data": {"blob": "y".repeat(amqp_message_bytes)}})
    .to_string()
    .into_bytes();
    let exchange = format!("{}.events", target.amqp_prefix);
    let rejected = format!("{}.events.rejected", target.amqp_prefix);
    let peak = RssPeak::start(pid);
    let started = Instant::now();
    for _ in 0..amqp_messages {
        shared::amqp::publish_confirmed(&channel, &exchange, "invoice.created", &big, shared::amqp::persistent_json())
            .await?;
    }
    drop(big);
    let mut amqp_rejected = 0;
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        let declared = channel
            .queue_declare(
                rejected.as_str().into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                Default::default(),
            )
            .await
            .map_err(shared::amqp::BrokerError::from)?;
        amqp_rejected = declared.message_count();
        if amqp_rejected as usize >= amqp_messages {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let amqp_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let amqp_rss_peak_mib = peak.finish();
    let _ = connection.close(200, "memory run done".into()).await;
    Ok(MemoryReport {
        ingest_rss_baseline_mib: baseline,
        http_publishes,
        http_statuses,
        http_rss_peak_mib,
        http_seconds,
        amqp_messages,
        amqp_message_bytes,
        amqp_rejected,
        amqp_rss_peak_mib,
        amqp_seconds,
    })
}

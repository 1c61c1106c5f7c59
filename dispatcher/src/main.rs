//! `webhooks-dispatcher`: delivers webhooks until SIGTERM, then drains.

use clap::Parser;
use dispatcher::shutdown;
use shared::config::Config;

/// Shown under `--help`: where the settings come from.
const SETTINGS_HELP: &str = "\
Settings come from environment variables:
  DATABASE_URL            PostgreSQL (default postgres://postgres@127.0.0.1:5432/webhooks)
  AMQP_URL                RabbitMQ (default amqp://guest:guest@127.0.0.1:5672/%2f)
  AMQP_PREFIX             prefix of every exchange and queue (default webhooks)
  DISPATCHER_BIND         /healthz, /readyz, /metrics listener (default 127.0.0.1:9091)
  WEBHOOK_SECRET_KEY      32 bytes, base64 (required): decrypts the signing secrets
  RETRY_SCHEDULE          delays before retry 1, 2, 3... (default 5m,1h,6h)
  DISPATCHER_CONCURRENCY  attempts at once (default 256)
  RUST_LOG                log filter (default info)
The README's Configuration table lists every setting. SIGTERM or Ctrl-C stops
taking work and drains the attempts in flight (up to 65 s).";

/// Consumes deliveries, signs and POSTs them, records every attempt and
/// schedules retries; run as many as you need.
#[derive(Parser)]
#[command(name = "webhooks-dispatcher", version, about, after_help = SETTINGS_HELP)]
struct Cli {}

#[tokio::main]
async fn main() {
    shared::telemetry::init_logging();
    // `--help` and `--version` answer here, before any configuration is read.
    Cli::parse();
    if let Err(err) = run().await {
        log::error!("webhooks-dispatcher failed: {err:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let dispatcher = dispatcher::server::start(config).await?;
    shutdown::signal().await;
    log::info!("dispatcher shutting down: no new deliveries; draining in-flight attempts");
    let drained = dispatcher.shutdown(shutdown::DRAIN_BOUND).await;
    log::info!("dispatcher stopped drained={drained}");
    Ok(())
}

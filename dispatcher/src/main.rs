//! `webhooks-dispatcher`: delivers webhooks until SIGTERM, then drains.

use dispatcher::shutdown;
use shared::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init_logging();
    let config = Config::from_env()?;
    let dispatcher = dispatcher::server::start(config).await?;
    shutdown::signal().await;
    log::info!("shutting down: no new deliveries; draining in-flight attempts");
    let drained = dispatcher.shutdown(shutdown::DRAIN_BOUND).await;
    log::info!("stopped drained={drained}");
    Ok(())
}

//! `webhooks-dispatcher`: delivers webhooks until SIGTERM.

use shared::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init_logging();
    let config = Config::from_env()?;
    let dispatcher = dispatcher::server::start(config).await?;
    wait_for_shutdown().await;
    log::info!("shutting down");
    dispatcher.health_server.stop(true).await;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn wait_for_shutdown() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

//! Stopping on a signal: SIGTERM (or Ctrl-C) stops consuming and drains the
//! attempts in flight, within [`DRAIN_BOUND`].

use std::time::Duration;

/// How long in-flight attempts get to finish after SIGTERM. Whatever is still
/// running then stays unacked and is redelivered to another dispatcher.
pub const DRAIN_BOUND: Duration = Duration::from_secs(30);

/// Resolves on SIGTERM or Ctrl-C.
pub async fn signal() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

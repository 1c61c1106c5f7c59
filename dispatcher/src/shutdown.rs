//! Stopping on a signal: SIGTERM (or Ctrl-C) stops consuming and drains the
//! attempts in flight, within [`DRAIN_BOUND`].

use std::time::Duration;

/// How long in-flight attempts get to finish after SIGTERM: the longest
/// subscription timeout (60 s) plus time to record the outcome. Whatever is
/// still running then stays unacked and is redelivered to another dispatcher.
/// Deployments give the process at least this long before SIGKILL.
pub const DRAIN_BOUND: Duration = Duration::from_secs(65);

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

//! Counters: Prometheus metrics for operators, plus in-process tallies tests
//! can wait on (e.g. "the duplicate message was dropped").

use std::sync::atomic::{AtomicU64, Ordering};

/// What this dispatcher did since it started.
#[derive(Debug, Default)]
pub struct Stats {
    /// HTTP attempts made (recorded or not).
    pub attempts: AtomicU64,
    /// Messages dropped because their attempt was finished or superseded.
    pub stale: AtomicU64,
    /// Messages put off without an attempt (subscription at its cap, live claim elsewhere).
    pub deferred: AtomicU64,
    /// Retries published to a delay queue.
    pub retries_scheduled: AtomicU64,
}

impl Stats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Registers the dispatcher's metric descriptions (names are the contract for dashboards).
pub fn describe_metrics() {
    metrics::describe_counter!("webhook_attempts_total", "HTTP attempts by outcome code");
    metrics::describe_histogram!("webhook_attempt_duration_seconds", "Duration of one HTTP attempt");
    metrics::describe_gauge!("dispatcher_in_flight", "Attempts being made right now");
    metrics::describe_counter!("retries_scheduled_total", "Retries queued on a delay queue");
    metrics::describe_counter!("subscriptions_disabled_total", "Subscriptions disabled after a 410 Gone");
    metrics::describe_counter!("dispatch_messages_total", "Dispatch messages handled, by result");
}

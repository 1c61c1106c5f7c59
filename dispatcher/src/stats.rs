//! In-process tallies tests can wait on (e.g. "the duplicate message was
//! dropped"); the Prometheus metrics are in [`crate::metric_names`].

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

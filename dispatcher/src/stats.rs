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
    /// Deliveries parked in the database without an attempt because their
    /// circuit is open: the only way a delivery is put off.
    pub parked: AtomicU64,
    /// Duplicate messages (the attempt is claimed by another dispatcher right
    /// now) parked until that claim runs out.
    pub duplicates_parked: AtomicU64,
    /// Messages that waited in this process for a slot of their subscription.
    pub waited: AtomicU64,
    /// Retries scheduled (they wait in the database until due).
    pub retries_scheduled: AtomicU64,
    /// Due deliveries this dispatcher's scheduler queued again.
    pub requeued: AtomicU64,
}

impl Stats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

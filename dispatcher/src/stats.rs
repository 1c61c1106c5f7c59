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
    /// Deliveries parked in the database without an attempt (circuit open,
    /// attempt claimed elsewhere): the only way a message is put off.
    pub parked: AtomicU64,
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

/// Registers the dispatcher's metric descriptions (names are the contract for dashboards).
pub fn describe_metrics() {
    metrics::describe_counter!("webhook_attempts_total", "HTTP attempts by outcome code");
    metrics::describe_histogram!("webhook_attempt_duration_seconds", "Duration of one HTTP attempt");
    metrics::describe_gauge!("dispatcher_in_flight", "Attempts being made right now");
    metrics::describe_counter!("retries_scheduled_total", "Retries scheduled (they wait in the database until due)");
    metrics::describe_counter!(
        "webhooks_dispatcher_subscriptions_disabled_total",
        "Subscriptions disabled, by cause (gone: 410; auto_disable: every attempt failed for AUTO_DISABLE_AFTER)"
    );
    metrics::describe_counter!(
        "webhooks_dispatcher_circuit_transitions_total",
        "Circuit transitions by kind: opened, reopened (failed probe), closed"
    );
    metrics::describe_counter!(
        "webhooks_dispatcher_deliveries_parked_total",
        "Deliveries parked in the database without an attempt, by reason (circuit_open, claimed_elsewhere): deferrals"
    );
    metrics::describe_counter!(
        "webhooks_dispatcher_deliveries_released_total",
        "Parked deliveries made due again when their circuit closed"
    );
    metrics::describe_counter!(
        "webhooks_dispatcher_due_requeued_total",
        "Due deliveries (retries, parked) the scheduler put back on the dispatch queue"
    );
    metrics::describe_histogram!(
        "webhooks_dispatcher_slot_wait_seconds",
        "How long a message waited in the dispatcher for a slot of its subscription"
    );
    metrics::describe_gauge!("webhooks_dispatcher_waiting", "Messages waiting in the dispatcher for a slot");
    metrics::describe_counter!("dispatch_messages_total", "Dispatch messages handled, by result");
}

//! Every Prometheus metric the dispatcher exports: one name each, prefixed
//! `webhooks_dispatcher_`, described once in [`register`]. Dashboards and
//! alerts (`deploy/grafana/`, `deploy/prometheus/alerts.yml`) use these names:
//! renaming one breaks them.
//!
//! The prefix is part of each name, not added by a recorder layer: ingest and
//! a dispatcher may share one process (and one recorder) in tests.

use shared::telemetry::ServiceMetrics;

use crate::outcome::OutcomeKind;

/// Counter `{outcome}`: HTTP attempts made, by outcome code.
pub const ATTEMPTS: &str = "webhooks_dispatcher_attempts_total";
/// Histogram: how long one HTTP attempt took.
pub const ATTEMPT_DURATION: &str = "webhooks_dispatcher_attempt_duration_seconds";
/// Counter `{status}`: recorded attempts by the status they left their delivery
/// in: `succeeded`, `retrying`, or `failed` (for good).
pub const DELIVERY_OUTCOMES: &str = "webhooks_dispatcher_delivery_outcomes_total";
/// Gauge: HTTP attempts in progress right now.
pub const IN_FLIGHT: &str = "webhooks_dispatcher_in_flight";
/// Counter: retries scheduled (they wait in the database until due).
pub const RETRIES_SCHEDULED: &str = "webhooks_dispatcher_retries_scheduled_total";
/// Counter `{cause}`: subscriptions disabled (`gone`: 410; `auto_disable`:
/// every attempt failed for `AUTO_DISABLE_AFTER`).
pub const SUBSCRIPTIONS_DISABLED: &str = "webhooks_dispatcher_subscriptions_disabled_total";
/// Counter `{transition}`: circuit transitions (`opened`, `reopened`, `closed`).
pub const CIRCUIT_TRANSITIONS: &str = "webhooks_dispatcher_circuit_transitions_total";
/// Counter `{reason}`: deliveries parked in the database without an attempt
/// (`circuit_open`, `claimed_elsewhere`): every deferral there is.
pub const PARKED: &str = "webhooks_dispatcher_deliveries_parked_total";
/// Counter: parked deliveries made due again when their circuit closed.
pub const RELEASED: &str = "webhooks_dispatcher_deliveries_released_total";
/// Counter: due deliveries (retries, parked ones) the scheduler queued again.
pub const DUE_REQUEUED: &str = "webhooks_dispatcher_due_requeued_total";
/// Histogram: how long a message waited in the dispatcher for a slot of its subscription.
pub const SLOT_WAIT: &str = "webhooks_dispatcher_slot_wait_seconds";
/// Gauge: messages waiting in the dispatcher for a slot.
pub const WAITING: &str = "webhooks_dispatcher_waiting";
/// Counter `{result}`: dispatch messages handled, by what became of them.
pub const MESSAGES: &str = "webhooks_dispatcher_messages_total";
/// Counter: requests sent a second time, at once, because the connection
/// closed before any answer (an idle keep-alive connection the endpoint closed).
pub const RESENT_ON_CLOSED_CONNECTION: &str = "webhooks_dispatcher_resent_on_closed_connection_total";
/// Histogram `{batch}`: requests per batched database statement.
pub const BATCH_SIZE: &str = "webhooks_dispatcher_batch_size";
/// Gauge: 1 while the database and the broker are reachable (as `/readyz`), else 0.
pub const READY: &str = "webhooks_dispatcher_ready";
/// What the shared telemetry code records for the dispatcher: its listener's
/// requests and readiness.
pub const SERVICE: ServiceMetrics = ServiceMetrics {
    http_requests: "webhooks_dispatcher_http_requests_total",
    http_duration: "webhooks_dispatcher_http_request_duration_seconds",
    ready: READY,
};

/// Describes every metric and registers those whose series are known up
/// front, so `/metrics` lists them (at zero) from the start and alerts on
/// rates work before the first event.
pub fn register() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(ATTEMPTS, "HTTP attempts made, by outcome code (success, http_status, timeout, connect, ...)");
    describe_histogram!(ATTEMPT_DURATION, Unit::Seconds, "Duration of one HTTP attempt");
    describe_counter!(
        DELIVERY_OUTCOMES,
        "Recorded attempts by the status they left the delivery in (succeeded, retrying, failed for good)"
    );
    describe_gauge!(IN_FLIGHT, "HTTP attempts in progress right now");
    describe_counter!(RETRIES_SCHEDULED, "Retries scheduled (they wait in the database until due)");
    describe_counter!(
        SUBSCRIPTIONS_DISABLED,
        "Subscriptions disabled, by cause (gone: 410; auto_disable: every attempt failed for AUTO_DISABLE_AFTER)"
    );
    describe_counter!(CIRCUIT_TRANSITIONS, "Circuit transitions by kind: opened, reopened (failed probe), closed");
    describe_counter!(
        PARKED,
        "Deliveries parked in the database without an attempt, by reason (circuit_open, claimed_elsewhere)"
    );
    describe_counter!(RELEASED, "Parked deliveries made due again when their circuit closed");
    describe_counter!(
        DUE_REQUEUED,
        "Due deliveries (retries, parked ones) the scheduler put back on the dispatch queue"
    );
    describe_histogram!(
        SLOT_WAIT,
        Unit::Seconds,
        "How long a message waited in the dispatcher for its subscription's slot"
    );
    describe_gauge!(WAITING, "Messages waiting in the dispatcher for a slot");
    describe_counter!(MESSAGES, "Dispatch messages handled, by result (an outcome code, deferred, stale, ...)");
    describe_counter!(
        RESENT_ON_CLOSED_CONNECTION,
        "Requests sent again at once because the connection closed before any answer"
    );
    describe_histogram!(BATCH_SIZE, "Requests per batched database statement, by batch (claim, record)");
    describe_gauge!(READY, "1 while the database and the broker are reachable (as /readyz), else 0");
    describe_counter!(
        SERVICE.http_requests,
        "Requests to the health and metrics listener, by method, route and status"
    );
    describe_histogram!(SERVICE.http_duration, Unit::Seconds, "Latency of the health and metrics listener");

    // Registering a series makes it render (at zero) without changing it.
    for kind in OutcomeKind::ALL {
        let _ = metrics::counter!(ATTEMPTS, "outcome" => kind.code());
    }
    for status in ["succeeded", "retrying", "failed"] {
        let _ = metrics::counter!(DELIVERY_OUTCOMES, "status" => status);
    }
    let _ = metrics::histogram!(ATTEMPT_DURATION);
    let _ = metrics::gauge!(IN_FLIGHT);
    let _ = metrics::gauge!(READY);
    let _ = metrics::counter!(RETRIES_SCHEDULED);
    for cause in ["gone", "auto_disable"] {
        let _ = metrics::counter!(SUBSCRIPTIONS_DISABLED, "cause" => cause);
    }
    for transition in ["opened", "reopened", "closed"] {
        let _ = metrics::counter!(CIRCUIT_TRANSITIONS, "transition" => transition);
    }
    for reason in ["circuit_open", "claimed_elsewhere", "waited_too_long"] {
        let _ = metrics::counter!(PARKED, "reason" => reason);
    }
    let _ = metrics::counter!(RELEASED);
    let _ = metrics::counter!(DUE_REQUEUED);
    let _ = metrics::counter!(RESENT_ON_CLOSED_CONNECTION);
    let _ = metrics::histogram!(SLOT_WAIT);
    let _ = metrics::gauge!(WAITING);
}

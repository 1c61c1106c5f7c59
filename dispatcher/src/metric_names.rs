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
/// Counter: retries published to a delay queue.
pub const RETRIES_SCHEDULED: &str = "webhooks_dispatcher_retries_scheduled_total";
/// Counter: subscriptions disabled because their endpoint answered 410 Gone.
pub const SUBSCRIPTIONS_DISABLED: &str = "webhooks_dispatcher_subscriptions_disabled_total";
/// Counter `{result}`: dispatch messages handled, by what became of them.
pub const MESSAGES: &str = "webhooks_dispatcher_messages_total";
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
    describe_counter!(RETRIES_SCHEDULED, "Retries published to a delay queue");
    describe_counter!(SUBSCRIPTIONS_DISABLED, "Subscriptions disabled because their endpoint answered 410 Gone");
    describe_counter!(MESSAGES, "Dispatch messages handled, by result (an outcome code, deferred, stale, ...)");
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
    let _ = metrics::counter!(SUBSCRIPTIONS_DISABLED);
}

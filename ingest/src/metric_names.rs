//! Every Prometheus metric ingest exports: one name each, prefixed
//! `webhooks_ingest_`, described once in [`register`]. Dashboards and alerts
//! (`deploy/grafana/`, `deploy/prometheus/alerts.yml`) use these names:
//! renaming one breaks them.
//!
//! The prefix is part of each name, not added by a recorder layer: ingest and
//! a dispatcher may share one process (and one recorder) in tests.

use shared::telemetry::ServiceMetrics;

/// Counter `{source, event_type}`: events stored (not counting repeats of an `event_id`).
pub const EVENTS_ACCEPTED: &str = "webhooks_ingest_events_accepted_total";
/// Counter: deliveries created (one per subscription an event matched).
pub const DELIVERIES_CREATED: &str = "webhooks_ingest_deliveries_created_total";
/// Counter: deliveries created parked behind their subscription's open circuit
/// (in the database, no message queued).
pub const DELIVERIES_PARKED: &str = "webhooks_ingest_deliveries_parked_total";
/// Counter `{reason}`: AMQP-published events moved to the rejected queue.
pub const EVENTS_REJECTED: &str = "webhooks_ingest_events_rejected_total";
/// Counter: AMQP-published events requeued because they could not be stored now.
pub const AMQP_EVENTS_REQUEUED: &str = "webhooks_ingest_amqp_events_requeued_total";
/// Counter: dispatch messages the broker confirmed (first attempts, manual retries, relayed rows).
pub const DISPATCH_MESSAGES_PUBLISHED: &str = "webhooks_ingest_dispatch_messages_published_total";
/// Counter: deliveries left to the outbox relay because the in-memory dispatch buffer was full.
pub const DISPATCH_QUEUE_OVERFLOW: &str = "webhooks_ingest_dispatch_queue_overflow_total";
/// Gauge: unfinished deliveries the broker never confirmed, due for longer than
/// `OUTBOX_GRACE_MS`: what the relay has to send (counted up to 100,000).
pub const OUTBOX_BACKLOG: &str = "webhooks_ingest_outbox_backlog";
/// Counter: deliveries the outbox relay queued.
pub const OUTBOX_RELAYED: &str = "webhooks_ingest_outbox_relayed_total";
/// Histogram: events per shared publish transaction.
pub const FANOUT_BATCH_SIZE: &str = "webhooks_ingest_fanout_batch_size";
/// Gauge: publishes handed to the fan-out batcher and not answered yet.
pub const FANOUT_PENDING: &str = "webhooks_ingest_fanout_pending";
/// Counter: manual retries queued through the API.
pub const MANUAL_RETRIES: &str = "webhooks_ingest_manual_retries_total";
/// Counter: attempts queued by recover and bulk-retry jobs (requeued failed deliveries and missed events).
pub const JOB_ATTEMPTS_QUEUED: &str = "webhooks_ingest_job_attempts_queued_total";
/// Counter `{status}`: recover and bulk-retry jobs finished (`completed`, `failed`).
pub const JOBS_FINISHED: &str = "webhooks_ingest_jobs_finished_total";
/// Gauge `{queue}`: messages waiting in a RabbitMQ queue (`events_ingest`,
/// `dispatch`, `events_rejected`), sampled by the outbox relay.
pub const QUEUE_MESSAGES: &str = "webhooks_ingest_queue_messages";
/// Counter: AMQP-published events with neither `event_id` nor `message_id` (given a fresh id).
pub const EVENTS_WITHOUT_ID: &str = "webhooks_ingest_events_without_id_total";
/// Counter: tries of an AMQP-published event held in ingest while the database was unreachable.
pub const AMQP_OUTAGE_RETRIES: &str = "webhooks_ingest_amqp_outage_retries_total";
/// Counter: unfinished deliveries the reconciler queued again (their message lost or late).
pub const RECONCILER_REQUEUED: &str = "webhooks_ingest_reconciler_requeued_total";
/// Counter `{table}`: rows deleted by retention (`events`, `deliveries`, `subscriptions`).
pub const RETENTION_DELETED: &str = "webhooks_ingest_retention_deleted_total";
/// Counter `{table}`: `ANALYZE`s run because a table's statistics were missing or stale and autovacuum would not.
pub const TABLES_ANALYZED: &str = "webhooks_ingest_tables_analyzed_total";
/// Counter: times the events channel went to one message at a time after an oversized message.
pub const AMQP_OVERSIZED_THROTTLES: &str = "webhooks_ingest_amqp_oversized_throttles_total";
/// Gauge: publish body bytes held right now (HTTP and AMQP), against `INGEST_MAX_INFLIGHT_BYTES`.
pub const INFLIGHT_BYTES: &str = "webhooks_ingest_inflight_bytes";
/// Counter: publishes answered 503 because the byte budget was spent.
pub const OVER_BUDGET: &str = "webhooks_ingest_over_budget_total";
/// Counter: requests answered 408 because their body did not arrive in time.
pub const BODY_TIMEOUTS: &str = "webhooks_ingest_body_timeouts_total";
/// Gauge: 1 while the database and the broker are reachable (as `/readyz`), else 0.
pub const READY: &str = "webhooks_ingest_ready";
/// Counter: HTTP publishes whose answer was held because a subscription of theirs was behind.
pub const PUBLISHES_HELD: &str = "webhooks_ingest_publishes_held_total";
/// Histogram (seconds): how long each held publish answer was held.
pub const PUBLISH_HOLD: &str = "webhooks_ingest_publish_hold_seconds";
/// Gauge: subscriptions behind (a delivery no dispatcher has claimed, due longer than `INGEST_BACKPRESSURE_LAG`), as last read.
pub const SUBSCRIPTIONS_BEHIND: &str = "webhooks_ingest_subscriptions_behind";
/// What the shared telemetry code records for ingest: its HTTP requests and readiness.
pub const SERVICE: ServiceMetrics = ServiceMetrics {
    http_requests: "webhooks_ingest_http_requests_total",
    http_duration: "webhooks_ingest_http_request_duration_seconds",
    ready: READY,
};

/// Describes every metric and registers those whose series are known up
/// front, so `/metrics` lists them (at zero) from the start and alerts on
/// rates work before the first event.
pub fn register() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(EVENTS_ACCEPTED, "Events stored, by source (http, amqp) and event type; repeats not counted");
    describe_counter!(DELIVERIES_CREATED, "Deliveries created, one per subscription an event matched");
    describe_counter!(
        DELIVERIES_PARKED,
        "Deliveries created parked behind their subscription's open circuit (no message queued)"
    );
    describe_counter!(EVENTS_REJECTED, "AMQP-published events moved to the rejected queue, by reason");
    describe_counter!(AMQP_EVENTS_REQUEUED, "AMQP-published events requeued because they could not be stored now");
    describe_counter!(DISPATCH_MESSAGES_PUBLISHED, "Dispatch attempts queued: their message confirmed by the broker");
    describe_counter!(
        DISPATCH_QUEUE_OVERFLOW,
        "Deliveries left to the outbox relay because the dispatch buffer was full"
    );
    describe_gauge!(OUTBOX_BACKLOG, "Unfinished deliveries never confirmed by the broker, due for longer than OUTBOX_GRACE_MS (counted up to 100000)");
    describe_counter!(OUTBOX_RELAYED, "Deliveries queued by the outbox relay");
    describe_histogram!(FANOUT_BATCH_SIZE, "Events per shared publish transaction");
    describe_gauge!(FANOUT_PENDING, "Publishes waiting for their batch to commit");
    describe_counter!(MANUAL_RETRIES, "Manual retries queued through the API");
    describe_counter!(
        JOB_ATTEMPTS_QUEUED,
        "Attempts queued by recover and bulk-retry jobs (requeued failed deliveries and missed events)"
    );
    describe_counter!(JOBS_FINISHED, "Recover and bulk-retry jobs finished, by status");
    describe_gauge!(
        QUEUE_MESSAGES,
        "Messages waiting in a RabbitMQ queue, by queue (events_ingest, dispatch, events_rejected)"
    );
    describe_gauge!(READY, "1 while the database and the broker are reachable (as /readyz), else 0");
    describe_counter!(
        EVENTS_WITHOUT_ID,
        "AMQP-published events with neither event_id nor message_id (given a fresh id)"
    );
    describe_counter!(AMQP_OUTAGE_RETRIES, "Tries of AMQP-published events held while the database was unreachable");
    describe_counter!(RECONCILER_REQUEUED, "Unfinished deliveries queued again because they were overdue");
    describe_counter!(RETENTION_DELETED, "Rows deleted by retention, by table (attempts go with their deliveries)");
    describe_counter!(
        TABLES_ANALYZED,
        "ANALYZEs run by ingest, by table, where autovacuum would not have analyzed it yet"
    );
    describe_gauge!(INFLIGHT_BYTES, "Publish body bytes held right now, HTTP and AMQP together");
    describe_counter!(
        AMQP_OVERSIZED_THROTTLES,
        "Times the events channel took one message at a time after a message over 256 KiB"
    );
    describe_counter!(OVER_BUDGET, "Publishes answered 503 because INGEST_MAX_INFLIGHT_BYTES was reached");
    describe_counter!(BODY_TIMEOUTS, "Requests answered 408 because their body did not arrive in time");
    describe_counter!(PUBLISHES_HELD, "HTTP publishes answered late because a subscription of theirs was behind");
    describe_histogram!(PUBLISH_HOLD, Unit::Seconds, "How long held publish answers were held");
    describe_gauge!(
        SUBSCRIPTIONS_BEHIND,
        "Subscriptions with an unclaimed delivery due for longer than INGEST_BACKPRESSURE_LAG"
    );
    describe_counter!(SERVICE.http_requests, "HTTP requests answered, by method, route and status");
    describe_histogram!(SERVICE.http_duration, Unit::Seconds, "HTTP request latency, by method and route");

    // Registering a series makes it render (at zero) without changing it.
    let _ = metrics::counter!(DELIVERIES_CREATED);
    let _ = metrics::counter!(DELIVERIES_PARKED);
    let _ = metrics::counter!(AMQP_EVENTS_REQUEUED);
    let _ = metrics::counter!(DISPATCH_MESSAGES_PUBLISHED);
    let _ = metrics::counter!(DISPATCH_QUEUE_OVERFLOW);
    let _ = metrics::gauge!(OUTBOX_BACKLOG);
    let _ = metrics::counter!(OUTBOX_RELAYED);
    let _ = metrics::histogram!(FANOUT_BATCH_SIZE);
    let _ = metrics::gauge!(FANOUT_PENDING);
    let _ = metrics::counter!(MANUAL_RETRIES);
    let _ = metrics::gauge!(READY);
    let _ = metrics::counter!(EVENTS_WITHOUT_ID);
    let _ = metrics::counter!(RECONCILER_REQUEUED);
    let _ = metrics::counter!(OVER_BUDGET);
    let _ = metrics::gauge!(INFLIGHT_BYTES);
    let _ = metrics::counter!(AMQP_OVERSIZED_THROTTLES);
    let _ = metrics::counter!(PUBLISHES_HELD);
    let _ = metrics::gauge!(SUBSCRIPTIONS_BEHIND);
}

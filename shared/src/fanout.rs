//! Fan-out, the one home of the statements that create deliveries: store
//! events with one delivery per matching subscription ([`store_events`]: the
//! publish batcher in ingest, operational events in the dispatcher's
//! transactions), and give a subscription the events it missed
//! ([`deliver_missed`]: recovery).

use crate::models::delivery::QueuedAttempt;
use diesel::{
    sql_types::{Array, Bool, Bytea, Nullable, Text, Uuid as SqlUuid},
    QueryableByName,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// Separates the patterns of one event in the text sent to PostgreSQL (a
/// pattern never contains it: patterns are catalog names and `*`).
pub const PATTERN_SEPARATOR: &str = "\u{1f}";

/// An event ready to be stored: envelope serialized, matching patterns listed.
#[derive(Debug, Clone)]
pub struct EventRow {
    /// The new row's id (UUIDv7).
    pub event_ref: uuid::Uuid,
    pub tenant_id: String,
    pub event_id: String,
    pub event_type: String,
    /// The exact envelope every subscriber receives.
    pub payload: String,
    /// `http`, `amqp`, `test` or `operational`.
    pub source: &'static str,
    /// Every subscription pattern matching the type
    /// ([`crate::catalog::Catalog::matching_patterns`]), joined by [`PATTERN_SEPARATOR`].
    pub patterns: String,
    /// Deliver to exactly this subscription of the tenant (the test event),
    /// whatever its `events`, instead of to every matching one.
    pub only_subscription: Option<uuid::Uuid>,
    /// [`body_hash`] of the event, stored to tell a true repeat of the
    /// `event_id` from a conflicting reuse.
    pub body_hash: Vec<u8>,
}

/// SHA-256 of an event's canonical body: its type, data and metadata, as
/// compact JSON with object keys sorted (serde_json's map keeps keys sorted:
/// its `preserve_order` feature is off). Two publishes of one `event_id` are a
/// true repeat only when these match.
/// The JSON is streamed into the digest (`[type, data, metadata]`, the bytes
/// `json!([..])` would serialize to), never copied: a 256 KiB body costs no
/// extra 512 KiB on its way through.
pub fn body_hash(event_type: &str, data: &serde_json::Value, metadata: &serde_json::Value) -> Vec<u8> {
    let mut digest = DigestWriter(ring::digest::Context::new(&ring::digest::SHA256));
    // Writing into a digest cannot fail, and a `Value` always serializes.
    let _ = serde_json::to_writer(&mut digest, &(event_type, data, metadata));
    digest.0.finish().as_ref().to_vec()
}

/// Feeds what is written into a digest.
struct DigestWriter(ring::digest::Context);

impl std::io::Write for DigestWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A row [`store_events`] answers: an inserted event (`delivery_id`,
/// `subscription_id` and `parked` null), or one of its deliveries.
#[derive(Debug, Clone, QueryableByName)]
pub struct Stored {
    #[diesel(sql_type = SqlUuid)]
    pub event_ref: uuid::Uuid,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub delivery_id: Option<uuid::Uuid>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub subscription_id: Option<uuid::Uuid>,
    /// The delivery was created parked behind its subscription's open circuit
    /// (waiting in the database): queue nothing for it.
    #[diesel(sql_type = Nullable<Bool>)]
    pub parked: Option<bool>,
}

/// One statement, so one transaction and one commit for a whole batch (or
/// part of the caller's transaction): match every event against its tenant's
/// live subscriptions (or take the one subscription a test event names),
/// insert the events that are new (with their delivery
/// count), then one delivery per match of each inserted event. Returns a row
/// per inserted event (no delivery id) and a row per delivery. `matched` is
/// read once, so the count and the deliveries agree. Events are inserted in
/// array order (the batcher sorts by `(tenant_id, event_id)` so concurrent
/// batches take unique-index locks in one order). A `(tenant_id, event_id)`
/// already stored is skipped. New deliveries are `pending` with `enqueued =
/// false`: the outbox. A delivery to a subscription whose circuit is not
/// closed is created parked, waiting in the database until the circuit's open
/// period (or probe lease) ends, like one a dispatcher parks
/// ([`crate::models::endpoint_health`]): no message is queued for it, the
/// due-row queries skip it while the circuit is not closed, and closing the
/// circuit releases it. Nothing of a dead endpoint's new traffic goes through
/// the broker.
const STORE_EVENTS_SQL: &str = "\
WITH input AS ( \
  SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
    $9::uuid[], $10::bytea[]) \
    WITH ORDINALITY AS v(id, tenant_id, event_id, event_type, payload, source, patterns, only_subscription, \
      body_hash, ord)), \
matched AS ( \
  SELECT v.id AS event_ref, s.id AS subscription_id \
  FROM input v JOIN subscriptions s \
    ON s.tenant_id = v.tenant_id AND s.is_active AND s.deleted_at IS NULL \
   AND s.events && string_to_array(v.patterns, $8) \
  WHERE v.only_subscription IS NULL \
  UNION ALL \
  SELECT v.id, s.id FROM input v JOIN subscriptions s \
    ON s.id = v.only_subscription AND s.tenant_id = v.tenant_id AND s.deleted_at IS NULL), \
counts AS ( \
  SELECT event_ref, count(*)::int AS n FROM matched GROUP BY event_ref), \
inserted AS ( \
  INSERT INTO events (id, tenant_id, event_id, event_type, payload, source, delivery_count, body_hash) \
  SELECT v.id, v.tenant_id, v.event_id, v.event_type, v.payload, v.source, coalesce(c.n, 0), v.body_hash \
  FROM input v LEFT JOIN counts c ON c.event_ref = v.id \
  ORDER BY v.ord \
  ON CONFLICT (tenant_id, event_id) DO NOTHING \
  RETURNING id), \
created AS ( \
  INSERT INTO deliveries (id, tenant_id, subscription_id, event_ref, event_id, event_type, next_attempt_at) \
  SELECT gen_random_uuid(), v.tenant_id, m.subscription_id, v.id, v.event_id, v.event_type, \
    greatest(h.open_until, h.probe_until) \
  FROM inserted i JOIN input v ON v.id = i.id JOIN matched m ON m.event_ref = i.id \
  LEFT JOIN endpoint_health h ON h.subscription_id = m.subscription_id AND h.circuit <> 'closed' \
  RETURNING id, event_ref, subscription_id, next_attempt_at IS NOT NULL AS parked) \
SELECT i.id AS event_ref, NULL::uuid AS delivery_id, NULL::uuid AS subscription_id, NULL::bool AS parked \
FROM inserted i \
UNION ALL \
SELECT c.event_ref, c.id AS delivery_id, c.subscription_id, c.parked FROM created c";

/// Stores events and their deliveries (see [`STORE_EVENTS_SQL`]).
pub async fn store_events(conn: &mut AsyncPgConnection, events: &[&EventRow]) -> diesel::QueryResult<Vec<Stored>> {
    // Borrowed, not copied: a batch of 256 KiB payloads is not duplicated here.
    let column = |f: fn(&EventRow) -> &str| events.iter().map(|e| f(e)).collect::<Vec<&str>>();
    crate::db::Prepared(
        diesel::sql_query(STORE_EVENTS_SQL)
            .bind::<Array<SqlUuid>, _>(events.iter().map(|e| e.event_ref).collect::<Vec<_>>())
            .bind::<Array<Text>, _>(column(|e| &e.tenant_id))
            .bind::<Array<Text>, _>(column(|e| &e.event_id))
            .bind::<Array<Text>, _>(column(|e| &e.event_type))
            .bind::<Array<Text>, _>(column(|e| &e.payload))
            .bind::<Array<Text>, _>(column(|e| e.source))
            .bind::<Array<Text>, _>(column(|e| &e.patterns))
            .bind::<Text, _>(PATTERN_SEPARATOR)
            .bind::<Array<Nullable<SqlUuid>>, _>(events.iter().map(|e| e.only_subscription).collect::<Vec<_>>())
            .bind::<Array<Bytea>, _>(events.iter().map(|e| e.body_hash.as_slice()).collect::<Vec<_>>()),
    )
    .load(conn)
    .await
}

/// Gives subscription `subscription_id` a delivery of each event in
/// `event_refs` whose type is in `event_types` (the catalog types its
/// `events` match) and that has no delivery for it yet; counts them on their
/// events. New deliveries are `pending` with `enqueued = false` (the outbox):
/// queue attempt 1 of each after commit. The caller serializes calls per
/// subscription (nothing else stops two deliveries of one event to one
/// subscription).
pub async fn deliver_missed(
    conn: &mut AsyncPgConnection,
    subscription_id: uuid::Uuid,
    event_refs: &[uuid::Uuid],
    event_types: &[String],
) -> diesel::QueryResult<Vec<QueuedAttempt>> {
    if event_refs.is_empty() || event_types.is_empty() {
        return Ok(Vec::new());
    }
    diesel::sql_query(
        "WITH created AS ( \
           INSERT INTO deliveries (id, tenant_id, subscription_id, event_ref, event_id, event_type) \
           SELECT gen_random_uuid(), e.tenant_id, s.id, e.id, e.event_id, e.event_type \
           FROM events e JOIN subscriptions s ON s.id = $2 AND s.tenant_id = e.tenant_id \
           WHERE e.id = ANY($1) AND e.event_type = ANY($3) \
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_ref = e.id AND d.subscription_id = s.id) \
           RETURNING id, event_ref), \
         counted AS ( \
           UPDATE events e SET delivery_count = e.delivery_count + 1 FROM created c WHERE e.id = c.event_ref) \
         SELECT id AS delivery_id, 1 AS attempt, $2::uuid AS subscription_id FROM created",
    )
    .bind::<Array<SqlUuid>, _>(event_refs)
    .bind::<SqlUuid, _>(subscription_id)
    .bind::<Array<Text>, _>(event_types)
    .load(conn)
    .await
}

/// How many events among the tenant's in `[since, until)` of `event_types`
/// have no delivery for the subscription (what [`deliver_missed`] would create).
pub async fn count_missed(
    conn: &mut AsyncPgConnection,
    tenant_id: &str,
    subscription_id: uuid::Uuid,
    window: (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
    event_types: &[String],
) -> diesel::QueryResult<i64> {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    if event_types.is_empty() {
        return Ok(0);
    }
    let count: Count = diesel::sql_query(
        "SELECT count(*) AS n FROM events e \
         WHERE e.tenant_id = $1 AND e.created_at >= $2 AND e.created_at < $3 AND e.event_type = ANY($4) \
           AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_ref = e.id AND d.subscription_id = $5)",
    )
    .bind::<Text, _>(tenant_id)
    .bind::<diesel::sql_types::Timestamptz, _>(window.0)
    .bind::<diesel::sql_types::Timestamptz, _>(window.1)
    .bind::<Array<Text>, _>(event_types)
    .bind::<SqlUuid, _>(subscription_id)
    .get_result(conn)
    .await?;
    Ok(count.n)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_streamed_body_hash_is_the_hash_of_the_canonical_array() {
        let (data, metadata) = (json!({"b": [1, "x"], "a": {"z": null, "y": 2.5}}), json!({"source": "billing"}));
        let canonical = serde_json::to_vec(&json!(["invoice.created", data, metadata])).expect("serializes");
        let expected = ring::digest::digest(&ring::digest::SHA256, &canonical);
        assert_eq!(body_hash("invoice.created", &data, &metadata), expected.as_ref());
        assert_ne!(body_hash("invoice.paid", &data, &metadata), expected.as_ref());
    }
}

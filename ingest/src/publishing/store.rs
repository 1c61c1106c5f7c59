//! The batch statement of [`super::batcher`]: stores many published events,
//! their deliveries and delivery counts in one statement (one commit).

use std::collections::{HashMap, HashSet};

use diesel::{
    sql_types::{Array, Bytea, Integer, Nullable, Text, Uuid as SqlUuid},
    QueryableByName,
};
use diesel_async::RunQueryDsl;
use shared::db::{self, DbError, DbPool};

use super::{batcher::FanoutResult, error::PublishError};

/// Separates the patterns of one event in the text sent to PostgreSQL (a
/// pattern never contains it: patterns are catalog names and `*`).
pub(super) const PATTERN_SEPARATOR: &str = "\u{1f}";

/// An event ready for the batch statement: envelope serialized, patterns listed.
#[derive(Debug, Clone)]
pub(super) struct PreparedEvent {
    pub(super) event_ref: uuid::Uuid,
    pub(super) tenant_id: String,
    pub(super) event_id: String,
    pub(super) event_type: String,
    pub(super) payload: String,
    pub(super) source: &'static str,
    /// Every subscription pattern matching the type, joined by [`PATTERN_SEPARATOR`].
    pub(super) patterns: String,
    /// Deliver to exactly this subscription of the tenant (the test event),
    /// whatever its `events`, instead of to every matching one.
    pub(super) only_subscription: Option<uuid::Uuid>,
    /// SHA-256 of the canonical body, stored to tell a true repeat of the
    /// `event_id` from a conflicting reuse.
    pub(super) body_hash: Vec<u8>,
}

#[derive(QueryableByName)]
struct StoredRow {
    #[diesel(sql_type = SqlUuid)]
    event_ref: uuid::Uuid,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    delivery_id: Option<uuid::Uuid>,
}

#[derive(QueryableByName)]
struct FirstResult {
    #[diesel(sql_type = Text)]
    tenant_id: String,
    #[diesel(sql_type = Text)]
    event_id: String,
    #[diesel(sql_type = Integer)]
    delivery_count: i32,
    /// The stored body hash equals this publish's (or none was stored).
    #[diesel(sql_type = diesel::sql_types::Bool)]
    same_body: bool,
}

/// The first publish of each repeated `(tenant_id, event_id)`: its delivery
/// count, and whether the repeat's body is the same.
type FirstResults = HashMap<(String, String), (i32, bool)>;

/// One statement, so one transaction and one commit for the whole batch:
/// match every event against its tenant's live subscriptions (or take the one
/// subscription a test event names), insert the
/// events that are new (with their delivery count), then one delivery per
/// match of each inserted event. Returns a row per inserted event (no
/// delivery id) and a row per delivery. `matched` is read once, so the
/// count and the deliveries agree. Events are inserted in array order,
/// which the caller sorts by `(tenant_id, event_id)`.
const STORE_BATCH_SQL: &str = "\
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
  INSERT INTO deliveries (id, tenant_id, subscription_id, event_ref, event_id, event_type) \
  SELECT gen_random_uuid(), v.tenant_id, m.subscription_id, v.id, v.event_id, v.event_type \
  FROM inserted i JOIN input v ON v.id = i.id JOIN matched m ON m.event_ref = i.id \
  RETURNING id, event_ref) \
SELECT i.id AS event_ref, NULL::uuid AS delivery_id FROM inserted i \
UNION ALL \
SELECT c.event_ref, c.id AS delivery_id FROM created c";

/// The first result of events that were published before (committed by
/// another transaction, which the insert waited for, so this statement sees
/// it), and whether this publish's body is the same.
const FIRST_RESULTS_SQL: &str = "\
SELECT e.tenant_id, e.event_id, e.delivery_count, \
  (e.body_hash IS NULL OR e.body_hash = k.body_hash) AS same_body FROM events e \
JOIN unnest($1::text[], $2::text[], $3::bytea[]) AS k(tenant_id, event_id, body_hash) \
  ON e.tenant_id = k.tenant_id AND e.event_id = k.event_id";

/// Stores events with distinct keys, sorted by key; returns their results in order.
pub(super) async fn store(
    pool: &DbPool,
    events: &[&PreparedEvent],
) -> Result<Vec<Result<FanoutResult, PublishError>>, PublishError> {
    let mut conn = db::conn(pool).await?;
    // Borrowed, not copied: a batch of 256 KiB payloads is not duplicated here.
    let column = |f: fn(&PreparedEvent) -> &str| events.iter().map(|e| f(e)).collect::<Vec<&str>>();
    let rows: Result<Vec<StoredRow>, _> = shared::db::Prepared(
        diesel::sql_query(STORE_BATCH_SQL)
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
    .load(&mut conn)
    .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(err) => return Err(db::statement_failed(&mut conn, err).await.into()),
    };

    let mut inserted = HashSet::with_capacity(events.len());
    let mut created: HashMap<uuid::Uuid, Vec<uuid::Uuid>> = HashMap::new();
    for row in rows {
        match row.delivery_id {
            None => {
                inserted.insert(row.event_ref);
            }
            Some(delivery_id) => created.entry(row.event_ref).or_default().push(delivery_id),
        }
    }

    // Published before: answer with the first result. The new events of the
    // batch are committed already, so a failure here fails only the repeats.
    let repeats: Vec<&&PreparedEvent> = events.iter().filter(|e| !inserted.contains(&e.event_ref)).collect();
    let mut first_results: Result<FirstResults, PublishError> = Ok(HashMap::new());
    if !repeats.is_empty() {
        let found: Result<Vec<FirstResult>, _> = shared::db::Prepared(
            diesel::sql_query(FIRST_RESULTS_SQL)
                .bind::<Array<Text>, _>(repeats.iter().map(|e| e.tenant_id.clone()).collect::<Vec<_>>())
                .bind::<Array<Text>, _>(repeats.iter().map(|e| e.event_id.clone()).collect::<Vec<_>>())
                .bind::<Array<Bytea>, _>(repeats.iter().map(|e| e.body_hash.as_slice()).collect::<Vec<_>>()),
        )
        .load(&mut conn)
        .await;
        first_results = match found {
            Ok(found) => {
                Ok(found.into_iter().map(|f| ((f.tenant_id, f.event_id), (f.delivery_count, f.same_body))).collect())
            }
            Err(err) => Err(db::statement_failed(&mut conn, err).await.into()),
        };
    }

    Ok(events
        .iter()
        .map(|event| {
            if inserted.contains(&event.event_ref) {
                let created = created.remove(&event.event_ref).unwrap_or_default();
                return Ok(FanoutResult {
                    event_id: event.event_id.clone(),
                    delivery_count: created.len() as i32,
                    created,
                    is_new: true,
                });
            }
            let firsts = first_results.as_ref().map_err(Clone::clone)?;
            let key = (event.tenant_id.clone(), event.event_id.clone());
            let (delivery_count, same_body) = *firsts
                .get(&key)
                .ok_or_else(|| PublishError::Failed(DbError::Query(diesel::result::Error::NotFound).into()))?;
            if !same_body {
                return Err(PublishError::EventIdReused { event_id: event.event_id.clone() });
            }
            Ok(FanoutResult { event_id: event.event_id.clone(), delivery_count, created: Vec::new(), is_new: false })
        })
        .collect())
}

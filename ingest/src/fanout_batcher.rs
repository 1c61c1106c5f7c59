//! Group commit for publishing: concurrent publishes share one database
//! statement, so the cost of a round trip and a WAL flush is paid per batch,
//! not per event.
//!
//! Callers hand an event to [`FanoutBatcher::publish`] and wait for its answer.
//! One task takes everything waiting (up to [`MAX_BATCH`] events, never
//! waiting for more) and stores the batch with a single statement — events,
//! their deliveries and their delivery counts, atomically. A few batches run
//! at once, each on its own pool connection, so a slow commit does not stall
//! the pipe; while they run, the next batch gathers in the channel. Nobody is
//! answered before their batch is committed; if it fails, every event in it
//! gets the error and nothing of it is stored.
//!
//! The semantics are those of [`crate::fanout::fan_out`] called once per event:
//! a repeated `event_id` of a tenant (also twice in one batch) creates nothing
//! and answers with the first publish's delivery count; the first publisher
//! gets `is_new`, every other one not.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use diesel::{
    sql_types::{Array, Integer, Nullable, Text, Uuid as SqlUuid},
    QueryableByName,
};
use diesel_async::{pooled_connection::PoolableConnection, RunQueryDsl};
use shared::{
    catalog::Catalog,
    db::{DbError, DbPool},
};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::{
    dispatch_queue::DispatchQueue,
    fanout::{envelope_body, EventToPublish, FanoutResult},
};

/// Most events stored by one statement.
pub const MAX_BATCH: usize = 256;
/// Most batches in flight at once (each holds a pool connection), at most
/// half the pool so the API keeps connections of its own.
const MAX_IN_FLIGHT: usize = 4;
/// Events waiting for a batch before publishers wait to hand theirs over.
const QUEUE_CAPACITY: usize = 4_096;
/// Separates the patterns of one event in the text sent to PostgreSQL (a
/// pattern never contains it: patterns are catalog names and `*`).
const PATTERN_SEPARATOR: &str = "\u{1f}";

/// Why a publish could not be stored. Cloned to every waiter of a failed batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The database could not be reached or went away mid-batch: retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database refused the batch for another reason.
    #[error("storing the event failed: {0}")]
    Failed(String),
    /// The batcher is gone (the service is stopping).
    #[error("the publishing pipeline has stopped")]
    Stopped,
}

impl PublishError {
    /// Whether the caller should simply try again later (503, requeue).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Stopped)
    }

    fn from_db(err: DbError, connection_broken: bool) -> Self {
        if connection_broken || is_transient(&err) {
            Self::Unavailable(err.to_string())
        } else {
            Self::Failed(err.to_string())
        }
    }
}

/// Server messages (their SQLSTATE is not exposed) of failures that say
/// "not now" rather than "never": the server shut the connection (57P01-03),
/// cancelled the statement (57014, e.g. `statement_timeout`) or broke a
/// deadlock (40P01). Whatever the batch held was rolled back.
const TRANSIENT_MESSAGES: [&str; 4] =
    ["terminating connection", "the database system is", "canceling statement due to", "deadlock detected"];

/// Whether a database error means "try again later" (503, requeue).
fn is_transient(err: &DbError) -> bool {
    use diesel::result::{DatabaseErrorKind as Kind, Error};
    match err {
        DbError::Query(Error::DatabaseError(kind, info)) => {
            matches!(kind, Kind::UnableToSendCommand | Kind::ClosedConnection | Kind::SerializationFailure)
                || TRANSIENT_MESSAGES.iter().any(|m| info.message().starts_with(m))
        }
        other => other.is_unavailable(),
    }
}

/// Hands events to the batching task; cheap to clone.
#[derive(Clone)]
pub struct FanoutBatcher {
    tx: mpsc::Sender<Request>,
    catalog: Arc<Catalog>,
    /// Publishes handed over and not answered yet.
    pending: Arc<AtomicUsize>,
}

/// Counts a publish as pending for as long as it lives (also when its caller
/// goes away mid-wait).
struct PendingGuard(Arc<AtomicUsize>);

impl PendingGuard {
    fn new(pending: &Arc<AtomicUsize>) -> Self {
        pending.fetch_add(1, Ordering::SeqCst);
        Self(pending.clone())
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One waiting publish.
struct Request {
    event: PreparedEvent,
    reply: oneshot::Sender<Result<FanoutResult, PublishError>>,
}

/// An event ready for the batch statement: envelope serialized, patterns listed.
#[derive(Debug, Clone)]
struct PreparedEvent {
    event_ref: uuid::Uuid,
    tenant_id: String,
    event_id: String,
    event_type: String,
    payload: String,
    source: &'static str,
    /// Every subscription pattern matching the type, joined by [`PATTERN_SEPARATOR`].
    patterns: String,
}

impl FanoutBatcher {
    /// Starts the batching task. Committed deliveries go to `dispatch` (attempt 1)
    /// right after their batch commits, whether or not their caller still waits.
    pub fn start(pool: DbPool, catalog: Arc<Catalog>, dispatch: DispatchQueue) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let in_flight = (pool.status().max_size / 2).clamp(1, MAX_IN_FLIGHT);
        tokio::spawn(run(rx, pool, dispatch, in_flight));
        Self { tx, catalog, pending: Arc::new(AtomicUsize::new(0)) }
    }

    /// Stores the event and one delivery per matching subscription of its
    /// tenant; answers once that is committed (or failed).
    pub async fn publish(&self, event: &EventToPublish) -> Result<FanoutResult, PublishError> {
        let payload = envelope_body(event).map_err(|e| PublishError::Failed(e.to_string()))?;
        let prepared = PreparedEvent {
            event_ref: uuid::Uuid::now_v7(),
            tenant_id: event.tenant_id.clone(),
            event_id: event.event_id.clone(),
            event_type: event.event_type.clone(),
            payload,
            source: event.source,
            patterns: self.catalog.matching_patterns(&event.event_type).join(PATTERN_SEPARATOR),
        };
        let _pending = PendingGuard::new(&self.pending);
        let (reply, answer) = oneshot::channel();
        self.tx.send(Request { event: prepared, reply }).await.map_err(|_| PublishError::Stopped)?;
        answer.await.map_err(|_| PublishError::Stopped)?
    }

    /// Publishes handed over and not answered yet (waiting for a batch, or in one).
    pub fn pending(&self) -> usize {
        AtomicUsize::load(&self.pending, Ordering::SeqCst)
    }
}

/// Takes whatever is waiting whenever a batch slot is free; ends when every
/// [`FanoutBatcher`] is dropped.
async fn run(mut rx: mpsc::Receiver<Request>, pool: DbPool, dispatch: DispatchQueue, in_flight: usize) {
    let slots = Arc::new(Semaphore::new(in_flight));
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        // A slot first, then the requests: while every slot is busy, the next
        // batch keeps growing in the channel.
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let requests = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
        let (pool, dispatch) = (pool.clone(), dispatch.clone());
        tokio::spawn(async move {
            commit_batch(&pool, &dispatch, requests).await;
            drop(slot);
        });
    }
}

/// Which requests are stored, and which repeat an earlier one of the same batch.
#[derive(Debug, PartialEq, Eq)]
struct BatchPlan {
    /// Indexes of the first request of each `(tenant_id, event_id)`, sorted by
    /// that key, so concurrent batches take unique-index locks in one order
    /// and cannot deadlock.
    firsts: Vec<usize>,
    /// For every request, the index of the first request with its key.
    first_of: Vec<usize>,
}

fn plan(events: &[&PreparedEvent]) -> BatchPlan {
    let mut seen: HashMap<(&str, &str), usize> = HashMap::with_capacity(events.len());
    let mut first_of = Vec::with_capacity(events.len());
    let mut firsts = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        let first = *seen.entry((event.tenant_id.as_str(), event.event_id.as_str())).or_insert_with(|| {
            firsts.push(i);
            i
        });
        first_of.push(first);
    }
    firsts.sort_by(|&a, &b| {
        (&events[a].tenant_id, &events[a].event_id).cmp(&(&events[b].tenant_id, &events[b].event_id))
    });
    BatchPlan { firsts, first_of }
}

/// Stores one batch, answers every waiter, and queues the new deliveries.
async fn commit_batch(pool: &DbPool, dispatch: &DispatchQueue, requests: Vec<Request>) {
    metrics::histogram!(crate::metric_names::FANOUT_BATCH_SIZE).record(requests.len() as f64);
    let events: Vec<&PreparedEvent> = requests.iter().map(|r| &r.event).collect();
    let BatchPlan { firsts, first_of } = plan(&events);
    let to_store: Vec<&PreparedEvent> = firsts.iter().map(|&i| events[i]).collect();
    let stored = match store(pool, &to_store).await {
        Ok(results) => {
            log::debug!("stored a batch of published events events={} distinct={}", requests.len(), to_store.len());
            results
        }
        Err(err) => {
            log::warn!("storing a batch of published events failed events={} error={err}", requests.len());
            to_store.iter().map(|_| Err(err.clone())).collect()
        }
    };
    let mut result_of: HashMap<usize, Result<FanoutResult, PublishError>> = firsts.into_iter().zip(stored).collect();
    for result in result_of.values().flatten() {
        dispatch.enqueue_new(&result.created);
    }
    // Repeats within the batch get what a repeat after it would get.
    let repeats: Vec<(usize, Result<FanoutResult, PublishError>)> = first_of
        .iter()
        .enumerate()
        .filter(|&(i, &first)| i != first)
        .map(|(i, &first)| {
            let answer = match &result_of[&first] {
                Ok(first) => Ok(FanoutResult {
                    event_id: first.event_id.clone(),
                    delivery_count: first.delivery_count,
                    created: Vec::new(),
                    is_new: false,
                }),
                Err(err) => Err(err.clone()),
            };
            (i, answer)
        })
        .collect();
    result_of.extend(repeats);
    for (i, request) in requests.into_iter().enumerate() {
        let answer = result_of.remove(&i).unwrap_or(Err(PublishError::Stopped));
        // A caller that went away (client disconnected) needs no answer: its
        // event is committed and its deliveries are queued all the same.
        let _ = request.reply.send(answer);
    }
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
}

/// One statement, so one transaction and one commit for the whole batch:
/// match every event against its tenant's live subscriptions, insert the
/// events that are new (with their delivery count), then one delivery per
/// match of each inserted event. Returns a row per inserted event (no
/// delivery id) and a row per delivery. `matched` is read once, so the
/// count and the deliveries agree. Events are inserted in array order,
/// which the caller sorts by `(tenant_id, event_id)`.
const STORE_BATCH_SQL: &str = "\
WITH input AS ( \
  SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) \
    WITH ORDINALITY AS v(id, tenant_id, event_id, event_type, payload, source, patterns, ord)), \
matched AS ( \
  SELECT v.id AS event_ref, s.id AS subscription_id \
  FROM input v JOIN subscriptions s \
    ON s.tenant_id = v.tenant_id AND s.is_active AND s.deleted_at IS NULL \
   AND s.events && string_to_array(v.patterns, $8)), \
counts AS ( \
  SELECT event_ref, count(*)::int AS n FROM matched GROUP BY event_ref), \
inserted AS ( \
  INSERT INTO events (id, tenant_id, event_id, event_type, payload, source, delivery_count) \
  SELECT v.id, v.tenant_id, v.event_id, v.event_type, v.payload, v.source, coalesce(c.n, 0) \
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
/// another transaction, which the insert waited for, so this statement sees it).
const FIRST_RESULTS_SQL: &str = "\
SELECT e.tenant_id, e.event_id, e.delivery_count FROM events e \
JOIN unnest($1::text[], $2::text[]) AS k(tenant_id, event_id) \
  ON e.tenant_id = k.tenant_id AND e.event_id = k.event_id";

/// Stores events with distinct keys, sorted by key; returns their results in order.
async fn store(
    pool: &DbPool,
    events: &[&PreparedEvent],
) -> Result<Vec<Result<FanoutResult, PublishError>>, PublishError> {
    let mut conn = shared::db::conn(pool).await.map_err(|e| PublishError::from_db(e, false))?;
    let column = |f: fn(&PreparedEvent) -> &str| events.iter().map(|e| f(e).to_owned()).collect::<Vec<String>>();
    let rows: Result<Vec<StoredRow>, _> = shared::db::Prepared(
        diesel::sql_query(STORE_BATCH_SQL)
            .bind::<Array<SqlUuid>, _>(events.iter().map(|e| e.event_ref).collect::<Vec<_>>())
            .bind::<Array<Text>, _>(column(|e| &e.tenant_id))
            .bind::<Array<Text>, _>(column(|e| &e.event_id))
            .bind::<Array<Text>, _>(column(|e| &e.event_type))
            .bind::<Array<Text>, _>(column(|e| &e.payload))
            .bind::<Array<Text>, _>(column(|e| e.source))
            .bind::<Array<Text>, _>(column(|e| &e.patterns))
            .bind::<Text, _>(PATTERN_SEPARATOR),
    )
    .load(&mut conn)
    .await;
    let rows = rows.map_err(|e| PublishError::from_db(e.into(), conn.is_broken()))?;

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
    let mut first_results: Result<HashMap<(String, String), i32>, PublishError> = Ok(HashMap::new());
    if !repeats.is_empty() {
        let found: Result<Vec<FirstResult>, _> = shared::db::Prepared(
            diesel::sql_query(FIRST_RESULTS_SQL)
                .bind::<Array<Text>, _>(repeats.iter().map(|e| e.tenant_id.clone()).collect::<Vec<_>>())
                .bind::<Array<Text>, _>(repeats.iter().map(|e| e.event_id.clone()).collect::<Vec<_>>()),
        )
        .load(&mut conn)
        .await;
        first_results = match found {
            Ok(found) => Ok(found.into_iter().map(|f| ((f.tenant_id, f.event_id), f.delivery_count)).collect()),
            Err(err) => Err(PublishError::from_db(err.into(), conn.is_broken())),
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
            let delivery_count = *firsts
                .get(&key)
                .ok_or_else(|| PublishError::Failed(format!("event {} of a repeat was not found", event.event_id)))?;
            Ok(FanoutResult { event_id: event.event_id.clone(), delivery_count, created: Vec::new(), is_new: false })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(tenant_id: &str, event_id: &str) -> PreparedEvent {
        PreparedEvent {
            event_ref: uuid::Uuid::now_v7(),
            tenant_id: tenant_id.into(),
            event_id: event_id.into(),
            event_type: "invoice.created".into(),
            payload: "{}".into(),
            source: "http",
            patterns: "*".into(),
        }
    }

    #[test]
    fn a_batch_stores_each_key_once_in_key_order_and_points_repeats_at_the_first() {
        let events = [event("t2", "a"), event("t1", "b"), event("t2", "a"), event("t1", "a"), event("t1", "b")];
        let refs: Vec<&PreparedEvent> = events.iter().collect();
        assert_eq!(plan(&refs), BatchPlan { firsts: vec![3, 1, 0], first_of: vec![0, 1, 0, 3, 1] });
    }

    #[test]
    fn only_connection_failures_ask_the_caller_to_retry_later() {
        let closed = DbError::Query(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UnableToSendCommand,
            Box::new("connection closed".to_owned()),
        ));
        assert!(PublishError::from_db(closed, false).is_unavailable());
        assert!(PublishError::from_db(DbError::Unavailable("pool".into()), false).is_unavailable());
        let refused = DbError::Query(diesel::result::Error::NotFound);
        assert!(
            PublishError::from_db(refused, true).is_unavailable(),
            "a broken connection means the database went away"
        );
        assert!(!PublishError::from_db(DbError::Query(diesel::result::Error::NotFound), false).is_unavailable());
        let shut_down = DbError::Query(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::Unknown,
            Box::new("terminating connection due to administrator command".to_owned()),
        ));
        assert!(PublishError::from_db(shut_down, false).is_unavailable());
        let refused = DbError::Query(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::CheckViolation,
            Box::new("new row violates check constraint".to_owned()),
        ));
        assert!(!PublishError::from_db(refused, false).is_unavailable());
    }
}

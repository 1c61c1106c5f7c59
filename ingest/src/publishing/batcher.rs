//! Group commit for publishing: concurrent publishes share one database
//! statement, so the cost of a round trip and a WAL flush is paid per batch,
//! not per event.
//!
//! Callers hand an event to [`FanoutBatcher::publish`] and wait for its answer.
//! The shared micro-batcher ([`shared::batcher`]) takes everything waiting (up
//! to [`MAX_BATCH`] events, never waiting for more) and [`super::store`] stores
//! the batch with a single statement — events, their deliveries and their
//! delivery counts, atomically. A few batches run at once, each on its own pool
//! connection, so a slow commit does not stall the pipe; while they run, the
//! next batch gathers in the channel. Nobody is
//! answered before their batch is committed; if it fails, every event in it
//! gets the error and nothing of it is stored.
//!
//! A repeated `event_id` of a tenant (also twice in one batch) creates nothing
//! and answers with the first publish's delivery count; the first publisher
//! gets `is_new`, every other one not. The test event of one subscription goes
//! the same way ([`FanoutBatcher::send_test`]).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use chrono::Utc;
use shared::{
    batcher::{BatchSettings, Batcher},
    catalog::Catalog,
    db::DbPool,
    envelope::Envelope,
};

use crate::metric_names::FANOUT_PENDING;

use super::{
    body::EventToPublish,
    dispatch_queue::DispatchQueue,
    error::PublishError,
    store::{store, PreparedEvent, PATTERN_SEPARATOR},
};

/// Most events stored by one statement.
pub const MAX_BATCH: usize = 256;
/// Most batches in flight at once (each holds a pool connection), at most
/// half the pool so the API keeps connections of its own.
const MAX_IN_FLIGHT: usize = 4;
/// Events waiting for a batch before publishers wait to hand theirs over.
const QUEUE_CAPACITY: usize = 4_096;

/// What storing one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanoutResult {
    pub event_id: String,
    /// Deliveries of this event (on a repeat: of the first publish).
    pub delivery_count: i32,
    /// Deliveries created now, each queued for attempt 1 (empty on a repeat).
    pub created: Vec<shared::models::delivery::QueuedAttempt>,
    /// Deliveries created now parked behind their subscription's open circuit:
    /// waiting in the database, not queued (empty on a repeat).
    pub parked: Vec<shared::models::delivery::QueuedAttempt>,
    /// False when the `event_id` was already published.
    pub is_new: bool,
}

/// Hands events to the batching task; cheap to clone.
#[derive(Clone)]
pub struct FanoutBatcher {
    batcher: Batcher<Arc<PreparedEvent>, Result<FanoutResult, PublishError>>,
    catalog: Arc<Catalog>,
    /// Publishes handed over and not answered yet.
    pending: Arc<AtomicUsize>,
}

/// Counts a publish as pending for as long as it lives (also when its caller
/// goes away mid-wait), in the batcher's count and in the gauge [`FANOUT_PENDING`].
struct PendingGuard(Arc<AtomicUsize>);

impl PendingGuard {
    fn new(pending: &Arc<AtomicUsize>) -> Self {
        pending.fetch_add(1, Ordering::SeqCst);
        metrics::gauge!(FANOUT_PENDING).increment(1.0);
        Self(pending.clone())
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
        metrics::gauge!(FANOUT_PENDING).decrement(1.0);
    }
}

/// A publish ready to be stored: the envelope is serialized once, so the
/// parsed event (with its data) can be dropped, and submitting it again
/// (after an outage) shares the same bytes. Shared with the batch, never copied.
#[derive(Debug, Clone)]
pub struct PreparedPublish(Arc<PreparedEvent>);

impl PreparedPublish {
    /// The envelope's size in bytes.
    pub fn payload_len(&self) -> usize {
        self.0.payload.len()
    }
}

/// The body hash of a publish ([`shared::fanout::body_hash`]).
fn body_hash(event: &EventToPublish) -> Vec<u8> {
    shared::fanout::body_hash(&event.event_type, &event.data, &event.metadata)
}

/// The envelope every subscriber of `event` receives, stamped now.
fn envelope_body(event: &EventToPublish) -> Result<String, serde_json::Error> {
    let timestamp = shared::envelope::format_timestamp(Utc::now());
    Envelope {
        id: &event.event_id,
        event_type: &event.event_type,
        timestamp: &timestamp,
        tenant_id: &event.tenant_id,
        data: &event.data,
        metadata: &event.metadata,
    }
    .to_body()
}

impl FanoutBatcher {
    /// Starts the batching task. Committed deliveries go to `dispatch` (attempt 1)
    /// right after their batch commits, whether or not their caller still waits.
    pub fn start(pool: DbPool, catalog: Arc<Catalog>, dispatch: DispatchQueue) -> Self {
        let settings = BatchSettings {
            max_batch: MAX_BATCH,
            lanes: (pool.status().max_size / 2).clamp(1, MAX_IN_FLIGHT),
            queue_capacity: QUEUE_CAPACITY,
            linger: std::time::Duration::ZERO,
            size_histogram: metrics::histogram!(crate::metric_names::FANOUT_BATCH_SIZE),
        };
        let batcher = Batcher::start(settings, move |events: Vec<Arc<PreparedEvent>>| {
            let (pool, dispatch) = (pool.clone(), dispatch.clone());
            async move { commit_batch(&pool, &dispatch, events).await }
        });
        Self { batcher, catalog, pending: Arc::new(AtomicUsize::new(0)) }
    }

    /// Stores the event and one delivery per matching subscription of its
    /// tenant; answers once that is committed (or failed).
    pub async fn publish(&self, event: &EventToPublish) -> Result<FanoutResult, PublishError> {
        let prepared = self.prepare(event)?;
        self.submit(&prepared).await
    }

    /// Serializes the envelope subscribers receive, stamped now (see [`PreparedPublish`]).
    pub fn prepare(&self, event: &EventToPublish) -> Result<PreparedPublish, PublishError> {
        self.prepare_for(event, None)
    }

    /// Stores a prepared publish (see [`Self::publish`]); may be called again
    /// with the same one after an error. The same `event_ref` on every try: a
    /// try that failed stored nothing, and one that did commit makes the next
    /// a repeat of its `event_id`.
    pub async fn submit(&self, prepared: &PreparedPublish) -> Result<FanoutResult, PublishError> {
        let _pending = PendingGuard::new(&self.pending);
        self.batcher.call(prepared.0.clone()).await.unwrap_or(Err(PublishError::Stopped))
    }

    /// Stores the event and one delivery to `subscription_id` (a live
    /// subscription of the event's tenant), whatever its `events`: the test
    /// event. No delivery is created if the subscription is gone.
    pub async fn send_test(
        &self,
        event: &EventToPublish,
        subscription_id: uuid::Uuid,
    ) -> Result<FanoutResult, PublishError> {
        let prepared = self.prepare_for(event, Some(subscription_id))?;
        self.submit(&prepared).await
    }

    fn prepare_for(
        &self,
        event: &EventToPublish,
        only_subscription: Option<uuid::Uuid>,
    ) -> Result<PreparedPublish, PublishError> {
        let payload = envelope_body(event).map_err(|e| PublishError::Envelope(Arc::new(e)))?;
        Ok(PreparedPublish(Arc::new(PreparedEvent {
            event_ref: uuid::Uuid::now_v7(),
            tenant_id: event.tenant_id.clone(),
            event_id: event.event_id.clone(),
            event_type: event.event_type.clone(),
            payload,
            source: event.source,
            patterns: self.catalog.matching_patterns(&event.event_type).join(PATTERN_SEPARATOR),
            only_subscription,
            body_hash: body_hash(event),
        })))
    }

    /// Publishes handed to this batcher and not answered yet (waiting for a
    /// batch, or in one); [`FANOUT_PENDING`] counts those of every batcher.
    pub fn pending(&self) -> usize {
        AtomicUsize::load(&self.pending, Ordering::SeqCst)
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
async fn commit_batch(
    pool: &DbPool,
    dispatch: &DispatchQueue,
    requests: Vec<Arc<PreparedEvent>>,
) -> Vec<Result<FanoutResult, PublishError>> {
    let events: Vec<&PreparedEvent> = requests.iter().map(Arc::as_ref).collect();
    let BatchPlan { firsts, first_of } = plan(&events);
    let to_store: Vec<&PreparedEvent> = firsts.iter().map(|&i| events[i]).collect();
    let stored = match store(pool, &to_store).await {
        Ok(results) => {
            log::debug!("stored a batch of published events events={} distinct={}", requests.len(), to_store.len());
            results
        }
        Err(err @ PublishError::Failed(_)) if to_store.len() > 1 => {
            // Refused, not unreachable: maybe one event poisons the batch. Alone,
            // the others go through and only the culprit fails.
            log::warn!(
                "storing a batch of published events failed; storing them one by one events={} error={err}",
                requests.len()
            );
            let mut results = Vec::with_capacity(to_store.len());
            for event in &to_store {
                results.push(match store(pool, std::slice::from_ref(event)).await {
                    Ok(mut one) => one.pop().unwrap_or(Err(PublishError::Stopped)),
                    Err(err) => Err(err),
                });
            }
            results
        }
        Err(err) => {
            // Logged once, by each waiter where it handles the error (the HTTP
            // answer, the AMQP requeue); here only the batch's size.
            log::debug!("storing a batch of published events failed events={} error={err}", requests.len());
            to_store.iter().map(|_| Err(err.clone())).collect()
        }
    };
    let mut result_of: HashMap<usize, Result<FanoutResult, PublishError>> = firsts.into_iter().zip(stored).collect();
    for result in result_of.values().flatten() {
        dispatch.enqueue(&result.created);
        if !result.parked.is_empty() {
            metrics::counter!(crate::metric_names::DELIVERIES_PARKED).increment(result.parked.len() as u64);
        }
    }
    // Repeats within the batch get what a repeat after it would get.
    let repeats: Vec<(usize, Result<FanoutResult, PublishError>)> = first_of
        .iter()
        .enumerate()
        .filter(|&(i, &first)| i != first)
        .map(|(i, &first)| {
            let answer = match &result_of[&first] {
                Ok(_) if requests[i].body_hash != requests[first].body_hash => {
                    Err(PublishError::EventIdReused { event_id: requests[i].event_id.clone() })
                }
                Ok(first) => Ok(FanoutResult {
                    event_id: first.event_id.clone(),
                    delivery_count: first.delivery_count,
                    created: Vec::new(),
                    parked: Vec::new(),
                    is_new: false,
                }),
                Err(err) => Err(err.clone()),
            };
            (i, answer)
        })
        .collect();
    result_of.extend(repeats);
    // A caller that went away (client disconnected) needs no answer: its
    // event is committed and its deliveries are queued all the same.
    (0..requests.len()).map(|i| result_of.remove(&i).unwrap_or(Err(PublishError::Stopped))).collect()
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
            only_subscription: None,
            body_hash: Vec::new(),
        }
    }

    #[test]
    fn a_batch_stores_each_key_once_in_key_order_and_points_repeats_at_the_first() {
        let events = [event("t2", "a"), event("t1", "b"), event("t2", "a"), event("t1", "a"), event("t1", "b")];
        let refs: Vec<&PreparedEvent> = events.iter().collect();
        assert_eq!(plan(&refs), BatchPlan { firsts: vec![3, 1, 0], first_of: vec![0, 1, 0, 3, 1] });
    }
}

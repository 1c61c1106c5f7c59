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
//! The semantics are those of [`super::fanout::fan_out`] called once per event:
//! a repeated `event_id` of a tenant (also twice in one batch) creates nothing
//! and answers with the first publish's delivery count; the first publisher
//! gets `is_new`, every other one not.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use shared::{catalog::Catalog, db::DbPool};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::{
    dispatch_queue::DispatchQueue,
    error::PublishError,
    fanout::{envelope_body, EventToPublish, FanoutResult},
    store::{store, PreparedEvent, PATTERN_SEPARATOR},
};

/// Most events stored by one statement.
pub const MAX_BATCH: usize = 256;
/// Most batches in flight at once (each holds a pool connection), at most
/// half the pool so the API keeps connections of its own.
const MAX_IN_FLIGHT: usize = 4;
/// Events waiting for a batch before publishers wait to hand theirs over.
const QUEUE_CAPACITY: usize = 4_096;

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
    metrics::histogram!("fanout_batch_size").record(requests.len() as f64);
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
}

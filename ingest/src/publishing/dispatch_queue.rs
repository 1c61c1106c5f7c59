//! Queues committed deliveries on the dispatch exchange, after commit, with
//! publisher confirms, in batches (several attempts per message, see
//! [`shared::amqp::MAX_ATTEMPTS_PER_MESSAGE`]); then marks them `enqueued`.
//!
//! Nothing here is on the request path: callers hand over delivery ids and
//! return. Whatever is not confirmed (broker down, process killed) stays
//! `enqueued = false` and the outbox relay queues it later.

use std::{sync::Arc, time::Duration};

use futures_util::future::join_all;
use lapin::options::BasicPublishOptions;
use shared::{
    amqp::{
        check_confirmation, encode_dispatch, persistent_json, Broker, BrokerError, Topology, DISPATCH_ROUTING_KEY,
        MAX_ATTEMPTS_PER_MESSAGE,
    },
    batcher::{BatchSettings, Batcher},
    db::DbPool,
    models::delivery::{self, QueuedAttempt},
};
use tokio::sync::{mpsc, Semaphore};

use crate::metric_names;

/// Most messages published before waiting for their confirms together.
const MAX_BATCH: usize = 512;
/// Batches published and not yet confirmed, at once.
const MAX_BATCHES_IN_FLIGHT: usize = 4;
/// How long a mark waits for other confirmed batches to share its statement.
const MARK_LINGER: Duration = Duration::from_millis(100);

/// Hands deliveries to the background publisher.
#[derive(Clone)]
pub struct DispatchQueue {
    tx: mpsc::Sender<QueuedAttempt>,
}

impl DispatchQueue {
    /// Starts the background publisher task.
    pub fn start(broker: Broker, topology: Topology, pool: DbPool) -> Self {
        let (tx, rx) = mpsc::channel(65_536);
        tokio::spawn(run(rx, broker, topology, pool));
        Self { tx }
    }

    /// Queues attempts of freshly committed deliveries (attempt 1 of new
    /// ones, manual retries, test events). Never blocks: if the buffer is
    /// full the outbox relay picks the rows up instead.
    pub fn enqueue(&self, attempts: &[QueuedAttempt]) {
        for &queued in attempts {
            if self.tx.try_send(queued).is_err() {
                metrics::counter!(metric_names::DISPATCH_QUEUE_OVERFLOW).increment(1);
            }
        }
    }
}

async fn run(mut rx: mpsc::Receiver<QueuedAttempt>, broker: Broker, topology: Topology, pool: DbPool) {
    let exchange: Arc<str> = topology.dispatch_exchange().into();
    let in_flight = Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT));
    let marks = marks(pool);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // While earlier batches wait for their confirms, the next one is
        // gathered and published: one batch at a time capped this path at
        // what one confirm-and-mark round trip allows (about 2,000 messages/s
        // on the 2-core bench machine), and a backlog formed here, in one
        // FIFO ahead of every subscription.
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let batch = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
        let (broker, exchange, marks) = (broker.clone(), exchange.clone(), marks.clone());
        tokio::spawn(async move {
            let confirmed = publish(&broker, &exchange, &batch).await;
            // The next batch may go out while this one's mark lingers.
            drop(permit);
            if !confirmed.is_empty() {
                marks.call(confirmed).await;
            }
        });
    }
}

/// Publishes a batch; returns the confirmed attempts.
async fn publish(broker: &Broker, exchange: &str, batch: &[QueuedAttempt]) -> Vec<QueuedAttempt> {
    match publish_batch(broker, exchange, batch).await {
        Ok(confirmed) => {
            metrics::counter!(metric_names::DISPATCH_MESSAGES_PUBLISHED).increment(confirmed.len() as u64);
            confirmed
        }
        Err(err) => {
            log::warn!("queueing deliveries failed count={} error={err}; the outbox relay will retry", batch.len());
            Vec::new()
        }
    }
}

/// Marks confirmed attempts `enqueued`, several publish batches per
/// statement. Nobody waits on a mark: it only keeps the outbox relay (which
/// looks at rows older than `OUTBOX_GRACE_MS`, seconds) from queueing a
/// second message, and by the time it runs a dispatcher has usually claimed
/// or recorded the attempt already, which leaves the row out of the mark
/// (see [`delivery::mark_enqueued`]). At a steady trickle one mark per
/// publish was a transaction per delivery. A mark lost when ingest stops
/// only means the relay queues a duplicate that the dispatcher's claim drops.
fn marks(pool: DbPool) -> Batcher<Vec<QueuedAttempt>, ()> {
    let settings = BatchSettings {
        max_batch: 64,
        lanes: 1,
        queue_capacity: 256,
        linger: MARK_LINGER,
        size_histogram: metrics::Histogram::noop(),
    };
    Batcher::start(settings, move |batches: Vec<Vec<QueuedAttempt>>| {
        let pool = pool.clone();
        async move {
            let count = batches.len();
            let confirmed: Vec<QueuedAttempt> = batches.into_iter().flatten().collect();
            if let Err(err) = mark(&pool, &confirmed).await {
                // The rows stay `enqueued = false`; the relay re-publishes them and the
                // dispatcher drops the duplicate message.
                log::warn!("marking deliveries enqueued failed count={} error={err}", confirmed.len());
            }
            vec![(); count]
        }
    })
}

async fn mark(pool: &DbPool, confirmed: &[QueuedAttempt]) -> Result<usize, shared::db::DbError> {
    let mut conn = shared::db::conn(pool).await?;
    Ok(delivery::mark_enqueued(&mut conn, confirmed).await?)
}

/// Publishes the attempts, up to [`MAX_ATTEMPTS_PER_MESSAGE`] per message,
/// then awaits all confirms; returns the attempts whose message was confirmed.
pub async fn publish_batch(
    broker: &Broker,
    exchange: &str,
    batch: &[QueuedAttempt],
) -> Result<Vec<QueuedAttempt>, BrokerError> {
    let session = broker.session().ok_or(BrokerError::Disconnected)?;
    let mut pending = Vec::with_capacity(batch.len().div_ceil(MAX_ATTEMPTS_PER_MESSAGE));
    for chunk in batch.chunks(MAX_ATTEMPTS_PER_MESSAGE) {
        let body = encode_dispatch(chunk)?;
        let confirm = session
            .publisher
            .basic_publish(
                exchange.into(),
                DISPATCH_ROUTING_KEY.into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                &body,
                persistent_json(),
            )
            .await?;
        pending.push((chunk, confirm));
    }
    let (chunks, confirms): (Vec<_>, Vec<_>) = pending.into_iter().unzip();
    let results =
        tokio::time::timeout(Duration::from_secs(10), join_all(confirms)).await.map_err(|_| BrokerError::Timeout)?;
    let mut confirmed = Vec::with_capacity(batch.len());
    for (chunk, result) in chunks.into_iter().zip(results) {
        match result.map_err(BrokerError::from).and_then(check_confirmation) {
            Ok(()) => confirmed.extend_from_slice(chunk),
            Err(err) => log::warn!(
                "dispatch message not confirmed attempts={} first_delivery_id={} error={err}",
                chunk.len(),
                chunk[0].delivery_id
            ),
        }
    }
    Ok(confirmed)
}

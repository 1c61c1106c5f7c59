//! The publish path, in the order an event takes it:
//!
//! 1. [`body`]: the publish body of `POST /events` and of AMQP messages, and
//!    its validation into an [`body::EventToPublish`].
//! 2. [`consumer`]: the AMQP entry (the HTTP one is `routes::events`).
//! 3. [`batcher`] and [`store`]: group commit of the event and one delivery per
//!    matching subscription (or the one subscription of a test event).
//! 4. [`dispatch_queue`]: queues committed deliveries on the dispatch exchange.
//! 5. [`outbox`]: the relay that queues whatever step 4 did not confirm.
//! 6. [`reconciler`]: queues again unfinished deliveries whose message was lost.
//!
//! Beside them: [`admission`], which holds the answer of an HTTP publish
//! while a subscription of its is behind; [`budget`], the bytes of publish bodies held at once (HTTP and
//! AMQP), and [`storage_tries`], the count that ends a poison AMQP message.

pub mod admission;
pub mod batcher;
pub mod body;
pub mod budget;
pub mod consumer;
pub mod dispatch_queue;
pub mod error;
pub mod outbox;
pub mod reconciler;
pub mod storage_tries;
mod store;

/// Resolves once `stop` is true (or its sender is gone): how the consumer and
/// the relay learn that ingest is stopping.
pub(crate) async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here, not in the caller.
    let _ = stop.wait_for(|stopped| *stopped).await.map(|_| ());
}

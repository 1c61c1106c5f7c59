//! The publish path, in the order an event takes it:
//!
//! 1. [`body`]: the publish body of `POST /events` and of AMQP messages, and
//!    its validation into an [`body::EventToPublish`].
//! 2. [`consumer`]: the AMQP entry (the HTTP one is `routes::events`).
//! 3. [`batcher`] and [`store`]: group commit of the event and one delivery per
//!    matching subscription (or the one subscription of a test event).
//! 4. [`dispatch_queue`]: queues committed deliveries on the dispatch exchange.
//! 5. [`outbox`]: the relay that queues whatever step 4 did not confirm.

pub mod batcher;
pub mod body;
pub mod consumer;
pub mod dispatch_queue;
pub mod error;
pub mod outbox;
mod store;

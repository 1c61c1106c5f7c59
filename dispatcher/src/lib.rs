//! The dispatcher: consumes dispatch messages, signs and POSTs each delivery,
//! records every attempt, and schedules retries through delay queues.
//!
//! A message's path: [`consumer`] → [`process::handle`] (claim in [`store`],
//! one attempt in [`deliver::deliver_one`], outcome rules in [`retry`]) →
//! ack. [`server::start`] wires it up; [`shutdown`] stops it.

pub mod batched_store;
pub mod client;
pub mod consumer;
pub mod context;
pub mod deliver;
pub mod limits;
pub mod metric_names;
pub mod outcome;
pub mod process;
pub mod retry;
pub mod server;
pub mod shutdown;
pub mod stats;
pub mod store;

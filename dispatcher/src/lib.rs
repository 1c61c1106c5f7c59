//! The dispatcher: consumes dispatch messages, signs and POSTs each delivery,
//! records every attempt and the endpoint's health, and schedules retries in
//! the database.
//!
//! A message's path: [`consumer`] → [`process::handle`] (claim in [`store`],
//! the circuit in [`circuit`]/[`health`], a slot from [`flow`], one attempt in
//! [`deliver::deliver_one`], outcome rules in [`retry`]) → ack. What waits
//! long waits in the database; [`scheduler`] queues it again when due.
//! [`server::start`] wires it up; [`shutdown`] stops it.

pub mod batched_store;
pub mod circuit;
pub mod client;
pub mod consumer;
pub mod context;
pub mod deliver;
pub mod flow;
pub mod health;
pub mod metric_names;
pub mod outcome;
pub mod process;
pub mod retry;
pub mod scheduler;
pub mod server;
pub mod shutdown;
pub mod stats;
pub mod store;

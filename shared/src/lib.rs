//! Code both services share: configuration, the database schema and queries,
//! the AMQP topology, signing, secrets and the event catalog.

pub mod amqp;
pub mod batcher;
pub mod catalog;
pub mod config;
pub mod crypto;
pub mod db;
pub mod envelope;
pub mod fanout;
pub mod header_values;
pub mod headers;
pub mod models;
pub mod operational;
pub mod schema;
pub mod signing;
pub mod targets;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

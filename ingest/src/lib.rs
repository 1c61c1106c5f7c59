//! Ingest: the REST API, event publishing over HTTP and AMQP, fan-out into
//! durable deliveries, and the outbox relay that queues them on RabbitMQ.

pub mod app;
pub mod auth;
pub mod console;
pub mod domain;
pub mod error;
pub mod extract;
pub mod jobs;
pub mod key_cache;
pub mod metric_names;
pub mod openapi;
pub mod protocol_errors;
pub mod publishing;
pub mod queue_depths;
pub mod retention;
pub mod routes;
pub mod server;
pub mod state;
pub mod statistics;

//! Ingest: the REST API, event publishing over HTTP and AMQP, fan-out into
//! durable deliveries, and the outbox relay that queues them on RabbitMQ.

pub mod app;
pub mod auth;
pub mod domain;
pub mod error;
pub mod extract;
pub mod key_cache;
pub mod openapi;
pub mod protocol_errors;
pub mod publishing;
pub mod routes;
pub mod server;
pub mod state;

//! Ingest: the REST API, event publishing over HTTP and AMQP, fan-out into
//! durable deliveries, and the outbox relay that queues them on RabbitMQ.

pub mod app;
pub mod auth;
pub mod consumer;
pub mod dispatch_queue;
pub mod domain;
pub mod error;
pub mod extract;
pub mod fanout;
pub mod fanout_batcher;
pub mod key_cache;
pub mod openapi;
pub mod outbox;
pub mod protocol_errors;
pub mod publish;
pub mod routes;
pub mod server;
pub mod state;

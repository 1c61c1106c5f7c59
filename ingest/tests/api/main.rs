//! Ingest integration tests: one binary, real PostgreSQL and RabbitMQ, a
//! database and an AMQP prefix per test.

mod amqp_publishing;
mod deliveries;
mod fanout_batching;
mod hardening;
mod health;
mod helpers;
mod migrations;
mod openapi;
mod outbox;
mod publishing;
mod subscriptions;

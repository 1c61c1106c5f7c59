//! Ingest integration tests: one binary, real PostgreSQL and RabbitMQ, a
//! database and an AMQP prefix per test.

mod amqp_durability;
mod amqp_publishing;
mod connections;
mod deliveries;
mod delivery_log;
mod fanout_batching;
mod hardening;
mod health;
mod helpers;
mod memory_bounds;
mod migrations;
mod openapi;
mod outbox;
mod publishing;
mod reconciler;
mod retention;
mod statistics;
mod subscriptions;

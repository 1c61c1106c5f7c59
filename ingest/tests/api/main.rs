//! Ingest integration tests: one binary, real PostgreSQL and RabbitMQ, a
//! database and an AMQP prefix per test.

mod amqp_publishing;
mod deliveries;
mod delivery_log;
mod fanout_batching;
mod health;
mod helpers;
mod migrations;
mod openapi;
mod outbox;
mod publishing;
mod subscriptions;

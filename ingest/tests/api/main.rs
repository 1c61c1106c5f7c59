//! Ingest integration tests: one binary, real PostgreSQL and RabbitMQ, a
//! database and an AMQP prefix per test.

mod health;
mod helpers;
mod migrations;
mod openapi;
mod publishing;
mod subscriptions;

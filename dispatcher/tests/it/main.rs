//! Dispatcher integration tests: one binary; real PostgreSQL, RabbitMQ and
//! HTTP receivers on 127.0.0.1; a database and an AMQP prefix per test.

mod admission;
mod circuit;
mod control;
mod failures;
mod flow;
mod hardening;
mod helpers;
mod lost_messages;
mod observability;
mod operational;
mod recovery;
mod resilience;
mod retries;
mod sharing;
mod signing;
mod visibility;

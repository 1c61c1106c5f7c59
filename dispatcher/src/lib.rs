//! The dispatcher: consumes dispatch messages, signs and POSTs each delivery,
//! records every attempt, and schedules retries through delay queues.

pub mod server;

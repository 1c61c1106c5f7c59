//! `webhooks-bench`: a load harness for the webhook services.
//!
//! It creates subscriptions through the REST API pointing at its own
//! receiver ([`sink`]), publishes events over HTTP or AMQP ([`publisher`]),
//! waits for every expected delivery, and reports throughput, latency,
//! losses, duplicates, CPU per delivery and memory ([`report`]). The services
//! either run already (as the README starts them) or are started by
//! [`spawn`] with a fresh database; the smoke test starts them in-process.

pub mod api;
pub mod durability;
pub mod error;
pub mod machine;
pub mod memory;
pub mod metrics;
pub mod pgstats;
pub mod procstat;
pub mod publisher;
pub mod report;
pub mod run;
pub mod run_lock;
pub mod scenario;
pub mod services;
pub mod sink;
pub mod spawn;
pub mod stats;

//! Load generation: publishes events over HTTP or AMQP at a fixed
//! concurrency (closed loop) or a fixed rate (open loop), recording when each
//! publish started and how long it took to be accepted.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use reqwest::StatusCode;
use serde::Serialize;
use serde_json::{json, Value};
use webhooks_client::{EventBus, PublishOptions};

use crate::{api::cut, error::BenchError};

/// How events reach ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// `POST /api/v1/events`; latency is request to response.
    Http,
    /// The `{prefix}.events` exchange; latency is publish to broker confirm.
    Amqp,
}

/// The shape of the load.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Load {
    /// This many publishes in flight at all times.
    Concurrency(usize),
    /// Publishes started at this many per second, whatever the answers take.
    Rate(f64),
}

/// One event to publish.
#[derive(Debug, Clone)]
pub struct OutgoingEvent {
    pub index: u32,
    pub event_id: String,
    pub event_type: &'static str,
    pub tenant_id: String,
}

impl OutgoingEvent {
    /// The contract's publish body; the bench sets `event_id` itself so a
    /// receipt can be tied to its publish.
    pub fn body(&self) -> Vec<u8> {
        let body = json!({
            "event_type": self.event_type,
            "event_data": self.data(),
            "tenant_id": self.tenant_id,
            "event_id": self.event_id,
            "metadata": self.metadata(),
        });
        serde_json::to_vec(&body).unwrap_or_default()
    }

    fn data(&self) -> Value {
        json!({"bench": true, "sequence": self.index})
    }

    fn metadata(&self) -> Value {
        json!({"source": "webhooks-bench"})
    }
}

/// What happened to one publish.
#[derive(Debug, Clone)]
pub struct PublishRecord {
    pub index: u32,
    pub started: Instant,
    pub latency: Duration,
    /// `Ok(Some(n))`: accepted over HTTP with `n` deliveries; `Ok(None)`: confirmed over AMQP.
    pub outcome: Result<Option<u32>, String>,
}

/// A way to publish one event.
pub enum Publisher {
    Http { client: reqwest::Client, url: String, token: String },
    Amqp { bus: EventBus },
}

impl Publisher {
    /// Publishes over HTTP with a publisher key.
    pub fn http(ingest_url: &str, token: &str, pool: usize) -> Result<Self, BenchError> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(pool.max(1))
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Publisher::Http {
            client,
            url: format!("{}/api/v1/events", ingest_url.trim_end_matches('/')),
            token: token.to_owned(),
        })
    }

    /// Publishes to `{prefix}.events` with the modules' client, [`EventBus`].
    pub async fn amqp(amqp_url: &str, prefix: &str) -> Result<Self, BenchError> {
        Ok(Publisher::Amqp { bus: EventBus::connect(amqp_url, prefix).await.map_err(shared::amqp::BrokerError::from)? })
    }

    async fn publish(&self, event: &OutgoingEvent) -> Result<Option<u32>, String> {
        match self {
            Publisher::Http { client, url, token } => {
                let response = client
                    .post(url)
                    .bearer_auth(token)
                    .header("content-type", "application/json")
                    .body(event.body())
                    .send()
                    .await
                    .map_err(|e| format!("request failed: {e}"))?;
                let status = response.status();
                let text = response.text().await.map_err(|e| format!("reading the answer failed: {e}"))?;
                if status != StatusCode::ACCEPTED {
                    return Err(format!("{status}: {}", cut(&text)));
                }
                let json: serde_json::Value =
                    serde_json::from_str(&text).map_err(|_| format!("202 with a non-JSON body: {}", cut(&text)))?;
                let deliveries =
                    json["deliveries"].as_u64().ok_or_else(|| format!("202 without deliveries: {}", cut(&text)))?;
                Ok(Some(deliveries as u32))
            }
            Publisher::Amqp { bus } => {
                let options =
                    PublishOptions { event_id: Some(event.event_id.clone()), metadata: Some(event.metadata()) };
                bus.publish_with(event.event_type, event.data(), &event.tenant_id, options)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(None)
            }
        }
    }
}

/// Most publishes in flight in rate mode (bounds memory if ingest stalls).
const MAX_IN_FLIGHT: usize = 4_096;

/// Publishes every event (in order of index) with the given load, stopping
/// early at `deadline`. Returns a record per publish that was started.
pub async fn publish_all(
    publisher: Arc<Publisher>,
    events: Arc<Vec<OutgoingEvent>>,
    load: Load,
    deadline: Instant,
) -> Vec<PublishRecord> {
    match load {
        Load::Concurrency(workers) => {
            let next = Arc::new(AtomicUsize::new(0));
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..workers.max(1) {
                let (publisher, events, next) = (publisher.clone(), events.clone(), next.clone());
                tasks.spawn(async move {
                    let mut records = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= events.len() || Instant::now() >= deadline {
                            return records;
                        }
                        records.push(publish_one(&publisher, &events[i]).await);
                    }
                });
            }
            let mut records = Vec::with_capacity(events.len());
            while let Some(done) = tasks.join_next().await {
                records.extend(done.unwrap_or_default());
            }
            records
        }
        Load::Rate(per_second) => {
            let per_second = per_second.max(0.001);
            let permits = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
            let start = tokio::time::Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..events.len() {
                let due = start + Duration::from_secs_f64(i as f64 / per_second);
                if due.into_std() >= deadline {
                    break;
                }
                tokio::time::sleep_until(due).await;
                let Ok(permit) = permits.clone().acquire_owned().await else { break };
                let (publisher, events) = (publisher.clone(), events.clone());
                tasks.spawn(async move {
                    let record = publish_one(&publisher, &events[i]).await;
                    drop(permit);
                    record
                });
            }
            let mut records = Vec::with_capacity(events.len());
            while let Some(done) = tasks.join_next().await {
                if let Ok(record) = done {
                    records.push(record);
                }
            }
            records
        }
    }
}

async fn publish_one(publisher: &Publisher, event: &OutgoingEvent) -> PublishRecord {
    let started = Instant::now();
    let outcome = publisher.publish(event).await;
    PublishRecord { index: event.index, started, latency: started.elapsed(), outcome }
}

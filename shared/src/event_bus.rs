//! The Rust publishing client: what a platform module calls after a state
//! change, the counterpart of the guide's `get_event_bus().publish(...)`.
//!
//! It publishes the JSON body of `POST /api/v1/events` to the topic exchange
//! `{AMQP_PREFIX}.events` with routing key = event type, persistent,
//! `content_type: application/json`, `mandatory`, and waits for the broker's
//! publisher confirm. Once `publish` returns `Ok`, the broker has the event
//! durably; ingest fans it out (or moves it to `{AMQP_PREFIX}.events.rejected`
//! with `x-rejection-reason` if it is invalid, e.g. an unknown type).

use std::sync::Arc;

use lapin::{options::ConfirmSelectOptions, types::ShortString, Channel, Connection};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::amqp::{self, persistent_json, publish_confirmed, BrokerError, BROKER_TIMEOUT};

/// Optional parts of a published event.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// Idempotency key (1–128 of `A-Z a-z 0-9 _ . : -`): publishing the same id
    /// for the same tenant again creates nothing new. Made (`evt_` + UUIDv7) when absent.
    pub event_id: Option<String>,
    /// Free-form metadata (a JSON object), passed to subscribers as `metadata`.
    pub metadata: Option<Value>,
}

/// The body on the wire: exactly what `POST /api/v1/events` takes.
#[derive(Serialize)]
struct EventMessage<'a> {
    event_type: &'a str,
    event_data: &'a Value,
    tenant_id: &'a str,
    event_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a Value>,
}

struct Link {
    connection: Connection,
    /// Confirm-mode channel; cloned for each publish, so publishes run concurrently.
    channel: Channel,
}

struct Inner {
    url: String,
    exchange: String,
    link: Mutex<Option<Link>>,
}

/// A publisher of events to the webhook system. Cheap to clone; share one per
/// process. A lost connection is re-opened on the next publish.
///
/// ```no_run
/// # async fn example() -> Result<(), shared::amqp::BrokerError> {
/// use serde_json::json;
/// use shared::event_bus::EventBus;
///
/// let bus = EventBus::connect("amqp://guest:guest@127.0.0.1:5672/%2f", "webhooks").await?;
/// // After the invoice is committed:
/// let event_id = bus
///     .publish("invoice.created", json!({"invoice_id": "inv_1", "amount": 99.5, "currency": "USD"}), "tenant_1")
///     .await?;
/// println!("published {event_id}");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<Inner>,
}

impl EventBus {
    /// Connects (to the first node that answers, when `amqp_url` lists several
    /// comma-separated nodes of a cluster) and declares the events exchange (durable topic, as ingest
    /// declares it), so publishing works even before ingest first started.
    /// Until ingest has declared its queue, publishes fail with
    /// [`BrokerError::Unroutable`] rather than vanish.
    pub async fn connect(amqp_url: &str, prefix: &str) -> Result<Self, BrokerError> {
        let bus = Self {
            inner: Arc::new(Inner {
                url: amqp_url.to_owned(),
                exchange: format!("{prefix}.events"),
                link: Mutex::new(None),
            }),
        };
        bus.channel().await?;
        Ok(bus)
    }

    /// Publishes an event for a tenant with a fresh event id; returns that id
    /// once the broker has confirmed the message.
    pub async fn publish(&self, event_type: &str, event_data: Value, tenant_id: &str) -> Result<String, BrokerError> {
        self.publish_with(event_type, event_data, tenant_id, PublishOptions::default()).await
    }

    /// Publishes with an explicit event id (idempotency key) and/or metadata;
    /// returns the event id once the broker has confirmed the message. Retrying
    /// after an error with the same `event_id` is safe.
    pub async fn publish_with(
        &self,
        event_type: &str,
        event_data: Value,
        tenant_id: &str,
        options: PublishOptions,
    ) -> Result<String, BrokerError> {
        let event_id = options.event_id.unwrap_or_else(|| format!("evt_{}", uuid::Uuid::now_v7().simple()));
        let body = serde_json::to_vec(&EventMessage {
            event_type,
            event_data: &event_data,
            tenant_id,
            event_id: &event_id,
            metadata: options.metadata.as_ref(),
        })?;
        let properties = persistent_json()
            .with_message_id(ShortString::from(event_id.as_str()))
            .with_timestamp(chrono::Utc::now().timestamp().max(0) as u64);
        let channel = self.channel().await?;
        publish_confirmed(&channel, &self.inner.exchange, event_type, &body, properties).await?;
        Ok(event_id)
    }

    /// Closes the connection (publishes in flight fail).
    pub async fn close(&self) {
        if let Some(link) = self.inner.link.lock().await.take() {
            let _ = link.connection.close(200, "event bus closed".into()).await;
        }
    }

    /// The live confirm-mode channel, reconnecting if it is gone.
    async fn channel(&self) -> Result<Channel, BrokerError> {
        let mut link = self.inner.link.lock().await;
        if let Some(current) = link.as_ref() {
            if current.connection.status().connected() && current.channel.status().connected() {
                return Ok(current.channel.clone());
            }
        }
        *link = None;
        let (connection, _) = amqp::connect_any(&crate::config::split_urls(&self.inner.url), 0).await?;
        let setup = async {
            let channel = connection.create_channel().await?;
            amqp::declare_events_exchange(&channel, &self.inner.exchange).await?;
            channel.confirm_select(ConfirmSelectOptions::default()).await?;
            Ok::<_, BrokerError>(channel)
        };
        match tokio::time::timeout(BROKER_TIMEOUT, setup).await.map_err(|_| BrokerError::Timeout).and_then(|r| r) {
            Ok(channel) => {
                *link = Some(Link { connection, channel: channel.clone() });
                Ok(channel)
            }
            Err(err) => {
                let _ = connection.close(200, "event bus setup failed".into()).await;
                Err(err)
            }
        }
    }
}

//! [`EventBus`]: what a platform module calls after a state change, the
//! counterpart of the Python package's `get_event_bus().publish(...)`.

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use lapin::{options::ConfirmSelectOptions, types::ShortString, Channel, Connection};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::{
    amqp::{connect_any, declare_events_exchange, persistent_json, publish_confirmed, BROKER_TIMEOUT},
    Error,
};

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
    urls: String,
    exchange: String,
    link: Mutex<Option<Link>>,
}

/// A publisher of events to the webhook system, over AMQP with publisher
/// confirms: the JSON body of `POST /api/v1/events` goes to the topic exchange
/// `{prefix}.events`, routing key = event type, persistent, `mandatory`, with
/// the AMQP `message_id` set to the event id. Once a publish returns `Ok` the
/// broker has the event durably; ingest fans it out, or moves it to
/// `{prefix}.events.rejected` with `x-rejection-reason` if it is invalid.
///
/// Cheap to clone; share one per process. A lost connection is re-opened on
/// the next publish.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<Inner>,
}

impl EventBus {
    /// Connects to `amqp_urls` (one URL, or several comma-separated nodes of
    /// one cluster, tried in turn) and declares the events exchange (durable
    /// topic, as ingest declares it), so publishing works even before ingest
    /// first started. Until ingest has declared its queue, publishes fail with
    /// [`Error::Unroutable`] rather than vanish.
    pub async fn connect(amqp_urls: &str, prefix: &str) -> Result<Self, Error> {
        let bus = Self {
            inner: Arc::new(Inner {
                urls: amqp_urls.to_owned(),
                exchange: format!("{prefix}.events"),
                link: Mutex::new(None),
            }),
        };
        bus.channel().await?;
        Ok(bus)
    }

    /// Connects as configured by the environment: `WEBHOOKS_AMQP_URL`, else
    /// `AMQP_URL`, else `amqp://guest:guest@127.0.0.1:5672/%2f`; prefix
    /// `WEBHOOKS_AMQP_PREFIX`, else `AMQP_PREFIX`, else `webhooks`.
    pub async fn from_env() -> Result<Self, Error> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let urls = var("WEBHOOKS_AMQP_URL")
            .or_else(|| var("AMQP_URL"))
            .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
        let prefix =
            var("WEBHOOKS_AMQP_PREFIX").or_else(|| var("AMQP_PREFIX")).unwrap_or_else(|| "webhooks".to_owned());
        Self::connect(&urls, &prefix).await
    }

    /// Publishes an event for a tenant with a fresh event id; returns that id
    /// once the broker has confirmed the message.
    pub async fn publish(&self, event_type: &str, event_data: Value, tenant_id: &str) -> Result<String, Error> {
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
    ) -> Result<String, Error> {
        validate(event_type, tenant_id, options.event_id.as_deref())?;
        let event_id = options.event_id.unwrap_or_else(new_event_id);
        let body = serde_json::to_vec(&EventMessage {
            event_type,
            event_data: &event_data,
            tenant_id,
            event_id: &event_id,
            metadata: options.metadata.as_ref(),
        })?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let properties = persistent_json().with_message_id(ShortString::from(event_id.as_str())).with_timestamp(now);
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
    async fn channel(&self) -> Result<Channel, Error> {
        let mut link = self.inner.link.lock().await;
        if let Some(current) = link.as_ref() {
            if current.connection.status().connected() && current.channel.status().connected() {
                return Ok(current.channel.clone());
            }
        }
        *link = None;
        let connection = connect_any(&self.inner.urls).await?;
        let setup = async {
            let channel = connection.create_channel().await?;
            declare_events_exchange(&channel, &self.inner.exchange).await?;
            channel.confirm_select(ConfirmSelectOptions::default()).await?;
            Ok::<_, Error>(channel)
        };
        match tokio::time::timeout(BROKER_TIMEOUT, setup).await.map_err(|_| Error::Timeout).and_then(|r| r) {
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

/// A fresh event id: `evt_` + a time-ordered UUIDv7 in hex.
pub fn new_event_id() -> String {
    format!("evt_{}", uuid::Uuid::now_v7().simple())
}

/// Refuses locally what ingest would refuse, with a clearer error.
fn validate(event_type: &str, tenant_id: &str, event_id: Option<&str>) -> Result<(), Error> {
    if event_type.trim().is_empty() {
        return Err(Error::Invalid("event_type is empty".into()));
    }
    if event_type.starts_with("webhook.") {
        return Err(Error::Invalid(format!("{event_type}: webhook.* event types are sent by the platform only")));
    }
    if tenant_id.trim().is_empty() {
        return Err(Error::Invalid("tenant_id is empty".into()));
    }
    if let Some(id) = event_id {
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-');
        if id.is_empty() || id.len() > 128 || !id.chars().all(valid_char) {
            return Err(Error::Invalid("event_id must be 1-128 of A-Z a-z 0-9 _ . : -".into()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_only_types_and_malformed_ids_are_refused_locally() {
        assert!(matches!(validate("webhook.test", "t1", None), Err(Error::Invalid(_))));
        assert!(matches!(validate("invoice.created", " ", None), Err(Error::Invalid(_))));
        assert!(matches!(validate("invoice.created", "t1", Some("has space")), Err(Error::Invalid(_))));
        assert!(validate("invoice.created", "t1", Some("evt_inv_1:created")).is_ok());
    }

    #[test]
    fn new_event_ids_are_time_ordered_uuids() {
        let id = new_event_id();
        assert!(id.starts_with("evt_") && id.len() == 36, "{id}");
    }
}

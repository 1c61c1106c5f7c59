//! RabbitMQ: the topology both services declare, the dispatch message (up
//! to [`MAX_ATTEMPTS_PER_MESSAGE`] attempts per message), and a
//! supervised connection that reconnects with backoff.
//!
//! ```text
//!  modules ──► {p}.events (topic) ──#──► {p}.events.ingest ──► ingest consumer
//!                                                         └─ rejects ──► {p}.events.rejected
//!  ingest ───► {p}.dispatch (direct) ──dispatch──► {p}.dispatch ──► dispatchers
//!  dispatchers (due retries and parked deliveries, from the database) ──► {p}.dispatch
//! ```
//!
//! Nothing waits in the broker: a retry or a delivery that must wait waits in
//! PostgreSQL with a due time, and the dispatchers' scheduler queues it when due.

use std::{sync::Arc, time::Duration};

use lapin::{
    options::{
        ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable, LongString},
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::{
    config::{Config, QueueType},
    models::delivery::QueuedAttempt,
};

/// Routing key of every message on the dispatch exchange.
pub const DISPATCH_ROUTING_KEY: &str = "dispatch";
/// Persistent JSON message properties (the modules' client sets the same).
pub use webhooks_client::amqp::persistent_json;
/// How long a connect, declare or publisher confirm may take before we give up on it.
pub use webhooks_client::BROKER_TIMEOUT;

/// Deliveries of one message from a quorum `{p}.events.ingest` before the
/// broker dead-letters it to `{p}.events.rejected`.
pub const INGEST_DELIVERY_LIMIT: i64 = 20;

/// Why a broker operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("not connected to the broker")]
    Disconnected,
    #[error("broker operation timed out")]
    Timeout,
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("the message could not be routed to any queue")]
    Unroutable,
    #[error("broker error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("message could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("invalid event: {0}")]
    Invalid(String),
}

impl From<webhooks_client::Error> for BrokerError {
    /// The publishing primitives live in the modules' client crate; its
    /// errors are these, one for one.
    fn from(err: webhooks_client::Error) -> Self {
        use webhooks_client::Error as E;
        match err {
            E::Disconnected => Self::Disconnected,
            E::Timeout => Self::Timeout,
            E::Nacked => Self::Nacked,
            E::Unroutable => Self::Unroutable,
            E::Amqp(err) => Self::Amqp(err),
            E::Encode(err) => Self::Encode(err),
            E::Invalid(reason) => Self::Invalid(reason),
        }
    }
}

/// A message on the dispatch queue: "make this attempt of this delivery".
///
/// Tagged, so new kinds can be added without breaking queued messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DispatchMessage {
    Attempt {
        delivery_id: uuid::Uuid,
        /// 1-based attempt number; stale when the delivery has moved past it.
        attempt: i32,
        /// The delivery's subscription, so a dispatcher can wait for one of
        /// its slots before claiming (and reading the payload). Absent from
        /// messages queued by versions before it; those are claimed first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subscription_id: Option<uuid::Uuid>,
    },
}

impl From<QueuedAttempt> for DispatchMessage {
    fn from(queued: QueuedAttempt) -> Self {
        Self::Attempt {
            delivery_id: queued.delivery_id,
            attempt: queued.attempt,
            subscription_id: Some(queued.subscription_id),
        }
    }
}

/// Most attempts one dispatch message carries. The broker's work (store,
/// confirm, deliver, ack) is per message, and with one attempt per message it
/// was a fifth of the machine's CPU per delivery (BENCHMARKS.md); a dispatcher
/// acks a message once all of its attempts are settled, so a message should
/// stay small enough that one slow attempt holds few others' acks.
pub const MAX_ATTEMPTS_PER_MESSAGE: usize = 16;

/// Encodes up to [`MAX_ATTEMPTS_PER_MESSAGE`] attempts as one message body
/// (callers chunk; see [`decode_dispatch`] for the format).
pub fn encode_dispatch(attempts: &[QueuedAttempt]) -> Result<Vec<u8>, serde_json::Error> {
    match attempts {
        [one] => serde_json::to_vec(&DispatchMessage::from(*one)),
        many => serde_json::to_vec(&many.iter().map(|&a| DispatchMessage::from(a)).collect::<Vec<_>>()),
    }
}

/// Decodes a dispatch message body into its attempts: one [`DispatchMessage`]
/// as a JSON object (as every version before batching wrote it), or several
/// as a JSON array. An empty array decodes to no attempts. Parsed as the form
/// its first character says, so the error names what was wrong with it.
pub fn decode_dispatch(body: &[u8]) -> Result<Vec<DispatchMessage>, serde_json::Error> {
    if body.trim_ascii_start().starts_with(b"[") {
        serde_json::from_slice(body)
    } else {
        serde_json::from_slice(body).map(|one| vec![one])
    }
}

/// Names of every exchange and queue, all under `AMQP_PREFIX`.
#[derive(Debug, Clone)]
pub struct Topology {
    pub prefix: String,
    pub queue_type: QueueType,
}

impl Topology {
    pub fn from_config(config: &Config) -> Self {
        Self { prefix: config.amqp_prefix.clone(), queue_type: config.amqp_queue_type }
    }

    /// Topic exchange modules publish events to (routing key = event type).
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }
    /// Queue ingest consumes published events from.
    pub fn ingest_queue(&self) -> String {
        format!("{}.events.ingest", self.prefix)
    }
    /// Queue of events ingest could not accept, each with `x-rejection-reason`.
    pub fn rejected_queue(&self) -> String {
        format!("{}.events.rejected", self.prefix)
    }
    /// Direct exchange of dispatch messages.
    pub fn dispatch_exchange(&self) -> String {
        format!("{}.dispatch", self.prefix)
    }
    /// Queue the dispatchers share.
    pub fn dispatch_queue(&self) -> String {
        format!("{}.dispatch", self.prefix)
    }
    fn queue_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        if self.queue_type == QueueType::Quorum {
            args.insert("x-queue-type".into(), long_string("quorum"));
        }
        args
    }

    /// The ingest queue's arguments. On quorum queues the broker counts
    /// deliveries itself: a message delivered [`INGEST_DELIVERY_LIMIT`] times
    /// (say, one that crashes ingest each time, so it is never settled) is
    /// dead-lettered to the rejected queue, at least once, rather than
    /// redelivered forever. Ingest rejects a message the database refuses
    /// itself, much earlier, with `x-rejection-code: storage_failed`.
    fn ingest_queue_arguments(&self) -> FieldTable {
        let mut args = self.queue_arguments();
        if self.queue_type == QueueType::Quorum {
            args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(INGEST_DELIVERY_LIMIT));
            args.insert("x-dead-letter-exchange".into(), long_string(""));
            args.insert("x-dead-letter-routing-key".into(), long_string(&self.rejected_queue()));
            args.insert("x-dead-letter-strategy".into(), long_string("at-least-once"));
            args.insert("x-overflow".into(), long_string("reject-publish"));
        }
        args
    }

    /// Declares everything, idempotently. Both services call it at every
    /// (re)connection, so either may start first.
    pub async fn declare(&self, channel: &Channel) -> Result<(), BrokerError> {
        let durable_exchange = ExchangeDeclareOptions { durable: true, ..Default::default() };
        let durable_queue = QueueDeclareOptions { durable: true, ..Default::default() };

        // Published events: topic exchange, one queue for all types.
        declare_events_exchange(channel, &self.events_exchange()).await?;
        channel.queue_declare(self.ingest_queue().into(), durable_queue, self.ingest_queue_arguments()).await?;
        channel
            .queue_bind(
                self.ingest_queue().into(),
                self.events_exchange().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        // Rejected events: reached through the default exchange by queue name.
        channel.queue_declare(self.rejected_queue().into(), durable_queue, self.queue_arguments()).await?;

        // Dispatch: direct exchange and the queue every dispatcher consumes.
        channel
            .exchange_declare(
                self.dispatch_exchange().into(),
                ExchangeKind::Direct,
                durable_exchange,
                FieldTable::default(),
            )
            .await?;
        channel.queue_declare(self.dispatch_queue().into(), durable_queue, self.queue_arguments()).await?;
        channel
            .queue_bind(
                self.dispatch_queue().into(),
                self.dispatch_exchange().into(),
                DISPATCH_ROUTING_KEY.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;

        Ok(())
    }

    /// Deletes everything [`Topology::declare`] made (tests clean up with it).
    pub async fn delete(&self, channel: &Channel) -> Result<(), BrokerError> {
        for queue in [self.ingest_queue(), self.rejected_queue(), self.dispatch_queue()] {
            channel.queue_delete(queue.into(), QueueDeleteOptions::default()).await?;
        }
        for exchange in [self.events_exchange(), self.dispatch_exchange()] {
            channel.exchange_delete(exchange.into(), ExchangeDeleteOptions::default()).await?;
        }
        Ok(())
    }
}

/// Declares the topic exchange modules publish events to. Publishers
/// ([`webhooks_client::EventBus`]) declare it too, with the same arguments, so
/// either side may come first.
pub async fn declare_events_exchange(channel: &Channel, exchange: &str) -> Result<(), BrokerError> {
    Ok(webhooks_client::amqp::declare_events_exchange(channel, exchange).await?)
}

/// An AMQP long string value (what RabbitMQ wants for string arguments and headers).
pub fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.as_bytes().to_vec()))
}

/// Publishes one message and waits for the broker's confirm (the channel must
/// be in confirm mode). `mandatory`, so an unroutable message is an error, not a loss.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), BrokerError> {
    Ok(webhooks_client::amqp::publish_confirmed(channel, exchange, routing_key, body, properties).await?)
}

/// Turns a publisher confirm into success or a typed error.
pub fn check_confirmation(confirm: lapin::Confirmation) -> Result<(), BrokerError> {
    Ok(webhooks_client::amqp::check_confirmation(confirm)?)
}

/// A live connection and a confirm-mode channel for publishing.
#[derive(Clone)]
pub struct BrokerSession {
    pub connection: Arc<Connection>,
    /// Confirm-mode channel shared by all publishers of this process.
    pub publisher: Channel,
}

/// A broker connection kept alive by a supervisor task: it connects, declares
/// the topology, and after any loss reconnects with capped exponential backoff.
#[derive(Clone)]
pub struct Broker {
    session: watch::Receiver<Option<BrokerSession>>,
}

impl Broker {
    /// Starts the supervisor; returns at once (the first connection may still be
    /// pending). `urls` is `AMQP_URL`: one URL, or the comma-separated nodes of a cluster.
    pub fn start(urls: String, topology: Topology) -> Self {
        let (tx, rx) = watch::channel(None);
        tokio::spawn(supervise(crate::config::split_urls(&urls), topology, tx));
        Self { session: rx }
    }

    /// The current session, if connected.
    pub fn session(&self) -> Option<BrokerSession> {
        self.session.borrow().clone().filter(|s| s.connection.status().connected())
    }

    /// Whether the broker is reachable right now.
    pub fn is_connected(&self) -> bool {
        self.session().is_some()
    }

    /// Waits until a session is up (or `timeout` passes).
    pub async fn wait_session(&self, timeout: Duration) -> Result<BrokerSession, BrokerError> {
        let mut rx = self.session.clone();
        tokio::time::timeout(timeout, async {
            loop {
                if let Some(session) = rx.borrow_and_update().clone().filter(|s| s.connection.status().connected()) {
                    return Ok(session);
                }
                if rx.changed().await.is_err() {
                    return Err(BrokerError::Disconnected);
                }
            }
        })
        .await
        .map_err(|_| BrokerError::Disconnected)?
    }

    /// Publishes with confirm on the shared channel.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        let session = self.session().ok_or(BrokerError::Disconnected)?;
        publish_confirmed(&session.publisher, exchange, routing_key, body, properties).await
    }
}

/// Opens a connection with a timeout (lapin's connect can hang on a half-open peer).
/// `url` is one broker URL; see [`connect_any`] for a cluster's list.
pub async fn connect(url: &str) -> Result<Connection, BrokerError> {
    tokio::time::timeout(BROKER_TIMEOUT, Connection::connect(url, ConnectionProperties::default()))
        .await
        .map_err(|_| BrokerError::Timeout)?
        .map_err(BrokerError::from)
}

/// Connects to the first node of `urls` (comma-separated nodes of one cluster,
/// as `AMQP_URL` may list them) that answers, trying them in turn from index
/// `start`; returns the connection and the index of the node that answered.
pub async fn connect_any(urls: &[String], start: usize) -> Result<(Connection, usize), BrokerError> {
    let mut last = BrokerError::Disconnected;
    for offset in 0..urls.len() {
        let index = (start + offset) % urls.len();
        match connect(&urls[index]).await {
            Ok(connection) => return Ok((connection, index)),
            Err(err) => {
                log::warn!("broker node unreachable node={} error={err}", node_name(&urls[index]));
                last = err;
            }
        }
    }
    Err(last)
}

/// `host:port` of a broker URL, for logs (never the credentials).
pub fn node_name(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => format!("{}:{}", parsed.host_str().unwrap_or("?"), parsed.port().unwrap_or(5672)),
        Err(_) => "<unparsable url>".to_owned(),
    }
}

async fn open_session(connection: Connection, topology: &Topology) -> Result<BrokerSession, BrokerError> {
    let setup = async {
        let channel = connection.create_channel().await?;
        topology.declare(&channel).await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok::<_, BrokerError>(channel)
    };
    match tokio::time::timeout(BROKER_TIMEOUT, setup).await.map_err(|_| BrokerError::Timeout).and_then(|r| r) {
        Ok(publisher) => Ok(BrokerSession { connection: Arc::new(connection), publisher }),
        Err(err) => {
            let _ = connection.close(200, "session setup failed".into()).await;
            Err(err)
        }
    }
}

/// Keeps a session up: connects to the first node that answers and, after a
/// loss, starts with the next node of the list, so a cluster that lost the
/// node we were on is rejoined through another one at once.
async fn supervise(urls: Vec<String>, topology: Topology, tx: watch::Sender<Option<BrokerSession>>) {
    let mut backoff = Duration::from_millis(100);
    let mut next = 0;
    loop {
        let opened = match connect_any(&urls, next).await {
            Ok((connection, index)) => {
                next = index;
                open_session(connection, &topology).await
            }
            Err(err) => Err(err),
        };
        match opened {
            Ok(session) => {
                log::info!("broker connected prefix={} node={}", topology.prefix, node_name(&urls[next]));
                backoff = Duration::from_millis(100);
                let connection = session.connection.clone();
                let publisher = session.publisher.clone();
                tx.send_replace(Some(session));
                while connection.status().connected() && publisher.status().connected() {
                    if tx.is_closed() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                tx.send_replace(None);
                log::warn!(
                    "broker connection lost prefix={} node={}; reconnecting",
                    topology.prefix,
                    node_name(&urls[next])
                );
                if urls.len() > 1 {
                    // Another node first: the one we were on may be the one that went away.
                    next = (next + 1) % urls.len();
                    continue;
                }
            }
            Err(err) => {
                if tx.is_closed() {
                    return;
                }
                log::warn!("broker connect failed error={err} retry_in_ms={}", backoff.as_millis());
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dispatch_message_names_its_subscription_and_old_messages_still_parse() {
        let queued =
            QueuedAttempt { delivery_id: uuid::Uuid::now_v7(), attempt: 2, subscription_id: uuid::Uuid::now_v7() };
        let json = serde_json::to_value(DispatchMessage::from(queued)).expect("encodes");
        assert_eq!(json["type"], "attempt");
        assert_eq!(json["subscription_id"], queued.subscription_id.to_string());
        let old = format!(r#"{{"type":"attempt","delivery_id":"{}","attempt":1}}"#, queued.delivery_id);
        let parsed: DispatchMessage = serde_json::from_str(&old).expect("a message without the subscription parses");
        assert_eq!(
            parsed,
            DispatchMessage::Attempt { delivery_id: queued.delivery_id, attempt: 1, subscription_id: None }
        );
    }

    fn attempt(n: i32) -> QueuedAttempt {
        QueuedAttempt { delivery_id: uuid::Uuid::now_v7(), attempt: n, subscription_id: uuid::Uuid::now_v7() }
    }

    #[test]
    fn one_attempt_is_an_object_and_several_are_an_array_and_both_decode_in_order() {
        let one = [attempt(1)];
        let body = encode_dispatch(&one).expect("encodes");
        assert!(body.starts_with(b"{"), "one attempt keeps the pre-batching format");
        assert_eq!(decode_dispatch(&body).expect("decodes"), vec![DispatchMessage::from(one[0])]);

        let several = [attempt(1), attempt(3), attempt(2)];
        let body = encode_dispatch(&several).expect("encodes");
        assert!(body.starts_with(b"["));
        let decoded = decode_dispatch(&body).expect("decodes");
        assert_eq!(decoded, several.iter().map(|&a| DispatchMessage::from(a)).collect::<Vec<_>>());
    }

    #[test]
    fn a_body_that_is_not_a_dispatch_message_does_not_decode() {
        for body in [&b"not json"[..], br#"{"type":"other"}"#, br#"[{"type":"attempt"}]"#, b"42"] {
            assert!(decode_dispatch(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
        assert_eq!(decode_dispatch(b"[]").expect("an empty array decodes"), vec![]);
    }
}

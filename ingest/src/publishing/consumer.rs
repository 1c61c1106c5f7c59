//! Publishing over AMQP: consumes `{p}.events.ingest` (bound to the topic
//! exchange `{p}.events` with `#`) and fans each event out exactly like
//! `POST /events`.
//!
//! A message is acked only once its event and deliveries are committed, or
//! once a copy is confirmed on `{p}.events.rejected` with the reason in
//! `x-rejection-reason`. A database problem leaves the message on the queue
//! (nack with requeue, after a pause), so nothing is ever dropped.
//!
//! The body is the JSON of `POST /events`. If it has no `event_type`, the
//! routing key is used (when the message came through the events exchange);
//! if it has one that differs from the routing key, the message is rejected
//! (`event_type_mismatch`), since other consumers of the exchange route by key.

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable},
    Channel,
};
use serde_json::Value;
use shared::amqp::{long_string, publish_confirmed, BrokerError, BrokerSession};
use tokio::sync::Semaphore;

use super::{
    body::{EventToPublish, InvalidEvent, PublishBody},
    error::PublishError,
};
use crate::{
    extract::{from_json_value, BodyError, MAX_BODY_BYTES},
    metric_names,
    state::AppState,
};

/// Header carrying why a message was rejected: `<code>: <message>`.
pub const REJECTION_REASON_HEADER: &str = "x-rejection-reason";
/// Header carrying the rejection code alone, for machines.
pub const REJECTION_CODE_HEADER: &str = "x-rejection-code";
/// How long a message waits before it is requeued after a database error, so
/// an outage does not turn into a redelivery storm.
const REQUEUE_DELAY: Duration = Duration::from_secs(1);

/// Why a message cannot be accepted: a stable code and a human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// `invalid_json`, `payload_too_large`, `missing_field`, `invalid_field`,
    /// `event_type_mismatch`, or an [`InvalidEvent`] code (`unknown_event_type`,
    /// `reserved_event_type`, `missing_tenant`, `invalid_event_data`, `invalid_metadata`,
    /// `invalid_event_id`).
    pub code: &'static str,
    pub message: String,
}

impl Rejection {
    /// The `x-rejection-reason` header value.
    pub fn header_value(&self) -> String {
        format!("{}: {}", self.code, self.message)
    }
}

impl From<InvalidEvent> for Rejection {
    fn from(err: InvalidEvent) -> Self {
        Self { code: err.code, message: err.to_string() }
    }
}

/// Turns a message body (and its routing key, when it came through the events
/// exchange) into a publish body, or says why it cannot be accepted.
pub fn parse_message(data: &[u8], routing_key: Option<&str>) -> Result<PublishBody, Rejection> {
    if data.len() > MAX_BODY_BYTES {
        return Err(Rejection {
            code: "payload_too_large",
            message: format!("body is {} bytes; the limit is {MAX_BODY_BYTES}", data.len()),
        });
    }
    let mut value: Value = serde_json::from_slice(data)
        .map_err(|e| Rejection { code: "invalid_json", message: format!("body is not valid JSON: {e}") })?;
    if let (Some(object), Some(key)) = (value.as_object_mut(), routing_key) {
        match object.get("event_type") {
            None => {
                object.insert("event_type".into(), Value::String(key.to_owned()));
            }
            Some(Value::String(event_type)) if event_type != key => {
                return Err(Rejection {
                    code: "event_type_mismatch",
                    message: format!("event_type {event_type:?} differs from the routing key {key:?}"),
                });
            }
            Some(_) => {}
        }
    }
    from_json_value::<PublishBody>(value).map_err(|err| match err {
        BodyError::NotJson(message) => Rejection { code: "invalid_json", message },
        BodyError::Field { field, message, missing } => Rejection {
            code: match (field.as_str(), missing) {
                ("tenant_id", _) => "missing_tenant",
                (_, true) => "missing_field",
                (_, false) => "invalid_field",
            },
            message: format!("{field}: {message}"),
        },
    })
}

/// Starts the consumer; it re-subscribes after every broker reconnect.
pub fn start(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        loop {
            let session = match state.broker.wait_session(Duration::from_secs(60)).await {
                Ok(session) => session,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let started = tokio::time::Instant::now();
            match consume(&state, &session).await {
                Ok(()) => log::warn!("event consumer stopped; re-subscribing"),
                Err(err) => log::warn!("event consumer failed error={err}; re-subscribing"),
            }
            // A consumer that ran a while was healthy: start the backoff over.
            if started.elapsed() > Duration::from_secs(30) {
                backoff = Duration::from_millis(200);
            }
            // Usually the session is gone too and the supervisor is reconnecting;
            // a channel-level failure (say, the queue was deleted) must not spin.
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    })
}

/// Consumes on a channel of its own until the channel or connection ends.
async fn consume(state: &AppState, session: &BrokerSession) -> Result<(), BrokerError> {
    let prefetch = state.config.ingest_prefetch.max(1);
    let channel = session.connection.create_channel().await?;
    channel.basic_qos(prefetch, BasicQosOptions { global: false }).await?;
    let queue = state.topology.ingest_queue();
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "webhooks-ingest".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    log::info!("consuming published events queue={queue} prefetch={prefetch}");
    // The prefetch already bounds what the broker hands us; the semaphore keeps
    // the spawned tasks to the same bound if the broker ever sends more.
    let slots = Arc::new(Semaphore::new(usize::from(prefetch)));
    let events_exchange = state.topology.events_exchange();
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery?;
        let Ok(slot) = slots.clone().acquire_owned().await else { break };
        let state = state.clone();
        let publisher = session.publisher.clone();
        let from_events_exchange = delivery.exchange.as_str() == events_exchange;
        tokio::spawn(async move {
            handle(&state, &publisher, delivery, from_events_exchange).await;
            drop(slot);
        });
    }
    close_quietly(&channel).await;
    Ok(())
}

async fn close_quietly(channel: &Channel) {
    if channel.status().connected() {
        let _ = channel.close(200, "consumer stopped".into()).await;
    }
}

/// What became of one message.
enum Outcome {
    /// Event and deliveries committed (or already known): ack.
    Accepted,
    /// Cannot ever be accepted: move to the rejected queue, then ack.
    Rejected(Rejection),
    /// Could not be made durable now: nack with requeue, after a pause.
    Retry(PublishError),
}

async fn handle(state: &AppState, publisher: &Channel, delivery: Delivery, from_events_exchange: bool) {
    let routing_key = from_events_exchange.then(|| delivery.routing_key.as_str());
    let outcome = match parse_message(&delivery.data, routing_key) {
        Err(rejection) => Outcome::Rejected(rejection),
        Ok(body) => match body.validate(&state.catalog, "amqp") {
            Err(invalid) => Outcome::Rejected(invalid.into()),
            Ok(event) => accept(state, &event).await,
        },
    };
    match outcome {
        Outcome::Accepted => ack(&delivery).await,
        Outcome::Rejected(rejection) => {
            log::warn!(
                "published event rejected reason={} routing_key={} bytes={}",
                rejection.code,
                delivery.routing_key,
                delivery.data.len()
            );
            match move_to_rejected(state, publisher, &delivery, &rejection).await {
                Ok(()) => {
                    metrics::counter!(metric_names::EVENTS_REJECTED, "reason" => rejection.code).increment(1);
                    ack(&delivery).await;
                }
                Err(err) => {
                    log::warn!("moving a rejected event failed error={err}; requeueing it");
                    requeue(&delivery).await;
                }
            }
        }
        Outcome::Retry(err) => {
            if err.is_unavailable() {
                log::warn!("database unavailable; requeueing published event error={err}");
            } else {
                log::error!("storing published event failed; requeueing it error={err}");
            }
            metrics::counter!(metric_names::AMQP_EVENTS_REQUEUED).increment(1);
            requeue(&delivery).await;
        }
    }
}

/// Stores the event and its deliveries (in a shared batch); once committed, the
/// batcher has handed the new deliveries to the dispatch queue, whatever
/// happens to the ack (a redelivered message finds the event and creates nothing).
async fn accept(state: &AppState, event: &EventToPublish) -> Outcome {
    match state.fanout.publish(event).await {
        Ok(result) => {
            if result.is_new {
                metrics::counter!(metric_names::EVENTS_ACCEPTED, "source" => "amqp", "event_type" => event.event_type.clone())
                    .increment(1);
                metrics::counter!(metric_names::DELIVERIES_CREATED).increment(result.created.len() as u64);
            }
            Outcome::Accepted
        }
        Err(err) => Outcome::Retry(err),
    }
}

/// Publishes a copy (same properties, headers and body, plus the reason) to the
/// rejected queue and waits for the broker's confirm.
async fn move_to_rejected(
    state: &AppState,
    publisher: &Channel,
    delivery: &Delivery,
    rejection: &Rejection,
) -> Result<(), BrokerError> {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    // Every string header is a LongString: RabbitMQ mishandles ShortString values.
    headers.insert(REJECTION_REASON_HEADER.into(), long_string(&rejection.header_value()));
    headers.insert(REJECTION_CODE_HEADER.into(), long_string(rejection.code));
    headers.insert("x-original-exchange".into(), long_string(delivery.exchange.as_str()));
    headers.insert("x-original-routing-key".into(), long_string(delivery.routing_key.as_str()));
    headers.insert("x-rejected-at".into(), AMQPValue::LongLongInt(chrono::Utc::now().timestamp()));
    let properties = delivery.properties.clone().with_headers(headers).with_delivery_mode(2);
    let queue = state.topology.rejected_queue();
    publish_confirmed(publisher, "", &queue, &delivery.data, properties).await
}

async fn ack(delivery: &Delivery) {
    if let Err(err) = delivery.ack(BasicAckOptions::default()).await {
        // The channel is gone; the broker redelivers the message and the
        // repeat is recognised by its event_id (or rejected again).
        log::warn!("ack failed delivery_tag={} error={err}", delivery.delivery_tag);
    }
}

async fn requeue(delivery: &Delivery) {
    tokio::time::sleep(REQUEUE_DELAY).await;
    if let Err(err) = delivery.nack(BasicNackOptions { requeue: true, multiple: false }).await {
        log::warn!("nack failed delivery_tag={} error={err}", delivery.delivery_tag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(body: &str, routing_key: Option<&str>) -> &'static str {
        match parse_message(body.as_bytes(), routing_key) {
            Err(rejection) => rejection.code,
            Ok(body) => panic!("expected a rejection, got {body:?}"),
        }
    }

    #[test]
    fn bad_messages_get_stable_codes() {
        assert_eq!(code_of("{nope", None), "invalid_json");
        assert_eq!(code_of(r#"{"event_type": "invoice.created", "event_data": {}}"#, None), "missing_tenant");
        assert_eq!(
            code_of(r#"{"event_type": "invoice.created", "event_data": {}, "tenant_id": 3}"#, None),
            "missing_tenant"
        );
        assert_eq!(code_of(r#"{"event_type": "invoice.created", "tenant_id": "t"}"#, None), "missing_field");
        assert_eq!(code_of(r#"{"event_type": 5, "event_data": {}, "tenant_id": "t"}"#, None), "invalid_field");
        assert_eq!(code_of(r#"{"event_data": {}, "tenant_id": "t"}"#, None), "missing_field");
        assert_eq!(code_of("[1]", Some("invoice.created")), "invalid_field");
        assert_eq!(
            code_of(r#"{"event_type": "invoice.paid", "event_data": {}, "tenant_id": "t"}"#, Some("invoice.created")),
            "event_type_mismatch"
        );
        let big = format!(r#"{{"event_data": {{"x": "{}"}}}}"#, "x".repeat(MAX_BODY_BYTES));
        assert_eq!(code_of(&big, None), "payload_too_large");
    }

    #[test]
    fn the_routing_key_supplies_a_missing_event_type() {
        let body = parse_message(br#"{"event_data": {}, "tenant_id": "t"}"#, Some("invoice.created")).expect("valid");
        assert_eq!(body.event_type, "invoice.created");
        let body = parse_message(
            br#"{"event_type": "invoice.created", "event_data": {}, "tenant_id": "t"}"#,
            Some("invoice.created"),
        )
        .expect("valid");
        assert_eq!(body.event_type, "invoice.created");
    }

    #[test]
    fn the_reason_header_holds_code_and_message() {
        let rejection = Rejection { code: "invalid_json", message: "body is not valid JSON".into() };
        assert_eq!(rejection.header_value(), "invalid_json: body is not valid JSON");
    }
}

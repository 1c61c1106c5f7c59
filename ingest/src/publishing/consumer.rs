//! Publishing over AMQP: consumes `{p}.events.ingest` (bound to the topic
//! exchange `{p}.events` with `#`) and fans each event out exactly like
//! `POST /events`.
//!
//! A message is acked only once its event and deliveries are committed, or
//! once a copy is confirmed on `{p}.events.rejected` with the reason in
//! `x-rejection-reason`. While the database is unreachable the message waits
//! in ingest, unacked, and is stored once it is back; a message the database
//! refuses is tried [`MAX_STORAGE_TRIES`] times, then rejected with code
//! `storage_failed` (see [`super::storage_tries`]). Nothing is ever dropped.
//!
//! Idempotency: a body without `event_id` takes the AMQP `message_id`
//! property as its event id, so a redelivery after the commit (lost ack,
//! channel drop, failover) creates nothing new. A message with neither gets a
//! fresh id and is counted in `webhooks_ingest_events_without_id_total`.
//!
//! Memory: every message takes its size from the byte budget shared with
//! HTTP publishing before it is handled; while the budget is spent the
//! consumer takes no further message (the broker's prefetch holds the rest).
//! A message over 256 KiB is moved to the rejected queue at once, one at a
//! time, without parsing. lapin hands a message over only once its whole body
//! is in memory, so the size cannot be refused from the header: instead, after
//! an oversized message the channel's prefetch drops to 1 until none has come
//! for [`OVERSIZED_COOL_DOWN`], so a stream of them is held one at a time.
//! Production brokers should also cap `max_message_size` (see the README).
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
use tokio::sync::{watch, Semaphore};

use super::{
    body::{is_valid_event_id, EventToPublish, InvalidEvent, PublishBody},
    budget::BudgetGuard,
    error::PublishError,
    storage_tries::{self, MAX_STORAGE_TRIES},
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
/// How long a message waits before it is put back after the database refused
/// it, so a poison message does not spin.
const REQUEUE_DELAY: Duration = Duration::from_secs(1);
/// How long after the last oversized message the consumer keeps taking one
/// message at a time (see [`narrow_prefetch`]).
const OVERSIZED_COOL_DOWN: Duration = Duration::from_secs(10);
/// Longest pause between two tries while the database is unreachable.
const OUTAGE_MAX_PAUSE: Duration = Duration::from_secs(5);

/// Why a message cannot be accepted: a stable code and a human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// `invalid_json`, `payload_too_large`, `missing_field`, `invalid_field`,
    /// `event_type_mismatch`, `invalid_message_id`, `storage_failed`, or an
    /// [`InvalidEvent`] code (`unknown_event_type`, `reserved_event_type`,
    /// `missing_tenant`, `invalid_event_data`, `invalid_metadata`,
    /// `invalid_event_id`), or `event_id_conflict` (an `event_id` published
    /// before with another body).
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

/// How long a stopping consumer waits for the messages it is handling.
const STOP_DRAIN: Duration = Duration::from_secs(10);

/// Starts the consumer; it re-subscribes after every broker reconnect, until
/// `stop` turns true: then it takes no new message, lets those in hand finish
/// (up to [`STOP_DRAIN`]) and closes its channel, which returns any unacked
/// message to the queue.
pub fn start(state: AppState, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        loop {
            let session = tokio::select! {
                _ = super::stopped(&mut stop) => return,
                session = state.broker.wait_session(Duration::from_secs(60)) => match session {
                    Ok(session) => session,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let started = tokio::time::Instant::now();
            let result = consume(&state, &session, stop.clone()).await;
            if *stop.borrow() {
                return;
            }
            match result {
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

/// Consumes on a channel of its own until the channel or connection ends, or
/// `stop` turns true.
async fn consume(
    state: &AppState,
    session: &BrokerSession,
    mut stop: watch::Receiver<bool>,
) -> Result<(), BrokerError> {
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
    // Set after an oversized message: the channel's prefetch is 1 until then.
    let mut throttled_until: Option<tokio::time::Instant> = None;
    loop {
        let delivery = tokio::select! {
            biased;
            _ = super::stopped(&mut stop) => {
                // Let the messages in hand be acked (or requeued) before closing.
                let permits = u32::from(prefetch);
                let _ = tokio::time::timeout(STOP_DRAIN, slots.acquire_many(permits)).await;
                break;
            }
            next = consumer.next() => match next {
                Some(delivery) => delivery?,
                None => break,
            },
        };
        if delivery.data.len() > MAX_BODY_BYTES {
            // lapin hands a message over only once all of it is in memory, so
            // the prefetch is what bounds how many oversized ones arrive at
            // once: while they keep coming, take them one at a time.
            if throttled_until.is_none() {
                metrics::counter!(metric_names::AMQP_OVERSIZED_THROTTLES).increment(1);
                narrow_prefetch(&channel, 1).await;
            }
            throttled_until = Some(tokio::time::Instant::now() + OVERSIZED_COOL_DOWN);
            // Handled here, one at a time: never parsed, never held twice.
            reject_oversized(state, &session.publisher, delivery).await;
            continue;
        }
        if throttled_until.is_some_and(|until| until <= tokio::time::Instant::now()) {
            throttled_until = None;
            narrow_prefetch(&channel, prefetch).await;
        }
        // Room in the byte budget first: while it is spent, no further message is taken.
        let budget = state.budget.take(delivery.data.len()).await;
        let Ok(slot) = slots.clone().acquire_owned().await else { break };
        let state = state.clone();
        let publisher = session.publisher.clone();
        let channel = channel.clone();
        tokio::spawn(async move {
            handle(&state, &publisher, &channel, delivery, budget).await;
            drop(slot);
        });
    }
    close_quietly(&channel).await;
    Ok(())
}

/// Sets the channel-wide prefetch (RabbitMQ applies it at once, beside the
/// consumer's own), so fewer (or, restored, as many) messages are in flight.
async fn narrow_prefetch(channel: &Channel, count: u16) {
    if let Err(err) = channel.basic_qos(count, BasicQosOptions { global: true }).await {
        log::warn!("changing the events channel's prefetch failed prefetch={count} error={err}");
    } else {
        log::info!("events channel prefetch set prefetch={count}");
    }
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
    /// The database refused it: try again later (counted), or reject it at the limit.
    Refused(PublishError),
    /// Not handled now (ingest is stopping, or the channel went away): requeue.
    Abandoned,
}

/// Parses, validates and stores one message, then settles it. `budget` holds
/// the message's bytes until it is settled.
async fn handle(state: &AppState, publisher: &Channel, channel: &Channel, delivery: Delivery, budget: BudgetGuard) {
    let (exchange, routing_key) = storage_tries::original_routing(&delivery);
    let routing_key = (exchange == state.topology.events_exchange()).then_some(routing_key);
    let message_id = delivery.properties.message_id().as_ref().map(|id| id.as_str().to_owned());
    let outcome = match parse_message(&delivery.data, routing_key.as_deref()) {
        Err(rejection) => Outcome::Rejected(rejection),
        Ok(body) => match with_message_id(body, message_id) {
            Err(rejection) => Outcome::Rejected(rejection),
            Ok(body) => match body.validate(&state.catalog, "amqp") {
                Err(invalid) => Outcome::Rejected(invalid.into()),
                Ok(event) => accept(state, channel, event).await,
            },
        },
    };
    settle(state, publisher, &delivery, outcome).await;
    drop(budget);
}

/// The AMQP `message_id` is the event id when the body has none. Neither:
/// a fresh id (made by validation) and a count in the metric.
fn with_message_id(mut body: PublishBody, message_id: Option<String>) -> Result<PublishBody, Rejection> {
    if body.event_id.is_some() {
        return Ok(body);
    }
    match message_id {
        Some(id) if is_valid_event_id(&id) => body.event_id = Some(id),
        Some(id) => {
            return Err(Rejection {
                code: "invalid_message_id",
                message: format!(
                    "the body has no event_id and the message_id property {id:?} is not 1 to 128 characters of \
                     A-Z a-z 0-9 _ . : -"
                ),
            })
        }
        None => metrics::counter!(metric_names::EVENTS_WITHOUT_ID).increment(1),
    }
    Ok(body)
}

async fn settle(state: &AppState, publisher: &Channel, delivery: &Delivery, outcome: Outcome) {
    match outcome {
        Outcome::Accepted => ack(delivery).await,
        Outcome::Rejected(rejection) => reject(state, publisher, delivery, &rejection).await,
        Outcome::Refused(err) => {
            let tries = storage_tries::earlier_tries(delivery) + 1;
            if tries >= MAX_STORAGE_TRIES {
                log::error!("published event refused by the database {tries} times; rejecting it error={err}");
                let rejection = Rejection {
                    code: "storage_failed",
                    message: format!("storing the event failed {tries} times: {err}"),
                };
                return reject(state, publisher, delivery, &rejection).await;
            }
            log::error!("storing published event failed; trying again later tries={tries} error={err}");
            metrics::counter!(metric_names::AMQP_EVENTS_REQUEUED).increment(1);
            tokio::time::sleep(REQUEUE_DELAY).await;
            match storage_tries::put_back(publisher, &state.topology, delivery, tries).await {
                Ok(()) => ack(delivery).await,
                Err(err) => {
                    log::warn!("putting a failed event back failed error={err}; requeueing it");
                    requeue(delivery).await;
                }
            }
        }
        Outcome::Abandoned => requeue(delivery).await,
    }
}

/// Moves the message to the rejected queue with its reason, then acks it
/// (requeues it if the move fails).
async fn reject(state: &AppState, publisher: &Channel, delivery: &Delivery, rejection: &Rejection) {
    log::warn!(
        "published event rejected reason={} routing_key={} bytes={}",
        rejection.code,
        delivery.routing_key,
        delivery.data.len()
    );
    match move_to_rejected(state, publisher, delivery, rejection).await {
        Ok(()) => {
            metrics::counter!(metric_names::EVENTS_REJECTED, "reason" => rejection.code).increment(1);
            ack(delivery).await;
        }
        Err(err) => {
            log::warn!("moving a rejected event failed error={err}; requeueing it");
            requeue(delivery).await;
        }
    }
}

/// A message over 256 KiB: moved to the rejected queue unparsed.
async fn reject_oversized(state: &AppState, publisher: &Channel, delivery: Delivery) {
    let rejection = Rejection {
        code: "payload_too_large",
        message: format!("body is {} bytes; the limit is {MAX_BODY_BYTES}", delivery.data.len()),
    };
    reject(state, publisher, &delivery, &rejection).await;
}

/// Stores the event and its deliveries (in a shared batch); once committed, the
/// batcher has handed the new deliveries to the dispatch queue, whatever
/// happens to the ack (a redelivered message finds the event and creates
/// nothing). While the database is unreachable it tries again, with growing
/// pauses, for as long as the consumer's channel lives.
async fn accept(state: &AppState, channel: &Channel, event: EventToPublish) -> Outcome {
    let prepared = match state.fanout.prepare(&event) {
        Ok(prepared) => prepared,
        Err(err) => return Outcome::Refused(err),
    };
    let event_type = event.event_type;
    // The parsed data is not needed any more: only the envelope is kept.
    drop(event.data);
    let mut pause = Duration::from_millis(250);
    loop {
        match state.fanout.submit(&prepared).await {
            Ok(result) => {
                if result.is_new {
                    metrics::counter!(metric_names::EVENTS_ACCEPTED, "source" => "amqp", "event_type" => event_type)
                        .increment(1);
                    metrics::counter!(metric_names::DELIVERIES_CREATED).increment(result.delivery_count as u64);
                }
                return Outcome::Accepted;
            }
            Err(PublishError::Stopped) => return Outcome::Abandoned,
            Err(err) if err.is_unavailable() => {
                if !channel.status().connected() {
                    return Outcome::Abandoned;
                }
                log::warn!(
                    "database unavailable; holding a published event error={err} retry_in_ms={}",
                    pause.as_millis()
                );
                metrics::counter!(metric_names::AMQP_OUTAGE_RETRIES).increment(1);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(OUTAGE_MAX_PAUSE);
            }
            // Never acceptable as sent: retrying would not change the answer.
            Err(err @ PublishError::EventIdReused { .. }) => {
                return Outcome::Rejected(Rejection { code: "event_id_conflict", message: err.to_string() })
            }
            Err(err) => return Outcome::Refused(err),
        }
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
    // The original exchange and routing key, also for a copy we put back.
    let mut headers = storage_tries::headers_with_origin(delivery);
    // Every string header is a LongString: RabbitMQ mishandles ShortString values.
    headers.insert(REJECTION_REASON_HEADER.into(), long_string(&rejection.header_value()));
    headers.insert(REJECTION_CODE_HEADER.into(), long_string(rejection.code));
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

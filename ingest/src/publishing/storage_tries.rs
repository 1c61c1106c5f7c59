//! Counting how often a published AMQP event failed to be stored, so a message
//! the database always refuses ("poison") ends in `{p}.events.rejected` with
//! code `storage_failed` instead of cycling forever.
//!
//! A classic queue tells a requeued message only that it was `redelivered`,
//! never how often. So a failed message is not requeued: a copy goes to the
//! tail of `{p}.events.ingest` (default exchange, with confirm) carrying the
//! count in header `x-ingest-tries` and its original routing, and only then is
//! the original acked. A quorum queue also counts deliveries itself
//! (`x-delivery-count`, which also covers a message whose handling crashed
//! ingest); the larger of both counts. Outages (database unreachable) are not
//! counted: such a message waits in ingest, unacked, until the database is back.

use lapin::{
    message::Delivery,
    types::{AMQPValue, FieldTable},
    Channel,
};
use shared::amqp::{long_string, publish_confirmed, BrokerError, Topology};

/// Failed tries after which a message is moved to `{p}.events.rejected`.
pub const MAX_STORAGE_TRIES: i64 = 5;
/// Our count of failed tries, on the copy we put back on the queue.
pub const TRIES_HEADER: &str = "x-ingest-tries";
/// The quorum queue's own count of earlier deliveries.
const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";
/// Where the message was first published (kept across our copies).
pub const ORIGINAL_EXCHANGE_HEADER: &str = "x-original-exchange";
/// Its routing key there (the event type, for messages of `{p}.events`).
pub const ORIGINAL_ROUTING_KEY_HEADER: &str = "x-original-routing-key";

fn header<'a>(delivery: &'a Delivery, name: &str) -> Option<&'a AMQPValue> {
    delivery.properties.headers().as_ref()?.inner().get(name)
}

fn as_count(value: &AMQPValue) -> Option<i64> {
    Some(match value {
        AMQPValue::ShortShortInt(n) => i64::from(*n),
        AMQPValue::ShortShortUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::LongLongInt(n) => *n,
        _ => return None,
    })
}

fn as_text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// Failed tries before this delivery of the message.
pub fn earlier_tries(delivery: &Delivery) -> i64 {
    let ours = header(delivery, TRIES_HEADER).and_then(as_count).unwrap_or(0);
    let brokers = header(delivery, DELIVERY_COUNT_HEADER).and_then(as_count).unwrap_or(0);
    ours.max(brokers).max(0)
}

/// The exchange and routing key the message was first published with: its own
/// for an original, the recorded ones for a copy we put back.
pub fn original_routing(delivery: &Delivery) -> (String, String) {
    let exchange = header(delivery, ORIGINAL_EXCHANGE_HEADER).and_then(as_text);
    let routing_key = header(delivery, ORIGINAL_ROUTING_KEY_HEADER).and_then(as_text);
    match (exchange, routing_key) {
        (Some(exchange), Some(routing_key)) if delivery.exchange.as_str().is_empty() => (exchange, routing_key),
        _ => (delivery.exchange.as_str().to_owned(), delivery.routing_key.as_str().to_owned()),
    }
}

/// The message's headers with its original routing recorded (so a copy keeps it).
pub fn headers_with_origin(delivery: &Delivery) -> FieldTable {
    let (exchange, routing_key) = original_routing(delivery);
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert(ORIGINAL_EXCHANGE_HEADER.into(), long_string(&exchange));
    headers.insert(ORIGINAL_ROUTING_KEY_HEADER.into(), long_string(&routing_key));
    headers
}

/// Puts a copy of the message at the tail of the ingest queue with `tries`
/// recorded, and waits for the broker's confirm (then the original may be acked).
pub async fn put_back(
    publisher: &Channel,
    topology: &Topology,
    delivery: &Delivery,
    tries: i64,
) -> Result<(), BrokerError> {
    let mut headers = headers_with_origin(delivery);
    headers.insert(TRIES_HEADER.into(), AMQPValue::LongLongInt(tries));
    let properties = delivery.properties.clone().with_headers(headers).with_delivery_mode(2);
    publish_confirmed(publisher, "", &topology.ingest_queue(), &delivery.data, properties).await
}

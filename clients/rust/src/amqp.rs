//! The AMQP publishing primitives: how an event is put on the broker. The
//! services re-use them (`shared::amqp`), so a module and ingest publish the
//! same way.

use std::time::Duration;

use lapin::{
    options::{BasicPublishOptions, ExchangeDeclareOptions},
    types::{FieldTable, ShortString},
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
};

use crate::Error;

/// How long a connect, declare or publisher confirm may take before we give up on it.
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// Declares the durable topic exchange modules publish events to. Ingest
/// declares it with the same arguments, so either side may come first.
pub async fn declare_events_exchange(channel: &Channel, exchange: &str) -> Result<(), Error> {
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    channel.exchange_declare(exchange.into(), ExchangeKind::Topic, durable, FieldTable::default()).await?;
    Ok(())
}

/// Persistent JSON message properties.
pub fn persistent_json() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2).with_content_type(ShortString::from("application/json"))
}

/// Publishes one message and waits for the broker's confirm (the channel must
/// be in confirm mode). `mandatory`, so an unroutable message is an error, not a loss.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), Error> {
    let confirm = tokio::time::timeout(BROKER_TIMEOUT, async {
        channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                body,
                properties,
            )
            .await?
            .await
    })
    .await
    .map_err(|_| Error::Timeout)??;
    check_confirmation(confirm)
}

/// Turns a publisher confirm into success or a typed error.
pub fn check_confirmation(confirm: lapin::Confirmation) -> Result<(), Error> {
    if confirm.is_nack() {
        return Err(Error::Nacked);
    }
    if confirm.take_message().is_some() {
        return Err(Error::Unroutable);
    }
    Ok(())
}

/// Connects to the first reachable of `urls` (comma-separated nodes of one
/// cluster), each attempt bounded by [`BROKER_TIMEOUT`] (lapin's connect can
/// hang on a half-open peer).
pub async fn connect_any(urls: &str) -> Result<Connection, Error> {
    let mut last = Error::Disconnected;
    for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        match tokio::time::timeout(BROKER_TIMEOUT, Connection::connect(url, ConnectionProperties::default())).await {
            Ok(Ok(connection)) => return Ok(connection),
            Ok(Err(err)) => last = Error::Amqp(err),
            Err(_) => last = Error::Timeout,
        }
    }
    Err(last)
}

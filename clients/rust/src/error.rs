//! Why a publish failed.

use std::fmt;

/// Why an event could not be handed to the broker.
#[derive(Debug)]
pub enum Error {
    /// Not connected to the broker.
    Disconnected,
    /// A connect, declare or publisher confirm took longer than [`crate::BROKER_TIMEOUT`].
    Timeout,
    /// The broker refused the message (nack).
    Nacked,
    /// No queue is bound for the event type (is `webhooks-ingest` running?).
    Unroutable,
    /// The event is invalid and would be refused (e.g. a `webhook.*` type or a malformed event id).
    Invalid(String),
    /// An AMQP protocol or connection error.
    Amqp(lapin::Error),
    /// The event could not be encoded as JSON.
    Encode(serde_json::Error),
}

impl Error {
    /// Whether trying again later (with the same event id) may succeed.
    pub fn is_transient(&self) -> bool {
        !matches!(self, Self::Invalid(_) | Self::Encode(_))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Disconnected => f.write_str("not connected to the broker"),
            Self::Timeout => f.write_str("broker operation timed out"),
            Self::Nacked => f.write_str("the broker refused the message (nack)"),
            Self::Unroutable => f.write_str("the message could not be routed to any queue"),
            Self::Invalid(reason) => write!(f, "invalid event: {reason}"),
            Self::Amqp(err) => write!(f, "broker error: {err}"),
            Self::Encode(err) => write!(f, "message could not be encoded: {err}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Amqp(err) => Some(err),
            Self::Encode(err) => Some(err),
            _ => None,
        }
    }
}

impl From<lapin::Error> for Error {
    fn from(err: lapin::Error) -> Self {
        Self::Amqp(err)
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Self::Encode(err)
    }
}

//! The publish body shared by HTTP and AMQP, and its validation.

use serde::Deserialize;
use serde_json::Value;
use shared::catalog::Catalog;

use crate::{domain::TenantId, error::ApiError};

/// Largest `event_id`, in characters.
const MAX_ID_LEN: usize = 128;

/// An event accepted for fan-out (already validated).
#[derive(Debug, Clone)]
pub struct EventToPublish {
    pub event_id: String,
    pub event_type: String,
    pub tenant_id: String,
    pub data: Value,
    pub metadata: Value,
    /// `http`, `amqp` or `test`, for the record and metrics.
    pub source: &'static str,
}

/// What a module publishes, over HTTP or AMQP.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct PublishBody {
    /// A catalog event type, e.g. `invoice.created`.
    pub event_type: String,
    /// Event-specific data (a JSON object).
    #[schema(value_type = Object)]
    pub event_data: Value,
    pub tenant_id: String,
    /// Idempotency key: 1–128 of `A-Z a-z 0-9 _ . : -`; made (`evt_` + UUID) when absent.
    #[serde(default)]
    pub event_id: Option<String>,
    /// Optional metadata (a JSON object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

/// Why a publish body cannot be accepted: the field and a reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidEvent {
    pub field: &'static str,
    pub message: String,
    /// A short stable code (AMQP rejections carry it in `x-rejection-reason`).
    pub code: &'static str,
}

impl From<InvalidEvent> for ApiError {
    fn from(err: InvalidEvent) -> Self {
        ApiError::validation(err.field, err.message)
    }
}

/// Whether `id` is 1–128 characters of `A-Z a-z 0-9 _ . : -`.
pub fn is_valid_event_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

impl PublishBody {
    /// Checks every field and builds the event to fan out.
    pub fn validate(self, catalog: &Catalog, source: &'static str) -> Result<EventToPublish, InvalidEvent> {
        if shared::catalog::is_reserved(&self.event_type) {
            return Err(InvalidEvent {
                field: "event_type",
                message: format!(
                    "{:?}: `{}*` event types are sent only by the webhook service itself",
                    self.event_type,
                    shared::catalog::RESERVED_PREFIX
                ),
                code: "reserved_event_type",
            });
        }
        if !catalog.contains(&self.event_type) {
            return Err(InvalidEvent {
                field: "event_type",
                message: format!("unknown event type {:?}; see GET /api/v1/webhooks/events", self.event_type),
                code: "unknown_event_type",
            });
        }
        let tenant_id = TenantId::parse(&self.tenant_id).map_err(|invalid| InvalidEvent {
            field: "tenant_id",
            message: invalid.message,
            code: "missing_tenant",
        })?;
        if !self.event_data.is_object() {
            return Err(InvalidEvent {
                field: "event_data",
                message: "must be a JSON object".into(),
                code: "invalid_event_data",
            });
        }
        let metadata = match self.metadata {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(Value::Object(map)) => Value::Object(map),
            Some(_) => {
                return Err(InvalidEvent {
                    field: "metadata",
                    message: "must be a JSON object".into(),
                    code: "invalid_metadata",
                })
            }
        };
        let event_id = match self.event_id {
            Some(id) if is_valid_event_id(&id) => id,
            Some(_) => {
                return Err(InvalidEvent {
                    field: "event_id",
                    message: "must be 1 to 128 characters of A-Z a-z 0-9 _ . : -".into(),
                    code: "invalid_event_id",
                })
            }
            None => format!("evt_{}", uuid::Uuid::now_v7().simple()),
        };
        Ok(EventToPublish {
            event_id,
            event_type: self.event_type,
            tenant_id: tenant_id.into_string(),
            data: self.event_data,
            metadata,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_follow_the_contract_alphabet() {
        assert!(is_valid_event_id("evt_abc-1.2:3"));
        assert!(is_valid_event_id(&"a".repeat(128)));
        assert!(!is_valid_event_id(""));
        assert!(!is_valid_event_id(&"a".repeat(129)));
        assert!(!is_valid_event_id("evt 1"));
        assert!(!is_valid_event_id("evt/1"));
        assert!(!is_valid_event_id("évt"));
    }
}

//! Operational events: what we tell a tenant about its own webhooks
//! (`webhook.subscription.disabled`, `webhook.delivery.failed`), delivered
//! through the same pipeline as any event to the subscriptions that ask for
//! them (`webhook.*` or the exact type; `*` does not match them).
//!
//! [`emit`] runs inside the caller's transaction, the one that makes the state
//! change: the event row and its deliveries commit with it or not at all (no
//! dual write). The deliveries are left `enqueued = false`, so the outbox
//! relay queues them. Callers never emit for a delivery of an operational
//! event, so one can never cause another.

use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;
use serde::Serialize;

use crate::{
    catalog,
    envelope::{format_timestamp, Envelope},
    fanout::{self, EventRow, PATTERN_SEPARATOR},
};

/// `webhook.subscription.disabled`.
pub const SUBSCRIPTION_DISABLED: &str = "webhook.subscription.disabled";
/// `webhook.delivery.failed`.
pub const DELIVERY_FAILED: &str = "webhook.delivery.failed";

/// An operational event and its `data`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum OperationalEvent {
    /// A 410 or auto-disable disabled a subscription.
    SubscriptionDisabled { subscription_id: uuid::Uuid, url: String, reason: String, disabled_at: String },
    /// A delivery ended `failed` (no retries left).
    DeliveryFailed {
        subscription_id: uuid::Uuid,
        delivery_id: uuid::Uuid,
        event_id: String,
        event_type: String,
        attempts: i32,
        last_status_code: Option<i32>,
        last_error: Option<String>,
    },
}

impl OperationalEvent {
    /// A `webhook.subscription.disabled` at `disabled_at`.
    pub fn subscription_disabled(
        subscription_id: uuid::Uuid,
        url: &str,
        reason: &str,
        disabled_at: DateTime<Utc>,
    ) -> Self {
        Self::SubscriptionDisabled {
            subscription_id,
            url: url.to_owned(),
            reason: reason.to_owned(),
            disabled_at: format_timestamp(disabled_at),
        }
    }

    /// The catalog type.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::SubscriptionDisabled { .. } => SUBSCRIPTION_DISABLED,
            Self::DeliveryFailed { .. } => DELIVERY_FAILED,
        }
    }
}

/// Why an operational event could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
    #[error("serializing an operational event failed: {0}")]
    Json(#[from] serde_json::Error),
}

impl From<EmitError> for diesel::result::Error {
    /// So `?` works inside a diesel transaction (which rolls back on it).
    fn from(err: EmitError) -> Self {
        match err {
            EmitError::Db(err) => err,
            EmitError::Json(err) => diesel::result::Error::SerializationError(Box::new(err)),
        }
    }
}

/// Stores the event for `tenant_id` with a delivery to each of its live
/// subscriptions that asked for the type; returns how many. Call it in the
/// transaction of the state change it reports.
pub async fn emit(conn: &mut AsyncPgConnection, tenant_id: &str, event: &OperationalEvent) -> Result<usize, EmitError> {
    let event_ref = uuid::Uuid::now_v7();
    let event_id = format!("evt_{}", event_ref.simple());
    let event_type = event.event_type();
    let data = serde_json::to_value(event)?;
    let metadata = serde_json::json!({});
    let timestamp = format_timestamp(Utc::now());
    let payload =
        Envelope { id: &event_id, event_type, timestamp: &timestamp, tenant_id, data: &data, metadata: &metadata }
            .to_body()?;
    let row = EventRow {
        event_ref,
        tenant_id: tenant_id.to_owned(),
        event_id,
        event_type: event_type.to_owned(),
        payload,
        source: "operational",
        patterns: catalog::operational_patterns(event_type).join(PATTERN_SEPARATOR),
        only_subscription: None,
        body_hash: fanout::body_hash(event_type, &data, &metadata),
    };
    let stored = fanout::store_events(conn, &[&row]).await?;
    let deliveries = stored.iter().filter(|s| s.delivery_id.is_some()).count();
    log::info!("operational event stored tenant_id={tenant_id} event_type={event_type} deliveries={deliveries}");
    Ok(deliveries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_has_the_contract_fields() {
        let at = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z").expect("time").to_utc();
        let id = uuid::Uuid::nil();
        let disabled = OperationalEvent::subscription_disabled(id, "https://x.example/h", "gone", at);
        assert_eq!(
            serde_json::to_value(&disabled).expect("json"),
            serde_json::json!({"subscription_id": id, "url": "https://x.example/h", "reason": "gone",
                               "disabled_at": "2026-12-01T10:00:00Z"})
        );
        let failed = OperationalEvent::DeliveryFailed {
            subscription_id: id,
            delivery_id: id,
            event_id: "evt_1".into(),
            event_type: "invoice.created".into(),
            attempts: 4,
            last_status_code: Some(500),
            last_error: Some("endpoint answered HTTP 500".into()),
        };
        let data = serde_json::to_value(&failed).expect("json");
        let mut keys: Vec<&str> = data.as_object().expect("object").keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["attempts", "delivery_id", "event_id", "event_type", "last_error", "last_status_code", "subscription_id"]
        );
        assert_eq!(failed.event_type(), DELIVERY_FAILED);
    }
}

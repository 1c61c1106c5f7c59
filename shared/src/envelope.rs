//! What a subscriber receives: the envelope body, serialized once at ingest
//! and stored, so every attempt sends the same bytes.

use serde::Serialize;

/// The JSON body of every webhook request, fields in the documented order.
#[derive(Debug, Serialize)]
pub struct Envelope<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    /// RFC 3339 UTC; also the `X-Webhook-Timestamp` header.
    pub timestamp: &'a str,
    pub tenant_id: &'a str,
    pub data: &'a serde_json::Value,
    pub metadata: &'a serde_json::Value,
}

impl Envelope<'_> {
    /// The exact body bytes.
    pub fn to_body(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}

/// The envelope's timestamp format: RFC 3339, UTC, second precision, `Z`.
pub fn format_timestamp(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Reads back the `timestamp` of a stored envelope (for `X-Webhook-Timestamp`).
pub fn timestamp_of(body: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Only {
        timestamp: String,
    }
    serde_json::from_str::<Only>(body).ok().map(|o| o.timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_contract_fields_in_order() {
        let data = serde_json::json!({"invoice_id": "inv_1", "amount": 10.5});
        let meta = serde_json::json!({});
        let at = chrono::DateTime::parse_from_rfc3339("2025-09-30T12:00:00Z").expect("ts").to_utc();
        let ts = format_timestamp(at);
        let body = Envelope {
            id: "evt_1",
            event_type: "invoice.created",
            timestamp: &ts,
            tenant_id: "t1",
            data: &data,
            metadata: &meta,
        }
        .to_body()
        .expect("json");
        assert_eq!(
            body,
            r#"{"id":"evt_1","type":"invoice.created","timestamp":"2025-09-30T12:00:00Z","tenant_id":"t1","data":{"amount":10.5,"invoice_id":"inv_1"},"metadata":{}}"#
        );
        assert_eq!(timestamp_of(&body).as_deref(), Some("2025-09-30T12:00:00Z"));
    }
}

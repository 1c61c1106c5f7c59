//! A subscription's custom headers at rest and on display.
//!
//! They usually carry the subscriber's credentials (`Authorization`), so each
//! value is sealed under `WEBHOOK_SECRET_KEY` (like signing secrets), bound to
//! its subscription and header name; the names stay readable. Responses show
//! the values of sensitive names as [`MASK`].
//!
//! Rows written before values were sealed (`headers_encrypted` false) hold
//! clear values: [`open`] reads them as they are, and ingest seals them at
//! start ([`crate::models::subscription::seal_clear_headers`]).

use std::collections::BTreeMap;

use base64::{engine::general_purpose::STANDARD, Engine};
use serde_json::Value;

use crate::crypto::{CryptoError, SecretBox};

/// What a response shows instead of a sensitive header's value; a PATCH that
/// sends it back keeps the stored value.
pub const MASK: &str = "***";

/// A header whose name contains one of these (any case) is sensitive.
const SENSITIVE_NAME_PARTS: &[&str] = &["authorization", "token", "secret", "key", "cookie", "password"];

/// Whether a header's value is masked in responses.
pub fn is_sensitive(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SENSITIVE_NAME_PARTS.iter().any(|part| lower.contains(part))
}

/// The associated data of one value: it opens only for this subscription and name.
fn context(subscription_id: &uuid::Uuid, name: &str) -> Vec<u8> {
    let mut context = b"subscription-header\0".to_vec();
    context.extend_from_slice(subscription_id.as_bytes());
    context.extend_from_slice(name.as_bytes());
    context
}

/// The JSON object stored in `subscriptions.headers`: each value sealed, base64.
pub fn seal(
    secrets: &SecretBox,
    subscription_id: &uuid::Uuid,
    headers: &BTreeMap<String, String>,
) -> Result<Value, CryptoError> {
    let mut sealed = serde_json::Map::with_capacity(headers.len());
    for (name, value) in headers {
        let bytes = secrets.seal_bound(&context(subscription_id, name), value)?;
        sealed.insert(name.clone(), Value::String(STANDARD.encode(bytes)));
    }
    Ok(Value::Object(sealed))
}

/// The clear headers of what [`seal`] stored; `encrypted` false reads a row
/// written before values were sealed. A value that is not a string is skipped
/// (the API never stores one).
pub fn open(
    secrets: &SecretBox,
    subscription_id: &uuid::Uuid,
    stored: &Value,
    encrypted: bool,
) -> Result<BTreeMap<String, String>, CryptoError> {
    read(stored, |name, value| open_value(secrets, subscription_id, name, value, encrypted))
}

/// Headers as a response shows them: sensitive values replaced by [`MASK`]
/// (those are not even decrypted).
pub fn masked(
    secrets: &SecretBox,
    subscription_id: &uuid::Uuid,
    stored: &Value,
    encrypted: bool,
) -> Result<BTreeMap<String, String>, CryptoError> {
    read(stored, |name, value| match is_sensitive(name) {
        true => Ok(MASK.to_owned()),
        false => open_value(secrets, subscription_id, name, value, encrypted),
    })
}

fn read(
    stored: &Value,
    mut value_of: impl FnMut(&str, &str) -> Result<String, CryptoError>,
) -> Result<BTreeMap<String, String>, CryptoError> {
    let Some(object) = stored.as_object() else { return Ok(BTreeMap::new()) };
    let mut headers = BTreeMap::new();
    for (name, value) in object {
        let Some(value) = value.as_str() else { continue };
        headers.insert(name.clone(), value_of(name, value)?);
    }
    Ok(headers)
}

fn open_value(
    secrets: &SecretBox,
    subscription_id: &uuid::Uuid,
    name: &str,
    stored: &str,
    encrypted: bool,
) -> Result<String, CryptoError> {
    if !encrypted {
        return Ok(stored.to_owned());
    }
    let bytes = STANDARD.decode(stored).map_err(|_| CryptoError::Decrypt)?;
    secrets.open_bound(&context(subscription_id, name), &bytes)
}

/// Names only, for `Debug` of types that hold header values.
pub struct NamesOnly<'a>(pub &'a BTreeMap<String, String>);

impl std::fmt::Debug for NamesOnly<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.0.keys().map(|name| (name, "<redacted>"))).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretKey;

    fn headers() -> BTreeMap<String, String> {
        [("Authorization", "Bearer s3cr3t-value"), ("X-Tenant", "acme")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn sealed_values_are_unreadable_and_open_only_for_their_subscription_and_name() {
        let secrets = SecretBox::new(&SecretKey([5u8; 32]));
        let id = uuid::Uuid::now_v7();
        let stored = seal(&secrets, &id, &headers()).expect("seal");
        let text = stored.to_string();
        assert!(!text.contains("s3cr3t") && !text.contains("acme"), "{text}");
        assert!(text.contains("Authorization"), "names stay readable: {text}");
        assert_eq!(open(&secrets, &id, &stored, true).expect("open"), headers());
        assert!(open(&secrets, &uuid::Uuid::now_v7(), &stored, true).is_err());
        let mut swapped = stored.clone();
        swapped["X-Tenant"] = stored["Authorization"].clone();
        assert!(open(&secrets, &id, &swapped, true).is_err(), "a value moved to another name must not open");
    }

    #[test]
    fn legacy_clear_rows_read_as_they_are() {
        let secrets = SecretBox::new(&SecretKey([5u8; 32]));
        let clear = serde_json::json!({"Authorization": "Bearer x", "X-A": "1"});
        let opened = open(&secrets, &uuid::Uuid::nil(), &clear, false).expect("open");
        assert_eq!(opened["Authorization"], "Bearer x");
    }

    #[test]
    fn sensitive_names_are_masked_whatever_their_case() {
        for name in ["Authorization", "X-API-KEY", "x-auth-token", "Client-Secret", "Cookie", "X-Password", "apikey"] {
            assert!(is_sensitive(name), "{name}");
        }
        for name in ["X-Tenant", "Accept-Language", "X-Request-Source"] {
            assert!(!is_sensitive(name), "{name}");
        }
        let secrets = SecretBox::new(&SecretKey([5u8; 32]));
        let id = uuid::Uuid::now_v7();
        let stored = seal(&secrets, &id, &headers()).expect("seal");
        let shown = masked(&secrets, &id, &stored, true).expect("masked");
        assert_eq!(shown["Authorization"], MASK);
        assert_eq!(shown["X-Tenant"], "acme");
        assert!(!format!("{:?}", NamesOnly(&headers())).contains("s3cr3t"));
    }
}

//! Extra headers a subscriber asked us to send with every delivery.

use std::collections::{BTreeMap, HashSet};

use actix_web::http::header::{HeaderName, HeaderValue};
use shared::headers::is_reserved_header;

use super::InvalidField;

/// Most custom headers one subscription may carry.
pub const MAX_CUSTOM_HEADERS: usize = 20;
/// Longest header value accepted, in bytes.
pub const MAX_HEADER_VALUE_BYTES: usize = 2048;
/// Longest header name accepted, in bytes.
pub const MAX_HEADER_NAME_BYTES: usize = 256;

/// At most [`MAX_CUSTOM_HEADERS`] headers with valid HTTP names (tokens) and
/// values (visible ASCII, no CR/LF), none of them reserved ([`is_reserved_header`]), no name twice.
/// Names keep the caller's spelling.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CustomHeaders(BTreeMap<String, String>);

impl CustomHeaders {
    /// Checks every name and value.
    pub fn parse(headers: BTreeMap<String, String>) -> Result<Self, InvalidField> {
        if headers.len() > MAX_CUSTOM_HEADERS {
            return Err(InvalidField::new("headers", format!("at most {MAX_CUSTOM_HEADERS} headers are allowed")));
        }
        let mut seen = HashSet::with_capacity(headers.len());
        for (name, value) in &headers {
            let field = format!("headers.{name}");
            if name.is_empty() || name.len() > MAX_HEADER_NAME_BYTES || HeaderName::from_bytes(name.as_bytes()).is_err()
            {
                return Err(InvalidField::with_value(
                    field,
                    name.as_str(),
                    format!("is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~, at most {MAX_HEADER_NAME_BYTES} bytes)"),
                ));
            }
            let lower = name.to_ascii_lowercase();
            if is_reserved_header(&lower) {
                return Err(InvalidField::with_value(
                    field,
                    name.as_str(),
                    "is set by the webhook service itself and cannot be overridden",
                ));
            }
            if !seen.insert(lower) {
                return Err(InvalidField::with_value(
                    field,
                    name.as_str(),
                    "is given twice (header names ignore case)",
                ));
            }
            if value.len() > MAX_HEADER_VALUE_BYTES || HeaderValue::from_str(value).is_err() {
                return Err(InvalidField::new(
                    field,
                    format!(
                        "value must be printable ASCII without line breaks, at most {MAX_HEADER_VALUE_BYTES} bytes"
                    ),
                ));
            }
        }
        Ok(Self(headers))
    }

    /// The JSON object stored in `subscriptions.headers`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(self.0.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<CustomHeaders, InvalidField> {
        CustomHeaders::parse(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
    }

    #[test]
    fn ordinary_headers_are_kept_as_spelled() {
        let headers = parse(&[("X-Custom-Header", "v 1"), ("Authorization", "Bearer abc")]).expect("valid");
        assert_eq!(headers.to_json(), serde_json::json!({"X-Custom-Header": "v 1", "Authorization": "Bearer abc"}));
    }

    #[test]
    fn reserved_names_are_refused_whatever_their_case() {
        for name in [
            "Content-Type",
            "USER-AGENT",
            "X-Webhook-Signature",
            "x-webhook-anything",
            "Webhook-Id",
            "Host",
            "Connection",
        ] {
            assert_eq!(parse(&[(name, "x")]).expect_err(name).field, format!("headers.{name}"));
        }
    }

    #[test]
    fn bad_names_values_and_repeats_are_refused() {
        assert_eq!(parse(&[("Bad Name", "x")]).expect_err("space").field, "headers.Bad Name");
        assert_eq!(parse(&[("", "x")]).expect_err("empty").field, "headers.");
        assert_eq!(parse(&[("X-A", "a\r\nX-Evil: 1")]).expect_err("crlf").field, "headers.X-A");
        assert_eq!(parse(&[("X-A", "a\nb")]).expect_err("lf").field, "headers.X-A");
        assert_eq!(parse(&[("X-A", "1"), ("x-a", "2")]).expect_err("twice").field, "headers.x-a");
        let many: Vec<(String, String)> = (0..=MAX_CUSTOM_HEADERS).map(|i| (format!("X-H{i}"), "v".into())).collect();
        assert_eq!(CustomHeaders::parse(many.into_iter().collect()).expect_err("many").field, "headers");
    }
}

//! Extra headers a subscriber asked us to send with every delivery.

use std::collections::{BTreeMap, HashSet};

use actix_web::http::header::{HeaderName, HeaderValue};
use shared::{
    header_values::{is_sensitive, MASK},
    headers::is_reserved_header,
};

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

    /// The headers by name.
    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Sensitive headers whose value is [`MASK`]: a client sending back what it read.
    fn masked_names(&self) -> impl Iterator<Item = &String> {
        self.0.iter().filter(|(name, value)| is_sensitive(name) && value.as_str() == MASK).map(|(name, _)| name)
    }

    /// Whether some value is [`MASK`] standing for a stored value.
    pub fn has_masked(&self) -> bool {
        self.masked_names().next().is_some()
    }

    /// For a new subscription: [`MASK`] stands for a stored value, and there is none.
    pub fn refuse_masked(self) -> Result<Self, InvalidField> {
        if let Some(name) = self.masked_names().next() {
            return Err(InvalidField::new(
                format!("headers.{name}"),
                format!("{MASK:?} stands for a stored value (as responses show it); give the real value"),
            ));
        }
        Ok(self)
    }

    /// For a PATCH: each [`MASK`] value of a sensitive header takes the value
    /// `stored` has under the same name (names ignore case); one with no stored
    /// value is a 422.
    pub fn keep_masked(mut self, stored: &BTreeMap<String, String>) -> Result<Self, InvalidField> {
        let masked: Vec<String> = self.masked_names().cloned().collect();
        for name in masked {
            let kept = stored.iter().find(|(old, _)| old.eq_ignore_ascii_case(&name)).map(|(_, value)| value.clone());
            match kept {
                Some(value) => {
                    self.0.insert(name, value);
                }
                None => {
                    return Err(InvalidField::new(
                        format!("headers.{name}"),
                        format!("{MASK:?} keeps the stored value, but this subscription has no {name} header"),
                    ))
                }
            }
        }
        Ok(self)
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
        assert_eq!(headers.as_map()["X-Custom-Header"], "v 1");
        assert_eq!(headers.as_map()["Authorization"], "Bearer abc");
    }

    #[test]
    fn masked_values_keep_the_stored_ones_or_are_refused() {
        let stored: BTreeMap<String, String> =
            [("authorization".to_owned(), "Bearer old".to_owned())].into_iter().collect();
        let sent = parse(&[("Authorization", "***"), ("X-Plain", "***")]).expect("valid");
        assert!(sent.has_masked());
        let kept = sent.clone().keep_masked(&stored).expect("kept");
        assert_eq!(kept.as_map()["Authorization"], "Bearer old");
        assert_eq!(kept.as_map()["X-Plain"], "***", "a non-sensitive header's value is literal");
        assert_eq!(sent.clone().keep_masked(&BTreeMap::new()).expect_err("none").field, "headers.Authorization");
        assert_eq!(sent.refuse_masked().expect_err("create").field, "headers.Authorization");
        assert!(parse(&[("X-Plain", "***")]).expect("valid").refuse_masked().is_ok());
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

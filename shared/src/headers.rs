//! The request headers of a delivery that a subscription may not set: the
//! ones the dispatcher writes itself and the ones describing the connection or
//! the body framing. Ingest refuses them when a subscription is saved; the
//! dispatcher skips them if one is stored anyway.

/// Reserved names, lower-case.
const RESERVED_NAMES: &[&str] = &[
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "user-agent",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// Prefixes of the signature and metadata headers: `X-Webhook-*` and the
/// Standard Webhooks `webhook-*`, lower-case.
const RESERVED_PREFIXES: &[&str] = &["x-webhook-", "webhook-"];

/// Whether a subscription may not set the header `name` (any case).
pub fn is_reserved_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    RESERVED_NAMES.contains(&lower.as_str()) || RESERVED_PREFIXES.iter().any(|prefix| lower.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names_and_prefixes_match_whatever_their_case() {
        for name in ["Host", "content-LENGTH", "User-Agent", "X-Webhook-Signature", "webhook-id", "Expect"] {
            assert!(is_reserved_header(name), "{name}");
        }
        for name in ["X-Custom", "Authorization", "X-Webhooks", "webhookid"] {
            assert!(!is_reserved_header(name), "{name}");
        }
    }
}

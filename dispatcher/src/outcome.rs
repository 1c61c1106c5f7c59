//! What one HTTP attempt came to, as data: a closed set of outcome kinds with
//! stable codes (stored per attempt and used as the metrics label), the status
//! and the first bytes of the answer.

use std::{error::Error as StdError, time::Duration};

/// How an attempt ended. The codes are part of the delivery log: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutcomeKind {
    /// The endpoint answered 2xx.
    Success,
    /// The endpoint answered a status that is neither 2xx nor 3xx (410 included).
    HttpStatus,
    /// The endpoint answered 3xx; redirects are never followed.
    Redirect,
    /// No complete answer within the subscription's `timeout_seconds` (or the connect timeout).
    Timeout,
    /// The TCP connection could not be made (refused, reset, unreachable).
    Connect,
    /// The host name did not resolve.
    Dns,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
    /// The target is (or resolves only to) a loopback, private or link-local address.
    BlockedAddress,
    /// The request could not be built or sent (invalid URL, protocol error).
    Request,
    /// Sending the request body or reading the answer failed.
    Body,
    /// Our side could not make the request (e.g. a signing secret would not decrypt).
    Internal,
}

impl OutcomeKind {
    /// Every kind, e.g. to register a metric series per outcome at start.
    pub const ALL: [Self; 11] = [
        Self::Success,
        Self::HttpStatus,
        Self::Redirect,
        Self::Timeout,
        Self::Connect,
        Self::Dns,
        Self::Tls,
        Self::BlockedAddress,
        Self::Request,
        Self::Body,
        Self::Internal,
    ];

    /// The stable code stored in `delivery_attempts.outcome`.
    pub fn code(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::HttpStatus => "http_status",
            Self::Redirect => "redirect",
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Dns => "dns",
            Self::Tls => "tls",
            Self::BlockedAddress => "blocked_address",
            Self::Request => "request",
            Self::Body => "body",
            Self::Internal => "internal",
        }
    }

    /// An outcome that cannot change by itself: retrying it is pointless, so
    /// the delivery fails at once (the target resolves only to internal addresses).
    pub fn is_permanent(self) -> bool {
        matches!(self, Self::BlockedAddress)
    }
}

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub kind: OutcomeKind,
    /// The HTTP status, when the endpoint answered.
    pub status_code: Option<u16>,
    /// Why the attempt failed, for the delivery log (`None` on success).
    pub error: Option<String>,
    pub duration: Duration,
    /// The first [`crate::deliver::MAX_RESPONSE_BODY`] bytes of the answer.
    pub response_body: Option<String>,
    /// The headers sent (sensitive values masked), when a request was made.
    pub request_headers: Option<serde_json::Value>,
    /// The answer's headers, up to [`crate::deliver::MAX_RESPONSE_HEADERS`] bytes.
    pub response_headers: Option<serde_json::Value>,
    /// How long a 429 or 503 asked us to wait (`Retry-After`), unclamped.
    pub retry_after: Option<Duration>,
}

impl Outcome {
    /// An attempt that ended before any answer.
    pub fn failed(kind: OutcomeKind, error: impl Into<String>, duration: Duration) -> Self {
        Self {
            kind,
            status_code: None,
            error: Some(error.into()),
            duration,
            response_body: None,
            request_headers: None,
            response_headers: None,
            retry_after: None,
        }
    }

    /// An attempt the endpoint answered with `status`.
    pub fn answered(status: u16, location: Option<&str>, duration: Duration, response_body: Option<String>) -> Self {
        let (kind, error) = match status {
            200..=299 => (OutcomeKind::Success, None),
            300..=399 => (
                OutcomeKind::Redirect,
                Some(match location {
                    Some(location) => {
                        format!("endpoint answered HTTP {status} (redirect to {} not followed)", clip(location, 200))
                    }
                    None => format!("endpoint answered HTTP {status} (redirects are not followed)"),
                }),
            ),
            410 => (OutcomeKind::HttpStatus, Some("endpoint answered HTTP 410 Gone".to_owned())),
            _ => (OutcomeKind::HttpStatus, Some(format!("endpoint answered HTTP {status}"))),
        };
        Self {
            kind,
            status_code: Some(status),
            error,
            duration,
            response_body,
            request_headers: None,
            response_headers: None,
            retry_after: None,
        }
    }

    /// The same outcome, recording what was sent and what came back.
    pub fn with_headers(mut self, sent: Option<serde_json::Value>, received: Option<serde_json::Value>) -> Self {
        self.request_headers = sent;
        self.response_headers = received;
        self
    }

    /// The same outcome with the endpoint's `Retry-After`.
    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    pub fn is_success(&self) -> bool {
        self.kind == OutcomeKind::Success
    }

    /// 410 Gone: the endpoint asks never to be called again.
    pub fn is_gone(&self) -> bool {
        self.status_code == Some(410)
    }
}

/// Why our resolver refused a host: every address it has is internal.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to non-public addresses")]
pub struct BlockedAddress {
    pub host: String,
}

/// A host name that did not resolve.
#[derive(Debug, thiserror::Error)]
#[error("{host} did not resolve: {reason}")]
pub struct DnsFailure {
    pub host: String,
    pub reason: String,
}

/// Classifies a failed request into an outcome.
pub fn classify_error(err: &reqwest::Error, duration: Duration) -> Outcome {
    let message = error_chain(err);
    let kind = if chain_has::<BlockedAddress>(err) {
        OutcomeKind::BlockedAddress
    } else if chain_has::<DnsFailure>(err) || chain(err).any(|e| e.to_string() == "dns error") {
        OutcomeKind::Dns
    } else if chain_has::<rustls::Error>(err) {
        OutcomeKind::Tls
    } else if err.is_timeout() {
        OutcomeKind::Timeout
    } else if err.is_connect() {
        OutcomeKind::Connect
    } else if err.is_redirect() {
        OutcomeKind::Redirect
    } else if err.is_body() {
        OutcomeKind::Body
    } else {
        OutcomeKind::Request
    };
    Outcome::failed(kind, message, duration)
}

/// The connection closed (or was reset) after the request went out and before
/// any answer: what a keep-alive connection the endpoint had just closed as
/// idle looks like when a request is written onto it in that instant.
pub fn closed_before_answer(err: &reqwest::Error) -> bool {
    use std::io::ErrorKind;
    !err.is_connect()
        && !err.is_timeout()
        && chain(err).any(|e| {
            e.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_incomplete_message)
                || e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| matches!(io.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe))
        })
}

/// Every error of the chain, looking inside `io::Error`s too (their
/// `source()` skips the error they wrap, which is where rustls and our
/// resolver errors sit).
fn chain<'a>(err: &'a (dyn StdError + 'static)) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    let mut next: Option<&'a (dyn StdError + 'static)> = Some(err);
    std::iter::from_fn(move || {
        let current = next?;
        next = match current.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => current.source(),
        };
        Some(current)
    })
}

fn chain_has<T: StdError + 'static>(err: &(dyn StdError + 'static)) -> bool {
    chain(err).any(|e| e.is::<T>())
}

/// The messages of the chain joined with ": ", without repeats, clipped.
fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in chain(err) {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    clip(&parts.join(": "), 1000)
}

/// At most `max` bytes of `text`, cut at a character boundary.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_kinds_by_status() {
        let d = Duration::from_millis(5);
        assert_eq!(Outcome::answered(204, None, d, None).kind, OutcomeKind::Success);
        let redirect = Outcome::answered(302, Some("https://elsewhere.example/"), d, None);
        assert_eq!(redirect.kind, OutcomeKind::Redirect);
        assert!(redirect.error.as_deref().is_some_and(|e| e.contains("elsewhere")));
        let gone = Outcome::answered(410, None, d, None);
        assert_eq!(gone.kind, OutcomeKind::HttpStatus);
        assert!(gone.is_gone());
        assert_eq!(Outcome::answered(500, None, d, None).error.as_deref(), Some("endpoint answered HTTP 500"));
    }

    #[test]
    fn clip_respects_character_boundaries() {
        assert_eq!(clip("héllo", 2), "h");
        assert_eq!(clip("abc", 10), "abc");
    }
}

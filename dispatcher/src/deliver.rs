//! One HTTP attempt: sign the stored body, POST it with the contract's
//! headers, read at most 4 KiB of the answer, and say what happened as data.
//! Recording the outcome and acking belong to the caller.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, USER_AGENT};
use shared::{header_values::NamesOnly, headers::is_reserved_header, signing, targets::is_public_ip};

use crate::outcome::{classify_error, closed_before_answer, Outcome, OutcomeKind};

/// How much of an answer is kept (and read at all).
pub const MAX_RESPONSE_BODY: usize = 4096;
/// How much of an answer's headers is kept (names and values, in bytes).
pub const MAX_RESPONSE_HEADERS: usize = 8 * 1024;
/// The `User-Agent` of every request.
pub const USER_AGENT_VALUE: &str = "DotMac-Webhooks/1.0";

/// Everything one attempt needs, secrets already decrypted. Its `Debug`
/// hides the secrets and the header values.
#[derive(Clone)]
pub struct Job {
    pub delivery_id: uuid::Uuid,
    /// 1-based number of this attempt.
    pub attempt: i32,
    pub subscription_id: uuid::Uuid,
    pub event_id: String,
    pub event_type: String,
    pub url: String,
    /// The subscription's own headers, values decrypted.
    pub custom_headers: BTreeMap<String, String>,
    pub timeout: Duration,
    /// The current signing secret.
    pub secret: String,
    /// The secret before the last rotation, while its 24-hour grace period lasts.
    pub previous_secret: Option<String>,
    /// The stored envelope, sent byte for byte.
    pub payload: String,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("delivery_id", &self.delivery_id)
            .field("attempt", &self.attempt)
            .field("subscription_id", &self.subscription_id)
            .field("event_id", &self.event_id)
            .field("event_type", &self.event_type)
            .field("url", &self.url)
            .field("custom_headers", &NamesOnly(&self.custom_headers))
            .field("timeout", &self.timeout)
            .field("secret", &"<redacted>")
            .field("previous_secret", &self.previous_secret.as_ref().map(|_| "<redacted>"))
            .field("payload_bytes", &self.payload.len())
            .finish()
    }
}

/// What `deliver_one` needs besides the job.
#[derive(Clone)]
pub struct DeliverContext {
    pub client: reqwest::Client,
    /// `ALLOW_HTTP_TARGETS`: a subscription saved as `http://` under relaxed
    /// settings is refused once the dispatcher runs strict.
    pub allow_http_targets: bool,
    /// `ALLOW_PRIVATE_TARGETS`: skip the IP-literal check.
    pub allow_private_targets: bool,
}

/// Makes one attempt and reports its outcome; never panics. The one request
/// sent twice is one whose connection closed before any answer (see below).
pub async fn deliver_one(ctx: &DeliverContext, job: &Job) -> Outcome {
    let started = Instant::now();
    let url = match reqwest::Url::parse(&job.url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => url,
        _ => {
            return Outcome::failed(
                OutcomeKind::Request,
                "subscription URL is not a valid http(s) URL",
                started.elapsed(),
            )
        }
    };
    // The deployment may have become stricter since the URL was saved.
    if url.scheme() == "http" && !ctx.allow_http_targets {
        return Outcome::failed(
            OutcomeKind::BlockedAddress,
            "plain http:// targets are refused (ALLOW_HTTP_TARGETS is off)",
            started.elapsed(),
        );
    }
    if !ctx.allow_private_targets {
        // hyper skips the resolver for IP literals, so they are checked here;
        // names are checked for every address they resolve to, by the client's resolver.
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal.filter(|ip| !is_public_ip(*ip)) {
            return Outcome::failed(
                OutcomeKind::BlockedAddress,
                format!("{ip} is not a public address (ALLOW_PRIVATE_TARGETS is off)"),
                started.elapsed(),
            );
        }
    }
    let now = chrono::Utc::now().timestamp();
    let headers = match request_headers(job, now) {
        Ok(headers) => headers,
        Err(message) => return Outcome::failed(OutcomeKind::Internal, message, started.elapsed()),
    };
    let sent_headers = Some(headers_json(&headers, usize::MAX));
    let send = |headers: HeaderMap, timeout: Duration| {
        ctx.client.post(url.clone()).headers(headers).timeout(timeout).body(job.payload.clone()).send()
    };
    let sent = match send(headers, job.timeout).await {
        // A pooled connection the endpoint closed as idle just as the request
        // went out: once more at once, on another connection, within the
        // same timeout (receivers dedupe on `webhook-id` anyway).
        Err(err) if closed_before_answer(&err) && started.elapsed() < job.timeout => {
            log::debug!(
                "connection closed before an answer, sending again delivery_id={} error={err}",
                job.delivery_id
            );
            metrics::counter!(crate::metric_names::RESENT_ON_CLOSED_CONNECTION).increment(1);
            // The same headers again (same timestamp, same signatures), built
            // only on this rare path rather than cloned for every attempt.
            match request_headers(job, now) {
                Ok(headers) => send(headers, job.timeout.saturating_sub(started.elapsed())).await,
                Err(_) => Err(err),
            }
        }
        other => other,
    };
    let mut response = match sent {
        Ok(response) => response,
        Err(err) => return classify_error(&err, started.elapsed()).with_headers(sent_headers, None),
    };
    let status = response.status().as_u16();
    let location = response.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let received_headers = Some(headers_json(response.headers(), MAX_RESPONSE_HEADERS));
    let retry_after = match status {
        429 | 503 => response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, chrono::Utc::now())),
        _ => None,
    };
    let body = read_prefix(&mut response).await;
    drop(response);
    Outcome::answered(status, location.as_deref(), started.elapsed(), body)
        .with_headers(sent_headers, received_headers)
        .with_retry_after(retry_after)
}

/// Headers as a JSON object for the delivery log: repeated names joined with
/// ", ", sensitive values (credentials, cookies) masked, and no more headers
/// than fit in `max_bytes` of names and values.
pub fn headers_json(headers: &HeaderMap, max_bytes: usize) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    let mut used = 0usize;
    for name in headers.keys() {
        let value = if shared::header_values::is_sensitive(name.as_str()) {
            shared::header_values::MASK.to_owned()
        } else {
            let values: Vec<String> =
                headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
            values.join(", ")
        };
        used = used.saturating_add(name.as_str().len() + value.len());
        if used > max_bytes {
            break;
        }
        object.insert(name.as_str().to_owned(), serde_json::Value::String(value));
    }
    serde_json::Value::Object(object)
}

/// A `Retry-After` value: delta-seconds, or an HTTP-date (a date in the past
/// means now). `None` if it is neither.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX)));
    }
    // IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") is RFC 2822 with zone GMT.
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&chrono::Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// Reads chunks until [`MAX_RESPONSE_BODY`] bytes or the end; the rest is
/// never read (dropping the response closes that connection). A body that
/// fails midway keeps what arrived: the status already decided the outcome.
async fn read_prefix(response: &mut reqwest::Response) -> Option<String> {
    let mut kept: Vec<u8> = Vec::new();
    while kept.len() < MAX_RESPONSE_BODY {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_RESPONSE_BODY - kept.len();
                kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    if kept.is_empty() {
        return None;
    }
    // PostgreSQL text holds neither invalid UTF-8 nor NUL.
    Some(String::from_utf8_lossy(&kept).replace('\0', "\u{FFFD}"))
}

/// The contract's headers, then the subscription's own (never replacing ours).
/// `now` is the unix time of this attempt (`webhook-timestamp`).
pub fn request_headers(job: &Job, now: i64) -> Result<HeaderMap, String> {
    let body = job.payload.as_bytes();
    let envelope_timestamp =
        shared::envelope::timestamp_of(&job.payload).ok_or_else(|| "stored payload has no timestamp".to_owned())?;
    let mut secrets = vec![job.secret.as_str()];
    secrets.extend(job.previous_secret.as_deref());
    let ours: [(HeaderName, String); 11] = [
        (CONTENT_TYPE, "application/json".to_owned()),
        (USER_AGENT, USER_AGENT_VALUE.to_owned()),
        (HeaderName::from_static("x-webhook-signature"), signing::legacy_signature(&job.secret, body)),
        (HeaderName::from_static("x-webhook-event-id"), job.event_id.clone()),
        (HeaderName::from_static("x-webhook-event-type"), job.event_type.clone()),
        (HeaderName::from_static("x-webhook-timestamp"), envelope_timestamp),
        (HeaderName::from_static("x-webhook-delivery-id"), job.delivery_id.to_string()),
        (HeaderName::from_static("x-webhook-attempt"), job.attempt.to_string()),
        (HeaderName::from_static("webhook-id"), job.event_id.clone()),
        (HeaderName::from_static("webhook-timestamp"), now.to_string()),
        (
            HeaderName::from_static("webhook-signature"),
            signing::standard_signature_header(&secrets, &job.event_id, now, body),
        ),
    ];
    let mut headers = HeaderMap::with_capacity(ours.len() + 4);
    for (name, value) in ours {
        let value = HeaderValue::from_str(&value).map_err(|_| format!("header {name} would be invalid"))?;
        headers.insert(name, value);
    }
    for (name, value) in &job.custom_headers {
        // HeaderName is lower-case, so a differently cased duplicate of ours collides too.
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) else {
            log::debug!("custom header skipped: invalid subscription_id={} header={name}", job.subscription_id);
            continue;
        };
        if headers.contains_key(&name) || is_reserved_header(name.as_str()) {
            continue;
        }
        headers.insert(name, value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            delivery_id: uuid::Uuid::nil(),
            attempt: 2,
            subscription_id: uuid::Uuid::nil(),
            event_id: "evt_1".into(),
            event_type: "invoice.created".into(),
            url: "https://example.com/hook".into(),
            custom_headers: [
                ("X-Custom", "yes"),
                ("x-webhook-signature", "forged"),
                ("USER-AGENT", "evil"),
                ("Host", "other"),
                ("X-Bad", "line\nbreak"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            timeout: Duration::from_secs(5),
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            previous_secret: Some("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD".into()),
            payload: r#"{"id":"evt_1","type":"invoice.created","timestamp":"2025-09-30T12:00:00Z","tenant_id":"t","data":{},"metadata":{}}"#.into(),
        }
    }

    #[test]
    fn logged_headers_mask_credentials_and_stop_at_the_limit() {
        let mut job = job();
        job.custom_headers = [("Authorization", "Bearer s3cret"), ("X-Tenant", "acme")]
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .into();
        let headers = request_headers(&job, 1_700_000_000).expect("headers");
        let logged = headers_json(&headers, usize::MAX);
        assert_eq!(logged["authorization"], "***");
        assert_eq!(logged["x-tenant"], "acme");
        assert_eq!(logged["x-webhook-attempt"], "2");
        assert!(logged["webhook-signature"].as_str().is_some_and(|s| s.starts_with("v1,")));
        let clipped = headers_json(&headers, 40);
        assert!(clipped
            .as_object()
            .is_some_and(|o| !o.is_empty() && o.len() < logged.as_object().map_or(0, |l| l.len())));
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z").expect("time").to_utc();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Tue, 01 Dec 2026 10:00:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Tue, 01 Dec 2026 09:00:00 GMT", now), Some(Duration::ZERO), "past = now");
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn custom_headers_never_replace_ours() {
        let job = job();
        let headers = request_headers(&job, 1_700_000_000).expect("headers");
        assert_eq!(headers["x-custom"], "yes");
        assert_eq!(headers["user-agent"], USER_AGENT_VALUE);
        assert!(!headers.contains_key("host"));
        assert!(!headers.contains_key("x-bad"));
        assert_eq!(headers.get_all("x-webhook-signature").iter().count(), 1);
        let legacy = headers["x-webhook-signature"].to_str().expect("ascii");
        assert!(signing::verify_legacy(&job.secret, job.payload.as_bytes(), legacy));
        assert_eq!(headers["x-webhook-timestamp"], "2025-09-30T12:00:00Z");
        assert_eq!(headers["x-webhook-attempt"], "2");
        let standard = headers["webhook-signature"].to_str().expect("ascii");
        for secret in [&job.secret, job.previous_secret.as_ref().expect("previous")] {
            assert!(signing::verify_standard(secret, "evt_1", 1_700_000_000, job.payload.as_bytes(), standard));
        }
    }

    #[test]
    fn debug_shows_no_secret_and_no_header_value() {
        let mut job = job();
        job.custom_headers.insert("Authorization".into(), "Bearer hunter2".into());
        let printed = format!("{job:?}");
        for secret in ["hunter2", "whsec_", &job.secret] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        assert!(printed.contains("Authorization"));
    }

    /// Reads one whole HTTP/1.1 request (headers and `content-length` body).
    fn read_request(socket: &mut std::net::TcpStream) -> std::io::Result<()> {
        use std::io::Read;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = socket.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen).to_ascii_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if seen.len() >= end + 4 + length {
                    return Ok(());
                }
            }
        }
    }

    /// A receiver that closes each of the first `closes` connections after
    /// reading its request, without answering, then answers 200 on the next.
    /// Returns its URL and the count of requests it read.
    fn closing_receiver(closes: usize) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::{
            io::Write,
            sync::{atomic::Ordering, Arc},
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = requests.clone();
        std::thread::spawn(move || {
            for mut socket in listener.incoming().flatten() {
                if read_request(&mut socket).is_err() {
                    continue;
                }
                if counted.fetch_add(1, Ordering::SeqCst) < closes {
                    drop(socket);
                    continue;
                }
                let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
            }
        });
        (url, requests)
    }

    #[tokio::test]
    async fn a_connection_closed_before_the_answer_is_sent_again_once() {
        use std::sync::atomic::Ordering;
        let mut job = job();
        let (url, requests) = closing_receiver(1);
        job.url = url;
        let outcome = deliver_one(&context(true, true), &job).await;
        assert_eq!(outcome.kind, OutcomeKind::Success, "{outcome:?}");
        assert_eq!(requests.load(Ordering::SeqCst), 2);

        let (url, requests) = closing_receiver(usize::MAX);
        job.url = url;
        let outcome = deliver_one(&context(true, true), &job).await;
        assert_ne!(outcome.kind, OutcomeKind::Success, "{outcome:?}");
        assert_eq!(requests.load(Ordering::SeqCst), 2, "sent twice, never a third time");
    }

    fn context(allow_http_targets: bool, allow_private_targets: bool) -> DeliverContext {
        DeliverContext { client: reqwest::Client::new(), allow_http_targets, allow_private_targets }
    }

    #[tokio::test]
    async fn targets_the_policy_refuses_are_blocked_before_any_request() {
        let mut job = job();
        for (url, ctx) in [
            ("http://example.com/hook", context(false, true)),
            ("https://127.0.0.1/hook", context(true, false)),
            ("https://[2002:7f00:1::]/hook", context(true, false)),
        ] {
            job.url = url.to_owned();
            let outcome = deliver_one(&ctx, &job).await;
            assert_eq!(outcome.kind, OutcomeKind::BlockedAddress, "{url}: {outcome:?}");
        }
        job.url = "ftp://example.com/".into();
        assert_eq!(deliver_one(&context(true, true), &job).await.kind, OutcomeKind::Request);
    }
}

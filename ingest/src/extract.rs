//! Request extractors that turn bad input into the contract's errors:
//! JSON bodies (400 not JSON, 422 naming the field, 413 too large, 408 too
//! slow), publish bodies within the byte budget (503 over it) and query
//! strings (400 malformed, 422 naming a parameter with a control character).

use std::{future::Future, pin::Pin, time::Duration};

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::{
    domain::text::{self, TextKind},
    error::ApiError,
    publishing::budget::BudgetGuard,
    state::AppState,
};

/// Largest body any route takes (publishing's limit, from the contract).
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Body timeout when the app state is not reachable (never in the service).
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// What an over-budget publish is told to wait: bodies in flight are answered
/// within a commit or two.
const OVER_BUDGET_RETRY_AFTER_SECONDS: u64 = 1;

/// A JSON body deserialized with the path of any failing field.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let mut payload = payload.take();
        let timeout = body_timeout(req);
        let declared = declared_length(req);
        Box::pin(async move {
            let body = read_body(&mut payload, declared, timeout).await?;
            parse_json(&body).map(Json)
        })
    }
}

/// A publish body, read within the byte budget: the bytes it holds stay taken
/// until this value (and the guard in it) is dropped, after the answer.
pub struct BudgetedJson<T> {
    pub body: T,
    pub guard: BudgetGuard,
}

impl<T: DeserializeOwned + 'static> FromRequest for BudgetedJson<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let mut payload = payload.take();
        let timeout = body_timeout(req);
        let declared = declared_length(req);
        let budget = req.app_data::<web::Data<AppState>>().map(|state| state.budget.clone());
        Box::pin(async move {
            if declared.is_some_and(|length| length > MAX_BODY_BYTES) {
                return Err(ApiError::PayloadTooLarge { limit: MAX_BODY_BYTES });
            }
            let budget = budget.ok_or_else(|| ApiError::Internal("no byte budget in the app state".into()))?;
            // Taken before a byte is read: an unknown length may grow to the limit.
            let guard = budget.try_take(declared.unwrap_or(MAX_BODY_BYTES)).ok_or_else(|| {
                metrics::counter!(crate::metric_names::OVER_BUDGET).increment(1);
                ApiError::Overloaded { retry_after_seconds: OVER_BUDGET_RETRY_AFTER_SECONDS }
            })?;
            let body = read_body(&mut payload, declared, timeout).await?;
            let body = parse_json(&body)?;
            Ok(BudgetedJson { body, guard })
        })
    }
}

fn body_timeout(req: &HttpRequest) -> Duration {
    req.app_data::<web::Data<AppState>>().map_or(DEFAULT_BODY_TIMEOUT, |state| state.config.ingest_body_timeout)
}

/// The `Content-Length` the client announced, if any.
fn declared_length(req: &HttpRequest) -> Option<usize> {
    req.headers().get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// Reads the whole body, at most [`MAX_BODY_BYTES`], within `timeout` from now.
async fn read_body(
    payload: &mut Payload,
    declared: Option<usize>,
    timeout: Duration,
) -> Result<web::BytesMut, ApiError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(0).min(MAX_BODY_BYTES));
    loop {
        let chunk = match tokio::time::timeout_at(deadline, payload.next()).await {
            Err(_) => {
                metrics::counter!(crate::metric_names::BODY_TIMEOUTS).increment(1);
                return Err(ApiError::RequestTimeout { seconds: timeout.as_secs().max(1) });
            }
            Ok(None) => return Ok(body),
            Ok(Some(chunk)) => chunk,
        };
        let chunk = chunk.map_err(|e| ApiError::BadRequest { code: "invalid_body", message: e.to_string() })?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ApiError::PayloadTooLarge { limit: MAX_BODY_BYTES });
        }
        body.extend_from_slice(&chunk);
    }
}

/// Why a JSON body cannot be deserialized, independent of the transport
/// (HTTP maps it to 400/422, the AMQP consumer to a rejection reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON at all.
    NotJson(String),
    /// JSON, but a field is missing or of the wrong type (`field` is its path,
    /// `body` when the whole body is the wrong shape).
    Field { field: String, message: String, missing: bool },
}

/// Parses JSON: syntax errors are 400, shape errors 422 naming the field.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    parse_json_body(body).map_err(|err| match err {
        BodyError::NotJson(message) => ApiError::BadRequest { code: "invalid_json", message },
        BodyError::Field { field, message, .. } => ApiError::validation(field, message),
    })
}

/// Parses JSON bytes into `T`, naming the failing field.
pub fn parse_json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, BodyError> {
    // First: is it JSON at all?
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| BodyError::NotJson(format!("request body is not valid JSON: {e}")))?;
    from_json_value(value)
}

/// Deserializes an already parsed JSON object into `T`, naming the failing
/// field. No string anywhere in it may hold a NUL (PostgreSQL refuses it).
pub fn from_json_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, BodyError> {
    let Some(object) = value.as_object() else {
        return Err(BodyError::Field { field: "body".into(), message: "must be a JSON object".into(), missing: false });
    };
    for (key, item) in object {
        text::check(key, key, TextKind::Data)
            .and_then(|()| text::check_json(key, item))
            .map_err(|invalid| BodyError::Field { field: invalid.field, message: invalid.message, missing: false })?;
    }
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner().to_string();
        // serde names a missing field in its message, not in the path.
        let missing = inner.strip_prefix("missing field `").and_then(|rest| rest.split('`').next()).map(str::to_owned);
        let field = match missing.as_deref() {
            Some(missing) if path == "." => missing.to_owned(),
            Some(missing) => format!("{path}.{missing}"),
            None if path == "." => "body".to_owned(),
            None => path,
        };
        BodyError::Field { field, message: inner, missing: missing.is_some() }
    })
}

/// A query string: a malformed one is a 400 `invalid_query` naming the
/// parameter; a parameter whose value holds a control character is a 422 naming it.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned> FromRequest for Query<T> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        std::future::ready(parse_query(req.query_string()).map(Query))
    }
}

/// Parses a query string strictly (see [`query_pairs`]), checks every value
/// with [`TextKind::Line`], then deserializes it, naming the failing parameter.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    for (name, value) in query_pairs(query)? {
        text::check(&name, &value, TextKind::Line)?;
    }
    let deserializer = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner().to_string();
        let field = (path != ".").then_some(path);
        let message = match &field {
            Some(field) => format!("query parameter `{field}`: {inner}"),
            None => format!("malformed query string: {inner}"),
        };
        ApiError::InvalidQuery { field, message }
    })
}

/// The decoded `name=value` pairs of a query string. Unlike the lenient
/// `application/x-www-form-urlencoded` parsers, a `%` not followed by two hex
/// digits, or an escape that decodes to invalid UTF-8, is a 400 (naming the
/// parameter when its name is readable): guessing what such a query meant is
/// how two parsers come to disagree.
pub fn query_pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    fn decode(part: &str) -> Result<String, String> {
        let bytes = part.as_bytes();
        let mut decoded = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'%' => {
                    let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                    let byte = hex
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or_else(|| "a `%` not followed by two hex digits".to_owned())?;
                    decoded.push(byte);
                    i += 3;
                }
                b'+' => {
                    decoded.push(b' ');
                    i += 1;
                }
                other => {
                    decoded.push(other);
                    i += 1;
                }
            }
        }
        String::from_utf8(decoded).map_err(|_| "an escape that is not UTF-8".to_owned())
    }
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name).map_err(|why| ApiError::InvalidQuery {
                field: None,
                message: format!("malformed query string: a parameter name has {why}"),
            })?;
            let value = decode(value).map_err(|why| ApiError::InvalidQuery {
                message: format!("query parameter `{name}` has {why}"),
                field: Some(name.clone()),
            })?;
            Ok((name, value))
        })
        .collect()
}

/// Middleware: a malformed query string is a 400 on every route, whether or
/// not its handler reads the query.
pub async fn reject_malformed_query(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    if let Err(err) = query_pairs(req.query_string()) {
        return Ok(req.error_response(err));
    }
    next.call(req).await.map(actix_web::dev::ServiceResponse::map_into_boxed_body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[expect(dead_code, reason = "fields are only deserialized")]
    struct Body {
        url: String,
        max_retries: Option<i32>,
        nested: Option<Nested>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[expect(dead_code, reason = "fields are only deserialized")]
    struct Nested {
        n: i32,
    }

    fn field_of(body: &str) -> String {
        match parse_json::<Body>(body.as_bytes()) {
            Err(ApiError::Validation { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of(r#"{"max_retries": 3}"#), "url");
        assert_eq!(field_of(r#"{"url": "x", "max_retries": "many"}"#), "max_retries");
        assert_eq!(field_of(r#"{"url": "x", "nested": {"n": "x"}}"#), "nested.n");
        assert_eq!(field_of(r#"{"url": "x", "nested": {}}"#), "nested.n");
        assert_eq!(field_of("[1]"), "body");
        assert!(matches!(parse_json::<Body>(b"{not json"), Err(ApiError::BadRequest { code: "invalid_json", .. })));
        assert_eq!(field_of(r#"{"url": "a\u0000b"}"#), "url");
        assert_eq!(field_of(r#"{"url": "x", "nested": {"n": 1, "s\u0000": 2}}"#), "nested.s\u{0}");
    }

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Params {
        limit: Option<i64>,
        event_type: Option<String>,
    }

    #[test]
    fn query_strings_are_parsed_strictly() {
        let parsed: Params = parse_query("limit=5&event_type=invoice.created&other=x%20y+z").expect("valid");
        assert_eq!(parsed, Params { limit: Some(5), event_type: Some("invoice.created".into()) });
        assert_eq!(
            query_pairs("a=%C3%A9&b&=c").expect("valid"),
            [("a".into(), "é".into()), ("b".into(), String::new()), (String::new(), "c".into())]
        );
        for bad in ["%", "x=%", "x=%4", "x=%zz", "x=%FF", "%G0=1"] {
            assert!(matches!(parse_query::<Params>(bad), Err(ApiError::InvalidQuery { .. })), "{bad}");
        }
        match parse_query::<Params>("event_type=%00") {
            Err(ApiError::Validation { field, .. }) => assert_eq!(field, "event_type"),
            other => panic!("expected a 422, got {:?}", other.err()),
        }
        assert!(matches!(parse_query::<Params>("limit=ten"), Err(ApiError::InvalidQuery { .. })));
    }

    #[derive(Debug, serde::Deserialize)]
    #[expect(dead_code, reason = "fields are only deserialized")]
    struct PageParams {
        limit: Option<u16>,
        cursor: Option<String>,
    }

    #[test]
    fn query_errors_name_the_parameter() {
        match parse_query::<PageParams>("cursor=x&limit=abc") {
            Err(ApiError::InvalidQuery { field: Some(field), message }) => {
                assert_eq!(field, "limit");
                assert!(message.contains("`limit`"), "{message}");
            }
            other => panic!("expected invalid_query naming limit, got {other:?}"),
        }
        assert!(parse_query::<PageParams>("limit=5").is_ok());
        assert!(parse_query::<PageParams>("").is_ok());
        match parse_query::<PageParams>("limit=5&cursor=%zz") {
            Err(ApiError::InvalidQuery { field: Some(field), .. }) => assert_eq!(field, "cursor"),
            other => panic!("expected invalid_query naming cursor, got {other:?}"),
        }
    }
}

//! Request extractors that turn bad input into the contract's errors:
//! JSON bodies (400 not JSON, 422 naming the field, 413 too large, 408 too
//! slow), publish bodies within the byte budget (503 over it) and query
//! strings (400).

use std::{future::Future, pin::Pin, time::Duration};

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::{error::ApiError, publishing::budget::BudgetGuard, state::AppState};

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

/// Deserializes an already parsed JSON object into `T`, naming the failing field.
pub fn from_json_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, BodyError> {
    if !value.is_object() {
        return Err(BodyError::Field { field: "body".into(), message: "must be a JSON object".into(), missing: false });
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

/// A query string; a malformed one is a 400 `invalid_query` naming the parameter.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned> FromRequest for Query<T> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        std::future::ready(parse_query(req.query_string()).map(Query))
    }
}

/// Deserializes a query string, naming the failing parameter.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
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
    }

    #[derive(Debug, serde::Deserialize)]
    #[expect(dead_code, reason = "fields are only deserialized")]
    struct Params {
        limit: Option<u16>,
        cursor: Option<String>,
    }

    #[test]
    fn query_errors_name_the_parameter() {
        match parse_query::<Params>("cursor=x&limit=abc") {
            Err(ApiError::InvalidQuery { field: Some(field), message }) => {
                assert_eq!(field, "limit");
                assert!(message.contains("`limit`"), "{message}");
            }
            other => panic!("expected invalid_query naming limit, got {other:?}"),
        }
        assert!(parse_query::<Params>("limit=5").is_ok());
        assert!(parse_query::<Params>("").is_ok());
    }
}

//! Request extractors that turn bad input into the contract's errors:
//! JSON bodies (400 not JSON, 422 naming the field, 413 too large) and query
//! strings (400).

use std::{future::Future, pin::Pin};

use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest body any route takes (publishing's limit, from the contract).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// A JSON body deserialized with the path of any failing field.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(_req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let mut payload = payload.take();
        Box::pin(async move {
            let mut body = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|e| ApiError::BadRequest { code: "invalid_body", message: e.to_string() })?;
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(ApiError::PayloadTooLarge { limit: MAX_BODY_BYTES });
                }
                body.extend_from_slice(&chunk);
            }
            parse_json(&body).map(Json)
        })
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

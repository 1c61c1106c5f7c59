//! The one error type of the REST API, mapped once to the contract's shape:
//! `{"error": {"code": "…", "message": "…", "details": {…}}}`.

use actix_web::{http::StatusCode, HttpResponse, ResponseError};
use serde_json::{json, Value};
use shared::db::DbError;

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON at all, or the query string is malformed.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// A query parameter is malformed (`field` names it when known).
    #[error("{message}")]
    InvalidQuery { field: Option<String>, message: String },
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("not found")]
    NotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    /// A conflict caused by one field's value (`details.field` names it).
    #[error("{message}")]
    ConflictOn { field: &'static str, message: String },
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The request line and headers together exceed what the server reads.
    #[error("the request line and headers are larger than {limit} bytes")]
    HeadTooLarge { limit: usize },
    /// The request line and headers did not arrive in time.
    #[error("the request line and headers did not arrive within {seconds} s")]
    HeadTimeout { seconds: u64 },
    /// The request body did not arrive within `INGEST_BODY_TIMEOUT`.
    #[error("the request body did not arrive within {seconds} s")]
    RequestTimeout { seconds: u64 },
    /// Ingest holds as many publish bytes as it may (`INGEST_MAX_INFLIGHT_BYTES`): retry shortly.
    #[error("too many publishes in flight; retry in {retry_after_seconds} s")]
    Overloaded { retry_after_seconds: u64 },
    /// A field is missing, of the wrong type, or out of its allowed range.
    #[error("{field}: {message}")]
    Validation { field: String, message: String, details: Value },
    /// The database (or, where durability needs it, the broker) cannot be reached.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 422 naming `field`.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        Self::Validation { details: json!({ "field": field }), field, message: message.into() }
    }

    /// A 422 naming `field` and the offending `value`.
    pub fn invalid_value(field: impl Into<String>, value: impl Into<Value>, message: impl Into<String>) -> Self {
        let field = field.into();
        Self::Validation { details: json!({ "field": field, "value": value.into() }), field, message: message.into() }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. } => code,
            Self::InvalidQuery { .. } => "invalid_query",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict(_) | Self::ConflictOn { .. } => "conflict",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::HeadTooLarge { .. } => "request_header_fields_too_large",
            Self::HeadTimeout { .. } | Self::RequestTimeout { .. } => "request_timeout",
            Self::Overloaded { .. } => "overloaded",
            Self::Validation { .. } => "validation_failed",
            Self::Unavailable(_) => "service_unavailable",
            Self::Internal(_) => "internal_error",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } | Self::InvalidQuery { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) | Self::ConflictOn { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::HeadTimeout { .. } | Self::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            Self::Unauthorized => {
                response.insert_header(("WWW-Authenticate", "Bearer"));
            }
            Self::Overloaded { retry_after_seconds } => {
                response.insert_header(("Retry-After", retry_after_seconds.to_string()));
            }
            // The rest of the body is not read: the connection cannot be reused.
            Self::RequestTimeout { .. } | Self::HeadTimeout { .. } => {
                response.insert_header(("Connection", "close"));
            }
            _ => {}
        }
        response.json(self.body())
    }
}

impl ApiError {
    /// The contract's error body; logs internal causes (once, here).
    pub fn body(&self) -> Value {
        // Internal causes are logged once here and never shown to the caller.
        let message = match self {
            Self::Internal(cause) => {
                log::error!("request failed error={cause}");
                "internal error".to_owned()
            }
            Self::Unavailable(cause) => {
                log::warn!("request failed: dependency unavailable error={cause}");
                "the service cannot make this request durable right now; retry later".to_owned()
            }
            other => other.to_string(),
        };
        let details = match self {
            Self::Validation { details, .. } => details.clone(),
            Self::PayloadTooLarge { limit } | Self::HeadTooLarge { limit } => json!({ "limit_bytes": limit }),
            Self::HeadTimeout { seconds } | Self::RequestTimeout { seconds } => json!({ "timeout_seconds": seconds }),
            Self::Overloaded { retry_after_seconds } => json!({ "retry_after_seconds": retry_after_seconds }),
            Self::ConflictOn { field, .. } => json!({ "field": field }),
            Self::InvalidQuery { field: Some(field), .. } => json!({ "field": field }),
            _ => json!({}),
        };
        json!({ "error": { "code": self.code(), "message": message, "details": details } })
    }
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> Self {
        if err.is_transient() {
            Self::Unavailable(err.to_string())
        } else {
            Self::Internal(err.to_string())
        }
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(err: diesel::result::Error) -> Self {
        DbError::from(err).into()
    }
}

impl From<crate::publishing::error::PublishError> for ApiError {
    fn from(err: crate::publishing::error::PublishError) -> Self {
        if let crate::publishing::error::PublishError::EventIdReused { .. } = &err {
            return Self::ConflictOn { field: "event_id", message: err.to_string() };
        }
        if err.is_unavailable() {
            Self::Unavailable(err.to_string())
        } else {
            Self::Internal(err.to_string())
        }
    }
}

impl From<shared::crypto::CryptoError> for ApiError {
    fn from(err: shared::crypto::CryptoError) -> Self {
        Self::Internal(err.to_string())
    }
}

//! Validated domain types: each constructor checks its input, so a value of
//! these types is always fit to store. Errors name the offending field the
//! way the API reports it (`url`, `events[2]`, `headers.X-Foo`).

mod custom_headers;
mod delivery_settings;
mod event_patterns;
mod subscription_url;
mod tenant_id;
pub mod text;
pub mod timestamp;

pub use custom_headers::CustomHeaders;
pub use delivery_settings::{Description, MaxRetries, TimeoutSeconds};
pub use event_patterns::EventPatterns;
pub use subscription_url::SubscriptionUrl;
pub use tenant_id::TenantId;

use crate::error::ApiError;

/// An input that fails validation: which field, why, and optionally the value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidField {
    pub field: String,
    pub message: String,
    pub value: Option<serde_json::Value>,
}

impl InvalidField {
    /// An error naming `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into(), value: None }
    }

    /// An error naming `field` and the rejected `value`.
    pub fn with_value(
        field: impl Into<String>,
        value: impl Into<serde_json::Value>,
        message: impl Into<String>,
    ) -> Self {
        Self { field: field.into(), message: message.into(), value: Some(value.into()) }
    }
}

impl From<InvalidField> for ApiError {
    fn from(err: InvalidField) -> Self {
        match err.value {
            Some(value) => ApiError::invalid_value(err.field, value, err.message),
            None => ApiError::validation(err.field, err.message),
        }
    }
}

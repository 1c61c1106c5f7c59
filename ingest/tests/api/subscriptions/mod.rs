//! `/api/v1/webhooks/subscriptions`: CRUD, validation, access control,
//! secrets and pagination.

mod access;
mod crud;
mod pagination;
mod secrets;
mod validation;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_error, TestApp};

pub const COLLECTION: &str = "/api/v1/webhooks/subscriptions";

/// The smallest valid create body.
pub fn minimal_body() -> Value {
    json!({"url": "https://example.com/hook", "events": ["invoice.created"]})
}

/// The path of one subscription.
pub fn item_path(id: &str) -> String {
    format!("{COLLECTION}/{id}")
}

/// Creates a subscription (asserting 201) and returns the response body.
pub async fn create(app: &TestApp, token: &str, body: &Value) -> Value {
    let (status, created) = app.post(COLLECTION, token, body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created
}

/// The id of a created subscription.
pub fn id_of(body: &Value) -> String {
    body["id"].as_str().unwrap_or_else(|| panic!("no id in {body}")).to_owned()
}

/// Asserts a 422 `validation_failed` naming `field`; returns `details`.
pub async fn assert_rejected(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: &Value,
    field: &str,
) -> Value {
    let (status, response) = app.request(method.clone(), path, Some(token), Some(body)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{method} {path} {body} → {response}");
    let details = assert_error(&response, "validation_failed");
    assert_eq!(details["field"], field, "{method} {path} {body} → {response}");
    details
}

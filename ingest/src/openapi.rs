//! The OpenAPI 3 document, generated from the handlers' `#[utoipa::path]`
//! annotations and served at `GET /api/v1/openapi.json`. Add a route by adding
//! its handler to `paths(...)`, one line each.

use std::sync::OnceLock;

use actix_web::{web, HttpResponse};
use utoipa::{
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    Modify, OpenApi, ToSchema,
};

use crate::{error::ApiError, routes};

/// Every documented route and schema of the ingest API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "DotMac Webhooks API",
        description = "Manage webhook subscriptions, publish events and inspect deliveries. \
                       Authenticate with `Authorization: Bearer <API key>`."
    ),
    paths(
        openapi_json,
        routes::catalog::list_event_types,
        routes::events::publish_event,
        routes::subscriptions::crud::create_subscription,
        routes::subscriptions::crud::list_subscriptions,
        routes::subscriptions::crud::get_subscription,
        routes::subscriptions::crud::update_subscription,
        routes::subscriptions::crud::delete_subscription,
        routes::subscriptions::secret::rotate_secret,
        routes::subscriptions::test_event::send_test_event,
        routes::deliveries::list_deliveries,
        routes::deliveries::get_delivery,
        routes::deliveries::retry_delivery,
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&BearerAuth),
    tags(
        (name = "subscriptions", description = "Where a tenant's events are delivered"),
        (name = "deliveries", description = "The delivery log, manual retries and test events"),
        (name = "catalog", description = "The event types one can subscribe to"),
        (name = "publishing", description = "Events from platform modules, fanned out to subscriptions"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDoc;

/// The error body every failing route answers (see `crate::error`).
#[derive(ToSchema)]
#[expect(dead_code, reason = "documents the shape `ApiError` writes; never built")]
pub struct ErrorBody {
    error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(ToSchema)]
#[expect(dead_code, reason = "documents the shape `ApiError` writes; never built")]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `validation_failed`, `not_found`, `unauthorized`.
    #[schema(example = "validation_failed")]
    code: String,
    /// For humans; may change.
    message: String,
    /// For `validation_failed`: `field` (e.g. `events[2]`, `headers.X-Foo`) and sometimes `value`.
    #[schema(value_type = Object)]
    details: serde_json::Value,
}

/// The answers every tenant route may give before it reads anything else:
/// 401 without a valid key, 403 for a publisher key. Each tenant route lists
/// it in its `responses(...)`, beside its own.
#[derive(utoipa::IntoResponses)]
pub enum TenantAuthErrors {
    /// Missing or wrong API key.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// Not a tenant key.
    #[response(status = 403)]
    Forbidden(ErrorBody),
}

/// Declares the `bearer` scheme the paths' `security(("bearer" = []))` refers to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("API key").build()),
        );
    }
}

/// The document as JSON, built once.
fn document() -> Result<&'static str, ApiError> {
    static DOCUMENT: OnceLock<Result<String, String>> = OnceLock::new();
    DOCUMENT
        .get_or_init(|| ApiDoc::openapi().to_json().map_err(|e| e.to_string()))
        .as_deref()
        .map_err(|e| ApiError::Internal(format!("rendering the OpenAPI document failed: {e}")))
}

/// This API's OpenAPI 3 document (no authentication needed).
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "OpenAPI 3 document", content_type = "application/json")))]
pub async fn openapi_json() -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().content_type("application/json").body(document()?))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/openapi.json", web::get().to(openapi_json));
}

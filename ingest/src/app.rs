//! Builds the actix `App` (no socket), so tests and `main` serve the same thing.

use actix_web::{
    dev::{ServiceFactory, ServiceRequest, ServiceResponse},
    http::StatusCode,
    middleware::{self, ErrorHandlerResponse, ErrorHandlers},
    web, App, Error, ResponseError,
};
use shared::telemetry::{self, Readiness};

use crate::{console, error::ApiError, metric_names, routes, state::AppState};

/// The whole ingest HTTP application.
pub fn build_app(
    state: AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl actix_web::body::MessageBody>,
        Error = Error,
        InitError = (),
    >,
> {
    let readiness =
        Readiness { pool: state.pool.clone(), broker: state.broker.clone(), metrics: metric_names::SERVICE };
    App::new()
        .app_data(web::Data::new(state))
        .app_data(web::Data::new(readiness))
        .wrap(ErrorHandlers::new().handler(StatusCode::METHOD_NOT_ALLOWED, method_not_allowed))
        .wrap(middleware::from_fn(crate::extract::reject_malformed_query))
        .wrap(middleware::from_fn(|req, next| telemetry::record_request(metric_names::SERVICE, req, next)))
        .configure(telemetry::health_routes)
        .configure(routes::configure)
        .configure(console::configure)
        .default_service(web::to(|| async { Err::<actix_web::HttpResponse, _>(ApiError::NotFound) }))
}

/// Gives actix's bare 405 (a known path, another method) the contract's error body.
fn method_not_allowed<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let (req, _) = res.into_parts();
    let res = ServiceResponse::new(req, ApiError::MethodNotAllowed.error_response()).map_into_right_body();
    Ok(ErrorHandlerResponse::Response(res))
}

//! Builds the actix `App` (no socket), so tests and `main` serve the same thing.

use actix_web::{
    dev::{ServiceFactory, ServiceRequest, ServiceResponse},
    middleware, web, App, Error,
};
use shared::telemetry::{self, Readiness};

use crate::{error::ApiError, routes, state::AppState};

/// The whole ingest HTTP application.
pub fn build_app(
    state: AppState,
) -> App<impl ServiceFactory<ServiceRequest, Config = (), Response = ServiceResponse<impl actix_web::body::MessageBody>, Error = Error, InitError = ()>>
{
    let readiness = Readiness { pool: state.pool.clone(), broker: state.broker.clone() };
    App::new()
        .app_data(web::Data::new(state))
        .app_data(web::Data::new(readiness))
        .wrap(middleware::from_fn(telemetry::record_request))
        .configure(telemetry::health_routes)
        .configure(routes::configure)
        .default_service(web::to(|| async { Err::<actix_web::HttpResponse, _>(ApiError::NotFound) }))
}

//! REST routes under `/api/v1`, a file per resource.

pub mod catalog;
pub mod deliveries;
pub mod events;
pub mod subscriptions;

use actix_web::web;

/// Registers every `/api/v1` route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            .configure(crate::openapi::configure)
            .configure(catalog::configure)
            .configure(events::configure)
            .configure(subscriptions::configure)
            .configure(deliveries::configure),
    );
}

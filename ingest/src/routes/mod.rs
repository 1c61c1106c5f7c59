//! REST routes under `/api/v1`, a file per resource.

pub mod catalog;
pub mod events;

use actix_web::web;

/// Registers every `/api/v1` route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            .configure(catalog::configure)
            .configure(events::configure),
    );
}

//! REST routes under `/api/v1`, a file per resource.

pub mod catalog;
pub mod deliveries;
pub mod delivery_log;
pub mod event_lookup;
pub mod events;
pub mod jobs;
pub mod subscriptions;
pub mod window;

use actix_web::web;

/// Registers every `/api/v1` route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            .configure(crate::openapi::configure)
            .configure(catalog::configure)
            .configure(events::configure)
            .configure(subscriptions::configure)
            // Before `deliveries`: `/webhooks/deliveries/retry` must not be taken for `/webhooks/deliveries/{id}`.
            .configure(jobs::configure)
            .configure(deliveries::configure)
            .configure(delivery_log::configure)
            .configure(event_lookup::configure),
    );
}

//! `/webhooks/subscriptions`: a tenant's subscriptions (CRUD, secret rotation,
//! test events). `/{id}/deliveries` lives with the delivery routes.

pub mod crud;
pub mod dto;
pub mod page;
pub mod secret;
pub mod test_event;

use actix_web::web;
use shared::{
    db::DbConn,
    models::subscription::{self, Subscription},
};
use uuid::Uuid;

use crate::error::ApiError;

/// The tenant's live (not deleted) subscription `id`, or 404.
pub(crate) async fn live_subscription(conn: &mut DbConn, tenant_id: &str, id: Uuid) -> Result<Subscription, ApiError> {
    subscription::find(conn, tenant_id, id).await?.ok_or(ApiError::NotFound)
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/webhooks/subscriptions")
            .route(web::post().to(crud::create_subscription))
            .route(web::get().to(crud::list_subscriptions)),
    )
    .service(
        web::resource("/webhooks/subscriptions/{id}")
            .route(web::get().to(crud::get_subscription))
            .route(web::patch().to(crud::update_subscription))
            .route(web::delete().to(crud::delete_subscription)),
    )
    .service(web::resource("/webhooks/subscriptions/{id}/rotate-secret").route(web::post().to(secret::rotate_secret)))
    .service(web::resource("/webhooks/subscriptions/{id}/test").route(web::post().to(test_event::send_test_event)));
}

//! `GET /webhooks/events`: the event catalog.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use shared::catalog::EventType;

use crate::{auth::Auth, error::ApiError, state::AppState};

#[derive(Serialize, utoipa::ToSchema)]
pub struct CatalogResponse<'a> {
    items: &'a [EventType],
}

/// Every event type subscribers can ask for.
#[utoipa::path(get, path = "/api/v1/webhooks/events", tag = "catalog",
    responses((status = 200, body = inline(CatalogResponse)), (status = 401)),
    security(("bearer" = [])))]
pub async fn list_event_types(_auth: Auth, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(CatalogResponse { items: state.catalog.types() }))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/webhooks/events", web::get().to(list_event_types));
}

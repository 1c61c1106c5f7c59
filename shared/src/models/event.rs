//! Published events, each stored once per tenant and `event_id`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use crate::schema::events;

/// An event row; `payload` is the exact envelope every subscriber receives.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = events)]
pub struct Event {
    pub id: uuid::Uuid,
    pub tenant_id: String,
    pub event_id: String,
    pub event_type: String,
    pub payload: String,
    pub source: String,
    pub delivery_count: i32,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = events)]
pub struct NewEvent {
    pub id: uuid::Uuid,
    pub tenant_id: String,
    pub event_id: String,
    pub event_type: String,
    pub payload: String,
    pub source: String,
}

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

/// The tenant's event with the publisher's `event_id`, if any.
pub async fn find_by_event_id(
    conn: &mut diesel_async::AsyncPgConnection,
    tenant_id: &str,
    event_id: &str,
) -> QueryResult<Option<Event>> {
    use events::dsl as ev;
    let query =
        ev::events.filter(ev::tenant_id.eq(tenant_id)).filter(ev::event_id.eq(event_id)).select(Event::as_select());
    diesel_async::RunQueryDsl::get_result(query, conn).await.optional()
}

/// The stored envelope of the event row `event_ref`.
pub async fn payload_of(conn: &mut diesel_async::AsyncPgConnection, event_ref: uuid::Uuid) -> QueryResult<String> {
    use events::dsl as ev;
    diesel_async::RunQueryDsl::get_result(ev::events.find(event_ref).select(ev::payload), conn).await
}

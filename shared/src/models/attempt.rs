//! Delivery attempts: one row per HTTP try, with its outcome code.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use crate::schema::delivery_attempts;

/// An attempt row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = delivery_attempts)]
pub struct Attempt {
    pub id: uuid::Uuid,
    pub delivery_id: uuid::Uuid,
    pub attempt: i32,
    pub outcome: String,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i32,
    pub response_body: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Every header sent, sensitive values masked (`null` when nothing was sent).
    pub request_headers: Option<serde_json::Value>,
    /// The answer's headers, up to 8 KiB (`null` without an answer).
    pub response_headers: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = delivery_attempts)]
pub struct NewAttempt {
    pub id: uuid::Uuid,
    pub delivery_id: uuid::Uuid,
    pub attempt: i32,
    pub outcome: String,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i32,
    pub response_body: Option<String>,
    pub request_headers: Option<serde_json::Value>,
    pub response_headers: Option<serde_json::Value>,
}

/// Every attempt of a delivery, in order.
pub async fn for_delivery(
    conn: &mut diesel_async::AsyncPgConnection,
    delivery_id: uuid::Uuid,
) -> QueryResult<Vec<Attempt>> {
    use delivery_attempts::dsl as a;
    let query = a::delivery_attempts
        .filter(a::delivery_id.eq(delivery_id))
        .select(Attempt::as_select())
        .order(a::attempt.asc());
    diesel_async::RunQueryDsl::load(query, conn).await
}

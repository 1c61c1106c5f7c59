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
}

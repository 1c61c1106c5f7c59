//! Deliveries: one event to one subscription. The table is also the outbox:
//! `enqueued` is false until the broker confirmed the message for the next attempt.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;

use crate::schema::deliveries;

/// The delivery states of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Retrying,
    Succeeded,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Retrying => "retrying",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "pending" => Self::Pending,
            "retrying" => Self::Retrying,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            _ => return None,
        })
    }

    /// Whether nothing more will happen without a manual retry.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// A delivery row.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = deliveries)]
pub struct Delivery {
    pub id: uuid::Uuid,
    pub tenant_id: String,
    pub subscription_id: uuid::Uuid,
    pub event_ref: uuid::Uuid,
    pub event_id: String,
    pub event_type: String,
    pub status: String,
    pub attempt_count: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub manual_retry: bool,
    pub enqueued: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Marks deliveries whose message for `attempt` the broker confirmed. A row
/// that has moved past that attempt is left alone, so a late confirm never
/// hides the outbox marker of a newer attempt.
pub async fn mark_enqueued(
    conn: &mut diesel_async::AsyncPgConnection,
    confirmed: &[(uuid::Uuid, i32)],
) -> QueryResult<usize> {
    use diesel::sql_types::{Array, Int4, Uuid};
    if confirmed.is_empty() {
        return Ok(0);
    }
    let (ids, attempts): (Vec<uuid::Uuid>, Vec<i32>) = confirmed.iter().copied().unzip();
    let query = diesel::sql_query(
        "UPDATE deliveries d SET enqueued = true \
         FROM unnest($1::uuid[], $2::int4[]) AS m(id, attempt) \
         WHERE d.id = m.id AND d.attempt_count = m.attempt - 1 AND NOT d.enqueued",
    )
    .bind::<Array<Uuid>, _>(ids)
    .bind::<Array<Int4>, _>(attempts);
    diesel_async::RunQueryDsl::execute(query, conn).await
}

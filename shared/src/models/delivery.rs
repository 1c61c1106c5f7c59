//! Deliveries: one event to one subscription. The table is also the outbox:
//! `enqueued` is false until the broker confirmed the message for the next attempt.

use chrono::{DateTime, Utc};
use diesel::{
    deserialize::{FromSql, FromSqlRow},
    expression::AsExpression,
    pg::{Pg, PgValue},
    prelude::*,
    serialize::{Output, ToSql},
    sql_types::Text,
};
use serde::Serialize;

use crate::schema::deliveries;

/// The delivery states of the contract, stored as text in `deliveries.status`
/// (whose CHECK constraint lists the same four words). Reading any other
/// value is an error, never a silent default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Retrying,
    Succeeded,
    Failed,
}

/// `status IN` list of the unfinished states (`pending`, `retrying`) as SQL
/// text. Written into the statements, not bound, so that PostgreSQL can use the
/// partial index `deliveries_outbox_idx` (whose predicate says the same); a
/// test checks it against [`DeliveryStatus::is_final`].
pub const UNFINISHED_SQL: &str = "('pending', 'retrying')";

impl DeliveryStatus {
    /// Every state, in the contract's order.
    pub const ALL: [Self; 4] = [Self::Pending, Self::Retrying, Self::Succeeded, Self::Failed];

    /// The word stored and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Retrying => "retrying",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    /// The state a stored or requested word names, if any.
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

impl ToSql<Text, Pg> for DeliveryStatus {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> diesel::serialize::Result {
        <str as ToSql<Text, Pg>>::to_sql(self.as_str(), out)
    }
}

impl FromSql<Text, Pg> for DeliveryStatus {
    fn from_sql(value: PgValue<'_>) -> diesel::deserialize::Result<Self> {
        let word = <String as FromSql<Text, Pg>>::from_sql(value)?;
        Self::parse(&word).ok_or_else(|| format!("unknown delivery status {word:?}").into())
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
    pub status: DeliveryStatus,
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
///
/// Rows a dispatcher holds locked right now are skipped rather than waited
/// for: waiting on many rows in another order than the dispatcher's batches
/// deadlocked (PostgreSQL breaks that only after `deadlock_timeout`). A skipped
/// row is harmless: the dispatcher already has its message and sets `enqueued`
/// when it records the attempt; at worst the outbox relay queues a duplicate
/// message, which the dispatcher's claim drops.
///
/// A row whose due time is in the future is left alone too: a dispatcher got
/// the message first and parked the delivery in the database (circuit open),
/// so no message for it is queued any more, and marking it would hide it from
/// the scheduler for good.
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
         FROM unnest($1::uuid[], $2::int4[]) AS m(id, attempt), \
           (SELECT id FROM deliveries WHERE id = ANY($1) ORDER BY id FOR UPDATE SKIP LOCKED) AS l \
         WHERE d.id = m.id AND l.id = d.id AND d.attempt_count = m.attempt - 1 AND NOT d.enqueued \
           AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= now())",
    )
    .bind::<Array<Uuid>, _>(ids)
    .bind::<Array<Int4>, _>(attempts);
    diesel_async::RunQueryDsl::execute(crate::db::Prepared(query), conn).await
}

/// Where a page of a delivery log starts: after this `(created_at, id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPosition {
    pub created_at: DateTime<Utc>,
    pub id: uuid::Uuid,
}

/// Filters of a delivery log page.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub status: Option<DeliveryStatus>,
    pub event_type: Option<String>,
    pub after: Option<LogPosition>,
}

/// One page of a subscription's deliveries, newest first (`created_at DESC,
/// id DESC`), fetching `limit + 1` so the caller knows if more follow.
pub async fn list_for_subscription(
    conn: &mut diesel_async::AsyncPgConnection,
    tenant_id: &str,
    subscription_id: uuid::Uuid,
    filter: &LogFilter,
    limit: i64,
) -> QueryResult<Vec<Delivery>> {
    use deliveries::dsl as d;
    let mut query = d::deliveries
        .filter(d::tenant_id.eq(tenant_id))
        .filter(d::subscription_id.eq(subscription_id))
        .select(Delivery::as_select())
        .order((d::created_at.desc(), d::id.desc()))
        .limit(limit + 1)
        .into_boxed();
    if let Some(status) = filter.status {
        query = query.filter(d::status.eq(status));
    }
    if let Some(event_type) = &filter.event_type {
        query = query.filter(d::event_type.eq(event_type.clone()));
    }
    if let Some(after) = filter.after {
        query = query
            .filter(d::created_at.lt(after.created_at).or(d::created_at.eq(after.created_at).and(d::id.lt(after.id))));
    }
    diesel_async::RunQueryDsl::load(query, conn).await
}

/// The tenant's delivery `id`, if any (also when its subscription was deleted).
pub async fn find(
    conn: &mut diesel_async::AsyncPgConnection,
    tenant_id: &str,
    id: uuid::Uuid,
) -> QueryResult<Option<Delivery>> {
    use deliveries::dsl as d;
    let query = d::deliveries.filter(d::id.eq(id)).filter(d::tenant_id.eq(tenant_id)).select(Delivery::as_select());
    diesel_async::RunQueryDsl::get_result(query, conn).await.optional()
}

/// Prepares a manual retry: the delivery becomes `pending` with
/// `manual_retry` set (no automatic retries after that attempt) and
/// `enqueued = false` until the new message is confirmed (so the outbox relay
/// queues it if the caller cannot). Returns the updated row.
pub async fn request_manual_retry(
    conn: &mut diesel_async::AsyncPgConnection,
    tenant_id: &str,
    id: uuid::Uuid,
) -> QueryResult<Option<Delivery>> {
    use deliveries::dsl as d;
    let query = diesel::update(d::deliveries.filter(d::id.eq(id)).filter(d::tenant_id.eq(tenant_id)))
        .set((
            d::manual_retry.eq(true),
            d::status.eq(DeliveryStatus::Pending),
            d::enqueued.eq(false),
            d::next_attempt_at.eq(diesel::dsl::now),
            d::updated_at.eq(diesel::dsl::now),
        ))
        .returning(Delivery::as_returning());
    diesel_async::RunQueryDsl::get_result(query, conn).await.optional()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_reads_back_from_its_word() {
        for status in DeliveryStatus::ALL {
            assert_eq!(DeliveryStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(DeliveryStatus::parse("Pending"), None);
    }

    #[test]
    fn the_unfinished_sql_list_names_exactly_the_states_that_are_not_final() {
        let listed: Vec<String> =
            DeliveryStatus::ALL.iter().filter(|s| !s.is_final()).map(|s| format!("'{}'", s.as_str())).collect();
        assert_eq!(UNFINISHED_SQL, format!("({})", listed.join(", ")));
    }
}

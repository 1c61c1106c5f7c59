//! Deliveries: one event to one subscription. The table is also the outbox:
//! `enqueued` is false until the broker confirmed the message for the next attempt.

use chrono::{DateTime, Utc};
use diesel::{deserialize::FromSqlRow, expression::AsExpression, prelude::*, sql_types::Text};
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
/// partial indexes `deliveries_due_idx` and `deliveries_waiting_idx` (whose
/// predicates say the same); a
/// test checks it against [`DeliveryStatus::is_final`].
pub const UNFINISHED_SQL: &str = "('pending', 'retrying')";

/// How long a dispatcher's claim on an attempt outlives the subscription's
/// timeout (time to record the outcome): a claim is taken until
/// `now() + timeout_seconds + CLAIM_MARGIN_SECONDS`, so it started that long
/// before `claimed_until`.
pub const CLAIM_MARGIN_SECONDS: i32 = 5;

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

super::text_column!(DeliveryStatus, "delivery status");

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
/// Rows already marked (the dispatcher's record sets `enqueued` too, and it
/// usually comes first) or claimed by a dispatcher (which has the message and
/// marks the row when it records the attempt; the outbox relay leaves claimed
/// rows alone, and takes the row again if the claim runs out unrecorded) are
/// not even locked: a row lock is a write to the row, and the claims of a
/// fan-out burst waited behind marks holding a thousand row locks.
///
/// A row whose due time is in the future is left alone too: a dispatcher got
/// the message first and parked the delivery in the database (circuit open),
/// so no message for it is queued any more, and marking it would hide it from
/// the scheduler for good.
pub async fn mark_enqueued(
    conn: &mut diesel_async::AsyncPgConnection,
    confirmed: &[QueuedAttempt],
) -> QueryResult<usize> {
    use diesel::sql_types::{Array, Int4, Uuid};
    if confirmed.is_empty() {
        return Ok(0);
    }
    let (ids, attempts): (Vec<uuid::Uuid>, Vec<i32>) = confirmed.iter().map(|q| (q.delivery_id, q.attempt)).unzip();
    let query = diesel::sql_query(
        "WITH l AS ( \
           SELECT id FROM deliveries WHERE id = ANY($1) AND NOT enqueued AND claimed_until IS NULL \
           ORDER BY id FOR UPDATE SKIP LOCKED) \
         UPDATE deliveries d SET enqueued = true \
         FROM unnest($1::uuid[], $2::int4[]) AS m(id, attempt) \
         WHERE d.id = m.id AND d.id = ANY (ARRAY(SELECT id FROM l)) AND d.attempt_count = m.attempt - 1 \
           AND NOT d.enqueued AND (d.next_attempt_at IS NULL OR d.next_attempt_at <= now())",
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

/// Filters of a delivery log page (a subscription's log sets `subscription_id`).
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub status: Option<DeliveryStatus>,
    pub event_type: Option<String>,
    pub subscription_id: Option<uuid::Uuid>,
    /// Only deliveries created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only deliveries created before this time.
    pub until: Option<DateTime<Utc>>,
    pub after: Option<LogPosition>,
}

/// One page of a tenant's deliveries, newest first (`created_at DESC, id
/// DESC`), fetching `limit + 1` so the caller knows if more follow. Served by
/// the `(subscription_id, created_at, id)` index for a subscription's log and
/// the `(tenant_id, created_at, id)` one for the tenant-wide log.
pub async fn list(
    conn: &mut diesel_async::AsyncPgConnection,
    tenant_id: &str,
    filter: &LogFilter,
    limit: i64,
) -> QueryResult<Vec<Delivery>> {
    use deliveries::dsl as d;
    let mut query = d::deliveries
        .filter(d::tenant_id.eq(tenant_id))
        .select(Delivery::as_select())
        .order((d::created_at.desc(), d::id.desc()))
        .limit(limit + 1)
        .into_boxed();
    if let Some(subscription_id) = filter.subscription_id {
        query = query.filter(d::subscription_id.eq(subscription_id));
    }
    if let Some(status) = filter.status {
        query = query.filter(d::status.eq(status));
    }
    if let Some(event_type) = &filter.event_type {
        query = query.filter(d::event_type.eq(event_type.clone()));
    }
    if let Some(since) = filter.since {
        query = query.filter(d::created_at.ge(since));
    }
    if let Some(until) = filter.until {
        query = query.filter(d::created_at.lt(until));
    }
    if let Some(after) = filter.after {
        query = query
            .filter(d::created_at.lt(after.created_at).or(d::created_at.eq(after.created_at).and(d::id.lt(after.id))));
    }
    diesel_async::RunQueryDsl::load(query, conn).await
}

/// Every delivery of an event (`event_ref` is the event row's id), oldest first.
pub async fn for_event(
    conn: &mut diesel_async::AsyncPgConnection,
    event_ref: uuid::Uuid,
) -> QueryResult<Vec<Delivery>> {
    use deliveries::dsl as d;
    let query = d::deliveries.filter(d::event_ref.eq(event_ref)).select(Delivery::as_select()).order(d::id.asc());
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

/// Which deliveries [`request_retries`] may requeue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryScope {
    /// Whatever their status (the manual retry of one delivery).
    AnyStatus,
    /// Only those still `failed` (recover and bulk-retry jobs: a delivery
    /// that is already on its way again is left alone).
    OnlyFailed,
}

/// One attempt of a delivery to queue on the dispatch exchange once its
/// transaction is committed: what a dispatch message carries
/// ([`crate::amqp::DispatchMessage`]). Every statement that makes a delivery
/// due and returns it to be queued returns these columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, QueryableByName)]
pub struct QueuedAttempt {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub delivery_id: uuid::Uuid,
    /// 1-based attempt number.
    #[diesel(sql_type = diesel::sql_types::Int4)]
    pub attempt: i32,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub subscription_id: uuid::Uuid,
}

/// The one home of a manual retry. Each of the tenant's deliveries `ids`
/// becomes `pending` with `manual_retry` set (no automatic retries follow that
/// attempt) and `enqueued = false` until the broker confirms the message for
/// its next attempt, so the outbox relay queues it if the caller cannot.
///
/// The row also gets a short relay lease (`relay_lease_until`), so the
/// dispatchers' due-row scheduler and the outbox relay leave it to the
/// caller's publish instead of queueing a second message; should the caller
/// fail, they take it over once the lease ends.
///
/// Skipped: deliveries with an attempt in flight (a live dispatcher claim —
/// recording that attempt would overwrite the retry, so the caller answers
/// 409 instead of accepting and dropping it), deliveries whose subscription
/// is paused or deleted (nothing would be sent), and with
/// [`RetryScope::OnlyFailed`] any that are not `failed` any more.
pub async fn request_retries(
    conn: &mut diesel_async::AsyncPgConnection,
    tenant_id: &str,
    ids: &[uuid::Uuid],
    scope: RetryScope,
) -> QueryResult<Vec<QueuedAttempt>> {
    use diesel::sql_types::{Array, Bool, Text, Uuid};
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let query = diesel::sql_query(
        "UPDATE deliveries d SET manual_retry = true, status = 'pending', enqueued = false, \
           next_attempt_at = now(), relay_lease_until = now() + interval '30 seconds', updated_at = now() \
         FROM subscriptions s \
         WHERE d.id = ANY($1) AND d.tenant_id = $2 AND (NOT $3 OR d.status = 'failed') \
           AND (d.claimed_until IS NULL OR d.claimed_until < now()) \
           AND s.id = d.subscription_id AND s.is_active AND s.deleted_at IS NULL \
         RETURNING d.id AS delivery_id, d.attempt_count + 1 AS attempt, d.subscription_id",
    )
    .bind::<Array<Uuid>, _>(ids)
    .bind::<Text, _>(tenant_id)
    .bind::<Bool, _>(scope == RetryScope::OnlyFailed);
    diesel_async::RunQueryDsl::load(crate::db::Prepared(query), conn).await
}

/// Whether a dispatcher holds a live claim on the delivery (an attempt in flight).
pub async fn attempt_in_flight(conn: &mut diesel_async::AsyncPgConnection, id: uuid::Uuid) -> QueryResult<bool> {
    use deliveries::dsl as d;
    let query = d::deliveries.filter(d::id.eq(id)).filter(d::claimed_until.gt(diesel::dsl::now)).select(d::id);
    Ok(diesel_async::RunQueryDsl::get_result::<uuid::Uuid>(query, conn).await.optional()?.is_some())
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

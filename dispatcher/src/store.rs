//! The dispatcher's queries: claim an attempt, give a claim back, close a
//! delivery whose subscription is gone, and record an outcome.
//!
//! Every write is conditional on `attempt_count = attempt - 1`, so a stale or
//! duplicate message, or a dispatcher whose claim ran out, changes nothing.

use chrono::{DateTime, Utc};
use diesel::{
    sql_types::{Bool, Bytea, Int4, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid},
    QueryableByName,
};
use diesel::OptionalExtension;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use shared::models::attempt::NewAttempt;

/// How long a claim outlives the subscription's timeout: time to record the outcome.
pub const CLAIM_MARGIN_SECONDS: i32 = 5;

/// What the claim read: the delivery, its subscription and the event body.
#[derive(Debug, Clone, QueryableByName)]
pub struct Claimed {
    #[diesel(sql_type = SqlUuid)]
    pub delivery_id: uuid::Uuid,
    #[diesel(sql_type = SqlUuid)]
    pub subscription_id: uuid::Uuid,
    #[diesel(sql_type = Text)]
    pub event_id: String,
    #[diesel(sql_type = Text)]
    pub event_type: String,
    #[diesel(sql_type = Bool)]
    pub manual_retry: bool,
    #[diesel(sql_type = Text)]
    pub url: String,
    #[diesel(sql_type = Jsonb)]
    pub headers: serde_json::Value,
    #[diesel(sql_type = Int4)]
    pub timeout_seconds: i32,
    #[diesel(sql_type = Bool)]
    pub retry_enabled: bool,
    #[diesel(sql_type = Int4)]
    pub max_retries: i32,
    #[diesel(sql_type = Bool)]
    pub is_active: bool,
    #[diesel(sql_type = Bool)]
    pub is_deleted: bool,
    #[diesel(sql_type = Bytea)]
    pub secret_encrypted: Vec<u8>,
    #[diesel(sql_type = Nullable<Bytea>)]
    pub previous_secret_encrypted: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub secret_rotated_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Text)]
    pub payload: String,
}

/// The answer to a claim.
#[derive(Debug)]
pub enum Claim {
    /// This dispatcher now owns the attempt.
    Claimed(Box<Claimed>),
    /// Another dispatcher holds a live claim on this very attempt (a duplicate
    /// message, or one redelivered after its dispatcher died): try again later.
    Busy,
    /// The delivery is finished or past this attempt: nothing to do.
    Stale,
}

#[derive(QueryableByName)]
struct ClaimState {
    #[diesel(sql_type = Int4)]
    attempt_count: i32,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Bool)]
    manual_retry: bool,
    #[diesel(sql_type = Bool)]
    claim_live: bool,
}

/// Claims attempt `attempt` of a delivery in one statement that also reads
/// what the attempt needs. The claim holds for the subscription's timeout plus
/// [`CLAIM_MARGIN_SECONDS`].
pub async fn claim(conn: &mut AsyncPgConnection, delivery_id: uuid::Uuid, attempt: i32) -> diesel::QueryResult<Claim> {
    let claimed: Option<Claimed> = diesel::sql_query(
        "UPDATE deliveries d \
         SET claimed_until = now() + make_interval(secs => s.timeout_seconds + $3) \
         FROM subscriptions s, events e \
         WHERE d.id = $1 AND d.attempt_count = $2 - 1 \
           AND (d.status IN ('pending', 'retrying') OR d.manual_retry) \
           AND (d.claimed_until IS NULL OR d.claimed_until < now()) \
           AND s.id = d.subscription_id AND e.id = d.event_ref \
         RETURNING d.id AS delivery_id, d.subscription_id, d.event_id, d.event_type, d.manual_retry, \
           s.url, s.headers, s.timeout_seconds, s.retry_enabled, s.max_retries, s.is_active, \
           s.deleted_at IS NOT NULL AS is_deleted, s.secret_encrypted, s.previous_secret_encrypted, \
           s.secret_rotated_at, e.payload",
    )
    .bind::<SqlUuid, _>(delivery_id)
    .bind::<Int4, _>(attempt)
    .bind::<Int4, _>(CLAIM_MARGIN_SECONDS)
    .get_result(conn)
    .await
    .optional()?;
    if let Some(claimed) = claimed {
        return Ok(Claim::Claimed(Box::new(claimed)));
    }
    // Nothing claimed: a finished or later attempt (stale), or a live claim on this one.
    let state: Option<ClaimState> = diesel::sql_query(
        "SELECT attempt_count, status, manual_retry, \
           coalesce(claimed_until > now(), false) AS claim_live \
         FROM deliveries WHERE id = $1",
    )
    .bind::<SqlUuid, _>(delivery_id)
    .get_result(conn)
    .await
    .optional()?;
    Ok(match state {
        Some(s)
            if s.attempt_count == attempt - 1
                && s.claim_live
                && (matches!(s.status.as_str(), "pending" | "retrying") || s.manual_retry) =>
        {
            Claim::Busy
        }
        _ => Claim::Stale,
    })
}

/// Gives a claim back without an attempt (the message is deferred).
pub async fn release(conn: &mut AsyncPgConnection, delivery_id: uuid::Uuid, attempt: i32) -> diesel::QueryResult<()> {
    diesel::sql_query("UPDATE deliveries SET claimed_until = NULL WHERE id = $1 AND attempt_count = $2 - 1")
        .bind::<SqlUuid, _>(delivery_id)
        .bind::<Int4, _>(attempt)
        .execute(conn)
        .await
        .map(drop)
}

/// Fails a delivery whose subscription was deleted or paused, without an attempt.
pub async fn close_without_attempt(
    conn: &mut AsyncPgConnection,
    delivery_id: uuid::Uuid,
    attempt: i32,
    reason: &str,
) -> diesel::QueryResult<()> {
    diesel::sql_query(
        "UPDATE deliveries SET status = 'failed', last_error = $3, next_attempt_at = NULL, \
           claimed_until = NULL, manual_retry = false, updated_at = now() \
         WHERE id = $1 AND attempt_count = $2 - 1",
    )
    .bind::<SqlUuid, _>(delivery_id)
    .bind::<Int4, _>(attempt)
    .bind::<Text, _>(reason)
    .execute(conn)
    .await
    .map(drop)
}

/// What the delivery becomes after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextState {
    /// `succeeded`, `retrying` or `failed`.
    pub status: &'static str,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Disable the subscription with this reason (410 Gone).
    pub disable_subscription: Option<String>,
}

/// What recording did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Stored; `disabled` when this attempt disabled the subscription.
    Stored { disabled: bool },
    /// The delivery had moved past this attempt (our claim ran out and another
    /// dispatcher recorded it): nothing written.
    Superseded,
}

/// Stores the attempt row and the delivery's new state (and disables the
/// subscription on 410) in one transaction.
pub async fn record(
    conn: &mut AsyncPgConnection,
    subscription_id: uuid::Uuid,
    attempt_row: NewAttempt,
    next: NextState,
) -> diesel::QueryResult<Recorded> {
    conn.transaction(async move |conn| {
        {
            let retrying = next.status == "retrying";
            let updated = diesel::sql_query(
                "UPDATE deliveries SET attempt_count = $2, status = $3, next_attempt_at = $4, \
                   last_status_code = $5, last_error = $6, claimed_until = NULL, manual_retry = false, \
                   enqueued = NOT $7, updated_at = now() \
                 WHERE id = $1 AND attempt_count = $2 - 1",
            )
            .bind::<SqlUuid, _>(attempt_row.delivery_id)
            .bind::<Int4, _>(attempt_row.attempt)
            .bind::<Text, _>(next.status)
            .bind::<Nullable<Timestamptz>, _>(next.next_attempt_at)
            .bind::<Nullable<Int4>, _>(attempt_row.status_code)
            .bind::<Nullable<Text>, _>(attempt_row.error.clone())
            .bind::<Bool, _>(retrying)
            .execute(conn)
            .await?;
            if updated == 0 {
                return Ok(Recorded::Superseded);
            }
            diesel::insert_into(shared::schema::delivery_attempts::table).values(&attempt_row).execute(conn).await?;
            let mut disabled = false;
            if let Some(reason) = &next.disable_subscription {
                disabled = diesel::sql_query(
                    "UPDATE subscriptions SET is_active = false, disabled_reason = $2, updated_at = now() \
                     WHERE id = $1 AND is_active",
                )
                .bind::<SqlUuid, _>(subscription_id)
                .bind::<Text, _>(reason)
                .execute(conn)
                .await?
                    == 1;
            }
            Ok(Recorded::Stored { disabled })
        }
    })
    .await
}

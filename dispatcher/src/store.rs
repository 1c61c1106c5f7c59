//! The dispatcher's queries: claim an attempt, give a claim back, close a
//! delivery whose subscription is gone, and record an outcome.
//!
//! Every write is conditional on `attempt_count = attempt - 1`, so a stale or
//! duplicate message, or a dispatcher whose claim ran out, changes nothing.
//! Recording or parking also clears `relay_lease_until`: that lease covered
//! the message just handled, and the row's next due time is the scheduler's.
//!
//! The batched statements lock their delivery rows in id order first (the
//! `locked` CTE), so two batches over overlapping rows queue behind each other
//! instead of deadlocking. The update then takes its rows by
//! `id = ANY (ARRAY(SELECT id FROM locked))`, which runs the CTE once, not by
//! joining the CTE: the planner put the CTE scan inside a nested loop, one
//! pass over every locked id per row, and a batch of 256 cost 3× as much
//! (BENCHMARKS.md).

use chrono::{DateTime, Utc};
use std::{
    collections::{HashMap, HashSet},
    sync::LazyLock,
};

use diesel::OptionalExtension;
use diesel::{
    sql_types::{Array, Bool, Bytea, Int4, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid},
    QueryableByName,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use shared::{
    catalog,
    models::{
        attempt::NewAttempt,
        delivery::{DeliveryStatus, CLAIM_MARGIN_SECONDS, UNFINISHED_SQL},
        endpoint_health::Circuit,
        subscription,
    },
    operational::{self, OperationalEvent},
};

use crate::metric_names;

/// What the claim read: the delivery, its subscription and the event body.
#[derive(Debug, Clone, QueryableByName)]
pub struct Claimed {
    #[diesel(sql_type = Int4)]
    pub claimed_attempt: i32,
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
    /// Values sealed unless `headers_encrypted` is false (see `shared::header_values`).
    #[diesel(sql_type = Jsonb)]
    pub headers: serde_json::Value,
    #[diesel(sql_type = Bool)]
    pub headers_encrypted: bool,
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
    /// The subscription's circuit (`None`: no health row, i.e. closed).
    #[diesel(sql_type = Nullable<Text>)]
    pub circuit: Option<Circuit>,
    #[diesel(sql_type = Nullable<Int4>)]
    pub consecutive_failures: Option<i32>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub open_until: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    pub probe_delivery_id: Option<uuid::Uuid>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub probe_until: Option<DateTime<Utc>>,
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
    #[diesel(sql_type = SqlUuid)]
    id: uuid::Uuid,
    #[diesel(sql_type = Int4)]
    attempt_count: i32,
    #[diesel(sql_type = Text)]
    status: DeliveryStatus,
    #[diesel(sql_type = Bool)]
    manual_retry: bool,
    #[diesel(sql_type = Bool)]
    claim_live: bool,
}

/// The claim statement (see [`claim_many`]).
static CLAIM_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH locked AS (SELECT id FROM deliveries WHERE id = ANY($1) ORDER BY id FOR UPDATE) \
         UPDATE deliveries d \
         SET claimed_until = now() + make_interval(secs => s.timeout_seconds + $3) \
         FROM unnest($1::uuid[], $2::int4[]) AS m(id, attempt), events e, \
           subscriptions s LEFT JOIN endpoint_health h ON h.subscription_id = s.id \
         WHERE d.id = m.id AND d.id = ANY (ARRAY(SELECT id FROM locked)) AND d.attempt_count = m.attempt - 1 \
           AND (d.status IN {UNFINISHED_SQL} OR d.manual_retry) \
           AND (d.claimed_until IS NULL OR d.claimed_until < now()) \
           AND s.id = d.subscription_id AND e.id = d.event_ref \
         RETURNING m.attempt AS claimed_attempt, d.id AS delivery_id, d.subscription_id, d.event_id, \
           d.event_type, d.manual_retry, s.url, s.headers, s.headers_encrypted, s.timeout_seconds, s.retry_enabled, \
           s.max_retries, s.is_active, s.deleted_at IS NOT NULL AS is_deleted, s.secret_encrypted, \
           s.previous_secret_encrypted, s.secret_rotated_at, e.payload, h.circuit, h.consecutive_failures, \
           h.open_until, h.probe_delivery_id, h.probe_until"
    )
});

/// Claims attempt `attempt` of a delivery (see [`claim_many`]).
pub async fn claim(conn: &mut AsyncPgConnection, delivery_id: uuid::Uuid, attempt: i32) -> diesel::QueryResult<Claim> {
    let mut claims = claim_many(conn, &[(delivery_id, attempt)]).await?;
    Ok(claims.pop().unwrap_or(Claim::Stale))
}

/// Claims many `(delivery, attempt)` pairs in one statement that also reads
/// what each attempt needs; answers in the order asked. A claim holds for the
/// subscription's timeout plus [`CLAIM_MARGIN_SECONDS`]. The same pair asked
/// twice is claimed once; the second asker gets [`Claim::Busy`].
pub async fn claim_many(conn: &mut AsyncPgConnection, wanted: &[(uuid::Uuid, i32)]) -> diesel::QueryResult<Vec<Claim>> {
    let (ids, attempts): (Vec<uuid::Uuid>, Vec<i32>) = wanted.iter().copied().unzip();
    let claimed: Vec<Claimed> = shared::db::Prepared(
        diesel::sql_query(CLAIM_SQL.as_str())
            .bind::<Array<SqlUuid>, _>(&ids)
            .bind::<Array<Int4>, _>(&attempts)
            .bind::<Int4, _>(CLAIM_MARGIN_SECONDS),
    )
    .load(conn)
    .await?;
    let mut by_pair: HashMap<(uuid::Uuid, i32), Claimed> =
        claimed.into_iter().map(|c| ((c.delivery_id, c.claimed_attempt), c)).collect();
    let mut answers: Vec<Option<Claim>> =
        wanted.iter().map(|pair| by_pair.remove(pair).map(|c| Claim::Claimed(Box::new(c)))).collect();
    // Nothing claimed for the rest: a finished or later attempt (stale), or a
    // live claim on this very attempt (busy).
    let unanswered: Vec<uuid::Uuid> =
        wanted.iter().zip(&answers).filter(|(_, a)| a.is_none()).map(|((id, _), _)| *id).collect();
    if unanswered.is_empty() {
        return Ok(answers.into_iter().flatten().collect());
    }
    let states: Vec<ClaimState> = diesel::sql_query(
        "SELECT id, attempt_count, status, manual_retry, coalesce(claimed_until > now(), false) AS claim_live \
         FROM deliveries WHERE id = ANY($1)",
    )
    .bind::<Array<SqlUuid>, _>(&unanswered)
    .load(conn)
    .await?;
    let states: HashMap<uuid::Uuid, ClaimState> = states.into_iter().map(|s| (s.id, s)).collect();
    for (answer, &(id, attempt)) in answers.iter_mut().zip(wanted) {
        if answer.is_some() {
            continue;
        }
        *answer = Some(match states.get(&id) {
            Some(s) if s.attempt_count == attempt - 1 && s.claim_live && (!s.status.is_final() || s.manual_retry) => {
                Claim::Busy
            }
            _ => Claim::Stale,
        });
    }
    Ok(answers.into_iter().flatten().collect())
}

/// Extends this dispatcher's claim on an attempt that waited long for a slot,
/// so it does not run out while the request is made.
pub async fn extend_claim(
    conn: &mut AsyncPgConnection,
    delivery_id: uuid::Uuid,
    attempt: i32,
    timeout_seconds: i32,
) -> diesel::QueryResult<()> {
    diesel::sql_query(
        "UPDATE deliveries SET claimed_until = now() + make_interval(secs => $3 + $4) \
         WHERE id = $1 AND attempt_count = $2 - 1",
    )
    .bind::<SqlUuid, _>(delivery_id)
    .bind::<Int4, _>(attempt)
    .bind::<Int4, _>(timeout_seconds)
    .bind::<Int4, _>(CLAIM_MARGIN_SECONDS)
    .execute(conn)
    .await
    .map(drop)
}

/// A delivery to park in the database instead of attempting it now.
#[derive(Debug, Clone, Copy)]
pub struct Park {
    pub delivery_id: uuid::Uuid,
    pub attempt: i32,
    /// When it is due again; `None`: another dispatcher holds a live claim on
    /// this attempt, so it is due when that claim runs out (and the claim is kept).
    pub until: Option<DateTime<Utc>>,
}

/// Parks deliveries in one statement: `enqueued = false` with a due time, so
/// the due-row scheduler queues them again; status and attempt number stay.
/// Only where the delivery is still at `attempt - 1` (a recorded outcome wins).
pub async fn park_many(conn: &mut AsyncPgConnection, parks: &[Park]) -> diesel::QueryResult<Vec<bool>> {
    let ids: Vec<uuid::Uuid> = parks.iter().map(|p| p.delivery_id).collect();
    let rows: Vec<RecordedRow> = shared::db::Prepared(
        diesel::sql_query(
            "WITH locked AS (SELECT id FROM deliveries WHERE id = ANY($1) ORDER BY id FOR UPDATE) \
             UPDATE deliveries d SET enqueued = false, \
               next_attempt_at = coalesce(m.until, greatest(d.claimed_until, now()) + interval '1 second'), \
               claimed_until = CASE WHEN m.until IS NULL THEN d.claimed_until END, relay_lease_until = NULL \
             FROM unnest($1::uuid[], $2::int4[], $3::timestamptz[]) AS m(id, attempt, until) \
             WHERE d.id = m.id AND d.id = ANY (ARRAY(SELECT id FROM locked)) AND d.attempt_count = m.attempt - 1 \
               AND (d.status IN ('pending', 'retrying') OR d.manual_retry) \
             RETURNING d.id AS delivery_id",
        )
        .bind::<Array<SqlUuid>, _>(&ids)
        .bind::<Array<Int4>, _>(parks.iter().map(|p| p.attempt).collect::<Vec<_>>())
        .bind::<Array<Nullable<Timestamptz>>, _>(parks.iter().map(|p| p.until).collect::<Vec<_>>()),
    )
    .load(conn)
    .await?;
    let parked: HashSet<uuid::Uuid> = rows.into_iter().map(|r| r.delivery_id).collect();
    Ok(ids.iter().map(|id| parked.contains(id)).collect())
}

/// Why a subscription is disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisableCause {
    /// The endpoint answered 410 Gone.
    Gone,
    /// Every attempt failed for `AUTO_DISABLE_AFTER`.
    AutoDisable,
}

impl DisableCause {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Gone => "gone",
            Self::AutoDisable => "auto_disable",
        }
    }
}

/// Disables a subscription: the one place every automatic disable (410 Gone,
/// auto-disable) goes through. [`subscription::disable`] sets `is_active =
/// false` and `disabled_reason`, fails the deliveries waiting in the database
/// ("subscription disabled"; queued ones fail when their message arrives) and,
/// when `notify` (the trigger was not a delivery of an operational event),
/// stores a `webhook.subscription.disabled` event for the tenant, all in the
/// caller's transaction. True if this call disabled it (it was active).
pub async fn disable_subscription(
    conn: &mut AsyncPgConnection,
    subscription_id: uuid::Uuid,
    reason: &str,
    cause: DisableCause,
    notify: bool,
) -> diesel::QueryResult<bool> {
    let disabled = subscription::disable(conn, subscription_id, reason, notify).await?;
    if disabled {
        metrics::counter!(metric_names::SUBSCRIPTIONS_DISABLED, "cause" => cause.label()).increment(1);
        log::info!("subscription disabled subscription_id={subscription_id} reason={reason:?}");
    }
    Ok(disabled)
}

/// Gives a claim back without an attempt (the dispatcher is stopping).
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
        "UPDATE deliveries SET status = $4, last_error = $3, next_attempt_at = NULL, \
           claimed_until = NULL, manual_retry = false, updated_at = now() \
         WHERE id = $1 AND attempt_count = $2 - 1",
    )
    .bind::<SqlUuid, _>(delivery_id)
    .bind::<Int4, _>(attempt)
    .bind::<Text, _>(reason)
    .bind::<Text, _>(DeliveryStatus::Failed)
    .execute(conn)
    .await
    .map(drop)
}

/// What the delivery becomes after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextState {
    /// `succeeded`, `retrying` or `failed`.
    pub status: DeliveryStatus,
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

#[derive(QueryableByName)]
struct RecordedDelivery {
    #[diesel(sql_type = Text)]
    tenant_id: String,
    #[diesel(sql_type = Text)]
    event_id: String,
    #[diesel(sql_type = Text)]
    event_type: String,
}

/// Stores the attempt row and the delivery's new state in one transaction,
/// with what that state change causes: on 410 the subscription is disabled,
/// and the tenant's operational events (`webhook.subscription.disabled`,
/// `webhook.delivery.failed` when the delivery ends `failed`) are stored in
/// the same transaction — except for a delivery of an operational event,
/// which never causes another.
pub async fn record(
    conn: &mut AsyncPgConnection,
    subscription_id: uuid::Uuid,
    attempt_row: NewAttempt,
    next: NextState,
) -> diesel::QueryResult<Recorded> {
    conn.transaction(async move |conn| {
        let retrying = next.status == DeliveryStatus::Retrying;
        let updated: Option<RecordedDelivery> = diesel::sql_query(
            "UPDATE deliveries SET attempt_count = $2, status = $3, next_attempt_at = $4, \
                   last_status_code = $5, last_error = $6, claimed_until = NULL, relay_lease_until = NULL, \
                   manual_retry = false, \
                   enqueued = NOT $7, updated_at = now() \
                 WHERE id = $1 AND attempt_count = $2 - 1 \
                 RETURNING tenant_id, event_id, event_type",
        )
        .bind::<SqlUuid, _>(attempt_row.delivery_id)
        .bind::<Int4, _>(attempt_row.attempt)
        .bind::<Text, _>(next.status)
        .bind::<Nullable<Timestamptz>, _>(next.next_attempt_at)
        .bind::<Nullable<Int4>, _>(attempt_row.status_code)
        .bind::<Nullable<Text>, _>(attempt_row.error.clone())
        .bind::<Bool, _>(retrying)
        .get_result(conn)
        .await
        .optional()?;
        let Some(delivery) = updated else {
            return Ok(Recorded::Superseded);
        };
        diesel::insert_into(shared::schema::delivery_attempts::table).values(&attempt_row).execute(conn).await?;
        let notify = !catalog::is_reserved(&delivery.event_type);
        let mut disabled = false;
        if let Some(reason) = &next.disable_subscription {
            disabled = disable_subscription(conn, subscription_id, reason, DisableCause::Gone, notify).await?;
        }
        if next.status == DeliveryStatus::Failed && notify {
            let event = OperationalEvent::DeliveryFailed {
                subscription_id,
                delivery_id: attempt_row.delivery_id,
                event_id: delivery.event_id,
                event_type: delivery.event_type,
                attempts: attempt_row.attempt,
                last_status_code: attempt_row.status_code,
                last_error: attempt_row.error.clone(),
            };
            operational::emit(conn, &delivery.tenant_id, &event).await?;
        }
        Ok(Recorded::Stored { disabled })
    })
    .await
}

#[derive(QueryableByName)]
struct RecordedRow {
    #[diesel(sql_type = SqlUuid)]
    delivery_id: uuid::Uuid,
}

/// Records many outcomes in one statement (one implicit transaction): each
/// delivery's new state and its attempt row, both only where the delivery is
/// still at `attempt - 1`. Outcomes that disable a subscription or fail the
/// delivery (both have consequences in the same transaction), and a second
/// outcome for the same delivery, go through [`record`] one by one. Answers in order.
pub async fn record_many(
    conn: &mut AsyncPgConnection,
    outcomes: Vec<(uuid::Uuid, NewAttempt, NextState)>,
) -> diesel::QueryResult<Vec<Recorded>> {
    let mut seen = HashSet::new();
    let batchable: Vec<bool> = outcomes
        .iter()
        .map(|(_, row, next)| {
            next.disable_subscription.is_none() && next.status != DeliveryStatus::Failed && seen.insert(row.delivery_id)
        })
        .collect();
    let batch: Vec<&(uuid::Uuid, NewAttempt, NextState)> =
        outcomes.iter().zip(&batchable).filter(|(_, b)| **b).map(|(o, _)| o).collect();
    let mut stored = HashSet::new();
    if !batch.is_empty() {
        let rows: Vec<RecordedRow> = shared::db::Prepared(
            diesel::sql_query(
                "WITH v AS ( \
               SELECT * FROM unnest($1::uuid[], $2::int4[], $3::text[], $4::timestamptz[], $5::int4[], \
                 $6::text[], $7::bool[], $8::uuid[], $9::text[], $10::int4[], $11::text[], $12::jsonb[], \
                 $13::jsonb[]) \
               AS v(delivery_id, attempt, status, next_attempt_at, status_code, error, retrying, \
                 attempt_id, outcome, duration_ms, response_body, request_headers, response_headers)), \
             locked AS (SELECT id FROM deliveries WHERE id = ANY($1) ORDER BY id FOR UPDATE), \
             upd AS ( \
               UPDATE deliveries d SET attempt_count = v.attempt, status = v.status, \
                 next_attempt_at = v.next_attempt_at, last_status_code = v.status_code, \
                 last_error = v.error, claimed_until = NULL, relay_lease_until = NULL, manual_retry = false, \
                 enqueued = NOT v.retrying, updated_at = now() \
               FROM v WHERE d.id = v.delivery_id AND d.id = ANY (ARRAY(SELECT id FROM locked)) \
                 AND d.attempt_count = v.attempt - 1 \
               RETURNING d.id, v.attempt_id, v.attempt, v.outcome, v.status_code, v.error, v.duration_ms, \
                 v.response_body, v.request_headers, v.response_headers), \
             ins AS ( \
               INSERT INTO delivery_attempts \
                 (id, delivery_id, attempt, outcome, status_code, error, duration_ms, response_body, \
                  request_headers, response_headers) \
               SELECT attempt_id, id, attempt, outcome, status_code, error, duration_ms, response_body, \
                 request_headers, response_headers \
               FROM upd) \
             SELECT id AS delivery_id FROM upd",
            )
            .bind::<Array<SqlUuid>, _>(batch.iter().map(|(_, r, _)| r.delivery_id).collect::<Vec<_>>())
            .bind::<Array<Int4>, _>(batch.iter().map(|(_, r, _)| r.attempt).collect::<Vec<_>>())
            .bind::<Array<Text>, _>(batch.iter().map(|(_, _, n)| n.status).collect::<Vec<_>>())
            .bind::<Array<Nullable<Timestamptz>>, _>(
                batch.iter().map(|(_, _, n)| n.next_attempt_at).collect::<Vec<_>>(),
            )
            .bind::<Array<Nullable<Int4>>, _>(batch.iter().map(|(_, r, _)| r.status_code).collect::<Vec<_>>())
            .bind::<Array<Nullable<Text>>, _>(batch.iter().map(|(_, r, _)| r.error.clone()).collect::<Vec<_>>())
            .bind::<Array<Bool>, _>(
                batch.iter().map(|(_, _, n)| n.status == DeliveryStatus::Retrying).collect::<Vec<_>>(),
            )
            .bind::<Array<SqlUuid>, _>(batch.iter().map(|(_, r, _)| r.id).collect::<Vec<_>>())
            .bind::<Array<Text>, _>(batch.iter().map(|(_, r, _)| r.outcome.clone()).collect::<Vec<_>>())
            .bind::<Array<Int4>, _>(batch.iter().map(|(_, r, _)| r.duration_ms).collect::<Vec<_>>())
            .bind::<Array<Nullable<Text>>, _>(batch.iter().map(|(_, r, _)| r.response_body.clone()).collect::<Vec<_>>())
            .bind::<Array<Nullable<Jsonb>>, _>(
                batch.iter().map(|(_, r, _)| r.request_headers.clone()).collect::<Vec<_>>(),
            )
            .bind::<Array<Nullable<Jsonb>>, _>(
                batch.iter().map(|(_, r, _)| r.response_headers.clone()).collect::<Vec<_>>(),
            ),
        )
        .load(conn)
        .await?;
        stored.extend(rows.into_iter().map(|r| r.delivery_id));
    }
    let mut answers = Vec::with_capacity(outcomes.len());
    for ((subscription_id, row, next), batched) in outcomes.into_iter().zip(batchable) {
        answers.push(if batched {
            if stored.contains(&row.delivery_id) {
                Recorded::Stored { disabled: false }
            } else {
                Recorded::Superseded
            }
        } else {
            record(conn, subscription_id, row, next).await?
        });
    }
    Ok(answers)
}

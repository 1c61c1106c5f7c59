//! Endpoint health: per subscription, its consecutive failures, last success
//! and failure, and its circuit (closed → open → half open → closed), shared
//! by every dispatcher through this table.
//!
//! A delivery *waits in the database* when `NOT enqueued AND next_attempt_at
//! IS NOT NULL`: a retry until its due time, or a delivery parked while its
//! circuit is open. Circuit transitions move a subscription's waiting rows
//! together ([`hold_waiting`], [`release_waiting`]); whoever re-queues due
//! rows must skip those of a circuit that is not closed ([`NOT_PARKED`]).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::{
    deserialize::FromSqlRow,
    expression::AsExpression,
    prelude::*,
    sql_types::{Array, Nullable, Text, Timestamptz, Uuid as SqlUuid},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;

use crate::schema::endpoint_health;

/// SQL condition on a `deliveries` row aliased `d`: true unless the row is
/// parked behind its subscription's open (or half-open) circuit. The one
/// delivery chosen as the half-open probe is not parked. Every query that
/// re-queues waiting deliveries (the due-row scheduler, the outbox relay, a
/// reconciler) must include it, or it would churn parked rows.
pub const NOT_PARKED: &str = "NOT EXISTS (SELECT 1 FROM endpoint_health h \
     WHERE h.subscription_id = d.subscription_id AND h.circuit <> 'closed' \
       AND h.probe_delivery_id IS DISTINCT FROM d.id)";

/// The state of a subscription's circuit (stored as its name; the table's
/// CHECK constraint admits exactly these three).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
#[serde(rename_all = "snake_case")]
pub enum Circuit {
    /// Attempts go out.
    Closed,
    /// No attempt goes out until `open_until`.
    Open,
    /// One probe attempt is out; its outcome closes or re-opens the circuit.
    HalfOpen,
}

impl Circuit {
    /// The stored (and API) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// Reads a stored name.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "closed" => Some(Self::Closed),
            "open" => Some(Self::Open),
            "half_open" => Some(Self::HalfOpen),
            _ => None,
        }
    }
}

super::text_column!(Circuit, "circuit state");

/// An `endpoint_health` row.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = endpoint_health, treat_none_as_null = true)]
pub struct EndpointHealth {
    pub subscription_id: uuid::Uuid,
    pub circuit: Circuit,
    pub consecutive_failures: i32,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
    /// First failure since the last success (the auto-disable clock).
    pub failing_since: Option<DateTime<Utc>>,
    pub open_until: Option<DateTime<Utc>>,
    /// Openings since the circuit was last closed.
    pub open_count: i32,
    pub probe_delivery_id: Option<uuid::Uuid>,
    pub probe_until: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl EndpointHealth {
    /// A subscription nobody has recorded anything about: closed, no failures.
    pub fn healthy(subscription_id: uuid::Uuid) -> Self {
        Self {
            subscription_id,
            circuit: Circuit::Closed,
            consecutive_failures: 0,
            last_success_at: None,
            last_failure_at: None,
            failing_since: None,
            open_until: None,
            open_count: 0,
            probe_delivery_id: None,
            probe_until: None,
            updated_at: Utc::now(),
        }
    }
}

/// The health rows of `ids` (a subscription without one is healthy).
pub async fn for_subscriptions(
    conn: &mut AsyncPgConnection,
    ids: &[uuid::Uuid],
) -> QueryResult<HashMap<uuid::Uuid, EndpointHealth>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<EndpointHealth> = endpoint_health::table
        .filter(endpoint_health::subscription_id.eq_any(ids))
        .select(EndpointHealth::as_select())
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(|row| (row.subscription_id, row)).collect())
}

/// Locks the subscription's health row for a transition (creating a healthy
/// one first if there is none). Call inside a transaction.
pub async fn lock(conn: &mut AsyncPgConnection, subscription_id: uuid::Uuid) -> QueryResult<EndpointHealth> {
    diesel::insert_into(endpoint_health::table)
        .values(EndpointHealth::healthy(subscription_id))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    endpoint_health::table
        .filter(endpoint_health::subscription_id.eq(subscription_id))
        .select(EndpointHealth::as_select())
        .for_update()
        .first(conn)
        .await
}

/// Stores a row [`lock`] returned, after a transition.
pub async fn save(conn: &mut AsyncPgConnection, row: &EndpointHealth) -> QueryResult<()> {
    diesel::update(endpoint_health::table.filter(endpoint_health::subscription_id.eq(row.subscription_id)))
        .set(row)
        .execute(conn)
        .await
        .map(drop)
}

/// Resets a subscription's health to healthy (it was re-enabled) and lets its
/// parked deliveries go at once.
pub async fn reset(conn: &mut AsyncPgConnection, subscription_id: uuid::Uuid) -> QueryResult<()> {
    let old: Option<EndpointHealth> =
        diesel::delete(endpoint_health::table.filter(endpoint_health::subscription_id.eq(subscription_id)))
            .returning(EndpointHealth::as_returning())
            .get_result(conn)
            .await
            .optional()?;
    if let Some(parked_until) = old.as_ref().and_then(parked_until) {
        release_waiting(conn, subscription_id, parked_until, RELEASE_PER_SECOND).await?;
    }
    Ok(())
}

/// How many parked deliveries per second one subscription gets back when its
/// circuit closes, so a recovering endpoint is not flooded.
pub const RELEASE_PER_SECOND: i32 = 200;

/// Until when a circuit's parked deliveries were held: the later of its open
/// period and its probe lease.
pub fn parked_until(row: &EndpointHealth) -> Option<DateTime<Utc>> {
    match (row.open_until, row.probe_until) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Moves the subscription's waiting deliveries due before `until` to `until`
/// (but not `except`, the probe): they wait out the open circuit keeping their
/// status and attempt number.
pub async fn hold_waiting(
    conn: &mut AsyncPgConnection,
    subscription_id: uuid::Uuid,
    until: DateTime<Utc>,
    except: Option<uuid::Uuid>,
) -> QueryResult<usize> {
    // Rows are locked in id order, like every batched statement on deliveries, so this cannot deadlock with them.
    diesel::sql_query(
        "WITH w AS ( \
           SELECT id FROM deliveries \
           WHERE subscription_id = $1 AND NOT enqueued AND next_attempt_at IS NOT NULL \
             AND next_attempt_at < $2 AND status IN ('pending', 'retrying') AND id IS DISTINCT FROM $3 \
           ORDER BY id FOR UPDATE) \
         UPDATE deliveries d SET next_attempt_at = $2 FROM w WHERE d.id = w.id",
    )
    .bind::<SqlUuid, _>(subscription_id)
    .bind::<Timestamptz, _>(until)
    .bind::<Nullable<SqlUuid>, _>(except)
    .execute(conn)
    .await
}

/// Makes the subscription's waiting deliveries due by `up_to` (those parked by
/// its circuit) due again, spread at `per_second` from now in their order.
pub async fn release_waiting(
    conn: &mut AsyncPgConnection,
    subscription_id: uuid::Uuid,
    up_to: DateTime<Utc>,
    per_second: i32,
) -> QueryResult<usize> {
    diesel::sql_query(
        "WITH w AS ( \
           SELECT id, next_attempt_at FROM deliveries \
           WHERE subscription_id = $1 AND NOT enqueued AND next_attempt_at IS NOT NULL \
             AND next_attempt_at <= $2 AND status IN ('pending', 'retrying') \
           ORDER BY id FOR UPDATE), \
         parked AS (SELECT id, row_number() OVER (ORDER BY next_attempt_at, id) - 1 AS n FROM w) \
         UPDATE deliveries d SET next_attempt_at = now() + make_interval(secs => parked.n::float8 / $3) \
         FROM parked WHERE d.id = parked.id",
    )
    .bind::<SqlUuid, _>(subscription_id)
    .bind::<Timestamptz, _>(up_to)
    .bind::<diesel::sql_types::Int4, _>(per_second.max(1))
    .execute(conn)
    .await
}

/// Notes successes of subscriptions known to be healthy (closed, no failures)
/// in one statement: only `last_success_at` moves.
pub async fn note_successes(
    conn: &mut AsyncPgConnection,
    successes: &[(uuid::Uuid, DateTime<Utc>)],
) -> QueryResult<()> {
    if successes.is_empty() {
        return Ok(());
    }
    let (ids, times): (Vec<uuid::Uuid>, Vec<DateTime<Utc>>) = successes.iter().copied().unzip();
    diesel::sql_query(
        "INSERT INTO endpoint_health AS h (subscription_id, last_success_at) \
         SELECT s.id, s.at FROM unnest($1::uuid[], $2::timestamptz[]) AS s(id, at) \
         JOIN subscriptions ON subscriptions.id = s.id \
         ORDER BY s.id \
         ON CONFLICT (subscription_id) DO UPDATE \
         SET last_success_at = greatest(h.last_success_at, excluded.last_success_at)",
    )
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<Array<Timestamptz>, _>(times)
    .execute(conn)
    .await
    .map(drop)
}

/// Takes the half-open probe of a circuit whose open period is over (or whose
/// previous probe lease ran out) for `delivery_id`, until `now + lease`.
/// Compare-and-set: exactly one caller wins; returns the lease end to it.
pub async fn take_probe(
    conn: &mut AsyncPgConnection,
    subscription_id: uuid::Uuid,
    delivery_id: uuid::Uuid,
    lease: std::time::Duration,
) -> QueryResult<Option<DateTime<Utc>>> {
    use endpoint_health::dsl as h;
    let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::seconds(60));
    let now = Utc::now();
    diesel::update(
        h::endpoint_health.filter(h::subscription_id.eq(subscription_id)).filter(
            (h::circuit.eq(Circuit::Open).and(h::open_until.le(diesel::dsl::now)))
                .or(h::circuit.eq(Circuit::HalfOpen).and(h::probe_until.lt(diesel::dsl::now))),
        ),
    )
    .set((
        h::circuit.eq(Circuit::HalfOpen),
        h::probe_delivery_id.eq(delivery_id),
        h::probe_until.eq(now + lease),
        h::updated_at.eq(now),
    ))
    .returning(h::probe_until)
    .get_result::<Option<DateTime<Utc>>>(conn)
    .await
    .optional()
    .map(Option::flatten)
}

/// Subscriptions whose circuit may take a probe now (open period over, or a
/// probe lease run out), at most `limit`.
pub async fn probe_due(conn: &mut AsyncPgConnection, limit: i64) -> QueryResult<Vec<uuid::Uuid>> {
    use endpoint_health::dsl as h;
    h::endpoint_health
        .filter(h::circuit.ne(Circuit::Closed))
        .filter(
            (h::circuit.eq(Circuit::Open).and(h::open_until.le(diesel::dsl::now)))
                .or(h::circuit.eq(Circuit::HalfOpen).and(h::probe_until.lt(diesel::dsl::now))),
        )
        .order(h::open_until)
        .select(h::subscription_id)
        .limit(limit)
        .load(conn)
        .await
}

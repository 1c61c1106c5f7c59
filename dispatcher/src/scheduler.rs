//! The due-row scheduler: deliveries that wait in the database (a retry
//! until its delay is over, a delivery parked behind an open circuit or
//! behind another dispatcher's claim) go back on the dispatch queue when due.
//!
//! Every [`POLL`] one statement leases up to [`BATCH`] due rows in due order
//! (`deliveries_waiting_idx`, `FOR UPDATE SKIP LOCKED`, lease in
//! `relay_lease_until`, shared with the outbox relay so no row is published
//! twice at once), skipping rows parked by a circuit that is not closed
//! ([`NOT_PARKED`]). They are published with confirms and marked `enqueued`;
//! the unconfirmed ones get their lease back. Safe with many dispatchers.
//!
//! Before that, each circuit whose open period is over gets its probe: the
//! oldest waiting delivery becomes due and is the one delivery let through
//! (compare-and-set on the health row, [`endpoint_health::take_probe`]).

use std::time::Duration;

use diesel::OptionalExtension;
use diesel::{
    sql_types::{Array, BigInt, Interval, Uuid as SqlUuid},
    QueryableByName,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures_util::future::join_all;
use shared::{
    amqp::{encode_dispatch, persistent_json, DISPATCH_ROUTING_KEY},
    db::{self, DbError},
    models::{
        delivery::{self, QueuedAttempt},
        endpoint_health::{self, NOT_PARKED},
    },
};
use tokio::sync::watch;

use crate::{context::Context, metric_names, stats::Stats};

/// Time between rounds (at once again after a full batch).
pub const POLL: Duration = Duration::from_millis(200);
/// Most rows queued per round.
pub const BATCH: i64 = 500;
/// How long a lease keeps other schedulers and relays off a row.
const LEASE: Duration = Duration::from_secs(30);
/// How long a probe chosen here holds its circuit half open: time for the
/// message to reach a dispatcher and for the longest attempt.
const PROBE_LEASE: Duration = Duration::from_secs(120);
/// Successes of healthy subscriptions are written this often.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Runs rounds until `stop` turns true.
pub async fn run(ctx: Context, mut stop: watch::Receiver<bool>) {
    let mut last_flush = tokio::time::Instant::now();
    loop {
        let full = match round(&ctx).await {
            Ok(queued) => queued as i64 >= BATCH,
            Err(err) => {
                log::warn!("due-row scheduler round failed error={err}");
                false
            }
        };
        if last_flush.elapsed() >= FLUSH_EVERY {
            ctx.health.flush(&ctx.pool).await;
            last_flush = tokio::time::Instant::now();
        }
        if *stop.borrow() {
            ctx.health.flush(&ctx.pool).await;
            return;
        }
        if !full {
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() {
                        // The dispatcher is gone without a shutdown.
                        return;
                    }
                }
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

/// One round: probes, then due rows. Returns how many rows were leased.
pub async fn round(ctx: &Context) -> Result<usize, DbError> {
    if !ctx.broker.is_connected() {
        return Ok(0);
    }
    let mut conn = db::conn(&ctx.pool).await?;
    for subscription_id in endpoint_health::probe_due(&mut conn, 100).await? {
        let chosen = conn
            .transaction(async move |conn| choose_probe(conn, subscription_id).await)
            .await
            .map_err(DbError::from)?;
        if let Some(delivery_id) = chosen {
            log::info!("circuit half open: probe chosen subscription_id={subscription_id} delivery_id={delivery_id}");
        }
    }
    let due = lease_due(&mut conn).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let exchange = ctx.topology.dispatch_exchange();
    let publishes = due.iter().map(|row| {
        let body = encode_dispatch(std::slice::from_ref(row));
        let (broker, exchange) = (&ctx.broker, exchange.as_str());
        async move {
            match body {
                Ok(body) => broker.publish(exchange, DISPATCH_ROUTING_KEY, &body, persistent_json()).await.is_ok(),
                Err(_) => false,
            }
        }
    });
    let results = join_all(publishes).await;
    let (confirmed, unconfirmed): (Vec<_>, Vec<_>) = due.iter().zip(results).partition(|(_, ok)| *ok);
    let confirmed: Vec<QueuedAttempt> = confirmed.into_iter().map(|(row, _)| *row).collect();
    for _ in &confirmed {
        Stats::bump(&ctx.stats.requeued);
    }
    metrics::counter!(metric_names::DUE_REQUEUED).increment(confirmed.len() as u64);
    delivery::mark_enqueued(&mut conn, &confirmed).await?;
    if !unconfirmed.is_empty() {
        let ids: Vec<uuid::Uuid> = unconfirmed.iter().map(|(row, _)| row.delivery_id).collect();
        log::warn!("queueing due deliveries failed count={}; they stay due", ids.len());
        diesel::sql_query("UPDATE deliveries SET relay_lease_until = NULL WHERE id = ANY($1) AND NOT enqueued")
            .bind::<Array<SqlUuid>, _>(ids)
            .execute(&mut conn)
            .await?;
    }
    Ok(due.len())
}

/// Makes the subscription's oldest waiting delivery its probe (due now), and
/// holds the others until the probe lease ends. A row under a live claim is in
/// flight, not waiting: a probe message for it would only find the claim.
/// `None` if another scheduler was first or nothing waits (then the next
/// message's claim takes the probe).
async fn choose_probe(
    conn: &mut AsyncPgConnection,
    subscription_id: uuid::Uuid,
) -> diesel::QueryResult<Option<uuid::Uuid>> {
    #[derive(QueryableByName)]
    struct Oldest {
        #[diesel(sql_type = SqlUuid)]
        id: uuid::Uuid,
    }
    let oldest: Option<Oldest> = diesel::sql_query(
        "SELECT id FROM deliveries \
         WHERE subscription_id = $1 AND NOT enqueued AND next_attempt_at IS NOT NULL \
           AND status IN ('pending', 'retrying') AND (claimed_until IS NULL OR claimed_until < now()) \
         ORDER BY next_attempt_at LIMIT 1",
    )
    .bind::<SqlUuid, _>(subscription_id)
    .get_result(conn)
    .await
    .optional()?;
    let Some(Oldest { id }) = oldest else { return Ok(None) };
    let Some(until) = endpoint_health::take_probe(conn, subscription_id, id, PROBE_LEASE).await? else {
        return Ok(None);
    };
    endpoint_health::hold_waiting(conn, subscription_id, until, Some(id)).await?;
    diesel::sql_query("UPDATE deliveries SET next_attempt_at = now() WHERE id = $1")
        .bind::<SqlUuid, _>(id)
        .execute(conn)
        .await?;
    Ok(Some(id))
}

/// Leases due rows in one statement (see the module doc). A row under a live
/// dispatcher claim is not due: its message arrived (the `enqueued` mark
/// leaves claimed rows to the dispatcher's record), and the request may
/// outlast this lease.
async fn lease_due(conn: &mut AsyncPgConnection) -> diesel::QueryResult<Vec<QueuedAttempt>> {
    let query = format!(
        "WITH due AS ( \
           SELECT d.id FROM deliveries d \
           WHERE NOT d.enqueued AND d.next_attempt_at <= now() AND d.next_attempt_at IS NOT NULL \
             AND d.status IN ('pending', 'retrying') \
             AND (d.relay_lease_until IS NULL OR d.relay_lease_until < now()) \
             AND (d.claimed_until IS NULL OR d.claimed_until < now()) \
             AND {NOT_PARKED} \
           ORDER BY d.next_attempt_at \
           LIMIT $1 \
           FOR UPDATE OF d SKIP LOCKED) \
         UPDATE deliveries d SET relay_lease_until = now() + $2 \
         FROM due WHERE d.id = due.id \
         RETURNING d.id AS delivery_id, d.attempt_count + 1 AS attempt, d.subscription_id"
    );
    db::Prepared(diesel::sql_query(query).bind::<BigInt, _>(BATCH).bind::<Interval, _>(interval(LEASE)))
        .load(conn)
        .await
}

fn interval(duration: Duration) -> diesel::data_types::PgInterval {
    diesel::data_types::PgInterval::from_microseconds(duration.as_micros().min(i64::MAX as u128) as i64)
}

//! What one attempt of a dispatch message does (a message carries one or
//! several; [`crate::consumer`] settles the message once all of them are
//! handled): wait for one of its subscription's slots,
//! claim the attempt, pass the circuit, make it, record the outcome and the
//! endpoint's health — and then say whether to ack. (A message without a
//! subscription, queued by an older version, claims before it waits.)
//!
//! Ack only once the outcome (or the park) is committed; a message whose work
//! could not be made durable goes back to the queue. Every step is
//! idempotent, so a redelivered message is harmless. A message that must
//! wait long is parked in the database with a due time and acked; the
//! scheduler queues it again when due. Nothing is bounced through the broker.

use std::time::{Duration, Instant};

use chrono::Utc;
use shared::{
    amqp::{decode_dispatch, DispatchMessage},
    db,
    models::{attempt::NewAttempt, endpoint_health::Circuit},
};

use crate::{
    batched_store::BatchError,
    context::Context,
    deliver::{deliver_one, Job},
    flow::{Admission, Slot},
    health::PROBE_MARGIN,
    metric_names,
    outcome::{Outcome, OutcomeKind},
    retry::{self, RetryPolicy},
    stats::Stats,
    store::{self, Claim, Claimed, Park, Recorded},
};

/// Grace period for the previous secret after a rotation.
const ROTATION_GRACE: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// What to do with the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Ack,
    /// Return it to the queue (after a short pause): its work is not durable.
    Requeue,
    /// Return it to the queue at once: this dispatcher is stopping.
    Return,
}

impl Disposition {
    /// What to do with a message whose attempts were settled as given: ack it
    /// only when every one is durable; return it at once when stopping.
    pub fn of_all(dispositions: impl IntoIterator<Item = Disposition>) -> Disposition {
        dispositions.into_iter().fold(Disposition::Ack, |all, one| match (all, one) {
            (Disposition::Return, _) | (_, Disposition::Return) => Disposition::Return,
            (Disposition::Requeue, _) | (_, Disposition::Requeue) => Disposition::Requeue,
            (Disposition::Ack, Disposition::Ack) => Disposition::Ack,
        })
    }
}

/// Reads a dispatch message's body (see [`shared::amqp::decode_dispatch`]):
/// its attempts, or none for a body that is not a dispatch message (logged and
/// counted `invalid`; the message is then simply acked).
pub fn decode(body: &[u8]) -> Vec<DispatchMessage> {
    decode_dispatch(body).unwrap_or_else(|err| {
        log::error!("dispatch message dropped: not a dispatch message error={err}");
        counted(Disposition::Ack, "invalid");
        Vec::new()
    })
}

/// Handles one attempt of a message from the dispatch queue.
pub async fn handle(ctx: &Context, message: DispatchMessage) -> Disposition {
    let (delivery_id, attempt, subscription_id) = match message {
        DispatchMessage::Attempt { delivery_id, attempt, subscription_id } if attempt >= 1 => {
            (delivery_id, attempt, subscription_id)
        }
        other => {
            log::error!("dispatch message dropped: invalid attempt message={other:?}");
            return counted(Disposition::Ack, "invalid");
        }
    };
    match subscription_id {
        Some(subscription_id) => slot_then_claim(ctx, delivery_id, attempt, subscription_id).await,
        // A message from before messages named their subscription.
        None => Box::pin(claim_then_attempt(ctx, delivery_id, attempt, Ready::NoSlot)).await,
    }
}

/// What a message has when it claims its attempt.
enum Ready {
    /// One of its subscription's slots.
    Slot(Slot),
    /// No slot yet: claim first, then wait for one unless the circuit parks it.
    NoSlot,
    /// It waited `DISPATCHER_MAX_SLOT_WAIT` for a slot: park it, due now,
    /// so the scheduler queues it again at the back of the queue. The bound
    /// (5 min by default) stays below the broker's consumer timeout (30 min
    /// by default, which closes the channel over a message unacked that
    /// long) and the reconciler's grace (10 min, which queues a second copy).
    Overdue,
}

/// The usual path: wait here for one of the subscription's slots, holding
/// nothing but the message, then claim. A backlog of one subscription thus
/// waits in this dispatcher's per-subscription queues (fair round-robin)
/// rather than in the broker's FIFO ahead of everyone else's messages. A
/// subscription whose circuit is known open here claims at once, and the
/// claim parks it.
async fn slot_then_claim(
    ctx: &Context,
    delivery_id: uuid::Uuid,
    attempt: i32,
    subscription_id: uuid::Uuid,
) -> Disposition {
    let parked_here = ctx.health.parked_until(subscription_id).is_some_and(|until| until > Utc::now());
    let ready = if parked_here {
        Ready::NoSlot
    } else {
        let waiting_since = Instant::now();
        match ctx.flow.acquire(subscription_id).await {
            Some(Admission::Slot(slot)) => {
                if waiting_since.elapsed() > Duration::from_millis(1) {
                    Stats::bump(&ctx.stats.waited);
                }
                Ready::Slot(slot)
            }
            // The circuit opened while it waited: the claim reads it and parks.
            Some(Admission::Park) => Ready::NoSlot,
            Some(Admission::Overdue) => Ready::Overdue,
            // Stopping: nothing is claimed yet, so the message simply goes back.
            None => return counted(Disposition::Return, "shutting_down"),
        }
    };
    // Boxed: a message waiting above holds a small future, not the attempt's.
    Box::pin(claim_then_attempt(ctx, delivery_id, attempt, ready)).await
}

/// Parks a claimed attempt whose message waited `DISPATCHER_MAX_SLOT_WAIT`
/// for a slot: due at once, it goes back through the database (the scheduler
/// queues it again, to whichever dispatcher has room).
async fn park_overdue(ctx: &Context, delivery_id: uuid::Uuid, attempt: i32) -> Disposition {
    park(ctx, Park { delivery_id, attempt, until: Some(Utc::now()) }, "waited_too_long").await
}

/// Claims the attempt, then makes it (or parks it, or drops a stale message).
async fn claim_then_attempt(ctx: &Context, delivery_id: uuid::Uuid, attempt: i32, ready: Ready) -> Disposition {
    // Claims without a slot (mostly messages about to be parked: a circuit
    // opened with thousands waiting) take turns, so they do not flood the
    // claim queue that every slot holder shares.
    let turn = match ready {
        Ready::Slot(_) => None,
        Ready::NoSlot | Ready::Overdue => ctx.slotless_claims.acquire().await.ok(),
    };
    let claim =
        ctx.claims.call((delivery_id, attempt)).await.unwrap_or_else(|| Err(db::DbError::BatcherStopped.into()));
    drop(turn);
    match claim {
        Ok(Claim::Claimed(claimed)) => match ready {
            Ready::Slot(slot) => attempt_claimed(ctx, *claimed, attempt, Some(slot)).await,
            Ready::NoSlot => attempt_claimed(ctx, *claimed, attempt, None).await,
            Ready::Overdue => park_overdue(ctx, delivery_id, attempt).await,
        },
        Ok(Claim::Stale) => {
            Stats::bump(&ctx.stats.stale);
            log::debug!("stale dispatch message dropped delivery_id={delivery_id} attempt={attempt}");
            counted(Disposition::Ack, "stale")
        }
        // Another dispatcher holds this very attempt: due again when its claim runs out.
        Ok(Claim::Busy) => park(ctx, Park { delivery_id, attempt, until: None }, "claimed_elsewhere").await,
        Err(err) => {
            log::warn!("claiming failed; requeueing delivery_id={delivery_id} attempt={attempt} error={err}");
            counted(Disposition::Requeue, "db_unavailable")
        }
    }
}

/// What the circuit lets a claimed attempt do.
enum Gate {
    Go,
    /// Park until then.
    Park(chrono::DateTime<Utc>),
}

/// Decides by the subscription's circuit (as the claim read it): closed → go;
/// the chosen half-open probe → go; open period over → take the probe
/// (compare-and-set) and go; otherwise park.
async fn gate(ctx: &Context, claimed: &Claimed) -> Result<Gate, db::DbError> {
    let circuit = claimed.circuit.unwrap_or(Circuit::Closed);
    if circuit == Circuit::Closed || claimed.probe_delivery_id == Some(claimed.delivery_id) {
        return Ok(Gate::Go);
    }
    let now = Utc::now();
    let probe_time = match circuit {
        Circuit::Open => claimed.open_until.is_none_or(|until| until <= now),
        _ => claimed.probe_until.is_none_or(|until| until < now),
    };
    if !probe_time {
        let until = if circuit == Circuit::Open { claimed.open_until } else { claimed.probe_until };
        return Ok(Gate::Park(until.unwrap_or(now + chrono::Duration::seconds(1))));
    }
    let lease = Duration::from_secs(u64::try_from(claimed.timeout_seconds.max(1)).unwrap_or(30)) + PROBE_MARGIN;
    let mut conn = db::conn(&ctx.pool).await?;
    let taken =
        shared::models::endpoint_health::take_probe(&mut conn, claimed.subscription_id, claimed.delivery_id, lease)
            .await?;
    Ok(match taken {
        Some(_) => {
            log::info!(
                "circuit half open: probe subscription_id={} delivery_id={}",
                claimed.subscription_id,
                claimed.delivery_id
            );
            Gate::Go
        }
        // Someone else probes: wait for its verdict (closing releases us).
        None => Gate::Park(now + chrono::Duration::seconds(1)),
    })
}

/// Parks the delivery in the database and acks the message (requeues it if
/// the park could not be stored).
async fn park(ctx: &Context, park: Park, reason: &'static str) -> Disposition {
    let parked = ctx.parks.call(park).await.unwrap_or_else(|| Err(db::DbError::BatcherStopped.into()));
    match parked {
        Ok(true) => {
            // A duplicate message is not a delivery put off: count it apart.
            Stats::bump(if reason == "claimed_elsewhere" { &ctx.stats.duplicates_parked } else { &ctx.stats.parked });
            metrics::counter!(metric_names::PARKED, "reason" => reason).increment(1);
            counted(Disposition::Ack, "parked")
        }
        // The delivery moved on meanwhile (its outcome was recorded): nothing to keep.
        Ok(false) => counted(Disposition::Ack, "stale"),
        Err(err) => {
            log::warn!("parking failed; requeueing delivery_id={} error={err}", park.delivery_id);
            counted(Disposition::Requeue, "db_unavailable")
        }
    }
}

/// Passes the circuit, waits for a slot unless it has one, then makes and
/// records the attempt.
async fn attempt_claimed(ctx: &Context, claimed: Claimed, attempt: i32, slot: Option<Slot>) -> Disposition {
    let delivery_id = claimed.delivery_id;
    if claimed.is_deleted || !claimed.is_active {
        let reason = if claimed.is_deleted { "subscription deleted" } else { "subscription disabled" };
        let closed = match db::conn(&ctx.pool).await {
            Ok(mut conn) => {
                store::close_without_attempt(&mut conn, delivery_id, attempt, reason).await.map_err(db::DbError::from)
            }
            Err(err) => Err(err),
        };
        return match closed {
            Ok(()) => {
                log::info!("delivery closed without sending delivery_id={delivery_id} reason={reason:?}");
                counted(Disposition::Ack, "subscription_inactive")
            }
            Err(err) => {
                log::warn!("closing a delivery failed; requeueing delivery_id={delivery_id} error={err}");
                counted(Disposition::Requeue, "db_unavailable")
            }
        };
    }

    ctx.health.note_claim(&claimed);
    let subscription_id = claimed.subscription_id;
    match gate(ctx, &claimed).await {
        Ok(Gate::Go) => {}
        Ok(Gate::Park(until)) => {
            return park(ctx, Park { delivery_id, attempt, until: Some(until) }, "circuit_open").await
        }
        Err(err) => {
            log::warn!("reading the circuit failed; requeueing delivery_id={delivery_id} error={err}");
            return counted(Disposition::Requeue, "db_unavailable");
        }
    }
    let waiting_since = Instant::now();
    let admission = match slot {
        Some(slot) => Some(Admission::Slot(slot)),
        None => ctx.flow.acquire(subscription_id).await,
    };
    let slot: Slot = match admission {
        Some(Admission::Slot(slot)) => slot,
        Some(Admission::Park) => {
            let until =
                ctx.health.parked_until(subscription_id).unwrap_or_else(|| Utc::now() + chrono::Duration::seconds(1));
            return park(ctx, Park { delivery_id, attempt, until: Some(until) }, "circuit_open").await;
        }
        Some(Admission::Overdue) => return park_overdue(ctx, delivery_id, attempt).await,
        None => {
            // Stopping: give the claim back so the message is taken again at once elsewhere.
            if let Ok(mut conn) = db::conn(&ctx.pool).await {
                let _ = store::release(&mut conn, delivery_id, attempt).await;
            }
            return counted(Disposition::Return, "shutting_down");
        }
    };
    if ctx.health.parked_until(subscription_id).is_some_and(|until| until > Utc::now()) {
        // The circuit opened while this message waited.
        drop(slot);
        let until = ctx.health.parked_until(subscription_id);
        return park(ctx, Park { delivery_id, attempt, until }, "circuit_open").await;
    }
    let waited = waiting_since.elapsed();
    if waited > Duration::from_millis(1) {
        Stats::bump(&ctx.stats.waited);
    }
    if waited.as_secs() >= u64::try_from(claimed.timeout_seconds.max(1)).unwrap_or(30) {
        // The claim (timeout + margin) is nearly spent: renew it before sending.
        if let Ok(mut conn) = db::conn(&ctx.pool).await {
            let _ = store::extend_claim(&mut conn, delivery_id, attempt, claimed.timeout_seconds).await;
        }
    }

    let policy = RetryPolicy {
        retry_enabled: claimed.retry_enabled,
        max_retries: claimed.max_retries,
        manual_retry: claimed.manual_retry,
    };
    let event_type = claimed.event_type.clone();
    let outcome = match job_of(ctx, claimed, attempt) {
        Ok(job) => {
            metrics::gauge!(metric_names::IN_FLIGHT).increment(1.0);
            let outcome = deliver_one(&ctx.deliver, &job).await;
            metrics::gauge!(metric_names::IN_FLIGHT).decrement(1.0);
            ctx.flow.record_outcome(subscription_id, outcome.is_success());
            outcome
        }
        Err(outcome) => *outcome,
    };
    // The request is over; its record may wait for the database. The slot is
    // handed on only once a place among the unrecorded attempts is free (see
    // `Context::unrecorded`), so memory stays bounded while the database
    // lags. The wait comes after the request: a quiet subscription's turn for
    // a slot is still its only wait before its endpoint hears from us.
    let _unrecorded = ctx.unrecorded.acquire().await.ok();
    drop(slot);
    Stats::bump(&ctx.stats.attempts);
    metrics::counter!(metric_names::ATTEMPTS, "outcome" => outcome.kind.code()).increment(1);
    metrics::histogram!(metric_names::ATTEMPT_DURATION).record(outcome.duration.as_secs_f64());

    let (next, retry_delay) = retry::next_state(&outcome, attempt, policy, &ctx.config);
    let next_status = next.status.as_str();
    log_attempt(delivery_id, subscription_id, &event_type, attempt, &outcome, next_status, retry_delay);
    let row = NewAttempt {
        id: uuid::Uuid::now_v7(),
        delivery_id,
        attempt,
        outcome: outcome.kind.code().to_owned(),
        status_code: outcome.status_code.map(i32::from),
        error: outcome.error.clone(),
        duration_ms: i32::try_from(outcome.duration.as_millis()).unwrap_or(i32::MAX),
        response_body: outcome.response_body.clone(),
        request_headers: outcome.request_headers.clone(),
        response_headers: outcome.response_headers.clone(),
    };
    let recorded = match record_with_retries(ctx, subscription_id, row, next).await {
        Ok(recorded) => recorded,
        Err(err) => {
            log::error!(
                "recording an attempt failed; requeueing delivery_id={delivery_id} attempt={attempt} error={err}"
            );
            return counted(Disposition::Requeue, "db_unavailable");
        }
    };
    if matches!(recorded, Recorded::Stored { .. }) {
        metrics::counter!(metric_names::DELIVERY_OUTCOMES, "status" => next_status).increment(1);
    }
    match recorded {
        Recorded::Superseded => {
            log::warn!(
                "attempt outcome discarded: another dispatcher recorded it delivery_id={delivery_id} attempt={attempt}"
            );
            return counted(Disposition::Ack, "superseded");
        }
        Recorded::Stored { disabled: true } => {
            log::info!("subscription disabled after 410 Gone subscription_id={subscription_id}");
        }
        Recorded::Stored { disabled: false } => {}
    }
    if let Some(delay) = retry_delay {
        // The retry waits in the database; the scheduler queues it when due.
        Stats::bump(&ctx.stats.retries_scheduled);
        metrics::counter!(metric_names::RETRIES_SCHEDULED).increment(1);
        log::debug!("retry scheduled delivery_id={delivery_id} attempt={} delay_ms={}", attempt + 1, delay.as_millis());
    }
    // The outcome is durable; health is bookkeeping on top of it (a lost
    // update only delays the circuit by one attempt).
    let notify = !shared::catalog::is_reserved(&event_type);
    match ctx.health.observe(&ctx.pool, subscription_id, delivery_id, outcome.is_success(), notify).await {
        Ok(after) if after.circuit != Circuit::Closed => {
            let parked = ctx.flow.park_waiters(subscription_id);
            if parked > 0 {
                log::debug!("circuit not closed: parking waiters subscription_id={subscription_id} count={parked}");
            }
        }
        Ok(_) => {}
        Err(err) => log::warn!("updating endpoint health failed subscription_id={subscription_id} error={err}"),
    }
    counted(Disposition::Ack, outcome.kind.code())
}

/// One info line per attempt, so the logs show every delivery: ids, type,
/// outcome, status, duration and what follows; never the payload or a secret.
fn log_attempt(
    delivery_id: uuid::Uuid,
    subscription_id: uuid::Uuid,
    event_type: &str,
    attempt: i32,
    outcome: &Outcome,
    next_status: &str,
    retry_delay: Option<Duration>,
) {
    if !log::log_enabled!(log::Level::Info) {
        return;
    }
    let status = outcome.status_code.map_or_else(|| "-".to_owned(), |s| s.to_string());
    let retry_in = retry_delay.map_or_else(String::new, |d| format!(" retry_in={}s", d.as_secs()));
    log::info!(
        "attempt delivery_id={delivery_id} subscription_id={subscription_id} event_type={event_type} \
         attempt={attempt} outcome={} status={status} ms={} delivery_status={next_status}{retry_in}",
        outcome.kind.code(),
        outcome.duration.as_millis(),
    );
}

/// Decrypts the secrets and header values and builds the job; an undecryptable one is an
/// `internal` outcome (recorded like any failed attempt, so it shows in the log).
fn job_of(ctx: &Context, claimed: Claimed, attempt: i32) -> Result<Job, Box<Outcome>> {
    let secret = ctx.secrets.open(&claimed.subscription_id, &claimed.secret_encrypted).map_err(|err| {
        log::error!("signing secret unusable subscription_id={} error={err}", claimed.subscription_id);
        Box::new(Outcome::failed(OutcomeKind::Internal, "the signing secret could not be decrypted", Duration::ZERO))
    })?;
    let in_grace = claimed.secret_rotated_at.is_some_and(|at| chrono::Utc::now() - at < ROTATION_GRACE);
    let previous_secret = match (&claimed.previous_secret_encrypted, in_grace) {
        (Some(sealed), true) => match ctx.secrets.open(&claimed.subscription_id, sealed) {
            Ok(previous) => Some(previous),
            Err(err) => {
                // Still sign with the current secret: the old one is a courtesy.
                log::warn!("previous signing secret unusable subscription_id={} error={err}", claimed.subscription_id);
                None
            }
        },
        _ => None,
    };
    let custom_headers = shared::header_values::open(
        &ctx.secrets,
        &claimed.subscription_id,
        &claimed.headers,
        claimed.headers_encrypted,
    )
    .map_err(|err| {
        log::error!("custom header values unusable subscription_id={} error={err}", claimed.subscription_id);
        Outcome::failed(OutcomeKind::Internal, "the custom header values could not be decrypted", Duration::ZERO)
    })?;
    Ok(Job {
        delivery_id: claimed.delivery_id,
        attempt,
        subscription_id: claimed.subscription_id,
        event_id: claimed.event_id,
        event_type: claimed.event_type,
        url: claimed.url,
        custom_headers,
        timeout: Duration::from_secs(u64::try_from(claimed.timeout_seconds.max(1)).unwrap_or(30)),
        secret,
        previous_secret,
        payload: claimed.payload,
    })
}

/// Records the outcome, retrying briefly while the database is unreachable
/// (the attempt was made: losing its record would send it again).
async fn record_with_retries(
    ctx: &Context,
    subscription_id: uuid::Uuid,
    row: NewAttempt,
    next: store::NextState,
) -> Result<Recorded, BatchError> {
    let mut pause = Duration::from_millis(250);
    let mut tries = 0;
    loop {
        let result = ctx
            .records
            .call((subscription_id, row.clone(), next.clone()))
            .await
            .unwrap_or_else(|| Err(db::DbError::BatcherStopped.into()));
        match result {
            Ok(recorded) => return Ok(recorded),
            Err(err) if tries < 4 => {
                log::warn!("recording an attempt failed; retrying delivery_id={} error={err}", row.delivery_id);
                tries += 1;
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
            Err(err) => return Err(err),
        }
    }
}

fn counted(disposition: Disposition, result: &'static str) -> Disposition {
    metrics::counter!(metric_names::MESSAGES, "result" => result).increment(1);
    disposition
}

#[cfg(test)]
mod tests {
    use super::Disposition::{self, Ack, Requeue, Return};

    #[test]
    fn a_message_is_acked_only_when_every_attempt_is_durable() {
        assert_eq!(Disposition::of_all([]), Ack, "an empty message has nothing to wait for");
        assert_eq!(Disposition::of_all([Ack, Ack, Ack]), Ack);
        assert_eq!(Disposition::of_all([Ack, Requeue, Ack]), Requeue);
        assert_eq!(Disposition::of_all([Requeue, Return, Ack]), Return, "stopping returns it at once");
        assert_eq!(Disposition::of_all([Return, Requeue]), Return);
    }
}

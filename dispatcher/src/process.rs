//! What one dispatch message does: claim the attempt, make it, record the
//! outcome, queue the next attempt if any — and then say whether to ack.
//!
//! Ack only once the outcome is committed and any retry message confirmed; a
//! message whose work could not be made durable goes back to the queue.
//! Every step is idempotent, so a redelivered message is harmless.

use std::time::Duration;

use lapin::{
    message::Delivery as AmqpMessage,
    types::{AMQPValue, FieldTable},
};
use shared::{
    amqp::{long_string, persistent_json, DispatchMessage, DEFER_DELAYS},
    db,
    models::{attempt::NewAttempt, delivery},
};

use crate::{
    batched_store::BatchError,
    context::Context,
    deliver::{deliver_one, Job},
    limits::SlotGuard,
    metric_names,
    outcome::{Outcome, OutcomeKind},
    retry::{self, RetryPolicy},
    stats::Stats,
    store::{self, Claim, Claimed, Recorded},
};

/// Header on a deferred message: how many times it was put off.
const DEFERRALS_HEADER: &str = "x-deferrals";
/// Header on a deferred message: its subscription, so the cap can be checked
/// again without a database round trip.
const SUBSCRIPTION_HEADER: &str = "x-subscription-id";
/// Deferrals that use the short defer delay before the long one.
const SHORT_DEFERRALS: i64 = 5;
/// Grace period for the previous secret after a rotation.
const ROTATION_GRACE: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// What to do with the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Ack,
    /// Return it to the queue (after a short pause): its work is not durable.
    Requeue,
}

/// Handles one message from the dispatch queue.
pub async fn handle(ctx: &Context, message: &AmqpMessage) -> Disposition {
    let (delivery_id, attempt) = match serde_json::from_slice::<DispatchMessage>(&message.data) {
        Ok(DispatchMessage::Attempt { delivery_id, attempt }) if attempt >= 1 => (delivery_id, attempt),
        Ok(other) => {
            log::error!("dispatch message dropped: invalid attempt message={other:?}");
            return counted(Disposition::Ack, "invalid");
        }
        Err(err) => {
            log::error!("dispatch message dropped: not a dispatch message error={err}");
            return counted(Disposition::Ack, "invalid");
        }
    };
    let deferrals = header(message, DEFERRALS_HEADER).and_then(AMQPValue::as_long_long_int).unwrap_or(0);
    // A message deferred for its subscription's cap names the subscription:
    // while that is still at its cap, put it off again without touching the database.
    let mut slot = None;
    if let Some(subscription_id) = header(message, SUBSCRIPTION_HEADER)
        .and_then(AMQPValue::as_long_string)
        .and_then(|s| uuid::Uuid::try_parse_ascii(s.as_bytes()).ok())
    {
        match ctx.slots.try_acquire(subscription_id) {
            Some(guard) => slot = Some(guard),
            None => return defer(ctx, message, Some(subscription_id), deferrals).await,
        }
    }

    let claim =
        ctx.claims.call((delivery_id, attempt)).await.unwrap_or_else(|| Err(db::DbError::BatcherStopped.into()));
    let claimed = match claim {
        Ok(Claim::Claimed(claimed)) => claimed,
        Ok(Claim::Stale) => {
            Stats::bump(&ctx.stats.stale);
            log::debug!("stale dispatch message dropped delivery_id={delivery_id} attempt={attempt}");
            return counted(Disposition::Ack, "stale");
        }
        Ok(Claim::Busy) => return defer(ctx, message, None, deferrals).await,
        Err(err) => {
            log::warn!("claiming failed; requeueing delivery_id={delivery_id} attempt={attempt} error={err}");
            return counted(Disposition::Requeue, "db_unavailable");
        }
    };
    let slot = match slot {
        Some(slot) => slot,
        None => match ctx.slots.try_acquire(claimed.subscription_id) {
            Some(slot) => slot,
            None => {
                // Give the claim back so the deferred message can take it again.
                if let Ok(mut conn) = db::conn(&ctx.pool).await {
                    if let Err(err) = store::release(&mut conn, delivery_id, attempt).await {
                        log::warn!("releasing a claim failed delivery_id={delivery_id} error={err}");
                    }
                }
                return defer(ctx, message, Some(claimed.subscription_id), deferrals).await;
            }
        },
    };
    attempt_claimed(ctx, *claimed, attempt, slot).await
}

/// Makes and records a claimed attempt.
async fn attempt_claimed(ctx: &Context, claimed: Claimed, attempt: i32, _slot: SlotGuard) -> Disposition {
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

    let policy = RetryPolicy {
        retry_enabled: claimed.retry_enabled,
        max_retries: claimed.max_retries,
        manual_retry: claimed.manual_retry,
    };
    let subscription_id = claimed.subscription_id;
    let event_type = claimed.event_type.clone();
    let outcome = match job_of(ctx, claimed, attempt) {
        Ok(job) => {
            metrics::gauge!(metric_names::IN_FLIGHT).increment(1.0);
            let outcome = deliver_one(&ctx.deliver, &job).await;
            metrics::gauge!(metric_names::IN_FLIGHT).decrement(1.0);
            ctx.slots.record_outcome(subscription_id, outcome.is_success());
            outcome
        }
        Err(outcome) => outcome,
    };
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
            metrics::counter!(metric_names::SUBSCRIPTIONS_DISABLED).increment(1);
            log::info!("subscription disabled after 410 Gone subscription_id={subscription_id}");
        }
        Recorded::Stored { disabled: false } => {}
    }
    if let Some(delay) = retry_delay {
        schedule_retry(ctx, delivery_id, attempt + 1, delay).await;
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
fn job_of(ctx: &Context, claimed: Claimed, attempt: i32) -> Result<Job, Outcome> {
    let secret = ctx.secrets.open(&claimed.subscription_id, &claimed.secret_encrypted).map_err(|err| {
        log::error!("signing secret unusable subscription_id={} error={err}", claimed.subscription_id);
        Outcome::failed(OutcomeKind::Internal, "the signing secret could not be decrypted", Duration::ZERO)
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

/// Publishes the next attempt to its delay queue, then marks the row enqueued.
/// If the broker does not confirm, the row stays `enqueued = false` with its
/// `next_attempt_at`, and the outbox relay queues it: the database, not this
/// message, is what guarantees the retry.
async fn schedule_retry(ctx: &Context, delivery_id: uuid::Uuid, next_attempt: i32, delay: Duration) {
    let mut published = retry::schedule(&ctx.broker, &ctx.topology, delivery_id, next_attempt, delay).await;
    if published.is_err() {
        // One more try on a fresh session (the publisher channel may just have been replaced).
        if ctx.broker.wait_session(Duration::from_secs(5)).await.is_ok() {
            published = retry::schedule(&ctx.broker, &ctx.topology, delivery_id, next_attempt, delay).await;
        }
    }
    match published {
        Ok(()) => {
            Stats::bump(&ctx.stats.retries_scheduled);
            metrics::counter!(metric_names::RETRIES_SCHEDULED).increment(1);
            let marked = match db::conn(&ctx.pool).await {
                Ok(mut conn) => {
                    delivery::mark_enqueued(&mut conn, &[(delivery_id, next_attempt)]).await.map_err(db::DbError::from)
                }
                Err(err) => Err(err),
            };
            if let Err(err) = marked {
                // The relay will publish a duplicate; the dispatcher drops whichever copy comes second.
                log::warn!("marking a retry enqueued failed delivery_id={delivery_id} error={err}");
            }
        }
        Err(err) => {
            log::warn!(
                "queueing a retry failed; the outbox relay will queue it delivery_id={delivery_id} attempt={next_attempt} error={err}"
            );
        }
    }
}

/// Puts the message off on a defer queue without counting an attempt.
async fn defer(
    ctx: &Context,
    message: &AmqpMessage,
    subscription_id: Option<uuid::Uuid>,
    deferrals: i64,
) -> Disposition {
    let delay = if deferrals < SHORT_DEFERRALS { DEFER_DELAYS[0] } else { DEFER_DELAYS[1] };
    let mut headers = FieldTable::default();
    headers.insert(DEFERRALS_HEADER.into(), AMQPValue::LongLongInt(deferrals.saturating_add(1)));
    if let Some(subscription_id) = subscription_id {
        headers.insert(SUBSCRIPTION_HEADER.into(), long_string(&subscription_id.to_string()));
    }
    let properties = persistent_json().with_headers(headers);
    match ctx.broker.publish("", &ctx.topology.defer_queue(delay), &message.data, properties).await {
        Ok(()) => {
            Stats::bump(&ctx.stats.deferred);
            counted(Disposition::Ack, "deferred")
        }
        Err(err) => {
            log::warn!("deferring a message failed; requeueing error={err}");
            counted(Disposition::Requeue, "broker_unavailable")
        }
    }
}

fn header<'a>(message: &'a AmqpMessage, name: &str) -> Option<&'a AMQPValue> {
    message.properties.headers().as_ref()?.inner().get(name)
}

fn counted(disposition: Disposition, result: &'static str) -> Disposition {
    metrics::counter!(metric_names::MESSAGES, "result" => result).increment(1);
    disposition
}

//! Consuming `{p}.dispatch`: manual acks, a large prefetch
//! (`DISPATCHER_PREFETCH`: attempts in flight plus those waiting here for a
//! slot, see [`crate::flow`]), a task per message (each of its attempts
//! holding a permit of a semaphore of the same size), and a fresh channel and
//! consumer after every broker reconnect.

use std::{sync::Arc, time::Duration};

use futures_util::{future::join_all, StreamExt};
use lapin::{
    message::Delivery as AmqpMessage,
    options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions},
    types::FieldTable,
    Acker, Channel, Consumer,
};
use shared::amqp::{BrokerSession, DispatchMessage, BROKER_TIMEOUT};
use tokio::sync::{watch, Semaphore};

use crate::{
    context::Context,
    process::{self, Disposition},
};

/// Pause before a message goes back to the queue, so an outage (database
/// down) does not turn into a hot redelivery loop.
const REQUEUE_PAUSE: Duration = Duration::from_secs(1);

/// Attempts this dispatcher takes from the queue before acking any: those in
/// flight and those waiting for a slot. Large, so that a backlog waits here,
/// where each subscription has its own queue and free slots go round-robin,
/// and not in the broker's one FIFO (where a quiet subscription's message
/// would wait for a hot one's whole backlog). A waiting attempt costs a
/// small future, not its payload: it is claimed (and the payload read) only
/// once it has a slot. Never below the slots themselves. The broker's
/// prefetch (which counts messages) is the same number; the consumer reads a
/// message only once it holds a permit for each of its attempts, so messages
/// delivered past that wait unread in the channel's buffer.
pub fn prefetch(config: &shared::config::Config) -> usize {
    usize::from(config.dispatcher_prefetch).max(config.dispatcher_concurrency).min(usize::from(u16::MAX))
}

/// Runs the consumer until `stop` turns true (or its sender is dropped).
/// Returns the last consumer channel, cancelled but still open, so the caller
/// can let in-flight tasks ack on it before closing it.
pub async fn run(ctx: Context, slots: Arc<Semaphore>, mut stop: watch::Receiver<bool>) -> Option<Channel> {
    let tag = format!("webhooks-dispatcher-{}", uuid::Uuid::new_v4().simple());
    let total = prefetch(&ctx.config);
    loop {
        let session = tokio::select! {
            biased;
            _ = stopped(&mut stop) => return None,
            session = ctx.broker.wait_session(Duration::from_secs(30)) => session,
        };
        let Ok(session) = session else { continue };
        let (channel, mut consumer) = match tokio::time::timeout(BROKER_TIMEOUT, subscribe(&ctx, &session, &tag)).await
        {
            Ok(Ok(subscribed)) => subscribed,
            Ok(Err(err)) => {
                log::warn!("subscribing to the dispatch queue failed error={err}; retrying");
                if pause_or_stop(&mut stop, Duration::from_secs(1)).await {
                    return None;
                }
                continue;
            }
            Err(_) => {
                log::warn!("subscribing to the dispatch queue timed out; retrying");
                continue;
            }
        };
        log::info!(
            "consuming queue={} prefetch={} consumer_tag={tag}",
            ctx.topology.dispatch_queue(),
            prefetch(&ctx.config)
        );
        loop {
            let permit = tokio::select! {
                biased;
                _ = stopped(&mut stop) => return Some(cancel(channel, &tag).await),
                permit = slots.clone().acquire_owned() => permit,
            };
            let Ok(permit) = permit else { return Some(cancel(channel, &tag).await) };
            let next = tokio::select! {
                biased;
                _ = stopped(&mut stop) => return Some(cancel(channel, &tag).await),
                next = consumer.next() => next,
            };
            match next {
                Some(Ok(message)) => {
                    // Only the attempts and the acker are kept: a message
                    // waiting here for a slot should cost as little as possible.
                    let AmqpMessage { data, acker, .. } = message;
                    let attempts = process::decode(&data);
                    drop(data);
                    // One permit per attempt (the first one is held already),
                    // so the attempts waiting here stay within the prefetch.
                    let more = u32::try_from(attempts.len().clamp(1, total) - 1).unwrap_or(0);
                    let permit = if more == 0 {
                        Ok(permit)
                    } else {
                        tokio::select! {
                            biased;
                            _ = stopped(&mut stop) => {
                                // Not started: it returns to the queue with the channel.
                                return Some(cancel(channel, &tag).await);
                            }
                            more = slots.clone().acquire_many_owned(more) => more.map(|mut more| {
                                more.merge(permit);
                                more
                            }),
                        }
                    };
                    let Ok(permit) = permit else { return Some(cancel(channel, &tag).await) };
                    let ctx = ctx.clone();
                    tokio::spawn(async move {
                        settle(&ctx, attempts, acker).await;
                        drop(permit);
                    });
                }
                Some(Err(err)) => {
                    log::warn!("dispatch consumer failed error={err}; re-subscribing after reconnect");
                    break;
                }
                None => {
                    log::warn!("dispatch consumer ended; re-subscribing");
                    break;
                }
            }
        }
        // Unacked messages of the lost channel return to the queue by themselves.
        if pause_or_stop(&mut stop, Duration::from_millis(200)).await {
            return None;
        }
    }
}

async fn subscribe(ctx: &Context, session: &BrokerSession, tag: &str) -> Result<(Channel, Consumer), lapin::Error> {
    let channel = session.connection.create_channel().await?;
    let prefetch = u16::try_from(prefetch(&ctx.config)).unwrap_or(u16::MAX);
    channel.basic_qos(prefetch, BasicQosOptions { global: false }).await?;
    let consumer = channel
        .basic_consume(
            ctx.topology.dispatch_queue().into(),
            tag.into(),
            BasicConsumeOptions { no_ack: false, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    Ok((channel, consumer))
}

/// Stops new deliveries to this consumer; what was prefetched but not started
/// stays unacked and returns to the queue when the channel closes.
async fn cancel(channel: Channel, tag: &str) -> Channel {
    match tokio::time::timeout(BROKER_TIMEOUT, channel.basic_cancel(tag.into(), BasicCancelOptions::default())).await {
        Ok(Ok(())) => log::info!("dispatch consumer cancelled consumer_tag={tag}"),
        Ok(Err(err)) => log::warn!("cancelling the dispatch consumer failed error={err}"),
        Err(_) => log::warn!("cancelling the dispatch consumer timed out"),
    }
    channel
}

/// Handles every attempt of one message at once (each waits for its own
/// subscription's slot), then acks the message or returns it to the queue:
/// returned if any attempt's work is not durable (the others are then stale
/// when it comes back, and acked at once). A message without attempts (not
/// a dispatch message) is acked.
async fn settle(ctx: &Context, attempts: Vec<DispatchMessage>, acker: Acker) {
    let dispositions = join_all(attempts.into_iter().map(|attempt| process::handle(ctx, attempt))).await;
    let disposition = Disposition::of_all(dispositions);
    // Boxed: the task of a message waiting for a slot reserves no room for these.
    Box::pin(answer(acker, disposition)).await;
}

async fn answer(acker: Acker, disposition: Disposition) {
    let settled = match disposition {
        Disposition::Ack => acker.ack(BasicAckOptions::default()).await,
        Disposition::Requeue => {
            tokio::time::sleep(REQUEUE_PAUSE).await;
            acker.nack(BasicNackOptions { requeue: true, multiple: false }).await
        }
        Disposition::Return => acker.nack(BasicNackOptions { requeue: true, multiple: false }).await,
    };
    if let Err(err) = settled {
        // The channel is gone; the broker redelivers the message and the claim
        // rules make the second handling a no-op (or the pending work).
        log::debug!("settling a dispatch message failed error={err}");
    }
}

/// Resolves once `stop` is true or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Sleeps for `pause`; true if told to stop meanwhile.
async fn pause_or_stop(stop: &mut watch::Receiver<bool>, pause: Duration) -> bool {
    tokio::select! {
        _ = stopped(stop) => true,
        _ = tokio::time::sleep(pause) => false,
    }
}

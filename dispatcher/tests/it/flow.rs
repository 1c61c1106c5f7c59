//! Flow control: a busy endpoint is served from one queue without putting
//! anything off, failing endpoints do not churn the broker, `Retry-After`,
//! jitter and permanent failures.

use std::time::Duration;

use futures_util::{stream, StreamExt};
use shared::{
    models::{delivery::DeliveryStatus, endpoint_health::Circuit},
    testing::eventually,
};

use crate::helpers::{spawn_env, Receiver, Reply, SubSpec};

fn stat(counter: &std::sync::atomic::AtomicU64) -> u64 {
    dispatcher::stats::Stats::get(counter)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_events_to_one_subscription_are_all_delivered_without_deferral() {
    let env = spawn_env().await;
    let receiver = Receiver::always(200).await;
    env.subscription(SubSpec::new(&receiver.url("/hot"))).await;
    let dispatcher = env.start_dispatcher(&[]).await;

    stream::iter(0..2000)
        .for_each_concurrent(32, |n| {
            let env = &env;
            async move {
                env.publish("t1", "invoice.created", serde_json::json!({"n": n})).await;
            }
        })
        .await;
    env.wait_succeeded(2000, Duration::from_secs(180)).await;
    let stats = &dispatcher.context.stats;
    assert_eq!(stat(&stats.attempts), 2000);
    assert_eq!(stat(&stats.parked), 0, "no delivery was put off");
    // (A duplicate message the outbox relay may send under load is parked
    // until the first copy's claim ends: stats.duplicates_parked, not a deferral.)
    assert_eq!(stat(&stats.retries_scheduled), 0);
    assert_eq!(receiver.count(), 2000);
    assert!(receiver.count_by_delivery().values().all(|n| *n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_endpoints_are_attempted_or_parked_at_once_and_never_churn_the_broker() {
    let env = spawn_env().await;
    let receiver = Receiver::always(200).await;
    let mut dead = Vec::new();
    for n in 0..3 {
        // `.invalid` never resolves (RFC 6761): each attempt fails in about a millisecond.
        dead.push(env.subscription(SubSpec::new(&format!("http://dead-{n}.invalid/hook")).retries(true, 0)).await);
    }
    env.subscription(SubSpec::new(&receiver.url("/healthy"))).await;
    let dispatcher = env.start_dispatcher(&[]).await;

    stream::iter(0..100)
        .for_each_concurrent(16, |n| {
            let env = &env;
            async move {
                env.publish("t1", "invoice.created", serde_json::json!({"n": n})).await;
            }
        })
        .await;
    env.wait_succeeded(100, Duration::from_secs(60)).await;
    assert_eq!(receiver.count(), 100, "the healthy subscription got everything");
    for sub in &dead {
        let settled = eventually(Duration::from_secs(30), || async {
            let failed = deliveries_with(&env, sub.id, DeliveryStatus::Failed).await;
            let parked = env.count_parked_unattempted(sub.id).await;
            (failed + parked == 100).then_some((failed, parked))
        })
        .await;
        let (failed, parked) = settled.expect("every delivery of a dead endpoint was attempted or parked");
        assert!(failed >= 5 && parked > 0, "the circuit opened after the threshold: {failed} failed, {parked} parked");
        assert_eq!(env.health(sub.id).await.expect("health").circuit, Circuit::Open);
    }
    assert_eq!(stat(&dispatcher.context.stats.requeued), 0, "no parked delivery went back through the broker");
}

async fn deliveries_with(env: &crate::helpers::TestEnv, subscription_id: uuid::Uuid, status: DeliveryStatus) -> i64 {
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    use shared::schema::deliveries::dsl as d;
    let mut conn = env.conn().await;
    d::deliveries
        .filter(d::subscription_id.eq(subscription_id))
        .filter(d::status.eq(status))
        .count()
        .get_result(&mut conn)
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_in_seconds_or_as_a_date_sets_the_next_attempt() {
    let env = spawn_env().await;
    let receiver = Receiver::start(|_, n| match n {
        0 => Reply::status(429).header("Retry-After", "3"),
        1 => {
            let at = chrono::Utc::now() + chrono::Duration::seconds(4);
            Reply::status(503).header("Retry-After", &at.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        }
        _ => Reply::status(200),
    })
    .await;
    env.subscription(SubSpec::new(&receiver.url("/limited"))).await;
    let _dispatcher = env.start_dispatcher(&[]).await;

    let delivery = env.publish_one().await;
    let row = env.wait_status(delivery.id, DeliveryStatus::Succeeded, Duration::from_secs(30)).await;
    assert_eq!(row.attempt_count, 3, "each answer with Retry-After still counts as an attempt");
    let requests = receiver.received();
    // RETRY_SCHEDULE is 1s,2s,3s here: the endpoint's wish replaced it.
    let first_gap = requests[1].at - requests[0].at;
    let second_gap = requests[2].at - requests[1].at;
    assert!(first_gap >= Duration::from_millis(2900), "Retry-After: 3 → {first_gap:?}");
    assert!(second_gap >= Duration::from_millis(2900), "Retry-After: <date 4 s ahead> → {second_gap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitter_spreads_the_retry_times_within_the_fraction() {
    let env = spawn_env().await;
    let receiver = Receiver::always(500).await;
    let sub = env.subscription(SubSpec::new(&receiver.url("/fail"))).await;
    let settings = [("RETRY_JITTER", "0.5"), ("RETRY_SCHEDULE", "10s"), ("CIRCUIT_FAILURE_THRESHOLD", "1000")];
    let _dispatcher = env.start_dispatcher(&settings).await;

    for n in 0..30 {
        env.publish("t1", "invoice.created", serde_json::json!({"n": n})).await;
    }
    let retrying = eventually(Duration::from_secs(30), || async {
        (deliveries_with(&env, sub.id, DeliveryStatus::Retrying).await == 30).then_some(())
    })
    .await;
    assert!(retrying.is_some(), "every delivery failed once");
    let mut delays = Vec::new();
    for delivery in env.deliveries_of_subscription(sub.id).await {
        let attempts = env.attempts(delivery.id).await;
        let due = delivery.next_attempt_at.expect("due time");
        delays.push((due - attempts[0].created_at).num_milliseconds() as f64 / 1000.0);
    }
    let (min, max) = delays.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    assert!(min >= 4.9 && max <= 15.1, "within 10 s ± 50 %: {min}..{max}");
    assert!(max - min >= 3.0, "spread, not one instant: {min}..{max} ({delays:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_address_gets_one_attempt_even_with_retries_on() {
    let env = spawn_env().await;
    let receiver = Receiver::always(200).await;
    let port = receiver.base.rsplit(':').next().expect("port").to_owned();
    env.subscription(SubSpec::new(&format!("http://127.0.0.1:{port}/internal")).retries(true, 3)).await;
    let _dispatcher = env.start_dispatcher(&[("ALLOW_PRIVATE_TARGETS", "false")]).await;

    let delivery = env.publish_one().await;
    let row = env.wait_status(delivery.id, DeliveryStatus::Failed, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let attempts = env.attempts(delivery.id).await;
    assert_eq!(attempts.len(), 1, "never retried: {attempts:?}");
    assert_eq!(attempts[0].outcome, "blocked_address");
    assert_eq!((row.next_attempt_at, env.delivery(delivery.id).await.attempt_count), (None, 1));
    assert_eq!(receiver.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_subscription_is_served_before_a_hot_ones_backlog_drains() {
    let env = spawn_env().await;
    let receiver = Receiver::start(|request, _| {
        let reply = Reply::status(200);
        if request.path == "/hot" {
            reply.after(Duration::from_millis(200))
        } else {
            reply
        }
    })
    .await;
    env.subscription(SubSpec::new(&receiver.url("/hot")).events(&["invoice.created"])).await;
    env.subscription(SubSpec::new(&receiver.url("/quiet")).events(&["invoice.paid"])).await;
    // A backlog of the hot subscription queued ahead of one quiet event, in
    // the broker's one FIFO, before any dispatcher runs.
    for n in 0..30 {
        env.publish("t1", "invoice.created", serde_json::json!({"n": n})).await;
    }
    let quiet = env.publish("t1", "invoice.paid", serde_json::json!({})).await;
    let queued = eventually(Duration::from_secs(10), || async {
        env.deliveries_of(&quiet).await.first().is_some_and(|d| d.enqueued).then_some(())
    })
    .await;
    assert!(queued.is_some(), "the quiet event was queued");
    let _dispatcher =
        env.start_dispatcher(&[("DISPATCHER_CONCURRENCY", "4"), ("DISPATCHER_PER_SUBSCRIPTION", "2")]).await;

    env.wait_succeeded(31, Duration::from_secs(60)).await;
    let order: Vec<String> = receiver.received().into_iter().map(|r| r.path).collect();
    let position = order.iter().position(|path| path == "/quiet").expect("the quiet endpoint got its event");
    // The hot backlog (30 × 200 ms over 2 slots) waited in the dispatcher's
    // per-subscription queue; the quiet message took a free slot at once
    // instead of waiting behind it in the broker.
    assert!(position < 6, "the quiet event was request {position} of {}: {order:?}", order.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_waits_too_long_for_a_slot_goes_back_through_the_database_and_is_delivered_once() {
    let env = spawn_env().await;
    let receiver = Receiver::slow(200, Duration::from_millis(600)).await;
    env.subscription(SubSpec::new(&receiver.url("/slow"))).await;
    let dispatcher =
        env.start_dispatcher(&[("DISPATCHER_PER_SUBSCRIPTION", "1"), ("DISPATCHER_MAX_SLOT_WAIT", "1s")]).await;

    for n in 0..6 {
        env.publish("t1", "invoice.created", serde_json::json!({"n": n})).await;
    }
    env.wait_succeeded(6, Duration::from_secs(60)).await;
    let stats = &dispatcher.context.stats;
    // One at a time at 600 ms each: the later messages' turn came after 1 s.
    assert!(stat(&stats.parked) > 0, "an overdue waiter was parked");
    assert!(stat(&stats.requeued) > 0, "and queued again from the database");
    assert_eq!(receiver.count(), 6, "each event was sent once");
    assert!(receiver.count_by_delivery().values().all(|n| *n == 1));
    assert_eq!(receiver.max_concurrency("/slow"), 1);
}

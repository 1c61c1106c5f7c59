//! The shared circuit breaker: it opens after the threshold, nothing is sent
//! while it is open, one probe closes (or re-opens) it, parked deliveries keep
//! their attempt number and are all delivered after it closes; several
//! dispatchers honour one circuit; auto-disable.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use reqwest::Method;
use shared::{
    amqp::DispatchMessage,
    models::{delivery::DeliveryStatus, endpoint_health::Circuit},
    testing::eventually,
};

use crate::helpers::{refused_url, spawn_env, spawn_env_with, Receiver, Reply, SubSpec, TestEnv};

/// A receiver answering 500 until `healthy` is set, then 200.
async fn switchable() -> (Receiver, Arc<AtomicBool>) {
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = healthy.clone();
    let receiver =
        Receiver::start(move |_, _| Reply::status(if flag.load(Ordering::SeqCst) { 200 } else { 500 })).await;
    (receiver, healthy)
}

/// Publishes one event and waits until its delivery has one recorded attempt.
async fn publish_and_wait_attempt(env: &TestEnv) -> uuid::Uuid {
    let delivery = env.publish_one().await;
    let done = eventually(Duration::from_secs(20), || async {
        (env.delivery(delivery.id).await.attempt_count >= 1).then_some(())
    })
    .await;
    assert!(done.is_some(), "delivery {} was never attempted", delivery.id);
    delivery.id
}

async fn dispatch_stat(
    dispatcher: &dispatcher::server::Dispatcher,
    pick: fn(&dispatcher::stats::Stats) -> &std::sync::atomic::AtomicU64,
) -> u64 {
    dispatcher::stats::Stats::get(pick(&dispatcher.context.stats))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_opens_the_circuit_gets_nothing_until_the_probe_and_then_gets_every_parked_delivery() {
    let env = spawn_env().await;
    let (receiver, healthy) = switchable().await;
    let sub = env.subscription(SubSpec::new(&receiver.url("/hook")).retries(true, 3)).await;
    let settings = [("CIRCUIT_FAILURE_THRESHOLD", "3"), ("CIRCUIT_OPEN_BASE", "2s")];
    let dispatcher = env.start_dispatcher(&settings).await;
    let token = env.tenant_key("t1").await;
    let path = format!("/api/v1/webhooks/subscriptions/{}", sub.id);

    // Three failed attempts open the circuit.
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(publish_and_wait_attempt(&env).await);
    }
    let opened = env.wait_circuit(sub.id, Circuit::Open, |_| true, Duration::from_secs(10)).await;
    let (_, view) = env.api(Method::GET, &path, &token).await;
    assert_eq!(view["health"]["circuit"], "open", "{view}");
    assert_eq!(view["health"]["consecutive_failures"], 3);
    assert!(view["health"]["open_until"].is_string() && view["health"]["last_failure_at"].is_string());

    // While it is open, new deliveries are created parked with no attempt:
    // ingest reads the circuit as it stores them and queues no message.
    for _ in 0..5 {
        ids.push(env.publish_one().await.id);
    }
    assert_eq!(env.count_parked_unattempted(sub.id).await, 5, "the new deliveries were created parked");
    assert_eq!(receiver.count(), 3, "nothing is sent while the circuit is open");

    // The probe (one request) fails: the circuit re-opens for twice as long.
    receiver.wait_count(4, Duration::from_secs(10)).await;
    env.wait_circuit(sub.id, Circuit::Open, |row| row.open_count == 2, Duration::from_secs(10)).await;
    assert_eq!(receiver.count(), 4, "one probe, nothing else");
    // The probe is the oldest waiting delivery: one of the failed ones or one of the parked ones.
    let unattempted = env.count_parked_unattempted(sub.id).await;
    assert!((4..=5).contains(&unattempted), "parked deliveries used no attempt but the probe: {unattempted}");

    // The endpoint recovers: the next probe closes the circuit and every parked delivery goes out.
    healthy.store(true, Ordering::SeqCst);
    env.wait_succeeded(8, Duration::from_secs(30)).await;
    let requests = receiver.received();
    assert_eq!(requests.len(), 12, "3 failures + 1 failed probe + 8 successes");
    let first_probe = requests[3].at - requests[2].at;
    let second_probe = requests[4].at - requests[3].at;
    assert!(first_probe >= Duration::from_millis(1900), "no request while open: the probe came after {first_probe:?}");
    assert!(second_probe >= Duration::from_millis(3900), "the second open period doubled: {second_probe:?}");
    let mut attempted_once = 0;
    for id in &ids[3..] {
        let attempts = env.attempts(*id).await;
        assert!(attempts.len() <= 2, "{attempts:?}");
        if attempts.len() == 1 {
            attempted_once += 1;
            assert_eq!((attempts[0].attempt, attempts[0].outcome.as_str()), (1, "success"));
        }
    }
    assert!(attempted_once >= 4, "parked deliveries kept their attempt number (all but the probe): {attempted_once}");
    let closed = env.health(sub.id).await.expect("health row");
    assert_eq!((closed.circuit, closed.consecutive_failures), (Circuit::Closed, 0));
    assert!(closed.last_success_at.is_some() && closed.open_until.is_none());
    assert!(opened.open_until.is_some());
    // No dispatcher parked them: they never reached one before the circuit closed (or the probe).
    assert_eq!(dispatch_stat(&dispatcher, |s| &s.parked).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatchers_honour_one_circuit() {
    let env = spawn_env().await;
    let (receiver, healthy) = switchable().await;
    let sub = env.subscription(SubSpec::new(&receiver.url("/hook"))).await;
    let settings = [("CIRCUIT_FAILURE_THRESHOLD", "2"), ("CIRCUIT_OPEN_BASE", "8s")];
    let first = env.start_dispatcher(&settings).await;
    let second = env.start_dispatcher(&settings).await;

    publish_and_wait_attempt(&env).await;
    publish_and_wait_attempt(&env).await;
    env.wait_circuit(sub.id, Circuit::Open, |_| true, Duration::from_secs(10)).await;
    // New deliveries are created parked (no message); those whose messages were
    // in the broker before the circuit opened reach the dispatchers, which park them.
    let mut parked = Vec::new();
    for _ in 0..20 {
        parked.push(env.publish_one().await);
    }
    assert_eq!(env.count_parked_unattempted(sub.id).await, 20, "every new delivery was created parked");
    for delivery in &parked {
        let subscription_id = Some(delivery.subscription_id);
        let message = DispatchMessage::Attempt { delivery_id: delivery.id, attempt: 1, subscription_id };
        env.publish_dispatch_message(&message).await;
    }
    // A dispatcher counts a park once its batch is committed.
    let counted = eventually(Duration::from_secs(10), || async {
        let (a, b) = (dispatch_stat(&first, |s| &s.parked).await, dispatch_stat(&second, |s| &s.parked).await);
        (a + b >= 20).then_some((a, b))
    })
    .await;
    let (a, b) = counted.unwrap_or_default();
    assert_eq!(a + b, 20);
    assert!(a > 0 && b > 0, "both dispatchers saw the open circuit: {a} and {b}");
    assert_eq!(receiver.count(), 2, "neither dispatcher sent anything while it was open");

    healthy.store(true, Ordering::SeqCst);
    env.wait_succeeded(22, Duration::from_secs(30)).await;
    let requests = receiver.received();
    assert_eq!(requests.len(), 24, "2 failures, then 22 successes");
    assert!(requests[2].at - requests[1].at >= Duration::from_millis(7900), "the probe waited for the open period");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_failing_every_attempt_for_auto_disable_after_is_disabled_and_the_tenant_is_told() {
    // The outbox relay queues operational deliveries; a short grace keeps the test quick.
    let env = spawn_env_with(&[("OUTBOX_GRACE_MS", "200"), ("OUTBOX_INTERVAL_MS", "200")]).await;
    let url = refused_url();
    let sub = env.subscription(SubSpec::new(&url).events(&["invoice.*"]).retries(true, 10)).await;
    let ops = Receiver::always(200).await;
    env.subscription(SubSpec::new(&ops.url("/ops")).events(&["webhook.subscription.disabled"])).await;
    let settings = [("CIRCUIT_FAILURE_THRESHOLD", "2"), ("CIRCUIT_OPEN_BASE", "1s"), ("AUTO_DISABLE_AFTER", "2s")];
    let _dispatcher = env.start_dispatcher(&settings).await;
    let token = env.tenant_key("t1").await;

    let delivery = env.publish_one().await;
    let path = format!("/api/v1/webhooks/subscriptions/{}", sub.id);
    let disabled = eventually(Duration::from_secs(30), || async {
        let (_, view) = env.api(Method::GET, &path, &token).await;
        (view["is_active"] == false).then_some(view)
    })
    .await
    .expect("the subscription was disabled");
    let reason = disabled["disabled_reason"].as_str().expect("reason");
    assert!(reason.starts_with("every attempt failed since "), "{reason}");
    assert!(disabled["health"]["consecutive_failures"].as_i64().is_some_and(|n| n >= 3), "{disabled}");
    // Its waiting delivery ends like any delivery of a disabled subscription.
    let row = env.wait_status(delivery.id, DeliveryStatus::Failed, Duration::from_secs(10)).await;
    assert!(row.attempt_count >= 3, "{row:?}");

    // The disable went through the one disable function: the tenant hears of it, once.
    ops.wait_count(1, Duration::from_secs(30)).await;
    let told = ops.received()[0].json();
    assert_eq!(told["type"], "webhook.subscription.disabled");
    assert_eq!(told["data"]["subscription_id"], sub.id.to_string());
    assert_eq!(told["data"]["url"], url);
    assert_eq!(told["data"]["reason"], reason);
    let disabled_at = told["data"]["disabled_at"].as_str().expect("disabled_at");
    assert!(chrono::DateTime::parse_from_rfc3339(disabled_at).is_ok(), "{told}");
}

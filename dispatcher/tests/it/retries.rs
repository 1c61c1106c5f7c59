//! The outcome rules: retries on the schedule, the retry limit, retries off,
//! and 410 Gone.

use std::time::Duration;

use shared::{
    models::{delivery::DeliveryStatus, subscription},
    testing::holds_for,
};

use crate::helpers::{spawn_env, Receiver, SubSpec};

/// RETRY_SCHEDULE in tests is 1s,2s,3s; timers may fire a little early.
const TOLERANCE: Duration = Duration::from_millis(100);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_succeeds_on_the_third_attempt_after_two_500s_with_the_scheduled_delays() {
    let env = spawn_env().await;
    let receiver = Receiver::sequence(&[500, 500, 200]).await;
    env.subscription(SubSpec::new(&receiver.url("/hook"))).await;
    let _dispatcher = env.start_dispatcher(&[]).await;

    let delivery = env.publish_one().await;
    let row = env.wait_status(delivery.id, DeliveryStatus::Succeeded, Duration::from_secs(30)).await;
    assert_eq!((row.attempt_count, row.last_status_code, row.last_error), (3, Some(200), None));
    assert_eq!(row.next_attempt_at, None);

    let attempts = env.attempts(delivery.id).await;
    let summary: Vec<_> = attempts.iter().map(|a| (a.attempt, a.outcome.as_str(), a.status_code)).collect();
    assert_eq!(summary, [(1, "http_status", Some(500)), (2, "http_status", Some(500)), (3, "success", Some(200))]);
    assert_eq!(attempts[0].error.as_deref(), Some("endpoint answered HTTP 500"));

    let requests = receiver.received();
    assert_eq!(requests.len(), 3);
    let numbers: Vec<_> = requests.iter().map(|r| r.header("x-webhook-attempt").to_owned()).collect();
    assert_eq!(numbers, ["1", "2", "3"]);
    assert!(requests.iter().all(|r| r.body == requests[0].body), "every attempt sends the same bytes");
    let first_gap = requests[1].at - requests[0].at;
    let second_gap = requests[2].at - requests[1].at;
    assert!(first_gap + TOLERANCE >= Duration::from_secs(1), "retry 1 came after {first_gap:?}");
    assert!(second_gap + TOLERANCE >= Duration::from_secs(2), "retry 2 came after {second_gap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_fails_after_max_retries_and_with_retries_off_after_one_attempt() {
    let env = spawn_env().await;
    let receiver = Receiver::start(|_, _| crate::helpers::Reply::status(503).body("try later")).await;
    env.subscription(SubSpec::new(&receiver.url("/limited")).retries(true, 2).events(&["invoice.created"])).await;
    env.subscription(SubSpec::new(&receiver.url("/off")).retries(false, 3).events(&["invoice.created"])).await;
    let _dispatcher = env.start_dispatcher(&[]).await;

    let event_id = env.publish("t1", "invoice.created", serde_json::json!({})).await;
    let deliveries = env.deliveries_of(&event_id).await;
    assert_eq!(deliveries.len(), 2);
    for delivery in &deliveries {
        env.wait_status(delivery.id, DeliveryStatus::Failed, Duration::from_secs(30)).await;
    }
    // Nothing more arrives once they are failed (the retry schedule is 1s, 2s, 3s).
    let settled = holds_for(Duration::from_millis(1500), || async { receiver.count() == 4 }).await;
    assert!(settled, "requests kept coming after both deliveries failed: {}", receiver.count());
    let counts = receiver.received().iter().fold((0, 0), |(limited, off), r| match r.path.as_str() {
        "/limited" => (limited + 1, off),
        _ => (limited, off + 1),
    });
    assert_eq!(counts, (3, 1), "max_retries 2: three attempts; retries off: one");
    for delivery in deliveries {
        let row = env.delivery(delivery.id).await;
        let attempts = env.attempts(delivery.id).await;
        assert_eq!(row.attempt_count as usize, attempts.len());
        assert_eq!((row.last_status_code, row.next_attempt_at), (Some(503), None));
        assert!(attempts.iter().all(|a| a.response_body.as_deref() == Some("try later") && a.status_code == Some(503)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_fails_the_delivery_for_good_and_disables_the_subscription() {
    let env = spawn_env().await;
    let receiver = Receiver::always(410).await;
    let sub = env.subscription(SubSpec::new(&receiver.url("/gone"))).await;
    let _dispatcher = env.start_dispatcher(&[]).await;

    let delivery = env.publish_one().await;
    let row = env.wait_status(delivery.id, DeliveryStatus::Failed, Duration::from_secs(20)).await;
    assert_eq!((row.attempt_count, row.last_status_code), (1, Some(410)));
    let mut conn = env.conn().await;
    let disabled = subscription::find(&mut conn, "t1", sub.id).await.expect("query").expect("still there");
    assert!(!disabled.is_active);
    assert_eq!(disabled.disabled_reason.as_deref(), Some("endpoint answered 410 Gone"));
    let no_retry = holds_for(Duration::from_millis(1500), || async { receiver.count() == 1 }).await;
    assert!(no_retry, "no retry after a 410: {} requests", receiver.count());

    // A paused subscription receives nothing more.
    let event_id = env.publish("t1", "invoice.created", serde_json::json!({})).await;
    assert!(env.deliveries_of(&event_id).await.is_empty());
}

/// A due retry whose attempt another dispatcher holds a live claim on is that
/// dispatcher's: the scheduler does not queue it again (the request may outlast
/// the scheduler's 30 s lease, and ingest's `enqueued` mark leaves claimed rows
/// alone). Once the claim is gone, the scheduler queues it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_leaves_a_due_retry_under_a_live_claim_to_its_dispatcher() {
    let env = spawn_env().await;
    let receiver = Receiver::sequence(&[500, 200]).await;
    env.subscription(SubSpec::new(&receiver.url("/hook"))).await;
    let _dispatcher = env.start_dispatcher(&[("RETRY_SCHEDULE", "1h")]).await;

    let delivery = env.publish_one().await;
    let waiting = env.wait_status(delivery.id, DeliveryStatus::Retrying, Duration::from_secs(10)).await;
    assert_eq!((waiting.attempt_count, waiting.enqueued), (1, false));
    // Attempt 2 is due now, and another dispatcher holds a live claim on it.
    env.sql(&format!(
        "UPDATE deliveries SET next_attempt_at = now(), claimed_until = now() + interval '1 minute' WHERE id = '{}'",
        delivery.id
    ))
    .await;
    let due = env.delivery(delivery.id).await;
    let left_alone = holds_for(Duration::from_secs(2), || async {
        let row = env.delivery(delivery.id).await;
        receiver.count() == 1 && row.attempt_count == 1 && !row.enqueued && row.next_attempt_at == due.next_attempt_at
    })
    .await;
    assert!(left_alone, "the scheduler queued a retry under a live claim: {:?}", env.delivery(delivery.id).await);

    env.sql(&format!("UPDATE deliveries SET claimed_until = NULL WHERE id = '{}'", delivery.id)).await;
    let row = env.wait_status(delivery.id, DeliveryStatus::Succeeded, Duration::from_secs(10)).await;
    assert_eq!((row.attempt_count, receiver.count()), (2, 2));
}

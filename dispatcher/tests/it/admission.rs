//! Admission control (`INGEST_BACKPRESSURE_LAG`): the answer of a publish to
//! a subscription that is behind waits until it catches up; the event itself
//! is durable and delivered at once, and other subscriptions' publishes are
//! answered at once.

use std::time::Duration;

use futures_util::{stream, StreamExt};
use ingest::publishing::admission;
use reqwest::StatusCode;
use serde_json::json;
use shared::testing::eventually;

use crate::helpers::{spawn_env_with, Receiver, SubSpec, TestEnv};

const LAG: Duration = Duration::from_millis(200);

async fn is_behind(env: &TestEnv, subscription_id: uuid::Uuid) -> bool {
    admission::behind(&env.ingest.state.pool, LAG).await.expect("behind read").contains(&subscription_id)
}

/// Publishes with a given `event_id` and returns the answer's status.
async fn publish_as(env: &TestEnv, event_type: &str, event_id: &str) -> StatusCode {
    let body = json!({"event_type": event_type, "event_data": {}, "tenant_id": "t1", "event_id": event_id});
    let res = env
        .client
        .post(format!("{}/api/v1/events", env.base))
        .bearer_auth(env.publisher_token())
        .json(&body)
        .send()
        .await
        .expect("publish sent");
    res.status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_to_a_subscription_behind_is_answered_when_it_catches_up_and_others_at_once() {
    let env = spawn_env_with(&[("INGEST_BACKPRESSURE_LAG", "200ms"), ("INGEST_BACKPRESSURE_MAX_WAIT", "2m")]).await;
    // 50 ms a request: well under STALLED_AFTER, so the endpoint is slow, not hanging.
    let slow = Receiver::slow(200, Duration::from_millis(50)).await;
    let fast = Receiver::always(200).await;
    let behind = env.subscription(SubSpec::new(&slow.url("/slow")).events(&["invoice.created"])).await;
    env.subscription(SubSpec::new(&fast.url("/fast")).events(&["invoice.paid"])).await;
    let _dispatcher = env.start_dispatcher(&[("DISPATCHER_PER_SUBSCRIPTION", "1")]).await;

    // 40 deliveries to a subscription served one at a time, 50 ms each,
    // published together before any of them is due for 200 ms: none is held.
    stream::iter(0..40)
        .for_each_concurrent(40, |n| {
            let env = &env;
            async move {
                assert_eq!(publish_as(env, "invoice.created", &format!("evt_setup_{n}")).await, StatusCode::ACCEPTED)
            }
        })
        .await;
    // Ingest's own view, read every 25 ms, not only the database's.
    eventually(Duration::from_secs(10), || async { env.ingest.state.admission.is_behind(behind.id).then_some(()) })
        .await
        .expect("the slow subscription falls behind");

    let held = tokio::spawn({
        let (client, base, token) = (env.client.clone(), env.base.clone(), env.publisher_token().to_owned());
        async move {
            let body =
                json!({"event_type": "invoice.created", "event_data": {}, "tenant_id": "t1", "event_id": "evt_held"});
            let res = client.post(format!("{base}/api/v1/events")).bearer_auth(token).json(&body).send().await;
            res.expect("publish sent").status()
        }
    });
    // Durable before it is answered.
    eventually(Duration::from_secs(10), || async { (env.deliveries_of("evt_held").await.len() == 1).then_some(()) })
        .await
        .expect("the held event is stored");
    // Another subscription's publish is answered while that one is held.
    assert_eq!(publish_as(&env, "invoice.paid", "evt_other").await, StatusCode::ACCEPTED);
    assert!(!held.is_finished(), "the publish to the subscription behind is still held");

    assert_eq!(held.await.expect("held publish"), StatusCode::ACCEPTED);
    // Answered only once the backlog ahead of it was delivered.
    assert!(slow.count() >= 40, "answered after the backlog: {} of 40 delivered", slow.count());
    fast.wait_count(1, Duration::from_secs(10)).await;
    slow.wait_count(41, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_waiting_on_purpose_do_not_put_their_subscription_behind() {
    let env = spawn_env_with(&[]).await;
    let sub = env.subscription(SubSpec::new("https://example.com/hook")).await;
    // No dispatcher: the delivery stays queued.
    publish_as(&env, "invoice.created", "evt_waiting").await;
    eventually(Duration::from_secs(10), || async { is_behind(&env, sub.id).await.then_some(()) })
        .await
        .expect("a queued delivery due for longer than the lag is behind");

    let id = sub.id;
    env.sql(&format!(
        "UPDATE deliveries SET claimed_until = now() + interval '1 minute' WHERE subscription_id = '{id}'"
    ))
    .await;
    assert!(!is_behind(&env, id).await, "a delivery under a dispatcher's claim is being attempted, not waiting");
    env.sql(&format!(
        "UPDATE deliveries SET claimed_until = now() - interval '1 second' WHERE subscription_id = '{id}'"
    ))
    .await;
    assert!(is_behind(&env, id).await, "an expired claim does not count");

    env.sql(&format!(
        "INSERT INTO endpoint_health (subscription_id, circuit, open_until) VALUES ('{id}', 'open', now() + interval '1 hour') \
         ON CONFLICT (subscription_id) DO UPDATE SET circuit = 'open', open_until = now() + interval '1 hour'"
    ))
    .await;
    assert!(!is_behind(&env, id).await, "a subscription whose circuit is open is never behind");

    env.sql(&format!(
        "UPDATE endpoint_health SET circuit = 'closed', open_until = NULL, consecutive_failures = 2 \
         WHERE subscription_id = '{id}'"
    ))
    .await;
    assert!(
        !is_behind(&env, id).await,
        "a subscription whose last attempt failed (failing or hanging) is never behind"
    );
    env.sql(&format!("UPDATE endpoint_health SET consecutive_failures = 0 WHERE subscription_id = '{id}'")).await;
    assert!(is_behind(&env, id).await, "a healthy subscription that cannot keep up is behind");

    // A second delivery, in flight since `started` seconds ago (a claim runs
    // until its start + the subscription's timeout + the claim margin).
    assert_eq!(publish_as(&env, "invoice.created", "evt_in_flight").await, StatusCode::ACCEPTED);
    let in_flight_since = |started: f64| {
        format!(
            "UPDATE deliveries d SET created_at = now() - interval '10 seconds', \
               claimed_until = now() + make_interval(secs => s.timeout_seconds + {margin} - {started}) \
             FROM subscriptions s WHERE s.id = d.subscription_id AND d.event_id = 'evt_in_flight'",
            margin = shared::models::delivery::CLAIM_MARGIN_SECONDS
        )
    };
    env.sql(&in_flight_since(0.2)).await;
    assert!(is_behind(&env, id).await, "an attempt in flight for a moment: the endpoint is only slow");
    let stalled = admission::STALLED_AFTER.as_secs_f64() + 1.0;
    env.sql(&in_flight_since(stalled)).await;
    assert!(!is_behind(&env, id).await, "an attempt in flight past STALLED_AFTER: the endpoint hangs, never behind");
    env.sql(&format!(
        "UPDATE deliveries SET next_attempt_at = now() + interval '1 minute', status = 'retrying' \
         WHERE subscription_id = '{id}'"
    ))
    .await;
    assert!(!is_behind(&env, id).await, "a retry (or a parked delivery) not due yet is not behind");
    env.sql(&format!(
        "UPDATE deliveries SET status = 'succeeded', next_attempt_at = NULL WHERE subscription_id = '{id}'"
    ))
    .await;
    assert!(!is_behind(&env, id).await, "a finished delivery is not behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_dispatcher_consuming_nothing_is_held() {
    let env = spawn_env_with(&[("INGEST_BACKPRESSURE_LAG", "200ms"), ("INGEST_BACKPRESSURE_MAX_WAIT", "2m")]).await;
    let sub = env.subscription(SubSpec::new("https://example.com/hook").events(&["invoice.created"])).await;
    // No dispatcher: the delivery stays queued, and the database says the subscription is behind.
    assert_eq!(publish_as(&env, "invoice.created", "evt_first").await, StatusCode::ACCEPTED);
    eventually(Duration::from_secs(10), || async { is_behind(&env, sub.id).await.then_some(()) })
        .await
        .expect("a queued delivery due for longer than the lag is behind");

    // Waiting would not help it catch up: ingest holds nothing while no dispatcher consumes.
    // (Held, this publish would wait the 2-minute maximum.)
    let answered =
        tokio::time::timeout(Duration::from_secs(30), publish_as(&env, "invoice.created", "evt_second")).await;
    assert_eq!(answered.expect("answered without the hold"), StatusCode::ACCEPTED);
    assert!(!env.ingest.state.admission.is_behind(sub.id), "ingest's view: nobody to wait for");

    // A consumer that takes the messages and attempts nothing: now waiting could
    // help, and ingest's view agrees with the database within a count of consumers.
    let connection = lapin::Connection::connect(&env.config.amqp_url, lapin::ConnectionProperties::default())
        .await
        .expect("amqp connect");
    let channel = connection.create_channel().await.expect("channel");
    let queue = shared::amqp::Topology::from_config(&env.config).dispatch_queue();
    let _consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "stalled".into(),
            lapin::options::BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("consume");
    eventually(Duration::from_secs(10), || async { env.ingest.state.admission.is_behind(sub.id).then_some(()) })
        .await
        .expect("with a consumer, the subscription behind is held again");
}

//! The delivery log's controls end to end: manual retry, the test event, and
//! deliveries whose subscription went away before they were sent.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use shared::{models::delivery::DeliveryStatus, testing::holds_for};

use crate::helpers::{spawn_env, Receiver, SubSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_retry_makes_one_more_attempt_without_automatic_retries_after_it() {
    let env = spawn_env().await;
    let receiver = Receiver::sequence(&[500, 500, 200]).await;
    let sub = env.subscription(SubSpec::new(&receiver.url("/hook")).retries(false, 3)).await;
    let _dispatcher = env.start_dispatcher(&[]).await;
    let token = env.tenant_key("t1").await;

    let delivery = env.publish_one().await;
    env.wait_status(delivery.id, DeliveryStatus::Failed, Duration::from_secs(20)).await;
    // Retries on from now: a manual attempt is still never followed by an automatic one.
    env.sql(&format!("UPDATE subscriptions SET retry_enabled = true WHERE id = '{}'", sub.id)).await;

    let retry = format!("/api/v1/webhooks/deliveries/{}/retry", delivery.id);
    let (status, body) = env.api(Method::POST, &retry, &token).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    receiver.wait_count(2, Duration::from_secs(20)).await;
    let row = env.wait_status(delivery.id, DeliveryStatus::Failed, Duration::from_secs(20)).await;
    assert_eq!((row.attempt_count, row.next_attempt_at), (2, None));
    let no_retry = holds_for(Duration::from_millis(1500), || async { receiver.count() == 2 }).await;
    assert!(no_retry, "no automatic retry after a failed manual one: {} requests", receiver.count());

    let (status, _) = env.api(Method::POST, &retry, &token).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let row = env.wait_status(delivery.id, DeliveryStatus::Succeeded, Duration::from_secs(20)).await;
    assert_eq!((row.attempt_count, row.last_status_code), (3, Some(200)));

    let (status, detail) = env.api(Method::GET, &format!("/api/v1/webhooks/deliveries/{}", delivery.id), &token).await;
    assert_eq!(status, StatusCode::OK);
    let codes: Vec<_> =
        detail["attempts"].as_array().expect("attempts").iter().map(|a| a["status_code"].clone()).collect();
    assert_eq!(codes, [json!(500), json!(500), json!(200)]);
    let numbers: Vec<_> = receiver.received().iter().map(|r| r.header("x-webhook-attempt").to_owned()).collect();
    assert_eq!(numbers, ["1", "2", "3"]);
    let (status, page) = env
        .api(Method::GET, &format!("/api/v1/webhooks/subscriptions/{}/deliveries?status=succeeded", sub.id), &token)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"][0]["id"], delivery.id.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_endpoint_delivers_a_webhook_test_event_to_a_subscription_that_did_not_ask_for_it() {
    let env = spawn_env().await;
    let receiver = Receiver::always(204).await;
    let sub = env.subscription(SubSpec::new(&receiver.url("/hook")).events(&["invoice.paid"])).await;
    let _dispatcher = env.start_dispatcher(&[]).await;
    let token = env.tenant_key("t1").await;

    let (status, body) =
        env.api(Method::POST, &format!("/api/v1/webhooks/subscriptions/{}/test", sub.id), &token).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let delivery_id: uuid::Uuid = body["delivery_id"].as_str().expect("delivery_id").parse().expect("uuid");
    env.wait_status(delivery_id, DeliveryStatus::Succeeded, Duration::from_secs(20)).await;
    let request = &receiver.received()[0];
    let envelope = request.json();
    assert_eq!(envelope["type"], "webhook.test");
    assert_eq!(envelope["id"], body["event_id"]);
    assert_eq!(envelope["data"], json!({"message": "test event", "subscription_id": sub.id}));
    assert_eq!(request.header("x-webhook-event-type"), "webhook.test");
    assert!(shared::signing::verify_legacy(&sub.secret, &request.body, request.header("x-webhook-signature")));

    let other = env.tenant_key("t2").await;
    let (status, _) = env.api(Method::POST, &format!("/api/v1/webhooks/subscriptions/{}/test", sub.id), &other).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_of_a_paused_or_deleted_subscription_fail_without_being_sent() {
    let env = spawn_env().await;
    let receiver = Receiver::always(200).await;
    let paused = env.subscription(SubSpec::new(&receiver.url("/paused"))).await;
    let deleted = env.subscription(SubSpec::new(&receiver.url("/deleted"))).await;
    // Published while both were active, with no dispatcher running yet.
    let event_id = env.publish("t1", "invoice.created", json!({})).await;
    env.sql(&format!("UPDATE subscriptions SET is_active = false WHERE id = '{}'", paused.id)).await;
    env.sql(&format!("UPDATE subscriptions SET deleted_at = now(), is_active = false WHERE id = '{}'", deleted.id))
        .await;
    let _dispatcher = env.start_dispatcher(&[]).await;

    for delivery in env.deliveries_of(&event_id).await {
        let row = env.wait_status(delivery.id, DeliveryStatus::Failed, Duration::from_secs(20)).await;
        let expected = if row.subscription_id == paused.id { "subscription disabled" } else { "subscription deleted" };
        assert_eq!(row.last_error.as_deref(), Some(expected));
        assert_eq!(row.attempt_count, 0, "nothing was attempted");
    }
    assert_eq!(receiver.count(), 0);
}

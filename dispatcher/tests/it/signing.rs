//! What a subscriber receives: the exact body, the contract's headers and
//! both signatures, verified the way a subscriber would.

use std::time::Duration;

use ring::hmac;
use serde_json::json;
use shared::{models::delivery::DeliveryStatus, signing::verify_standard};

use crate::helpers::{spawn_env, Receiver, SubSpec};

/// The guide's verification code, in Rust: hex HMAC-SHA256 of the raw body,
/// keyed by the secret's UTF-8 bytes, compared with the header.
fn guide_verify(payload: &[u8], signature: &str, secret: &str) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let expected = hex::encode(hmac::sign(&key, payload).as_ref());
    expected == signature
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_gets_the_stored_body_with_every_contract_header_and_both_valid_signatures() {
    let env = spawn_env().await;
    let receiver = Receiver::always(200).await;
    let sub = env
        .subscription(SubSpec::new(&receiver.url("/hook")).headers(json!({
            "X-Custom-Header": "custom-value",
            "x-webhook-signature": "forged",
            "User-Agent": "evil/1.0",
            "WEBHOOK-ID": "forged",
        })))
        .await;
    let _dispatcher = env.start_dispatcher(&[]).await;

    let delivery = env.publish_one().await;
    let row = env.wait_status(delivery.id, DeliveryStatus::Succeeded, Duration::from_secs(20)).await;
    assert_eq!((row.attempt_count, row.last_status_code), (1, Some(200)));
    let requests = receiver.received();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    let stored = env.payload_of(&delivery.event_id).await;
    assert_eq!(request.body, stored.as_bytes(), "the body is the stored envelope, byte for byte");
    let body = request.json();
    assert_eq!(body["id"], delivery.event_id);
    assert_eq!(body["type"], "invoice.created");
    assert_eq!(body["tenant_id"], "t1");
    assert_eq!(body["data"], json!({"invoice_id": "inv_1", "amount": 100.0}));
    assert_eq!(body["metadata"], json!({}));

    assert_eq!(request.path, "/hook");
    assert_eq!(request.header("content-type"), "application/json");
    assert_eq!(request.header("user-agent"), "DotMac-Webhooks/1.0");
    assert_eq!(request.header("x-webhook-event-id"), delivery.event_id);
    assert_eq!(request.header("x-webhook-event-type"), "invoice.created");
    assert_eq!(request.header("x-webhook-timestamp"), body["timestamp"].as_str().expect("timestamp"));
    assert_eq!(request.header("x-webhook-delivery-id"), delivery.id.to_string());
    assert_eq!(request.header("x-webhook-attempt"), "1");
    assert_eq!(request.header("webhook-id"), delivery.event_id);
    assert_eq!(request.header("x-custom-header"), "custom-value", "the subscription's own headers are sent");

    // The guide's hex HMAC over the raw body, keyed by the whole secret string.
    assert!(guide_verify(&request.body, request.header("x-webhook-signature"), &sub.secret));
    assert!(!guide_verify(&request.body, request.header("x-webhook-signature"), "whsec_other"));
    // Standard Webhooks, with a fresh timestamp.
    let timestamp: i64 = request.header("webhook-timestamp").parse().expect("unix seconds");
    assert!((chrono::Utc::now().timestamp() - timestamp).abs() < 300, "within the 5-minute tolerance");
    let signature = request.header("webhook-signature");
    assert!(signature.starts_with("v1,") && !signature.contains(' '), "one secret, one signature: {signature}");
    assert!(verify_standard(&sub.secret, &delivery.event_id, timestamp, &request.body, signature));
    assert!(!verify_standard(&sub.secret, &delivery.event_id, timestamp + 1, &request.body, signature));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rotation_both_secrets_sign_for_24_hours_and_the_legacy_header_uses_the_new_one() {
    let env = spawn_env().await;
    let receiver = Receiver::always(200).await;
    let fresh = env.subscription(SubSpec::new(&receiver.url("/fresh"))).await;
    let old = env.subscription(SubSpec::new(&receiver.url("/old"))).await;
    let fresh_new = env.rotate_secret("t1", fresh.id).await;
    let old_new = env.rotate_secret("t1", old.id).await;
    env.sql(&format!(
        "UPDATE subscriptions SET secret_rotated_at = now() - interval '25 hours' WHERE id = '{}'",
        old.id
    ))
    .await;
    let _dispatcher = env.start_dispatcher(&[]).await;

    let event_id = env.publish("t1", "invoice.paid", json!({"invoice_id": "inv_2"})).await;
    receiver.wait_count(2, Duration::from_secs(20)).await;
    for request in receiver.received() {
        let timestamp: i64 = request.header("webhook-timestamp").parse().expect("unix seconds");
        let signature = request.header("webhook-signature");
        let legacy = request.header("x-webhook-signature");
        let verify = |secret: &str| verify_standard(secret, &event_id, timestamp, &request.body, signature);
        if request.path == "/fresh" {
            assert_eq!(signature.split(' ').count(), 2, "new and previous: {signature}");
            assert!(verify(&fresh_new) && verify(&fresh.secret));
            assert!(guide_verify(&request.body, legacy, &fresh_new));
            assert!(!guide_verify(&request.body, legacy, &fresh.secret));
        } else {
            assert_eq!(signature.split(' ').count(), 1, "the grace period is over: {signature}");
            assert!(verify(&old_new) && !verify(&old.secret));
            assert!(guide_verify(&request.body, legacy, &old_new));
        }
    }
}

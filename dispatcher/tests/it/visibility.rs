//! What the delivery log shows: the headers each attempt sent and got back,
//! the payload, the event lookup, and a manual retry while an attempt is in
//! flight.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use shared::models::delivery::DeliveryStatus;

use crate::helpers::{spawn_env, Receiver, Reply, SubSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_attempt_records_the_headers_sent_and_received_and_the_delivery_shows_its_payload() {
    let env = spawn_env().await;
    let receiver = Receiver::start(|_, n| {
        Reply::status(if n == 0 { 500 } else { 200 }).header("X-Receiver", "r1").header("Set-Cookie", "session=abc")
    })
    .await;
    let headers = json!({"Authorization": "Bearer s3cret-value", "X-Tenant": "acme"});
    let _sub = env.subscription(SubSpec::new(&receiver.url("/hook")).headers(headers)).await;
    let _dispatcher = env.start_dispatcher(&[]).await;
    let token = env.tenant_key("t1").await;

    let delivery = env.publish_one().await;
    env.wait_status(delivery.id, DeliveryStatus::Succeeded, Duration::from_secs(20)).await;
    let (status, detail) = env.api(Method::GET, &format!("/api/v1/webhooks/deliveries/{}", delivery.id), &token).await;
    assert_eq!(status, StatusCode::OK);
    let received = receiver.received();
    let attempts = detail["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{detail}");
    for (attempt, request) in attempts.iter().zip(&received) {
        let sent = &attempt["request_headers"];
        for name in ["x-webhook-signature", "webhook-signature", "webhook-timestamp", "x-webhook-attempt", "x-tenant"] {
            assert_eq!(sent[name].as_str(), Some(request.header(name)), "{name}: {sent}");
        }
        assert_eq!(sent["x-webhook-delivery-id"], delivery.id.to_string());
        assert_eq!(sent["authorization"], "***", "a credential was stored: {sent}");
        assert!(!sent.to_string().contains("s3cret-value"));
        let got = &attempt["response_headers"];
        assert_eq!(got["x-receiver"], "r1", "{got}");
        assert_eq!(got["set-cookie"], "***", "{got}");
    }
    assert_eq!(detail["payload"], received[0].json(), "the payload is the body sent");
    assert_eq!(detail["payload"]["id"], delivery.event_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_lookup_shows_the_exact_payload_and_every_delivery() {
    let env = spawn_env().await;
    let ok = Receiver::always(200).await;
    let failing = Receiver::always(404).await;
    let first = env.subscription(SubSpec::new(&ok.url("/ok"))).await;
    let second = env.subscription(SubSpec::new(&failing.url("/no")).retries(false, 0)).await;
    let _dispatcher = env.start_dispatcher(&[]).await;
    let token = env.tenant_key("t1").await;

    let data = json!({"invoice_id": "inv_9", "amount": 12.5, "lines": [{"sku": "a", "qty": 2}], "note": "é ✓"});
    let event_id = env.publish("t1", "invoice.created", data.clone()).await;
    ok.wait_count(1, Duration::from_secs(20)).await;
    failing.wait_count(1, Duration::from_secs(20)).await;
    for delivery in env.deliveries_of(&event_id).await {
        let status =
            if delivery.subscription_id == first.id { DeliveryStatus::Succeeded } else { DeliveryStatus::Failed };
        env.wait_status(delivery.id, status, Duration::from_secs(20)).await;
    }

    let (status, event) = env.api(Method::GET, &format!("/api/v1/events/{event_id}"), &token).await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!((event["event_id"].as_str(), event["event_type"].as_str()), (Some(&*event_id), Some("invoice.created")));
    assert_eq!(event["tenant_id"], "t1");
    assert!(event["created_at"].is_string());
    let sent: Value = ok.received()[0].json();
    assert_eq!(event["payload"], sent, "the payload is the envelope as sent");
    assert_eq!(event["payload"]["data"], data);
    assert_eq!(env.payload_of(&event_id).await.as_bytes(), ok.received()[0].body.as_slice());
    let mut deliveries: Vec<(String, String, i64, Value)> = event["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|d| {
            let subscription = d["subscription_id"].as_str().expect("subscription_id").to_owned();
            assert!(d["id"].is_string());
            (
                subscription,
                d["status"].as_str().expect("status").to_owned(),
                d["attempt_count"].as_i64().expect("n"),
                d["last_status_code"].clone(),
            )
        })
        .collect();
    deliveries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want = vec![
        (first.id.to_string(), "succeeded".to_owned(), 1, json!(200)),
        (second.id.to_string(), "failed".to_owned(), 1, json!(404)),
    ];
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(deliveries, want);

    let (status, _) = env.api(Method::GET, &format!("/api/v1/events/{event_id}"), &env.tenant_key("t2").await).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another tenant's event");
    let (status, _) = env.api(Method::GET, &format!("/api/v1/events/{event_id}"), env.publisher_token()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = env.api(Method::GET, "/api/v1/events/evt_never_published", &token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_retry_during_an_attempt_in_flight_is_refused_never_lost() {
    let env = spawn_env().await;
    let receiver =
        Receiver::start(
            |_, n| if n == 0 { Reply::status(500).after(Duration::from_secs(2)) } else { Reply::status(200) },
        )
        .await;
    let _sub = env.subscription(SubSpec::new(&receiver.url("/hook")).retries(false, 0)).await;
    let _dispatcher = env.start_dispatcher(&[]).await;
    let token = env.tenant_key("t1").await;

    let delivery = env.publish_one().await;
    receiver.wait_count(1, Duration::from_secs(20)).await;
    // The first attempt is being answered (slowly): a retry now would be overwritten by its record.
    let retry = format!("/api/v1/webhooks/deliveries/{}/retry", delivery.id);
    let (status, body) = env.api(Method::POST, &retry, &token).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")), "{body}");

    let row = env.wait_status(delivery.id, DeliveryStatus::Failed, Duration::from_secs(20)).await;
    assert_eq!(row.attempt_count, 1, "the refused retry queued nothing");
    let (status, body) = env.api(Method::POST, &retry, &token).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let row = env.wait_status(delivery.id, DeliveryStatus::Succeeded, Duration::from_secs(20)).await;
    assert_eq!(row.attempt_count, 2);
    assert_eq!(receiver.count(), 2);
}

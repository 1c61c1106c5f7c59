//! Operational events end to end: a 410 and a final failure tell the tenant,
//! through the same pipeline as any event, only the subscriptions that asked.

use std::time::Duration;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use shared::{models::delivery::DeliveryStatus, signing};

use crate::helpers::{spawn_env_with, Receiver, SubSpec, TestEnv};

async fn events_of_type(env: &TestEnv, event_type: &str) -> i64 {
    use shared::schema::events::dsl as e;
    let mut conn = env.conn().await;
    e::events.filter(e::event_type.eq(event_type)).count().get_result(&mut conn).await.expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operational_events_reach_subscribers_signed_and_a_star_subscription_never_gets_them() {
    // The outbox relay queues operational deliveries; a short grace keeps the test quick.
    let env = spawn_env_with(&[("OUTBOX_GRACE_MS", "200"), ("OUTBOX_INTERVAL_MS", "200")]).await;
    let ops = Receiver::always(200).await;
    let star = Receiver::always(200).await;
    let gone = Receiver::always(410).await;
    let failing = Receiver::always(500).await;
    let ops_failing = Receiver::always(500).await;
    let ops_sub = env.subscription(SubSpec::new(&ops.url("/ops")).events(&["webhook.*"])).await;
    env.subscription(SubSpec::new(&star.url("/star"))).await;
    let gone_sub = env.subscription(SubSpec::new(&gone.url("/gone")).events(&["invoice.*"])).await;
    let failing_sub =
        env.subscription(SubSpec::new(&failing.url("/fail")).events(&["invoice.*"]).retries(false, 0)).await;
    // Its deliveries of operational events fail too: that must not cause further events.
    let ops_failing_sub = env
        .subscription(SubSpec::new(&ops_failing.url("/opsfail")).events(&["webhook.delivery.failed"]).retries(false, 0))
        .await;
    env.subscription(SubSpec { tenant: "t2".into(), ..SubSpec::new(&ops.url("/t2")).events(&["webhook.*"]) }).await;
    let _dispatcher = env.start_dispatcher(&[]).await;
    let token = env.tenant_key("t1").await;

    let event_id = env.publish("t1", "invoice.created", json!({"invoice_id": "inv_1"})).await;
    let deliveries = env.deliveries_of(&event_id).await;
    let delivery_to = |sub: uuid::Uuid| deliveries.iter().find(|d| d.subscription_id == sub).expect("delivery").id;

    ops.wait_count(3, Duration::from_secs(30)).await;
    let received = ops.received();
    let mut by_type: Vec<(String, Value)> = received
        .iter()
        .map(|r| {
            let body = r.json();
            assert_eq!(r.path, "/ops", "another tenant's subscription got t1's operational event");
            assert_eq!(body["tenant_id"], "t1");
            // Signed like any event, with the subscription's secret.
            assert!(signing::verify_legacy(&ops_sub.secret, &r.body, r.header("x-webhook-signature")));
            let at: i64 = r.header("webhook-timestamp").parse().expect("unix time");
            assert!(signing::verify_standard(
                &ops_sub.secret,
                r.header("webhook-id"),
                at,
                &r.body,
                r.header("webhook-signature")
            ));
            assert_eq!(r.header("x-webhook-event-type"), body["type"].as_str().expect("type"));
            (body["type"].as_str().expect("type").to_owned(), body["data"].clone())
        })
        .collect();
    by_type.sort_by(|a, b| (&a.0, a.1["last_status_code"].as_i64()).cmp(&(&b.0, b.1["last_status_code"].as_i64())));
    let types: Vec<&str> = by_type.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["webhook.delivery.failed", "webhook.delivery.failed", "webhook.subscription.disabled"]);

    let gone_failed = &by_type[0].1;
    assert_eq!(gone_failed["subscription_id"], gone_sub.id.to_string());
    assert_eq!(gone_failed["delivery_id"], delivery_to(gone_sub.id).to_string());
    assert_eq!(
        (gone_failed["event_id"].as_str(), gone_failed["event_type"].as_str()),
        (Some(&*event_id), Some("invoice.created"))
    );
    assert_eq!((gone_failed["attempts"].as_i64(), gone_failed["last_status_code"].as_i64()), (Some(1), Some(410)));
    assert!(gone_failed["last_error"].as_str().is_some_and(|e| e.contains("410")), "{gone_failed}");
    let failed = &by_type[1].1;
    assert_eq!(failed["subscription_id"], failing_sub.id.to_string());
    assert_eq!(failed["delivery_id"], delivery_to(failing_sub.id).to_string());
    assert_eq!((failed["attempts"].as_i64(), failed["last_status_code"].as_i64()), (Some(1), Some(500)));
    let disabled = &by_type[2].1;
    assert_eq!(disabled["subscription_id"], gone_sub.id.to_string());
    assert_eq!(disabled["url"], gone.url("/gone"));
    assert_eq!(disabled["reason"], "endpoint answered 410 Gone");
    assert!(disabled["disabled_at"].as_str().is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()));

    // The subscription that asked only for failures got both, and failed them: no event about those.
    ops_failing.wait_count(2, Duration::from_secs(20)).await;
    for request in ops_failing.received() {
        assert_eq!(request.json()["type"], "webhook.delivery.failed");
        let id: uuid::Uuid = request.delivery_id().parse().expect("uuid");
        env.wait_status(id, DeliveryStatus::Failed, Duration::from_secs(20)).await;
    }
    assert_eq!(
        events_of_type(&env, "webhook.delivery.failed").await,
        2,
        "a failed operational delivery caused another"
    );
    assert_eq!(events_of_type(&env, "webhook.subscription.disabled").await, 1);
    let _ = ops_failing_sub;

    tokio::time::sleep(Duration::from_millis(1000)).await;
    let star_types: Vec<Value> = star.received().iter().map(|r| r.json()["type"].clone()).collect();
    assert_eq!(star_types, [json!("invoice.created")], "`*` matched an operational event");
    assert_eq!(ops.count(), 3);

    // The operational event is an event like any other in the lookup.
    let disabled_event = received.iter().find(|r| r.json()["type"] == "webhook.subscription.disabled").expect("event");
    let id = disabled_event.header("x-webhook-event-id").to_owned();
    let (status, event) = env.api(Method::GET, &format!("/api/v1/events/{id}"), &token).await;
    assert_eq!(status, StatusCode::OK, "{event}");
    assert_eq!(event["payload"], disabled_event.json());
}

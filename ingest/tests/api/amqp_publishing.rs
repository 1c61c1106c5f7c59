//! Publishing over AMQP: `{p}.events` → ingest consumer → fan-out, with
//! invalid messages moved to `{p}.events.rejected`.

use std::{collections::HashMap, time::Duration};

use ingest::metric_names::AMQP_OUTAGE_RETRIES;
use lapin::{
    options::ConfirmSelectOptions,
    types::{AMQPValue, FieldTable},
};
use reqwest::{Method, StatusCode};
use serde_json::json;
use shared::{
    amqp::{long_string, persistent_json, publish_confirmed, DispatchMessage},
    testing::{amqp_url, eventually},
};
use webhooks_client::PublishOptions;

use crate::helpers::{admin_sql, spawn_app, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_over_amqp_creates_one_delivery_per_matching_subscription_once() {
    // One message at a time, so a later message being done means an earlier one is too.
    let app = spawn_app_with(&[("INGEST_PREFETCH", "1")]).await;
    let url = "http://127.0.0.1:9/hook";
    let exact = app.insert_subscription("t1", url, &["invoice.created"], true).await;
    let prefix = app.insert_subscription("t1", url, &["invoice.*"], true).await;
    let category = app.insert_subscription("t1", url, &["billing.*"], true).await;
    let star = app.insert_subscription("t1", url, &["*"], true).await;
    let _other_type = app.insert_subscription("t1", url, &["invoice.paid", "email.*"], true).await;
    let _inactive = app.insert_subscription("t1", url, &["invoice.created"], false).await;
    let _other_tenant = app.insert_subscription("t2", url, &["*"], true).await;
    let bus = app.event_bus().await;

    let options = PublishOptions { event_id: Some("evt_amqp_1".into()), metadata: Some(json!({"source": "billing"})) };
    let event_id = bus
        .publish_with("invoice.created", json!({"invoice_id": "inv_1"}), "t1", options.clone())
        .await
        .expect("published");
    assert_eq!(event_id, "evt_amqp_1");

    let created = eventually(Duration::from_secs(15), || async {
        let deliveries = app.deliveries_of("t1", "evt_amqp_1").await;
        (deliveries.len() == 4 && deliveries.iter().all(|d| d.enqueued)).then_some(deliveries)
    })
    .await
    .expect("four deliveries, all queued");
    let mut matched: Vec<_> = created.iter().map(|d| d.subscription_id).collect();
    matched.sort();
    let mut expected = vec![exact, prefix, category, star];
    expected.sort();
    assert_eq!(matched, expected);
    assert!(app.deliveries_of("t2", "evt_amqp_1").await.is_empty(), "another tenant's subscription got it");

    let mut queued: Vec<_> = app
        .collect_dispatch_messages(4)
        .await
        .into_iter()
        .map(|DispatchMessage::Attempt { delivery_id, attempt, .. }| {
            assert_eq!(attempt, 1);
            delivery_id
        })
        .collect();
    queued.sort();
    let mut ids: Vec<_> = created.iter().map(|d| d.id).collect();
    ids.sort();
    assert_eq!(queued, ids, "each delivery queued exactly once");

    // The same event_id again, then another event: once the other one is in,
    // the repeat (consumed before it) has been handled, and created nothing.
    bus.publish_with("invoice.created", json!({"invoice_id": "inv_1"}), "t1", options).await.expect("repeat published");
    let next = bus.publish("invoice.paid", json!({"invoice_id": "inv_1"}), "t1").await.expect("published");
    let next_deliveries = eventually(Duration::from_secs(15), || async {
        let deliveries = app.deliveries_of("t1", &next).await;
        (deliveries.len() == 4).then_some(deliveries)
    })
    .await;
    assert!(next_deliveries.is_some(), "invoice.paid reaches invoice.*, billing.*, * and the invoice.paid one");
    assert_eq!(app.deliveries_of("t1", "evt_amqp_1").await.len(), 4, "the repeat created deliveries");
    assert_eq!(app.event_count("t1").await, 2);
    assert!(app.drain_queue(&app.ingest.state.topology.rejected_queue()).await.is_empty());
}

/// A raw message for the events exchange: routing key, body and a test header naming the case.
struct RawMessage {
    case: &'static str,
    routing_key: &'static str,
    body: Vec<u8>,
    expected_code: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_amqp_message_lands_in_the_rejected_queue_with_its_reason() {
    let app = spawn_app().await;
    // A subscription that would receive anything wrongly accepted.
    app.insert_subscription("t1", "http://127.0.0.1:9/hook", &["*"], true).await;
    let valid = |extra: serde_json::Value| {
        let mut body = json!({"event_type": "invoice.created", "event_data": {"a": 1}, "tenant_id": "t1"});
        for (k, v) in extra.as_object().expect("object") {
            body[k] = v.clone();
        }
        body
    };
    let json_bytes = |v: serde_json::Value| serde_json::to_vec(&v).expect("json");
    let without = |field: &str| {
        let mut body = valid(json!({}));
        body.as_object_mut().expect("object").remove(field);
        serde_json::to_vec(&body).expect("json")
    };
    let cases = vec![
        RawMessage {
            case: "not_json",
            routing_key: "invoice.created",
            body: b"{nope".to_vec(),
            expected_code: "invalid_json",
        },
        RawMessage {
            case: "missing_tenant",
            routing_key: "invoice.created",
            body: without("tenant_id"),
            expected_code: "missing_tenant",
        },
        RawMessage {
            case: "empty_tenant",
            routing_key: "invoice.created",
            body: json_bytes(valid(json!({"tenant_id": "  "}))),
            expected_code: "missing_tenant",
        },
        RawMessage {
            case: "unknown_type",
            routing_key: "invoice.nope",
            body: json_bytes(valid(json!({"event_type": "invoice.nope"}))),
            expected_code: "unknown_event_type",
        },
        RawMessage {
            case: "wrong_type_event_data",
            routing_key: "invoice.created",
            body: json_bytes(valid(json!({"event_data": [1, 2]}))),
            expected_code: "invalid_event_data",
        },
        RawMessage {
            case: "wrong_type_event_type",
            routing_key: "invoice.created",
            body: json_bytes(valid(json!({"event_type": 5}))),
            expected_code: "invalid_field",
        },
        RawMessage {
            case: "missing_event_data",
            routing_key: "invoice.created",
            body: without("event_data"),
            expected_code: "missing_field",
        },
        RawMessage {
            case: "bad_event_id",
            routing_key: "invoice.created",
            body: json_bytes(valid(json!({"event_id": "has space"}))),
            expected_code: "invalid_event_id",
        },
        RawMessage {
            case: "type_differs_from_routing_key",
            routing_key: "invoice.paid",
            body: json_bytes(valid(json!({}))),
            expected_code: "event_type_mismatch",
        },
        RawMessage {
            case: "too_large",
            routing_key: "invoice.created",
            body: json_bytes(valid(json!({"event_data": {"blob": "x".repeat(300 * 1024)}}))),
            expected_code: "payload_too_large",
        },
    ];

    let connection = shared::amqp::connect(&amqp_url()).await.expect("broker");
    let channel = connection.create_channel().await.expect("channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
    let exchange = app.ingest.state.topology.events_exchange();
    for message in &cases {
        let mut headers = FieldTable::default();
        headers.insert("x-test-case".into(), long_string(message.case));
        let properties = persistent_json().with_headers(headers);
        publish_confirmed(&channel, &exchange, message.routing_key, &message.body, properties)
            .await
            .expect("published");
    }

    let rejected_queue = app.ingest.state.topology.rejected_queue();
    let mut rejected = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while rejected.len() < cases.len() && tokio::time::Instant::now() < deadline {
        rejected.extend(app.drain_queue(&rejected_queue).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rejected.len(), cases.len());

    let by_case: HashMap<String, &lapin::message::Delivery> = rejected
        .iter()
        .map(|delivery| {
            let headers = delivery.properties.headers().as_ref().expect("headers kept").inner();
            let case = match headers.get("x-test-case") {
                Some(AMQPValue::LongString(case)) => case.to_string(),
                other => panic!("original header lost: {other:?}"),
            };
            (case, delivery)
        })
        .collect();
    for message in &cases {
        let delivery = by_case.get(message.case).unwrap_or_else(|| panic!("{} was not rejected", message.case));
        let headers = delivery.properties.headers().as_ref().expect("headers").inner();
        let reason = match headers.get("x-rejection-reason") {
            Some(AMQPValue::LongString(reason)) => reason.to_string(),
            other => panic!("{}: x-rejection-reason is not a long string: {other:?}", message.case),
        };
        assert!(
            reason.starts_with(&format!("{}: ", message.expected_code)),
            "{}: reason {reason:?} should start with {}",
            message.case,
            message.expected_code
        );
        assert_eq!(delivery.data, message.body, "{}: body changed", message.case);
        assert_eq!(delivery.properties.delivery_mode(), &Some(2), "{}: not persistent", message.case);
        assert_eq!(headers.get("x-original-routing-key"), Some(&long_string(message.routing_key)), "{}", message.case);
    }

    let metrics =
        app.client.get(format!("{}/metrics", app.base)).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains(r#"webhooks_ingest_events_rejected_total{reason="invalid_json"}"#), "{metrics}");
    assert_eq!(app.event_count("t1").await, 0, "a bad message created an event");
    assert!(app.deliveries_of_tenant("t1").await.is_empty(), "a bad message created deliveries");
    let _ = connection.close(200, "done".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_oversized_message_the_consumer_goes_one_at_a_time_and_still_stores_events() {
    let app = spawn_app().await;
    app.insert_subscription("t1", "http://127.0.0.1:9/hook", &["invoice.*"], true).await;
    let connection = shared::amqp::connect(&amqp_url()).await.expect("broker");
    let channel = connection.create_channel().await.expect("channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
    let exchange = app.ingest.state.topology.events_exchange();
    let big = json!({"event_type": "invoice.created", "tenant_id": "t1", "event_id": "evt_big",
                     "event_data": {"blob": "x".repeat(300 * 1024)}});
    let big = serde_json::to_vec(&big).expect("json");
    publish_confirmed(&channel, &exchange, "invoice.created", &big, persistent_json()).await.expect("published");
    // Then ordinary events, which arrive while the channel takes one message at a time.
    for n in 0..5 {
        let body = json!({"event_type": "invoice.created", "tenant_id": "t1", "event_id": format!("evt_small_{n}"),
                          "event_data": {"n": n}});
        let body = serde_json::to_vec(&body).expect("json");
        publish_confirmed(&channel, &exchange, "invoice.created", &body, persistent_json()).await.expect("published");
    }

    let rejected_queue = app.ingest.state.topology.rejected_queue();
    let mut rejected = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut stored = 0;
    while (stored < 5 || rejected.is_empty()) && tokio::time::Instant::now() < deadline {
        rejected.extend(app.drain_queue(&rejected_queue).await);
        stored = app.event_count("t1").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored, 5, "every ordinary event is stored");
    assert_eq!(rejected.len(), 1, "the oversized message is rejected");
    assert_eq!(rejected[0].data, big, "the oversized body is kept whole in the rejected queue");

    let metrics =
        app.client.get(format!("{}/metrics", app.base)).send().await.expect("metrics").text().await.expect("text");
    let throttles = metrics
        .lines()
        .find(|line| line.starts_with("webhooks_ingest_amqp_oversized_throttles_total"))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse::<f64>().ok());
    assert!(throttles.is_some_and(|n| n >= 1.0), "the channel was not throttled: {throttles:?}");
    let _ = connection.close(200, "done".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_type_may_come_from_the_routing_key_alone() {
    let app = spawn_app().await;
    let subscription = app.insert_subscription("t1", "http://127.0.0.1:9/hook", &["customer.*"], true).await;
    let connection = shared::amqp::connect(&amqp_url()).await.expect("broker");
    let channel = connection.create_channel().await.expect("channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
    let body = json!({"event_data": {"customer_id": "c1"}, "tenant_id": "t1", "event_id": "evt_by_key"});
    publish_confirmed(
        &channel,
        &app.ingest.state.topology.events_exchange(),
        "customer.created",
        &serde_json::to_vec(&body).expect("json"),
        persistent_json(),
    )
    .await
    .expect("published");
    let deliveries = eventually(Duration::from_secs(15), || async {
        let deliveries = app.deliveries_of("t1", "evt_by_key").await;
        (!deliveries.is_empty()).then_some(deliveries)
    })
    .await
    .expect("delivery created");
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].subscription_id, subscription);
    assert_eq!(deliveries[0].event_type, "customer.created");
    let _ = connection.close(200, "done".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_on_the_amqp_path_holds_the_event_instead_of_dropping_it() {
    let app = spawn_app().await;
    app.insert_subscription("t1", "http://127.0.0.1:9/hook", &["*"], true).await;
    let bus = app.event_bus().await;
    let database = app.db.name.clone();

    // The database refuses connections and every open one is cut.
    admin_sql(format!("ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS false")).await;
    admin_sql(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    ))
    .await;
    let down = eventually(Duration::from_secs(10), || async {
        let (status, body) = app.request(Method::GET, "/readyz", None, None).await;
        (status == StatusCode::SERVICE_UNAVAILABLE && body["database"] == "unavailable").then_some(())
    })
    .await;
    assert!(down.is_some(), "the database outage did not take effect");

    let retries_before = app.metric(AMQP_OUTAGE_RETRIES).await;
    let options = PublishOptions { event_id: Some("evt_during_outage".into()), metadata: None };
    bus.publish_with("invoice.created", json!({"invoice_id": "inv_9"}), "t1", options).await.expect("published");
    // Ingest holds the message (unacked) and tries again with growing pauses.
    // (It used to count requeues here, which only other tests' poison messages
    // made grow: the outage path holds, it does not requeue.)
    let retried = eventually(Duration::from_secs(20), || async {
        (app.metric(AMQP_OUTAGE_RETRIES).await - retries_before >= 2.0).then_some(())
    })
    .await;
    assert!(retried.is_some(), "the event was not retried during the outage");
    assert!(
        app.drain_queue(&app.ingest.state.topology.rejected_queue()).await.is_empty(),
        "a database outage must not reject the event"
    );

    admin_sql(format!("ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS true")).await;
    let stored = eventually(Duration::from_secs(30), || async {
        let deliveries = app.deliveries_of("t1", "evt_during_outage").await;
        (deliveries.len() == 1).then_some(deliveries)
    })
    .await;
    assert!(stored.is_some(), "the event was dropped during the outage");
    let queued = app.collect_dispatch_messages(1).await;
    assert_eq!(queued.len(), 1, "{queued:?}");
}

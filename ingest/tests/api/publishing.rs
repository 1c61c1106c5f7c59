use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use shared::{amqp::DispatchMessage, testing::eventually};

use crate::helpers::{assert_error, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_creates_one_delivery_per_matching_subscription_and_queues_it() {
    let app = spawn_app().await;
    let url = "http://127.0.0.1:9/hook";
    let exact = app.insert_subscription("t1", url, &["invoice.created"], true).await;
    let prefix = app.insert_subscription("t1", url, &["invoice.*"], true).await;
    let category = app.insert_subscription("t1", url, &["billing.*"], true).await;
    let star = app.insert_subscription("t1", url, &["*"], true).await;
    let _other_type = app.insert_subscription("t1", url, &["invoice.paid", "email.*"], true).await;
    let _inactive = app.insert_subscription("t1", url, &["invoice.created"], false).await;
    let _other_tenant = app.insert_subscription("t2", url, &["*"], true).await;
    let publisher = app.publisher_key().await;

    let body = json!({"event_type": "invoice.created", "event_data": {"invoice_id": "inv_1"}, "tenant_id": "t1", "event_id": "evt_fixed_1"});
    let (status, answer) = app.post("/api/v1/events", &publisher, &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer, json!({"event_id": "evt_fixed_1", "deliveries": 4}));

    let mut matched: Vec<_> = app.deliveries_of("t1", "evt_fixed_1").await.iter().map(|d| d.subscription_id).collect();
    matched.sort();
    let mut expected = vec![exact, prefix, category, star];
    expected.sort();
    assert_eq!(matched, expected);

    // Every delivery reaches the dispatch queue and is marked enqueued.
    let all_enqueued = eventually(Duration::from_secs(10), || async {
        app.deliveries_of("t1", "evt_fixed_1").await.iter().all(|d| d.enqueued).then_some(())
    })
    .await;
    assert!(all_enqueued.is_some(), "deliveries were not marked enqueued");
    let messages = app.drain_dispatch_queue().await;
    let mut queued: Vec<_> = messages
        .iter()
        .map(|DispatchMessage::Attempt { delivery_id, attempt, .. }| {
            assert_eq!(*attempt, 1);
            *delivery_id
        })
        .collect();
    queued.sort();
    let mut ids: Vec<_> = app.deliveries_of("t1", "evt_fixed_1").await.iter().map(|d| d.id).collect();
    ids.sort();
    assert_eq!(queued, ids);

    // The same event_id again: the first result, nothing new.
    let (status, answer) = app.post("/api/v1/events", &publisher, &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer, json!({"event_id": "evt_fixed_1", "deliveries": 4}));
    assert_eq!(app.deliveries_of("t1", "evt_fixed_1").await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_event_id_with_another_body_is_a_conflict_and_a_true_repeat_is_not() {
    let app = spawn_app().await;
    app.insert_subscription("t1", "http://127.0.0.1:9/hook", &["*"], true).await;
    let publisher = app.publisher_key().await;
    let first = json!({"event_type": "invoice.created", "tenant_id": "t1", "event_id": "evt_reused",
        "event_data": {"invoice_id": "inv_1", "amount": 100}, "metadata": {"source": "billing"}});
    let (status, answer) = app.post("/api/v1/events", &publisher, &first).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");

    // Same content, keys in another order: a true repeat.
    let reordered = json!({"metadata": {"source": "billing"}, "event_id": "evt_reused", "tenant_id": "t1",
        "event_data": {"amount": 100, "invoice_id": "inv_1"}, "event_type": "invoice.created"});
    let (status, answer) = app.post("/api/v1/events", &publisher, &reordered).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({"event_id": "evt_reused", "deliveries": 1})));

    let changed = [
        json!({"event_type": "invoice.created", "tenant_id": "t1", "event_id": "evt_reused",
            "event_data": {"invoice_id": "inv_1", "amount": 200}, "metadata": {"source": "billing"}}),
        json!({"event_type": "invoice.paid", "tenant_id": "t1", "event_id": "evt_reused",
            "event_data": {"invoice_id": "inv_1", "amount": 100}, "metadata": {"source": "billing"}}),
        json!({"event_type": "invoice.created", "tenant_id": "t1", "event_id": "evt_reused",
            "event_data": {"invoice_id": "inv_1", "amount": 100}}),
    ];
    for body in &changed {
        let (status, answer) = app.post("/api/v1/events", &publisher, body).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}: {answer}");
        assert_eq!(assert_error(&answer, "conflict")["field"], "event_id");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("evt_reused"), "the message names the event_id: {message}");
    }
    assert_eq!(app.deliveries_of("t1", "evt_reused").await.len(), 1, "a conflict creates nothing");
    // The same event_id under another tenant is another event.
    let other_tenant =
        json!({"event_type": "invoice.paid", "tenant_id": "t2", "event_id": "evt_reused", "event_data": {}});
    let (status, answer) = app.post("/api/v1/events", &publisher, &other_tenant).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_rejects_bad_input_with_the_right_status() {
    let app = spawn_app().await;
    let publisher = app.publisher_key().await;
    let tenant = app.tenant_key("t1").await;
    let ok = json!({"event_type": "invoice.created", "event_data": {}, "tenant_id": "t1"});

    let (status, body) = app.post("/api/v1/events", &tenant, &ok).await;
    assert_eq!(status, StatusCode::ACCEPTED, "a tenant key publishes for its own tenant: {body}");
    assert!(body["event_id"].as_str().expect("event id").starts_with("evt_"));
    let (status, body) = app
        .post("/api/v1/events", &tenant, &json!({"event_type": "invoice.created", "event_data": {}, "tenant_id": "t2"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_error(&body, "forbidden");

    let (status, _) = app.request(reqwest::Method::POST, "/api/v1/events", None, Some(&ok)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let cases = [
        (json!({"event_type": "invoice.nope", "event_data": {}, "tenant_id": "t1"}), "event_type"),
        (json!({"event_data": {}, "tenant_id": "t1"}), "event_type"),
        (json!({"event_type": "invoice.created", "tenant_id": "t1"}), "event_data"),
        (json!({"event_type": "invoice.created", "event_data": [], "tenant_id": "t1"}), "event_data"),
        (json!({"event_type": "invoice.created", "event_data": {}}), "tenant_id"),
        (json!({"event_type": "invoice.created", "event_data": {}, "tenant_id": ""}), "tenant_id"),
        (
            json!({"event_type": "invoice.created", "event_data": {}, "tenant_id": "t1", "event_id": "has space"}),
            "event_id",
        ),
        (
            json!({"event_type": "invoice.created", "event_data": {}, "tenant_id": "t1", "event_id": "x".repeat(129)}),
            "event_id",
        ),
        (json!({"event_type": "invoice.created", "event_data": {}, "tenant_id": "t1", "metadata": 3}), "metadata"),
        (json!({"event_type": 5, "event_data": {}, "tenant_id": "t1"}), "event_type"),
    ];
    for (body, field) in cases {
        let (status, answer) = app.post("/api/v1/events", &publisher, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body} -> {answer}");
        assert_eq!(assert_error(&answer, "validation_failed")["field"], field, "{body}");
    }

    let (status, answer) =
        app.request_raw(reqwest::Method::POST, "/api/v1/events", Some(&publisher), b"{nope".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&answer, "invalid_json");

    let big =
        json!({"event_type": "invoice.created", "event_data": {"blob": "x".repeat(300 * 1024)}, "tenant_id": "t1"});
    let (status, answer) = app.post("/api/v1/events", &publisher, &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error(&answer, "payload_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_for_a_thousand_subscriptions_queues_each_of_its_deliveries_exactly_once() {
    let app = spawn_app().await;
    let subscriptions = app.insert_subscriptions("t1", 1_000, &["invoice.*"]).await;
    let publisher = app.publisher_key().await;

    let body = json!({"event_type": "invoice.created", "event_data": {"invoice_id": "inv_1"}, "tenant_id": "t1", "event_id": "evt_wide"});
    let started = std::time::Instant::now();
    let (status, answer) = app.post("/api/v1/events", &publisher, &body).await;
    let answered_in = started.elapsed();
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["deliveries"], 1_000);

    let all_enqueued = eventually(Duration::from_secs(30), || async {
        app.deliveries_of("t1", "evt_wide").await.iter().all(|d| d.enqueued).then_some(())
    })
    .await;
    let queued_in = started.elapsed();
    assert!(all_enqueued.is_some(), "not every delivery was marked enqueued");
    // An observation for the record, not an assertion.
    eprintln!(
        "observed: fan-out to 1000 subscriptions answered 202 after {answered_in:?}, all queued after {queued_in:?}"
    );

    let deliveries = app.deliveries_of("t1", "evt_wide").await;
    assert_eq!(deliveries.len(), 1_000);
    let mut matched: Vec<_> = deliveries.iter().map(|d| d.subscription_id).collect();
    matched.sort();
    let mut expected = subscriptions.clone();
    expected.sort();
    assert_eq!(matched, expected, "one delivery per subscription");

    let messages = app.collect_dispatch_messages(1_000).await;
    let mut queued: Vec<_> = messages
        .iter()
        .map(|DispatchMessage::Attempt { delivery_id, attempt, .. }| {
            assert_eq!(*attempt, 1);
            *delivery_id
        })
        .collect();
    queued.sort();
    let mut ids: Vec<_> = deliveries.iter().map(|d| d.id).collect();
    ids.sort();
    assert_eq!(queued.len(), 1_000, "each delivery queued exactly once");
    assert_eq!(queued, ids);
}

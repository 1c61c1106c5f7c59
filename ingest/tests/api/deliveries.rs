//! The delivery log routes, the manual retry and the test event, without a
//! dispatcher: rows are made by publishing, then shaped with SQL where a test
//! needs attempts or a final status. (The dispatcher's tests cover the same
//! routes end to end.)

use std::time::Duration;

use diesel_async::RunQueryDsl;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use shared::{amqp::DispatchMessage, db, testing::eventually};

use crate::helpers::{assert_error, spawn_app, TestApp};

const URL: &str = "http://127.0.0.1:9/hook";

async fn sql(app: &TestApp, statement: &str) {
    let mut conn = db::conn(&app.ingest.state.pool).await.expect("conn");
    diesel::sql_query(statement).execute(&mut conn).await.expect(statement);
}

async fn publish(app: &TestApp, publisher: &str, tenant: &str, event_type: &str, event_id: &str) {
    let body =
        json!({"event_type": event_type, "event_data": {"n": event_id}, "tenant_id": tenant, "event_id": event_id});
    let (status, answer) = app.post("/api/v1/events", publisher, &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
}

fn log_path(subscription: uuid::Uuid, query: &str) -> String {
    format!("/api/v1/webhooks/subscriptions/{subscription}/deliveries{query}")
}

fn event_ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["event_id"].as_str().expect("event_id").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_log_lists_newest_first_with_filters_and_cursor_pages() {
    let app = spawn_app().await;
    let sub = app.insert_subscription("t1", URL, &["invoice.*"], true).await;
    let publisher = app.publisher_key().await;
    let token = app.tenant_key("t1").await;
    for (i, event_type) in
        ["invoice.created", "invoice.paid", "invoice.created", "invoice.paid", "invoice.created"].iter().enumerate()
    {
        publish(&app, &publisher, "t1", event_type, &format!("evt_{i}")).await;
    }
    sql(&app, "UPDATE deliveries SET status = 'failed', attempt_count = 4, last_status_code = 500, last_error = 'endpoint answered HTTP 500' WHERE event_id IN ('evt_1', 'evt_4')").await;

    let (status, all) = app.get(&log_path(sub, ""), &token).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert_eq!(event_ids(&all), ["evt_4", "evt_3", "evt_2", "evt_1", "evt_0"]);
    assert_eq!(all["next_cursor"], Value::Null);
    let first = &all["items"][0];
    for field in [
        "id",
        "subscription_id",
        "event_id",
        "event_type",
        "status",
        "attempt_count",
        "next_attempt_at",
        "last_status_code",
        "last_error",
        "created_at",
        "updated_at",
    ] {
        assert!(first.get(field).is_some(), "{field} missing from {first}");
    }
    assert_eq!(first["subscription_id"], sub.to_string());
    assert_eq!(
        (first["status"].as_str(), first["attempt_count"].as_i64(), first["last_status_code"].as_i64()),
        (Some("failed"), Some(4), Some(500))
    );

    // Pages of two, following next_cursor, give the same order without repeats.
    let mut seen = Vec::new();
    let mut query = "?limit=2".to_owned();
    loop {
        let (status, page) = app.get(&log_path(sub, &query), &token).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(event_ids(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, event_ids(&all));

    let (_, failed) = app.get(&log_path(sub, "?status=failed"), &token).await;
    assert_eq!(event_ids(&failed), ["evt_4", "evt_1"]);
    let (_, created) = app.get(&log_path(sub, "?event_type=invoice.created&status=pending"), &token).await;
    assert_eq!(event_ids(&created), ["evt_2", "evt_0"]);

    for (query, field) in
        [("?status=done", "status"), ("?limit=0", "limit"), ("?limit=101", "limit"), ("?cursor=nope", "cursor")]
    {
        let (status, body) = app.get(&log_path(sub, query), &token).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
        assert_eq!(assert_error(&body, "validation_failed")["field"], field);
    }
    let (status, _) = app.get(&log_path(sub, "?limit=many"), &token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Another tenant, an unknown id and a malformed id are all simply not found.
    let other = app.tenant_key("t2").await;
    for (path, token) in [
        (log_path(sub, ""), other.as_str()),
        (log_path(uuid::Uuid::now_v7(), ""), token.as_str()),
        ("/api/v1/webhooks/subscriptions/not-an-id/deliveries".to_owned(), token.as_str()),
    ] {
        let (status, body) = app.get(&path, token).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_error(&body, "not_found");
    }
    let (status, _) = app.request(Method::GET, &log_path(sub, ""), None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A deleted subscription's log is gone with it; its deliveries stay readable one by one.
    let delivery_id = first["id"].as_str().expect("id").to_owned();
    let (status, _) =
        app.request(Method::DELETE, &format!("/api/v1/webhooks/subscriptions/{sub}"), Some(&token), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.get(&log_path(sub, ""), &token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get(&format!("/api/v1/webhooks/deliveries/{delivery_id}"), &token).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) =
        app.post(&format!("/api/v1/webhooks/deliveries/{delivery_id}/retry"), &token, &json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_shows_its_attempts_in_order_and_only_to_its_tenant() {
    let app = spawn_app().await;
    app.insert_subscription("t1", URL, &["invoice.created"], true).await;
    let publisher = app.publisher_key().await;
    publish(&app, &publisher, "t1", "invoice.created", "evt_a").await;
    let id = app.deliveries_of("t1", "evt_a").await[0].id;
    sql(&app, &format!(
        "INSERT INTO delivery_attempts (id, delivery_id, attempt, outcome, status_code, error, duration_ms, response_body) VALUES \
         (gen_random_uuid(), '{id}', 2, 'success', 200, NULL, 12, 'ok'), \
         (gen_random_uuid(), '{id}', 1, 'http_status', 503, 'endpoint answered HTTP 503', 40, 'busy')"
    )).await;
    sql(
        &app,
        &format!(
            "UPDATE deliveries SET status = 'succeeded', attempt_count = 2, last_status_code = 200 WHERE id = '{id}'"
        ),
    )
    .await;
    let token = app.tenant_key("t1").await;

    let (status, delivery) = app.get(&format!("/api/v1/webhooks/deliveries/{id}"), &token).await;
    assert_eq!(status, StatusCode::OK, "{delivery}");
    assert_eq!(
        (delivery["id"].as_str(), delivery["status"].as_str()),
        (Some(id.to_string().as_str()), Some("succeeded"))
    );
    assert_eq!(delivery["event_type"], "invoice.created");
    let attempts = delivery["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2);
    assert_eq!(
        (
            &attempts[0]["attempt"],
            &attempts[0]["status_code"],
            &attempts[0]["error"],
            &attempts[0]["response_body"],
            &attempts[0]["outcome"]
        ),
        (&json!(1), &json!(503), &json!("endpoint answered HTTP 503"), &json!("busy"), &json!("http_status"))
    );
    assert_eq!((&attempts[1]["attempt"], &attempts[1]["duration_ms"]), (&json!(2), &json!(12)));
    assert!(attempts[1]["created_at"].is_string());

    let other = app.tenant_key("t2").await;
    for (path, token) in [
        (format!("/api/v1/webhooks/deliveries/{id}"), other.as_str()),
        (format!("/api/v1/webhooks/deliveries/{}", uuid::Uuid::now_v7()), token.as_str()),
        ("/api/v1/webhooks/deliveries/123".to_owned(), token.as_str()),
    ] {
        let (status, body) = app.get(&path, token).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_error(&body, "not_found");
    }
    let (status, _) = app.post(&format!("/api/v1/webhooks/deliveries/{id}/retry"), &other, &json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = app.get(&format!("/api/v1/webhooks/deliveries/{id}"), &publisher).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "publisher keys manage nothing: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_retry_queues_the_next_attempt_whatever_the_status() {
    let app = spawn_app().await;
    let sub = app.insert_subscription("t1", URL, &["invoice.created"], true).await;
    let publisher = app.publisher_key().await;
    publish(&app, &publisher, "t1", "invoice.created", "evt_r").await;
    let id = app.deliveries_of("t1", "evt_r").await[0].id;
    eventually(Duration::from_secs(10), || async { app.deliveries_of("t1", "evt_r").await[0].enqueued.then_some(()) })
        .await
        .expect("first attempt queued");
    app.drain_dispatch_queue().await;
    sql(
        &app,
        &format!(
            "UPDATE deliveries SET status = 'failed', attempt_count = 4, last_status_code = 500 WHERE id = '{id}'"
        ),
    )
    .await;
    let token = app.tenant_key("t1").await;

    let (status, body) = app.post(&format!("/api/v1/webhooks/deliveries/{id}/retry"), &token, &json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!((body["status"].as_str(), body["attempt_count"].as_i64()), (Some("pending"), Some(4)));
    let row = eventually(Duration::from_secs(10), || async {
        let row = app.deliveries_of("t1", "evt_r").await.remove(0);
        row.enqueued.then_some(row)
    })
    .await
    .expect("the retry is queued and marked enqueued");
    assert!(row.manual_retry);
    assert_eq!(
        app.drain_dispatch_queue().await,
        vec![DispatchMessage::Attempt { delivery_id: id, attempt: 5, subscription_id: Some(sub) }]
    );

    // A succeeded delivery can be sent again too.
    sql(&app, &format!("UPDATE deliveries SET status = 'succeeded', attempt_count = 5 WHERE id = '{id}'")).await;
    let (status, _) = app.post(&format!("/api/v1/webhooks/deliveries/{id}/retry"), &token, &json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let queued = eventually(Duration::from_secs(10), || async {
        let messages = app.drain_dispatch_queue().await;
        (!messages.is_empty()).then_some(messages)
    })
    .await
    .expect("queued");
    assert_eq!(queued, vec![DispatchMessage::Attempt { delivery_id: id, attempt: 6, subscription_id: Some(sub) }]);

    // Nothing would be sent to a paused subscription: 409.
    sql(&app, &format!("UPDATE subscriptions SET is_active = false WHERE id = '{sub}'")).await;
    let (status, body) = app.post(&format!("/api/v1/webhooks/deliveries/{id}/retry"), &token, &json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_error(&body, "conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_endpoint_queues_one_webhook_test_delivery_to_that_subscription() {
    let app = spawn_app().await;
    let sub = app.insert_subscription("t1", URL, &["invoice.created"], true).await;
    let _other_sub = app.insert_subscription("t1", URL, &["*"], true).await;
    let token = app.tenant_key("t1").await;

    let (status, body) = app.post(&format!("/api/v1/webhooks/subscriptions/{sub}/test"), &token, &json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let event_id = body["event_id"].as_str().expect("event_id").to_owned();
    let deliveries = app.deliveries_of("t1", &event_id).await;
    assert_eq!(deliveries.len(), 1, "only the tested subscription, even though another matches *");
    assert_eq!((deliveries[0].subscription_id, deliveries[0].event_type.as_str()), (sub, "webhook.test"));
    assert_eq!(body["delivery_id"], deliveries[0].id.to_string());
    let queued = eventually(Duration::from_secs(10), || async {
        let messages = app.drain_dispatch_queue().await;
        (!messages.is_empty()).then_some(messages)
    })
    .await
    .expect("queued");
    assert_eq!(
        queued,
        vec![DispatchMessage::Attempt { delivery_id: deliveries[0].id, attempt: 1, subscription_id: Some(sub) }]
    );

    let other = app.tenant_key("t2").await;
    let (status, _) = app.post(&format!("/api/v1/webhooks/subscriptions/{sub}/test"), &other, &json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.post("/api/v1/webhooks/subscriptions/nope/test", &token, &json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    sql(&app, &format!("UPDATE subscriptions SET is_active = false WHERE id = '{sub}'")).await;
    let (status, body) = app.post(&format!("/api/v1/webhooks/subscriptions/{sub}/test"), &token, &json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_to_a_subscription_whose_circuit_is_open_is_created_parked_and_nothing_is_queued() {
    let app = spawn_app().await;
    let open = app.insert_subscription("t1", URL, &["invoice.created"], true).await;
    let closed = app.insert_subscription("t1", URL, &["invoice.created"], true).await;
    sql(
        &app,
        &format!(
            "INSERT INTO endpoint_health (subscription_id, circuit, consecutive_failures, open_until, open_count) \
             VALUES ('{open}', 'open', 5, now() + interval '1 hour', 1)"
        ),
    )
    .await;
    let publisher = app.publisher_key().await;
    publish(&app, &publisher, "t1", "invoice.created", "evt_parked").await;

    let rows = app.deliveries_of("t1", "evt_parked").await;
    assert_eq!(rows.len(), 2, "both subscriptions got their delivery");
    let parked = rows.iter().find(|d| d.subscription_id == open).expect("the open circuit's delivery");
    let queued = rows.iter().find(|d| d.subscription_id == closed).expect("the closed circuit's delivery");
    // Waiting until the open period ends, with its attempt number and status untouched.
    let until = parked.next_attempt_at.expect("parked with a due time");
    assert!(until > chrono::Utc::now() + chrono::Duration::minutes(59), "{until}");
    assert_eq!((parked.status.as_str(), parked.attempt_count, parked.enqueued), ("pending", 0, false));
    assert_eq!(queued.next_attempt_at, None);
    // Only the other subscription's attempt goes through the broker.
    let messages = eventually(Duration::from_secs(10), || async {
        let messages = app.drain_dispatch_queue().await;
        (!messages.is_empty()).then_some(messages)
    })
    .await
    .expect("the closed circuit's attempt is queued");
    assert_eq!(
        messages,
        vec![DispatchMessage::Attempt { delivery_id: queued.id, attempt: 1, subscription_id: Some(closed) }]
    );

    // Closed again: the next publish is queued for both.
    sql(
        &app,
        &format!("UPDATE endpoint_health SET circuit = 'closed', open_until = NULL WHERE subscription_id = '{open}'"),
    )
    .await;
    publish(&app, &publisher, "t1", "invoice.created", "evt_after").await;
    let rows = app.deliveries_of("t1", "evt_after").await;
    assert!(rows.iter().all(|d| d.next_attempt_at.is_none()), "{rows:?}");
    let mut queued = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while queued.len() < 2 && std::time::Instant::now() < deadline {
        queued.extend(app.drain_dispatch_queue().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(queued.len(), 2, "both attempts queued: {queued:?}");
}

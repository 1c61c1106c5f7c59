//! The tenant-wide delivery log (`GET /webhooks/deliveries`): every filter,
//! paging through well over a page, and tenant scoping.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app, TestApp};

const URL: &str = "http://127.0.0.1:9/hook";

async fn publish(app: &TestApp, publisher: &str, tenant: &str, event_type: &str, n: usize) {
    let body = json!({"event_type": event_type, "event_data": {"n": n}, "tenant_id": tenant});
    let (status, answer) = app.post("/api/v1/events", publisher, &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
}

/// Every item of every page of `query`, following `next_cursor`; also the page count.
async fn all_pages(app: &TestApp, token: &str, query: &str) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/webhooks/deliveries?{query}");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let (status, page) = app.get(&path, token).await;
        assert_eq!(status, StatusCode::OK, "{path}: {page}");
        pages += 1;
        items.extend(page["items"].as_array().expect("items").iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return (items, pages),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_wide_log_pages_newest_first_and_filters_by_every_field() {
    let app = spawn_app().await;
    let publisher = app.publisher_key().await;
    let token = app.tenant_key("t1").await;
    let everything = app.insert_subscription("t1", URL, &["*"], true).await;
    let invoices = app.insert_subscription("t1", URL, &["invoice.*"], true).await;
    app.insert_subscription("t2", URL, &["*"], true).await;
    for n in 0..65 {
        publish(&app, &publisher, "t1", "invoice.created", n).await;
    }
    for n in 0..60 {
        publish(&app, &publisher, "t1", "customer.created", n).await;
    }
    for n in 0..3 {
        publish(&app, &publisher, "t2", "invoice.created", n).await;
    }

    let (items, pages) = all_pages(&app, &token, "limit=50").await;
    assert_eq!((items.len(), pages), (190, 4));
    let ids: HashSet<&str> = items.iter().map(|d| d["id"].as_str().expect("id")).collect();
    assert_eq!(ids.len(), 190, "a delivery was listed twice");
    // Compared as times, not strings: RFC 3339 drops trailing zeros, so
    // ".753Z" sorts after ".753945Z" as text though it is earlier.
    let keys: Vec<(chrono::DateTime<chrono::FixedOffset>, String)> = items
        .iter()
        .map(|d| {
            let created_at = chrono::DateTime::parse_from_rfc3339(d["created_at"].as_str().expect("t")).expect("time");
            (created_at, d["id"].as_str().expect("id").to_owned())
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(keys, sorted, "newest first");

    let (items, _) = all_pages(&app, &token, &format!("subscription_id={invoices}")).await;
    assert_eq!(items.len(), 65);
    assert!(items.iter().all(|d| d["subscription_id"] == invoices.to_string()));
    let (items, _) = all_pages(&app, &token, "event_type=customer.created&limit=100").await;
    assert_eq!(items.len(), 60);
    assert!(items
        .iter()
        .all(|d| d["event_type"] == "customer.created" && d["subscription_id"] == everything.to_string()));

    app.sql(&format!(
        "UPDATE deliveries SET status = 'failed' WHERE id IN \
         (SELECT id FROM deliveries WHERE subscription_id = '{invoices}' ORDER BY id LIMIT 7)"
    ))
    .await;
    let (items, _) = all_pages(&app, &token, "status=failed").await;
    assert_eq!(items.len(), 7);
    let (items, _) = all_pages(&app, &token, &format!("status=failed&subscription_id={everything}")).await;
    assert!(items.is_empty());

    app.sql(&format!(
        "UPDATE deliveries SET created_at = '2020-06-01T00:00:00Z' WHERE id IN \
         (SELECT id FROM deliveries WHERE subscription_id = '{everything}' ORDER BY id LIMIT 10)"
    ))
    .await;
    let (items, _) = all_pages(&app, &token, "since=2021-01-01T00:00:00Z&limit=100").await;
    assert_eq!(items.len(), 180);
    let (items, _) = all_pages(&app, &token, "until=2021-01-01T00:00:00Z").await;
    assert_eq!(items.len(), 10);
    let (items, _) = all_pages(&app, &token, "since=2020-01-01T00:00:00Z&until=2020-07-01T00:00:00%2B02:00").await;
    assert_eq!(items.len(), 10);

    let other = app.tenant_key("t2").await;
    let (items, _) = all_pages(&app, &other, "").await;
    assert_eq!(items.len(), 3, "another tenant's deliveries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_wide_log_refuses_bad_filters_and_publisher_keys() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    for (query, field) in [
        ("status=nope", "status"),
        ("since=yesterday", "since"),
        ("until=2026-13-01T00:00:00Z", "until"),
        ("subscription_id=not-an-id", "subscription_id"),
        ("cursor=bogus", "cursor"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
    ] {
        let (status, body) = app.get(&format!("/api/v1/webhooks/deliveries?{query}"), &token).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
        assert_eq!(assert_error(&body, "validation_failed")["field"], field, "{query}");
    }
    let (status, _) = app.get("/api/v1/webhooks/deliveries?limit=ten", &token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let publisher = app.publisher_key().await;
    let (status, body) = app.get("/api/v1/webhooks/deliveries", &publisher).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, page) = app.get("/api/v1/webhooks/deliveries", &token).await;
    assert_eq!((status, page), (StatusCode::OK, json!({"items": [], "next_cursor": null})));
}

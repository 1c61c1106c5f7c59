use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::{assert_rejected, create, id_of, item_path, minimal_body, COLLECTION};
use crate::helpers::{assert_error, spawn_app, spawn_app_with, TestApp};

/// `minimal_body()` with `field` set to `value`.
fn with(field: &str, value: Value) -> Value {
    let mut body = minimal_body();
    body[field] = value;
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_json_is_a_400() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    let created = create(&app, &token, &minimal_body()).await;
    for (method, path) in [(Method::POST, COLLECTION.to_owned()), (Method::PATCH, item_path(&id_of(&created)))] {
        let (status, body) = app.request_raw(method, &path, Some(&token), b"{\"url\": ".to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert_error(&body, "invalid_json");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_wrongly_typed_and_unknown_fields_are_422_naming_the_field() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    let cases = [
        (json!({"events": ["invoice.created"]}), "url"),
        (json!({"url": "https://example.com/hook"}), "events"),
        (with("url", json!(42)), "url"),
        (with("events", json!("invoice.created")), "events"),
        (with("events", json!(["invoice.created", 7])), "events[1]"),
        (with("max_retries", json!("3")), "max_retries"),
        (with("timeout_seconds", json!(1.5)), "timeout_seconds"),
        (with("is_active", json!("yes")), "is_active"),
        (with("headers", json!(["X-A"])), "headers"),
        (with("headers", json!({"X-Foo": 1})), "headers.X-Foo"),
        (with("secret", json!("whsec_mine")), "secret"),
        (with("colour", json!("blue")), "colour"),
        (json!(["not", "an", "object"]), "body"),
    ];
    for (body, field) in cases {
        assert_rejected(&app, Method::POST, COLLECTION, &token, &body, field).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_must_be_known_non_empty_and_at_most_100() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    let details = assert_rejected(
        &app,
        Method::POST,
        COLLECTION,
        &token,
        &with("events", json!(["invoice.created", "billing.*", "invoice.exploded"])),
        "events[2]",
    )
    .await;
    assert_eq!(details["value"], "invoice.exploded");
    for bad in ["nope.*", "invoice", "", "*.*", "INVOICE.CREATED"] {
        assert_rejected(&app, Method::POST, COLLECTION, &token, &with("events", json!([bad])), "events[0]").await;
    }
    assert_rejected(&app, Method::POST, COLLECTION, &token, &with("events", json!([])), "events").await;
    let too_many: Vec<&str> = ["invoice.created"; 101].to_vec();
    assert_rejected(&app, Method::POST, COLLECTION, &token, &with("events", json!(too_many)), "events").await;
    // 100 entries are fine; repeats collapse.
    let created = create(&app, &token, &with("events", json!(vec!["invoice.created"; 100]))).await;
    assert_eq!(created["events"], json!(["invoice.created"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_must_be_absolute_http_without_credentials() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    let too_long = format!("https://example.com/{}", "a".repeat(2048));
    for bad in
        ["not a url", "/relative/path", "ftp://example.com/", "https://user:pass@example.com/", "", too_long.as_str()]
    {
        assert_rejected(&app, Method::POST, COLLECTION, &token, &with("url", json!(bad)), "url").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_private_targets_are_refused_unless_the_deployment_allows_them() {
    let app = spawn_app_with(&[("ALLOW_HTTP_TARGETS", "false"), ("ALLOW_PRIVATE_TARGETS", "false")]).await;
    let token = app.tenant_key("t1").await;
    let created = create(&app, &token, &with("url", json!("https://example.com/hook"))).await;
    let path = item_path(&id_of(&created));
    for bad in [
        "http://example.com/hook",
        "https://127.0.0.1/hook",
        "https://localhost:8443/hook",
        "https://10.0.0.5/hook",
        "https://192.168.1.10/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://metadata.google.internal/",
        "https://intranet/hook",
    ] {
        assert_rejected(&app, Method::POST, COLLECTION, &token, &with("url", json!(bad)), "url").await;
        assert_rejected(&app, Method::PATCH, &path, &token, &json!({"url": bad}), "url").await;
    }

    // The test default allows both, which is what local development needs.
    let permissive = spawn_app().await;
    let token = permissive.tenant_key("t1").await;
    let created = create(&permissive, &token, &with("url", json!("http://127.0.0.1:9000/hook"))).await;
    assert_eq!(created["url"], "http://127.0.0.1:9000/hook");
}

/// Asserts that creating with `headers` is refused naming `field`.
async fn reject(app: &TestApp, token: &str, headers: Value, field: &str) {
    assert_rejected(app, Method::POST, COLLECTION, token, &with("headers", headers), field).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_headers_must_be_valid_few_and_not_ours() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    reject(&app, &token, json!({"Bad Name": "x"}), "headers.Bad Name").await;
    reject(&app, &token, json!({"X-Bad:Name": "x"}), "headers.X-Bad:Name").await;
    reject(&app, &token, json!({"": "x"}), "headers.").await;
    reject(&app, &token, json!({"X-Foo": "a\r\nX-Injected: 1"}), "headers.X-Foo").await;
    reject(&app, &token, json!({"X-Foo": "line\nbreak"}), "headers.X-Foo").await;
    reject(&app, &token, json!({"X-Foo": "x".repeat(2049)}), "headers.X-Foo").await;
    reject(&app, &token, json!({"X-Foo": "1", "x-foo": "2"}), "headers.x-foo").await;
    for reserved in [
        "Content-Type",
        "content-length",
        "Transfer-Encoding",
        "Connection",
        "Host",
        "User-Agent",
        "X-Webhook-Signature",
        "X-WEBHOOK-EVENT-ID",
        "x-webhook-attempt",
        "webhook-id",
        "Webhook-Timestamp",
        "WEBHOOK-SIGNATURE",
        "Upgrade",
    ] {
        reject(&app, &token, json!({ reserved: "x" }), &format!("headers.{reserved}")).await;
    }
    let many: serde_json::Map<String, Value> = (0..21).map(|i| (format!("X-H{i}"), json!("v"))).collect();
    reject(&app, &token, Value::Object(many), "headers").await;
    let twenty: serde_json::Map<String, Value> = (0..20).map(|i| (format!("X-H{i}"), json!("v"))).collect();
    create(&app, &token, &with("headers", Value::Object(twenty))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_and_description_must_be_in_range() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    for (field, value) in [
        ("max_retries", json!(-1)),
        ("max_retries", json!(11)),
        ("max_retries", json!(10_000_000_000_i64)),
        ("timeout_seconds", json!(0)),
        ("timeout_seconds", json!(61)),
        ("description", json!("d".repeat(501))),
    ] {
        assert_rejected(&app, Method::POST, COLLECTION, &token, &with(field, value), field).await;
    }
    let edges = json!({"url": "https://example.com/", "events": ["*"], "max_retries": 0, "timeout_seconds": 1, "description": "d".repeat(500)});
    create(&app, &token, &edges).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_validates_what_it_changes_and_changes_nothing_when_invalid() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    let created = create(&app, &token, &minimal_body()).await;
    let path = item_path(&id_of(&created));
    for (body, field) in [
        (json!({"url": "ftp://example.com/"}), "url"),
        (json!({"url": null}), "url"),
        (json!({"events": []}), "events"),
        (json!({"events": null}), "events"),
        (json!({"events": ["invoice.created", "invoice.nope"]}), "events[1]"),
        (json!({"headers": {"User-Agent": "mine"}}), "headers.User-Agent"),
        (json!({"headers": null}), "headers"),
        (json!({"is_active": null}), "is_active"),
        (json!({"retry_enabled": "no"}), "retry_enabled"),
        (json!({"max_retries": 11}), "max_retries"),
        (json!({"timeout_seconds": 0}), "timeout_seconds"),
        (json!({"description": "d".repeat(501)}), "description"),
        (json!({"secret": "whsec_x"}), "secret"),
        (json!({"max_retries": 5, "events": ["bogus"]}), "events[0]"),
    ] {
        assert_rejected(&app, Method::PATCH, &path, &token, &body, field).await;
    }
    let (_, read) = app.get(&path, &token).await;
    assert_eq!(read["max_retries"], 3, "a rejected patch changes nothing");
    assert_eq!(read["events"], json!(["invoice.created"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_parameters_are_checked() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    for limit in ["0", "101", "-5"] {
        let (status, body) = app.get(&format!("{COLLECTION}?limit={limit}"), &token).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "limit={limit}");
        assert_eq!(assert_error(&body, "validation_failed")["field"], "limit");
    }
    for query in ["limit=abc", "limit=", "limit=1.5"] {
        let (status, body) = app.get(&format!("{COLLECTION}?{query}"), &token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(assert_error(&body, "invalid_query")["field"], "limit", "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("`limit`"), "{query}: the message names the parameter: {message}");
    }
    for cursor in ["garbage!", "AAAA", "bm90LWEtdXVpZA"] {
        let (status, body) = app.get(&format!("{COLLECTION}?cursor={cursor}"), &token).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "cursor={cursor}");
        assert_eq!(assert_error(&body, "validation_failed")["field"], "cursor");
    }
    for limit in ["1", "100"] {
        let (status, _) = app.get(&format!("{COLLECTION}?limit={limit}"), &token).await;
        assert_eq!(status, StatusCode::OK, "limit={limit}");
    }
}

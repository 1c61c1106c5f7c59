//! The reproductions of the security test: inputs that answered 500 (or an
//! empty 400, or 200) and must answer a contract 4xx.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::{
    helpers::{assert_error, spawn_app, TestApp},
    subscriptions::{assert_rejected, create, id_of, item_path, minimal_body, COLLECTION},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_a_description_is_a_422_naming_it_on_create_and_patch() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    let body = json!({"url": "https://example.com/hook", "events": ["*"], "description": "x\u{0}y"});
    assert_rejected(&app, Method::POST, COLLECTION, &token, &body, "description").await;
    let id = id_of(&create(&app, &token, &minimal_body()).await);
    let patch = json!({"description": "x\u{0}y"});
    assert_rejected(&app, Method::PATCH, &item_path(&id), &token, &patch, "description").await;
    let bell = json!({"description": "ring\u{7}"});
    assert_rejected(&app, Method::PATCH, &item_path(&id), &token, &bell, "description").await;
    let (status, kept) = app.get(&item_path(&id), &token).await;
    assert_eq!((status, &kept["description"]), (StatusCode::OK, &Value::Null), "{kept}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_a_query_parameter_is_a_422_naming_it() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    let id = id_of(&create(&app, &token, &minimal_body()).await);
    for (query, field) in [("event_type=%00", "event_type"), ("status=pending%00", "status"), ("cursor=%0A", "cursor")]
    {
        let (status, body) = app.get(&format!("{}/deliveries?{query}", item_path(&id)), &token).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query} → {body}");
        assert_eq!(assert_error(&body, "validation_failed")["field"], field, "{query} → {body}");
    }
    let (status, body) = app.get(&format!("{COLLECTION}?cursor=a%00b"), &token).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(assert_error(&body, "validation_failed")["field"], "cursor");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_cursor_with_a_time_postgresql_cannot_hold_is_a_422() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    let id = id_of(&create(&app, &token, &minimal_body()).await);
    // The security test's cursor: 8 bytes of microseconds far past year 294276, then 16 of id.
    for cursor in ["kPpKYsTgAAD_dDyu_DJCBauQcbsjn0r1", "gAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        let (status, body) = app.get(&format!("{}/deliveries?cursor={cursor}", item_path(&id)), &token).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{cursor} → {body}");
        assert_eq!(assert_error(&body, "validation_failed")["field"], "cursor");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_query_string_is_a_400_on_every_route() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    let id = id_of(&create(&app, &token, &minimal_body()).await);
    let paths = [
        COLLECTION.to_owned(),
        item_path(&id),
        format!("{}/deliveries", item_path(&id)),
        "/api/v1/webhooks/events".into(),
    ];
    for path in &paths {
        for query in ["%", "x=%", "x=%zz", "limit=1&x=%4", "x=%FF"] {
            let (status, body) = app.get(&format!("{path}?{query}"), &token).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}?{query} → {body}");
            assert_error(&body, "invalid_query");
        }
    }
    let (status, _) = app.get(&format!("{COLLECTION}?limit=5&cursor="), &token).await;
    assert_ne!(status, StatusCode::BAD_REQUEST, "a well-formed query stays accepted");
}

/// Sends raw bytes and returns the status line and the body of the answer.
fn raw_exchange(app: &TestApp, request: &[u8]) -> (String, Value) {
    let mut stream = TcpStream::connect(app.ingest.addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(request).expect("send");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status_line = text.lines().next().unwrap_or_default().to_owned();
    let body = text.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or_default();
    (status_line, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_answer_in_the_contract_error_shape() {
    let app = spawn_app().await;
    let long_query = format!(
        "GET /api/v1/webhooks/subscriptions?q={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let smuggled = "POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\
                    Connection: close\r\n\r\n0\r\n\r\n";
    let garbage = "NOT HTTP AT ALL\r\n\r\n";
    for request in [long_query.as_bytes(), smuggled.as_bytes(), garbage.as_bytes()] {
        let (status_line, body) = tokio::task::block_in_place(|| raw_exchange(&app, request));
        assert!(status_line.starts_with("HTTP/1.1 4"), "{status_line}");
        assert!(body["error"]["code"].is_string() && body["error"]["message"].is_string(), "{status_line}: {body}");
    }
    // The service still answers normally afterwards.
    let (status, _) = app.request(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_event_types_are_reserved_for_the_service() {
    let app = spawn_app().await;
    let publisher = app.publisher_key().await;
    for event_type in ["webhook.test", "webhook.subscription.disabled", "webhook.anything"] {
        let body = json!({"event_type": event_type, "event_data": {}, "tenant_id": "t1"});
        let (status, response) = app.post("/api/v1/events", &publisher, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{event_type} → {response}");
        assert_eq!(assert_error(&response, "validation_failed")["field"], "event_type");
    }
    assert_eq!(app.event_count("t1").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_anywhere_in_a_published_event_is_a_422_naming_its_path() {
    let app = spawn_app().await;
    let publisher = app.publisher_key().await;
    let cases = [
        (
            json!({"event_type": "invoice.created", "event_data": {"note": "a\u{0}b"}, "tenant_id": "t1"}),
            "event_data.note",
        ),
        (
            json!({"event_type": "invoice.created", "event_data": {}, "metadata": {"k\u{0}": 1}, "tenant_id": "t1"}),
            "metadata.k\u{0}",
        ),
        (json!({"event_type": "invoice.created", "event_data": {}, "tenant_id": "t\u{0}1"}), "tenant_id"),
        (json!({"event_type": "invoice.created", "event_data": {}, "tenant_id": "t\n1"}), "tenant_id"),
    ];
    for (body, field) in cases {
        let (status, response) = app.post("/api/v1/events", &publisher, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body} → {response}");
        assert_eq!(assert_error(&response, "validation_failed")["field"], field, "{body} → {response}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_forms_of_private_ipv4_addresses_are_refused_at_create() {
    let app = crate::helpers::spawn_app_with(&[("ALLOW_PRIVATE_TARGETS", "false")]).await;
    let token = app.tenant_key("t1").await;
    for host in
        ["[2002:7f00:1::]", "[2001:0:7f00:1::1]", "[::ffff:0:7f00:1]", "[64:ff9b:1::a00:1]", "[64:ff9b::7f00:1]"]
    {
        let body = json!({"url": format!("https://{host}/hook"), "events": ["*"]});
        assert_rejected(&app, Method::POST, COLLECTION, &token, &body, "url").await;
    }
}

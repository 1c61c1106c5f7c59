//! Bounded memory on the HTTP publish path: a byte budget for bodies in flight
//! (503 + Retry-After over it) and a body read timeout (408).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{assert_error, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_256_kib_publishes_get_202_or_503_never_a_crash() {
    // Room for 8 bodies of 256 KiB at once.
    let app = spawn_app_with(&[("INGEST_MAX_INFLIGHT_BYTES", &(8 * 256 * 1024).to_string())]).await;
    app.insert_subscription("t1", "http://127.0.0.1:9/hook", &["*"], true).await;
    let token = app.publisher_key().await;
    // Just under 256 KiB with the envelope around it.
    let blob = "x".repeat(256 * 1024 - 200);
    let requests = (0..200).map(|n| {
        let body = json!({"event_type": "invoice.created", "event_data": {"blob": blob}, "tenant_id": "t1",
                          "event_id": format!("evt_big_{n}")})
        .to_string();
        assert!(body.len() <= 256 * 1024, "test body too large: {}", body.len());
        let request = app
            .client
            .post(format!("{}/api/v1/events", app.base))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body);
        async move {
            let response = request.send().await.expect("answered, not dropped");
            let status = response.status();
            let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap_or("").to_owned());
            let body: serde_json::Value = response.json().await.expect("json answer");
            (status, retry_after, body)
        }
    });
    let answers = futures_util::future::join_all(requests).await;

    let accepted = answers.iter().filter(|(status, ..)| *status == StatusCode::ACCEPTED).count();
    let refused: Vec<_> = answers.iter().filter(|(status, ..)| *status == StatusCode::SERVICE_UNAVAILABLE).collect();
    assert_eq!(accepted + refused.len(), 200, "only 202 or 503: {:?}", answers.iter().map(|a| a.0).collect::<Vec<_>>());
    assert!(accepted > 0, "nothing got through");
    assert!(!refused.is_empty(), "200 bodies of 256 KiB fitted in a 2 MiB budget");
    for (_, retry_after, body) in &refused {
        assert_eq!(retry_after.as_deref(), Some("1"), "503 without Retry-After");
        assert_error(body, "overloaded");
    }
    assert_eq!(app.event_count("t1").await, accepted as i64, "every 202 is stored, no 503 is");
    assert_eq!(app.ingest.state.budget.in_use(), 0, "bytes were not given back");
    let (status, _) = app.request(reqwest::Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    // A refused publisher retries and gets through.
    let body = json!({"event_type": "invoice.created", "event_data": {}, "tenant_id": "t1", "event_id": "evt_big_199"});
    let (status, _) = app.post("/api/v1/events", &token, &body).await;
    assert!(status == StatusCode::ACCEPTED || status == StatusCode::OK, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_in_time_gets_408_in_the_error_shape() {
    let app = spawn_app_with(&[("INGEST_BODY_TIMEOUT", "1s")]).await;
    let token = app.publisher_key().await;
    let mut stream = tokio::net::TcpStream::connect(app.ingest.addr).await.expect("connect");
    let head = format!(
        "POST /api/v1/events HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"event_type\": \"inv"
    );
    stream.write_all(head.as_bytes()).await.expect("send head");
    // ...and the rest never comes.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer to a stalled body");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    let body = text.split("\r\n\r\n").nth(1).expect("a body");
    let body: serde_json::Value = serde_json::from_str(body).expect("json body");
    assert_error(&body, "request_timeout");
    assert_eq!(app.ingest.state.budget.in_use(), 0, "the stalled body's bytes were not given back");
}

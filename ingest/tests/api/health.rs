use crate::helpers::{assert_error, spawn_app};
use reqwest::{Method, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_metrics_answer() {
    let app = spawn_app().await;
    let (status, body) = app.request(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    let (status, body) = app.request(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["database"], "ok");
    let text =
        app.client.get(format!("{}/metrics", app.base)).send().await.expect("metrics").text().await.expect("text");
    assert!(text.contains("webhooks_ingest_http_requests_total"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_lists_every_guide_event_to_a_tenant_key() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    let (status, body) = app.get("/api/v1/webhooks/events", &token).await;
    assert_eq!(status, StatusCode::OK);
    let items = body["items"].as_array().expect("items");
    assert_eq!(items.len(), 31, "30 guide events + webhook.test");
    let invoice = items.iter().find(|i| i["type"] == "invoice.created").expect("invoice.created");
    assert_eq!(invoice["category"], "billing");
    assert_eq!(invoice["description"], "Invoice created");
    let (status, body) = app.request(Method::GET, "/api/v1/webhooks/events", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_error(&body, "unauthorized");
    let (status, _) = app.get("/api/v1/webhooks/events", "whk_wrong").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_answer_404_in_the_error_shape() {
    let app = spawn_app().await;
    let (status, body) = app.request(Method::GET, "/api/v1/nope", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_method_answers_405_in_the_error_shape() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    let (status, body) = app.request(Method::PUT, "/api/v1/webhooks/subscriptions", Some(&token), None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_error(&body, "method_not_allowed");
}

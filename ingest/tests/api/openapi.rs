use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_the_subscription_routes_without_authentication() {
    let app = spawn_app().await;
    let res = app.client.get(format!("{}/api/v1/openapi.json", app.base)).send().await.expect("sent");
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(content_type.starts_with("application/json"), "{content_type}");
    let doc: Value = serde_json::from_str(&res.text().await.expect("body")).expect("valid JSON");

    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", doc["openapi"]);
    let paths = &doc["paths"];
    for (path, methods) in [
        ("/api/v1/webhooks/subscriptions", &["get", "post"][..]),
        ("/api/v1/webhooks/subscriptions/{id}", &["get", "patch", "delete"][..]),
        ("/api/v1/webhooks/subscriptions/{id}/rotate-secret", &["post"][..]),
        ("/api/v1/webhooks/events", &["get"][..]),
        ("/api/v1/events", &["post"][..]),
        ("/api/v1/webhooks/subscriptions/{id}/deliveries", &["get"][..]),
        ("/api/v1/webhooks/subscriptions/{id}/test", &["post"][..]),
        ("/api/v1/webhooks/deliveries/{id}", &["get"][..]),
        ("/api/v1/webhooks/deliveries/{id}/retry", &["post"][..]),
        ("/api/v1/webhooks/deliveries", &["get"][..]),
        ("/api/v1/webhooks/deliveries/retry", &["post"][..]),
        ("/api/v1/webhooks/subscriptions/{id}/recover", &["post"][..]),
        ("/api/v1/webhooks/jobs/{id}", &["get"][..]),
        ("/api/v1/events/{event_id}", &["get"][..]),
    ] {
        for method in methods {
            assert!(paths[path][method].is_object(), "{method} {path} missing from the document");
        }
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let create = &paths["/api/v1/webhooks/subscriptions"]["post"];
    assert!(create["responses"]["201"].is_object() && create["responses"]["422"].is_object());
    let schemas = &doc["components"]["schemas"];
    for schema in [
        "CreateSubscriptionRequest",
        "UpdateSubscriptionRequest",
        "SubscriptionView",
        "SubscriptionWithSecret",
        "SubscriptionPage",
        "ErrorBody",
        "DeliveryPage",
        "DeliveryWithAttempts",
        "JobView",
        "RecoverBody",
        "BulkRetryBody",
        "EventView",
    ] {
        assert!(schemas[schema].is_object(), "schema {schema} missing");
    }
    let (status, _) = app.request(Method::GET, "/api/v1/openapi.json", Some("whk_wrong"), None).await;
    assert_eq!(status, StatusCode::OK, "the document needs no key");
}

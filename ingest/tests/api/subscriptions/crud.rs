use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use shared::{
    db,
    models::subscription::{self, SubscriptionChanges},
};

use super::{create, id_of, item_path, minimal_body, COLLECTION};
use crate::helpers::{assert_error, spawn_app, spawn_app_with};

fn timestamp(body: &Value, field: &str) -> DateTime<Utc> {
    let raw = body[field].as_str().unwrap_or_else(|| panic!("{field} missing in {body}"));
    DateTime::parse_from_rfc3339(raw).unwrap_or_else(|e| panic!("{field} {raw:?} is not RFC 3339: {e}")).to_utc()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_subscription_answers_201_with_defaults_and_a_secret() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    let res = app
        .client
        .post(format!("{}{COLLECTION}", app.base))
        .bearer_auth(&token)
        .json(&minimal_body())
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), StatusCode::CREATED);
    let location = res.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body: Value = res.json().await.expect("json");

    let id = id_of(&body);
    assert_eq!(uuid::Uuid::parse_str(&id).expect("uuid id").get_version_num(), 7);
    assert_eq!(location.as_deref(), Some(item_path(&id).as_str()));
    assert_eq!(body["url"], "https://example.com/hook");
    assert_eq!(body["description"], Value::Null);
    assert_eq!(body["events"], json!(["invoice.created"]));
    assert_eq!(body["headers"], json!({}));
    assert_eq!(body["is_active"], true);
    assert_eq!(body["retry_enabled"], true);
    assert_eq!(body["max_retries"], 3);
    assert_eq!(body["timeout_seconds"], 30);
    assert_eq!(body["disabled_reason"], Value::Null);
    let healthy = json!({"circuit": "closed", "consecutive_failures": 0, "last_success_at": null,
        "last_failure_at": null, "open_until": null});
    assert_eq!(body["health"], healthy);
    assert!(body["secret"].as_str().expect("secret").starts_with("whsec_"), "{body}");
    assert_eq!(timestamp(&body, "created_at"), timestamp(&body, "updated_at"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_given_on_create_is_kept() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    let body = create(
        &app,
        &token,
        &json!({
            "url": "https://your-app.com/webhook",
            "description": "Production webhook endpoint",
            "events": ["invoice.created", "billing.*", "invoice.created", "*"],
            "headers": {"X-Custom-Header": "optional-value", "Authorization": "Bearer receiver-token"},
            "is_active": false,
            "retry_enabled": false,
            "max_retries": 10,
            "timeout_seconds": 60
        }),
    )
    .await;
    assert_eq!(body["url"], "https://your-app.com/webhook");
    assert_eq!(body["description"], "Production webhook endpoint");
    assert_eq!(body["events"], json!(["invoice.created", "billing.*", "*"]), "repeats are dropped, order kept");
    // Sensitive values are masked in every response, the creation's included.
    assert_eq!(body["headers"], json!({"X-Custom-Header": "optional-value", "Authorization": "***"}));
    assert_eq!(body["is_active"], false);
    assert_eq!(body["retry_enabled"], false);
    assert_eq!(body["max_retries"], 10);
    assert_eq!(body["timeout_seconds"], 60);
    let (status, read) = app.get(&item_path(&id_of(&body)), &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["events"], body["events"]);
    assert_eq!(read["headers"], body["headers"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_reads_back_as_created_without_its_secret() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    let mut created = create(&app, &token, &minimal_body()).await;
    let (status, read) = app.get(&item_path(&id_of(&created)), &token).await;
    assert_eq!(status, StatusCode::OK);
    assert!(read.get("secret").is_none(), "{read}");
    created.as_object_mut().expect("object").remove("secret");
    assert_eq!(read, created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_changes_only_the_fields_it_names() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    let created = create(
        &app,
        &token,
        &json!({"url": "https://example.com/a", "description": "first", "events": ["invoice.created"]}),
    )
    .await;
    let path = item_path(&id_of(&created));

    let (status, patched) =
        app.request(Method::PATCH, &path, Some(&token), Some(&json!({"events": ["payment.*"]}))).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["events"], json!(["payment.*"]));
    for unchanged in
        ["url", "description", "headers", "is_active", "retry_enabled", "max_retries", "timeout_seconds", "created_at"]
    {
        assert_eq!(patched[unchanged], created[unchanged], "{unchanged}");
    }
    assert!(timestamp(&patched, "updated_at") > timestamp(&created, "updated_at"));
    assert!(patched.get("secret").is_none());

    let everything = json!({
        "url": "https://example.org/b",
        "description": "second",
        "events": ["customer.created", "email.*"],
        "headers": {"X-Tenant": "acme"},
        "is_active": false,
        "retry_enabled": false,
        "max_retries": 0,
        "timeout_seconds": 5
    });
    let (status, patched) = app.request(Method::PATCH, &path, Some(&token), Some(&everything)).await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    for (field, value) in everything.as_object().expect("object") {
        assert_eq!(&patched[field], value, "{field}");
    }

    // An explicit null clears the description; an empty patch changes nothing.
    let (status, patched) = app.request(Method::PATCH, &path, Some(&token), Some(&json!({"description": null}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched["description"], Value::Null);
    assert_eq!(patched["url"], "https://example.org/b");
    let (status, same) = app.request(Method::PATCH, &path, Some(&token), Some(&json!({}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(same["events"], json!(["customer.created", "email.*"]));
    let (_, read) = app.get(&path, &token).await;
    assert_eq!(read["headers"], json!({"X-Tenant": "acme"}));
    assert_eq!(read["description"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactivating_a_disabled_subscription_clears_its_disabled_reason() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    let created = create(&app, &token, &minimal_body()).await;
    let id = uuid::Uuid::parse_str(&id_of(&created)).expect("uuid");
    // What the dispatcher does when the endpoint answers 410.
    {
        let mut conn = db::conn(&app.ingest.state.pool).await.expect("conn");
        let changes = SubscriptionChanges {
            is_active: Some(false),
            disabled_reason: Some(Some("endpoint answered 410 Gone".into())),
            ..Default::default()
        };
        subscription::update(&mut conn, "t1", id, changes).await.expect("update").expect("found");
    }
    // …after its circuit had opened (what the dispatchers record).
    {
        let mut conn = db::conn(&app.ingest.state.pool).await.expect("conn");
        diesel_async::RunQueryDsl::execute(
            diesel::sql_query(format!(
                "INSERT INTO endpoint_health (subscription_id, circuit, consecutive_failures, last_failure_at, \
                   failing_since, open_until, open_count) \
                 VALUES ('{id}', 'open', 7, now(), now(), now() + interval '1 hour', 2)"
            )),
            &mut conn,
        )
        .await
        .expect("health row");
    }
    let path = item_path(&id.to_string());
    let (_, read) = app.get(&path, &token).await;
    assert_eq!(read["is_active"], false);
    assert_eq!(read["disabled_reason"], "endpoint answered 410 Gone");
    assert_eq!(
        (read["health"]["circuit"].as_str(), read["health"]["consecutive_failures"].as_i64()),
        (Some("open"), Some(7))
    );
    assert!(read["health"]["open_until"].is_string() && read["health"]["last_failure_at"].is_string(), "{read}");
    let (_, listed) = app.get(COLLECTION, &token).await;
    assert_eq!(listed["items"][0]["health"], read["health"], "the list shows health too");

    // Changing something else leaves it disabled, with its reason.
    let (_, patched) = app.request(Method::PATCH, &path, Some(&token), Some(&json!({"max_retries": 1}))).await;
    assert_eq!(patched["disabled_reason"], "endpoint answered 410 Gone");

    let (status, patched) = app.request(Method::PATCH, &path, Some(&token), Some(&json!({"is_active": true}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched["is_active"], true);
    assert_eq!(patched["disabled_reason"], Value::Null);
    // Re-enabling starts its health over.
    assert_eq!(patched["health"]["circuit"], "closed");
    assert_eq!(patched["health"]["consecutive_failures"], 0);
    assert_eq!((&patched["health"]["open_until"], &patched["health"]["last_failure_at"]), (&Value::Null, &Value::Null));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_subscription_answers_404_everywhere_but_its_row_stays() {
    // Retention off: its rounds purge a soft-deleted subscription without
    // deliveries, and its first round may run late under load (a flake in CI).
    let app = spawn_app_with(&[("RETENTION", "0")]).await;
    let token = app.tenant_key("t1").await;
    let kept = create(&app, &token, &minimal_body()).await;
    let created = create(&app, &token, &minimal_body()).await;
    let path = item_path(&id_of(&created));

    let (status, body) = app.request(Method::DELETE, &path, Some(&token), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(body, Value::Null, "no body");

    for (method, path, body) in [
        (Method::GET, path.clone(), None),
        (Method::PATCH, path.clone(), Some(json!({"max_retries": 1}))),
        (Method::DELETE, path.clone(), None),
        (Method::POST, format!("{path}/rotate-secret"), None),
    ] {
        let (status, response) = app.request(method.clone(), &path, Some(&token), body.as_ref()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_error(&response, "not_found");
    }
    let (_, list) = app.get(COLLECTION, &token).await;
    let ids: Vec<&Value> = list["items"].as_array().expect("items").iter().map(|s| &s["id"]).collect();
    assert_eq!(ids, [&kept["id"]]);

    // Soft delete: the row stays for the delivery log, marked deleted and inactive.
    let id = uuid::Uuid::parse_str(&id_of(&created)).expect("uuid");
    let mut conn = db::conn(&app.ingest.state.pool).await.expect("conn");
    let row: (Option<DateTime<Utc>>, bool) = {
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        use shared::schema::subscriptions::dsl;
        dsl::subscriptions
            .filter(dsl::id.eq(id))
            .select((dsl::deleted_at, dsl::is_active))
            .first(&mut conn)
            .await
            .expect("row kept")
    };
    assert!(row.0.is_some());
    assert!(!row.1);
}

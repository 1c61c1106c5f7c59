//! Custom header values: sealed at rest, masked in responses, and `"***"`
//! sent back keeps the stored value.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use shared::{header_values, models::subscription};

use crate::{
    helpers::{spawn_app, TestApp},
    subscriptions::{assert_rejected, create, id_of, item_path, COLLECTION},
};

/// The headers column as PostgreSQL holds it, and the values it opens to.
async fn stored_headers(app: &TestApp, tenant: &str, id: &str) -> (String, Value) {
    let id = uuid::Uuid::parse_str(id).expect("uuid");
    let mut conn = shared::db::conn(&app.ingest.state.pool).await.expect("conn");
    let row = subscription::find(&mut conn, tenant, id).await.expect("query").expect("row");
    let opened =
        header_values::open(&app.ingest.state.secrets, &id, &row.headers, row.headers_encrypted).expect("open");
    (row.headers.to_string(), json!(opened))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_values_are_sealed_at_rest_and_sensitive_ones_masked_in_every_response() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    let headers = json!({
        "Authorization": "Bearer receiver-token",
        "X-Api-Key": "k-123",
        "X-Session-Cookie": "c=1",
        "X-Tenant": "acme",
    });
    let created =
        create(&app, &token, &json!({"url": "https://example.com/hook", "events": ["*"], "headers": headers})).await;
    let masked = json!({"Authorization": "***", "X-Api-Key": "***", "X-Session-Cookie": "***", "X-Tenant": "acme"});
    assert_eq!(created["headers"], masked);
    let id = id_of(&created);
    assert_eq!(app.get(&item_path(&id), &token).await.1["headers"], masked);
    assert_eq!(app.get(COLLECTION, &token).await.1["items"][0]["headers"], masked);
    let rotated = app.post(&format!("{}/rotate-secret", item_path(&id)), &token, &json!({})).await.1;
    assert_eq!(rotated["headers"], masked);

    let (raw, opened) = stored_headers(&app, "t1", &id).await;
    for clear in ["receiver-token", "k-123", "c=1", "acme"] {
        assert!(!raw.contains(clear), "{clear} is readable in the database: {raw}");
    }
    assert_eq!(opened, headers, "the sealed values open to what was given");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_sending_the_mask_back_keeps_the_stored_value() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    let body = json!({"url": "https://example.com/hook", "events": ["*"],
                      "headers": {"Authorization": "Bearer old", "X-Plain": "one"}});
    let id = id_of(&create(&app, &token, &body).await);
    let path = item_path(&id);
    // What a client read, edited and sent back.
    let patch = json!({"headers": {"authorization": "***", "X-Plain": "two", "X-Token": "new-token"}});
    let (status, updated) = app.request(Method::PATCH, &path, Some(&token), Some(&patch)).await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["headers"], json!({"authorization": "***", "X-Plain": "two", "X-Token": "***"}));
    let (_, opened) = stored_headers(&app, "t1", &id).await;
    assert_eq!(opened, json!({"authorization": "Bearer old", "X-Plain": "two", "X-Token": "new-token"}));

    // A real value replaces it; a mask with nothing stored is refused.
    let patch = json!({"headers": {"Authorization": "Bearer new"}});
    assert_eq!(app.request(Method::PATCH, &path, Some(&token), Some(&patch)).await.0, StatusCode::OK);
    assert_eq!(stored_headers(&app, "t1", &id).await.1, json!({"Authorization": "Bearer new"}));
    let unknown = json!({"headers": {"Authorization": "***", "X-Secret": "***"}});
    assert_rejected(&app, Method::PATCH, &path, &token, &unknown, "headers.X-Secret").await;
    assert_eq!(stored_headers(&app, "t1", &id).await.1, json!({"Authorization": "Bearer new"}), "nothing changed");
    // A new subscription has nothing stored to keep.
    let masked_create =
        json!({"url": "https://example.com/hook", "events": ["*"], "headers": {"Authorization": "***"}});
    assert_rejected(&app, Method::POST, COLLECTION, &token, &masked_create, "headers.Authorization").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_stored_in_clear_before_sealing_are_read_and_then_sealed() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    let id = app.insert_subscription("t1", "https://example.com/hook", &["*"], true).await;
    app.sql(&format!(
        "UPDATE subscriptions SET headers = '{{\"Authorization\": \"Bearer legacy\", \"X-A\": \"1\"}}', \
         headers_encrypted = false WHERE id = '{id}'"
    ))
    .await;
    let (status, read) = app.get(&item_path(&id.to_string()), &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["headers"], json!({"Authorization": "***", "X-A": "1"}));

    // What ingest does at start (and `webhooks-ingest migrate`).
    let mut conn = shared::db::conn(&app.ingest.state.pool).await.expect("conn");
    let sealed = subscription::seal_clear_headers(&mut conn, &app.ingest.state.secrets).await.expect("seal");
    assert_eq!(sealed, 1);
    let (raw, opened) = stored_headers(&app, "t1", &id.to_string()).await;
    assert!(!raw.contains("legacy"), "{raw}");
    assert_eq!(opened, json!({"Authorization": "Bearer legacy", "X-A": "1"}));
    assert_eq!(subscription::seal_clear_headers(&mut conn, &app.ingest.state.secrets).await.expect("again"), 0);
}

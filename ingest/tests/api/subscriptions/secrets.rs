use diesel::{prelude::*, sql_types::Text};
use diesel_async::RunQueryDsl;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use shared::{db, models::subscription};

use super::{create, id_of, item_path, minimal_body, COLLECTION};
use crate::helpers::{spawn_app, TestApp};

#[derive(QueryableByName)]
struct RowText {
    #[diesel(sql_type = Text)]
    text: String,
}

/// Every column of the subscription row, as PostgreSQL prints it.
async fn row_as_text(app: &TestApp, id: uuid::Uuid) -> String {
    let mut conn = db::conn(&app.ingest.state.pool).await.expect("conn");
    diesel::sql_query("SELECT s::text AS text FROM subscriptions s WHERE id = $1")
        .bind::<diesel::sql_types::Uuid, _>(id)
        .get_result::<RowText>(&mut conn)
        .await
        .expect("row")
        .text
}

async fn stored(app: &TestApp, tenant: &str, id: uuid::Uuid) -> subscription::Subscription {
    let mut conn = db::conn(&app.ingest.state.pool).await.expect("conn");
    subscription::find(&mut conn, tenant, id).await.expect("query").expect("row")
}

fn assert_not_in(haystack: &str, secret: &str) {
    let raw = secret.strip_prefix("whsec_").expect("whsec_ prefix");
    for form in [secret.to_owned(), raw.to_owned(), hex::encode(secret), hex::encode(raw)] {
        assert!(!haystack.contains(&form), "the secret is stored in clear ({form})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_is_stored_encrypted_and_shown_only_on_create() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    let created = create(&app, &token, &minimal_body()).await;
    let secret = created["secret"].as_str().expect("secret").to_owned();
    let id = uuid::Uuid::parse_str(&id_of(&created)).expect("uuid");

    assert_not_in(&row_as_text(&app, id).await, &secret);
    let row = stored(&app, "t1", id).await;
    assert_eq!(app.ingest.state.secrets.open(&id, &row.secret_encrypted).expect("opens"), secret);
    assert!(row.previous_secret_encrypted.is_none() && row.secret_rotated_at.is_none());

    let path = item_path(&id.to_string());
    let (_, read) = app.get(&path, &token).await;
    let (_, list) = app.get(COLLECTION, &token).await;
    let (_, patched) = app.request(Method::PATCH, &path, Some(&token), Some(&json!({"description": "x"}))).await;
    for body in [&read, &list["items"][0], &patched] {
        assert_eq!(body["id"], created["id"], "{body}");
        assert!(body.get("secret").is_none(), "secret leaked: {body}");
        assert!(!body.to_string().contains(&secret));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_secret_returns_a_new_one_and_keeps_the_old_encrypted() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    let created = create(&app, &token, &minimal_body()).await;
    let old_secret = created["secret"].as_str().expect("secret").to_owned();
    let id = uuid::Uuid::parse_str(&id_of(&created)).expect("uuid");
    let path = item_path(&id.to_string());

    let (status, rotated) = app.post(&format!("{path}/rotate-secret"), &token, &Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_secret = rotated["secret"].as_str().expect("new secret").to_owned();
    assert!(new_secret.starts_with("whsec_"));
    assert_ne!(new_secret, old_secret);
    for field in [
        "id",
        "url",
        "description",
        "events",
        "headers",
        "is_active",
        "retry_enabled",
        "max_retries",
        "timeout_seconds",
        "created_at",
        "disabled_reason",
        "health",
    ] {
        assert_eq!(rotated[field], created[field], "{field}");
    }

    let row = stored(&app, "t1", id).await;
    let secrets = &app.ingest.state.secrets;
    assert_eq!(secrets.open(&id, &row.secret_encrypted).expect("new opens"), new_secret);
    let previous = row.previous_secret_encrypted.expect("previous secret kept");
    assert_eq!(secrets.open(&id, &previous).expect("old opens"), old_secret);
    let rotated_at = row.secret_rotated_at.expect("rotation time");
    assert!((chrono::Utc::now() - rotated_at).num_seconds() < 60);
    let text = row_as_text(&app, id).await;
    assert_not_in(&text, &new_secret);
    assert_not_in(&text, &old_secret);

    let (_, read) = app.get(&path, &token).await;
    assert!(read.get("secret").is_none());
}

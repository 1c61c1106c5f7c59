//! The API key lifecycle: `api-key create|list|revoke` as an operator runs
//! them, revocation reaching every ingest, and `last_used_at`.

use std::{process::Output, time::Duration};

use base64::Engine;
use reqwest::StatusCode;
use serde_json::Value;
use shared::testing::eventually;

use crate::helpers::{spawn_app, TestApp};

/// Runs `webhooks-ingest <args>` against the app's database.
fn cli(app: &TestApp, args: &[&str]) -> Output {
    let key = base64::engine::general_purpose::STANDARD.encode(app.config.secret_key.0);
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_webhooks-ingest"))
            .args(args)
            .env_clear()
            .env("DATABASE_URL", &app.config.database_url)
            .env("AMQP_URL", &app.config.amqp_url)
            .env("AMQP_PREFIX", &app.config.amqp_prefix)
            .env("WEBHOOK_SECRET_KEY", key)
            .env("RUST_LOG", "warn")
            .output()
            .expect("the ingest binary runs")
    };
    tokio::task::block_in_place(run)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `api-key create …`: the token from the last line of stdout.
fn create_key(app: &TestApp, args: &[&str]) -> String {
    let output = cli(app, &[&["api-key", "create"], args].concat());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    stdout(&output).lines().last().expect("token line").to_owned()
}

const LIST_PATH: &str = "/api/v1/webhooks/subscriptions";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_id_is_checked_exactly_as_publishing_checks_it() {
    let app = spawn_app().await;
    for tenant in ["a\nb", "a\u{1}b", "", "   ", &"t".repeat(129)] {
        let output = cli(&app, &["api-key", "create", "--tenant", tenant]);
        assert!(!output.status.success(), "{tenant:?} was accepted");
        assert!(String::from_utf8_lossy(&output.stderr).contains("--tenant"), "{tenant:?}");
    }
    let output = cli(&app, &["api-key", "create", "--publisher", "--name", "bad\nname"]);
    assert!(!output.status.success(), "a name with a line break was accepted");
    let listed = cli(&app, &["api-key", "list", "--json"]);
    assert_eq!(stdout(&listed).lines().count(), 0, "nothing was created: {}", stdout(&listed));
    // What is accepted can publish: the same rules, trimmed the same way.
    let token = create_key(&app, &["--tenant", " acme "]);
    let body = serde_json::json!({"event_type": "invoice.created", "event_data": {}, "tenant_id": "acme"});
    let (status, answer) = app.post("/api/v1/events", &token, &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_list_shows_every_key_but_never_a_token() {
    let app = spawn_app().await;
    let acme = create_key(&app, &["--tenant", "acme", "--name", "acme prod"]);
    let globex = create_key(&app, &["--tenant", "globex"]);
    let publisher = create_key(&app, &["--publisher", "--name", "billing"]);
    let (status, _) = app.get(LIST_PATH, &acme).await;
    assert_eq!(status, StatusCode::OK);

    let table = stdout(&cli(&app, &["api-key", "list"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "a header and three keys:\n{table}");
    for column in ["ID", "KIND", "TENANT", "NAME", "CREATED_AT", "LAST_USED_AT", "REVOKED_AT"] {
        assert!(lines[0].contains(column), "{column} missing:\n{table}");
    }
    assert!(lines.iter().any(|l| l.contains("tenant") && l.contains("acme") && l.contains("acme prod")), "{table}");
    assert!(lines.iter().any(|l| l.contains("publisher") && l.contains("billing")), "{table}");
    for token in [&acme, &globex, &publisher] {
        assert!(!table.contains(token.as_str()), "a token was listed:\n{table}");
    }

    let rows = |args: &[&str]| -> Vec<Value> {
        let output = cli(&app, &[&["api-key", "list", "--json"], args].concat());
        stdout(&output).lines().map(|line| serde_json::from_str(line).expect("a JSON line")).collect()
    };
    let acme_rows = rows(&["--tenant", "acme"]);
    assert_eq!(acme_rows.len(), 1);
    assert_eq!((acme_rows[0]["kind"].as_str(), acme_rows[0]["name"].as_str()), (Some("tenant"), Some("acme prod")));
    assert!(acme_rows[0]["last_used_at"].is_string(), "acme's key was used: {}", acme_rows[0]);
    assert!(acme_rows[0]["revoked_at"].is_null());
    let publishers = rows(&["--publisher"]);
    assert_eq!(publishers.len(), 1);
    assert_eq!(publishers[0]["kind"], "publisher");
    assert!(publishers[0]["tenant_id"].is_null() && publishers[0]["last_used_at"].is_null());
    let listed_fields: Vec<&String> = acme_rows[0].as_object().expect("object").keys().collect();
    assert_eq!(listed_fields.len(), 7, "id, kind, tenant_id, name, created_at, last_used_at, revoked_at");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_refused_by_every_running_ingest_within_two_seconds() {
    let app = spawn_app().await;
    // A second ingest on the same database: its own key cache and listener.
    let other = ingest::server::start(app.config.clone(), 1).await.expect("second ingest starts");
    let bases = [app.base.clone(), format!("http://{}", other.addr)];
    let token = create_key(&app, &["--tenant", "acme"]);
    let status_at = |base: String| {
        let client = app.client.clone();
        let token = token.clone();
        async move {
            let response = client.get(format!("{base}{LIST_PATH}")).bearer_auth(token).send().await.expect("sent");
            response.status()
        }
    };
    for base in &bases {
        // Twice: the second answer comes from the warm cache.
        for _ in 0..2 {
            assert_eq!(status_at(base.clone()).await, StatusCode::OK, "{base}");
        }
    }
    let id = listed_id(&app, "acme");
    let revoked = cli(&app, &["api-key", "revoke", &id]);
    assert!(stdout(&revoked).contains("revoked"), "{}", String::from_utf8_lossy(&revoked.stderr));
    for base in &bases {
        let refused = eventually(Duration::from_secs(2), || async {
            (status_at(base.clone()).await == StatusCode::UNAUTHORIZED).then_some(())
        })
        .await;
        assert!(refused.is_some(), "{base} still accepts the revoked key after 2 s");
    }
    let again = cli(&app, &["api-key", "revoke", &id]);
    assert!(stdout(&again).contains("already revoked"), "{}", stdout(&again));
    let unknown = cli(&app, &["api-key", "revoke", &uuid::Uuid::now_v7().to_string()]);
    assert!(!unknown.status.success());
    other.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_while_the_cache_listener_is_cut_off_is_still_refused_within_two_seconds() {
    let app = spawn_app().await;
    let token = create_key(&app, &["--tenant", "acme"]);
    assert_eq!(app.get(LIST_PATH, &token).await.0, StatusCode::OK);
    assert_eq!(app.get(LIST_PATH, &token).await.0, StatusCode::OK);
    // No announcement will come (the trigger is off) and the listener's
    // connection is cut: only the fallback can notice the revocation.
    app.sql("ALTER TABLE api_keys DISABLE TRIGGER api_keys_changed").await;
    app.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'webhooks-ingest-key-listener' AND datname = current_database()",
    )
    .await;
    app.sql("UPDATE api_keys SET revoked_at = now() WHERE tenant_id = 'acme'").await;
    let refused = eventually(Duration::from_secs(2), || async {
        (app.get(LIST_PATH, &token).await.0 == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    assert!(refused.is_some(), "the revoked key is still accepted after 2 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_used_at_is_written_at_most_once_a_minute() {
    let app = spawn_app().await;
    let token = create_key(&app, &["--tenant", "acme"]);
    let last_used = || async {
        let rows = stdout(&cli(&app, &["api-key", "list", "--json", "--tenant", "acme"]));
        let row: Value = serde_json::from_str(rows.lines().next().expect("one key")).expect("json");
        row["last_used_at"].as_str().map(str::to_owned)
    };
    assert_eq!(last_used().await, None);
    assert_eq!(app.get(LIST_PATH, &token).await.0, StatusCode::OK);
    let first = last_used().await.expect("recorded on first use");
    for _ in 0..3 {
        // Every request asks the database (an empty cache), none writes again.
        app.ingest.state.key_cache.clear();
        assert_eq!(app.get(LIST_PATH, &token).await.0, StatusCode::OK);
    }
    assert_eq!(last_used().await.as_deref(), Some(first.as_str()));
    app.sql("UPDATE api_keys SET last_used_at = now() - interval '2 minutes' WHERE tenant_id = 'acme'").await;
    app.ingest.state.key_cache.clear();
    assert_eq!(app.get(LIST_PATH, &token).await.0, StatusCode::OK);
    let later = last_used().await.expect("recorded");
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).expect("rfc 3339");
    assert!(parse(&later) >= parse(&first), "{later} < {first}");
}

/// The id of the tenant's one key, from `api-key list --json`.
fn listed_id(app: &TestApp, tenant: &str) -> String {
    let rows = stdout(&cli(app, &["api-key", "list", "--json", "--tenant", tenant]));
    let row: Value = serde_json::from_str(rows.lines().next().expect("one key")).expect("json");
    row["id"].as_str().expect("id").to_owned()
}

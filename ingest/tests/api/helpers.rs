//! `spawn_app()` starts a real ingest on 127.0.0.1:0 against its own database
//! and AMQP prefix; `TestApp` has typed helpers for the routes.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use shared::{
    amqp::Topology,
    config::Config,
    db,
    models::api_key::{self, Principal},
    testing::{test_config, TestDb, TestPrefix},
};

/// A running ingest with its own database and AMQP prefix.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub config: Config,
    pub ingest: ingest::server::Ingest,
    // Dropped last: the database and the queues go after the app stops using them.
    pub prefix: TestPrefix,
    pub db: TestDb,
}

/// Starts ingest with the test config.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Starts ingest with config overrides (e.g. `("ALLOW_PRIVATE_TARGETS", "false")`).
pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    shared::telemetry::init_logging();
    let db = TestDb::create().await;
    let mut prefix = TestPrefix::new();
    let config = test_config(&db.url, &prefix.prefix, overrides).expect("test config");
    prefix.track(Topology::from_config(&config));
    let ingest = ingest::server::start(config.clone(), 1).await.expect("ingest starts");
    // Wait until the broker side is up, so tests start from a ready service.
    ingest
        .state
        .broker
        .wait_session(std::time::Duration::from_secs(10))
        .await
        .expect("broker connects");
    TestApp {
        base: format!("http://{}", ingest.addr),
        client: reqwest::Client::builder().no_proxy().build().expect("client"),
        config,
        ingest,
        prefix,
        db,
    }
}

impl TestApp {
    /// Creates a tenant API key and returns its token.
    pub async fn tenant_key(&self, tenant: &str) -> String {
        self.key(Principal::Tenant(tenant.to_owned())).await
    }

    /// Creates a publisher API key and returns its token.
    pub async fn publisher_key(&self) -> String {
        self.key(Principal::Publisher).await
    }

    async fn key(&self, principal: Principal) -> String {
        let mut conn = db::conn(&self.ingest.state.pool).await.expect("conn");
        api_key::create(&mut conn, &principal, Some("test")).await.expect("api key")
    }

    /// Sends a request; returns the status and the JSON body (`Null` if none).
    pub async fn request(&self, method: Method, path: &str, token: Option<&str>, body: Option<&Value>) -> (StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{}", self.base, path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body.to_string());
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let text = res.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Sends a raw body.
    pub async fn request_raw(&self, method: Method, path: &str, token: Option<&str>, body: Vec<u8>) -> (StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{}", self.base, path)).body(body);
        req = req.header("content-type", "application/json");
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let text = res.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.request(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> (StatusCode, Value) {
        self.request(Method::POST, path, Some(token), Some(body)).await
    }
}

/// Asserts the contract's error shape and code; returns `details`.
pub fn assert_error(body: &Value, code: &str) -> Value {
    assert_eq!(body["error"]["code"], code, "unexpected error body: {body}");
    assert!(body["error"]["message"].is_string(), "error message missing: {body}");
    body["error"]["details"].clone()
}

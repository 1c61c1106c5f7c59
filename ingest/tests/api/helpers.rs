#![allow(dead_code, reason = "helpers are shared by every test module; not each uses all of them")]
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

impl TestApp {
    /// Inserts a subscription straight into the database (for tests of other
    /// resources; the subscription API has its own tests). Returns its id.
    pub async fn insert_subscription(&self, tenant: &str, url: &str, events: &[&str], active: bool) -> uuid::Uuid {
        use shared::models::subscription::{self, NewSubscription};
        let id = uuid::Uuid::now_v7();
        let secret = shared::crypto::generate_signing_secret().expect("secret");
        let sealed = self.ingest.state.secrets.seal(&id, &secret).expect("seal");
        let mut conn = db::conn(&self.ingest.state.pool).await.expect("conn");
        subscription::insert(
            &mut conn,
            NewSubscription {
                id,
                tenant_id: tenant.to_owned(),
                url: url.to_owned(),
                description: None,
                events: events.iter().map(|e| (*e).to_owned()).collect(),
                headers: serde_json::json!({}),
                is_active: active,
                retry_enabled: true,
                max_retries: 3,
                timeout_seconds: 5,
                secret_encrypted: sealed,
            },
        )
        .await
        .expect("insert subscription")
        .id
    }

    /// Takes every message waiting on the dispatch queue (basic.get until empty).
    pub async fn drain_dispatch_queue(&self) -> Vec<shared::amqp::DispatchMessage> {
        use lapin::options::BasicGetOptions;
        let session = self.ingest.state.broker.session().expect("broker session");
        let channel = session.connection.create_channel().await.expect("channel");
        let mut messages = Vec::new();
        while let Some(message) = channel
            .basic_get(self.ingest.state.topology.dispatch_queue().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            messages.push(serde_json::from_slice(&message.delivery.data).expect("dispatch message json"));
        }
        messages
    }

    /// Deliveries of an event, as (subscription_id, enqueued).
    pub async fn deliveries_of(&self, tenant: &str, event_id: &str) -> Vec<shared::models::delivery::Delivery> {
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        use shared::schema::deliveries::dsl as d;
        let mut conn = db::conn(&self.ingest.state.pool).await.expect("conn");
        d::deliveries
            .filter(d::tenant_id.eq(tenant))
            .filter(d::event_id.eq(event_id))
            .select(shared::models::delivery::Delivery::as_select())
            .load(&mut conn)
            .await
            .expect("deliveries")
    }
}

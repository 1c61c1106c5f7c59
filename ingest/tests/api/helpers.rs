#![expect(dead_code, reason = "helpers are shared by every test module; not each uses all of them")]
//! `spawn_app()` starts a real ingest on 127.0.0.1:0 against its own database
//! and AMQP prefix; `TestApp` has typed helpers for the routes.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use shared::{
    config::Config,
    db,
    models::api_key::Principal,
    testing::{amqp_url, create_api_key, TestDb, TestEnvironment, TestPrefix},
};
use std::time::Duration;

/// How long a progress-based wait tolerates no progress at all.
pub const STALL: Duration = Duration::from_secs(30);

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
    let TestEnvironment { config, prefix, db } = TestEnvironment::create(overrides).await;
    let ingest = ingest::server::start(config.clone(), 1).await.expect("ingest starts");
    // Wait until the broker side is up, so tests start from a ready service.
    ingest.state.broker.wait_session(std::time::Duration::from_secs(10)).await.expect("broker connects");
    TestApp {
        base: format!("http://{}", ingest.addr),
        client: reqwest::Client::builder().no_proxy().build().expect("client"),
        config,
        ingest,
        prefix,
        db,
    }
}

impl Drop for TestApp {
    /// Stops ingest's server, consumer and relay before the database and the
    /// queues are dropped, so nothing keeps running against them.
    fn drop(&mut self) {
        shared::testing::finish_in_drop(self.ingest.halt());
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
        create_api_key(&self.ingest.state.pool, &principal, "test").await
    }

    /// Sends a request; returns the status and the JSON body (`Null` if none).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
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
    pub async fn request_raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
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
                headers_encrypted: true,
            },
        )
        .await
        .expect("insert subscription")
        .id
    }

    /// Takes every message waiting on the dispatch queue (basic.get until
    /// empty); returns their attempts (a message carries one or several).
    pub async fn drain_dispatch_queue(&self) -> Vec<shared::amqp::DispatchMessage> {
        self.drain_queue(&self.ingest.state.topology.dispatch_queue())
            .await
            .iter()
            .flat_map(|message| shared::amqp::decode_dispatch(&message.data).expect("dispatch message json"))
            .collect()
    }

    /// Takes every message waiting on `queue` (basic.get until empty), over a
    /// connection of its own straight to the broker (never through a test proxy).
    pub async fn drain_queue(&self, queue: &str) -> Vec<lapin::message::Delivery> {
        use lapin::options::BasicGetOptions;
        let connection = shared::amqp::connect(&amqp_url()).await.expect("direct broker connection");
        let channel = connection.create_channel().await.expect("channel");
        let mut messages = Vec::new();
        while let Some(message) =
            channel.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.expect("basic.get")
        {
            messages.push(message.delivery);
        }
        let _ = connection.close(200, "drained".into()).await;
        messages
    }

    /// Messages ready on `queue` (not counting those delivered and unacked).
    pub async fn queue_depth(&self, queue: &str) -> u32 {
        use lapin::options::QueueDeclareOptions;
        let connection = shared::amqp::connect(&amqp_url()).await.expect("direct broker connection");
        let channel = connection.create_channel().await.expect("channel");
        let declared = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                lapin::types::FieldTable::default(),
            )
            .await
            .expect("queue exists");
        let _ = connection.close(200, "counted".into()).await;
        declared.message_count()
    }

    /// Drains the dispatch queue until `expected` attempts arrived (or 30 s
    /// passed), then once more, so late duplicates are caught too.
    pub async fn collect_dispatch_messages(&self, expected: usize) -> Vec<shared::amqp::DispatchMessage> {
        let mut messages = Vec::new();
        // Waits on progress, not a wall clock: gives up only after a stall.
        let mut last_progress = tokio::time::Instant::now();
        while messages.len() < expected && last_progress.elapsed() < STALL {
            let drained = self.drain_dispatch_queue().await;
            if !drained.is_empty() {
                last_progress = tokio::time::Instant::now();
            }
            messages.extend(drained);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        messages.extend(self.drain_dispatch_queue().await);
        messages
    }

    /// A publishing client on this app's prefix, straight to the broker.
    pub async fn event_bus(&self) -> webhooks_client::EventBus {
        webhooks_client::EventBus::connect(&amqp_url(), &self.config.amqp_prefix).await.expect("event bus connects")
    }

    /// Inserts `count` subscriptions of `tenant` with one multi-row INSERT; returns their ids.
    pub async fn insert_subscriptions(&self, tenant: &str, count: usize, events: &[&str]) -> Vec<uuid::Uuid> {
        use diesel_async::RunQueryDsl;
        use shared::models::subscription::NewSubscription;
        let rows: Vec<NewSubscription> = (0..count)
            .map(|i| {
                let id = uuid::Uuid::now_v7();
                let secret = shared::crypto::generate_signing_secret().expect("secret");
                NewSubscription {
                    id,
                    tenant_id: tenant.to_owned(),
                    url: format!("http://127.0.0.1:9/hook/{i}"),
                    description: None,
                    events: events.iter().map(|e| (*e).to_owned()).collect(),
                    headers: serde_json::json!({}),
                    is_active: true,
                    retry_enabled: true,
                    max_retries: 3,
                    timeout_seconds: 5,
                    secret_encrypted: self.ingest.state.secrets.seal(&id, &secret).expect("seal"),
                    headers_encrypted: true,
                }
            })
            .collect();
        let ids = rows.iter().map(|r| r.id).collect();
        let mut conn = db::conn(&self.ingest.state.pool).await.expect("conn");
        diesel::insert_into(shared::schema::subscriptions::table)
            .values(rows)
            .execute(&mut conn)
            .await
            .expect("insert subscriptions");
        ids
    }

    /// Runs SQL on this app's database.
    pub async fn sql(&self, sql: &str) -> usize {
        use diesel_async::RunQueryDsl;
        let mut conn = db::conn(&self.ingest.state.pool).await.expect("conn");
        diesel::sql_query(sql).execute(&mut conn).await.expect("sql")
    }

    /// Waits until every delivery of `tenant` is marked enqueued, for as long
    /// as the number still unqueued keeps falling (a loaded machine is slow,
    /// not stuck); `false` once it made no progress for [`STALL`].
    pub async fn wait_all_enqueued(&self, tenant: &str) -> bool {
        let mut fewest = usize::MAX;
        let mut last_progress = tokio::time::Instant::now();
        loop {
            let unqueued = self.deliveries_of_tenant(tenant).await.iter().filter(|d| !d.enqueued).count();
            if unqueued == 0 {
                return true;
            }
            if unqueued < fewest {
                fewest = unqueued;
                last_progress = tokio::time::Instant::now();
            } else if last_progress.elapsed() > STALL {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every delivery of a tenant.
    pub async fn deliveries_of_tenant(&self, tenant: &str) -> Vec<shared::models::delivery::Delivery> {
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        use shared::schema::deliveries::dsl as d;
        let mut conn = db::conn(&self.ingest.state.pool).await.expect("conn");
        d::deliveries
            .filter(d::tenant_id.eq(tenant))
            .select(shared::models::delivery::Delivery::as_select())
            .load(&mut conn)
            .await
            .expect("deliveries")
    }

    /// How many events a tenant has.
    pub async fn event_count(&self, tenant: &str) -> i64 {
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        use shared::schema::events::dsl as ev;
        let mut conn = db::conn(&self.ingest.state.pool).await.expect("conn");
        ev::events.filter(ev::tenant_id.eq(tenant)).count().get_result(&mut conn).await.expect("count events")
    }

    /// The most events one transaction stored: the rows a statement inserts
    /// share its transaction id (`xmin`), so this is the largest fan-out batch
    /// that committed, observed in the database rather than reported by ingest.
    pub async fn largest_batch(&self) -> i64 {
        use diesel_async::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Largest {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = db::conn(&self.ingest.state.pool).await.expect("conn");
        diesel::sql_query(
            "SELECT coalesce(max(n), 0) AS n FROM (SELECT count(*) AS n FROM events GROUP BY xmin::text) b",
        )
        .get_result::<Largest>(&mut conn)
        .await
        .expect("largest batch")
        .n
    }

    /// The value of an unlabelled counter or gauge on this process's
    /// `/metrics` (shared by every test app of the process), 0 when absent.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        text.lines()
            .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .filter_map(|value| value.trim().parse::<f64>().ok())
            .sum()
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

/// Runs SQL on the server's admin database (e.g. to make a test database
/// refuse connections).
pub async fn admin_sql(sql: String) {
    shared::db::admin_execute(&shared::testing::admin_url(), sql).await.expect("admin sql");
}

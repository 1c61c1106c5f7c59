#![expect(dead_code, reason = "helpers are shared by every test module; not each uses all of them")]
//! A test environment: its own database and AMQP prefix, an in-process ingest
//! (publishing and the REST API), dispatchers in-process or as the real
//! binary, and receivers that are real HTTP servers on 127.0.0.1.

mod child;
mod receiver;

pub use child::{signal, wait_exit, KillOnDrop};
pub use receiver::{refused_url, Receiver, Reply};

use std::{
    collections::HashMap,
    process::{Child, Command, Stdio},
    time::Duration,
};

use base64::Engine;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use reqwest::StatusCode;
use serde_json::{json, Value};
use shared::{
    config::Config,
    db,
    models::{
        api_key::{self, Principal},
        attempt::Attempt,
        delivery::{Delivery, DeliveryStatus},
        subscription::{self, NewSubscription},
    },
    testing::{create_api_key, eventually, test_config, TestDb, TestEnvironment, TestPrefix},
};

/// A database, an AMQP prefix and a running ingest.
pub struct TestEnv {
    pub config: Config,
    pub ingest: ingest::server::Ingest,
    pub base: String,
    pub client: reqwest::Client,
    publisher: String,
    // Dropped last: the database and the queues go after the services stop using them.
    pub prefix: TestPrefix,
    pub db: TestDb,
}

/// Starts a fresh environment (ingest only; start dispatchers as the test needs).
pub async fn spawn_env() -> TestEnv {
    spawn_env_with(&[]).await
}

/// Starts a fresh environment whose ingest has config `overrides` (pass the
/// same to dispatchers where they must agree, e.g. `RETRY_SCHEDULE`).
pub async fn spawn_env_with(overrides: &[(&str, &str)]) -> TestEnv {
    let TestEnvironment { config, prefix, db } = TestEnvironment::create(overrides).await;
    let ingest = ingest::server::start(config.clone(), 1).await.expect("ingest starts");
    ingest.state.broker.wait_session(Duration::from_secs(10)).await.expect("broker connects");
    let publisher = create_api_key(&ingest.state.pool, &Principal::Publisher, "test").await;
    TestEnv {
        base: format!("http://{}", ingest.addr),
        client: reqwest::Client::builder().no_proxy().build().expect("client"),
        config,
        ingest,
        publisher,
        prefix,
        db,
    }
}

/// How a test subscription is set up.
#[derive(Debug, Clone)]
pub struct SubSpec {
    pub tenant: String,
    pub url: String,
    pub events: Vec<String>,
    pub headers: Value,
    pub is_active: bool,
    pub retry_enabled: bool,
    pub max_retries: i32,
    pub timeout_seconds: i32,
}

impl SubSpec {
    /// Tenant `t1`, every event, retries on (3), 5 s timeout.
    pub fn new(url: &str) -> Self {
        Self {
            tenant: "t1".into(),
            url: url.to_owned(),
            events: vec!["*".into()],
            headers: json!({}),
            is_active: true,
            retry_enabled: true,
            max_retries: 3,
            timeout_seconds: 5,
        }
    }
    pub fn retries(mut self, enabled: bool, max: i32) -> Self {
        self.retry_enabled = enabled;
        self.max_retries = max;
        self
    }
    pub fn timeout(mut self, seconds: i32) -> Self {
        self.timeout_seconds = seconds;
        self
    }
    pub fn headers(mut self, headers: Value) -> Self {
        self.headers = headers;
        self
    }
    pub fn events(mut self, events: &[&str]) -> Self {
        self.events = events.iter().map(|e| (*e).to_owned()).collect();
        self
    }
}

/// A subscription the test made, with its secret.
#[derive(Debug, Clone)]
pub struct TestSub {
    pub id: uuid::Uuid,
    pub secret: String,
}

impl Drop for TestEnv {
    /// Stops ingest's server, consumer and relay before the database and the
    /// queues are dropped, so nothing keeps running against them.
    fn drop(&mut self) {
        shared::testing::finish_in_drop(self.ingest.halt());
    }
}

impl TestEnv {
    /// Config for a dispatcher of this environment (same database, prefix and
    /// secret key), with `overrides`.
    pub fn dispatcher_config(&self, overrides: &[(&str, &str)]) -> Config {
        let key = base64::engine::general_purpose::STANDARD.encode(self.config.secret_key.0);
        let mut all = vec![("WEBHOOK_SECRET_KEY", key.as_str())];
        all.extend_from_slice(overrides);
        test_config(&self.config.database_url, &self.config.amqp_prefix, &all).expect("dispatcher config")
    }

    /// Starts an in-process dispatcher and waits until it is connected.
    pub async fn start_dispatcher(&self, overrides: &[(&str, &str)]) -> dispatcher::server::Dispatcher {
        let dispatcher = dispatcher::server::start(self.dispatcher_config(overrides)).await.expect("dispatcher starts");
        dispatcher.context.broker.wait_session(Duration::from_secs(10)).await.expect("dispatcher broker connects");
        dispatcher
    }

    /// Spawns the real `webhooks-dispatcher` binary for this environment.
    pub fn spawn_dispatcher_binary(&self, overrides: &[(&str, &str)]) -> Child {
        let config = self.dispatcher_config(overrides);
        let schedule: Vec<String> = config.retry_schedule.iter().map(|d| format!("{}ms", d.as_millis())).collect();
        let mut vars: HashMap<&str, String> = HashMap::from([
            ("DATABASE_URL", config.database_url.clone()),
            ("AMQP_URL", config.amqp_url.clone()),
            ("AMQP_PREFIX", config.amqp_prefix.clone()),
            ("WEBHOOK_SECRET_KEY", base64::engine::general_purpose::STANDARD.encode(config.secret_key.0)),
            ("RETRY_SCHEDULE", schedule.join(",")),
            ("DISPATCHER_BIND", "127.0.0.1:0".into()),
            ("ALLOW_HTTP_TARGETS", "true".into()),
            ("ALLOW_PRIVATE_TARGETS", config.allow_private_targets.to_string()),
            ("DATABASE_POOL_SIZE", "8".into()),
            ("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into())),
        ]);
        for (name, value) in overrides {
            vars.insert(name, (*value).to_owned());
        }
        Command::new(env!("CARGO_BIN_EXE_webhooks-dispatcher"))
            .env_clear()
            .envs(vars)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn webhooks-dispatcher")
    }

    /// Inserts a subscription straight into the database (so private test
    /// URLs are accepted whatever the API's rules) and returns it with its secret.
    pub async fn subscription(&self, spec: SubSpec) -> TestSub {
        let id = uuid::Uuid::now_v7();
        let secret = shared::crypto::generate_signing_secret().expect("secret");
        let sealed = self.ingest.state.secrets.seal(&id, &secret).expect("seal");
        // Sealed the way the API stores them (only string values make sense as headers).
        let headers: std::collections::BTreeMap<String, String> = spec
            .headers
            .as_object()
            .map(|object| object.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
            .unwrap_or_default();
        let headers = shared::header_values::seal(&self.ingest.state.secrets, &id, &headers).expect("seal headers");
        let mut conn = self.conn().await;
        subscription::insert(
            &mut conn,
            NewSubscription {
                id,
                tenant_id: spec.tenant,
                url: spec.url,
                description: None,
                events: spec.events,
                headers,
                headers_encrypted: true,
                is_active: spec.is_active,
                retry_enabled: spec.retry_enabled,
                max_retries: spec.max_retries,
                timeout_seconds: spec.timeout_seconds,
                secret_encrypted: sealed,
            },
        )
        .await
        .expect("insert subscription");
        TestSub { id, secret }
    }

    /// Rotates a subscription's secret the way the API does; returns the new secret.
    pub async fn rotate_secret(&self, tenant: &str, id: uuid::Uuid) -> String {
        let secret = shared::crypto::generate_signing_secret().expect("secret");
        let sealed = self.ingest.state.secrets.seal(&id, &secret).expect("seal");
        let mut conn = self.conn().await;
        subscription::rotate_secret(&mut conn, tenant, id, sealed).await.expect("rotate").expect("subscription exists");
        secret
    }

    pub async fn conn(&self) -> db::DbConn {
        db::conn(&self.ingest.state.pool).await.expect("conn")
    }

    pub async fn sql(&self, statement: &str) {
        let mut conn = self.conn().await;
        diesel::sql_query(statement).execute(&mut conn).await.expect(statement);
    }

    /// Publishes an event over HTTP; returns its event id.
    pub async fn publish(&self, tenant: &str, event_type: &str, data: Value) -> String {
        let body = json!({"event_type": event_type, "event_data": data, "tenant_id": tenant});
        let res = self
            .client
            .post(format!("{}/api/v1/events", self.base))
            .bearer_auth(&self.publisher)
            .json(&body)
            .send()
            .await
            .expect("publish sent");
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let answer: Value = res.json().await.expect("publish answer");
        answer["event_id"].as_str().expect("event_id").to_owned()
    }

    /// Publishes `invoice.created` for `t1` and returns the single delivery it made.
    pub async fn publish_one(&self) -> Delivery {
        let event_id = self.publish("t1", "invoice.created", json!({"invoice_id": "inv_1", "amount": 100.0})).await;
        let mut deliveries = self.deliveries_of(&event_id).await;
        assert_eq!(deliveries.len(), 1, "expected one matching subscription");
        deliveries.remove(0)
    }

    pub async fn deliveries_of(&self, event_id: &str) -> Vec<Delivery> {
        use shared::schema::deliveries::dsl as d;
        let mut conn = self.conn().await;
        d::deliveries
            .filter(d::event_id.eq(event_id))
            .select(Delivery::as_select())
            .load(&mut conn)
            .await
            .expect("deliveries")
    }

    pub async fn deliveries_of_subscription(&self, subscription_id: uuid::Uuid) -> Vec<Delivery> {
        use shared::schema::deliveries::dsl as d;
        let mut conn = self.conn().await;
        d::deliveries
            .filter(d::subscription_id.eq(subscription_id))
            .select(Delivery::as_select())
            .load(&mut conn)
            .await
            .expect("deliveries")
    }

    pub async fn delivery(&self, id: uuid::Uuid) -> Delivery {
        use shared::schema::deliveries::dsl as d;
        let mut conn = self.conn().await;
        d::deliveries.filter(d::id.eq(id)).select(Delivery::as_select()).first(&mut conn).await.expect("delivery")
    }

    pub async fn attempts(&self, delivery_id: uuid::Uuid) -> Vec<Attempt> {
        let mut conn = self.conn().await;
        shared::models::attempt::for_delivery(&mut conn, delivery_id).await.expect("attempts")
    }

    /// The stored envelope of an event.
    pub async fn payload_of(&self, event_id: &str) -> String {
        use shared::schema::events::dsl as e;
        let mut conn = self.conn().await;
        e::events.filter(e::event_id.eq(event_id)).select(e::payload).first(&mut conn).await.expect("event")
    }

    /// Waits until the delivery has `status` (and no claim in flight).
    pub async fn wait_status(&self, id: uuid::Uuid, status: DeliveryStatus, timeout: Duration) -> Delivery {
        let found = eventually(timeout, || async {
            let row = self.delivery(id).await;
            (row.status == status).then_some(row)
        })
        .await;
        match found {
            Some(row) => row,
            None => panic!("delivery {id} never became {status:?}: {:?}", self.delivery(id).await),
        }
    }

    /// Counts deliveries by status.
    pub async fn count_status(&self, status: &str) -> i64 {
        use shared::schema::deliveries::dsl as d;
        let mut conn = self.conn().await;
        d::deliveries.filter(d::status.eq(status)).count().get_result(&mut conn).await.expect("count")
    }

    /// Waits until `n` deliveries have succeeded.
    pub async fn wait_succeeded(&self, n: i64, timeout: Duration) {
        let done = eventually(timeout, || async { (self.count_status("succeeded").await >= n).then_some(()) }).await;
        assert!(done.is_some(), "only {} of {n} deliveries succeeded", self.count_status("succeeded").await);
    }

    /// The subscription's health row (`None`: nothing recorded yet).
    pub async fn health(&self, subscription_id: uuid::Uuid) -> Option<shared::models::endpoint_health::EndpointHealth> {
        let mut conn = self.conn().await;
        shared::models::endpoint_health::for_subscriptions(&mut conn, &[subscription_id])
            .await
            .expect("health")
            .remove(&subscription_id)
    }

    /// Waits until the subscription's circuit is `circuit` (and `check` holds for the row).
    pub async fn wait_circuit(
        &self,
        subscription_id: uuid::Uuid,
        circuit: shared::models::endpoint_health::Circuit,
        check: impl Fn(&shared::models::endpoint_health::EndpointHealth) -> bool,
        timeout: Duration,
    ) -> shared::models::endpoint_health::EndpointHealth {
        let found = eventually(timeout, || async {
            self.health(subscription_id).await.filter(|row| row.circuit == circuit && check(row))
        })
        .await;
        found.unwrap_or_else(|| panic!("the circuit of {subscription_id} never became {circuit:?}"))
    }

    /// Publishes a dispatch message body on the dispatch exchange as ingest would.
    pub async fn publish_dispatch_body(&self, body: &[u8]) {
        let (state, key) = (&self.ingest.state, shared::amqp::DISPATCH_ROUTING_KEY);
        let exchange = state.topology.dispatch_exchange();
        state.broker.publish(&exchange, key, body, shared::amqp::persistent_json()).await.expect("published");
    }

    /// Publishes one attempt's message (a copy of one ingest queued, or one
    /// that was in the broker before its circuit opened).
    pub async fn publish_dispatch_message(&self, message: &shared::amqp::DispatchMessage) {
        self.publish_dispatch_body(&serde_json::to_vec(message).expect("json")).await;
    }

    /// Deliveries waiting in the database (parked or retry due later) with no attempt yet.
    pub async fn count_parked_unattempted(&self, subscription_id: uuid::Uuid) -> i64 {
        use shared::schema::deliveries::dsl as d;
        let mut conn = self.conn().await;
        d::deliveries
            .filter(d::subscription_id.eq(subscription_id))
            .filter(d::enqueued.eq(false))
            .filter(d::next_attempt_at.is_not_null())
            .filter(d::attempt_count.eq(0))
            .filter(d::status.eq(DeliveryStatus::Pending))
            .count()
            .get_result(&mut conn)
            .await
            .expect("count")
    }

    /// A tenant API key.
    pub async fn tenant_key(&self, tenant: &str) -> String {
        let mut conn = self.conn().await;
        api_key::create(&mut conn, &Principal::Tenant(tenant.to_owned()), Some("test")).await.expect("tenant key")
    }

    /// Calls the REST API; returns the status and JSON body.
    pub async fn api(&self, method: reqwest::Method, path: &str, token: &str) -> (StatusCode, Value) {
        let res = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent");
        let status = res.status();
        (status, serde_json::from_str(&res.text().await.expect("body")).unwrap_or(Value::Null))
    }

    /// Calls the REST API with a JSON body; returns the status and JSON body.
    pub async fn api_json(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: &Value,
    ) -> (StatusCode, Value) {
        let res = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request sent");
        let status = res.status();
        (status, serde_json::from_str(&res.text().await.expect("body")).unwrap_or(Value::Null))
    }

    /// The publisher key of this environment.
    pub fn publisher_token(&self) -> &str {
        &self.publisher
    }

    /// Restarts ingest the hard way: a new ingest on the same database and
    /// prefix starts, then the old one stops without finishing its
    /// background work (its job runners are aborted mid-step, their leases
    /// left to lapse) — what a killed process leaves behind.
    pub async fn restart_ingest(&mut self) {
        let fresh = ingest::server::start(self.config.clone(), 1).await.expect("ingest restarts");
        fresh.state.broker.wait_session(Duration::from_secs(10)).await.expect("broker connects");
        self.base = format!("http://{}", fresh.addr);
        let old = std::mem::replace(&mut self.ingest, fresh);
        for task in &old.background {
            task.abort();
        }
        old.stop().await;
    }

    /// Polls a job until it is no longer `running`; returns it.
    pub async fn wait_job(&self, token: &str, job_id: &str, timeout: Duration) -> Value {
        let path = format!("/api/v1/webhooks/jobs/{job_id}");
        let done = eventually(timeout, || async {
            let (status, job) = self.api(reqwest::Method::GET, &path, token).await;
            assert_eq!(status, StatusCode::OK, "{job}");
            (job["status"] != "running").then_some(job)
        })
        .await;
        match done {
            Some(job) => job,
            None => panic!("job {job_id} still running: {:?}", self.api(reqwest::Method::GET, &path, token).await),
        }
    }
}

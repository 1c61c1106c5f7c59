//! The system under test: ingest and one dispatcher in-process, on a database
//! and an AMQP prefix of their own.

use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use shared::{
    amqp::Topology,
    config::Config,
    db,
    models::api_key::{self, Principal},
    testing::{test_config, TestDb, TestPrefix},
};

/// A running ingest and dispatcher.
pub struct ConsoleEnv {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub client: reqwest::Client,
    publisher_key: String,
    pub ingest: ingest::server::Ingest,
    pub dispatcher: dispatcher::server::Dispatcher,
    // Dropped last: the database and the queues go after the services stop using them.
    _prefix: TestPrefix,
    _db: TestDb,
}

impl ConsoleEnv {
    /// Starts both services and waits until they reach the broker.
    pub async fn start() -> Self {
        shared::telemetry::init_logging();
        let db = TestDb::create().await;
        let mut prefix = TestPrefix::new();
        let config = test_config(&db.url, &prefix.prefix, &[]).expect("test config");
        prefix.track(Topology::from_config(&config));
        let ingest = ingest::server::start(config.clone(), 2).await.expect("ingest starts");
        ingest.state.broker.wait_session(Duration::from_secs(10)).await.expect("ingest reaches the broker");
        let dispatcher = dispatcher::server::start(dispatcher_config(&config)).await.expect("dispatcher starts");
        dispatcher.context.broker.wait_session(Duration::from_secs(10)).await.expect("dispatcher reaches the broker");
        let publisher_key = {
            let mut conn = db::conn(&ingest.state.pool).await.expect("conn");
            api_key::create(&mut conn, &Principal::Publisher, Some("console test")).await.expect("publisher key")
        };
        Self {
            base: format!("http://{}", ingest.addr),
            client: reqwest::Client::builder().no_proxy().build().expect("client"),
            publisher_key,
            ingest,
            dispatcher,
            _prefix: prefix,
            _db: db,
        }
    }

    /// Creates a tenant API key and returns its token.
    pub async fn tenant_key(&self, tenant: &str) -> String {
        let mut conn = db::conn(&self.ingest.state.pool).await.expect("conn");
        api_key::create(&mut conn, &Principal::Tenant(tenant.to_owned()), Some("console test"))
            .await
            .expect("tenant key")
    }

    /// The publisher key of this environment.
    pub fn publisher_key(&self) -> &str {
        &self.publisher_key
    }

    /// Publishes an event for `tenant`; returns its event id.
    pub async fn publish(&self, tenant: &str, event_type: &str, data: Value) -> String {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/events",
                &self.publisher_key,
                Some(json!({"event_type": event_type, "event_data": data, "tenant_id": tenant})),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::ACCEPTED, "publish answered {body}");
        body["event_id"].as_str().expect("event_id").to_owned()
    }

    /// Calls the REST API; returns the status and the JSON body (`Null` if none).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (reqwest::StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let text = res.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Cuts ingest off from its database (`false`: new connections refused,
    /// open ones ended), or lets it back in (`true`).
    pub async fn allow_database(&self, allowed: bool) {
        let database = self._db.name.clone();
        let mut statements = vec![format!("ALTER DATABASE \"{database}\" ALLOW_CONNECTIONS {allowed}")];
        if !allowed {
            statements.push(format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}' AND pid <> pg_backend_pid()"
            ));
        }
        tokio::task::spawn_blocking(move || {
            use diesel::RunQueryDsl as _;
            let mut conn = <diesel_async::async_connection_wrapper::AsyncConnectionWrapper<
                diesel_async::AsyncPgConnection,
            > as diesel::Connection>::establish(&shared::testing::admin_url())
            .expect("admin connection");
            for statement in statements {
                diesel::sql_query(statement).execute(&mut conn).expect("admin statement");
            }
        })
        .await
        .expect("admin task");
    }

    /// Stops the dispatcher, then ingest.
    pub async fn stop(self) {
        self.dispatcher.shutdown(Duration::from_secs(5)).await;
        self.ingest.stop().await;
    }
}

/// The dispatcher's config: the same database, prefix and secret key as ingest's.
fn dispatcher_config(ingest: &Config) -> Config {
    let key = base64::engine::general_purpose::STANDARD.encode(ingest.secret_key.0);
    test_config(&ingest.database_url, &ingest.amqp_prefix, &[("WEBHOOK_SECRET_KEY", key.as_str())])
        .expect("dispatcher config")
}

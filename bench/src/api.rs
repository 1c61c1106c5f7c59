//! The few REST calls the bench makes: subscriptions, readiness, metrics.

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::Value;

use crate::error::BenchError;

/// A subscription the bench created.
#[derive(Debug, Clone)]
pub struct CreatedSubscription {
    pub id: String,
    pub secret: String,
}

/// A client of the ingest REST API.
#[derive(Clone)]
pub struct Api {
    pub client: Client,
    pub base: String,
}

impl Api {
    /// `ingest_url` is the server root, e.g. `http://127.0.0.1:8080`.
    pub fn new(ingest_url: &str, pool_size: usize) -> Result<Self, BenchError> {
        let client = Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(pool_size.max(1))
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self { client, base: ingest_url.trim_end_matches('/').to_owned() })
    }

    /// `POST /api/v1/webhooks/subscriptions`.
    pub async fn create_subscription(&self, token: &str, body: &Value) -> Result<CreatedSubscription, BenchError> {
        let url = format!("{}/api/v1/webhooks/subscriptions", self.base);
        let response = self.client.post(url).bearer_auth(token).json(body).send().await?;
        let status = response.status();
        let text = response.text().await?;
        if status != StatusCode::CREATED {
            return Err(BenchError::Api(format!("creating a subscription answered {status}: {}", cut(&text))));
        }
        let json: Value = serde_json::from_str(&text)
            .map_err(|_| BenchError::Api(format!("subscription answer is not JSON: {}", cut(&text))))?;
        match (json["id"].as_str(), json["secret"].as_str()) {
            (Some(id), Some(secret)) => Ok(CreatedSubscription { id: id.to_owned(), secret: secret.to_owned() }),
            _ => Err(BenchError::Api(format!("subscription answer lacks id or secret: {}", cut(&text)))),
        }
    }

    /// `PATCH /api/v1/webhooks/subscriptions/{id}`.
    pub async fn patch_subscription(&self, token: &str, id: &str, body: &Value) -> Result<(), BenchError> {
        let url = format!("{}/api/v1/webhooks/subscriptions/{id}", self.base);
        let response = self.client.patch(url).bearer_auth(token).json(body).send().await?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(BenchError::Api(format!("updating subscription {id} answered {status}: {}", cut(&text))));
        }
        Ok(())
    }

    /// `DELETE /api/v1/webhooks/subscriptions/{id}`.
    pub async fn delete_subscription(&self, token: &str, id: &str) -> Result<(), BenchError> {
        let url = format!("{}/api/v1/webhooks/subscriptions/{id}", self.base);
        let response = self.client.delete(url).bearer_auth(token).send().await?;
        let status = response.status();
        if !status.is_success() && status != StatusCode::NOT_FOUND {
            return Err(BenchError::Api(format!("deleting subscription {id} answered {status}")));
        }
        Ok(())
    }

    /// Whether the tenant already has subscriptions (they would receive the bench's events too).
    pub async fn has_subscriptions(&self, token: &str) -> Result<bool, BenchError> {
        let url = format!("{}/api/v1/webhooks/subscriptions?limit=1", self.base);
        let response = self.client.get(url).bearer_auth(token).send().await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            return Err(BenchError::Api(format!("listing subscriptions answered {status}: {}", cut(&text))));
        }
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(json["items"].as_array().is_some_and(|items| !items.is_empty()))
    }
}

/// Waits until `GET {base}/readyz` answers 200.
pub async fn wait_ready(client: &Client, base: &str, timeout: Duration) -> Result<(), BenchError> {
    let url = format!("{}/readyz", base.trim_end_matches('/'));
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(response) = client.get(&url).timeout(Duration::from_secs(2)).send().await {
            if response.status() == StatusCode::OK {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BenchError::Spawn(format!("{url} did not answer 200 within {timeout:?}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The first 300 characters of a body, for error messages.
pub fn cut(text: &str) -> String {
    text.chars().take(300).collect()
}

//! Request and response bodies of the subscription routes, and their
//! translation into validated domain values.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use shared::{
    catalog::Catalog,
    crypto::{CryptoError, SecretBox},
    header_values::{self, NamesOnly},
    models::{
        endpoint_health::{Circuit, EndpointHealth},
        subscription::{NewSubscription, Subscription, SubscriptionChanges},
    },
};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    domain::{CustomHeaders, Description, EventPatterns, InvalidField, MaxRetries, SubscriptionUrl, TimeoutSeconds},
    error::ApiError,
    state::AppState,
};

/// What validation needs besides the body: the catalog, the target policy
/// and the key that seals header values.
pub struct Rules<'a> {
    pub catalog: &'a Catalog,
    pub allow_http: bool,
    pub allow_private: bool,
    pub secrets: &'a SecretBox,
}

impl<'a> Rules<'a> {
    pub fn of(state: &'a AppState) -> Self {
        Self {
            catalog: &state.catalog,
            allow_http: state.config.allow_http_targets,
            allow_private: state.config.allow_private_targets,
            secrets: &state.secrets,
        }
    }

    fn url(&self, raw: &str) -> Result<SubscriptionUrl, InvalidField> {
        SubscriptionUrl::parse(raw, self.allow_http, self.allow_private)
    }
}

/// `POST /webhooks/subscriptions`. Its `Debug` shows header names, not values.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscriptionRequest {
    /// Where events are POSTed: `https://` (or `http://` where the deployment allows it).
    #[schema(example = "https://your-app.com/webhook")]
    pub url: String,
    /// At most 500 characters.
    #[schema(max_length = 500)]
    pub description: Option<String>,
    /// Catalog event types, `category.*`, `prefix.*` or `*`; 1 to 100, repeats dropped.
    #[schema(example = json!(["invoice.created", "payment.*"]))]
    pub events: Vec<String>,
    /// Extra headers sent with every delivery (at most 20); they can never
    /// replace ours. Values are encrypted at rest; responses show the values
    /// of names containing `authorization`, `token`, `secret`, `key`,
    /// `cookie` or `password` as `"***"`.
    pub headers: Option<BTreeMap<String, String>>,
    /// Defaults to true.
    pub is_active: Option<bool>,
    /// Defaults to true.
    pub retry_enabled: Option<bool>,
    /// 0 to 10, defaults to 3.
    #[schema(minimum = 0, maximum = 10)]
    pub max_retries: Option<i32>,
    /// 1 to 60, defaults to 30.
    #[schema(minimum = 1, maximum = 60)]
    pub timeout_seconds: Option<i32>,
}

impl CreateSubscriptionRequest {
    /// Validates every field and seals the header values; the result can go
    /// straight to the database.
    pub fn validate(
        self,
        rules: &Rules<'_>,
        id: Uuid,
        tenant_id: &str,
        secret_encrypted: Vec<u8>,
    ) -> Result<NewSubscription, ApiError> {
        let headers = CustomHeaders::parse(self.headers.unwrap_or_default())?.refuse_masked()?;
        Ok(NewSubscription {
            id,
            tenant_id: tenant_id.to_owned(),
            url: rules.url(&self.url)?.into_string(),
            description: self.description.map(Description::parse).transpose()?.map(Description::into_string),
            events: EventPatterns::parse(self.events, rules.catalog)?.into_vec(),
            headers: header_values::seal(rules.secrets, &id, headers.as_map())?,
            headers_encrypted: true,
            is_active: self.is_active.unwrap_or(true),
            retry_enabled: self.retry_enabled.unwrap_or(true),
            max_retries: self.max_retries.map(MaxRetries::parse).transpose()?.unwrap_or(MaxRetries::DEFAULT).get(),
            timeout_seconds: self
                .timeout_seconds
                .map(TimeoutSeconds::parse)
                .transpose()?
                .unwrap_or(TimeoutSeconds::DEFAULT)
                .get(),
            secret_encrypted,
        })
    }
}

/// `PATCH /webhooks/subscriptions/{id}`: any subset of the fields; an absent
/// field is left as it is. Only `description` may be `null` (to clear it).
/// Its `Debug` shows header names, not values.
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSubscriptionRequest {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String)]
    pub url: Option<Option<String>>,
    /// `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 500)]
    pub description: Option<Option<String>>,
    /// Replaces the whole list.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Vec<String>)]
    pub events: Option<Option<Vec<String>>>,
    /// Replaces the whole map (`{}` removes every custom header); a
    /// sensitive header sent as `"***"` keeps its stored value.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = HashMap<String, String>)]
    pub headers: Option<Option<BTreeMap<String, String>>>,
    /// `true` re-activates a subscription and clears `disabled_reason`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = bool)]
    pub is_active: Option<Option<bool>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = bool)]
    pub retry_enabled: Option<Option<bool>>,
    /// 0 to 10.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = i32, minimum = 0, maximum = 10)]
    pub max_retries: Option<Option<i32>>,
    /// 1 to 60.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = i32, minimum = 1, maximum = 60)]
    pub timeout_seconds: Option<Option<i32>>,
}

/// Tells an absent field (`None`, via `default`) from an explicit `null` (`Some(None)`).
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A field that may be absent but, when given, not `null`.
fn not_null<T>(field: &str, value: Option<Option<T>>) -> Result<Option<T>, InvalidField> {
    match value {
        Some(None) => Err(InvalidField::new(field, "must not be null")),
        Some(Some(value)) => Ok(Some(value)),
        None => Ok(None),
    }
}

impl UpdateSubscriptionRequest {
    /// Validates the fields present; the result is a partial update and, when
    /// `headers` is given, the new headers (still to merge with masked values
    /// and to seal, see [`CustomHeaders::keep_masked`]).
    pub fn validate(self, rules: &Rules<'_>) -> Result<(SubscriptionChanges, Option<CustomHeaders>), InvalidField> {
        let is_active = not_null("is_active", self.is_active)?;
        let headers = not_null("headers", self.headers)?.map(CustomHeaders::parse).transpose()?;
        let changes = SubscriptionChanges {
            url: not_null("url", self.url)?.map(|url| rules.url(&url)).transpose()?.map(SubscriptionUrl::into_string),
            description: self
                .description
                .map(|description| description.map(Description::parse).transpose())
                .transpose()?
                .map(|description| description.map(Description::into_string)),
            events: not_null("events", self.events)?
                .map(|events| EventPatterns::parse(events, rules.catalog))
                .transpose()?
                .map(EventPatterns::into_vec),
            headers: None,
            headers_encrypted: None,
            is_active,
            retry_enabled: not_null("retry_enabled", self.retry_enabled)?,
            max_retries: not_null("max_retries", self.max_retries)?
                .map(MaxRetries::parse)
                .transpose()?
                .map(MaxRetries::get),
            timeout_seconds: not_null("timeout_seconds", self.timeout_seconds)?
                .map(TimeoutSeconds::parse)
                .transpose()?
                .map(TimeoutSeconds::get),
            // Re-activating is the user saying the endpoint works again.
            disabled_reason: (is_active == Some(true)).then_some(None),
            updated_at: None,
        };
        Ok((changes, headers))
    }
}

impl std::fmt::Debug for CreateSubscriptionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateSubscriptionRequest")
            .field("url", &self.url)
            .field("description", &self.description)
            .field("events", &self.events)
            .field("headers", &self.headers.as_ref().map(NamesOnly))
            .field("is_active", &self.is_active)
            .field("retry_enabled", &self.retry_enabled)
            .field("max_retries", &self.max_retries)
            .field("timeout_seconds", &self.timeout_seconds)
            .finish()
    }
}

impl std::fmt::Debug for UpdateSubscriptionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateSubscriptionRequest")
            .field("url", &self.url)
            .field("description", &self.description)
            .field("events", &self.events)
            .field("headers", &self.headers.as_ref().map(|headers| headers.as_ref().map(NamesOnly)))
            .field("is_active", &self.is_active)
            .field("retry_enabled", &self.retry_enabled)
            .field("max_retries", &self.max_retries)
            .field("timeout_seconds", &self.timeout_seconds)
            .finish()
    }
}

/// A subscription as the API shows it; never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionView {
    pub id: Uuid,
    pub url: String,
    #[schema(required = true)]
    pub description: Option<String>,
    pub events: Vec<String>,
    /// Values of sensitive names (containing `authorization`, `token`,
    /// `secret`, `key`, `cookie` or `password`) read `"***"`.
    pub headers: BTreeMap<String, String>,
    /// False when paused by the user, or disabled after the endpoint answered 410.
    pub is_active: bool,
    pub retry_enabled: bool,
    pub max_retries: i32,
    pub timeout_seconds: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Why the service disabled it (e.g. the endpoint answered 410 Gone, or
    /// every attempt failed for `AUTO_DISABLE_AFTER`, since when).
    #[schema(required = true)]
    pub disabled_reason: Option<String>,
    /// How the endpoint has been answering, and its circuit breaker.
    pub health: HealthView,
}

/// A subscription's endpoint health: after `CIRCUIT_FAILURE_THRESHOLD`
/// consecutive failed attempts the circuit opens and nothing is sent until
/// `open_until`; then one probe attempt (`half_open`) closes or re-opens it.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthView {
    pub circuit: Circuit,
    /// Failed attempts since the last success.
    pub consecutive_failures: i32,
    #[schema(required = true)]
    pub last_success_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub last_failure_at: Option<DateTime<Utc>>,
    /// While the circuit is not closed: when the next probe may go out.
    #[schema(required = true)]
    pub open_until: Option<DateTime<Utc>>,
}

impl HealthView {
    /// The view of a health row (`None`: nothing recorded yet, healthy).
    pub fn of(row: Option<&EndpointHealth>) -> Self {
        match row {
            None => Self {
                circuit: Circuit::Closed,
                consecutive_failures: 0,
                last_success_at: None,
                last_failure_at: None,
                open_until: None,
            },
            Some(row) => Self {
                circuit: row.circuit,
                consecutive_failures: row.consecutive_failures,
                last_success_at: row.last_success_at,
                last_failure_at: row.last_failure_at,
                open_until: (row.circuit != Circuit::Closed).then_some(row.open_until).flatten(),
            },
        }
    }
}

impl SubscriptionView {
    /// The view of a row with its health row: header values opened, sensitive ones masked.
    pub fn new(row: Subscription, health: Option<&EndpointHealth>, secrets: &SecretBox) -> Result<Self, CryptoError> {
        Ok(Self {
            headers: header_values::masked(secrets, &row.id, &row.headers, row.headers_encrypted)?,
            id: row.id,
            url: row.url,
            description: row.description,
            events: row.events,
            is_active: row.is_active,
            retry_enabled: row.retry_enabled,
            max_retries: row.max_retries,
            timeout_seconds: row.timeout_seconds,
            created_at: row.created_at,
            updated_at: row.updated_at,
            disabled_reason: row.disabled_reason,
            health: HealthView::of(health),
        })
    }
}

/// A subscription with its signing secret: only when created or rotated.
/// Its `Debug` hides the secret.
#[derive(Serialize, ToSchema)]
pub struct SubscriptionWithSecret {
    #[serde(flatten)]
    pub subscription: SubscriptionView,
    /// `whsec_` + base64 of 32 random bytes. Shown only now: store it.
    pub secret: String,
}

impl SubscriptionWithSecret {
    pub fn new(
        row: Subscription,
        health: Option<&EndpointHealth>,
        secret: String,
        secrets: &SecretBox,
    ) -> Result<Self, CryptoError> {
        Ok(Self { subscription: SubscriptionView::new(row, health, secrets)?, secret })
    }
}

impl std::fmt::Debug for SubscriptionWithSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionWithSecret")
            .field("subscription", &self.subscription)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// One page of subscriptions, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionPage {
    pub items: Vec<SubscriptionView>,
    /// Pass as `?cursor=` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// `GET /webhooks/subscriptions` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// 1 to 100, default 50.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

//! What the bench runs against: addresses, keys and process ids of the
//! services, however they were started.

use std::future::Future;

use crate::error::BenchError;

/// A tenant API key and the tenant it belongs to.
#[derive(Debug, Clone)]
pub struct TenantKey {
    pub tenant_id: String,
    pub token: String,
}

impl TenantKey {
    /// Parses `TENANT_ID=TOKEN`.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.split_once('=') {
            Some((tenant, token)) if !tenant.trim().is_empty() && !token.is_empty() => {
                Ok(Self { tenant_id: tenant.trim().to_owned(), token: token.to_owned() })
            }
            _ => Err("expected TENANT_ID=TOKEN".into()),
        }
    }
}

/// The running services.
#[derive(Debug, Clone)]
pub struct Target {
    /// Server root of ingest, e.g. `http://127.0.0.1:8080`.
    pub ingest_url: String,
    pub tenants: Vec<TenantKey>,
    pub publisher_token: String,
    pub amqp_url: String,
    pub amqp_prefix: String,
    /// `/metrics` URL of each dispatcher.
    pub dispatcher_metrics_urls: Vec<String>,
    /// The services' database, to count only its PostgreSQL backends.
    pub database_name: Option<String>,
    /// A database on the same server, to read `pg_stat_database` of `database_name`.
    pub admin_url: Option<String>,
    /// Process ids to measure (empty when the services run in-process).
    pub ingest_pids: Vec<u32>,
    pub dispatcher_pids: Vec<u32>,
    /// Delete the bench's subscriptions at the end (the database outlives the run).
    pub delete_subscriptions: bool,
}

/// Services the bench can run a scenario against.
pub trait Services {
    fn target(&self) -> &Target;

    /// Starts one more dispatcher (for the scale scenario) and adds it to the target.
    fn add_dispatcher(&mut self) -> impl Future<Output = Result<(), BenchError>> + Send;
}

/// Services someone else started (`--ingest-url …`): nothing to start or stop.
pub struct External {
    pub target: Target,
}

impl Services for External {
    fn target(&self) -> &Target {
        &self.target
    }

    async fn add_dispatcher(&mut self) -> Result<(), BenchError> {
        Err(BenchError::Options("this scenario starts a second dispatcher; run it with --spawn".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_keys_parse_as_tenant_equals_token() {
        let key = TenantKey::parse("acme=whk_abc=").expect("valid");
        assert_eq!(key.tenant_id, "acme");
        assert_eq!(key.token, "whk_abc=");
        assert!(TenantKey::parse("no-token").is_err());
        assert!(TenantKey::parse("=tok").is_err());
    }
}

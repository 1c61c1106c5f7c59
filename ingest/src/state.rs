//! What every handler can reach: config, pool, broker, catalog and keys.

use std::sync::Arc;

use shared::{
    amqp::{Broker, Topology},
    catalog::Catalog,
    config::Config,
    crypto::SecretBox,
    db::DbPool,
};

use crate::{
    key_cache::KeyCache,
    publishing::{admission::Admission, batcher::FanoutBatcher, budget::ByteBudget, dispatch_queue::DispatchQueue},
};

/// Shared application state, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: DbPool,
    pub broker: Broker,
    pub topology: Arc<Topology>,
    pub catalog: Arc<Catalog>,
    pub secrets: SecretBox,
    /// Looked-up API keys; dropped whenever a key is revoked.
    pub key_cache: KeyCache,
    /// Queues committed deliveries on the broker, off the request path.
    pub dispatch: DispatchQueue,
    /// Stores published events in shared transactions (group commit).
    pub fanout: FanoutBatcher,
    /// Publish body bytes held at once, HTTP and AMQP together.
    pub budget: ByteBudget,
    /// Holds the answers of HTTP publishes to subscriptions that are behind.
    pub admission: Admission,
}

//! What every task of a dispatcher shares: config, pool, broker, HTTP client,
//! slots, endpoint health, counters and the batched queries.

use std::sync::Arc;

use tokio::sync::Semaphore;

use shared::{
    amqp::{Broker, Topology},
    config::Config,
    crypto::SecretBox,
    db::DbPool,
};

use crate::{batched_store, deliver::DeliverContext, flow::Flow, health::Health, stats::Stats};

/// Claims without a slot in the claim queue at once (see `Context::slotless_claims`).
pub const SLOTLESS_CLAIMS: usize = 32;

/// What the dispatcher's tasks share.
#[derive(Clone)]
pub struct Context {
    pub config: Arc<Config>,
    pub pool: DbPool,
    pub broker: Broker,
    pub topology: Arc<Topology>,
    pub secrets: SecretBox,
    /// The shared HTTP client and target policy.
    pub deliver: DeliverContext,
    /// Slots for attempts in flight, globally and per subscription.
    pub flow: Flow,
    /// Attempts whose request is over and whose outcome is not recorded yet,
    /// at most twice `DISPATCHER_CONCURRENCY`. Taken after the request and
    /// before the slot is given back, so while the database lags, slots (and
    /// with them payloads and outcomes in memory) stay bounded, and the wait
    /// never delays a request.
    pub unrecorded: Arc<Semaphore>,
    /// Claims made without a slot at once ([`SLOTLESS_CLAIMS`]): messages of a
    /// subscription whose circuit is open claim only to be parked, and a
    /// circuit that opens releases all its waiters together.
    pub slotless_claims: Arc<Semaphore>,
    /// Endpoint health and circuits.
    pub health: Arc<Health>,
    pub stats: Arc<Stats>,
    /// Claims, batched across the attempts in flight.
    pub claims: batched_store::ClaimBatcher,
    /// Outcome records, batched across the attempts in flight.
    pub records: batched_store::RecordBatcher,
    /// Parks, batched.
    pub parks: batched_store::ParkBatcher,
}

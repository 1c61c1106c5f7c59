//! Keeping `endpoint_health` up to date after each attempt, and what follows
//! a circuit transition: parking a subscription's waiting deliveries when it
//! opens, releasing them (paced) when it closes, and auto-disabling a
//! subscription that has failed every attempt for `AUTO_DISABLE_AFTER`.
//!
//! A success of a subscription known to be healthy costs no statement of its
//! own: `last_success_at` is written for all of them once a second
//! ([`Health::flush`]). Everything else is a transaction on the health row,
//! locked, so every dispatcher agrees on the circuit.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use chrono::{DateTime, Utc};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use shared::{
    config::Config,
    db::{self, DbError, DbPool},
    models::endpoint_health::{self, Circuit, EndpointHealth, RELEASE_PER_SECOND},
};

use crate::{
    circuit::{self, Settings, Transition},
    metric_names,
    store::{self, Claimed},
};

/// What an attempt's outcome left the circuit as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct After {
    pub transition: Transition,
    pub circuit: Circuit,
    /// Until when the subscription's deliveries are parked, if it is open.
    pub open_until: Option<DateTime<Utc>>,
    /// This outcome disabled the subscription (`AUTO_DISABLE_AFTER`).
    pub disabled: bool,
}

/// This process's view of endpoint health, and the writer of the table.
pub struct Health {
    settings: Settings,
    auto_disable_after: chrono::Duration,
    /// Subscriptions last seen with failures or a circuit not closed, and until
    /// when they are parked (if open).
    troubled: Mutex<HashMap<uuid::Uuid, Option<DateTime<Utc>>>>,
    /// Successes of healthy subscriptions not written yet.
    successes: Mutex<HashMap<uuid::Uuid, DateTime<Utc>>>,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Health {
    pub fn new(config: &Config) -> Self {
        Self {
            settings: Settings::of(config),
            auto_disable_after: chrono::Duration::from_std(config.auto_disable_after)
                .unwrap_or(chrono::Duration::days(5)),
            troubled: Mutex::default(),
            successes: Mutex::default(),
        }
    }

    /// Learns the health the claim read from the database.
    pub fn note_claim(&self, claimed: &Claimed) {
        let circuit = claimed.circuit.unwrap_or(Circuit::Closed);
        let mut troubled = locked(&self.troubled);
        if circuit == Circuit::Closed && claimed.consecutive_failures.unwrap_or(0) == 0 {
            troubled.remove(&claimed.subscription_id);
        } else {
            let open_until = (circuit != Circuit::Closed).then_some(claimed.open_until).flatten();
            troubled.insert(claimed.subscription_id, open_until);
        }
    }

    /// Until when a subscription's deliveries are parked, as far as this process knows.
    pub fn parked_until(&self, subscription_id: uuid::Uuid) -> Option<DateTime<Utc>> {
        locked(&self.troubled).get(&subscription_id).copied().flatten()
    }

    /// Records an attempt's outcome against its subscription's health.
    /// `notify`: an auto-disable this causes tells the tenant (false when the
    /// attempt was a delivery of an operational event, which never causes another).
    pub async fn observe(
        &self,
        pool: &DbPool,
        subscription_id: uuid::Uuid,
        delivery_id: uuid::Uuid,
        succeeded: bool,
        notify: bool,
    ) -> Result<After, DbError> {
        let now = Utc::now();
        if succeeded && !locked(&self.troubled).contains_key(&subscription_id) {
            locked(&self.successes).insert(subscription_id, now);
            let after =
                After { transition: Transition::None, circuit: Circuit::Closed, open_until: None, disabled: false };
            return Ok(after);
        }
        let mut conn = db::conn(pool).await?;
        let (settings, disable_after) = (self.settings, self.auto_disable_after);
        let after = conn
            .transaction(async move |conn| {
                let attempt = Attempt { subscription_id, delivery_id, succeeded, notify, now };
                apply(conn, attempt, &settings, disable_after).await
            })
            .await?;
        let mut troubled = locked(&self.troubled);
        if after.circuit == Circuit::Closed && succeeded {
            troubled.remove(&subscription_id);
        } else {
            troubled.insert(subscription_id, after.open_until);
        }
        if after.transition != Transition::None {
            metrics::counter!(metric_names::CIRCUIT_TRANSITIONS, "transition" => after.transition.label()).increment(1);
            log::info!(
                "circuit {} subscription_id={subscription_id} open_until={:?}",
                after.transition.label(),
                after.open_until
            );
        }
        Ok(after)
    }

    /// Writes the successes noted since the last flush (one statement).
    pub async fn flush(&self, pool: &DbPool) {
        let successes: Vec<(uuid::Uuid, DateTime<Utc>)> = locked(&self.successes).drain().collect();
        if successes.is_empty() {
            return;
        }
        let written = match db::conn(pool).await {
            Ok(mut conn) => endpoint_health::note_successes(&mut conn, &successes).await.map_err(DbError::from),
            Err(err) => Err(err),
        };
        if let Err(err) = written {
            log::debug!("writing last_success_at failed count={} error={err}", successes.len());
        }
    }
}

/// The attempt whose outcome [`apply`] records.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    subscription_id: uuid::Uuid,
    delivery_id: uuid::Uuid,
    succeeded: bool,
    /// An auto-disable tells the tenant (not for an operational event's delivery).
    notify: bool,
    now: DateTime<Utc>,
}

/// One transition under the health row's lock, with what follows it.
async fn apply(
    conn: &mut AsyncPgConnection,
    attempt: Attempt,
    settings: &Settings,
    disable_after: chrono::Duration,
) -> diesel::QueryResult<After> {
    let Attempt { subscription_id, delivery_id, succeeded, notify, now } = attempt;
    let mut row = endpoint_health::lock(conn, subscription_id).await?;
    let before: EndpointHealth = row.clone();
    let transition = circuit::observe(&mut row, succeeded, delivery_id, now, settings);
    endpoint_health::save(conn, &row).await?;
    match transition {
        Transition::Opened | Transition::Reopened => {
            if let Some(until) = row.open_until {
                let parked = endpoint_health::hold_waiting(conn, subscription_id, until, None).await?;
                metrics::counter!(metric_names::PARKED, "reason" => "circuit_open").increment(parked as u64);
            }
        }
        Transition::Closed => {
            let up_to = endpoint_health::parked_until(&before).unwrap_or(now).max(now);
            let released = endpoint_health::release_waiting(conn, subscription_id, up_to, RELEASE_PER_SECOND).await?;
            metrics::counter!(metric_names::RELEASED).increment(released as u64);
        }
        Transition::None => {}
    }
    let mut disabled = false;
    if let Some(since) = row.failing_since.filter(|since| !succeeded && *since <= now - disable_after) {
        let reason = format!("every attempt failed since {}", since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        disabled =
            store::disable_subscription(conn, subscription_id, &reason, store::DisableCause::AutoDisable, notify)
                .await?;
    }
    let circuit = row.circuit;
    let open_until = (circuit != Circuit::Closed).then_some(endpoint_health::parked_until(&row)).flatten();
    Ok(After { transition, circuit, open_until, disabled })
}

/// How long a probe holds its circuit half open, beyond the subscription's timeout.
pub const PROBE_MARGIN: Duration = Duration::from_secs(60);

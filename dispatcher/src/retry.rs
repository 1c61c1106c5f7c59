//! What follows an attempt (the contract's outcome rules), and queueing the
//! next attempt on the delay queue of its retry delay.

use std::time::Duration;

use chrono::Utc;
use shared::{
    amqp::{persistent_json, Broker, BrokerError, DispatchMessage, Topology},
    config::Config,
    models::delivery::DeliveryStatus,
};

use crate::{outcome::Outcome, store::NextState};

/// The subscription settings that decide about retries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub retry_enabled: bool,
    pub max_retries: i32,
    /// The attempt came from the retry endpoint: no automatic retries after it.
    pub manual_retry: bool,
}

/// The `disabled_reason` a 410 leaves on the subscription.
pub const GONE_REASON: &str = "endpoint answered 410 Gone";

/// The delivery's next state after `attempt` ended with `outcome`:
/// 2xx succeeds; 410 fails for good and disables the subscription; anything
/// else schedules retry number `attempt` after `retry_delay(attempt)` while
/// retries are enabled, the attempt was not manual and `attempt <= max_retries`;
/// otherwise the delivery fails.
pub fn next_state(
    outcome: &Outcome,
    attempt: i32,
    policy: RetryPolicy,
    config: &Config,
) -> (NextState, Option<Duration>) {
    if outcome.is_success() {
        return (
            NextState { status: DeliveryStatus::Succeeded, next_attempt_at: None, disable_subscription: None },
            None,
        );
    }
    if outcome.is_gone() {
        let next = NextState {
            status: DeliveryStatus::Failed,
            next_attempt_at: None,
            disable_subscription: Some(GONE_REASON.into()),
        };
        return (next, None);
    }
    if policy.retry_enabled && !policy.manual_retry && attempt <= policy.max_retries {
        let delay = config.retry_delay(u32::try_from(attempt).unwrap_or(1));
        let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        return (
            NextState { status: DeliveryStatus::Retrying, next_attempt_at: Some(at), disable_subscription: None },
            Some(delay),
        );
    }
    (NextState { status: DeliveryStatus::Failed, next_attempt_at: None, disable_subscription: None }, None)
}

/// Publishes `attempt` of the delivery to the delay queue for `delay` (through
/// the default exchange, routed by queue name), persistent, and waits for the
/// broker's confirm.
pub async fn schedule(
    broker: &Broker,
    topology: &Topology,
    delivery_id: uuid::Uuid,
    attempt: i32,
    delay: Duration,
) -> Result<(), BrokerError> {
    let body = serde_json::to_vec(&DispatchMessage::Attempt { delivery_id, attempt })?;
    broker.publish("", &topology.retry_queue(delay), &body, persistent_json()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{Outcome, OutcomeKind};

    fn config() -> Config {
        let key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        Config::from_lookup(|name| match name {
            "WEBHOOK_SECRET_KEY" => Some(key.to_owned()),
            "RETRY_SCHEDULE" => Some("1s,2s,3s".to_owned()),
            _ => None,
        })
        .expect("config")
    }

    #[test]
    fn outcome_rules_follow_the_contract() {
        let config = config();
        let d = Duration::from_millis(1);
        let auto = RetryPolicy { retry_enabled: true, max_retries: 3, manual_retry: false };
        let fail = Outcome::answered(500, None, d, None);
        let (next, delay) = next_state(&fail, 1, auto, &config);
        assert_eq!((next.status, delay), (DeliveryStatus::Retrying, Some(Duration::from_secs(1))));
        assert_eq!(next_state(&fail, 3, auto, &config).1, Some(Duration::from_secs(3)));
        assert_eq!(next_state(&fail, 4, auto, &config).0.status, DeliveryStatus::Failed);
        let off = RetryPolicy { retry_enabled: false, ..auto };
        assert_eq!(next_state(&fail, 1, off, &config).0.status, DeliveryStatus::Failed);
        let manual = RetryPolicy { manual_retry: true, ..auto };
        assert_eq!(next_state(&fail, 1, manual, &config).0.status, DeliveryStatus::Failed);
        let timeout = Outcome::failed(OutcomeKind::Timeout, "slow", d);
        assert_eq!(next_state(&timeout, 2, auto, &config).0.status, DeliveryStatus::Retrying);
        let (gone, delay) = next_state(&Outcome::answered(410, None, d, None), 1, auto, &config);
        assert_eq!(
            (gone.status, gone.disable_subscription.as_deref(), delay),
            (DeliveryStatus::Failed, Some(GONE_REASON), None)
        );
        assert_eq!(
            next_state(&Outcome::answered(200, None, d, None), 1, manual, &config).0.status,
            DeliveryStatus::Succeeded
        );
    }
}

//! What follows an attempt: the contract's outcome rules, plus `Retry-After`,
//! jitter and permanent failures. A retry waits in the database with its due
//! time (`next_attempt_at`); [`crate::scheduler`] queues it when it is due.

use std::time::Duration;

use chrono::Utc;
use shared::{config::Config, models::delivery::DeliveryStatus};

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
/// 2xx succeeds; 410 fails for good and disables the subscription; a
/// permanent outcome (`blocked_address`) fails at once; anything else
/// schedules retry number `attempt` while retries are enabled, the attempt
/// was not manual and `attempt <= max_retries` — after the endpoint's
/// `Retry-After` (429/503, clamped to 1 s … `RETRY_AFTER_MAX`) or else the
/// `RETRY_SCHEDULE` delay varied by ±`RETRY_JITTER`; otherwise the delivery fails.
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
    if !outcome.kind.is_permanent() && policy.retry_enabled && !policy.manual_retry && attempt <= policy.max_retries {
        let delay = match outcome.retry_after {
            Some(asked) => asked.clamp(Duration::from_secs(1), config.retry_after_max.max(Duration::from_secs(1))),
            None => jittered(config.retry_delay(u32::try_from(attempt).unwrap_or(1)), config.retry_jitter),
        };
        let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        return (
            NextState { status: DeliveryStatus::Retrying, next_attempt_at: Some(at), disable_subscription: None },
            Some(delay),
        );
    }
    (NextState { status: DeliveryStatus::Failed, next_attempt_at: None, disable_subscription: None }, None)
}

/// `delay` varied uniformly within ±`jitter` (a fraction), so the failures
/// of one outage do not all retry at the same instant.
pub fn jittered(delay: Duration, jitter: f64) -> Duration {
    if jitter <= 0.0 {
        return delay;
    }
    let factor = 1.0 + jitter * (2.0 * fastrand::f64() - 1.0);
    delay.mul_f64(factor.max(0.0))
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
            "RETRY_JITTER" => Some("0".to_owned()),
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
        let blocked = Outcome::failed(OutcomeKind::BlockedAddress, "internal", d);
        assert_eq!(next_state(&blocked, 1, auto, &config).0.status, DeliveryStatus::Failed, "never retried");
    }

    #[test]
    fn retry_after_replaces_the_schedule_and_is_clamped() {
        let config = config();
        let d = Duration::from_millis(1);
        let auto = RetryPolicy { retry_enabled: true, max_retries: 3, manual_retry: false };
        let asked = |secs| Outcome::answered(429, None, d, None).with_retry_after(Some(Duration::from_secs(secs)));
        assert_eq!(next_state(&asked(7), 1, auto, &config).1, Some(Duration::from_secs(7)));
        assert_eq!(next_state(&asked(0), 1, auto, &config).1, Some(Duration::from_secs(1)), "at least 1 s");
        assert_eq!(next_state(&asked(86_400), 1, auto, &config).1, Some(Duration::from_secs(3600)), "RETRY_AFTER_MAX");
        assert_eq!(next_state(&asked(7), 4, auto, &config).0.status, DeliveryStatus::Failed, "still an attempt");
    }

    #[test]
    fn jitter_spreads_delays_within_the_fraction() {
        let base = Duration::from_secs(100);
        assert_eq!(jittered(base, 0.0), base);
        let delays: Vec<f64> = (0..2000).map(|_| jittered(base, 0.2).as_secs_f64()).collect();
        let (min, max) = delays.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        assert!(min >= 80.0 && max <= 120.0, "within ±20 %: {min}..{max}");
        assert!(min < 82.0 && max > 118.0, "and spread over it: {min}..{max}");
    }
}

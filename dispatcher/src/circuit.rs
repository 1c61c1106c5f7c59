//! The circuit breaker's rules, as a pure function over an `endpoint_health`
//! row: closed → open after `CIRCUIT_FAILURE_THRESHOLD` consecutive failed
//! attempts; open for `CIRCUIT_OPEN_BASE`, doubling per failed probe up to
//! `CIRCUIT_OPEN_MAX`; half open (one probe) once the period is over; any
//! success closes it. [`crate::health`] applies it under a row lock.

use std::time::Duration;

use chrono::{DateTime, Utc};
use shared::{
    config::Config,
    models::endpoint_health::{Circuit, EndpointHealth},
};

/// The breaker's settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub threshold: i32,
    pub open_base: Duration,
    pub open_max: Duration,
}

impl Settings {
    pub fn of(config: &Config) -> Self {
        Self {
            threshold: config.circuit_failure_threshold,
            open_base: config.circuit_open_base,
            open_max: config.circuit_open_max,
        }
    }

    /// The open period after the `n`-th opening (1-based) since the last close.
    pub fn open_period(&self, n: i32) -> Duration {
        let doublings = u32::try_from(n.saturating_sub(1)).unwrap_or(0).min(30);
        self.open_base.saturating_mul(1 << doublings).min(self.open_max)
    }
}

/// What an attempt's outcome did to the circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    None,
    /// Closed → open (the threshold was reached).
    Opened,
    /// Half open → open (the probe failed).
    Reopened,
    /// Open or half open → closed (an attempt succeeded).
    Closed,
}

impl Transition {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Opened => "opened",
            Self::Reopened => "reopened",
            Self::Closed => "closed",
        }
    }
}

/// Applies one attempt of `delivery_id` to the row.
pub fn observe(
    row: &mut EndpointHealth,
    succeeded: bool,
    delivery_id: uuid::Uuid,
    now: DateTime<Utc>,
    settings: &Settings,
) -> Transition {
    row.updated_at = now;
    let before = row.circuit;
    if succeeded {
        row.circuit = Circuit::Closed;
        row.consecutive_failures = 0;
        row.last_success_at = Some(now);
        row.failing_since = None;
        row.open_until = None;
        row.open_count = 0;
        row.probe_delivery_id = None;
        row.probe_until = None;
        return if before == Circuit::Closed { Transition::None } else { Transition::Closed };
    }
    row.consecutive_failures = row.consecutive_failures.saturating_add(1);
    row.last_failure_at = Some(now);
    row.failing_since.get_or_insert(now);
    let transition = match before {
        Circuit::Closed if row.consecutive_failures >= settings.threshold => Transition::Opened,
        Circuit::HalfOpen if row.probe_delivery_id == Some(delivery_id) => Transition::Reopened,
        // A late failure of an attempt that started before the circuit opened changes nothing.
        _ => return Transition::None,
    };
    row.open_count = row.open_count.saturating_add(1);
    let period = chrono::Duration::from_std(settings.open_period(row.open_count)).unwrap_or(chrono::Duration::MAX);
    row.circuit = Circuit::Open;
    row.open_until = Some(now + period);
    row.probe_delivery_id = None;
    row.probe_until = None;
    transition
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings { threshold: 3, open_base: Duration::from_secs(30), open_max: Duration::from_secs(100) }
    }

    #[test]
    fn opens_at_the_threshold_doubles_per_failed_probe_and_closes_on_success() {
        let s = settings();
        let (sub, d) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        let mut row = EndpointHealth::healthy(sub);
        let now = Utc::now();
        assert_eq!(observe(&mut row, false, d, now, &s), Transition::None);
        assert_eq!(observe(&mut row, false, d, now, &s), Transition::None);
        assert_eq!(observe(&mut row, false, d, now, &s), Transition::Opened);
        assert_eq!((row.circuit, row.open_until), (Circuit::Open, Some(now + chrono::Duration::seconds(30))));
        assert_eq!(observe(&mut row, false, d, now, &s), Transition::None, "late failures change nothing");
        assert_eq!(row.open_until, Some(now + chrono::Duration::seconds(30)));

        // A failed probe re-opens for twice as long, then the max.
        row.circuit = Circuit::HalfOpen;
        row.probe_delivery_id = Some(d);
        assert_eq!(observe(&mut row, false, uuid::Uuid::now_v7(), now, &s), Transition::None, "not the probe");
        assert_eq!(observe(&mut row, false, d, now, &s), Transition::Reopened);
        assert_eq!(row.open_until, Some(now + chrono::Duration::seconds(60)));
        row.circuit = Circuit::HalfOpen;
        row.probe_delivery_id = Some(d);
        assert_eq!(observe(&mut row, false, d, now, &s), Transition::Reopened);
        assert_eq!(row.open_until, Some(now + chrono::Duration::seconds(100)));

        assert_eq!(observe(&mut row, true, d, now, &s), Transition::Closed);
        assert_eq!((row.circuit, row.consecutive_failures, row.open_count), (Circuit::Closed, 0, 0));
        assert_eq!((row.failing_since, row.last_success_at), (None, Some(now)));
    }
}

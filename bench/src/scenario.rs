//! The scenarios, their defaults, and the layout of subscriptions that makes
//! every event match exactly `fanout` of them.
//!
//! A *slot* is one (tenant, event type) pair. Each slot holds `fanout`
//! subscriptions to its event type in its tenant, and event `i` goes to slot
//! `i % slots`, so it matches exactly the subscriptions of that slot. Slots
//! fill [`TYPES_PER_TENANT`] event types of one tenant before using the next
//! tenant, so small runs need a single tenant key.

use std::{ops::Range, time::Duration};

use serde::Serialize;

/// Catalog event types the bench subscribes to (one per slot within a tenant).
pub const EVENT_TYPES: [&str; 25] = [
    "invoice.created",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.voided",
    "payment.succeeded",
    "payment.failed",
    "payment.refunded",
    "subscription.created",
    "subscription.updated",
    "subscription.cancelled",
    "subscription.renewed",
    "customer.created",
    "customer.updated",
    "customer.deleted",
    "user.registered",
    "user.updated",
    "user.deleted",
    "email.sent",
    "email.delivered",
    "email.bounced",
    "email.failed",
    "file.uploaded",
    "file.deleted",
    "import.completed",
    "export.completed",
];

/// Distinct event types used per tenant before the layout needs another tenant.
pub const TYPES_PER_TENANT: usize = EVENT_TYPES.len();

/// What load shape to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Every event matches exactly one subscription.
    Fanout1,
    /// Every event matches exactly ten subscriptions.
    Fanout10,
    /// Every event matches every subscription (1,000 by default).
    Broadcast,
    /// Fan-out 1, first all healthy, then with 10% of subscriptions answering
    /// 500 or hanging past their timeout.
    Unhealthy,
    /// Fan-out 1 with a slow receiver, first with one dispatcher, then two.
    Scale,
    /// Every event to one subscription (a tenant with one endpoint).
    Hot,
    /// One hot subscription takes nearly every event; 20 quiet ones get one
    /// event in [`NEIGHBOUR_EVERY`] each (about 1/s each at 3,000 events/s).
    Neighbours,
    /// Fan-out 1 over 100 subscriptions, first all healthy, then with 3 of
    /// them failing fast (500 at once, retries off).
    Failing,
    /// Fan-out 1 at a steady 500 events/s for 10 minutes; spawned services get
    /// `RETENTION=2m`, so cleanup runs all along (database size, latency per minute).
    Soak,
}

/// In `neighbours`, every this many events one goes to a quiet subscription
/// (taking turns), the rest to the hot one.
pub const NEIGHBOUR_EVERY: usize = 150;
/// Quiet subscriptions in `neighbours`.
pub const QUIET_NEIGHBOURS: usize = 20;
/// The subscriptions that fail in the second phase of `failing`.
pub const FAILING_SUBSCRIPTIONS: [usize; 3] = [9, 42, 75];

impl Scenario {
    /// Subscriptions each event matches.
    pub fn fanout(self, subscriptions: usize) -> usize {
        match self {
            Scenario::Fanout10 => 10,
            Scenario::Broadcast => subscriptions,
            Scenario::Fanout1
            | Scenario::Unhealthy
            | Scenario::Scale
            | Scenario::Hot
            | Scenario::Neighbours
            | Scenario::Failing
            | Scenario::Soak => 1,
        }
    }

    pub fn default_subscriptions(self) -> usize {
        match self {
            Scenario::Broadcast => 1_000,
            Scenario::Fanout1
            | Scenario::Fanout10
            | Scenario::Unhealthy
            | Scenario::Scale
            | Scenario::Failing
            | Scenario::Soak => 100,
            Scenario::Hot => 1,
            Scenario::Neighbours => 1 + QUIET_NEIGHBOURS,
        }
    }

    /// Events per phase.
    pub fn default_events(self) -> usize {
        match self {
            Scenario::Fanout1 | Scenario::Unhealthy | Scenario::Failing => 10_000,
            Scenario::Hot => 5_000,
            Scenario::Neighbours => 15_000,
            Scenario::Fanout10 => 2_000,
            Scenario::Broadcast => 10,
            Scenario::Scale => 5_000,
            Scenario::Soak => 300_000,
        }
    }

    /// Width of the per-window figures of the report.
    pub fn default_window(self) -> Duration {
        match self {
            Scenario::Soak => Duration::from_secs(60),
            _ => Duration::from_secs(5),
        }
    }

    /// How long the receiver holds each request by default.
    pub fn default_sink_delay(self) -> Duration {
        match self {
            Scenario::Scale => Duration::from_millis(20),
            _ => Duration::ZERO,
        }
    }

    /// The phases of one run, in order.
    pub fn phases(self) -> Vec<PhaseSpec> {
        let plain = |name: &str| PhaseSpec { name: name.to_owned(), breakage: Breakage::None, add_dispatcher: false };
        match self {
            Scenario::Fanout1 => vec![plain("fanout1")],
            Scenario::Fanout10 => vec![plain("fanout10")],
            Scenario::Broadcast => vec![plain("broadcast")],
            Scenario::Soak => vec![plain("soak")],
            Scenario::Unhealthy => vec![
                plain("baseline (all healthy)"),
                PhaseSpec {
                    name: "unhealthy (10% fail or hang)".into(),
                    breakage: Breakage::Unhealthy,
                    add_dispatcher: false,
                },
            ],
            Scenario::Scale => vec![
                plain("1 dispatcher"),
                PhaseSpec { name: "2 dispatchers".into(), breakage: Breakage::None, add_dispatcher: true },
            ],
            Scenario::Hot => vec![plain("hot")],
            Scenario::Neighbours => vec![plain("neighbours")],
            Scenario::Failing => vec![
                plain("baseline (all healthy)"),
                PhaseSpec { name: "failing (3 fail fast)".into(), breakage: Breakage::Failing, add_dispatcher: false },
            ],
        }
    }
}

/// What goes wrong before a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Breakage {
    None,
    /// 10% of subscriptions are switched to failing or hanging targets ([`unhealthy_role`]).
    Unhealthy,
    /// 3 subscriptions are switched to failing targets ([`failing_role`]).
    Failing,
}

impl Breakage {
    /// The role of subscription `sub` after this breakage.
    pub fn role(self, sub: usize) -> Role {
        match self {
            Breakage::None => Role::Ok,
            Breakage::Unhealthy => unhealthy_role(sub),
            Breakage::Failing => failing_role(sub),
        }
    }
}

/// The role of subscription `sub` in the second phase of `failing`.
pub fn failing_role(sub: usize) -> Role {
    if FAILING_SUBSCRIPTIONS.contains(&sub) {
        Role::Fail
    } else {
        Role::Ok
    }
}

/// One measured phase of a run.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseSpec {
    pub name: String,
    /// Subscriptions switched to failing (or hanging) targets first.
    pub breakage: Breakage,
    /// Start one more dispatcher before the phase.
    pub add_dispatcher: bool,
}

/// How a subscription's endpoint behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Answers 200 (after `--sink-delay`).
    Ok,
    /// Answers 500.
    Fail,
    /// Answers only after the subscription's timeout has passed.
    Hang,
}

impl Role {
    /// The first URL path segment of this role's endpoints.
    pub fn path(self) -> &'static str {
        match self {
            Role::Ok => "ok",
            Role::Fail => "fail",
            Role::Hang => "hang",
        }
    }

    pub fn from_path(segment: &str) -> Option<Self> {
        match segment {
            "ok" => Some(Role::Ok),
            "fail" => Some(Role::Fail),
            "hang" => Some(Role::Hang),
            _ => None,
        }
    }
}

/// The role of subscription `sub` in an unhealthy phase: one in 20 fails,
/// one in 20 hangs (10% in all, spread evenly over the slots).
pub fn unhealthy_role(sub: usize) -> Role {
    match sub % 20 {
        9 => Role::Fail,
        19 => Role::Hang,
        _ => Role::Ok,
    }
}

/// One (tenant, event type) pair and its subscriptions.
#[derive(Debug, Clone)]
pub struct Slot {
    /// Index into the run's tenant keys.
    pub tenant: usize,
    pub event_type: &'static str,
    pub subscriptions: Range<usize>,
}

/// Where every subscription and event goes.
#[derive(Debug, Clone)]
pub struct Layout {
    pub fanout: usize,
    pub slots: Vec<Slot>,
    pub tenants: usize,
    pub subscriptions: usize,
    /// `neighbours`: slot 0 is hot; every [`NEIGHBOUR_EVERY`]-th event goes
    /// to one of the other slots in turn.
    pub neighbours: bool,
}

impl Layout {
    /// Lays out `subscriptions` in slots of `fanout`.
    pub fn new(subscriptions: usize, fanout: usize) -> Result<Self, String> {
        if subscriptions == 0 || fanout == 0 {
            return Err("--subscriptions must be at least 1".into());
        }
        if !subscriptions.is_multiple_of(fanout) {
            return Err(format!("--subscriptions {subscriptions} must be a multiple of the fan-out {fanout}"));
        }
        let slot_count = subscriptions / fanout;
        let slots: Vec<Slot> = (0..slot_count)
            .map(|k| Slot {
                tenant: k / TYPES_PER_TENANT,
                event_type: EVENT_TYPES[k % TYPES_PER_TENANT],
                subscriptions: k * fanout..(k + 1) * fanout,
            })
            .collect();
        let tenants = slot_count.div_ceil(TYPES_PER_TENANT);
        Ok(Self { fanout, slots, tenants, subscriptions, neighbours: false })
    }

    /// The `neighbours` layout: one hot slot and `quiet` quiet ones, fan-out 1.
    pub fn neighbours(quiet: usize) -> Result<Self, String> {
        Ok(Self { neighbours: true, ..Self::new(1 + quiet, 1)? })
    }

    /// The slot event number `event` is published to.
    pub fn slot_of_event(&self, event: usize) -> &Slot {
        if self.neighbours && self.slots.len() > 1 {
            if event.is_multiple_of(NEIGHBOUR_EVERY) {
                return &self.slots[1 + (event / NEIGHBOUR_EVERY) % (self.slots.len() - 1)];
            }
            return &self.slots[0];
        }
        &self.slots[event % self.slots.len()]
    }

    /// The slot subscription number `sub` belongs to.
    pub fn slot_of_subscription(&self, sub: usize) -> &Slot {
        &self.slots[sub / self.fanout]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_matches_exactly_fanout_subscriptions_of_one_tenant_and_type() {
        let layout = Layout::new(100, 1).expect("layout");
        assert_eq!(layout.slots.len(), 100);
        assert_eq!(layout.tenants, 4);
        let slot = layout.slot_of_event(137);
        assert_eq!(slot.subscriptions, 37..38);
        assert_eq!(layout.slot_of_subscription(37).event_type, slot.event_type);

        let fanout10 = Layout::new(100, 10).expect("layout");
        assert_eq!(fanout10.tenants, 1);
        assert_eq!(fanout10.slot_of_event(3).subscriptions, 30..40);

        let broadcast = Layout::new(1000, 1000).expect("layout");
        assert_eq!(broadcast.slots.len(), 1);
        assert!(Layout::new(15, 10).is_err());
    }

    #[test]
    fn neighbours_send_most_events_to_the_hot_slot_and_the_rest_in_turn() {
        let layout = Layout::neighbours(20).expect("layout");
        assert_eq!(layout.subscriptions, 21);
        assert_eq!(layout.slot_of_event(1).subscriptions, 0..1);
        assert_eq!(layout.slot_of_event(0).subscriptions, 1..2);
        assert_eq!(layout.slot_of_event(NEIGHBOUR_EVERY).subscriptions, 2..3);
        let quiet = (0..NEIGHBOUR_EVERY * 20).filter(|&i| layout.slot_of_event(i).subscriptions.start > 0).count();
        assert_eq!(quiet, 20);
        assert_eq!((0..100).filter(|&s| failing_role(s) == Role::Fail).count(), 3);
    }

    #[test]
    fn a_tenth_of_subscriptions_are_unhealthy_half_failing_half_hanging() {
        let roles: Vec<Role> = (0..100).map(unhealthy_role).collect();
        assert_eq!(roles.iter().filter(|r| **r == Role::Fail).count(), 5);
        assert_eq!(roles.iter().filter(|r| **r == Role::Hang).count(), 5);
    }
}

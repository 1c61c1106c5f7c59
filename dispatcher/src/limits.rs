//! The per-subscription cap on attempts in flight in this process
//! (`DISPATCHER_PER_SUBSCRIPTION`), so one slow or hanging endpoint cannot
//! hold every slot of the dispatcher. An endpoint whose last attempts all
//! failed (errors, timeouts, hangs) gets a much smaller cap until it succeeds
//! again: it keeps being tried, but can no longer hold the slots healthy
//! endpoints need.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

/// Consecutive failed attempts after which a subscription counts as failing.
const FAILING_AFTER: u32 = 3;
/// The cap of a failing subscription.
const FAILING_CAP: usize = 2;

/// Attempts in flight per subscription, and which subscriptions are failing.
#[derive(Clone)]
pub struct SubscriptionSlots {
    cap: usize,
    counts: Arc<Mutex<HashMap<uuid::Uuid, usize>>>,
    /// Consecutive failed attempts, per subscription that has any.
    failures: Arc<Mutex<HashMap<uuid::Uuid, u32>>>,
}

impl SubscriptionSlots {
    pub fn new(cap: usize) -> Self {
        Self { cap: cap.max(1), counts: Arc::default(), failures: Arc::default() }
    }

    /// The cap of `subscription_id` now.
    fn cap_of(&self, subscription_id: &uuid::Uuid) -> usize {
        let failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match failures.get(subscription_id) {
            Some(&n) if n >= FAILING_AFTER => self.cap.min(FAILING_CAP),
            _ => self.cap,
        }
    }

    /// Notes how an attempt to `subscription_id` ended.
    pub fn record_outcome(&self, subscription_id: uuid::Uuid, succeeded: bool) {
        let mut failures = self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if succeeded {
            failures.remove(&subscription_id);
        } else {
            let n = failures.entry(subscription_id).or_insert(0);
            *n = n.saturating_add(1);
        }
    }

    /// Takes a slot for `subscription_id`, unless it already has its cap of attempts in flight.
    pub fn try_acquire(&self, subscription_id: uuid::Uuid) -> Option<SlotGuard> {
        let cap = self.cap_of(&subscription_id);
        let mut counts = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = counts.entry(subscription_id).or_insert(0);
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(SlotGuard { slots: self.clone(), subscription_id })
    }

    /// Attempts in flight for `subscription_id`.
    #[cfg(test)]
    fn in_flight(&self, subscription_id: uuid::Uuid) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        counts.get(&subscription_id).copied().unwrap_or(0)
    }
}

/// A taken slot; dropping it gives the slot back.
pub struct SlotGuard {
    slots: SubscriptionSlots,
    subscription_id: uuid::Uuid,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut counts = self.slots.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = counts.get_mut(&self.subscription_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.subscription_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_gets_at_most_cap_slots_and_gets_them_back() {
        let slots = SubscriptionSlots::new(2);
        let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        let first = slots.try_acquire(a).expect("slot 1");
        let _second = slots.try_acquire(a).expect("slot 2");
        assert!(slots.try_acquire(a).is_none());
        assert!(slots.try_acquire(b).is_some(), "other subscriptions are unaffected");
        drop(first);
        assert_eq!(slots.in_flight(a), 1);
        assert!(slots.try_acquire(a).is_some());
    }

    #[test]
    fn a_failing_subscription_gets_a_small_cap_until_it_succeeds() {
        let slots = SubscriptionSlots::new(8);
        let a = uuid::Uuid::now_v7();
        for _ in 0..FAILING_AFTER {
            slots.record_outcome(a, false);
        }
        let held: Vec<_> = (0..FAILING_CAP).map(|_| slots.try_acquire(a).expect("failing cap")).collect();
        assert!(slots.try_acquire(a).is_none(), "a failing subscription is held to {FAILING_CAP}");
        slots.record_outcome(a, true);
        assert!(slots.try_acquire(a).is_some(), "one success restores the full cap");
        drop(held);
    }
}

//! The per-subscription cap on attempts in flight in this process
//! (`DISPATCHER_PER_SUBSCRIPTION`), so one slow or hanging endpoint cannot
//! hold every slot of the dispatcher.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

/// Attempts in flight per subscription.
#[derive(Clone)]
pub struct SubscriptionSlots {
    cap: usize,
    counts: Arc<Mutex<HashMap<uuid::Uuid, usize>>>,
}

impl SubscriptionSlots {
    pub fn new(cap: usize) -> Self {
        Self { cap: cap.max(1), counts: Arc::default() }
    }

    /// Takes a slot for `subscription_id`, unless it already has `cap` attempts in flight.
    pub fn try_acquire(&self, subscription_id: uuid::Uuid) -> Option<SlotGuard> {
        let mut counts = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = counts.entry(subscription_id).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(SlotGuard { slots: self.clone(), subscription_id })
    }

    /// Attempts in flight for `subscription_id`.
    pub fn in_flight(&self, subscription_id: uuid::Uuid) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        counts.get(&subscription_id).copied().unwrap_or(0)
    }
}

/// A taken slot; dropping it gives the slot back.
pub struct SlotGuard {
    slots: SubscriptionSlots,
    subscription_id: uuid::Uuid,
}

impl SlotGuard {
    pub fn subscription_id(&self) -> uuid::Uuid {
        self.subscription_id
    }
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
}

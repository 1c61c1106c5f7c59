//! Flow control inside one dispatcher: attempts in flight are limited
//! globally (`DISPATCHER_CONCURRENCY`) and per subscription
//! (`DISPATCHER_PER_SUBSCRIPTION`); a message over a limit waits here, in its
//! subscription's FIFO queue, for a slot — never in the broker.
//!
//! Free slots go round-robin to the subscriptions that have waiting messages
//! and are under their cap, so a hot subscription can use every slot while
//! nobody else needs one, but a quiet one gets the next free slot. A
//! subscription whose last attempts in this process all failed gets a small
//! cap ([`FAILING_CAP`]) until it succeeds. When a circuit opens, the
//! subscription's waiters are told to park ([`Admission::Park`]).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use tokio::sync::oneshot;

use crate::metric_names;

/// Consecutive failed attempts after which a subscription counts as failing here.
const FAILING_AFTER: u32 = 3;
/// The cap of a failing subscription.
pub const FAILING_CAP: usize = 2;
/// The cap of a subscription with no success here yet (slow start): it
/// doubles with each success up to `DISPATCHER_PER_SUBSCRIPTION`. So an
/// endpoint that starts hanging cannot take most of the slots for a whole
/// timeout before its first failures are known (measured: 5 hanging endpoints
/// of 100 held all 256 slots for 2 s and the healthy ones waited).
pub const START_CAP: usize = 8;

/// What a waiting message gets.
pub enum Admission {
    /// A slot: make the attempt; dropping the slot frees it.
    Slot(Slot),
    /// The subscription's circuit opened while waiting: park the delivery.
    Park,
    /// It waited longer than the flow's `max_wait` by the time its turn came:
    /// put it back in the database rather than hold its message longer.
    Overdue,
}

struct Subscription {
    in_flight: usize,
    /// Slow start: the cap so far, doubled by each success.
    credit: usize,
    waiting: VecDeque<(Instant, oneshot::Sender<Admission>)>,
    /// Consecutive failed attempts in this process.
    failures: u32,
    /// In the round-robin ring.
    queued: bool,
}

impl Default for Subscription {
    fn default() -> Self {
        Self { in_flight: 0, credit: START_CAP, waiting: VecDeque::new(), failures: 0, queued: false }
    }
}

struct State {
    free: usize,
    subscriptions: HashMap<uuid::Uuid, Subscription>,
    /// Subscriptions with waiters, in turn order.
    ring: VecDeque<uuid::Uuid>,
    closed: bool,
}

/// The slots of one dispatcher. Cheap to clone.
#[derive(Clone)]
pub struct Flow {
    state: Arc<Mutex<State>>,
    cap: usize,
    max_wait: Duration,
}

impl Flow {
    /// `total` slots, at most `per_subscription` of them for one subscription.
    /// A waiter whose turn comes after more than `max_wait` gets
    /// [`Admission::Overdue`] instead of a slot (checked when its
    /// subscription's turn comes, so no timer per waiting message).
    pub fn new(total: usize, per_subscription: usize, max_wait: Duration) -> Self {
        let state = State { free: total.max(1), subscriptions: HashMap::new(), ring: VecDeque::new(), closed: false };
        Self { state: Arc::new(Mutex::new(state)), cap: per_subscription.max(1), max_wait }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn cap_of(&self, sub: &Subscription) -> usize {
        if sub.failures >= FAILING_AFTER {
            self.cap.min(FAILING_CAP)
        } else {
            self.cap.min(sub.credit)
        }
    }

    /// Waits for a slot for `subscription_id` (FIFO within the subscription,
    /// round-robin between subscriptions). `None` once the flow is closed
    /// (shutdown): the caller gives the message back.
    pub async fn acquire(&self, subscription_id: uuid::Uuid) -> Option<Admission> {
        let receiver = {
            let mut state = self.lock();
            if state.closed {
                return None;
            }
            let free = state.free;
            let sub = state.subscriptions.entry(subscription_id).or_default();
            let cap = self.cap_of(sub);
            if free > 0 && sub.in_flight < cap && sub.waiting.is_empty() {
                sub.in_flight += 1;
                state.free -= 1;
                metrics::histogram!(metric_names::SLOT_WAIT).record(0.0);
                return Some(Admission::Slot(Slot { flow: self.clone(), subscription_id }));
            }
            let (tx, rx) = oneshot::channel();
            sub.waiting.push_back((Instant::now(), tx));
            metrics::gauge!(metric_names::WAITING).increment(1.0);
            if !sub.queued && sub.in_flight < cap {
                sub.queued = true;
                state.ring.push_back(subscription_id);
            }
            self.hand_out(&mut state);
            rx
        };
        receiver.await.ok()
    }

    /// Notes how an attempt to `subscription_id` ended (for the failing cap).
    pub fn record_outcome(&self, subscription_id: uuid::Uuid, succeeded: bool) {
        let mut state = self.lock();
        let Some(sub) = state.subscriptions.get_mut(&subscription_id) else { return };
        sub.failures = if succeeded { 0 } else { sub.failures.saturating_add(1) };
        if succeeded {
            sub.credit = sub.credit.saturating_mul(2).min(self.cap);
        }
        if succeeded && !sub.queued && !sub.waiting.is_empty() && sub.in_flight < self.cap_of(sub) {
            sub.queued = true;
            state.ring.push_back(subscription_id);
            self.hand_out(&mut state);
        }
    }

    /// Tells every message waiting for `subscription_id` to park; returns how many.
    pub fn park_waiters(&self, subscription_id: uuid::Uuid) -> usize {
        let waiters: Vec<_> = {
            let mut state = self.lock();
            match state.subscriptions.get_mut(&subscription_id) {
                Some(sub) => sub.waiting.drain(..).collect(),
                None => Vec::new(),
            }
        };
        metrics::gauge!(metric_names::WAITING).decrement(waiters.len() as f64);
        let count = waiters.len();
        for (_, waiter) in waiters {
            let _ = waiter.send(Admission::Park);
        }
        count
    }

    /// Stops admitting: every waiter (and every later caller) gets `None`.
    pub fn close(&self) {
        let waiters: Vec<_> = {
            let mut state = self.lock();
            state.closed = true;
            state.ring.clear();
            state.subscriptions.values_mut().flat_map(|sub| sub.waiting.drain(..)).collect()
        };
        metrics::gauge!(metric_names::WAITING).decrement(waiters.len() as f64);
        drop(waiters);
    }

    /// Attempts in flight for `subscription_id`.
    pub fn in_flight(&self, subscription_id: uuid::Uuid) -> usize {
        self.lock().subscriptions.get(&subscription_id).map_or(0, |sub| sub.in_flight)
    }

    /// Gives a slot back and hands free slots to waiters, round-robin.
    fn release(&self, subscription_id: uuid::Uuid) {
        let mut state = self.lock();
        state.free += 1;
        if let Some(sub) = state.subscriptions.get_mut(&subscription_id) {
            sub.in_flight = sub.in_flight.saturating_sub(1);
            let cap = self.cap_of(sub);
            if !sub.queued && !sub.waiting.is_empty() && sub.in_flight < cap {
                sub.queued = true;
                state.ring.push_back(subscription_id);
            }
        }
        self.hand_out(&mut state);
        let idle = state
            .subscriptions
            .get(&subscription_id)
            .is_some_and(|sub| sub.in_flight == 0 && sub.waiting.is_empty() && sub.failures == 0);
        if idle {
            state.subscriptions.remove(&subscription_id);
        }
    }

    /// While slots are free, gives one to the next subscription in the ring.
    fn hand_out(&self, state: &mut State) {
        while state.free > 0 {
            let Some(id) = state.ring.pop_front() else { return };
            let Some(sub) = state.subscriptions.get_mut(&id) else { continue };
            sub.queued = false;
            let cap = self.cap_of(sub);
            let mut granted = false;
            while sub.in_flight < cap {
                let Some((since, waiter)) = sub.waiting.pop_front() else { break };
                metrics::gauge!(metric_names::WAITING).decrement(1.0);
                if waiter.is_closed() {
                    continue;
                }
                if since.elapsed() > self.max_wait {
                    let _ = waiter.send(Admission::Overdue);
                    continue;
                }
                sub.in_flight += 1;
                let slot = Slot { flow: self.clone(), subscription_id: id };
                match waiter.send(Admission::Slot(slot)) {
                    Ok(()) => {
                        metrics::histogram!(metric_names::SLOT_WAIT).record(since.elapsed().as_secs_f64());
                        granted = true;
                        break;
                    }
                    Err(Admission::Slot(slot)) => {
                        // The waiter went away just now: undo without re-entering the lock.
                        std::mem::forget(slot);
                        sub.in_flight -= 1;
                    }
                    Err(Admission::Park | Admission::Overdue) => {}
                }
            }
            if granted {
                state.free -= 1;
            }
            if !sub.waiting.is_empty() && sub.in_flight < cap {
                sub.queued = true;
                state.ring.push_back(id);
            }
        }
    }
}

/// A slot for one attempt; dropping it frees the slot.
pub struct Slot {
    flow: Flow,
    subscription_id: uuid::Uuid,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.flow.release(self.subscription_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(admission: Option<Admission>) -> Slot {
        match admission {
            Some(Admission::Slot(slot)) => slot,
            _ => panic!("expected a slot"),
        }
    }

    #[tokio::test]
    async fn a_subscription_gets_at_most_its_cap_and_waiters_get_freed_slots() {
        let flow = Flow::new(8, 2, Duration::from_secs(60));
        let a = uuid::Uuid::now_v7();
        let first = slot(flow.acquire(a).await);
        let _second = slot(flow.acquire(a).await);
        let waiting = tokio::spawn({
            let flow = flow.clone();
            async move { flow.acquire(a).await.is_some() }
        });
        tokio::task::yield_now().await;
        assert_eq!(flow.in_flight(a), 2);
        drop(first);
        assert!(waiting.await.expect("join"), "the waiter got the freed slot");
        assert_eq!(flow.in_flight(a), 1, "and gave it back when done");
    }

    #[tokio::test]
    async fn free_slots_go_round_robin_between_waiting_subscriptions() {
        let flow = Flow::new(1, 10, Duration::from_secs(60));
        let (hot, quiet) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        let held = slot(flow.acquire(hot).await);
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, sub) in [hot, hot, hot, quiet].into_iter().enumerate() {
            let (flow, order) = (flow.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let admitted = slot(flow.acquire(sub).await);
                order.lock().expect("lock").push(i);
                drop(admitted);
            }));
            tokio::task::yield_now().await;
        }
        drop(held);
        for task in tasks {
            task.await.expect("join");
        }
        let order = order.lock().expect("lock").clone();
        assert_eq!(order[..2], [0, 3], "the quiet subscription went second, not last: {order:?}");
    }

    #[tokio::test]
    async fn waiters_park_when_told_and_get_nothing_after_close() {
        let flow = Flow::new(1, 1, Duration::from_secs(60));
        let a = uuid::Uuid::now_v7();
        let _held = slot(flow.acquire(a).await);
        let parked = tokio::spawn({
            let flow = flow.clone();
            async move { matches!(flow.acquire(a).await, Some(Admission::Park)) }
        });
        tokio::task::yield_now().await;
        assert_eq!(flow.park_waiters(a), 1);
        assert!(parked.await.expect("join"));
        flow.close();
        assert!(flow.acquire(a).await.is_none());
    }

    #[tokio::test]
    async fn a_failing_subscription_gets_a_small_cap_until_it_succeeds() {
        let flow = Flow::new(16, 8, Duration::from_secs(60));
        let a = uuid::Uuid::now_v7();
        let held: Vec<_> = (0..FAILING_CAP).map(|_| ()).collect();
        let mut slots = Vec::new();
        for _ in held {
            slots.push(slot(flow.acquire(a).await));
        }
        for _ in 0..FAILING_AFTER {
            flow.record_outcome(a, false);
        }
        let blocked = tokio::time::timeout(std::time::Duration::from_millis(50), flow.acquire(a)).await;
        assert!(blocked.is_err(), "a failing subscription is held to {FAILING_CAP}");
        flow.record_outcome(a, true);
        assert!(flow.acquire(a).await.is_some(), "one success restores the full cap");
    }

    #[tokio::test]
    async fn a_waiter_whose_turn_comes_too_late_is_told_it_is_overdue() {
        let flow = Flow::new(1, 1, Duration::from_millis(20));
        let a = uuid::Uuid::now_v7();
        let held = slot(flow.acquire(a).await);
        let late = tokio::spawn({
            let flow = flow.clone();
            async move { matches!(flow.acquire(a).await, Some(Admission::Overdue)) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let timely = tokio::spawn({
            let flow = flow.clone();
            async move { matches!(flow.acquire(a).await, Some(Admission::Slot(_))) }
        });
        tokio::task::yield_now().await;
        drop(held);
        assert!(late.await.expect("join"), "the waiter past max_wait got Overdue, not the slot");
        assert!(timely.await.expect("join"), "the freed slot went to the next waiter in time");
    }

    #[tokio::test]
    async fn a_new_subscription_starts_with_a_few_slots_and_doubles_them_with_each_success() {
        let flow = Flow::new(64, 32, Duration::from_secs(60));
        let a = uuid::Uuid::now_v7();
        let mut held: Vec<Slot> = Vec::new();
        for _ in 0..START_CAP {
            held.push(slot(flow.acquire(a).await));
        }
        let blocked = tokio::time::timeout(Duration::from_millis(50), flow.acquire(a)).await;
        assert!(blocked.is_err(), "no success yet: {START_CAP} slots");
        flow.record_outcome(a, true);
        for _ in 0..START_CAP {
            held.push(slot(flow.acquire(a).await));
        }
        assert_eq!(flow.in_flight(a), 2 * START_CAP, "one success doubled the cap");
        flow.record_outcome(a, true);
        flow.record_outcome(a, true);
        while held.len() < 32 {
            held.push(slot(flow.acquire(a).await));
        }
        let capped = tokio::time::timeout(Duration::from_millis(50), flow.acquire(a)).await;
        assert!(capped.is_err(), "never past the configured cap");
    }
}

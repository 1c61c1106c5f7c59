//! The byte budget of publishing: how many bytes of publish bodies ingest
//! holds at once, over HTTP and AMQP together (`INGEST_MAX_INFLIGHT_BYTES`).
//!
//! A publish takes its body's size from the budget before the body is read
//! (HTTP: from `Content-Length`, or the largest allowed body when the length
//! is unknown) or as soon as the message is in (AMQP), and gives it back when
//! it has been answered or acked. Over budget, HTTP answers 503 with
//! `Retry-After` at once, while the AMQP consumer waits for room before it
//! takes the next message, so the broker's prefetch holds the rest.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes of publish bodies held at once; cheap to clone (one budget per process).
#[derive(Clone, Debug)]
pub struct ByteBudget {
    bytes: Arc<Semaphore>,
    limit: usize,
}

/// Bytes taken from the budget; given back on drop.
#[derive(Debug)]
pub struct BudgetGuard {
    permit: Option<OwnedSemaphorePermit>,
    budget: ByteBudget,
}

impl ByteBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        Self { bytes: Arc::new(Semaphore::new(limit)), limit }
    }

    /// Takes `bytes` now, or `None` when they do not fit (HTTP: answer 503).
    pub fn try_take(&self, bytes: usize) -> Option<BudgetGuard> {
        let permit = self.bytes.clone().try_acquire_many_owned(self.permits(bytes)).ok()?;
        self.record();
        Some(BudgetGuard { permit: Some(permit), budget: self.clone() })
    }

    /// Waits until `bytes` fit, then takes them (AMQP: consumption pauses).
    pub async fn take(&self, bytes: usize) -> BudgetGuard {
        // The semaphore is never closed; if it were, a pass beats a hang.
        let permit = self.bytes.clone().acquire_many_owned(self.permits(bytes)).await.ok();
        self.record();
        BudgetGuard { permit, budget: self.clone() }
    }

    /// Bytes held right now.
    pub fn in_use(&self) -> usize {
        self.limit - self.bytes.available_permits()
    }

    /// A request never takes more than the whole budget (and at least one byte),
    /// so a single body can always go through an idle budget.
    fn permits(&self, bytes: usize) -> u32 {
        u32::try_from(bytes.clamp(1, self.limit)).unwrap_or(u32::MAX)
    }

    fn record(&self) {
        metrics::gauge!(crate::metric_names::INFLIGHT_BYTES).set(self.in_use() as f64);
    }
}

impl Drop for BudgetGuard {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.budget.record();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_given_back_when_the_guard_goes() {
        let budget = ByteBudget::new(1000);
        let a = budget.try_take(600).expect("fits");
        assert!(budget.try_take(600).is_none(), "over budget");
        let b = budget.try_take(400).expect("fits exactly");
        assert_eq!(budget.in_use(), 1000);
        drop(a);
        drop(b);
        assert_eq!(budget.in_use(), 0);
        let whole = budget.try_take(5000).expect("a body larger than the budget takes all of it");
        assert_eq!(budget.in_use(), 1000);
        drop(whole);
    }

    #[tokio::test]
    async fn a_waiting_take_proceeds_once_bytes_come_back() {
        let budget = ByteBudget::new(100);
        let held = budget.try_take(100).expect("fits");
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.take(50).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "took bytes the budget did not have");
        drop(held);
        let _taken = waiter.await.expect("waiter");
        assert_eq!(budget.in_use(), 50);
    }
}

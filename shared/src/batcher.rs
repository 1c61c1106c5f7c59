//! Micro-batching: concurrent callers hand in one request each; a worker
//! takes whatever is waiting and runs it as one database statement. While a
//! batch is in flight, new requests pile up and form the next one, so batches
//! grow with load. With no `linger` a lone request pays no extra wait; work
//! nobody waits on (the dispatcher's records, ingest's `enqueued` marks)
//! lingers a few milliseconds so that a steady trickle still shares its
//! transactions. Ingest's publishing and the dispatcher's claims and records
//! all go through this one loop.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::sync::{mpsc, oneshot, Semaphore};

/// How a [`Batcher`] forms and runs its batches.
#[derive(Debug, Clone)]
pub struct BatchSettings {
    /// Most requests in one batch.
    pub max_batch: usize,
    /// Most batches in flight at once (each usually holds a pool connection).
    pub lanes: usize,
    /// Requests waiting for a batch before callers wait to hand theirs over.
    pub queue_capacity: usize,
    /// How long a batch that is not full waits for more requests after its
    /// first (zero: it runs at once). Only for requests no user waits on.
    pub linger: Duration,
    /// Records the size of every batch.
    pub size_histogram: metrics::Histogram,
}

/// A batching front for an async `Vec<Req> -> Vec<Resp>` function.
pub struct Batcher<Req, Resp> {
    tx: mpsc::Sender<(Req, oneshot::Sender<Resp>)>,
}

impl<Req, Resp> Clone for Batcher<Req, Resp> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone() }
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Batcher<Req, Resp> {
    /// Starts the worker. `run` must answer every request, in order; a
    /// request it leaves unanswered gets `None` from [`Batcher::call`]. The
    /// worker ends when every `Batcher` handle is dropped.
    pub fn start<F, Fut>(settings: BatchSettings, run: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Resp>> + Send + 'static,
    {
        let BatchSettings { max_batch, lanes, queue_capacity, linger, size_histogram } = settings;
        let max_batch = max_batch.max(1);
        let (tx, mut rx) = mpsc::channel::<(Req, oneshot::Sender<Resp>)>(queue_capacity.max(1));
        let run = Arc::new(run);
        let lanes = Arc::new(Semaphore::new(lanes.max(1)));
        tokio::spawn(async move {
            let mut waiting = Vec::with_capacity(max_batch);
            loop {
                // Wait for a free lane first: requests keep arriving meanwhile.
                let Ok(lane) = lanes.clone().acquire_owned().await else { return };
                if rx.recv_many(&mut waiting, max_batch).await == 0 {
                    return;
                }
                if !linger.is_zero() {
                    let deadline = tokio::time::Instant::now() + linger;
                    while waiting.len() < max_batch {
                        let room = max_batch - waiting.len();
                        match tokio::time::timeout_at(deadline, rx.recv_many(&mut waiting, room)).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                }
                let (requests, replies): (Vec<Req>, Vec<oneshot::Sender<Resp>>) = waiting.drain(..).unzip();
                size_histogram.record(requests.len() as f64);
                let run = run.clone();
                tokio::spawn(async move {
                    let responses = run(requests).await;
                    for (response, reply) in responses.into_iter().zip(replies) {
                        // A caller that went away needs no answer; its request was handled all the same.
                        let _ = reply.send(response);
                    }
                    drop(lane);
                });
            }
        });
        Self { tx }
    }

    /// Submits one request and waits for its answer; `None` if the worker is gone.
    pub async fn call(&self, request: Req) -> Option<Resp> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((request, reply)).await.ok()?;
        answer.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_caller_gets_its_own_answer() {
        let settings = BatchSettings {
            max_batch: 16,
            lanes: 2,
            queue_capacity: 64,
            linger: Duration::ZERO,
            size_histogram: metrics::Histogram::noop(),
        };
        let doubler = Batcher::start(settings, |xs: Vec<u32>| async move { xs.into_iter().map(|x| x * 2).collect() });
        let calls = (0..200u32).map(|i| {
            let doubler = doubler.clone();
            tokio::spawn(async move { (i, doubler.call(i).await) })
        });
        for call in futures_util::future::join_all(calls).await {
            let (i, answer) = call.expect("join");
            assert_eq!(answer, Some(i * 2));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lingering_batch_gathers_what_arrives_within_its_linger_up_to_its_size() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let settings = BatchSettings {
            max_batch: 8,
            lanes: 1,
            queue_capacity: 64,
            linger: Duration::from_secs(2),
            size_histogram: metrics::Histogram::noop(),
        };
        let seen = sizes.clone();
        let echo = Batcher::start(settings, move |xs: Vec<u32>| {
            seen.lock().expect("sizes").push(xs.len());
            async move { xs }
        });
        // Twelve requests trickling in 5 ms apart: without a linger each would
        // find the worker idle and go alone.
        let mut calls = Vec::new();
        for i in 0..12u32 {
            let echo = echo.clone();
            calls.push(tokio::spawn(async move { echo.call(i).await }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for (i, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.expect("join"), Some(i as u32));
        }
        assert_eq!(*sizes.lock().expect("sizes"), vec![8, 4]);
    }
}

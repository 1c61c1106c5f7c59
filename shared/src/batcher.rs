//! Micro-batching: concurrent callers hand in one request each; a worker
//! takes whatever is waiting (never sleeping to fill a batch) and runs it as
//! one database statement. While a batch is in flight, new requests pile up
//! and form the next one, so batches grow with load and a lone request pays
//! no extra wait. Ingest's publishing and the dispatcher's claims and
//! records all go through this one loop.

use std::{future::Future, sync::Arc};

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
        let BatchSettings { max_batch, lanes, queue_capacity, size_histogram } = settings;
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
        let settings =
            BatchSettings { max_batch: 16, lanes: 2, queue_capacity: 64, size_histogram: metrics::Histogram::noop() };
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
}

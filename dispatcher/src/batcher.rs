//! Micro-batching: concurrent callers hand in one request each; a worker
//! takes whatever is waiting (never sleeping to fill a batch) and runs it as
//! one database statement. While a batch is in flight, new requests pile up
//! and form the next one, so batches grow with load and a lone request pays
//! no extra wait.

use std::{future::Future, sync::Arc};

use tokio::sync::{mpsc, oneshot, Semaphore};

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
    /// Starts the worker: batches of at most `max_batch`, at most `lanes` in
    /// flight at once. `run` must answer every request, in order.
    pub fn start<F, Fut>(name: &'static str, max_batch: usize, lanes: usize, run: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Resp>> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<(Req, oneshot::Sender<Resp>)>(max_batch * 4);
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
                metrics::histogram!(crate::metric_names::BATCH_SIZE, "batch" => name).record(requests.len() as f64);
                let run = run.clone();
                tokio::spawn(async move {
                    let responses = run(requests).await;
                    for (response, reply) in responses.into_iter().zip(replies) {
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
        let doubler =
            Batcher::start("test", 16, 2, |xs: Vec<u32>| async move { xs.into_iter().map(|x| x * 2).collect() });
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

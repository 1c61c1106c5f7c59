//! Group commit: concurrent publishes share fan-out transactions, with exactly
//! the answers and rows one-at-a-time publishing would give.

use std::time::Instant;

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::spawn_app;

/// An observation, not a test of speed: publishes `EVENTS` events over HTTP,
/// `CONCURRENCY` at a time, at fan-out 1, and prints the rate.
/// `cargo test -p ingest --test api publish_rate_observation -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "an observation of speed; run by hand"]
async fn publish_rate_observation() {
    const EVENTS: usize = 3_000;
    const CONCURRENCY: usize = 64;
    let app = spawn_app().await;
    app.insert_subscription("t1", "http://127.0.0.1:9/hook", &["invoice.created"], true).await;
    let publisher = app.publisher_key().await;
    let started = Instant::now();
    let mut statuses = Vec::with_capacity(EVENTS);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers = (0..CONCURRENCY).map(|_| {
        let next = next.clone();
        let (app, publisher) = (&app, &publisher);
        async move {
            let mut seen = Vec::new();
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= EVENTS {
                    return seen;
                }
                let body = json!({"event_type": "invoice.created", "event_data": {"n": n}, "tenant_id": "t1"});
                let (status, _) = app.post("/api/v1/events", publisher, &body).await;
                seen.push(status);
            }
        }
    });
    for seen in join_all(workers).await {
        statuses.extend(seen);
    }
    let elapsed = started.elapsed();
    assert!(statuses.iter().all(|s| *s == StatusCode::ACCEPTED));
    eprintln!(
        "observed: {EVENTS} publishes, {CONCURRENCY} concurrent, in {elapsed:?} = {:.0} events/s",
        EVENTS as f64 / elapsed.as_secs_f64()
    );
}

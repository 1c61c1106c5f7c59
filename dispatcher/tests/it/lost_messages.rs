//! The broker loses messages (a purge, a lost node, at-most-once
//! dead-lettering): the database is the source of truth, and the reconciler
//! queues every unfinished delivery again.

use std::time::Duration;

use lapin::options::QueuePurgeOptions;
use shared::testing::{amqp_url, eventually};

use crate::helpers::{spawn_env_with, Receiver, Reply, SubSpec, TestEnv};

/// Purges a queue of this environment's prefix; returns how many messages went.
async fn purge(queue: &str) -> u32 {
    let connection = shared::amqp::connect(&amqp_url()).await.expect("broker");
    let channel = connection.create_channel().await.expect("channel");
    let purged = channel.queue_purge(queue.into(), QueuePurgeOptions::default()).await.expect("purge");
    let _ = connection.close(200, "purged".into()).await;
    purged
}

async fn count_where(env: &TestEnv, condition: &str) -> i64 {
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = env.conn().await;
    let row: Count = diesel::sql_query(format!("SELECT count(*) AS n FROM deliveries WHERE {condition}"))
        .get_result(&mut conn)
        .await
        .expect("count");
    row.n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purging_the_dispatch_and_retry_queues_mid_run_still_ends_every_delivery_succeeded() {
    let overrides = [
        // Long enough that every first attempt is recorded before the first
        // retry is due, even on a loaded machine.
        ("RETRY_SCHEDULE", "15s"),
        ("RETRY_JITTER", "0"),
        ("RECONCILE_GRACE", "1s"),
        ("RECONCILE_INTERVAL", "250ms"),
        // Every first attempt fails: a circuit that opened would park the
        // deliveries whose message came after it opened (tests/it/circuit.rs),
        // which is not what this test is about.
        ("CIRCUIT_FAILURE_THRESHOLD", "10000"),
    ];
    let env = spawn_env_with(&overrides).await;
    // Every first attempt fails, every later one succeeds.
    let receiver =
        Receiver::start(|request, _| Reply::status(if request.header("x-webhook-attempt") == "1" { 500 } else { 200 }))
            .await;
    env.subscription(SubSpec::new(&receiver.url("/a"))).await;
    env.subscription(SubSpec::new(&receiver.url("/b"))).await;
    const EVENTS: usize = 8;
    for n in 0..EVENTS {
        env.publish("t1", "invoice.created", serde_json::json!({"n": n})).await;
    }
    let total = (EVENTS * 2) as i64;
    let topology = &env.ingest.state.topology;

    // No dispatcher yet: every first message waits on the dispatch queue, and is lost.
    let queued =
        eventually(Duration::from_secs(10), || async { (count_where(&env, "enqueued").await == total).then_some(()) })
            .await;
    assert!(queued.is_some(), "the first messages were not all queued");
    // A message carries one attempt or several (up to 16): 16 attempts went in 1 to 16 messages.
    let purged = i64::from(purge(&topology.dispatch_queue()).await);
    assert!((1..=total).contains(&purged), "purged {purged} messages for {total} attempts");

    let _dispatcher = env.start_dispatcher(&overrides).await;
    // The reconciler queues them again; every first attempt fails and the
    // retry waits 15 s in its row (retries wait in the database)...
    let retrying = eventually(Duration::from_secs(90), || async {
        (count_where(&env, "status = 'retrying' AND attempt_count = 1").await == total).then_some(())
    })
    .await;
    assert!(retrying.is_some(), "the lost first messages were not queued again");
    // ...whatever sits on the dispatch queue is lost too.
    purge(&topology.dispatch_queue()).await;
    assert_eq!(count_where(&env, "status = 'succeeded'").await, 0, "a retry ran before the purge");

    env.wait_succeeded(total, Duration::from_secs(60)).await;
    assert_eq!(count_where(&env, "attempt_count = 2 AND status = 'succeeded'").await, total);
    assert_eq!(count_where(&env, "requeued_at IS NOT NULL").await, total, "the reconciler did not do it");
    let counts = receiver.count_by_delivery();
    assert_eq!(counts.len(), total as usize);
    assert!(counts.values().all(|n| *n == 2), "each delivery is sent twice, no more: {counts:?}");
}

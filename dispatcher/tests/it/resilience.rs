//! Crashes, broker outages and shutdown: nothing is lost.

use std::time::Duration;

use shared::{
    models::delivery::DeliveryStatus,
    testing::{amqp_url, eventually, holds_for, TcpProxy},
};

use crate::helpers::{signal, spawn_env, wait_exit, KillOnDrop, Receiver, SubSpec, TestEnv};

/// Publishes `events` events to `subs` fresh subscriptions on `receiver`; returns every delivery id.
async fn publish_batch(
    env: &TestEnv,
    receiver: &Receiver,
    subs: usize,
    events: usize,
    timeout: i32,
) -> Vec<uuid::Uuid> {
    for i in 0..subs {
        env.subscription(SubSpec::new(&receiver.url(&format!("/hook/{i}"))).timeout(timeout)).await;
    }
    let mut ids = Vec::new();
    for n in 0..events {
        let event_id = env.publish("t1", "invoice.created", serde_json::json!({"n": n})).await;
        ids.extend(env.deliveries_of(&event_id).await.into_iter().map(|d| d.id));
    }
    ids
}

/// Asserts every delivery succeeded and reached the receiver at least once.
async fn assert_all_delivered(env: &TestEnv, receiver: &Receiver, ids: &[uuid::Uuid]) {
    env.wait_succeeded(ids.len() as i64, Duration::from_secs(90)).await;
    let counts = receiver.count_by_delivery();
    for id in ids {
        assert!(counts.get(&id.to_string()).is_some_and(|n| *n >= 1), "delivery {id} never arrived");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_killed_mid_batch_loses_nothing_once_another_starts() {
    let env = spawn_env().await;
    let receiver = Receiver::slow(200, Duration::from_millis(200)).await;
    let ids = publish_batch(&env, &receiver, 4, 15, 2).await;
    let limits = [("DISPATCHER_CONCURRENCY", "8")];

    let mut first = KillOnDrop(env.spawn_dispatcher_binary(&limits));
    receiver.wait_count(12, Duration::from_secs(30)).await;
    signal(&first.0, "-KILL");
    wait_exit(&mut first.0, Duration::from_secs(10)).await;
    let before = env.count_status("succeeded").await;
    assert!(before < ids.len() as i64, "the kill came too late to test anything ({before} done)");

    let _second = KillOnDrop(env.spawn_dispatcher_binary(&limits));
    assert_all_delivered(&env, &receiver, &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_whose_broker_connection_is_cut_delivers_everything_after_it_returns() {
    let env = spawn_env().await;
    let receiver = Receiver::slow(200, Duration::from_millis(150)).await;
    let ids = publish_batch(&env, &receiver, 4, 10, 5).await;
    let (proxy, through_proxy) = TcpProxy::for_amqp_url(&amqp_url()).await.expect("proxy");
    let dispatcher = env.start_dispatcher(&[("AMQP_URL", &through_proxy), ("DISPATCHER_CONCURRENCY", "4")]).await;

    receiver.wait_count(8, Duration::from_secs(30)).await;
    proxy.cut();
    let noticed =
        eventually(Duration::from_secs(20), || async { (!dispatcher.context.broker.is_connected()).then_some(()) })
            .await;
    assert!(noticed.is_some(), "the dispatcher never noticed the cut");
    let during = env.count_status("succeeded").await;
    assert!(during < ids.len() as i64, "the cut came too late to test anything ({during} done)");
    proxy.restore();
    assert_all_delivered(&env, &receiver, &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_attempts_finish_and_record_then_exits_zero() {
    let env = spawn_env().await;
    let receiver = Receiver::slow(200, Duration::from_secs(2)).await;
    let ids = publish_batch(&env, &receiver, 1, 12, 10).await;
    let mut child = KillOnDrop(
        env.spawn_dispatcher_binary(&[("DISPATCHER_CONCURRENCY", "4"), ("DISPATCHER_PER_SUBSCRIPTION", "4")]),
    );
    receiver.wait_count(4, Duration::from_secs(30)).await;
    signal(&child.0, "-TERM");
    let status = wait_exit(&mut child.0, Duration::from_secs(40)).await;
    assert!(status.success(), "exit status {status:?}");

    // Every attempt that had started was answered, recorded and acked before the exit.
    let started = receiver.count_by_delivery();
    assert_eq!(started.len(), 4, "nothing new started after SIGTERM");
    for delivery_id in started.keys() {
        let row = env.delivery(delivery_id.parse().expect("uuid")).await;
        assert_eq!((row.status, row.attempt_count), (DeliveryStatus::Succeeded, 1), "{delivery_id}");
    }
    assert_eq!(env.count_status("pending").await, 8, "the rest wait, untouched");

    // What it had prefetched went back to the queue: a new dispatcher sends the rest.
    let _next = env.start_dispatcher(&[]).await;
    assert_all_delivered(&env, &receiver, &ids).await;
    assert!(receiver.count_by_delivery().values().all(|n| *n == 1), "nothing was sent twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_whose_outcome_cannot_be_recorded_is_made_again_once_the_database_is_back() {
    let env = spawn_env().await;
    let receiver = Receiver::slow(200, Duration::from_millis(800)).await;
    env.subscription(SubSpec::new(&receiver.url("/hook")).timeout(2)).await;
    let database = url::Url::parse(&env.config.database_url).expect("database url");
    let target = tokio::net::lookup_host((database.host_str().expect("host"), database.port().unwrap_or(5432)))
        .await
        .expect("resolve database")
        .next()
        .expect("database address");
    let proxy = TcpProxy::start(target).await.expect("proxy");
    let mut through_proxy = database.clone();
    through_proxy.set_host(Some("127.0.0.1")).expect("host");
    through_proxy.set_port(Some(proxy.addr.port())).expect("port");
    let _dispatcher = env.start_dispatcher(&[("DATABASE_URL", through_proxy.as_str())]).await;

    let delivery = env.publish_one().await;
    receiver.wait_count(1, Duration::from_secs(20)).await;
    // The attempt is in flight; the database goes away before its outcome is recorded.
    proxy.cut();
    // Longer than recording retries (~4 s) before the message is requeued.
    let unrecorded = holds_for(Duration::from_secs(6), || async {
        env.delivery(delivery.id).await.status == DeliveryStatus::Pending
    })
    .await;
    assert!(unrecorded, "nothing could be recorded meanwhile");
    proxy.restore();

    let row = env.wait_status(delivery.id, DeliveryStatus::Succeeded, Duration::from_secs(60)).await;
    assert_eq!(row.attempt_count, 1);
    assert_eq!(env.attempts(delivery.id).await.len(), 1);
    assert!(receiver.count() >= 2, "the unrecorded attempt was made again (at least once)");
}

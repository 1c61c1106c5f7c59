//! Claims: duplicate messages are not sent twice, dispatchers share work
//! without duplicates, one subscription cannot take every slot, and a message
//! carrying several attempts is acked once all of them are recorded.

use std::time::{Duration, Instant};

use shared::{
    amqp::{encode_dispatch, DispatchMessage},
    models::delivery::{DeliveryStatus, QueuedAttempt},
    testing::eventually,
};

use crate::helpers::{spawn_env, Receiver, SubSpec, TestEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicated_or_redelivered_dispatch_message_is_not_sent_twice() {
    let env = spawn_env().await;
    let receiver = Receiver::slow(200, Duration::from_millis(300)).await;
    env.subscription(SubSpec::new(&receiver.url("/hook"))).await;
    let dispatcher = env.start_dispatcher(&[]).await;
    // A duplicate is dropped (stale) or, while the first is in flight, parked
    // until that claim ends (when the outcome is recorded it is nothing more).
    let handled =
        || shared_stat(&dispatcher.context.stats.stale) + shared_stat(&dispatcher.context.stats.duplicates_parked);

    // The same message twice while the first is in flight (ingest queued one; here is another)…
    let delivery = env.publish_one().await;
    let subscription_id = Some(delivery.subscription_id);
    env.publish_dispatch_message(&DispatchMessage::Attempt { delivery_id: delivery.id, attempt: 1, subscription_id })
        .await;
    env.wait_status(delivery.id, DeliveryStatus::Succeeded, Duration::from_secs(20)).await;
    let dropped = eventually(Duration::from_secs(20), || async { (handled() >= 1).then_some(()) }).await;
    assert!(dropped.is_some(), "the duplicate was never handled");
    // …and once more after the attempt finished, as a redelivery would be
    // (in the form of messages queued before they named their subscription).
    env.publish_dispatch_message(&DispatchMessage::Attempt {
        delivery_id: delivery.id,
        attempt: 1,
        subscription_id: None,
    })
    .await;
    let dropped = eventually(Duration::from_secs(20), || async { (handled() >= 2).then_some(()) }).await;
    assert!(dropped.is_some(), "the redelivery was never handled");

    assert_eq!(receiver.count(), 1);
    assert_eq!(env.attempts(delivery.id).await.len(), 1);
    let row = env.delivery(delivery.id).await;
    assert_eq!((row.next_attempt_at, row.enqueued), (None, true), "nothing left waiting: {row:?}");
}

fn shared_stat(counter: &std::sync::atomic::AtomicU64) -> u64 {
    dispatcher::stats::Stats::get(counter)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatchers_share_300_deliveries_without_duplicates() {
    let env = spawn_env().await;
    let receiver = Receiver::always(200).await;
    for i in 0..10 {
        env.subscription(SubSpec::new(&receiver.url(&format!("/hook/{i}")))).await;
    }
    let first = env.start_dispatcher(&[]).await;
    let second = env.start_dispatcher(&[]).await;

    let started = Instant::now();
    for n in 0..30 {
        env.publish("t1", "invoice.created", serde_json::json!({"n": n})).await;
    }
    env.wait_succeeded(300, Duration::from_secs(120)).await;
    let elapsed = started.elapsed();
    println!(
        "300 deliveries by two dispatchers in {elapsed:?} ({:.0}/s, publishing included)",
        300.0 / elapsed.as_secs_f64()
    );

    let counts = receiver.count_by_delivery();
    assert_eq!(counts.len(), 300, "every delivery arrived");
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "sent more than once: {duplicated:?}");
    assert_eq!(receiver.count(), 300);
    let (a, b) = (shared_stat(&first.context.stats.attempts), shared_stat(&second.context.stats.attempts));
    assert_eq!(a + b, 300);
    assert!(a > 0 && b > 0, "both dispatchers worked: {a} and {b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscription_never_has_more_than_its_cap_in_flight() {
    let env = spawn_env().await;
    let receiver = Receiver::start(|request, _| match request.path.as_str() {
        "/slow" => crate::helpers::Reply::status(200).after(Duration::from_millis(400)),
        _ => crate::helpers::Reply::status(200),
    })
    .await;
    env.subscription(SubSpec::new(&receiver.url("/slow"))).await;
    env.subscription(SubSpec::new(&receiver.url("/fast"))).await;
    let dispatcher =
        env.start_dispatcher(&[("DISPATCHER_CONCURRENCY", "8"), ("DISPATCHER_PER_SUBSCRIPTION", "2")]).await;

    for n in 0..8 {
        env.publish("t1", "invoice.created", serde_json::json!({"n": n})).await;
    }
    env.wait_succeeded(16, Duration::from_secs(60)).await;
    assert_eq!(receiver.max_concurrency("/slow"), 2, "the slow endpoint had its cap and no more");
    assert!(shared_stat(&dispatcher.context.stats.waited) > 0, "messages over the cap waited for a slot");
    assert_eq!(shared_stat(&dispatcher.context.stats.parked), 0, "in the dispatcher, not through the broker");
    assert_eq!(receiver.count(), 16, "waiting never sends or counts an attempt");
    assert!(receiver.count_by_delivery().values().all(|n| *n == 1));
}

/// Messages ready on the dispatch queue, taken off it (basic.get, no ack),
/// over a connection of the test's own.
async fn take_ready_dispatch_messages(env: &TestEnv) -> usize {
    use lapin::options::BasicGetOptions;
    let connection = shared::amqp::connect(&shared::testing::amqp_url()).await.expect("direct broker connection");
    let channel = connection.create_channel().await.expect("channel");
    let queue = env.ingest.state.topology.dispatch_queue();
    let mut taken = 0;
    while channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true }).await.expect("basic.get").is_some()
    {
        taken += 1;
    }
    let _ = connection.close(200, "taken".into()).await;
    taken
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_carrying_several_attempts_delivers_each_once_and_is_acked_after_the_last() {
    let env = spawn_env().await;
    let fast = Receiver::always(200).await;
    let slow = Receiver::slow(200, Duration::from_millis(800)).await;
    for i in 0..4 {
        env.subscription(SubSpec::new(&fast.url(&format!("/fast/{i}")))).await;
    }
    env.subscription(SubSpec::new(&slow.url("/slow"))).await;
    let event_id = env.publish("t1", "invoice.created", serde_json::json!({"n": 1})).await;
    let deliveries = env.deliveries_of(&event_id).await;
    assert_eq!(deliveries.len(), 5);
    // What ingest queued for them goes; one message with all five attempts replaces it.
    let marked = eventually(Duration::from_secs(20), || async {
        let rows = env.deliveries_of(&event_id).await;
        rows.iter().all(|d| d.enqueued).then_some(())
    })
    .await;
    assert!(marked.is_some(), "ingest never marked its messages confirmed");
    assert!(take_ready_dispatch_messages(&env).await >= 1);
    let attempts: Vec<QueuedAttempt> = deliveries
        .iter()
        .map(|d| QueuedAttempt { delivery_id: d.id, attempt: 1, subscription_id: d.subscription_id })
        .collect();
    env.publish_dispatch_body(&encode_dispatch(&attempts).expect("encodes")).await;

    let dispatcher = env.start_dispatcher(&[]).await;
    env.wait_succeeded(5, Duration::from_secs(30)).await;
    assert_eq!(fast.count(), 4);
    assert_eq!(slow.count(), 1);
    for delivery in &deliveries {
        assert_eq!(env.attempts(delivery.id).await.len(), 1, "one attempt each");
    }
    // Acked: after the dispatcher stops (its channel closed, so an unacked
    // message would be ready again), nothing is left on the queue.
    assert!(dispatcher.shutdown(Duration::from_secs(10)).await, "the dispatcher drained");
    assert_eq!(take_ready_dispatch_messages(&env).await, 0, "the message went back to the queue: never acked");
}

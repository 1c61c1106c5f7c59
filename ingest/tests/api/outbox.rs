//! The outbox relay: deliveries the broker never confirmed are queued later,
//! exactly once, however many relays run.

use std::{collections::HashMap, time::Duration};

use ingest::metric_names::OUTBOX_RELAYED;
use reqwest::{Method, StatusCode};
use serde_json::json;
use shared::{
    amqp::DispatchMessage,
    testing::{amqp_url, eventually, holds_for, TcpProxy},
};

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

fn relay_of(app: &TestApp) -> ingest::publishing::outbox::OutboxRelay {
    ingest::publishing::outbox::OutboxRelay {
        broker: app.ingest.state.broker.clone(),
        topology: (*app.ingest.state.topology).clone(),
        pool: app.ingest.state.pool.clone(),
        interval: Duration::from_millis(10),
        grace: app.config.outbox_grace,
    }
}

/// How often each delivery id was queued, and every attempt number seen.
fn count_by_delivery(messages: &[DispatchMessage]) -> HashMap<uuid::Uuid, usize> {
    let mut counts = HashMap::new();
    for DispatchMessage::Attempt { delivery_id, .. } in messages {
        *counts.entry(*delivery_id).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_while_the_broker_is_unreachable_answers_202_and_queues_everything_once_it_returns() {
    let (proxy, through_proxy) = TcpProxy::for_amqp_url(&amqp_url()).await.expect("proxy");
    let app =
        spawn_app_with(&[("AMQP_URL", &through_proxy), ("OUTBOX_INTERVAL_MS", "100"), ("OUTBOX_GRACE_MS", "300")])
            .await;
    app.insert_subscription("t1", "http://127.0.0.1:9/a", &["*"], true).await;
    app.insert_subscription("t1", "http://127.0.0.1:9/b", &["billing.*"], true).await;
    let publisher = app.publisher_key().await;

    proxy.cut();
    let unready = eventually(Duration::from_secs(10), || async {
        let (status, body) = app.request(Method::GET, "/readyz", None, None).await;
        (status == StatusCode::SERVICE_UNAVAILABLE && body["broker"] == "unavailable").then_some(())
    })
    .await;
    assert!(unready.is_some(), "/readyz kept answering 200 without a broker");

    const EVENTS: usize = 20;
    for n in 0..EVENTS {
        let body = json!({"event_type": "invoice.created", "event_data": {"n": n}, "tenant_id": "t1"});
        let (status, answer) = app.post("/api/v1/events", &publisher, &body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "publishing must not need the broker: {answer}");
        assert_eq!(answer["deliveries"], 2);
    }
    // Longer than the relay's grace and interval: nothing can be queued.
    let nothing_queued =
        holds_for(Duration::from_secs(1), || async { app.drain_dispatch_queue().await.is_empty() }).await;
    assert!(nothing_queued, "something was queued without a broker");
    let deliveries = app.deliveries_of_tenant("t1").await;
    assert_eq!(deliveries.len(), EVENTS * 2);
    assert!(deliveries.iter().all(|d| !d.enqueued), "a delivery was marked enqueued without a broker");
    assert_eq!(relay_of(&app).record_backlog().await.expect("backlog"), (EVENTS * 2) as i64);
    let (status, _) = app.request(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    let relayed_before = app.metric(OUTBOX_RELAYED).await;
    proxy.restore();
    let ready = eventually(Duration::from_secs(20), || async {
        let (status, _) = app.request(Method::GET, "/readyz", None, None).await;
        (status == StatusCode::OK).then_some(())
    })
    .await;
    assert!(ready.is_some(), "the broker connection did not come back");
    let queued = eventually(Duration::from_secs(30), || async {
        app.deliveries_of_tenant("t1").await.iter().all(|d| d.enqueued).then_some(())
    })
    .await;
    assert!(queued.is_some(), "the outbox relay did not queue every delivery");
    assert_eq!(relay_of(&app).record_backlog().await.expect("backlog"), 0, "a backlog left in this database");

    let messages = app.collect_dispatch_messages(EVENTS * 2).await;
    let counts = count_by_delivery(&messages);
    assert_eq!(messages.len(), EVENTS * 2, "duplicates or losses: {counts:?}");
    for delivery in &deliveries {
        assert_eq!(
            counts.get(&delivery.id),
            Some(&1),
            "delivery {} queued {:?} times",
            delivery.id,
            counts.get(&delivery.id)
        );
    }
    assert!(messages.iter().all(|DispatchMessage::Attempt { attempt, .. }| *attempt == 1));

    // The AMQP consumer subscribed again on the new connection.
    let bus = app.event_bus().await;
    let event_id = bus.publish("invoice.paid", json!({"invoice_id": "inv_2"}), "t1").await.expect("published");
    let consumed = eventually(Duration::from_secs(20), || async {
        (app.deliveries_of("t1", &event_id).await.len() == 2).then_some(())
    })
    .await;
    assert!(consumed.is_some(), "the event consumer did not resubscribe after the reconnect");
    // The relay of this app queued all of them (the counter is the process's:
    // other tests can only add to it).
    let relayed = app.metric(OUTBOX_RELAYED).await - relayed_before;
    assert!(relayed >= (EVENTS * 2) as f64, "{OUTBOX_RELAYED} rose by {relayed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_outbox_relays_queue_each_unconfirmed_delivery_exactly_once() {
    let app = spawn_app_with(&[("OUTBOX_INTERVAL_MS", "20")]).await;
    app.insert_subscriptions("t1", 1_200, &["*"]).await;
    let publisher = app.publisher_key().await;
    let body = json!({"event_type": "invoice.created", "event_data": {}, "tenant_id": "t1"});
    let (status, answer) = app.post("/api/v1/events", &publisher, &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert!(app.wait_all_enqueued("t1").await, "the first publish's deliveries were not all queued");
    assert_eq!(app.collect_dispatch_messages(1_200).await.len(), 1_200);

    // A second ingest on the same database and prefix, so two relays (plus two
    // more run directly here) compete for the same rows.
    let second = ingest::server::start(app.config.clone(), 1).await.expect("second ingest starts");
    second.state.broker.wait_session(Duration::from_secs(10)).await.expect("second ingest connects");
    let (stop_extra, stopped) = tokio::sync::watch::channel(false);
    let extra: Vec<_> = (0..2).map(|_| relay_of(&app).start(stopped.clone())).collect();

    // As if every confirm had been lost: unqueued and past the grace period.
    let reset = app.sql("UPDATE deliveries SET enqueued = false, created_at = now() - interval '1 minute'").await;
    assert_eq!(reset, 1_200);

    // Waits on progress: the relays stop only when every row is queued or they stall.
    assert!(app.wait_all_enqueued("t1").await, "the relays stopped queueing before every delivery was queued");
    let messages = app.collect_dispatch_messages(1_200).await;
    let counts = count_by_delivery(&messages);
    let duplicated = counts.values().filter(|&&n| n > 1).count();
    assert_eq!(duplicated, 0, "{duplicated} deliveries were queued more than once");
    assert_eq!(counts.len(), 1_200, "some deliveries were never queued");
    let _ = stop_extra.send(true);
    for task in extra {
        let _ = task.await;
    }
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_sends_a_due_retry_straight_to_dispatch_and_leaves_the_rest() {
    let app = spawn_app().await;
    app.insert_subscriptions("t1", 4, &["*"]).await;
    let publisher = app.publisher_key().await;
    let (status, _) = app
        .post(
            "/api/v1/events",
            &publisher,
            &json!({"event_type": "invoice.created", "event_data": {}, "tenant_id": "t1", "event_id": "evt_r"}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let deliveries = eventually(Duration::from_secs(15), || async {
        let deliveries = app.deliveries_of("t1", "evt_r").await;
        deliveries.iter().all(|d| d.enqueued).then_some(deliveries)
    })
    .await
    .expect("queued");
    assert_eq!(app.collect_dispatch_messages(4).await.len(), 4);
    let [due, later, finished, queued] = [0, 1, 2, 3].map(|i| deliveries[i].id);
    let due_subscription = deliveries[0].subscription_id;

    let old = "created_at = now() - interval '1 minute'";
    app.sql(&format!(
        "UPDATE deliveries SET status = 'retrying', attempt_count = 2, next_attempt_at = now() - interval '1 minute', enqueued = false, {old} WHERE id = '{due}'"
    ))
    .await;
    app.sql(&format!(
        "UPDATE deliveries SET status = 'retrying', attempt_count = 1, next_attempt_at = now() + interval '1 hour', enqueued = false, {old} WHERE id = '{later}'"
    ))
    .await;
    app.sql(&format!("UPDATE deliveries SET status = 'succeeded', attempt_count = 1, enqueued = false, {old} WHERE id = '{finished}'"))
        .await;
    app.sql(&format!("UPDATE deliveries SET {old} WHERE id = '{queued}'")).await;

    relay_of(&app).run_once().await.expect("relay round");
    let messages = app.collect_dispatch_messages(1).await;
    assert_eq!(
        messages,
        vec![DispatchMessage::Attempt { delivery_id: due, attempt: 3, subscription_id: Some(due_subscription) }]
    );
    let after: HashMap<_, _> = app.deliveries_of("t1", "evt_r").await.into_iter().map(|d| (d.id, d.enqueued)).collect();
    assert!(after[&due]);
    assert!(!after[&later], "a retry that is not due yet was queued");
    assert!(!after[&finished], "a finished delivery was queued");

    // Due and unqueued, but a dispatcher holds a live claim on it: its message
    // arrived (marking it enqueued lost the race for the row lock), so the
    // relay must not send a second one.
    app.sql(&format!(
        "UPDATE deliveries SET next_attempt_at = now() - interval '1 minute', claimed_until = now() + interval '1 minute' WHERE id = '{later}'"
    ))
    .await;
    assert_eq!(relay_of(&app).run_once().await.expect("relay round"), 0, "a claimed delivery was leased");
    assert!(app.drain_dispatch_queue().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marking_a_delivery_enqueued_is_a_hot_update() {
    use diesel::QueryableByName;
    use diesel_async::{AsyncConnection, RunQueryDsl};
    #[derive(QueryableByName)]
    struct Updates {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        updated: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        hot: i64,
    }
    let app = spawn_app().await;
    app.insert_subscription("t1", "http://127.0.0.1:9/a", &["*"], true).await;
    let publisher = app.publisher_key().await;
    let body = json!({"event_type": "invoice.created", "event_data": {}, "tenant_id": "t1"});
    let (status, answer) = app.post("/api/v1/events", &publisher, &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert!(app.wait_all_enqueued("t1").await);
    app.sql("UPDATE deliveries SET enqueued = false").await;
    let delivery = app.deliveries_of_tenant("t1").await.remove(0);

    // The transaction's own statistics count its updates, and which were HOT
    // (no new index entries): an index naming `enqueued`, in its columns or
    // its predicate, would make this mark cost an insertion into every index.
    let mut conn = shared::db::conn(&app.ingest.state.pool).await.expect("conn");
    let updates = conn
        .transaction(async |conn| {
            let queued = shared::models::delivery::QueuedAttempt {
                delivery_id: delivery.id,
                attempt: 1,
                subscription_id: delivery.subscription_id,
            };
            let marked = shared::models::delivery::mark_enqueued(conn, &[queued]).await?;
            assert_eq!(marked, 1);
            diesel::sql_query(
                "SELECT pg_stat_get_xact_tuples_updated('deliveries'::regclass) AS updated, \
                        pg_stat_get_xact_tuples_hot_updated('deliveries'::regclass) AS hot",
            )
            .get_result::<Updates>(conn)
            .await
        })
        .await
        .expect("mark");
    assert_eq!((updates.updated, updates.hot), (1, 1), "marking enqueued was not a HOT update");
}

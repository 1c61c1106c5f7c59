//! The reconciler: unfinished deliveries whose message was lost are queued
//! again, once, however many reconcilers run; finished, claimed or not yet
//! overdue ones are left alone; its query stays index-driven.

use std::{collections::HashMap, time::Duration};

use serde_json::json;
use shared::amqp::DispatchMessage;

use crate::helpers::{spawn_app_with, TestApp};

fn reconciler_of(app: &TestApp, grace: Duration) -> ingest::publishing::reconciler::Reconciler {
    ingest::publishing::reconciler::Reconciler {
        broker: app.ingest.state.broker.clone(),
        topology: (*app.ingest.state.topology).clone(),
        pool: app.ingest.state.pool.clone(),
        interval: Duration::from_millis(10),
        grace,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overdue_deliveries_whose_messages_were_lost_are_queued_again_once_by_several_reconcilers() {
    // The app's own reconciler stays out of the way: one round at start, then an hour.
    let app = spawn_app_with(&[("RECONCILE_INTERVAL", "1h")]).await;
    app.insert_subscription("t1", "http://127.0.0.1:9/a", &["*"], true).await;
    let publisher = app.publisher_key().await;
    const EVENTS: usize = 12;
    for n in 0..EVENTS {
        let body = json!({"event_type": "invoice.created", "event_data": {"n": n}, "tenant_id": "t1"});
        let (status, _) = app.post("/api/v1/events", &publisher, &body).await;
        assert_eq!(status, reqwest::StatusCode::ACCEPTED);
    }
    // Queued and confirmed, then lost: the queue is emptied behind the database's back.
    assert_eq!(app.collect_dispatch_messages(EVENTS).await.len(), EVENTS);
    assert!(app.deliveries_of_tenant("t1").await.iter().all(|d| d.enqueued));

    let mut ids: Vec<uuid::Uuid> = app.deliveries_of_tenant("t1").await.iter().map(|d| d.id).collect();
    ids.sort();
    let id_list = |ids: &[uuid::Uuid]| ids.iter().map(|id| format!("'{id}'")).collect::<Vec<_>>().join(",");
    // All overdue by an hour; a few of them must be left alone all the same.
    app.sql("UPDATE deliveries SET created_at = now() - interval '1 hour'").await;
    let (finished, claimed, not_due, retrying) = (&ids[0..2], &ids[2..3], &ids[3..4], &ids[4..6]);
    app.sql(&format!(
        "UPDATE deliveries SET status = 'succeeded', attempt_count = 1 WHERE id IN ({})",
        id_list(finished)
    ))
    .await;
    app.sql(&format!(
        "UPDATE deliveries SET claimed_until = now() + interval '1 hour' WHERE id IN ({})",
        id_list(claimed)
    ))
    .await;
    app.sql(&format!(
        "UPDATE deliveries SET status = 'retrying', attempt_count = 1, next_attempt_at = now() + interval '1 hour' \
         WHERE id IN ({})",
        id_list(not_due)
    ))
    .await;
    app.sql(&format!(
        "UPDATE deliveries SET status = 'retrying', attempt_count = 2, next_attempt_at = now() - interval '10 minutes' \
         WHERE id IN ({})",
        id_list(retrying)
    ))
    .await;

    // Three reconcilers race for the same rows.
    let grace = Duration::from_secs(60);
    let rounds = futures_util::future::join_all((0..3).map(|_| {
        let reconciler = reconciler_of(&app, grace);
        async move { reconciler.run_once().await.expect("reconciler round") }
    }))
    .await;
    let expected = EVENTS - finished.len() - claimed.len() - not_due.len();
    assert_eq!(rounds.iter().sum::<usize>(), expected, "rounds took {rounds:?}");

    let messages = app.collect_dispatch_messages(expected).await;
    let mut seen: HashMap<uuid::Uuid, Vec<i32>> = HashMap::new();
    for DispatchMessage::Attempt { delivery_id, attempt, .. } in &messages {
        seen.entry(*delivery_id).or_default().push(*attempt);
    }
    assert_eq!(seen.len(), expected, "{messages:?}");
    assert!(seen.values().all(|attempts| attempts.len() == 1), "a delivery was queued twice: {seen:?}");
    for id in finished.iter().chain(claimed).chain(not_due) {
        assert!(!seen.contains_key(id), "delivery {id} should have been left alone");
    }
    for id in retrying {
        assert_eq!(seen[id], vec![3], "a retrying delivery is queued for its next attempt");
    }
    for id in &ids[6..] {
        assert_eq!(seen[id], vec![1]);
    }

    // Within the grace period nothing is queued again.
    assert_eq!(reconciler_of(&app, grace).run_once().await.expect("round"), 0);
    assert!(app.drain_dispatch_queue().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconcilers_the_relays_and_retentions_queries_use_their_indexes() {
    let app = spawn_app_with(&[("RECONCILE_INTERVAL", "1h"), ("RETENTION", "0")]).await;
    let subscription = app.insert_subscription("t1", "http://127.0.0.1:9/a", &["*"], true).await;
    // Many finished deliveries and events, a few unfinished ones; then statistics, as in production.
    app.sql(&format!(
        "WITH e AS (INSERT INTO events (id, tenant_id, event_id, event_type, payload, source, created_at) \
           SELECT gen_random_uuid(), 't1', 'evt_' || n, 'invoice.created', '{{}}', 'test', \
                  now() - n * interval '1 second' \
           FROM generate_series(1, 20000) AS n RETURNING id, event_id) \
         INSERT INTO deliveries (id, tenant_id, subscription_id, event_ref, event_id, event_type, status, attempt_count) \
         SELECT gen_random_uuid(), 't1', '{subscription}', e.id, e.event_id, 'invoice.created', \
                CASE WHEN e.event_id LIKE '%00' THEN 'pending' ELSE 'succeeded' END, 1 FROM e"
    ))
    .await;
    app.sql("ANALYZE").await;
    let reconcile = explain(
        &app,
        ingest::publishing::reconciler::TAKE_OVERDUE_SQL.replace("$1", "interval '10 minutes'").replace("$2", "500"),
    )
    .await;
    assert!(reconcile.contains("deliveries_due_idx"), "the reconciler scans deliveries:\n{reconcile}");
    let relay = explain(
        &app,
        ingest::publishing::outbox::LEASE_SQL
            .replace("$1", "interval '5 seconds'")
            .replace("$2", "500")
            .replace("$3", "interval '30 seconds'"),
    )
    .await;
    assert!(relay.contains("deliveries_due_idx"), "the outbox relay scans deliveries:\n{relay}");
    let retention =
        explain(&app, ingest::retention::DELETE_BATCH_SQL.replace("$1", "interval '1 hour'").replace("$2", "500"))
            .await;
    assert!(retention.contains("events_created_at_idx"), "retention scans events:\n{retention}");
    assert!(retention.contains("deliveries_event_ref_idx"), "retention scans deliveries:\n{retention}");
    assert!(!retention.contains("Seq Scan on deliveries"), "retention scans deliveries:\n{retention}");
}

/// The plan PostgreSQL picks for `sql`.
async fn explain(app: &TestApp, sql: String) -> String {
    use diesel::QueryableByName;
    use diesel_async::RunQueryDsl;
    #[derive(QueryableByName)]
    struct Line {
        #[diesel(sql_type = diesel::sql_types::Text, column_name = "QUERY PLAN")]
        line: String,
    }
    let mut conn = shared::db::conn(&app.ingest.state.pool).await.expect("conn");
    let lines: Vec<Line> = diesel::sql_query(format!("EXPLAIN {sql}")).load(&mut conn).await.expect("explain");
    lines.into_iter().map(|l| l.line).collect::<Vec<_>>().join("\n")
}

//! Retention: old events go with their deliveries and attempts; events with
//! unfinished deliveries and recent events stay; soft-deleted subscriptions are
//! purged once their last delivery is gone; a running job keeps what it may
//! still need, and finished jobs go after the same period.

use std::time::Duration;

use diesel::{sql_types::BigInt, QueryableByName};
use diesel_async::RunQueryDsl;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{spawn_app_with, TestApp};

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    let mut conn = shared::db::conn(&app.ingest.state.pool).await.expect("conn");
    let row: Count = diesel::sql_query(sql).get_result(&mut conn).await.expect(sql);
    row.n
}

/// Publishes one event for `t1`; returns its event id.
async fn publish(app: &TestApp, token: &str, event_id: &str) -> String {
    let body = json!({"event_type": "invoice.created", "event_data": {}, "tenant_id": "t1", "event_id": event_id});
    let (status, answer) = app.post("/api/v1/events", token, &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    event_id.to_owned()
}

/// Makes an event (and its deliveries and attempts) look `age` old, with every
/// delivery in `status` and one attempt row each.
async fn age_event(app: &TestApp, event_id: &str, age: &str, status: &str) {
    app.sql(&format!("UPDATE events SET created_at = now() - interval '{age}' WHERE event_id = '{event_id}'")).await;
    app.sql(&format!(
        "UPDATE deliveries SET created_at = now() - interval '{age}', status = '{status}', attempt_count = 1 \
         WHERE event_id = '{event_id}'"
    ))
    .await;
    app.sql(&format!(
        "INSERT INTO delivery_attempts (id, delivery_id, attempt, outcome, status_code, duration_ms, created_at) \
         SELECT gen_random_uuid(), id, 1, 'http_status', 500, 12, now() - interval '{age}' \
         FROM deliveries WHERE event_id = '{event_id}'"
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_events_with_their_deliveries_and_attempts_and_keeps_unfinished_ones() {
    // The app's own retention is off; the test runs rounds itself.
    let app = spawn_app_with(&[("RETENTION", "0"), ("RECONCILE_INTERVAL", "1h")]).await;
    let token = app.publisher_key().await;
    let live = app.insert_subscription("t1", "http://127.0.0.1:9/live", &["*"], true).await;
    let old_pending = publish(&app, &token, "evt_old_pending").await;
    let recent = publish(&app, &token, "evt_recent").await;
    // Only the next three events reach this subscription.
    let doomed = app.insert_subscription("t1", "http://127.0.0.1:9/doomed", &["*"], true).await;
    let old_done = publish(&app, &token, "evt_old_done").await;
    let old_failed = publish(&app, &token, "evt_old_failed").await;
    let old_retrying = publish(&app, &token, "evt_old_retrying").await;
    age_event(&app, &old_done, "3 hours", "succeeded").await;
    age_event(&app, &old_failed, "2 hours", "failed").await;
    age_event(&app, &old_pending, "3 hours", "succeeded").await;
    age_event(&app, &old_retrying, "3 hours", "failed").await;
    age_event(&app, &recent, "10 minutes", "succeeded").await;
    // One delivery of each of these two is not finished: the whole event stays.
    // (The old retrying one is the deleted subscription's: it keeps it too.)
    app.sql(&format!(
        "UPDATE deliveries SET status = 'pending' WHERE event_id = '{old_pending}' AND subscription_id = '{live}'"
    ))
    .await;
    app.sql(&format!(
        "UPDATE deliveries SET status = 'retrying', next_attempt_at = now() + interval '1 hour' \
         WHERE event_id = '{old_retrying}' AND subscription_id = '{doomed}'"
    ))
    .await;
    // A deleted subscription whose deliveries all go now, and one that never had any.
    let (status, _) = app
        .request(
            reqwest::Method::DELETE,
            &format!("/api/v1/webhooks/subscriptions/{doomed}"),
            Some(&app.tenant_key("t1").await),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let never_used = app.insert_subscription("t1", "http://127.0.0.1:9/unused", &["*"], true).await;
    app.sql(&format!("UPDATE subscriptions SET deleted_at = now() WHERE id = '{never_used}'")).await;
    assert_eq!(count(&app, "SELECT count(*) AS n FROM deliveries").await, 8);

    let retention =
        ingest::retention::Retention { pool: app.ingest.state.pool.clone(), retention: Duration::from_secs(3600) };
    let purged = retention.run_once().await.expect("retention round");
    assert_eq!(purged.events, 2, "{purged:?}");
    assert_eq!(purged.deliveries, 4, "{purged:?}");
    assert_eq!(purged.subscriptions, 1, "only the subscription without deliveries goes: {purged:?}");

    let events_left = |id: &str| format!("SELECT count(*) AS n FROM events WHERE event_id = '{id}'");
    for gone in [&old_done, &old_failed] {
        assert_eq!(count(&app, &events_left(gone)).await, 0, "{gone} was kept");
        let deliveries = format!("SELECT count(*) AS n FROM deliveries WHERE event_id = '{gone}'");
        assert_eq!(count(&app, &deliveries).await, 0, "deliveries of {gone} were kept");
    }
    for (kept, deliveries) in [(&old_pending, 1), (&old_retrying, 2), (&recent, 1)] {
        assert_eq!(count(&app, &events_left(kept)).await, 1, "{kept} was deleted");
        let left = format!("SELECT count(*) AS n FROM deliveries WHERE event_id = '{kept}'");
        assert_eq!(count(&app, &left).await, deliveries, "deliveries of {kept} were deleted");
    }
    let orphans = "SELECT count(*) AS n FROM delivery_attempts a \
                   WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.id = a.delivery_id)";
    assert_eq!(count(&app, orphans).await, 0);
    assert_eq!(count(&app, "SELECT count(*) AS n FROM delivery_attempts").await, 4, "attempts of kept deliveries stay");
    let subscription = |id: uuid::Uuid| format!("SELECT count(*) AS n FROM subscriptions WHERE id = '{id}'");
    assert_eq!(count(&app, &subscription(never_used)).await, 0);
    assert_eq!(count(&app, &subscription(doomed)).await, 1, "it still has an unfinished delivery");
    assert_eq!(count(&app, &subscription(live)).await, 1);

    // Its last delivery finishes: the event goes, and then the subscription.
    app.sql(&format!("UPDATE deliveries SET status = 'failed' WHERE event_id = '{old_retrying}'")).await;
    let purged = retention.run_once().await.expect("retention round");
    assert_eq!((purged.events, purged.deliveries, purged.subscriptions), (1, 2, 1), "{purged:?}");
    assert_eq!(count(&app, &subscription(doomed)).await, 0);
    assert_eq!(count(&app, &events_left(&old_pending)).await, 1, "the pending event is still kept");

    // Nothing left to do: a round deletes nothing.
    assert_eq!(retention.run_once().await.expect("round"), ingest::retention::Purged::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_keeps_the_events_it_may_still_need_and_finished_jobs_go_in_time() {
    let app = spawn_app_with(&[("RETENTION", "0"), ("RECONCILE_INTERVAL", "1h")]).await;
    let token = app.publisher_key().await;
    app.insert_subscription("t1", "http://127.0.0.1:9/t1", &["*"], true).await;
    app.insert_subscription("t2", "http://127.0.0.1:9/t2", &["*"], true).await;
    let t1_old = publish(&app, &token, "evt_t1_old").await;
    let body = json!({"event_type": "invoice.created", "event_data": {}, "tenant_id": "t2", "event_id": "evt_t2_old"});
    let (status, answer) = app.post("/api/v1/events", &token, &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    age_event(&app, &t1_old, "3 hours", "failed").await;
    age_event(&app, "evt_t2_old", "3 hours", "failed").await;
    // t1 runs a bulk retry over a window that holds its old event; two jobs
    // finished long ago and a moment ago. The running job is leased to a runner
    // of another process, so this app's runners leave it alone (were it run
    // here, its retry would make the old delivery unfinished, which retention
    // keeps for that reason instead).
    let job = |status: &str, finished: &str| {
        format!(
            "INSERT INTO jobs (id, tenant_id, kind, status, since, until, finished_at, lease_owner, lease_until) \
             VALUES (gen_random_uuid(), 't1', 'retry', '{status}', now() - interval '4 hours', \
                     now() - interval '1 hour', {finished}, gen_random_uuid(), now() + interval '1 hour')"
        )
    };
    app.sql(&job("running", "NULL")).await;
    app.sql(&job("completed", "now() - interval '2 hours'")).await;
    app.sql(&job("failed", "now() - interval '5 minutes'")).await;

    let retention =
        ingest::retention::Retention { pool: app.ingest.state.pool.clone(), retention: Duration::from_secs(3600) };
    let purged = retention.run_once().await.expect("retention round");
    assert_eq!((purged.events, purged.jobs), (1, 1), "{purged:?}");
    let left = |id: &str| format!("SELECT count(*) AS n FROM events WHERE event_id = '{id}'");
    assert_eq!(count(&app, &left("evt_t2_old")).await, 0, "another tenant's job keeps nothing");
    assert_eq!(count(&app, &left(&t1_old)).await, 1, "the running job may still retry it");
    assert_eq!(count(&app, "SELECT count(*) AS n FROM jobs").await, 2, "the running and the recent job stay");

    // The job ends: its events are ordinary old events again.
    app.sql("UPDATE jobs SET status = 'completed', finished_at = now() WHERE status = 'running'").await;
    let purged = retention.run_once().await.expect("retention round");
    assert_eq!((purged.events, purged.jobs), (1, 0), "{purged:?}");
    assert_eq!(count(&app, &left(&t1_old)).await, 0);
}

//! Planner statistics: tables the hot paths grow are analyzed where autovacuum
//! would not (off, or not run yet), so cached plans stop seq-scanning them
//! (BENCHMARKS.md, "Where the time goes: PostgreSQL").

use std::time::Duration;

use diesel::{sql_types::Bool, QueryableByName};
use diesel_async::RunQueryDsl;
use reqwest::StatusCode;
use serde_json::json;
use shared::testing::eventually;

use crate::helpers::{spawn_app_with, TestApp};

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    yes: bool,
}

async fn flag(app: &TestApp, sql: &str) -> bool {
    let mut conn = shared::db::conn(&app.ingest.state.pool).await.expect("conn");
    let row: Flag = diesel::sql_query(sql).get_result(&mut conn).await.expect(sql);
    row.yes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_analyzed_once_they_grow_past_the_threshold() {
    let app = spawn_app_with(&[("RECONCILE_INTERVAL", "1h")]).await;
    let token = app.publisher_key().await;
    app.insert_subscription("t1", "http://127.0.0.1:9/a", &["*"], true).await;
    app.insert_subscription("t1", "http://127.0.0.1:9/b", &["*"], true).await;
    assert!(
        !flag(&app, "SELECT last_analyze IS NOT NULL AS yes FROM pg_stat_user_tables WHERE relname = 'deliveries'")
            .await,
        "a new database's deliveries table has never been analyzed"
    );
    // 100 events × 2 subscriptions: 200 new deliveries, past the threshold (50 + 10 %).
    publish(&app, &token, 100).await;
    // Where autovacuum is off (as on the CI machine) only ingest can analyze
    // the table; where it is on, autovacuum may get there first.
    let check = if flag(&app, "SELECT current_setting('autovacuum') = 'on' AS yes").await {
        "SELECT (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL) AS yes FROM pg_stat_user_tables WHERE relname = 'deliveries'"
    } else {
        "SELECT last_analyze IS NOT NULL AS yes FROM pg_stat_user_tables WHERE relname = 'deliveries'"
    };
    let analyzed = eventually(Duration::from_secs(60), || async { flag(&app, check).await.then_some(()) }).await;
    assert!(analyzed.is_some(), "deliveries was never analyzed");
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

async fn analyze_count(app: &TestApp) -> i64 {
    let mut conn = shared::db::conn(&app.ingest.state.pool).await.expect("conn");
    let sql = "SELECT analyze_count AS n FROM pg_stat_user_tables WHERE relname = 'deliveries'";
    let row: Count = diesel::sql_query(sql).get_result(&mut conn).await.expect(sql);
    row.n
}

async fn publish(app: &TestApp, token: &str, events: usize) {
    for n in 0..events {
        let body = json!({"event_type": "invoice.created", "event_data": {"n": n}, "tenant_id": "t1"});
        let (status, answer) = app.post("/api/v1/events", token, &body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_churning_table_is_analyzed_again_only_after_a_minute_or_once_it_doubled() {
    let app = spawn_app_with(&[("RECONCILE_INTERVAL", "1h")]).await;
    if flag(&app, "SELECT current_setting('autovacuum') = 'on' AS yes").await {
        eprintln!("autovacuum is on: ingest analyzes only never-analyzed tables, nothing to pace here");
        return;
    }
    let token = app.publisher_key().await;
    app.insert_subscription("t1", "http://127.0.0.1:9/a", &["*"], true).await;
    app.insert_subscription("t1", "http://127.0.0.1:9/b", &["*"], true).await;
    publish(&app, &token, 100).await;
    // Analyzed now (as the keeper would), so the table's last count is its 200 rows.
    // (The keeper may have analyzed it already while it grew: counts are read once settled.)
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = analyze_count(&app).await;
    {
        let mut conn = shared::db::conn(&app.ingest.state.pool).await.expect("conn");
        diesel::sql_query("ANALYZE deliveries").execute(&mut conn).await.expect("analyze");
    }
    let counted = eventually(Duration::from_secs(10), || async { (analyze_count(&app).await > before).then_some(()) });
    assert!(counted.await.is_some(), "our ANALYZE is counted");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_ours = analyze_count(&app).await;

    // 100 more rows (and their updates): past the 10 % threshold, not doubled. Within the
    // minute the keeper leaves the table alone, though it looks every second.
    publish(&app, &token, 50).await;
    tokio::time::sleep(ingest::statistics::INTERVAL * 3).await;
    assert_eq!(analyze_count(&app).await, after_ours, "analyzed again within the minute without doubling");

    // Past double the last count: analyzed at once.
    publish(&app, &token, 150).await;
    let again =
        eventually(Duration::from_secs(30), || async { (analyze_count(&app).await > after_ours).then_some(()) }).await;
    assert!(again.is_some(), "a table that doubled was not analyzed again");
}

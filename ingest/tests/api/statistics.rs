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
    for n in 0..100 {
        let body = json!({"event_type": "invoice.created", "event_data": {"n": n}, "tenant_id": "t1"});
        let (status, answer) = app.post("/api/v1/events", &token, &body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    }
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

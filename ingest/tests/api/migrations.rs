use diesel_async::RunQueryDsl;
use shared::{db, testing::TestDb};

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

async fn table_count(url: &str) -> i64 {
    let pool = db::pool(url, 1, "migration-test").expect("pool");
    let mut conn = db::conn(&pool).await.expect("conn");
    let rows: Vec<Count> = diesel::sql_query(
        "SELECT count(*) AS n FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_name <> '__diesel_schema_migrations'",
    )
    .load(&mut conn)
    .await
    .expect("count tables");
    rows[0].n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_go_up_on_an_empty_database_and_down_again() {
    let test_db = TestDb::create().await; // created and migrated up
    assert_eq!(
        table_count(&test_db.url).await,
        7,
        "api_keys, event_types, subscriptions, events, deliveries, delivery_attempts, endpoint_health"
    );
    let url = test_db.url.clone();
    let reverted = tokio::task::spawn_blocking(move || db::revert_all_migrations_blocking(&url))
        .await
        .expect("join")
        .expect("revert");
    assert!(reverted >= 2);
    assert_eq!(table_count(&test_db.url).await, 0);
    let applied = db::run_migrations(&test_db.url).await.expect("up again");
    assert_eq!(applied, reverted);
    assert_eq!(table_count(&test_db.url).await, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_migrating_the_same_database_at_once_all_succeed() {
    let test_db = TestDb::create().await;
    let url = test_db.url.clone();
    tokio::task::spawn_blocking(move || db::revert_all_migrations_blocking(&url)).await.expect("join").expect("revert");
    let runs = (0..4).map(|_| {
        let url = test_db.url.clone();
        tokio::spawn(async move { db::run_migrations(&url).await })
    });
    let applied: Vec<usize> = futures_util::future::join_all(runs)
        .await
        .into_iter()
        .map(|run| run.expect("join").expect("every concurrent migration run succeeds"))
        .collect();
    assert_eq!(
        applied.iter().sum::<usize>(),
        shared::db::migration_count(),
        "the migrations ran exactly once in all: {applied:?}"
    );
    assert_eq!(table_count(&test_db.url).await, 7);
}

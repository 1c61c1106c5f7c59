//! Send-time checks and sealed header values, end to end.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{spawn_env, Receiver, SubSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_target_saved_under_relaxed_settings_is_refused_once_the_dispatcher_runs_strict() {
    let env = spawn_env().await;
    let receiver = Receiver::always(200).await;
    // Saved while ALLOW_HTTP_TARGETS was on; the dispatcher now runs with it off.
    env.subscription(SubSpec::new(&receiver.url("/plain")).retries(true, 3)).await;
    let _dispatcher = env.start_dispatcher(&[("ALLOW_HTTP_TARGETS", "false")]).await;

    let delivery = env.publish_one().await;
    let attempts = shared::testing::eventually(Duration::from_secs(20), || async {
        let attempts = env.attempts(delivery.id).await;
        (!attempts.is_empty()).then_some(attempts)
    })
    .await
    .expect("an attempt is recorded");
    assert_eq!(attempts[0].outcome, "blocked_address", "{:?}", attempts[0]);
    assert!(attempts[0].error.as_deref().is_some_and(|e| e.contains("ALLOW_HTTP_TARGETS")), "{:?}", attempts[0]);
    assert_eq!(receiver.count(), 0, "nothing went out over plain HTTP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_and_legacy_clear_header_values_reach_the_subscriber_decrypted() {
    let env = spawn_env().await;
    let receiver = Receiver::always(200).await;
    let sealed = env
        .subscription(
            SubSpec::new(&receiver.url("/sealed"))
                .headers(json!({"Authorization": "Bearer sealed-token", "X-Tenant": "acme"})),
        )
        .await;
    let legacy = env.subscription(SubSpec::new(&receiver.url("/legacy"))).await;
    // A row written before values were sealed: clear values, flag off.
    env.sql(&format!(
        "UPDATE subscriptions SET headers = '{{\"Authorization\": \"Bearer legacy-token\"}}', \
         headers_encrypted = false WHERE id = '{}'",
        legacy.id
    ))
    .await;
    let stored: String = {
        use diesel::prelude::*;
        use diesel_async::RunQueryDsl;
        use shared::schema::subscriptions::dsl as s;
        let mut conn = env.conn().await;
        let headers: serde_json::Value =
            s::subscriptions.filter(s::id.eq(sealed.id)).select(s::headers).first(&mut conn).await.expect("row");
        headers.to_string()
    };
    assert!(!stored.contains("sealed-token") && !stored.contains("acme"), "stored in clear: {stored}");
    let _dispatcher = env.start_dispatcher(&[]).await;

    env.publish("t1", "invoice.created", json!({})).await;
    receiver.wait_count(2, Duration::from_secs(20)).await;
    for request in receiver.received() {
        let expected = if request.path == "/sealed" { "Bearer sealed-token" } else { "Bearer legacy-token" };
        assert_eq!(request.header("authorization"), expected, "{}", request.path);
    }
    let sealed_request = receiver.received().into_iter().find(|r| r.path == "/sealed").expect("sealed request");
    assert_eq!(sealed_request.header("x-tenant"), "acme");
}

//! The job the console exists for: find a failing delivery, see what the
//! endpoint answered, fix it, retry.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{browser::Browser, env::ConsoleEnv, receiver::Receiver};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_delivery_shows_its_attempts_and_a_retry_from_its_page_succeeds() {
    let env = ConsoleEnv::start().await;
    let receiver = Receiver::start().await;
    receiver.answer(500, "database is down");
    let key = env.tenant_key("t1").await;
    // One retry (1 s later in tests), so the delivery fails for good quickly.
    let (status, created) = env
        .call(
            Method::POST,
            "/api/v1/webhooks/subscriptions",
            &key,
            Some(json!({"url": receiver.url, "events": ["invoice.*"], "max_retries": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    env.publish("t1", "invoice.created", json!({"invoice_id": "inv_1"})).await;
    env.publish("t1", "invoice.paid", json!({"invoice_id": "inv_2"})).await;

    let b = Browser::open("troubleshooting", &env.base).await;
    b.check(async {
        b.sign_in(&key).await;
        b.click("#subscriptions tbody tr a").await;

        // Both fail; the status filter finds them.
        b.wait_js(
            "two failed deliveries",
            "return document.querySelectorAll(\"#deliveries tr.delivery[data-status='failed']\").length === 2",
        )
        .await;
        let row = b.text("#deliveries tr.delivery[data-status='failed']").await;
        assert!(row.contains("HTTP 500") && row.contains('2'), "a failed row shows the last status and 2 attempts: {row}");
        b.find("#filter-event-type").await.select_by_value("invoice.paid").await.expect("filter by event type");
        b.wait_js("only invoice.paid", "const rows = document.querySelectorAll('#deliveries tr.delivery'); return rows.length === 1 && rows[0].textContent.includes('invoice.paid')").await;
        b.find("#filter-status").await.select_by_value("succeeded").await.expect("filter by status");
        b.wait_text("#deliveries-empty", "Nothing matches these filters").await;
        b.find("#filter-status").await.select_by_value("failed").await.expect("filter by status");
        b.wait_for("#deliveries tr.delivery[data-status='failed']").await;
        b.shot("failed-log").await;

        // Its page: both attempts, with the endpoint's status and answer.
        b.click("#deliveries tr.delivery a").await;
        b.wait_text("#delivery-status", "failed").await;
        for attempt in ["1", "2"] {
            let card = b.text(&format!(".attempt[data-attempt='{attempt}']")).await;
            assert!(card.contains("HTTP 500") && card.contains("database is down"), "attempt {attempt}: {card}");
        }
        b.shot("failed-delivery").await;

        // The endpoint is fixed; Retry sends it again and the page follows.
        receiver.answer(200, "ok");
        b.click("#retry").await;
        b.wait_text(".toast", "Retry queued").await;
        b.wait_text("#delivery-status", "succeeded").await;
        let card = b.text(".attempt[data-attempt='3']").await;
        assert!(card.contains("HTTP 200") && card.contains("succeeded"), "the new attempt: {card}");
        assert_eq!(b.text("#attempt-count").await, "3");
        b.shot("retried").await;
    })
    .await;
    receiver.stop().await;
    env.stop().await;
}

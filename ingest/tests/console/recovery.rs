//! The tenant-wide log, delivery detail with payload and headers, event
//! lookup, and resending failed deliveries (recover, bulk retry) with the
//! job's progress.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{browser::Browser, env::ConsoleEnv, receiver::Receiver};

impl Browser {
    /// Sets a `datetime-local` input to `minutes_ago` before now, in the browser's time zone.
    async fn set_minutes_ago(&self, css: &str, minutes_ago: u32) {
        self.find(css).await;
        self.js(&format!(
            "const d = new Date(Date.now() - {minutes_ago} * 60000); const p = (n) => String(n).padStart(2, '0');
             document.querySelector({css:?}).value = `${{d.getFullYear()}}-${{p(d.getMonth() + 1)}}-${{p(d.getDate())}}T${{p(d.getHours())}}:${{p(d.getMinutes())}}:${{p(d.getSeconds())}}`;"
        ))
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_log_event_lookup_and_recovery_find_and_resend_failed_deliveries() {
    let env = ConsoleEnv::start().await;
    let billing = Receiver::start().await;
    let payments = Receiver::start().await;
    billing.answer(500, "ledger unavailable");
    let key = env.tenant_key("t1").await;
    let mut ids = Vec::new();
    for (receiver, events) in [(&billing, "invoice.*"), (&payments, "payment.*")] {
        let (status, created) = env
            .call(
                Method::POST,
                "/api/v1/webhooks/subscriptions",
                &key,
                Some(json!({"url": receiver.url, "events": [events], "max_retries": 0})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        ids.push(created["id"].as_str().expect("id").to_owned());
    }
    let failing_event = env.publish("t1", "invoice.created", json!({"invoice_id": "inv_77"})).await;
    env.publish("t1", "payment.succeeded", json!({"payment_id": "pay_5"})).await;

    let b = Browser::open("recovery", &env.base).await;
    b.check(async {
        b.sign_in(&key).await;

        // The tenant-wide log: both subscriptions, filterable.
        b.click("#nav a[data-nav='deliveries']").await;
        b.wait_js("both deliveries settled", "return document.querySelectorAll(\"#deliveries tr.delivery[data-status='failed'], #deliveries tr.delivery[data-status='succeeded']\").length === 2").await;
        let failed_row = b.text("#deliveries tr.delivery[data-status='failed']").await;
        assert!(failed_row.contains(&billing.url) && failed_row.contains("HTTP 500"), "the row names the subscription: {failed_row}");
        b.find("#filter-status").await.select_by_value("failed").await.expect("filter");
        b.wait_js("only the failed one", "const rows = document.querySelectorAll('#deliveries tr.delivery'); return rows.length === 1 && rows[0].dataset.status === 'failed'").await;
        b.shot("tenant-log").await;

        // Its page: payload and headers.
        b.click("#deliveries tr.delivery a").await;
        b.wait_text("#payload", "inv_77").await;
        b.click(".attempt[data-attempt='1'] details.request-headers summary").await;
        b.wait_text(".attempt[data-attempt='1'] details.request-headers", "x-webhook-signature").await;
        b.click(".attempt[data-attempt='1'] details.response-headers summary").await;
        b.wait_text(".attempt[data-attempt='1'] details.response-headers", "text/html").await;
        b.shot("delivery-headers").await;

        // Event lookup from the delivery.
        b.click("#event-lookup").await;
        b.wait_text("main", &failing_event).await;
        let deliveries = b.text("#event-deliveries").await;
        assert!(deliveries.contains("failed") && deliveries.contains("HTTP 500"), "{deliveries}");
        b.wait_text("#payload", "inv_77").await;
        b.shot("event").await;

        // The endpoint is fixed: recover the last hour, and follow the job.
        billing.answer(200, "ok");
        b.go(&format!("#/subscriptions/{}", ids[0])).await;
        b.click("#recover").await;
        b.set_minutes_ago("#recover-since", 60).await;
        b.click("#dialog-confirm").await;
        b.wait_text("#job", "completed").await;
        b.wait_text("#job", "1 of 1").await;
        b.shot("recover-job").await;
        b.click("#dialog-cancel").await;
        b.wait_for("#deliveries tr.delivery[data-status='succeeded']").await;

        // Bulk retry from the tenant log.
        billing.answer(500, "down again");
        env.publish("t1", "invoice.paid", json!({"invoice_id": "inv_78"})).await;
        b.go("#/deliveries").await;
        b.wait_for("#deliveries tr.delivery[data-status='failed']").await;
        billing.answer(200, "ok");
        b.click("#bulk-retry").await;
        b.set_minutes_ago("#bulk-since", 60).await;
        b.click("#dialog-confirm").await;
        b.wait_text("#job", "completed").await;
        b.click("#dialog-cancel").await;
        b.wait_js("every delivery succeeded", "const rows = [...document.querySelectorAll('#deliveries tr.delivery')]; return rows.length === 3 && rows.every((r) => r.dataset.status === 'succeeded')").await;
    })
    .await;
    billing.stop().await;
    payments.stop().await;
    env.stop().await;
}

//! Regenerates `docs/console.png`, the README's picture of the console:
//! `cargo test -p ingest --test console -- --ignored readme_screenshot`.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{browser::Browser, env::ConsoleEnv, receiver::Receiver};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes docs/console.png; run by hand when the console's look changes"]
async fn readme_screenshot() {
    let env = ConsoleEnv::start().await;
    let billing = Receiver::start().await;
    let crm = Receiver::start().await;
    let key = env.tenant_key("acme").await;
    let create = |body: serde_json::Value| {
        let (env, key) = (&env, &key);
        async move {
            let (status, created) = env.call(Method::POST, "/api/v1/webhooks/subscriptions", key, Some(body)).await;
            assert_eq!(status, StatusCode::CREATED, "{created}");
            created["id"].as_str().expect("id").to_owned()
        }
    };
    let id = create(json!({"url": billing.url, "description": "Billing service: invoices and payments",
                           "events": ["invoice.*", "payment.*"], "max_retries": 1}))
    .await;
    let crm_id = create(json!({"url": crm.url, "description": "CRM sync", "events": ["customer.*"]})).await;
    env.call(
        Method::PATCH,
        &format!("/api/v1/webhooks/subscriptions/{crm_id}"),
        &key,
        Some(json!({"is_active": false})),
    )
    .await;
    for (event_type, data) in [
        ("invoice.created", json!({"invoice_id": "inv_1001", "amount": 120.0})),
        ("payment.succeeded", json!({"payment_id": "pay_88", "amount": 120.0})),
        ("invoice.paid", json!({"invoice_id": "inv_1001"})),
    ] {
        env.publish("acme", event_type, data).await;
    }

    let b = Browser::open("readme", &env.base).await;
    b.check(async {
        b.client.set_window_size(1280, 1000).await.expect("resize");
        b.sign_in(&key).await;
        b.go(&format!("#/subscriptions/{id}")).await;
        b.wait_js(
            "three succeeded",
            "return document.querySelectorAll(\"#deliveries tr[data-status='succeeded']\").length === 3",
        )
        .await;
        billing.answer(500, "{\"error\": \"ledger unavailable\"}");
        env.publish("acme", "invoice.created", json!({"invoice_id": "inv_1002", "amount": 75.0})).await;
        b.wait_for("#deliveries tr[data-status='failed']").await;
        let png = b.client.screenshot().await.expect("screenshot");
        std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/console.png"), png)
            .expect("write docs/console.png");
    })
    .await;
    billing.stop().await;
    crm.stop().await;
    env.stop().await;
}

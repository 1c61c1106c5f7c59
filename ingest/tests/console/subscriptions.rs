//! Managing subscriptions in the console: create (secret shown once), edit,
//! pause and resume, rotate, test event, delete.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use shared::testing::eventually;

use crate::{browser::Browser, env::ConsoleEnv, receiver::Receiver};

/// `hex(HMAC-SHA256(secret, body))`, as `X-Webhook-Signature` carries it.
fn signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    hex::encode(ring::hmac::sign(&key, body).as_ref())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_created_in_the_console_shows_its_secret_once_and_its_deliveries_succeed() {
    let env = ConsoleEnv::start().await;
    let receiver = Receiver::start().await;
    let key = env.tenant_key("t1").await;
    let b = Browser::open("create", &env.base).await;
    b.check(async {
        b.sign_in(&key).await;
        b.shot("subscriptions-empty").await;
        b.click("#new-subscription").await;
        b.type_into("#url", &receiver.url).await;
        b.type_into("#description", "Billing service").await;
        b.click("input[data-event='invoice.created']").await;
        b.shot("create").await;
        b.click("#save").await;

        let secret = b.text("#secret-value").await;
        assert!(secret.starts_with("whsec_"), "the secret is shown: {secret}");
        b.click("#copy-secret").await;
        let copied = b
            .wait_js(
                "copy feedback",
                "const t = document.querySelector('#copy-secret').textContent; return t === 'Copy' ? null : t",
            )
            .await;
        match copied.as_str() {
            Some("Copied") => {}
            Some(other) => {
                assert!(other.starts_with("Selected"), "copy feedback: {other}");
                assert_eq!(
                    b.js("return getSelection().toString()").await,
                    secret.as_str(),
                    "the secret is selected for Ctrl+C"
                );
            }
            None => panic!("copy feedback: {copied}"),
        }
        b.shot("secret").await;
        let subscription_id = b.wait_js("subscription page", "return location.hash.split('/')[2]").await;
        let subscription_id = subscription_id.as_str().expect("id in the route").to_owned();
        b.wait_text("#subscription-url", &receiver.url).await;
        b.wait_text("main", "Billing service").await;

        // An event goes out, and the log shows it succeeded.
        let event_id = env.publish("t1", "invoice.created", json!({"invoice_id": "inv_42", "amount": 99.5})).await;
        b.wait_for("#deliveries tr.delivery[data-status='succeeded']").await;
        let row = b.text("#deliveries tbody tr").await;
        assert!(
            row.contains("invoice.created") && row.contains(&event_id) && row.contains("HTTP 200"),
            "log row: {row}"
        );
        b.shot("subscription").await;

        // The secret copied from the page verifies what the endpoint received.
        let received = receiver.received();
        assert_eq!(received.len(), 1, "one delivery");
        assert_eq!(received[0].headers["x-webhook-signature"], signature(&secret, &received[0].body));

        // The delivery's page shows its attempt.
        b.click("#deliveries tbody tr a").await;
        b.wait_text("#delivery-status", "succeeded").await;
        let attempt = b.text(".attempt[data-attempt='1']").await;
        assert!(attempt.contains("HTTP 200") && attempt.contains("Attempt 1"), "attempt: {attempt}");
        b.shot("delivery").await;

        // Shown once: not on a later visit.
        b.open_console(&format!("#/subscriptions/{subscription_id}")).await;
        b.wait_text("#subscription-url", &receiver.url).await;
        assert_eq!(
            b.js("return document.querySelector('#secret-value') === null").await,
            true,
            "the secret is shown only once"
        );

        // The list shows it, active.
        b.go("#/subscriptions").await;
        let row = b.wait_text("#subscriptions tbody tr", &receiver.url).await;
        assert!(
            row.contains("active") && row.contains("Billing service") && row.contains("invoice.created"),
            "list row: {row}"
        );
        b.shot("subscriptions").await;
    })
    .await;
    receiver.stop().await;
    env.stop().await;
}

/// How many deliveries a subscription has (through the API).
async fn delivery_count(env: &ConsoleEnv, key: &str, id: &str) -> usize {
    let (status, page) =
        env.call(Method::GET, &format!("/api/v1/webhooks/subscriptions/{id}/deliveries"), key, None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["items"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_can_be_paused_resumed_edited_tested_rotated_and_deleted() {
    let env = ConsoleEnv::start().await;
    let receiver = Receiver::start().await;
    let key = env.tenant_key("t1").await;
    let (status, created) = env
        .call(
            Method::POST,
            "/api/v1/webhooks/subscriptions",
            &key,
            Some(json!({"url": receiver.url, "events": ["invoice.created"], "description": "Before"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    let first_secret = created["secret"].as_str().expect("secret").to_owned();

    let b = Browser::open("manage", &env.base).await;
    b.check(async {
        b.sign_in(&key).await;
        b.click("#subscriptions tbody tr a").await;
        b.wait_text("#subscription-url", &receiver.url).await;

        // Pause: events are no longer delivered to it.
        b.click("#pause").await;
        b.wait_text("main .page-head", "paused").await;
        b.wait_for("#resume").await;
        b.shot("paused").await;
        let (_, sub) = env.call(Method::GET, &format!("/api/v1/webhooks/subscriptions/{id}"), &key, None).await;
        assert_eq!(sub["is_active"], false);
        env.publish("t1", "invoice.created", json!({"n": 1})).await;
        assert_eq!(delivery_count(&env, &key, &id).await, 0, "a paused subscription gets no delivery");

        // Resume: they are again.
        b.click("#resume").await;
        b.wait_text("main .page-head", "active").await;
        b.wait_for("#pause").await;
        env.publish("t1", "invoice.created", json!({"n": 2})).await;
        b.wait_for("#deliveries tr.delivery[data-status='succeeded']").await;
        assert_eq!(delivery_count(&env, &key, &id).await, 1);

        // Edit.
        b.click("#edit").await;
        b.type_into("#description", "After").await;
        b.type_into("#max_retries", "5").await;
        b.shot("edit").await;
        b.click("#save").await;
        b.wait_text("#subscription-description", "After").await;
        b.wait_text("main", "on, up to 5").await;

        // A bad value is refused with the API's message next to the field.
        b.click("#edit").await;
        b.type_into("#url", "ftp://example.com/hook").await;
        b.click("#save").await;
        b.wait_for("#url-error").await;
        assert_eq!(b.js("return document.querySelector('#url').getAttribute('aria-invalid')").await, "true");
        b.shot("edit-error").await;
        b.go(&format!("#/subscriptions/{id}")).await;

        // Test event.
        b.click("#send-test").await;
        b.wait_text(".toast", "Test event queued").await;
        let found = eventually(Duration::from_secs(30), || async {
            receiver
                .received()
                .iter()
                .any(|r| r.headers.get("x-webhook-event-type").is_some_and(|t| t == "webhook.test"))
                .then_some(())
        })
        .await;
        assert!(found.is_some(), "the test event reached the endpoint");

        // Rotate: a new secret, shown once.
        b.wait_for("#subscription-url").await;
        b.click("#rotate").await;
        b.click("#dialog-confirm").await;
        let secret = b.text("#secret-value").await;
        assert!(secret.starts_with("whsec_") && secret != first_secret, "a new secret: {secret}");
        b.shot("rotated").await;

        // Delete asks first; Cancel keeps it.
        b.click("#delete").await;
        b.wait_text("dialog", "Delete this subscription?").await;
        b.shot("delete-confirm").await;
        b.click("#dialog-cancel").await;
        let (status, _) = env.call(Method::GET, &format!("/api/v1/webhooks/subscriptions/{id}"), &key, None).await;
        assert_eq!(status, StatusCode::OK, "cancel keeps the subscription");
        b.click("#delete").await;
        b.click("#dialog-confirm").await;
        b.wait_text("main", "No subscriptions yet").await;
        let (status, _) = env.call(Method::GET, &format!("/api/v1/webhooks/subscriptions/{id}"), &key, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "deleted");
    })
    .await;
    receiver.stop().await;
    env.stop().await;
}

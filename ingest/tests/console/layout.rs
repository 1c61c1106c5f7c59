//! The console at phone width: every screen scrolls only vertically.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{browser::Browser, env::ConsoleEnv, receiver::Receiver};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_screen_fits_a_390_px_wide_phone_without_horizontal_scroll() {
    let env = ConsoleEnv::start().await;
    let receiver = Receiver::start().await;
    // Long unbroken values are what push a layout sideways.
    receiver.answer(503, &format!("{{\"error\":\"{}\"}}", "x".repeat(600)));
    let key = env.tenant_key("t1").await;
    let (status, created) = env
        .call(
            Method::POST,
            "/api/v1/webhooks/subscriptions",
            &key,
            Some(json!({"url": format!("{}/{}", receiver.url, "a".repeat(150)), "events": ["invoice.*", "payment.*", "customer.*"],
                        "description": "d".repeat(200), "headers": {"X-Tenant-Reference": "r".repeat(120)}, "retry_enabled": false})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    env.publish("t1", "invoice.created", json!({"long": "y".repeat(400)})).await;

    let b = Browser::open("layout-390", &env.base).await;
    b.check(async {
        assert_eq!(b.set_width(390).await, 390, "the page is 390 CSS px wide");
        b.open_console("").await;
        b.wait_for("#api-key").await;
        b.assert_no_horizontal_scroll("sign-in").await;
        b.shot("sign-in").await;

        b.sign_in(&key).await;
        b.wait_for("#subscriptions tbody tr").await;
        b.assert_no_horizontal_scroll("subscriptions").await;
        b.shot("subscriptions").await;

        b.go(&format!("#/subscriptions/{id}")).await;
        b.wait_for("#deliveries tr.delivery[data-status='failed']").await;
        b.assert_no_horizontal_scroll("subscription").await;
        b.shot("subscription").await;

        b.click("#deliveries tr.delivery a").await;
        b.wait_for(".attempt[data-attempt='1']").await;
        b.assert_no_horizontal_scroll("delivery").await;
        b.shot("delivery").await;

        b.go("#/subscriptions/new").await;
        b.wait_for("#url").await;
        b.assert_no_horizontal_scroll("new subscription").await;
        b.shot("new-subscription").await;

        b.go(&format!("#/subscriptions/{id}")).await;
        b.click("#delete").await;
        b.wait_for("dialog").await;
        b.assert_no_horizontal_scroll("delete dialog").await;
        b.shot("delete-dialog").await;
        b.click("#dialog-cancel").await;

        for (route, screen) in [("#/deliveries", "delivery log"), ("#/events", "event lookup")] {
            b.go(route).await;
            b.wait_for("main h1").await;
            b.assert_no_horizontal_scroll(screen).await;
            b.shot(screen).await;
        }

        // Back at desktop width, the same screens keep their table layout.
        assert_eq!(b.set_width(1280).await, 1280);
        b.go("#/subscriptions").await;
        b.wait_for("#subscriptions thead th").await;
        b.assert_no_horizontal_scroll("subscriptions at 1280 px").await;
    })
    .await;
    receiver.stop().await;
    env.stop().await;
}

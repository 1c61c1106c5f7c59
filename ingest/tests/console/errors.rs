//! When the server fails or stops trusting the key, the console says so.

use crate::{browser::Browser, env::ConsoleEnv};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_shows_a_banner_and_a_refused_key_returns_to_sign_in() {
    let env = ConsoleEnv::start().await;
    let key = env.tenant_key("t1").await;
    let b = Browser::open("errors", &env.base).await;
    b.check(async {
        b.sign_in(&key).await;

        // The database goes away: the API answers 503 and the page says so.
        env.allow_database(false).await;
        b.go("#/subscriptions/new").await;
        b.go("#/subscriptions").await;
        b.wait_text("#banner", "503").await;
        b.wait_text("main h1", "could not load").await;
        b.shot("server-error").await;

        // It comes back: dismiss, try again, and the list loads.
        env.allow_database(true).await;
        b.click("#banner button").await;
        assert_eq!(b.js("return document.querySelector('#banner').hidden").await, true);
        b.click("#try-again").await;
        b.wait_text("main", "No subscriptions yet").await;

        // The server stops accepting the tab's key (as after a revocation):
        // back to sign-in, with the reason, and the key is forgotten.
        b.js("sessionStorage.setItem('webhooks.console.key', 'whk_revoked')").await;
        b.go("#/subscriptions/new").await;
        b.go("#/subscriptions").await;
        b.wait_text("#signin-error", "refused your key").await;
        assert_eq!(b.js("return sessionStorage.getItem('webhooks.console.key')").await, serde_json::Value::Null);
        b.shot("key-refused").await;
    })
    .await;
    env.stop().await;
}

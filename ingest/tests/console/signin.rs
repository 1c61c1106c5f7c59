//! Signing in: only a tenant key opens the console, and the key stays in the tab.

use crate::{
    browser::{Browser, ENTER, TAB},
    env::ConsoleEnv,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_refused_and_a_tenant_key_signs_in_for_this_tab_only() {
    let env = ConsoleEnv::start().await;
    let key = env.tenant_key("t1").await;
    let b = Browser::open("signin", &env.base).await;
    b.check(async {
        b.open_console("").await;
        b.wait_text("h1", "Sign in").await;
        b.shot("sign-in").await;

        b.type_into("#api-key", "whk_this_key_does_not_exist").await;
        b.click("form button[type=submit]").await;
        b.wait_text("#signin-error", "refused").await;
        b.shot("wrong-key").await;
        assert!(b.text("h1").await.contains("Sign in"), "a wrong key must not open the console");
        assert_eq!(b.js("return sessionStorage.length").await, 0, "a refused key is not kept");

        b.type_into("#api-key", env.publisher_key()).await;
        b.click("form button[type=submit]").await;
        b.wait_text("#signin-error", "publisher key").await;

        // Enter submits, as in any form.
        b.type_into("#api-key", &format!("{key}{ENTER}")).await;
        b.wait_text("h1", "Subscriptions").await;
        b.wait_text("main", "No subscriptions yet").await;
        let url = b.client.current_url().await.expect("url");
        assert!(!url.as_str().contains(&key), "the key must never be in the URL: {url}");
        let stored =
            b.js("return [sessionStorage.getItem('webhooks.console.key'), localStorage.length, document.cookie]").await;
        assert_eq!(stored[0], key.as_str(), "the key is kept in sessionStorage");
        assert_eq!(stored[1], 0, "nothing in localStorage");
        assert_eq!(stored[2], "", "no cookies");

        // The keyboard reaches every control, with a visible focus ring.
        let mut focused = serde_json::Value::Null;
        for _ in 0..12 {
            b.press(TAB).await;
            focused = b.js("return document.activeElement.id").await;
            if focused == "new-subscription" {
                break;
            }
        }
        assert_eq!(focused, "new-subscription", "Tab reaches the New subscription button");
        let ring =
            b.js("const s = getComputedStyle(document.activeElement); return [s.outlineStyle, s.outlineWidth]").await;
        assert!(ring[0] != "none" && ring[1] != "0px", "the focused control shows a focus ring: {ring}");
        b.shot("keyboard-focus").await;
        b.press(ENTER).await;
        b.wait_text("h1", "New subscription").await;
        assert_eq!(b.js("return document.activeElement.id").await, "url", "the form starts at its first field");

        // A reload of the same tab stays signed in; signing out forgets the key.
        b.open_console("#/subscriptions").await;
        b.wait_text("h1", "Subscriptions").await;
        b.click("#sign-out").await;
        b.wait_for("#api-key").await;
        assert_eq!(b.js("return sessionStorage.getItem('webhooks.console.key')").await, serde_json::Value::Null);
    })
    .await;
    env.stop().await;
}

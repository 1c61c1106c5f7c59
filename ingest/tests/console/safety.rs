//! Attacker-controlled values (descriptions, payloads, response bodies,
//! headers) render as text, and the page's policy forbids inline code.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{browser::Browser, env::ConsoleEnv, receiver::Receiver};

const IMG: &str = "<img src=x onerror=alert(1)>";
const SCRIPT: &str = "</script><script>alert(2)</script>";

impl Browser {
    /// Starts recording Content-Security-Policy violations in the page.
    async fn record_violations(&self) {
        self.js("window.__violations = []; document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));").await;
    }

    /// Nothing ran and nothing was injected: no dialog, no `<img>`, no script
    /// but the console's own, no policy violation.
    async fn assert_nothing_ran(&self, screen: &str) {
        assert_eq!(self.open_dialog().await, None, "{screen}: a dialog opened");
        let page = self
            .js("return { imgs: document.querySelectorAll('img').length, scripts: document.scripts.length, violations: window.__violations }")
            .await;
        assert_eq!(page["imgs"], 0, "{screen}: an <img> was injected");
        assert_eq!(page["scripts"], 1, "{screen}: a <script> was injected");
        assert_eq!(page["violations"], json!([]), "{screen}: the page tried something the policy forbids");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_from_the_api_render_as_text_and_run_nothing() {
    let env = ConsoleEnv::start().await;
    let receiver = Receiver::start().await;
    receiver.answer(500, &format!("{IMG}{SCRIPT}"));
    let key = env.tenant_key("t1").await;
    let description = format!("{IMG} and {SCRIPT}");
    let (status, created) = env
        .call(
            Method::POST,
            "/api/v1/webhooks/subscriptions",
            &key,
            Some(json!({"url": receiver.url, "events": ["*"], "description": description,
                        "headers": {"X-Note": IMG}, "retry_enabled": false})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    env.publish("t1", "invoice.created", json!({"note": IMG, "end": SCRIPT})).await;

    let b = Browser::open("safety", &env.base).await;
    b.check(async {
        b.sign_in(&key).await;
        b.record_violations().await;

        let row = b.wait_text("#subscriptions tbody tr", IMG).await;
        assert!(row.contains(SCRIPT), "the description shows as text: {row}");
        b.assert_nothing_ran("subscriptions").await;

        b.go(&format!("#/subscriptions/{id}")).await;
        b.wait_text("#subscription-description", &description).await;
        b.wait_text("table.headers td", IMG).await;
        b.wait_for("#deliveries tr.delivery[data-status='failed']").await;
        b.assert_nothing_ran("subscription").await;
        b.shot("subscription").await;

        b.click("#deliveries tr.delivery a").await;
        let body = b.wait_text(".attempt[data-attempt='1'] .response-body", IMG).await;
        assert_eq!(body, format!("{IMG}{SCRIPT}"), "the response body shows as sent");
        let (_, delivery) = env
            .call(
                Method::GET,
                &format!(
                    "/api/v1/webhooks/deliveries/{}",
                    b.js("return location.hash.split('/')[2]").await.as_str().expect("id")
                ),
                &key,
                None,
            )
            .await;
        if delivery.get("payload").is_some() {
            // Where the API returns the payload, the page shows it as text.
            let payload = b.wait_text("#payload", IMG).await;
            assert!(payload.contains(SCRIPT), "payload: {payload}");
        }
        b.assert_nothing_ran("delivery").await;
        b.shot("delivery").await;
    })
    .await;
    receiver.stop().await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_with_a_strict_policy_and_no_inline_code() {
    let env = ConsoleEnv::start().await;
    let res = env.client.get(format!("{}/console", env.base)).send().await.expect("GET /console");
    assert_eq!(res.status(), StatusCode::OK);
    let header = |name: &str| res.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(header("content-type").starts_with("text/html"), "{}", header("content-type"));
    let csp = header("content-security-policy");
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
        "require-trusted-types-for 'script'",
    ] {
        assert!(csp.contains(directive), "CSP lacks {directive}: {csp}");
    }
    assert!(!csp.contains("unsafe"), "no unsafe-* source: {csp}");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("referrer-policy"), "no-referrer");
    let etag = header("etag");
    let html = res.text().await.expect("html");
    // Every script is a file of this server; no inline style or handler.
    assert_eq!(
        html.matches("<script").count(),
        html.matches("<script src=\"console/").count(),
        "inline script in {html}"
    );
    assert!(
        !html.contains("style=") && !html.contains("<style") && !html.contains(" onload="),
        "inline style or handler"
    );

    for (path, kind) in [("/console/console.js", "text/javascript"), ("/console/console.css", "text/css")] {
        let res = env.client.get(format!("{}{path}", env.base)).send().await.expect("asset");
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let content_type =
            res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        assert_eq!(res.headers().get("x-content-type-options").and_then(|v| v.to_str().ok()), Some("nosniff"));
        let source = res.text().await.expect("asset body");
        for sink in [".innerHTML", ".outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"] {
            assert!(!source.contains(sink), "{path} uses {sink}");
        }
    }
    // Unchanged assets revalidate without a body.
    let res = env
        .client
        .get(format!("{}/console", env.base))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("revalidate");
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    // The console needs no key to load; the API behind it does.
    let (status, _) = env.call(Method::GET, "/api/v1/webhooks/subscriptions", "whk_wrong", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    env.stop().await;
}

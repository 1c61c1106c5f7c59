//! Attempts that fail before a usable answer: timeouts, refused connections,
//! redirects (never followed) and internal addresses.

use std::time::Duration;

use shared::models::delivery::DeliveryStatus;

use crate::helpers::{refused_url, spawn_env, Receiver, Reply, SubSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_refused_connections_tls_dns_and_redirects_fail_the_attempt_with_their_codes() {
    let env = spawn_env().await;
    let receiver = Receiver::start(|request, _| match request.path.as_str() {
        "/slow" => Reply::status(200).after(Duration::from_secs(4)),
        _ => Reply::redirect("/elsewhere"),
    })
    .await;
    let slow = env.subscription(SubSpec::new(&receiver.url("/slow")).timeout(1).retries(false, 0)).await;
    let refused = env.subscription(SubSpec::new(&refused_url()).retries(false, 0)).await;
    let redirect = env.subscription(SubSpec::new(&receiver.url("/redirect")).retries(true, 1)).await;
    // TLS to a plain-HTTP server fails the handshake; `.invalid` never resolves (RFC 6761).
    let tls = env
        .subscription(SubSpec::new(&receiver.url("/tls").replacen("http://", "https://", 1)).retries(false, 0))
        .await;
    let dns = env.subscription(SubSpec::new("http://no-such-host.invalid/hook").retries(false, 0)).await;
    let _dispatcher = env.start_dispatcher(&[]).await;

    let event_id = env.publish("t1", "invoice.created", serde_json::json!({})).await;
    let deliveries = env.deliveries_of(&event_id).await;
    assert_eq!(deliveries.len(), 5);
    for delivery in &deliveries {
        env.wait_status(delivery.id, DeliveryStatus::Failed, Duration::from_secs(30)).await;
    }
    for delivery in deliveries {
        let attempts = env.attempts(delivery.id).await;
        let first = &attempts[0];
        if delivery.subscription_id == slow.id {
            assert_eq!((first.outcome.as_str(), first.status_code), ("timeout", None));
            assert!((900..3500).contains(&first.duration_ms), "gave up after the 1 s timeout: {}", first.duration_ms);
            assert!(env.delivery(delivery.id).await.last_error.is_some());
        } else if delivery.subscription_id == refused.id {
            assert_eq!((first.outcome.as_str(), first.status_code), ("connect", None));
        } else if delivery.subscription_id == tls.id {
            assert_eq!((first.outcome.as_str(), first.status_code), ("tls", None), "{:?}", first.error);
        } else if delivery.subscription_id == dns.id {
            assert_eq!((first.outcome.as_str(), first.status_code), ("dns", None), "{:?}", first.error);
        } else {
            assert_eq!(redirect.id, delivery.subscription_id);
            // A redirect is a failed attempt like any other, retried on schedule, never followed.
            let summary: Vec<_> = attempts.iter().map(|a| (a.outcome.as_str(), a.status_code)).collect();
            assert_eq!(summary, [("redirect", Some(302)), ("redirect", Some(302))]);
            assert!(first.error.as_deref().is_some_and(|e| e.contains("not followed")), "{:?}", first.error);
            assert_eq!(env.delivery(delivery.id).await.last_status_code, Some(302));
        }
    }
    let paths: Vec<_> = receiver.received().into_iter().map(|r| r.path).collect();
    assert!(!paths.iter().any(|p| p == "/elsewhere"), "the redirect was followed: {paths:?}");
    assert_eq!(paths.iter().filter(|p| *p == "/redirect").count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_addresses_are_blocked_unless_private_targets_are_allowed() {
    let env = spawn_env().await;
    let receiver = Receiver::always(200).await;
    let port = receiver.base.rsplit(':').next().expect("port").to_owned();
    // The API would refuse these URLs; a subscription saved before the rules
    // changed (or a name that resolves inward later) must still be stopped.
    let literal = env.subscription(SubSpec::new(&format!("http://127.0.0.1:{port}/literal")).retries(false, 0)).await;
    let name = env.subscription(SubSpec::new(&format!("http://localhost:{port}/name")).retries(false, 0)).await;
    let _dispatcher = env.start_dispatcher(&[("ALLOW_PRIVATE_TARGETS", "false")]).await;

    let event_id = env.publish("t1", "invoice.created", serde_json::json!({})).await;
    for delivery in env.deliveries_of(&event_id).await {
        let row = env.wait_status(delivery.id, DeliveryStatus::Failed, Duration::from_secs(20)).await;
        let attempts = env.attempts(delivery.id).await;
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].outcome, "blocked_address", "{:?}", attempts[0]);
        assert!([literal.id, name.id].contains(&row.subscription_id));
        assert!(row.last_error.is_some_and(|e| e.contains("public")));
    }
    assert_eq!(receiver.count(), 0, "nothing reached the internal address");
}

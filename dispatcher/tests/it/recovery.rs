//! Recovery end to end: recover a subscription's window after an outage,
//! `include_missed`, a job that outlives its ingest, and bulk retry.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use chrono::{SecondsFormat, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use shared::{models::delivery::DeliveryStatus, testing::eventually};

use crate::helpers::{spawn_env, spawn_env_with, Receiver, Reply, SubSpec, TestEnv};

/// Dispatcher settings that keep the circuit closed through an outage, so the
/// deliveries fail on their schedule instead of waiting behind an open
/// circuit (tests/it/circuit.rs covers that).
const NO_CIRCUIT: &[(&str, &str)] = &[("CIRCUIT_FAILURE_THRESHOLD", "10000")];

/// A receiver that answers 503 until `up` is set, then 200.
async fn receiver_with_outage() -> (Receiver, Arc<AtomicBool>) {
    let up = Arc::new(AtomicBool::new(false));
    let flag = up.clone();
    let receiver =
        Receiver::start(move |_, _| Reply::status(if flag.load(Ordering::SeqCst) { 200 } else { 503 })).await;
    (receiver, up)
}

fn rfc3339(at: chrono::DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Waits until `n` deliveries are `failed`.
async fn wait_failed(env: &TestEnv, n: i64) {
    let done = eventually(Duration::from_secs(40), || async { (env.count_status("failed").await >= n).then_some(()) });
    assert!(done.await.is_some(), "only {} of {n} deliveries failed", env.count_status("failed").await);
}

/// Requests per delivery id among those the receiver got after the first `skip`.
fn requests_after(receiver: &Receiver, skip: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for request in receiver.received().into_iter().skip(skip) {
        *counts.entry(request.delivery_id()).or_insert(0) += 1;
    }
    counts
}

async fn publish_many(env: &TestEnv, event_type: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(env.publish("t1", event_type, json!({"n": i})).await);
    }
    ids
}

/// The deliveries of these events.
async fn delivery_ids(env: &TestEnv, event_ids: &[String]) -> Vec<String> {
    let mut ids = Vec::new();
    for event_id in event_ids {
        ids.extend(env.deliveries_of(event_id).await.into_iter().map(|d| d.id.to_string()));
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_after_an_outage_longer_than_the_schedule_delivers_every_failed_delivery_exactly_once() {
    let env = spawn_env_with(&[("RECOVERY_BATCH_SIZE", "7"), ("RECOVERY_BATCH_PAUSE_MS", "10")]).await;
    let (receiver, up) = receiver_with_outage().await;
    let sub = env.subscription(SubSpec::new(&receiver.url("/hook")).retries(true, 1)).await;
    let _dispatcher = env.start_dispatcher(NO_CIRCUIT).await;
    let token = env.tenant_key("t1").await;

    // Failed before the window: recovery leaves it alone.
    let early = env.publish_one().await;
    env.wait_status(early.id, DeliveryStatus::Failed, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = Utc::now();
    let events = publish_many(&env, "invoice.created", 25).await;
    let recovered = delivery_ids(&env, &events).await;
    assert_eq!(recovered.len(), 25);
    // Every attempt of the schedule (1 + 1 retry) failed.
    wait_failed(&env, 26).await;

    up.store(true, Ordering::SeqCst);
    let seen = receiver.count();
    let recover = format!("/api/v1/webhooks/subscriptions/{}/recover", sub.id);
    let (status, job) = env.api_json(Method::POST, &recover, &token, &json!({"since": rfc3339(since)})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!((job["kind"].as_str(), job["total"].as_i64()), (Some("recover"), Some(25)), "{job}");
    let job_id = job["id"].as_str().expect("job id").to_owned();
    let job = env.wait_job(&token, &job_id, Duration::from_secs(60)).await;
    assert_eq!((job["status"].as_str(), job["queued"].as_i64()), (Some("completed"), Some(25)), "{job}");
    assert!(job["finished_at"].is_string(), "{job}");

    env.wait_succeeded(25, Duration::from_secs(40)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = requests_after(&receiver, seen);
    assert_eq!(after.len(), 25, "{after:?}");
    for id in &recovered {
        assert_eq!(after.get(id), Some(&1), "delivery {id} was not sent exactly once: {after:?}");
    }
    assert!(!after.contains_key(&early.id.to_string()), "a delivery before the window was recovered");
    assert_eq!(env.delivery(early.id).await.status, DeliveryStatus::Failed);

    // Nothing failed is left in the window: a second recovery queues nothing.
    let (status, again) = env.api_json(Method::POST, &recover, &token, &json!({"since": rfc3339(since)})).await;
    assert_eq!((status, again["total"].as_i64()), (StatusCode::ACCEPTED, Some(0)), "{again}");
    let again = env.wait_job(&token, again["id"].as_str().expect("id"), Duration::from_secs(20)).await;
    assert_eq!(again["queued"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_is_tenant_scoped_and_refuses_bad_windows_and_paused_subscriptions() {
    let env = spawn_env().await;
    let sub = env.subscription(SubSpec::new("http://127.0.0.1:9/hook")).await;
    let token = env.tenant_key("t1").await;
    let other = env.tenant_key("t2").await;
    let recover = format!("/api/v1/webhooks/subscriptions/{}/recover", sub.id);
    let window = json!({"since": "2026-01-01T00:00:00Z"});

    let (status, _) = env.api_json(Method::POST, &recover, &other, &window).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = env.api_json(Method::POST, &recover, env.publisher_token(), &window).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for (body, field) in [
        (json!({}), "since"),
        (json!({"since": "yesterday"}), "since"),
        (json!({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}), "until"),
    ] {
        let (status, error) = env.api_json(Method::POST, &recover, &token, &body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {error}");
        assert_eq!(error["error"]["details"]["field"], field, "{error}");
    }

    let (status, job) = env.api_json(Method::POST, &recover, &token, &window).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let job_path = format!("/api/v1/webhooks/jobs/{}", job["id"].as_str().expect("id"));
    let (status, _) = env.api(Method::GET, &job_path, &other).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another tenant's job");
    let (status, _) = env.api(Method::GET, &job_path, env.publisher_token()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    env.sql(&format!("UPDATE subscriptions SET is_active = false WHERE id = '{}'", sub.id)).await;
    let (status, error) = env.api_json(Method::POST, &recover, &token, &window).await;
    assert_eq!((status, error["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_missed_delivers_the_events_published_while_the_subscription_was_paused() {
    let env = spawn_env().await;
    let receiver = Receiver::always(200).await;
    let mut spec = SubSpec::new(&receiver.url("/hook")).events(&["invoice.*"]);
    spec.is_active = false;
    let sub = env.subscription(spec).await;
    let _dispatcher = env.start_dispatcher(NO_CIRCUIT).await;
    let token = env.tenant_key("t1").await;

    let since = Utc::now() - chrono::Duration::seconds(1);
    let missed = publish_many(&env, "invoice.created", 4).await;
    let unmatched = publish_many(&env, "customer.created", 1).await;
    for event_id in missed.iter().chain(&unmatched) {
        assert!(env.deliveries_of(event_id).await.is_empty(), "a paused subscription got a delivery");
    }
    env.sql(&format!("UPDATE subscriptions SET is_active = true WHERE id = '{}'", sub.id)).await;

    let recover = format!("/api/v1/webhooks/subscriptions/{}/recover", sub.id);
    let body = json!({"since": rfc3339(since), "include_missed": true});
    let (status, job) = env.api_json(Method::POST, &recover, &token, &body).await;
    assert_eq!((status, job["total"].as_i64()), (StatusCode::ACCEPTED, Some(4)), "{job}");
    let job = env.wait_job(&token, job["id"].as_str().expect("id"), Duration::from_secs(30)).await;
    assert_eq!((job["status"].as_str(), job["queued"].as_i64()), (Some("completed"), Some(4)), "{job}");

    receiver.wait_count(4, Duration::from_secs(20)).await;
    let mut got: Vec<String> = receiver.received().iter().map(|r| r.header("x-webhook-event-id").to_owned()).collect();
    got.sort();
    let mut want = missed.clone();
    want.sort();
    assert_eq!(got, want);
    let (status, event) = env.api(Method::GET, &format!("/api/v1/events/{}", missed[0]), &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(event["deliveries"].as_array().map(Vec::len), Some(1), "{event}");

    // Recovering again creates nothing twice.
    let (status, again) = env.api_json(Method::POST, &recover, &token, &body).await;
    assert_eq!((status, again["total"].as_i64()), (StatusCode::ACCEPTED, Some(0)), "{again}");
    env.wait_job(&token, again["id"].as_str().expect("id"), Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(receiver.count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_resumes_after_its_ingest_is_killed_mid_job_and_queues_nothing_twice() {
    let mut env = spawn_env_with(&[("RECOVERY_BATCH_SIZE", "3"), ("RECOVERY_BATCH_PAUSE_MS", "300")]).await;
    let (receiver, up) = receiver_with_outage().await;
    let sub = env.subscription(SubSpec::new(&receiver.url("/hook")).retries(false, 0)).await;
    let _dispatcher = env.start_dispatcher(NO_CIRCUIT).await;
    let token = env.tenant_key("t1").await;

    let since = Utc::now() - chrono::Duration::seconds(1);
    let events = publish_many(&env, "invoice.created", 30).await;
    let recovered = delivery_ids(&env, &events).await;
    wait_failed(&env, 30).await;
    up.store(true, Ordering::SeqCst);
    let seen = receiver.count();

    let recover = format!("/api/v1/webhooks/subscriptions/{}/recover", sub.id);
    let (status, job) = env.api_json(Method::POST, &recover, &token, &json!({"since": rfc3339(since)})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let job_id = job["id"].as_str().expect("id").to_owned();
    let job_path = format!("/api/v1/webhooks/jobs/{job_id}");
    let midway = eventually(Duration::from_secs(30), || async {
        let (_, job) = env.api(Method::GET, &job_path, &token).await;
        (job["queued"].as_i64().unwrap_or(0) >= 6).then_some(job)
    })
    .await
    .expect("the job makes progress");
    assert_eq!(midway["status"], "running", "the job finished before ingest could be killed: {midway}");

    env.restart_ingest().await;
    let job: Value = env.wait_job(&token, &job_id, Duration::from_secs(60)).await;
    assert_eq!((job["status"].as_str(), job["queued"].as_i64()), (Some("completed"), Some(30)), "{job}");
    env.wait_succeeded(30, Duration::from_secs(40)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = requests_after(&receiver, seen);
    for id in &recovered {
        assert_eq!(after.get(id), Some(&1), "delivery {id} was not sent exactly once: {after:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_retry_queues_the_failed_deliveries_of_a_type_and_window() {
    let env = spawn_env().await;
    let (first, first_up) = receiver_with_outage().await;
    let (second, second_up) = receiver_with_outage().await;
    let _sub_one = env.subscription(SubSpec::new(&first.url("/hook")).retries(false, 0)).await;
    let sub_two = env.subscription(SubSpec::new(&second.url("/hook")).retries(false, 0)).await;
    let foreign = env.subscription(SubSpec { tenant: "t2".into(), ..SubSpec::new(&second.url("/t2")) }).await;
    let _dispatcher = env.start_dispatcher(NO_CIRCUIT).await;
    let token = env.tenant_key("t1").await;

    let early = publish_many(&env, "invoice.created", 1).await;
    wait_failed(&env, 2).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = Utc::now();
    let invoices = publish_many(&env, "invoice.created", 2).await;
    let customers = publish_many(&env, "customer.created", 2).await;
    wait_failed(&env, 10).await;
    first_up.store(true, Ordering::SeqCst);
    second_up.store(true, Ordering::SeqCst);
    let (seen_first, seen_second) = (first.count(), second.count());

    let retry = "/api/v1/webhooks/deliveries/retry";
    let (status, error) = env
        .api_json(Method::POST, retry, &token, &json!({"since": rfc3339(since), "event_type": "invoice.nope"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    let (status, _) = env
        .api_json(Method::POST, retry, &token, &json!({"since": rfc3339(since), "subscription_id": foreign.id}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another tenant's subscription");
    let (status, _) = env.api_json(Method::POST, retry, env.publisher_token(), &json!({"since": rfc3339(since)})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let body = json!({"since": rfc3339(since), "event_type": "invoice.created"});
    let (status, job) = env.api_json(Method::POST, retry, &token, &body).await;
    assert_eq!((status, job["kind"].as_str(), job["total"].as_i64()), (StatusCode::ACCEPTED, Some("retry"), Some(4)));
    let job = env.wait_job(&token, job["id"].as_str().expect("id"), Duration::from_secs(30)).await;
    assert_eq!((job["status"].as_str(), job["queued"].as_i64()), (Some("completed"), Some(4)), "{job}");
    env.wait_succeeded(4, Duration::from_secs(20)).await;

    let body = json!({"since": rfc3339(since), "subscription_id": sub_two.id});
    let (status, job) = env.api_json(Method::POST, retry, &token, &body).await;
    assert_eq!((status, job["total"].as_i64()), (StatusCode::ACCEPTED, Some(2)), "{job}");
    env.wait_job(&token, job["id"].as_str().expect("id"), Duration::from_secs(30)).await;
    env.wait_succeeded(6, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let invoice_ids = delivery_ids(&env, &invoices).await;
    let customer_ids = delivery_ids(&env, &customers).await;
    let early_ids = delivery_ids(&env, &early).await;
    let mut sent = requests_after(&first, seen_first);
    sent.extend(requests_after(&second, seen_second));
    for id in &invoice_ids {
        assert_eq!(sent.get(id), Some(&1), "invoice delivery {id}: {sent:?}");
    }
    for id in early_ids.iter().chain(&customer_ids) {
        let row = env.delivery(id.parse().expect("uuid")).await;
        let expected = usize::from(row.subscription_id == sub_two.id && customer_ids.contains(id));
        assert_eq!(sent.get(id).copied().unwrap_or(0), expected, "delivery {id}: {sent:?}");
    }
}

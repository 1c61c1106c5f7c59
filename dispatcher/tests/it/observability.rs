//! What operators see: the shipped Grafana dashboard and Prometheus alerts
//! refer only to metrics the running services export.

use std::{collections::BTreeSet, path::Path, time::Duration};

use lapin::options::ConfirmSelectOptions;
use serde_json::Value;
use shared::{
    amqp::{persistent_json, publish_confirmed},
    models::delivery::DeliveryStatus,
    testing::{amqp_url, eventually},
};

use crate::helpers::{spawn_env, Receiver, SubSpec};

/// The repository's root (this crate is one level below it).
fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root")
}

/// Every `webhooks_ingest_…` / `webhooks_dispatcher_…` name in `text`.
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("webhooks_") {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        let name = &tail[..end];
        // Not part of a longer identifier (e.g. a label value like `x_webhooks_y`).
        let standalone = !rest[..start].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
        if standalone && (name.starts_with("webhooks_ingest_") || name.starts_with("webhooks_dispatcher_")) {
            names.insert(name.to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// Whether the Prometheus text `exposition` has a sample of `name`.
fn exports(exposition: &str, name: &str) -> bool {
    exposition
        .lines()
        .any(|line| line.strip_prefix(name).is_some_and(|after| after.starts_with('{') || after.starts_with(' ')))
}

/// The names the dashboard's queries and the alert rules use.
fn names_referenced_by_shipped_files() -> BTreeSet<String> {
    let dashboard_path = repo_root().join("deploy/grafana/webhooks-dashboard.json");
    let dashboard = std::fs::read_to_string(&dashboard_path).expect("the dashboard is shipped");
    let dashboard: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let mut names = BTreeSet::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has a PromQL expr");
            names.extend(metric_names_in(expr));
        }
    }
    let alerts = std::fs::read_to_string(repo_root().join("deploy/prometheus/alerts.yml")).expect("alerts shipped");
    let rule_names = metric_names_in(&alerts);
    assert!(rule_names.iter().any(|n| n.starts_with("webhooks_dispatcher_")), "alerts cover the dispatcher");
    assert!(rule_names.iter().any(|n| n.starts_with("webhooks_ingest_")), "alerts cover ingest");
    names.extend(rule_names);
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_dashboard_and_alerts_use_only_metrics_the_services_export() {
    let referenced = names_referenced_by_shipped_files();
    assert!(referenced.len() >= 10, "found too few metric names: {referenced:?}");

    // A running system that has done the ordinary things once: an HTTP publish,
    // a delivery, and an AMQP message it had to reject.
    let env = spawn_env().await;
    let receiver = Receiver::always(200).await;
    env.subscription(SubSpec::new(&receiver.url("/hook"))).await;
    let dispatcher = env.start_dispatcher(&[]).await;
    let delivery = env.publish_one().await;
    env.wait_status(delivery.id, DeliveryStatus::Succeeded, Duration::from_secs(20)).await;
    let connection = shared::amqp::connect(&amqp_url()).await.expect("broker");
    let channel = connection.create_channel().await.expect("channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
    let exchange = env.ingest.state.topology.events_exchange();
    publish_confirmed(&channel, &exchange, "invoice.created", b"not json", persistent_json()).await.expect("published");

    let client = reqwest::Client::builder().no_proxy().build().expect("client");
    let scrape = |url: String| {
        let client = client.clone();
        async move { client.get(url).send().await.ok()?.text().await.ok() }
    };
    let ingest_url = format!("{}/metrics", env.base);
    let dispatcher_url = format!("http://{}/metrics", dispatcher.addr);
    // Event-driven series (the rejection, the relay's queue sample) appear within moments.
    let missing = eventually(Duration::from_secs(20), || async {
        let ingest = scrape(ingest_url.clone()).await?;
        let dispatcher = scrape(dispatcher_url.clone()).await?;
        let missing: Vec<&String> = referenced
            .iter()
            .filter(|name| {
                let exposition = if name.starts_with("webhooks_ingest_") { &ingest } else { &dispatcher };
                !exports(exposition, name)
            })
            .collect();
        missing.is_empty().then_some(())
    })
    .await;
    if missing.is_none() {
        let ingest = scrape(ingest_url).await.unwrap_or_default();
        let dispatcher = scrape(dispatcher_url).await.unwrap_or_default();
        let absent: Vec<&String> = referenced
            .iter()
            .filter(|n| !exports(if n.starts_with("webhooks_ingest_") { &ingest } else { &dispatcher }, n))
            .collect();
        panic!("the dashboard or the alerts use metrics no service exports: {absent:?}");
    }
    let _ = connection.close(200, "test done".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_exported_metric_is_prefixed_by_its_service_and_described() {
    let env = spawn_env().await;
    let dispatcher = env.start_dispatcher(&[]).await;
    let client = reqwest::Client::builder().no_proxy().build().expect("client");
    // Scrape each twice: the first requests' own series show in the second round.
    let urls = [format!("{}/metrics", env.base), format!("http://{}/metrics", dispatcher.addr)];
    for url in &urls {
        let _ = client.get(url).send().await.expect("scrape");
    }
    let mut expositions = Vec::new();
    for url in &urls {
        expositions.push(client.get(url).send().await.expect("scrape").text().await.expect("text"));
    }
    for exposition in &expositions {
        let described: BTreeSet<&str> =
            exposition.lines().filter_map(|l| l.strip_prefix("# HELP ")?.split(' ').next()).collect();
        let typed: BTreeSet<&str> =
            exposition.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
        assert!(typed.contains("webhooks_ingest_http_requests_total"), "{exposition}");
        assert!(typed.contains("webhooks_dispatcher_http_requests_total"), "{exposition}");
        for name in &typed {
            assert!(
                name.starts_with("webhooks_ingest_") || name.starts_with("webhooks_dispatcher_"),
                "metric {name} has no service prefix"
            );
            assert!(described.contains(name), "metric {name} has no # HELP description");
        }
    }
}

//! One run: create the subscriptions, then for each phase publish, wait for
//! every expected delivery (or the deadline), and measure.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;
use serde_json::json;

mod phase_report;

pub use phase_report::{
    CpuPerThousand, DeliveryReport, PhaseReport, PublishReport, TimelineBucket, UnhealthyReport, TIMELINE_BUCKET,
};

use phase_report::{delivery_report, publish_report, unhealthy_report};

use crate::{
    api::{Api, CreatedSubscription},
    durability::{inject, DbSizeSampler, FaultPlan},
    error::BenchError,
    metrics::{self, MetricDeltas, QueueWatcher, Scrape},
    pgstats,
    procstat::{Sampler, Watch},
    publisher::{publish_all, Load, OutgoingEvent, Publisher, Via},
    scenario::{Breakage, Layout, PhaseSpec, Role, Scenario},
    services::{Services, Target},
    sink::{event_id, SignatureReport, Sink, SinkSettings, StrayReport},
};

/// Everything that shapes a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunOptions {
    pub scenario: Scenario,
    pub subscriptions: usize,
    /// Events per phase.
    pub events: usize,
    pub via: Via,
    pub load: Load,
    /// Longest a phase may take, publishing and waiting included.
    pub deadline: Duration,
    /// Held by the receiver before answering each healthy request.
    pub sink_delay: Duration,
    /// Verify the signatures of one request in this many.
    pub verify_every: u64,
    /// Wait after the last expected delivery, so late duplicates are counted.
    pub settle: Duration,
    /// `timeout_seconds` of every subscription.
    pub subscription_timeout_secs: u64,
    /// Receiver HTTP worker threads.
    pub sink_workers: usize,
    /// `/proc` sampling interval.
    pub sample_every: Duration,
    /// Width of the per-window delivery and latency figures.
    pub window: Duration,
    /// How often the database's size is sampled.
    pub db_size_every: Duration,
    /// A command run once during each phase (e.g. stopping a broker node).
    pub fault: Option<FaultPlan>,
}

impl RunOptions {
    /// The scenario's defaults.
    pub fn new(scenario: Scenario) -> Self {
        Self {
            scenario,
            subscriptions: scenario.default_subscriptions(),
            events: scenario.default_events(),
            via: Via::Http,
            load: Load::Concurrency(32),
            deadline: Duration::from_secs(300),
            sink_delay: scenario.default_sink_delay(),
            verify_every: 50,
            settle: Duration::from_millis(500),
            // Small where targets hang, so a hang costs the dispatcher little.
            subscription_timeout_secs: if scenario == Scenario::Unhealthy { 2 } else { 10 },
            sink_workers: 2,
            sample_every: Duration::from_millis(100),
            window: scenario.default_window(),
            db_size_every: Duration::from_secs(10),
            fault: None,
        }
    }

    /// The subscription layout these options ask for.
    pub fn layout(&self) -> Result<Layout, BenchError> {
        if self.scenario == Scenario::Neighbours {
            return Layout::neighbours(self.subscriptions.saturating_sub(1).max(1)).map_err(BenchError::Options);
        }
        Layout::new(self.subscriptions, self.scenario.fanout(self.subscriptions)).map_err(BenchError::Options)
    }
}

/// What a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub phases: Vec<PhaseReport>,
    pub signatures: SignatureReport,
    pub strays: StrayReport,
}

/// A subscription made for the run.
struct BenchSubscription {
    id: String,
    tenant: usize,
}

/// Runs every phase of `options.scenario` against `services`.
pub async fn run<S: Services>(services: &mut S, options: &RunOptions) -> Result<RunResult, BenchError> {
    let layout = options.layout()?;
    let target = services.target().clone();
    if target.tenants.len() < layout.tenants {
        return Err(BenchError::Options(format!(
            "{} subscriptions at fan-out {} need {} tenant keys (--tenant-token), got {}",
            layout.subscriptions,
            layout.fanout,
            layout.tenants,
            target.tenants.len()
        )));
    }
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let sink = Sink::start(SinkSettings {
        delay: options.sink_delay,
        hang: Duration::from_secs(options.subscription_timeout_secs + 1),
        verify_every: options.verify_every,
        tag: tag.clone(),
        workers: options.sink_workers,
    })?;
    let api = Api::new(&target.ingest_url, 32)?;
    for tenant in target.tenants.iter().take(layout.tenants) {
        if api.has_subscriptions(&tenant.token).await? {
            log::warn!("tenant {} already has subscriptions; they receive the bench's events too", tenant.tenant_id);
        }
    }
    let subscriptions = create_subscriptions(&api, &target, &layout, &sink, options).await;
    let result = match subscriptions {
        Ok(subs) => {
            let phases = run_phases(services, options, &layout, &api, &sink, &subs, &tag).await;
            if target.delete_subscriptions {
                delete_subscriptions(&api, &target, &subs).await;
            }
            phases
        }
        Err(err) => Err(err),
    };
    let signatures = sink.signatures();
    let strays = sink.strays();
    sink.stop().await;
    Ok(RunResult { phases: result?, signatures, strays })
}

async fn create_subscriptions(
    api: &Api,
    target: &Target,
    layout: &Layout,
    sink: &Sink,
    options: &RunOptions,
) -> Result<Vec<BenchSubscription>, BenchError> {
    let created: Vec<(usize, CreatedSubscription)> = futures_util::stream::iter(0..layout.subscriptions)
        .map(|sub| {
            let slot = layout.slot_of_subscription(sub);
            let body = json!({
                "url": sink.url(Role::Ok, sub),
                "description": format!("webhooks-bench subscription {sub}"),
                "events": [slot.event_type],
                "timeout_seconds": options.subscription_timeout_secs,
                "retry_enabled": true,
                "max_retries": 3,
            });
            let token = target.tenants[slot.tenant].token.clone();
            async move { api.create_subscription(&token, &body).await.map(|created| (sub, created)) }
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;
    let mut subs: Vec<Option<BenchSubscription>> = (0..layout.subscriptions).map(|_| None).collect();
    for (sub, created) in created {
        sink.set_secret(sub, created.secret);
        subs[sub] = Some(BenchSubscription { id: created.id, tenant: layout.slot_of_subscription(sub).tenant });
    }
    Ok(subs.into_iter().flatten().collect())
}

async fn delete_subscriptions(api: &Api, target: &Target, subs: &[BenchSubscription]) {
    let failures = futures_util::stream::iter(subs)
        .map(|sub| api.delete_subscription(&target.tenants[sub.tenant].token, &sub.id))
        .buffer_unordered(16)
        .filter(|r| std::future::ready(r.is_err()))
        .count()
        .await;
    if failures > 0 {
        log::warn!("{failures} bench subscriptions could not be deleted");
    }
}

async fn run_phases<S: Services>(
    services: &mut S,
    options: &RunOptions,
    layout: &Layout,
    api: &Api,
    sink: &Sink,
    subs: &[BenchSubscription],
    tag: &str,
) -> Result<Vec<PhaseReport>, BenchError> {
    let mut roles = vec![Role::Ok; layout.subscriptions];
    let mut reports = Vec::new();
    let mut dispatchers = services.target().dispatcher_metrics_urls.len().max(1);
    let pool = match options.load {
        Load::Concurrency(n) => n,
        Load::Rate(r) => (r / 10.0).ceil() as usize,
    };
    let target = services.target().clone();
    let publisher = Arc::new(match options.via {
        Via::Http => Publisher::http(&target.ingest_url, &target.publisher_token, pool)?,
        Via::Amqp => Publisher::amqp(&target.amqp_url, &target.amqp_prefix).await?,
    });
    for (index, phase) in options.scenario.phases().into_iter().enumerate() {
        if phase.add_dispatcher {
            services.add_dispatcher().await?;
            dispatchers += 1;
        }
        if phase.breakage != Breakage::None {
            make_unhealthy(api, services.target(), sink, subs, &mut roles, phase.breakage).await?;
        }
        let phase_number = u16::try_from(index).map_err(|_| BenchError::Options("too many phases".into()))?;
        let mut report =
            run_phase(services.target(), options, layout, sink, &publisher, &roles, &phase, phase_number, tag).await?;
        report.dispatchers = dispatchers;
        eprintln!(
            "phase {:?}: {} of {} deliveries in {:.1} s",
            report.name,
            report.deliveries.received,
            report.deliveries.expected,
            report.deliveries.seconds_first_to_last
        );
        reports.push(report);
    }
    Ok(reports)
}

/// Points the subscriptions `breakage` names at failing or hanging endpoints, retries off.
async fn make_unhealthy(
    api: &Api,
    target: &Target,
    sink: &Sink,
    subs: &[BenchSubscription],
    roles: &mut [Role],
    breakage: Breakage,
) -> Result<(), BenchError> {
    for (n, sub) in subs.iter().enumerate() {
        let role = breakage.role(n);
        if role == Role::Ok {
            continue;
        }
        let body = json!({"url": sink.url(role, n), "retry_enabled": false});
        api.patch_subscription(&target.tenants[sub.tenant].token, &sub.id, &body).await?;
        roles[n] = role;
    }
    Ok(())
}

async fn scrape_all(client: &reqwest::Client, target: &Target) -> (Option<Scrape>, Vec<Option<Scrape>>) {
    let ingest = metrics::scrape(client, &format!("{}/metrics", target.ingest_url.trim_end_matches('/'))).await;
    let mut dispatchers = Vec::new();
    for url in &target.dispatcher_metrics_urls {
        dispatchers.push(metrics::scrape(client, url).await);
    }
    (ingest, dispatchers)
}

#[expect(clippy::too_many_arguments, reason = "one phase needs the whole run's context")]
async fn run_phase(
    target: &Target,
    options: &RunOptions,
    layout: &Layout,
    sink: &Sink,
    publisher: &Arc<Publisher>,
    roles: &[Role],
    phase: &PhaseSpec,
    phase_number: u16,
    tag: &str,
) -> Result<PhaseReport, BenchError> {
    let events: Arc<Vec<OutgoingEvent>> = Arc::new(
        (0..options.events)
            .map(|i| {
                let slot = layout.slot_of_event(i);
                let index = i as u32;
                OutgoingEvent {
                    index,
                    event_id: event_id(tag, phase_number, index),
                    event_type: slot.event_type,
                    tenant_id: target.tenants[slot.tenant].tenant_id.clone(),
                }
            })
            .collect(),
    );
    let healthy_in_slot =
        |event: usize| layout.slot_of_event(event).subscriptions.clone().filter(|&s| roles[s] == Role::Ok).count();

    let metrics_client = reqwest::Client::builder().no_proxy().build()?;
    let before = scrape_all(&metrics_client, target).await;
    let watch = Watch {
        ingest: target.ingest_pids.clone(),
        dispatcher: target.dispatcher_pids.clone(),
        database_name: target.database_name.clone(),
    };
    let pg_before = match (&target.admin_url, &target.database_name) {
        (Some(admin), Some(database)) => pgstats::read(admin, database).await,
        _ => None,
    };
    let sampler = Sampler::start(watch, options.sample_every);
    let db_size = match (&target.admin_url, &target.database_name) {
        (Some(admin), Some(database)) => {
            Some(DbSizeSampler::start(admin.clone(), database.clone(), options.db_size_every))
        }
        _ => None,
    };
    let fault = options.fault.clone().map(|plan| inject(plan, target.amqp_prefix.clone()));
    let queues = QueueWatcher::start(target.amqp_url.clone(), target.amqp_prefix.clone(), Duration::from_millis(250));
    let phase_start = Instant::now();
    let deadline = phase_start + options.deadline;

    let records = publish_all(publisher.clone(), events.clone(), options.load, deadline).await;
    let expected: usize = records.iter().filter(|r| r.outcome.is_ok()).map(|r| healthy_in_slot(r.index as usize)).sum();
    let mut timed_out = false;
    while (sink.unique_ok(phase_number) as usize) < expected {
        if Instant::now() >= deadline {
            timed_out = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let usage = sampler.finish();
    let database_size = match db_size {
        Some(sampler) => sampler.finish().await,
        None => Vec::new(),
    };
    let fault = match fault {
        Some(task) if task.is_finished() => task.await.ok(),
        Some(task) => {
            task.abort();
            None
        }
        None => None,
    };
    let queues = queues.finish().await;
    let after = scrape_all(&metrics_client, target).await;
    tokio::time::sleep(options.settle).await;
    let receipts = sink.receipts(phase_number);
    let postgres = match (&pg_before, &target.admin_url, &target.database_name) {
        (Some(before), Some(admin), Some(database)) => {
            // Backends report their counters at most once a second.
            tokio::time::sleep(Duration::from_millis(1_100).saturating_sub(options.settle)).await;
            pgstats::read(admin, database).await.map(|after| before.until(&after))
        }
        _ => None,
    };

    let publish = publish_report(&records, layout);
    let mut deliveries = delivery_report(&records, &receipts, layout, roles, options.window);
    deliveries.timed_out = timed_out;
    let unhealthy = (phase.breakage != Breakage::None).then(|| unhealthy_report(&records, &receipts, layout, roles));
    let per_thousand = |seconds: f64| {
        if deliveries.received == 0 {
            0.0
        } else {
            seconds * 1_000.0 / deliveries.received as f64
        }
    };
    let cpu = &usage.cpu;
    let cpu_per_1000_deliveries = CpuPerThousand {
        services: per_thousand(cpu.services()),
        ingest: cpu.ingest.map(per_thousand),
        dispatcher: cpu.dispatcher.map(per_thousand),
        postgres: per_thousand(cpu.postgres),
        rabbitmq: per_thousand(cpu.rabbitmq),
        bench: per_thousand(cpu.bench),
        machine: per_thousand(cpu.machine),
    };
    let delta = |b: &Option<Scrape>, a: &Option<Scrape>| match (b, a) {
        (Some(b), Some(a)) => metrics::deltas(b, a),
        _ => MetricDeltas::default(),
    };
    Ok(PhaseReport {
        name: phase.name.clone(),
        dispatchers: 1,
        events_planned: options.events,
        publish,
        deliveries,
        unhealthy,
        cpu_per_1000_deliveries,
        usage,
        queues,
        postgres,
        ingest_metrics: delta(&before.0, &after.0),
        dispatcher_metrics: before.1.iter().zip(after.1.iter()).map(|(b, a)| delta(b, a)).collect(),
        database_size,
        fault,
    })
}

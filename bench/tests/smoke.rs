//! Keeps the harness working: small runs against ingest and a dispatcher
//! started in-process (real PostgreSQL and RabbitMQ), every signature checked.
//! Correctness only: nothing here depends on how fast the run is.

use std::time::Duration;

use bench::{
    error::BenchError,
    machine::MachineInfo,
    publisher::{Load, Via},
    report::Report,
    run::{run, RunOptions},
    scenario::Scenario,
    services::{Services, Target, TenantKey},
};
use shared::{
    config::Config,
    models::api_key::Principal,
    testing::{create_api_key, TestDb, TestEnvironment, TestPrefix},
};

/// Ingest and dispatchers running in this process, with their own database and prefix.
struct InProcess {
    target: Target,
    config: Config,
    _ingest: ingest::server::Ingest,
    dispatchers: Vec<dispatcher::server::Dispatcher>,
    // Dropped last: the queues and the database go after the services stop using them.
    _prefix: TestPrefix,
    _db: TestDb,
}

impl InProcess {
    async fn start(tenants: usize) -> Self {
        let TestEnvironment { config, prefix, db } = TestEnvironment::create(&[]).await;
        let ingest = ingest::server::start(config.clone(), 1).await.expect("ingest starts");
        ingest.state.broker.wait_session(Duration::from_secs(10)).await.expect("ingest reaches the broker");
        let pool = &ingest.state.pool;
        let publisher_token = create_api_key(pool, &Principal::Publisher, "bench").await;
        let mut keys = Vec::new();
        for k in 0..tenants {
            let tenant_id = format!("bench-tenant-{k}");
            let token = create_api_key(pool, &Principal::Tenant(tenant_id.clone()), "bench").await;
            keys.push(TenantKey { tenant_id, token });
        }
        let target = Target {
            ingest_url: format!("http://{}", ingest.addr),
            tenants: keys,
            publisher_token,
            amqp_url: config.amqp_url.clone(),
            amqp_prefix: config.amqp_prefix.clone(),
            dispatcher_metrics_urls: Vec::new(),
            database_name: Some(db.name.clone()),
            admin_url: Some(shared::testing::admin_url()),
            ingest_pids: Vec::new(),
            dispatcher_pids: Vec::new(),
            delete_subscriptions: false,
        };
        let mut services = Self { target, config, _ingest: ingest, dispatchers: Vec::new(), _prefix: prefix, _db: db };
        services.add_dispatcher().await.expect("dispatcher starts");
        services
    }
}

impl Services for InProcess {
    fn target(&self) -> &Target {
        &self.target
    }

    async fn add_dispatcher(&mut self) -> Result<(), BenchError> {
        let dispatcher =
            dispatcher::server::start(self.config.clone()).await.map_err(|e| BenchError::Spawn(e.to_string()))?;
        let base = format!("http://{}", dispatcher.addr);
        bench::api::wait_ready(&reqwest::Client::new(), &base, Duration::from_secs(30)).await?;
        self.target.dispatcher_metrics_urls.push(format!("{base}/metrics"));
        self.dispatchers.push(dispatcher);
        Ok(())
    }
}

fn small_run(scenario: Scenario, subscriptions: usize, events: usize) -> RunOptions {
    let mut options = RunOptions::new(scenario);
    options.subscriptions = subscriptions;
    options.events = events;
    options.load = Load::Concurrency(4);
    options.verify_every = 1;
    options.deadline = Duration::from_secs(60);
    options.settle = Duration::from_millis(200);
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_fanout1_run_over_http_delivers_every_event_exactly_once_with_valid_signatures() {
    // 30 subscriptions at fan-out 1 span two tenants (25 event types each).
    let mut services = InProcess::start(2).await;
    let options = small_run(Scenario::Fanout1, 30, 50);

    let result = run(&mut services, &options).await.expect("the run completes");

    let phase = &result.phases[0];
    assert_eq!(phase.publish.accepted, 50, "publish errors: {:?}", phase.publish.error_samples);
    assert_eq!(
        phase.publish.deliveries_mismatch, 0,
        "ingest reported another number of deliveries than the layout has"
    );
    let deliveries = &phase.deliveries;
    assert_eq!(deliveries.expected, 50);
    assert_eq!(deliveries.received, 50, "lost {} deliveries", deliveries.lost);
    assert_eq!(deliveries.lost, 0);
    assert_eq!(deliveries.duplicated, 0);
    assert_eq!(deliveries.unexpected, 0);
    assert_eq!(deliveries.latency.count, 50);
    assert!(result.signatures.checked >= 50, "every request is verified");
    assert_eq!(result.signatures.failed, 0, "signature failures: {:?}", result.signatures.failures);
    assert_eq!(result.strays.malformed, 0);

    let report = Report::new(options, MachineInfo::default(), "in-process", result);
    assert!(report.table().contains("deliveries expected / received"));
    assert!(report.checks.iter().any(|c| c.target.contains("0 lost, 0 duplicated") && c.pass));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_fanout10_run_over_amqp_delivers_every_copy_exactly_once() {
    let mut services = InProcess::start(1).await;
    let mut options = small_run(Scenario::Fanout10, 20, 30);
    options.via = Via::Amqp;

    let result = run(&mut services, &options).await.expect("the run completes");

    let phase = &result.phases[0];
    assert_eq!(phase.publish.accepted, 30, "publish errors: {:?}", phase.publish.error_samples);
    let deliveries = &phase.deliveries;
    assert_eq!((deliveries.expected, deliveries.received), (300, 300), "lost {} deliveries", deliveries.lost);
    assert_eq!((deliveries.duplicated, deliveries.unexpected), (0, 0));
    assert_eq!(result.signatures.failed, 0, "signature failures: {:?}", result.signatures.failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_run_keeps_delivering_to_the_healthy_subscriptions() {
    let mut services = InProcess::start(1).await;
    let mut options = small_run(Scenario::Unhealthy, 20, 40);
    options.subscription_timeout_secs = 1;

    let result = run(&mut services, &options).await.expect("the run completes");

    assert_eq!(result.phases.len(), 2);
    let (baseline, sick) = (&result.phases[0], &result.phases[1]);
    assert_eq!((baseline.deliveries.expected, baseline.deliveries.lost, baseline.deliveries.duplicated), (40, 0, 0));
    // 2 of 20 subscriptions (1 failing, 1 hanging) get 2 of every 20 events.
    assert_eq!((sick.deliveries.expected, sick.deliveries.lost, sick.deliveries.duplicated), (36, 0, 0));
    let unhealthy = sick.unhealthy.as_ref().expect("unhealthy phase report");
    assert_eq!((unhealthy.failing_subscriptions, unhealthy.hanging_subscriptions), (1, 1));
    assert_eq!(unhealthy.events_to_unhealthy, 4);
    assert_eq!(result.signatures.failed, 0, "signature failures: {:?}", result.signatures.failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_dispatcher_joins_between_the_scale_phases() {
    let mut services = InProcess::start(1).await;
    let mut options = small_run(Scenario::Scale, 10, 30);
    options.sink_delay = Duration::from_millis(5);

    let result = run(&mut services, &options).await.expect("the run completes");

    assert_eq!(services.dispatchers.len(), 2);
    let dispatchers: Vec<usize> = result.phases.iter().map(|p| p.dispatchers).collect();
    assert_eq!(dispatchers, vec![1, 2]);
    for phase in &result.phases {
        assert_eq!((phase.deliveries.expected, phase.deliveries.lost, phase.deliveries.duplicated), (30, 0, 0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_tenant_keys_for_the_layout_is_an_options_error() {
    let mut services = InProcess::start(1).await;
    // 30 subscriptions at fan-out 1 need two tenants.
    let options = small_run(Scenario::Fanout1, 30, 10);
    let err = run(&mut services, &options).await.expect_err("refused");
    assert!(matches!(err, BenchError::Options(_)), "{err}");
}

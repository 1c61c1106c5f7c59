//! `webhooks-bench`: load-tests ingest and the dispatcher.
//!
//! Exit status: 0 when every target passed, 2 when the run completed but a
//! target was missed (or a delivery lost or duplicated), 1 on error.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use bench::{
    error::BenchError,
    machine::MachineInfo,
    publisher::{Load, Via},
    report::Report,
    run::{run, RunOptions, RunResult},
    scenario::Scenario,
    services::{External, Services, Target, TenantKey},
    spawn::{SpawnOptions, Spawned},
};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "webhooks-bench",
    version,
    about = "Publishes events, receives the webhooks, and reports throughput, latency, losses and CPU.",
    after_help = "With --spawn, build the services first: cargo build --release -p ingest -p dispatcher -p bench"
)]
struct Cli {
    /// The load shape.
    #[arg(long, value_enum, default_value_t = Scenario::Fanout1)]
    scenario: Scenario,
    /// Events per phase (default per scenario: fanout1 10000, fanout10 2000, broadcast 10, unhealthy 10000, scale 5000,
    /// soak 300000, hot 5000, neighbours 15000, failing 10000).
    #[arg(long)]
    events: Option<usize>,
    /// Subscriptions (default per scenario: 100; broadcast 1000; hot 1; neighbours 21).
    #[arg(long)]
    subscriptions: Option<usize>,
    /// Publish over HTTP (`POST /api/v1/events`) or AMQP (`{prefix}.events`).
    #[arg(long, value_enum, default_value_t = Via::Http)]
    via: Via,
    /// Publishes in flight (closed loop). Default 32 unless --rate is given.
    #[arg(long, conflicts_with = "rate")]
    concurrency: Option<usize>,
    /// Publishes started per second (open loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Longest a phase may take, in seconds (publishing and waiting).
    #[arg(long, default_value_t = 300)]
    deadline: u64,
    /// Milliseconds the receiver holds each healthy request (scale: 20).
    #[arg(long)]
    sink_delay: Option<u64>,
    /// Verify the signatures of one request in this many.
    #[arg(long, default_value_t = 50)]
    verify_every: u64,
    /// Milliseconds to wait after the last expected delivery for late duplicates.
    #[arg(long, default_value_t = 500)]
    settle_ms: u64,
    /// Also write the full report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,

    /// Start ingest and dispatcher(s) from the binaries next to this one, with a fresh database.
    /// Such runs take turns: one waits while another holds `$TMPDIR/webhooks-bench.lock`.
    #[arg(long)]
    spawn: bool,
    /// Server where --spawn creates its database (also asked for its version).
    #[arg(long, env = "BENCH_DATABASE_ADMIN_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    database_admin_url: String,
    /// DISPATCHER_CONCURRENCY of spawned dispatchers. Scale's default is 8: with the
    /// 20 ms receiver, one dispatcher then tops out near 300 deliveries/s, well below
    /// what a 2-core machine can do, so the dispatcher (not the CPU) is the bottleneck.
    #[arg(long)]
    dispatcher_concurrency: Option<usize>,
    /// RETRY_SCHEDULE of spawned services (unhealthy default: 1h, so retries stay out of the run).
    #[arg(long)]
    retry_schedule: Option<String>,
    /// Keep the spawned services' logs (always kept after an error).
    #[arg(long)]
    keep_logs: bool,
    /// KEY=VALUE added to the spawned services' environment (repeat), e.g.
    /// `RETENTION=2m` or `AMQP_QUEUE_TYPE=quorum`. Soak adds `RETENTION=2m` unless given.
    #[arg(long = "service-env", value_parser = parse_key_value)]
    service_env: Vec<(String, String)>,
    /// Seconds into each phase at which to run --fault-command.
    #[arg(long, requires = "fault_command")]
    fault_after: Option<u64>,
    /// A shell command run once per phase at --fault-after (it gets
    /// BENCH_AMQP_PREFIX), e.g. stopping the broker node that leads the dispatch queue.
    #[arg(long, requires = "fault_after")]
    fault_command: Option<String>,
    /// With --spawn: instead of a scenario, measure ingest's RSS under 200
    /// concurrent 256 KiB publishes, then --memory-messages large AMQP messages.
    #[arg(long, requires = "spawn")]
    memory: bool,
    /// Concurrent 256 KiB publishes of the --memory run (0: skip them, so the
    /// AMQP load is measured on a fresh ingest).
    #[arg(long, default_value_t = 200)]
    memory_publishes: usize,
    /// Large AMQP messages the --memory run publishes (0: skip them).
    #[arg(long, default_value_t = 10)]
    memory_messages: usize,
    /// Size in MB of each of them.
    #[arg(long, default_value_t = 20)]
    memory_message_mb: usize,
    /// Width in seconds of the per-window throughput and latency figures
    /// (default: soak 60, otherwise 5).
    #[arg(long)]
    window_secs: Option<u64>,

    /// Ingest's server root, when not spawning.
    #[arg(long, env = "BENCH_INGEST_URL", default_value = "http://127.0.0.1:8080")]
    ingest_url: String,
    /// A dispatcher's /metrics URL, when not spawning (repeat for several).
    #[arg(long = "dispatcher-metrics-url", env = "BENCH_DISPATCHER_METRICS_URLS", value_delimiter = ',')]
    dispatcher_metrics_urls: Vec<String>,
    /// TENANT_ID=TOKEN of a tenant key, when not spawning (repeat for several tenants).
    #[arg(long = "tenant-token", env = "BENCH_TENANT_TOKENS", value_delimiter = ',', value_parser = TenantKey::parse)]
    tenant_tokens: Vec<TenantKey>,
    /// A publisher key, when not spawning.
    #[arg(long, env = "BENCH_PUBLISHER_TOKEN")]
    publisher_token: Option<String>,
    /// Broker, for --via amqp and queue depths.
    #[arg(long, env = "AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    /// The services' AMQP_PREFIX, when not spawning.
    #[arg(long, env = "AMQP_PREFIX", default_value = "webhooks")]
    amqp_prefix: String,
    /// The services' database, when not spawning: count only its PostgreSQL backends.
    #[arg(long, env = "BENCH_DATABASE_NAME")]
    database_name: Option<String>,
}

impl Cli {
    fn options(&self) -> Result<RunOptions, BenchError> {
        let mut options = RunOptions::new(self.scenario);
        if let Some(events) = self.events {
            options.events = events;
        }
        if let Some(subscriptions) = self.subscriptions {
            options.subscriptions = subscriptions;
        }
        options.via = self.via;
        options.load = match (self.rate, self.concurrency) {
            (Some(rate), _) if rate > 0.0 => Load::Rate(rate),
            (Some(_), _) => return Err(BenchError::Options("--rate must be above 0".into())),
            (None, Some(n)) if n > 0 => Load::Concurrency(n),
            (None, Some(_)) => return Err(BenchError::Options("--concurrency must be at least 1".into())),
            (None, None) => Load::Concurrency(32),
        };
        if options.events == 0 || options.events > u32::MAX as usize {
            return Err(BenchError::Options("--events must be at least 1".into()));
        }
        options.deadline = Duration::from_secs(self.deadline.max(1));
        if let Some(ms) = self.sink_delay {
            options.sink_delay = Duration::from_millis(ms);
        }
        options.verify_every = self.verify_every.max(1);
        if let Some(secs) = self.window_secs {
            options.window = Duration::from_secs(secs.max(1));
        }
        if let (Some(after), Some(command)) = (self.fault_after, &self.fault_command) {
            options.fault =
                Some(bench::durability::FaultPlan { after: Duration::from_secs(after), command: command.clone() });
        }
        if self.scenario == Scenario::Soak {
            // A steady 500 events/s for 10 minutes unless told otherwise.
            if self.rate.is_none() && self.concurrency.is_none() {
                options.load = Load::Rate(500.0);
            }
            if self.deadline == 300 {
                options.deadline = Duration::from_secs(900);
            }
        }
        options.settle = Duration::from_millis(self.settle_ms);
        options.layout()?;
        Ok(options)
    }

    fn external_target(&self) -> Result<Target, BenchError> {
        let publisher_token = self.publisher_token.clone().ok_or_else(|| {
            BenchError::Options(
                "without --spawn, pass --publisher-token (or BENCH_PUBLISHER_TOKEN) and --tenant-token".into(),
            )
        })?;
        let mut dispatcher_metrics_urls = self.dispatcher_metrics_urls.clone();
        if dispatcher_metrics_urls.is_empty() {
            dispatcher_metrics_urls.push("http://127.0.0.1:9091/metrics".into());
        }
        let dispatcher_pids =
            dispatcher_metrics_urls.iter().filter_map(|url| service_pid(url, bench::spawn::DISPATCHER_BIN)).collect();
        Ok(Target {
            ingest_url: self.ingest_url.clone(),
            tenants: self.tenant_tokens.clone(),
            publisher_token,
            amqp_url: self.amqp_url.clone(),
            amqp_prefix: self.amqp_prefix.clone(),
            dispatcher_metrics_urls,
            database_name: self.database_name.clone(),
            admin_url: Some(self.database_admin_url.clone()),
            ingest_pids: service_pid(&self.ingest_url, bench::spawn::INGEST_BIN).into_iter().collect(),
            dispatcher_pids,
            delete_subscriptions: true,
        })
    }
}

fn parse_key_value(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{value:?} is not KEY=VALUE")),
    }
}

/// The process serving `url` when it is on this machine, else the only
/// process named `name`; `None` (CPU and memory not measured) when unsure.
fn service_pid(url: &str, name: &str) -> Option<u32> {
    let parsed = url::Url::parse(url).ok()?;
    let local = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]" | "0.0.0.0"));
    if let Some(pid) = parsed.port_or_known_default().filter(|_| local).and_then(bench::procstat::pid_listening_on) {
        return Some(pid);
    }
    match bench::procstat::find_by_name(name).as_slice() {
        [only] => Some(*only),
        _ => {
            log::warn!("cannot tell which process serves {url}; its CPU and memory are not measured");
            None
        }
    }
}

fn main() -> ExitCode {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).try_init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench_main(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_until_interrupted<S: Services>(services: &mut S, options: &RunOptions) -> Result<RunResult, BenchError> {
    tokio::select! {
        result = run(services, options) => result,
        _ = tokio::signal::ctrl_c() => Err(BenchError::Interrupted),
    }
}

async fn bench_main(cli: Cli) -> anyhow::Result<bool> {
    let options = cli.options()?;
    // Spawned runs measure the machine: one at a time (held to the end).
    let _run_lock = if cli.spawn { Some(bench::run_lock::acquire().await?) } else { None };
    let machine = MachineInfo::collect(&cli.database_admin_url).await;
    if machine.load_average_at_start > 1.0 {
        eprintln!(
            "warning: load average is {:.2}; other work on this machine will skew the numbers",
            machine.load_average_at_start
        );
    }
    let (result, mode) = if cli.spawn {
        let layout = options.layout()?;
        let mut spawned = Spawned::new(SpawnOptions {
            admin_url: cli.database_admin_url.clone(),
            amqp_url: cli.amqp_url.clone(),
            tenants: layout.tenants,
            dispatchers: 1,
            retry_schedule: cli.retry_schedule.clone().unwrap_or_else(|| match cli.scenario {
                Scenario::Unhealthy | Scenario::Failing => "1h".into(),
                _ => "5m,1h,6h".into(),
            }),
            dispatcher_concurrency: cli.dispatcher_concurrency.or((cli.scenario == Scenario::Scale).then_some(8)),
            bin_dir: None,
            extra_env: {
                let mut env = cli.service_env.clone();
                if cli.scenario == Scenario::Soak && !env.iter().any(|(k, _)| k == "RETENTION") {
                    env.push(("RETENTION".into(), "2m".into()));
                }
                env
            },
        });
        if cli.memory {
            let measured = match spawned.boot().await {
                Ok(()) => {
                    bench::memory::run(
                        bench::services::Services::target(&spawned),
                        cli.memory_publishes,
                        cli.memory_messages,
                        cli.memory_message_mb * 1_000_000,
                    )
                    .await
                }
                Err(err) => Err(err),
            };
            spawned.shutdown(cli.keep_logs || measured.is_err()).await;
            let report = measured?;
            print!("{}", report.table());
            if let Some(path) = &cli.json {
                std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
            }
            return Ok(true);
        }
        let result = tokio::select! {
            booted = spawned.boot() => match booted {
                Ok(()) => run_until_interrupted(&mut spawned, &options).await,
                Err(err) => Err(err),
            },
            _ = tokio::signal::ctrl_c() => Err(BenchError::Interrupted),
        };
        let keep_logs = cli.keep_logs || result.is_err();
        spawned.shutdown(keep_logs).await;
        if keep_logs {
            eprintln!("service logs: {}", spawned.log_dir().display());
        }
        (result?, "spawn")
    } else {
        let mut external = External { target: cli.external_target()? };
        (run_until_interrupted(&mut external, &options).await?, "external")
    };
    let report = Report::new(options, machine, mode, result);
    print!("{}", report.table());
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
        eprintln!("report written to {}", path.display());
    }
    Ok(report.passed())
}

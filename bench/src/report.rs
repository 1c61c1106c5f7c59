//! The report: the run's results, the targets they are checked against, and
//! the table printed on stdout.

use std::fmt::Write as _;

use serde::Serialize;

use crate::{
    machine::MachineInfo,
    publisher::Load,
    run::{PhaseReport, RunOptions, RunResult},
    scenario::Scenario,
};

/// One target and how the run did against it.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub target: String,
    pub measured: String,
    pub pass: bool,
}

/// Everything written to `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub options: RunOptions,
    pub machine: MachineInfo,
    /// `spawn`, `external` or `in-process`.
    pub services: String,
    #[serde(flatten)]
    pub result: RunResult,
    pub checks: Vec<Check>,
}

/// Resident memory limit of each service process, MiB.
const RSS_LIMIT_MIB: f64 = 64.0;

impl Report {
    pub fn new(options: RunOptions, machine: MachineInfo, services: &str, result: RunResult) -> Self {
        let checks = checks(&options, &result);
        Self { options, machine, services: services.to_owned(), result, checks }
    }

    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.pass)
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let o = &self.options;
        let load = match o.load {
            Load::Concurrency(n) => format!("concurrency {n}"),
            Load::Rate(r) => format!("{r} events/s"),
        };
        let _ = writeln!(
            out,
            "scenario {:?}, via {:?}, {load}, {} subscriptions, {} events per phase, sink delay {} ms, services {}",
            o.scenario,
            o.via,
            o.subscriptions,
            o.events,
            o.sink_delay.as_millis(),
            self.services
        );
        let m = &self.machine;
        let _ = writeln!(
            out,
            "machine: {} CPUs {}, {:.1} GiB RAM, PostgreSQL {}, RabbitMQ {}, load average {:.2} at start\n",
            m.cpus, m.cpu_model, m.memory_gib, m.postgres, m.rabbitmq, m.load_average_at_start
        );
        let phases = &self.result.phases;
        let mut rows: Vec<(String, Vec<String>)> = Vec::new();
        let mut row = |label: &str, f: &dyn Fn(&PhaseReport) -> String| {
            rows.push((label.to_owned(), phases.iter().map(f).collect()));
        };
        let opt = |v: Option<f64>, digits: usize| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.digits$}"));
        row("dispatchers", &|p| p.dispatchers.to_string());
        row("events accepted / publish errors", &|p| format!("{} / {}", p.publish.accepted, p.publish.errors));
        row("publish throughput, events/s", &|p| format!("{:.0}", p.publish.events_per_sec));
        row("publish latency p50/p95/p99 ms", &|p| {
            let l = &p.publish.latency;
            format!("{:.1} / {:.1} / {:.1}", l.p50_ms, l.p95_ms, l.p99_ms)
        });
        row("deliveries expected / received", &|p| format!("{} / {}", p.deliveries.expected, p.deliveries.received));
        row("lost / duplicated / unexpected", &|p| {
            let d = &p.deliveries;
            format!(
                "{} / {} / {}{}",
                d.lost,
                d.duplicated,
                d.unexpected,
                if d.timed_out { " (deadline hit)" } else { "" }
            )
        });
        row("end-to-end p50/p95/p99 ms", &|p| {
            let l = &p.deliveries.latency;
            format!("{:.1} / {:.1} / {:.1}", l.p50_ms, l.p95_ms, l.p99_ms)
        });
        row("end-to-end max ms", &|p| format!("{:.1}", p.deliveries.latency.max_ms));
        if phases.iter().any(|p| p.deliveries.quiet_latency.is_some()) {
            row("quiet subscriptions: deliveries, e2e p50/p99/max ms", &|p| {
                p.deliveries.quiet_latency.as_ref().map_or_else(
                    || "-".into(),
                    |l| format!("{} , {:.1} / {:.1} / {:.1}", l.count, l.p50_ms, l.p99_ms, l.max_ms),
                )
            });
        }
        row("deliveries/s sustained (first→last)", &|p| format!("{:.0}", p.deliveries.per_sec_sustained));
        row("deliveries/s overall (publish→last)", &|p| format!("{:.0}", p.deliveries.per_sec_overall));
        if phases.iter().any(|p| p.unhealthy.is_some()) {
            row("unhealthy: 500s / hangs answered", &|p| {
                p.unhealthy
                    .as_ref()
                    .map_or_else(|| "-".into(), |u| format!("{} / {}", u.fail_requests, u.hang_requests))
            });
        }
        row("CPU-s ingest / dispatcher", &|p| {
            format!("{} / {}", opt(p.usage.cpu.ingest, 2), opt(p.usage.cpu.dispatcher, 2))
        });
        row("CPU-s PostgreSQL / RabbitMQ", &|p| format!("{:.2} / {:.2}", p.usage.cpu.postgres, p.usage.cpu.rabbitmq));
        row("CPU-s bench / whole machine", &|p| format!("{:.2} / {:.2}", p.usage.cpu.bench, p.usage.cpu.machine));
        row("CPU-s per 1000 deliveries (services)", &|p| format!("{:.3}", p.cpu_per_1000_deliveries.services));
        row("  ingest / dispatcher", &|p| {
            let c = &p.cpu_per_1000_deliveries;
            format!("{} / {}", opt(c.ingest, 3), opt(c.dispatcher, 3))
        });
        row("  PostgreSQL / RabbitMQ", &|p| {
            let c = &p.cpu_per_1000_deliveries;
            format!("{:.3} / {:.3}", c.postgres, c.rabbitmq)
        });
        row("peak RSS MiB ingest / dispatcher", &|p| {
            format!("{} / {}", opt(p.usage.ingest_rss_peak_mib, 1), opt(p.usage.dispatcher_rss_peak_mib, 1))
        });
        if phases.iter().any(|p| p.postgres.is_some()) {
            row("PG commits / rows written per delivery", &|p| match (&p.postgres, p.deliveries.received) {
                (Some(pg), n) if n > 0 => {
                    let per = |v: i64| v as f64 / n as f64;
                    format!("{:.2} / {:.2}", per(pg.commits), per(pg.rows_inserted + pg.rows_updated))
                }
                _ => "n/a".into(),
            });
            row("PG WAL flushes / KiB per delivery", &|p| match (&p.postgres, p.deliveries.received) {
                (Some(pg), n) if n > 0 => {
                    format!("{:.2} / {:.1}", pg.wal_syncs as f64 / n as f64, pg.wal_bytes as f64 / 1024.0 / n as f64)
                }
                _ => "n/a".into(),
            });
        }
        if phases.iter().any(|p| !batch_sizes(p).is_empty()) {
            row("mean batch sizes (services' metrics)", &|p| batch_sizes(p));
        }
        if phases.iter().any(|p| p.postgres.is_some()) {
            row("PG deadlocks", &|p| p.postgres.map_or_else(|| "n/a".into(), |pg| pg.deadlocks.to_string()));
        }
        row("max queue depth events / dispatch", &|p| format!("{} / {}", p.queues.events_max, p.queues.dispatch_max));

        let label_width = rows.iter().map(|(l, _)| l.chars().count()).max().unwrap_or(0);
        let widths: Vec<usize> = (0..phases.len())
            .map(|i| {
                rows.iter()
                    .map(|(_, v)| v[i].chars().count())
                    .chain([phases[i].name.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let _ = write!(out, "{:label_width$}", "");
        for (p, w) in phases.iter().zip(&widths) {
            let _ = write!(out, " | {:>w$}", p.name);
        }
        out.push('\n');
        for (label, values) in &rows {
            let _ = write!(out, "{label:label_width$}");
            for (v, w) in values.iter().zip(&widths) {
                let _ = write!(out, " | {v:>w$}");
            }
            out.push('\n');
        }
        windows_table(phases, &mut out);
        let s = &self.result.signatures;
        let _ = writeln!(out, "\nsignatures checked {} (sampled), failed {}", s.checked, s.failed);
        for failure in &s.failures {
            let _ = writeln!(out, "  {failure}");
        }
        for p in phases {
            for e in &p.publish.error_samples {
                let _ = writeln!(out, "publish error in {}: {e}", p.name);
            }
        }
        let strays = &self.result.strays;
        if strays.foreign + strays.malformed > 0 {
            let _ =
                writeln!(out, "requests not from this run: {} foreign, {} malformed", strays.foreign, strays.malformed);
        }
        let _ = writeln!(out, "\ntargets:");
        let target_width = self.checks.iter().map(|c| c.target.chars().count()).max().unwrap_or(0);
        for c in &self.checks {
            let _ = writeln!(
                out,
                "  {:target_width$}  {:>18}  {}",
                c.target,
                c.measured,
                if c.pass { "PASS" } else { "FAIL" }
            );
        }
        out
    }
}

/// Means of the services' `*batch_size*` histograms, e.g. `fanout 6.4, claim 27.0`.
fn batch_sizes(phase: &PhaseReport) -> String {
    let dispatcher = phase.dispatcher_metrics.first().map(|m| &m.means);
    let series = phase.ingest_metrics.means.iter().chain(dispatcher.into_iter().flatten());
    series
        .filter(|(name, _)| name.contains("batch_size"))
        .map(|(name, mean)| {
            // A label value names the batch if there is one, else the metric does.
            let label = name
                .split_once('"')
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(value, _)| value.to_owned())
                .unwrap_or_else(|| {
                    let metric = name.split("_batch_size").next().unwrap_or(name);
                    let metric = metric.strip_prefix("webhooks_ingest_").unwrap_or(metric);
                    metric.strip_prefix("webhooks_dispatcher_").unwrap_or(metric).to_owned()
                });
            format!("{label} {mean:.1}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn check(target: impl Into<String>, measured: String, pass: bool) -> Check {
    Check { target: target.into(), measured, pass }
}

/// The targets that apply to these options.
pub fn checks(options: &RunOptions, result: &RunResult) -> Vec<Check> {
    let mut checks = Vec::new();
    let phases = &result.phases;
    for p in phases {
        let d = &p.deliveries;
        checks.push(check(
            format!("{}: 0 lost, 0 duplicated", p.name),
            format!("{} / {}", d.lost, d.duplicated),
            d.lost == 0 && d.duplicated == 0 && d.expected > 0,
        ));
        if p.publish.errors > 0 {
            checks.push(check(
                format!("{}: every publish accepted", p.name),
                format!("{} errors", p.publish.errors),
                false,
            ));
        }
        for (name, rss) in [("ingest", p.usage.ingest_rss_peak_mib), ("dispatcher", p.usage.dispatcher_rss_peak_mib)] {
            if let Some(rss) = rss {
                checks.push(check(
                    format!("{}: {name} RSS < 64 MiB", p.name),
                    format!("{rss:.1} MiB"),
                    rss < RSS_LIMIT_MIB,
                ));
            }
        }
    }
    let s = &result.signatures;
    checks.push(check(
        "signatures verify (sampled)",
        format!("{} of {} failed", s.failed, s.checked),
        s.failed == 0 && s.checked > 0,
    ));
    let Some(first) = phases.first() else { return checks };
    match options.scenario {
        Scenario::Fanout1 => {
            match options.load {
                Load::Concurrency(_) => checks.push(check(
                    "fanout1 ≥ 2,500 events/s accepted and delivered",
                    format!("{:.0} / {:.0} per s", first.publish.events_per_sec, first.deliveries.per_sec_overall),
                    first.publish.events_per_sec >= 2_500.0 && first.deliveries.per_sec_overall >= 2_500.0,
                )),
                Load::Rate(r) => {
                    if r <= 200.0 {
                        checks.push(check(
                            "end-to-end p99 ≤ 10 ms at 200 events/s",
                            format!("{:.1} ms", first.deliveries.latency.p99_ms),
                            first.deliveries.latency.p99_ms <= 10.0,
                        ));
                    }
                    if r >= 1_000.0 {
                        checks.push(check(
                            "publish p99 ≤ 20 ms at 1,000 events/s",
                            format!("{:.1} ms", first.publish.latency.p99_ms),
                            first.publish.latency.p99_ms <= 20.0,
                        ));
                    }
                }
            }
            if first.usage.cpu.ingest.is_some() {
                checks.push(check(
                    "services ≤ 0.8 CPU-s per 1,000 deliveries",
                    format!("{:.3} CPU-s", first.cpu_per_1000_deliveries.services),
                    first.cpu_per_1000_deliveries.services <= 0.8,
                ));
            }
        }
        Scenario::Fanout10 => checks.push(check(
            "fanout10 ≥ 5,000 deliveries/s sustained",
            format!("{:.0} per s", first.deliveries.per_sec_sustained),
            first.deliveries.per_sec_sustained >= 5_000.0,
        )),
        Scenario::Broadcast => {}
        Scenario::Unhealthy => {
            if let Some(sick) = phases.get(1) {
                let (kept, all) = healthy_kept(sick, first);
                checks.push(check(
                    "unhealthy: healthy subscriptions keep ≥ 90% of their clean throughput",
                    format!("{:.0}% (of the clean run's total: {:.0}%)", kept * 100.0, all * 100.0),
                    kept >= 0.9,
                ));
                let p99 = ratio(sick.deliveries.latency.p99_ms, first.deliveries.latency.p99_ms);
                checks.push(check(
                    "unhealthy: healthy p99 < 2× baseline",
                    format!("{:.1} vs {:.1} ms", sick.deliveries.latency.p99_ms, first.deliveries.latency.p99_ms),
                    p99 < 2.0,
                ));
            }
        }
        Scenario::Hot => {
            if let Load::Rate(r) = options.load {
                if r <= 200.0 {
                    checks.push(check(
                        "hot: end-to-end p99 ≤ 8 ms at 200 events/s",
                        format!("{:.1} ms", first.deliveries.latency.p99_ms),
                        first.deliveries.latency.p99_ms <= 8.0,
                    ));
                    checks.push(check(
                        "hot: ≤ 3 CPU-s (services) per 1,000 deliveries at 200 events/s",
                        format!("{:.2} CPU-s", first.cpu_per_1000_deliveries.services),
                        first.cpu_per_1000_deliveries.services <= 3.0,
                    ));
                }
            } else {
                checks.push(check(
                    "hot: ≥ 4× svix's 532 deliveries/s (and ≥ 90 % of fanout1: compare runs)",
                    format!("{:.0} per s", first.deliveries.per_sec_sustained),
                    first.deliveries.per_sec_sustained >= 4.0 * 532.0,
                ));
            }
        }
        Scenario::Neighbours => {
            if let Some(quiet) = &first.deliveries.quiet_latency {
                checks.push(check(
                    "neighbours: quiet subscriptions' e2e p99 ≤ 50 ms",
                    format!("{:.1} ms over {} deliveries", quiet.p99_ms, quiet.count),
                    quiet.p99_ms <= 50.0 && quiet.count > 0,
                ));
            }
        }
        Scenario::Failing => {
            if let Some(sick) = phases.get(1) {
                let (kept, all) = healthy_kept(sick, first);
                checks.push(check(
                    "failing: healthy subscriptions keep ≥ 90% of their clean throughput",
                    format!("{:.0}% (of the clean run's total: {:.0}%)", kept * 100.0, all * 100.0),
                    kept >= 0.9,
                ));
                let p99 = ratio(sick.deliveries.latency.p99_ms, first.deliveries.latency.p99_ms);
                checks.push(check(
                    "failing: healthy p99 ≤ 2× baseline",
                    format!("{:.1} vs {:.1} ms", sick.deliveries.latency.p99_ms, first.deliveries.latency.p99_ms),
                    p99 <= 2.0,
                ));
            }
        }
        Scenario::Scale => {
            if let Some(two) = phases.get(1) {
                let speedup = ratio(two.deliveries.per_sec_sustained, first.deliveries.per_sec_sustained);
                checks.push(check("scale: 2 dispatchers ≥ 1.6× of 1", format!("{speedup:.2}×"), speedup >= 1.6));
            }
        }
        Scenario::Soak => soak_checks(first, &mut checks),
    }
    checks
}

/// The healthy subscriptions' throughput in the incident phase against theirs
/// in the clean phase ([`crate::run::UnhealthyReport::healthy_kept`]), and against the clean
/// phase's total (every subscription's).
fn healthy_kept(sick: &PhaseReport, clean: &PhaseReport) -> (f64, f64) {
    let (now, before) = (sick.deliveries.per_sec_sustained, clean.deliveries.per_sec_sustained);
    let kept = sick.unhealthy.as_ref().map_or(0.0, |u| u.healthy_kept(now, before));
    (kept, ratio(now, before))
}

/// Soak: the database's size levels off once retention runs, and end-to-end
/// p99 while cleanup runs stays within 2× of the first minute's.
fn soak_checks(phase: &PhaseReport, checks: &mut Vec<Check>) {
    let sizes = &phase.database_size;
    let end = sizes.last().map_or(0.0, |s| s.at_s);
    let max_between =
        |from: f64, to: f64| sizes.iter().filter(|s| s.at_s >= from && s.at_s < to).map(|s| s.bytes).max().unwrap_or(0);
    // Compare the last 30% of the run with the 30% before it.
    let (earlier, later) = (max_between(end * 0.4, end * 0.7), max_between(end * 0.7, end + 1.0));
    checks.push(check(
        "soak: database size levels off (last 30% ≤ 1.1× the 30% before)",
        format!("{} → {} MiB", earlier >> 20, later >> 20),
        earlier > 0 && (later as f64) <= earlier as f64 * 1.1,
    ));
    let windows = &phase.deliveries.windows;
    if let Some(first) = windows.first() {
        // Cleanup deletes from the third minute on (RETENTION 2m); the last window may be partial.
        let during = windows.iter().skip(2).filter(|w| w.deliveries >= 100).map(|w| w.p99_ms).fold(0.0, f64::max);
        checks.push(check(
            "soak: p99 during cleanup ≤ 2× the first minute",
            format!("{during:.1} vs {:.1} ms", first.p99_ms),
            during > 0.0 && during <= 2.0 * first.p99_ms,
        ));
    }
}

/// The per-window figures and database sizes, when the run has them.
fn windows_table(phases: &[PhaseReport], out: &mut String) {
    for p in phases {
        if p.deliveries.windows.len() > 1 {
            let _ = writeln!(out, "\n{} by publish time: from s | deliveries/s | p50 / p99 / max ms", p.name);
            for w in &p.deliveries.windows {
                let _ = writeln!(
                    out,
                    "  {:>6.0} | {:>8.0} | {:.1} / {:.1} / {:.1}",
                    w.from_s, w.per_sec, w.p50_ms, w.p99_ms, w.max_ms
                );
            }
        }
        if !p.database_size.is_empty() {
            let sizes: Vec<String> = p
                .database_size
                .iter()
                .map(|s| format!("{:.0}s {:.1}", s.at_s, s.bytes as f64 / (1024.0 * 1024.0)))
                .collect();
            let _ = writeln!(out, "{} database size (MiB): {}", p.name, sizes.join(", "));
        }
        if let Some(fault) = &p.fault {
            let _ = writeln!(
                out,
                "{} fault at {:.1} s: `{}` exit {:?}: {}",
                p.name, fault.at_s, fault.command, fault.exit_code, fault.output
            );
        }
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

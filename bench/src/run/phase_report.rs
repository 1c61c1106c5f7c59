//! What one phase measured, and how the reports are computed from the
//! publish records and the sink's receipts.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{
    durability::{windows, DbSizeSample, FaultReport, Window},
    metrics::{MetricDeltas, QueueDepths},
    pgstats::PgCounters,
    procstat::Usage,
    publisher::PublishRecord,
    scenario::{Layout, Role},
    sink::Receipt,
    stats::{rate, Percentiles},
};

/// Publishing in one phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PublishReport {
    pub started: usize,
    pub accepted: usize,
    pub errors: usize,
    pub error_samples: Vec<String>,
    /// HTTP answers whose `deliveries` differed from the subscriptions the event should match.
    pub deliveries_mismatch: usize,
    /// First publish start to last answer.
    pub seconds: f64,
    pub events_per_sec: f64,
    pub latency: Percentiles,
}

/// Deliveries to the healthy subscriptions in one phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeliveryReport {
    pub expected: usize,
    pub received: usize,
    pub lost: usize,
    /// Repeats of an (event, subscription) pair already answered 200.
    pub duplicated: usize,
    /// Healthy receipts for an event or subscription that should not have had them.
    pub unexpected: usize,
    /// The deadline passed before every expected delivery arrived.
    pub timed_out: bool,
    /// Publish start → receipt.
    pub latency: Percentiles,
    /// `neighbours`: publish start → receipt at the quiet subscriptions only.
    pub quiet_latency: Option<Percentiles>,
    /// First receipt to last receipt.
    pub seconds_first_to_last: f64,
    pub per_sec_sustained: f64,
    /// First publish to last receipt.
    pub per_sec_overall: f64,
    /// End-to-end latency over the phase, by publish time: one bucket per
    /// [`TIMELINE_BUCKET`] from the first publish (stalls show up here).
    pub timeline: Vec<TimelineBucket>,
    /// Deliveries and latency by publish time in [`RunOptions::window`]s
    /// (throughput before, during and after a fault; latency while cleanup runs).
    pub windows: Vec<Window>,
}

/// Width of a [`DeliveryReport::timeline`] bucket.
pub const TIMELINE_BUCKET: Duration = Duration::from_millis(250);

/// Deliveries of the events published in one time bucket.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct TimelineBucket {
    /// Bucket start, seconds after the first publish.
    pub at_s: f64,
    pub deliveries: usize,
    pub p50_ms: f64,
    pub max_ms: f64,
}

/// Requests to the failing and hanging subscriptions of an unhealthy phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UnhealthyReport {
    pub failing_subscriptions: usize,
    pub hanging_subscriptions: usize,
    /// Events that matched a failing or hanging subscription.
    pub events_to_unhealthy: usize,
    pub fail_requests: usize,
    pub hang_requests: usize,
    /// The healthy subscriptions' share of the phase's deliveries (0.9 when a
    /// tenth of the subscriptions is unhealthy at fan-out 1): what the same
    /// subscriptions' share of a clean run's throughput was, since events go to
    /// slots round robin. See [`UnhealthyReport::healthy_kept`].
    pub healthy_share: f64,
}

impl UnhealthyReport {
    /// The healthy subscriptions' throughput in this phase against the same
    /// subscriptions' throughput in the clean phase (`clean_per_sec` × their
    /// share of it): 1.0 when failing endpoints take nothing from healthy ones.
    /// Comparing with the clean phase's total instead would count the tenth of
    /// events aimed at the broken endpoints as healthy throughput lost.
    pub fn healthy_kept(&self, per_sec: f64, clean_per_sec: f64) -> f64 {
        if clean_per_sec <= 0.0 || self.healthy_share <= 0.0 {
            return 0.0;
        }
        per_sec / (clean_per_sec * self.healthy_share)
    }
}

/// CPU seconds per 1,000 received deliveries.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuPerThousand {
    /// ingest + dispatcher + PostgreSQL + RabbitMQ.
    pub services: f64,
    pub ingest: Option<f64>,
    pub dispatcher: Option<f64>,
    pub postgres: f64,
    pub rabbitmq: f64,
    pub bench: f64,
    pub machine: f64,
}

/// Everything measured in one phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseReport {
    pub name: String,
    pub dispatchers: usize,
    pub events_planned: usize,
    pub publish: PublishReport,
    pub deliveries: DeliveryReport,
    pub unhealthy: Option<UnhealthyReport>,
    pub usage: Usage,
    pub cpu_per_1000_deliveries: CpuPerThousand,
    pub queues: QueueDepths,
    /// What PostgreSQL counted for the services' database during the phase (approximate).
    pub postgres: Option<PgCounters>,
    pub ingest_metrics: MetricDeltas,
    /// One per dispatcher.
    pub dispatcher_metrics: Vec<MetricDeltas>,
    /// `pg_database_size` of the services' database during the phase.
    pub database_size: Vec<DbSizeSample>,
    /// The fault injected during the phase, if any.
    pub fault: Option<FaultReport>,
}

pub(super) fn publish_report(records: &[PublishRecord], layout: &Layout) -> PublishReport {
    let mut latencies = Vec::with_capacity(records.len());
    let mut report = PublishReport { started: records.len(), ..Default::default() };
    for record in records {
        match &record.outcome {
            Ok(deliveries) => {
                report.accepted += 1;
                latencies.push(record.latency);
                if deliveries.is_some_and(|n| n as usize != layout.fanout) {
                    report.deliveries_mismatch += 1;
                }
            }
            Err(err) => {
                report.errors += 1;
                if report.error_samples.len() < 5 {
                    report.error_samples.push(err.clone());
                }
            }
        }
    }
    let first = records.iter().map(|r| r.started).min();
    let last = records.iter().map(|r| r.started + r.latency).max();
    if let (Some(first), Some(last)) = (first, last) {
        let span = last - first;
        report.seconds = span.as_secs_f64();
        report.events_per_sec = rate(report.accepted, span);
    }
    report.latency = Percentiles::of(&mut latencies);
    report
}

pub(super) fn delivery_report(
    records: &[PublishRecord],
    receipts: &[Receipt],
    layout: &Layout,
    roles: &[Role],
    window: Duration,
) -> DeliveryReport {
    let mut started: HashMap<u32, Instant> = HashMap::with_capacity(records.len());
    let mut expected = 0;
    for record in records.iter().filter(|r| r.outcome.is_ok()) {
        started.insert(record.index, record.started);
        expected +=
            layout.slot_of_event(record.index as usize).subscriptions.clone().filter(|&s| roles[s] == Role::Ok).count();
    }
    // First arrival and arrivals of each healthy (event, subscription) pair.
    let mut arrivals: HashMap<(u32, u32), (Instant, usize)> = HashMap::with_capacity(expected);
    for receipt in receipts.iter().filter(|r| r.role == Role::Ok) {
        let entry = arrivals.entry((receipt.event, receipt.sub)).or_insert((receipt.at, 0));
        entry.0 = entry.0.min(receipt.at);
        entry.1 += 1;
    }
    let mut report = DeliveryReport { expected, ..Default::default() };
    let mut latencies = Vec::with_capacity(expected);
    let mut quiet_latencies = Vec::new();
    let first_publish = records.iter().map(|r| r.started).min();
    let mut buckets: Vec<Vec<Duration>> = Vec::new();
    let mut by_publish_time: Vec<(Duration, Duration)> = Vec::with_capacity(expected);
    let (mut first, mut last): (Option<Instant>, Option<Instant>) = (None, None);
    for (&(event, sub), &(at, count)) in &arrivals {
        report.duplicated += count - 1;
        let wanted = started.get(&event).filter(|_| {
            layout.slot_of_event(event as usize).subscriptions.contains(&(sub as usize))
                && roles.get(sub as usize) == Some(&Role::Ok)
        });
        match wanted {
            Some(&published) => {
                report.received += 1;
                let latency = at.saturating_duration_since(published);
                latencies.push(latency);
                if layout.neighbours && sub > 0 {
                    quiet_latencies.push(latency);
                }
                if let Some(origin) = first_publish {
                    let bucket = (published.saturating_duration_since(origin).as_millis() / TIMELINE_BUCKET.as_millis())
                        as usize;
                    if buckets.len() <= bucket {
                        buckets.resize_with(bucket + 1, Vec::new);
                    }
                    buckets[bucket].push(latency);
                    by_publish_time.push((published.saturating_duration_since(origin), latency));
                }
                first = Some(first.map_or(at, |f| f.min(at)));
                last = Some(last.map_or(at, |l| l.max(at)));
            }
            None => report.unexpected += 1,
        }
    }
    report.lost = expected.saturating_sub(report.received);
    report.timeline = buckets
        .iter_mut()
        .enumerate()
        .map(|(i, samples)| {
            let p = Percentiles::of(samples);
            TimelineBucket {
                at_s: (i as u32 * TIMELINE_BUCKET).as_secs_f64(),
                deliveries: p.count,
                p50_ms: p.p50_ms,
                max_ms: p.max_ms,
            }
        })
        .collect();
    report.quiet_latency = layout.neighbours.then(|| Percentiles::of(&mut quiet_latencies));
    report.windows = windows(&by_publish_time, window);
    report.latency = Percentiles::of(&mut latencies);
    if let (Some(first), Some(last)) = (first, last) {
        report.seconds_first_to_last = (last - first).as_secs_f64();
        report.per_sec_sustained = rate(report.received.saturating_sub(1), last - first);
        if let Some(first_publish) = records.iter().map(|r| r.started).min() {
            report.per_sec_overall = rate(report.received, last.saturating_duration_since(first_publish));
        }
    }
    report
}

pub(super) fn unhealthy_report(
    records: &[PublishRecord],
    receipts: &[Receipt],
    layout: &Layout,
    roles: &[Role],
) -> UnhealthyReport {
    let (mut healthy, mut all) = (0usize, 0usize);
    for record in records.iter().filter(|r| r.outcome.is_ok()) {
        for sub in layout.slot_of_event(record.index as usize).subscriptions.clone() {
            all += 1;
            healthy += usize::from(roles[sub] == Role::Ok);
        }
    }
    UnhealthyReport {
        healthy_share: if all == 0 { 0.0 } else { healthy as f64 / all as f64 },
        failing_subscriptions: roles.iter().filter(|r| **r == Role::Fail).count(),
        hanging_subscriptions: roles.iter().filter(|r| **r == Role::Hang).count(),
        events_to_unhealthy: records
            .iter()
            .filter(|r| r.outcome.is_ok())
            .filter(|r| layout.slot_of_event(r.index as usize).subscriptions.clone().any(|s| roles[s] != Role::Ok))
            .count(),
        fail_requests: receipts.iter().filter(|r| r.role == Role::Fail).count(),
        hang_requests: receipts.iter().filter(|r| r.role == Role::Hang).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_kept_compares_the_healthy_subscriptions_with_their_own_clean_share() {
        // A tenth unhealthy: the healthy ones carried 90 % of the clean run's 1,000/s.
        let report = UnhealthyReport { healthy_share: 0.9, ..Default::default() };
        assert!((report.healthy_kept(900.0, 1_000.0) - 1.0).abs() < 1e-9);
        assert!((report.healthy_kept(810.0, 1_000.0) - 0.9).abs() < 1e-9);
        assert_eq!(report.healthy_kept(900.0, 0.0), 0.0, "no clean run, nothing kept");
    }

    #[test]
    fn the_healthy_share_counts_the_deliveries_each_role_was_due() {
        let layout = Layout::new(100, 1).expect("layout");
        let roles: Vec<Role> = (0..100).map(crate::scenario::unhealthy_role).collect();
        let records: Vec<PublishRecord> = (0..1_000)
            .map(|index| PublishRecord {
                index,
                started: Instant::now(),
                latency: Duration::ZERO,
                outcome: Ok(Some(1)),
            })
            .collect();
        let report = unhealthy_report(&records, &[], &layout, &roles);
        assert!((report.healthy_share - 0.9).abs() < 1e-9, "{}", report.healthy_share);
    }
}

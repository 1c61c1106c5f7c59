//! What the long runs of issue 10 add to a phase: the database's size over
//! time (`soak`: does retention make it level off?), end-to-end latency per
//! minute (does cleanup slow delivery down?), and a fault injected mid-phase
//! (`cluster`: stop the broker node that leads the dispatch queue).

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::stats::Percentiles;

/// `pg_database_size` of the services' database at one moment.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DbSizeSample {
    /// Seconds after the phase started.
    pub at_s: f64,
    pub bytes: i64,
}

/// Samples `pg_database_size(database)` every `every` until stopped.
pub struct DbSizeSampler {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Vec<DbSizeSample>>,
}

impl DbSizeSampler {
    pub fn start(admin_url: String, database: String, every: Duration) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut samples = Vec::new();
            loop {
                if let Some(bytes) = database_size(&admin_url, &database).await {
                    samples.push(DbSizeSample { at_s: started.elapsed().as_secs_f64(), bytes });
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stopped.changed() => return samples,
                }
            }
        });
        Self { stop, task }
    }

    pub async fn finish(self) -> Vec<DbSizeSample> {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

async fn database_size(admin_url: &str, database: &str) -> Option<i64> {
    #[derive(diesel::QueryableByName)]
    struct Size {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        bytes: i64,
    }
    let (url, database) = (admin_url.to_owned(), database.to_owned());
    tokio::task::spawn_blocking(move || {
        use diesel::{Connection as _, RunQueryDsl as _};
        let mut conn =
            diesel_async::async_connection_wrapper::AsyncConnectionWrapper::<diesel_async::AsyncPgConnection>::establish(&url).ok()?;
        diesel::sql_query("SELECT pg_database_size($1) AS bytes")
            .bind::<diesel::sql_types::Text, _>(database)
            .get_result::<Size>(&mut conn)
            .ok()
            .map(|s| s.bytes)
    })
    .await
    .ok()
    .flatten()
}

/// A shell command run once, `after` into a phase (e.g. stopping a broker node).
#[derive(Debug, Clone, Serialize)]
pub struct FaultPlan {
    pub after: Duration,
    pub command: String,
}

/// What the fault command did.
#[derive(Debug, Clone, Serialize)]
pub struct FaultReport {
    /// Seconds after the phase started that the command began.
    pub at_s: f64,
    pub command: String,
    pub exit_code: Option<i32>,
    /// Its output (trimmed), for the record.
    pub output: String,
}

/// Runs `plan` in the background; its environment has `BENCH_AMQP_PREFIX`.
pub fn inject(plan: FaultPlan, amqp_prefix: String) -> tokio::task::JoinHandle<FaultReport> {
    tokio::spawn(async move {
        let started = Instant::now();
        tokio::time::sleep(plan.after).await;
        let at_s = started.elapsed().as_secs_f64();
        eprintln!("fault at {at_s:.1} s: {}", plan.command);
        let output = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&plan.command)
            .env("BENCH_AMQP_PREFIX", &amqp_prefix)
            .output()
            .await;
        match output {
            Ok(output) => {
                let text =
                    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
                eprintln!("fault command done: {}", text.trim());
                FaultReport { at_s, command: plan.command, exit_code: output.status.code(), output: text.trim().into() }
            }
            Err(err) => FaultReport { at_s, command: plan.command, exit_code: None, output: err.to_string() },
        }
    })
}

/// Deliveries and latency of the events published in one window of the phase.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Window {
    /// Window start, seconds after the first publish.
    pub from_s: f64,
    pub deliveries: usize,
    /// Deliveries per second received for the events of this window.
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Groups `(publish offset, latency)` samples into windows of `width`.
pub fn windows(samples: &[(Duration, Duration)], width: Duration) -> Vec<Window> {
    let mut buckets: Vec<Vec<Duration>> = Vec::new();
    for &(offset, latency) in samples {
        let index = (offset.as_millis() / width.as_millis().max(1)) as usize;
        if buckets.len() <= index {
            buckets.resize_with(index + 1, Vec::new);
        }
        buckets[index].push(latency);
    }
    buckets
        .iter_mut()
        .enumerate()
        .map(|(i, latencies)| {
            let p = Percentiles::of(latencies);
            Window {
                from_s: (width * i as u32).as_secs_f64(),
                deliveries: p.count,
                per_sec: p.count as f64 / width.as_secs_f64(),
                p50_ms: p.p50_ms,
                p99_ms: p.p99_ms,
                max_ms: p.max_ms,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_fall_into_windows_by_publish_time() {
        let ms = Duration::from_millis;
        let samples = [(ms(100), ms(5)), (ms(900), ms(7)), (ms(1_500), ms(40)), (ms(3_200), ms(9))];
        let windows = windows(&samples, Duration::from_secs(1));
        assert_eq!(windows.len(), 4);
        assert_eq!(windows[0].deliveries, 2);
        assert_eq!(windows[1].p99_ms, 40.0);
        assert_eq!(windows[2].deliveries, 0);
        assert_eq!(windows[3].from_s, 3.0);
    }
}

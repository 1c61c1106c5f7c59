//! What the services say about themselves: Prometheus counters before and
//! after a phase, and the depth of the RabbitMQ queues during it.

use std::{collections::BTreeMap, time::Duration};

use lapin::{options::QueueDeclareOptions, types::FieldTable};
use serde::Serialize;

/// One scrape: series (name with labels) → value.
pub type Scrape = BTreeMap<String, f64>;

/// Fetches `url` (a `/metrics` endpoint) and parses the Prometheus text format.
pub async fn scrape(client: &reqwest::Client, url: &str) -> Option<Scrape> {
    let text = client.get(url).timeout(Duration::from_secs(5)).send().await.ok()?.text().await.ok()?;
    Some(parse(&text))
}

/// Parses `name{labels} value` lines, skipping comments.
pub fn parse(text: &str) -> Scrape {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.trim().rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// What changed between two scrapes: counters' increase, and for histograms
/// the mean of the observations made in between (`…_sum` / `…_count`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct MetricDeltas {
    /// `*_total` series that grew.
    pub counters: BTreeMap<String, f64>,
    /// Mean of the new observations of each histogram/summary, by series.
    pub means: BTreeMap<String, f64>,
}

/// Compares two scrapes.
pub fn deltas(before: &Scrape, after: &Scrape) -> MetricDeltas {
    let change = |series: &str| after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0);
    let mut result = MetricDeltas::default();
    for series in after.keys() {
        let name = series.split('{').next().unwrap_or(series);
        if name.ends_with("_total") {
            let d = change(series);
            if d > 0.0 {
                result.counters.insert(series.clone(), d);
            }
        } else if let Some(base) = name.strip_suffix("_count") {
            let labels = &series[name.len()..];
            let count = change(series);
            let sum = change(&format!("{base}_sum{labels}"));
            if count > 0.0 {
                result.means.insert(format!("{base}{labels}"), sum / count);
            }
        }
    }
    result
}

/// Greatest depths seen of the queues between ingest and the dispatchers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueDepths {
    /// `{prefix}.events.ingest` (AMQP publishes not yet consumed by ingest).
    pub events_max: u32,
    /// `{prefix}.dispatch` (attempts not yet taken by a dispatcher).
    pub dispatch_max: u32,
    pub samples: u32,
}

/// Samples queue depths (passive declares) until stopped.
pub struct QueueWatcher {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<QueueDepths>,
}

impl QueueWatcher {
    /// Starts sampling every `every`; a broker it cannot reach gives zero depths.
    pub fn start(amqp_url: String, prefix: String, every: Duration) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut depths = QueueDepths::default();
            let urls = shared::config::split_urls(&amqp_url);
            let Ok((connection, _)) = shared::amqp::connect_any(&urls, 0).await else { return depths };
            let queues = [format!("{prefix}.events.ingest"), format!("{prefix}.dispatch")];
            let mut channel = None;
            loop {
                if channel.is_none() {
                    channel = connection.create_channel().await.ok();
                }
                if let Some(ch) = channel.clone() {
                    for (i, queue) in queues.iter().enumerate() {
                        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
                        match ch.queue_declare(queue.as_str().into(), passive, FieldTable::default()).await {
                            Ok(q) if i == 0 => depths.events_max = depths.events_max.max(q.message_count()),
                            Ok(q) => depths.dispatch_max = depths.dispatch_max.max(q.message_count()),
                            // A missing queue closes the channel; open another next time.
                            Err(_) => {
                                channel = None;
                                break;
                            }
                        }
                    }
                    depths.samples += 1;
                }
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tokio::time::sleep(every) => {}
                }
            }
            let _ = connection.close(200, "bench done".into()).await;
            depths
        });
        Self { stop, task }
    }

    pub async fn finish(self) -> QueueDepths {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_report_grown_counters_and_mean_observations() {
        let before = parse("# TYPE x counter\na_total{k=\"v\"} 3\nh_sum 1.0\nh_count 2\n");
        let after = parse("a_total{k=\"v\"} 10\nb_total 0\nh_sum 4.0\nh_count 8\n");
        let d = deltas(&before, &after);
        assert_eq!(d.counters.get("a_total{k=\"v\"}"), Some(&7.0));
        assert!(!d.counters.contains_key("b_total"));
        assert_eq!(d.means.get("h"), Some(&0.5));
    }
}

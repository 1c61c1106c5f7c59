//! Samples the depth of the RabbitMQ queues an operator alerts on (events not
//! yet consumed, attempts not yet taken by a dispatcher, rejected events) into
//! the `webhooks_ingest_queue_messages{queue}` gauge, so dashboards and alerts
//! need nothing but the services' own `/metrics`; and counts the consumers of
//! a queue ([`consumers`]: whether any dispatcher is taking attempts).

use std::time::Duration;

use lapin::{options::QueueDeclareOptions, types::FieldTable};
use shared::amqp::{Broker, Topology};

use crate::metric_names;

/// Longest a sample may take (a passive declare per queue).
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Sets the gauge for each queue; a queue that cannot be inspected keeps its
/// last value. Does nothing while the broker is down.
pub async fn record(broker: &Broker, topology: &Topology) {
    let Some(session) = broker.session() else { return };
    let queues = [
        ("events_ingest", topology.ingest_queue()),
        ("dispatch", topology.dispatch_queue()),
        ("events_rejected", topology.rejected_queue()),
    ];
    let sample = async {
        // A channel of its own: a passive declare of a missing queue closes its channel.
        let channel = session.connection.create_channel().await.ok()?;
        for (label, queue) in &queues {
            let passive = QueueDeclareOptions { passive: true, ..Default::default() };
            let declared = channel.queue_declare(queue.as_str().into(), passive, FieldTable::default()).await.ok()?;
            metrics::gauge!(metric_names::QUEUE_MESSAGES, "queue" => *label).set(f64::from(declared.message_count()));
        }
        let _ = channel.close(200, "queue depths sampled".into()).await;
        Some(())
    };
    if tokio::time::timeout(SAMPLE_TIMEOUT, sample).await.ok().flatten().is_none() {
        log::debug!("queue depths not sampled");
    }
}

/// How many consumers `queue` has (a passive declare on a channel of its own),
/// or `None` when the broker is down or does not answer within [`SAMPLE_TIMEOUT`].
pub async fn consumers(broker: &Broker, queue: &str) -> Option<u32> {
    let session = broker.session()?;
    let count = async {
        let channel = session.connection.create_channel().await.ok()?;
        let passive = QueueDeclareOptions { passive: true, ..Default::default() };
        let declared = channel.queue_declare(queue.into(), passive, FieldTable::default()).await.ok();
        let _ = channel.close(200, "consumers counted".into()).await;
        declared.map(|d| d.consumer_count())
    };
    tokio::time::timeout(SAMPLE_TIMEOUT, count).await.ok().flatten()
}

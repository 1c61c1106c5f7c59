//! Admission control: a publish over HTTP whose deliveries go to a subscription
//! that is behind is answered late, so a publisher that outruns delivery slows
//! to the delivery rate instead of growing a backlog every event waits behind.
//!
//! The event is durable and queued before any wait (the wait only delays its
//! 202), so holding the answer never delays a delivery; it delays the
//! publisher's next publish when the publisher waits for answers. A
//! subscription is *behind* when one of its unfinished deliveries, not under a
//! dispatcher's claim, has been due for longer than `INGEST_BACKPRESSURE_LAG`.
//! Deliveries that wait on purpose (a retry before its due time, an open
//! circuit's parked rows until it ends) are not due yet, and a subscription
//! whose last attempt failed (or whose circuit is not closed), or with an
//! attempt in flight for longer than [`STALLED_AFTER`], is never behind: a
//! failing or hanging endpoint never slows its publishers (one that starts
//! hanging, within half a second rather than after its first timeout). Only a
//! healthy endpoint that cannot keep up does.
//!
//! Every [`TICK`], one statement reads which subscriptions are behind from the
//! oldest [`SCAN_ROWS`] due deliveries (the `deliveries_due_idx` head, so its
//! cost is bounded however large a backlog grows); every ingest reads it for
//! itself. A held answer goes out as soon as none of its subscriptions is
//! behind, or after `INGEST_BACKPRESSURE_MAX_WAIT` whatever the backlog.
//! AMQP publishes are not held: their publishers are not slowed by ingest's
//! acks (the broker confirms them), so holding acks would only stop ingest
//! consuming the events of everyone else.
//!
//! Nothing is held while no dispatcher consumes `{p}.dispatch` (or the broker
//! cannot say; asked only while someone is behind, then every tick until a
//! consumer is seen and every [`CONSUMERS_EVERY`] after): then every subscription falls
//! behind and waiting cannot help it catch up, so a publisher would only lose
//! a second per publish to an outage of the dispatchers.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use diesel::{
    sql_types::{BigInt, Double, Integer, Uuid as SqlUuid},
    QueryableByName,
};
use diesel_async::RunQueryDsl;
use shared::{
    amqp::{Broker, Topology},
    db::{DbError, DbPool},
    models::delivery::CLAIM_MARGIN_SECONDS,
};

use crate::metric_names;

/// How often the subscriptions behind are read.
pub const TICK: Duration = Duration::from_millis(25);

/// Due deliveries read per tick, oldest first.
pub const SCAN_ROWS: i64 = 2_000;

/// How often the dispatch queue's consumers are counted.
pub const CONSUMERS_EVERY: Duration = Duration::from_secs(1);

/// How long an attempt may be in flight before its endpoint counts as
/// stalled rather than slow: a subscription with an attempt older than this is
/// never behind. Holding its publishers would not help it catch up, and until
/// its first attempt times out (30 s by default) nothing else says it hangs.
/// Measured in `unhealthy` (5 endpoints start hanging): with no such rule 66
/// publishes were held, 0.69 s each on average, and the healthy endpoints kept
/// 86 % of their throughput; with 1 s, 33–41 held 0.3–0.5 s; with 500 ms,
/// 11–25 held 0.04–0.11 s. Publishers to an endpoint slower than this per
/// request are never held.
pub const STALLED_AFTER: Duration = Duration::from_millis(500);

/// Subscriptions with an unfinished delivery due for longer than `$1` seconds
/// that no dispatcher has claimed, among the `$2` ([`SCAN_ROWS`]) longest-due
/// ones, whose circuit is closed, whose last attempt did not fail (no health
/// row: never attempted) and with no attempt in flight for longer than `$3`
/// seconds ([`STALLED_AFTER`]).
/// The inner scan walks `deliveries_due_idx` from its head. A delivery under a
/// live claim is not waiting: a dispatcher is attempting it or recording its
/// attempt (records linger), and counting it would keep a subscription behind
/// until its pipeline ran dry. But the claim tells how long the attempt has
/// been in flight: it was taken until `now() + timeout + $4`
/// ([`CLAIM_MARGIN_SECONDS`]). An attempt in flight is unfinished, so a hung
/// one stays at the head of the index, inside the scan. Whether the delivery's
/// message was confirmed yet (`enqueued`) does not matter: a dispatcher may
/// claim it before ingest marks it.
const BEHIND_SQL: &str = "\
SELECT w.subscription_id FROM ( \
    SELECT due.subscription_id, \
      bool_or(due.claimed_until IS NULL OR due.claimed_until < now()) AS waiting, \
      min(due.claimed_until) FILTER (WHERE due.claimed_until >= now()) AS first_claim_until \
    FROM ( \
      SELECT d.subscription_id, d.claimed_until FROM deliveries d \
      WHERE d.status IN ('pending', 'retrying') \
        AND coalesce(d.next_attempt_at, d.created_at) < now() - make_interval(secs => $1) \
      ORDER BY coalesce(d.next_attempt_at, d.created_at) LIMIT $2) due \
    GROUP BY due.subscription_id) w \
JOIN subscriptions s ON s.id = w.subscription_id \
LEFT JOIN endpoint_health h ON h.subscription_id = w.subscription_id \
WHERE w.waiting \
  AND (w.first_claim_until IS NULL \
    OR w.first_claim_until >= now() + make_interval(secs => s.timeout_seconds + $4 - $3)) \
  AND (h.subscription_id IS NULL OR (h.circuit = 'closed' AND h.consecutive_failures = 0))";

#[derive(QueryableByName)]
struct Behind {
    #[diesel(sql_type = SqlUuid)]
    subscription_id: uuid::Uuid,
}

/// The subscriptions behind, as of the last tick.
type BehindSet = Arc<HashSet<uuid::Uuid>>;

/// Holds publish answers while their subscriptions are behind; cheap to clone.
/// Off (never holds) when `INGEST_BACKPRESSURE_LAG` is `0`.
#[derive(Clone)]
pub struct Admission {
    behind: Option<tokio::sync::watch::Receiver<BehindSet>>,
    max_wait: Duration,
}

/// The settings of [`Admission::start`].
#[derive(Debug, Clone, Copy)]
pub struct AdmissionSettings {
    /// How long a queued delivery may be due before its subscription is behind
    /// (`None`: admission control off).
    pub lag: Option<Duration>,
    /// The longest an answer is held.
    pub max_wait: Duration,
}

impl Admission {
    /// Starts the sampler (unless off); it runs until `stop` turns true.
    pub fn start(
        pool: DbPool,
        broker: Broker,
        topology: &Topology,
        settings: AdmissionSettings,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> (Self, Option<tokio::task::JoinHandle<()>>) {
        let Some(lag) = settings.lag else {
            return (Self { behind: None, max_wait: settings.max_wait }, None);
        };
        let (sender, receiver) = tokio::sync::watch::channel(BehindSet::default());
        let dispatchers = Dispatchers { broker, queue: topology.dispatch_queue(), checked: None, consuming: false };
        let task = tokio::spawn(sample(pool, lag, dispatchers, sender, stop));
        (Self { behind: Some(receiver), max_wait: settings.max_wait }, Some(task))
    }

    /// Whether `subscription_id` was behind at the last read (false when off).
    pub fn is_behind(&self, subscription_id: uuid::Uuid) -> bool {
        self.behind.as_ref().is_some_and(|behind| behind.borrow().contains(&subscription_id))
    }

    /// Waits while any of `subscriptions` is behind, at most the maximum wait.
    pub async fn hold(&self, subscriptions: impl Iterator<Item = uuid::Uuid> + Clone) {
        let Some(behind) = &self.behind else { return };
        let mut behind = behind.clone();
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.max_wait;
        let mut held = false;
        loop {
            let behind_now = {
                let set = behind.borrow_and_update();
                !set.is_empty() && subscriptions.clone().any(|id| set.contains(&id))
            };
            if !behind_now {
                break;
            }
            held = true;
            match tokio::time::timeout_at(deadline, behind.changed()).await {
                Ok(Ok(())) => {}
                // The deadline passed, or the sampler stopped (ingest is stopping).
                Ok(Err(_)) | Err(_) => break,
            }
        }
        if held {
            metrics::counter!(metric_names::PUBLISHES_HELD).increment(1);
            metrics::histogram!(metric_names::PUBLISH_HOLD).record(started.elapsed().as_secs_f64());
        }
    }
}

/// Whether any dispatcher consumes the dispatch queue, as last counted.
struct Dispatchers {
    broker: Broker,
    queue: String,
    checked: Option<Instant>,
    consuming: bool,
}

impl Dispatchers {
    /// Counts the consumers again when the last count found none, or is
    /// [`CONSUMERS_EVERY`] old. A count of none is not kept: ingest usually
    /// starts before its dispatchers, and a publish burst in the second after
    /// would otherwise run unheld (measured: half of a `fanout10` run).
    async fn consuming(&mut self) -> bool {
        if !self.consuming || self.checked.is_none_or(|at| at.elapsed() >= CONSUMERS_EVERY) {
            let consumers = crate::queue_depths::consumers(&self.broker, &self.queue).await;
            self.consuming = consumers.is_some_and(|n| n > 0);
            self.checked = Some(Instant::now());
        }
        self.consuming
    }
}

/// Reads the subscriptions behind every [`TICK`]; waiters wake only when the set changes.
async fn sample(
    pool: DbPool,
    lag: Duration,
    mut dispatchers: Dispatchers,
    sender: tokio::sync::watch::Sender<BehindSet>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !*stop.borrow() {
        tokio::select! {
            _ = super::stopped(&mut stop) => break,
            _ = ticks.tick() => {}
        }
        // The broker is asked only when someone is behind (and then at most
        // once a second while dispatchers consume).
        let read = match behind(&pool, lag).await {
            Ok(set) if !set.is_empty() && !dispatchers.consuming().await => Ok(HashSet::new()),
            read => read,
        };
        match read {
            Ok(now) => {
                metrics::gauge!(metric_names::SUBSCRIPTIONS_BEHIND).set(now.len() as f64);
                sender.send_if_modified(|set| {
                    let changed = **set != now;
                    if changed {
                        *set = Arc::new(now);
                    }
                    changed
                });
            }
            // Unknown is not behind: a database outage must not hold every answer.
            Err(err) => {
                log::debug!("reading the subscriptions behind failed error={err}");
                sender.send_if_modified(|set| {
                    let changed = !set.is_empty();
                    *set = BehindSet::default();
                    changed
                });
            }
        }
    }
}

/// The subscriptions behind now (see [`BEHIND_SQL`]).
pub async fn behind(pool: &DbPool, lag: Duration) -> Result<HashSet<uuid::Uuid>, DbError> {
    let mut conn = shared::db::conn(pool).await?;
    // Prepared: each ingest runs it 40 times a second, and planning it cost
    // more than running it (pg_stat_statements: 0.38 against 0.14 ms a call).
    let query = diesel::sql_query(BEHIND_SQL)
        .bind::<Double, _>(lag.as_secs_f64())
        .bind::<BigInt, _>(SCAN_ROWS)
        .bind::<Double, _>(STALLED_AFTER.as_secs_f64())
        .bind::<Integer, _>(CLAIM_MARGIN_SECONDS);
    let rows: Vec<Behind> = shared::db::Prepared(query).load(&mut conn).await?;
    Ok(rows.into_iter().map(|row| row.subscription_id).collect())
}

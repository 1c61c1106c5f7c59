//! Starting a dispatcher: migrations, pool, broker, HTTP client, the health
//! listener and the consumer; and stopping it with a bounded drain.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use actix_web::{middleware, web, App, HttpServer};
use shared::{
    amqp::{Broker, Topology},
    config::Config,
    crypto::SecretBox,
    db,
    telemetry::{self, Readiness},
};
use tokio::sync::{watch, Semaphore};

use crate::{
    batched_store, client, consumer,
    context::{self, Context},
    deliver::DeliverContext,
    flow::Flow,
    health::Health,
    metric_names, scheduler,
};

/// A running dispatcher.
pub struct Dispatcher {
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    pub addr: SocketAddr,
    pub context: Context,
    pub health_server: actix_web::dev::ServerHandle,
    stop: watch::Sender<bool>,
    consumer: tokio::task::JoinHandle<Option<lapin::Channel>>,
    scheduler: tokio::task::JoinHandle<()>,
    /// One permit per message taken from the queue and not settled yet.
    unsettled: Arc<Semaphore>,
}

/// Why a dispatcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("binding the health listener failed: {0}")]
    Bind(#[from] std::io::Error),
    #[error("building the HTTP client failed: {0}")]
    Client(#[from] reqwest::Error),
}

/// Applies migrations, connects, serves the health routes and starts
/// consuming. Returns at once; the broker connection may still be coming up.
pub async fn start(config: Config) -> Result<Dispatcher, StartError> {
    telemetry::metrics_handle();
    crate::metric_names::register();
    db::run_migrations(&config.database_url).await?;
    let pool = db::pool(&config.database_url, config.database_pool_size, "webhooks-dispatcher")?;
    let topology = Topology::from_config(&config);
    let broker = Broker::start(config.amqp_url.clone(), topology.clone());
    let context = Context {
        deliver: DeliverContext {
            client: client::build(&config)?,
            allow_http_targets: config.allow_http_targets,
            allow_private_targets: config.allow_private_targets,
        },
        flow: Flow::new(
            config.dispatcher_concurrency,
            config.dispatcher_per_subscription,
            config.dispatcher_max_slot_wait,
        ),
        unrecorded: Arc::new(Semaphore::new(config.dispatcher_concurrency.saturating_mul(2))),
        slotless_claims: Arc::new(Semaphore::new(context::SLOTLESS_CLAIMS)),
        health: Arc::new(Health::new(&config)),
        stats: Arc::default(),
        // Claims are bookkeeping (a lost one only means a redelivered message):
        // committed asynchronously, saving a WAL flush per batch.
        claims: batched_store::claims(db::bookkeeping_pool(&config.database_url, 4, "webhooks-dispatcher-claims")?),
        records: batched_store::records(pool.clone()),
        parks: batched_store::parks(pool.clone()),
        secrets: SecretBox::new(&config.secret_key),
        config: Arc::new(config),
        pool,
        broker,
        topology: Arc::new(topology),
    };
    let readiness =
        Readiness { pool: context.pool.clone(), broker: context.broker.clone(), metrics: metric_names::SERVICE };
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(readiness.clone()))
            .wrap(middleware::from_fn(|req, next| telemetry::record_request(metric_names::SERVICE, req, next)))
            .configure(telemetry::health_routes)
    })
    .workers(1)
    .disable_signals()
    .bind(context.config.dispatcher_bind)?;
    let addr = server.addrs().first().copied().ok_or_else(|| std::io::Error::other("no listen address"))?;
    let server = server.run();
    let health_server = server.handle();
    tokio::spawn(server);

    let unsettled = Arc::new(Semaphore::new(consumer::prefetch(&context.config)));
    let (stop, stop_rx) = watch::channel(false);
    let consumer = tokio::spawn(consumer::run(context.clone(), unsettled.clone(), stop_rx.clone()));
    let scheduler = tokio::spawn(scheduler::run(context.clone(), stop_rx));
    log::info!(
        "dispatcher started version={} health_addr={addr} amqp_prefix={} concurrency={} per_subscription={}",
        env!("CARGO_PKG_VERSION"),
        context.config.amqp_prefix,
        context.config.dispatcher_concurrency,
        context.config.dispatcher_per_subscription
    );
    Ok(Dispatcher { addr, context, health_server, stop, consumer, scheduler, unsettled })
}

impl Dispatcher {
    /// Stops consuming, waits up to `drain` for the attempts in flight to be
    /// recorded and acked, then closes the consumer channel (returning any
    /// prefetched message to the queue) and the health listener. Returns
    /// whether every in-flight attempt finished in time; those that did not
    /// stay unacked and are redelivered.
    pub async fn shutdown(self, drain: Duration) -> bool {
        let _ = self.stop.send(true);
        let channel = self.consumer.await.ok().flatten();
        // Messages still waiting for a slot give their claim back and return to the queue.
        self.context.flow.close();
        let permits = u32::try_from(consumer::prefetch(&self.context.config)).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(drain, self.unsettled.acquire_many(permits)).await.is_ok_and(|p| p.is_ok());
        let _ = self.scheduler.await;
        if !drained {
            log::warn!("shutdown drain bound reached; unfinished attempts will be redelivered");
        }
        if let Some(channel) = channel {
            let _ = tokio::time::timeout(Duration::from_secs(5), channel.close(200, "dispatcher shutting down".into()))
                .await;
        }
        self.health_server.stop(true).await;
        drained
    }
}

//! Starting ingest: migrations, pool, broker, catalog, HTTP server and
//! background tasks. `main` and the tests both go through [`start`].

use std::{net::SocketAddr, sync::Arc, time::Duration};

use actix_service::{fn_service, map_config, IntoServiceFactory, ServiceFactoryExt as _};
use actix_web::dev::AppConfig;
use shared::{
    amqp::{Broker, Topology},
    catalog::Catalog,
    config::Config,
    crypto::SecretBox,
    db,
    models::subscription,
};

use crate::{
    app::build_app,
    key_cache::KeyCache,
    protocol_errors::ContractErrors,
    publishing::{
        admission::{Admission, AdmissionSettings},
        batcher::FanoutBatcher,
        budget::ByteBudget,
        consumer,
        dispatch_queue::DispatchQueue,
        outbox::OutboxRelay,
        reconciler::Reconciler,
    },
    retention::Retention,
    state::AppState,
};

/// Pending connections the listener queues (actix-web's default).
const LISTEN_BACKLOG: u32 = 1024;

/// How long [`Ingest::stop`] waits for the consumer and the relay to finish
/// what they hold before aborting them.
const STOP_BOUND: Duration = Duration::from_secs(15);
/// How long an idle keep-alive connection stays open. Longer than the idle
/// timeouts of the load balancers and client pools in front of ingest (AWS
/// ALB 60 s, nginx 60–75 s, the pools of reqwest and Go's net/http 90 s): a
/// server that closes first races a request sent on the closing connection,
/// and the client sees a reset POST it cannot safely retry. actix-http's
/// default is 5 s.
const KEEP_ALIVE: Duration = Duration::from_secs(120);

/// A running ingest: its address, state and server handle. Dropping it ends
/// its background tasks at once; [`Ingest::stop`] ends them gracefully.
pub struct Ingest {
    pub addr: SocketAddr,
    pub state: AppState,
    pub server: actix_web::dev::ServerHandle,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The AMQP event consumer, the outbox relay, the reconciler, retention
    /// and the job runners.
    pub background: Vec<tokio::task::JoinHandle<()>>,
    /// Tells the consumer and the relay to stop.
    stop: tokio::sync::watch::Sender<bool>,
}

impl Ingest {
    /// Stops the HTTP server (letting requests in flight finish), then the
    /// consumer (messages in hand finish; the rest stay on the queue) and the
    /// relay (after its round), bounded by [`STOP_BOUND`]. Unacked AMQP
    /// messages go back to the queue, and unqueued deliveries stay in the
    /// outbox, so stopping loses nothing.
    pub async fn stop(mut self) {
        self.server.stop(true).await;
        let _ = self.stop.send(true);
        let mut background = std::mem::take(&mut self.background);
        let all = futures_util::future::join_all(background.iter_mut().map(|t| async {
            let _ = t.await;
        }));
        if tokio::time::timeout(STOP_BOUND, all).await.is_err() {
            log::warn!("ingest background tasks did not stop within {STOP_BOUND:?}; aborting them");
        }
        for task in &background {
            task.abort();
        }
    }
}

impl Ingest {
    /// Ends the HTTP server, the consumer and the relay at once (no draining)
    /// and waits until they are gone: for tests, before their database and
    /// queues are dropped.
    pub async fn halt(&mut self) {
        let _ = self.stop.send(true);
        for task in &self.background {
            task.abort();
        }
        for task in &mut self.background {
            let _ = task.await;
        }
        self.background.clear();
        self.server.stop(false).await;
    }
}

impl Drop for Ingest {
    /// Ends the consumer and the relay (and the HTTP server) without waiting,
    /// so nothing of this ingest keeps running against a database or queues
    /// that are about to go (as in tests).
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in &self.background {
            task.abort();
        }
        // Sends the stop command now; the returned future only awaits completion.
        drop(self.server.stop(false));
    }
}

/// Why ingest could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("loading the event catalog failed: {0}")]
    Catalog(#[from] diesel::result::Error),
    #[error("binding the HTTP listener failed: {0}")]
    Bind(#[from] std::io::Error),
}

/// Applies migrations, connects, and serves on `config.ingest_bind`.
pub async fn start(config: Config, workers: usize) -> Result<Ingest, StartError> {
    shared::telemetry::metrics_handle();
    crate::metric_names::register();
    db::run_migrations(&config.database_url).await?;
    let pool = db::pool(&config.database_url, config.database_pool_size, "webhooks-ingest")?;
    let secrets = SecretBox::new(&config.secret_key);
    let catalog = {
        let mut conn = db::conn(&pool).await?;
        let sealed = subscription::seal_clear_headers(&mut conn, &secrets).await?;
        if sealed > 0 {
            log::info!("custom header values sealed at rest subscriptions={sealed}");
        }
        Catalog::load(&mut conn).await?
    };
    let topology = Topology::from_config(&config);
    let broker = Broker::start(config.amqp_url.clone(), topology.clone());
    // Marking deliveries enqueued is bookkeeping: committed asynchronously.
    let bookkeeping = db::bookkeeping_pool(&config.database_url, 4, "webhooks-ingest-bookkeeping")?;
    let dispatch = DispatchQueue::start(broker.clone(), topology.clone(), bookkeeping);
    let catalog = Arc::new(catalog);
    let fanout = FanoutBatcher::start(pool.clone(), catalog.clone(), dispatch.clone());
    let config_budget = config.ingest_max_inflight_bytes;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let admission_settings =
        AdmissionSettings { lag: config.ingest_backpressure_lag, max_wait: config.ingest_backpressure_max_wait };
    let (admission, admission_task) =
        Admission::start(pool.clone(), broker.clone(), &topology, admission_settings, stopped.clone());
    let state = AppState {
        admission,
        dispatch,
        fanout,
        secrets,
        config: Arc::new(config),
        pool,
        broker,
        topology: Arc::new(topology),
        catalog,
        key_cache: KeyCache::default(),
        budget: ByteBudget::new(config_budget),
    };
    let mut background = vec![
        state.key_cache.start_listener(state.config.database_url.clone(), stopped.clone()),
        consumer::start(state.clone(), stopped.clone()),
        OutboxRelay {
            broker: state.broker.clone(),
            topology: (*state.topology).clone(),
            pool: state.pool.clone(),
            interval: state.config.outbox_interval,
            grace: state.config.outbox_grace,
        }
        .start(stopped.clone()),
        Reconciler {
            broker: state.broker.clone(),
            topology: (*state.topology).clone(),
            pool: state.pool.clone(),
            interval: state.config.reconcile_interval,
            grace: state.config.reconcile_grace,
        }
        .start(stopped.clone()),
        crate::statistics::Statistics { pool: state.pool.clone() }.start(stopped.clone()),
    ];
    background.extend(crate::jobs::start(state.clone(), stopped.clone()));
    background.extend(admission_task);
    match state.config.retention {
        Some(retention) => background.push(Retention { pool: state.pool.clone(), retention }.start(stopped)),
        None => log::info!("retention off (RETENTION=0): events are kept forever"),
    }
    let (server, addr) = serve(state.clone(), workers)?;
    let handle = server.handle();
    let task = tokio::spawn(server);
    log::info!(
        "ingest started version={} addr={addr} amqp_prefix={} workers={}",
        env!("CARGO_PKG_VERSION"),
        state.config.amqp_prefix,
        workers.max(1)
    );
    Ok(Ingest { addr, state, server: handle, task, background, stop })
}

/// Binds `config.ingest_bind` and builds the HTTP server: actix-web's
/// `HttpServer` with its defaults, except that each connection goes through
/// [`ContractErrors`], so protocol errors answer in the contract's shape.
fn serve(state: AppState, workers: usize) -> std::io::Result<(actix_server::Server, SocketAddr)> {
    let socket = match state.config.ingest_bind {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(state.config.ingest_bind)?;
    let listener = socket.listen(LISTEN_BACKLOG)?.into_std()?;
    let addr = listener.local_addr()?;
    let builder = actix_server::Server::build().workers(workers.max(1)).disable_signals();
    // Lets keep-alive connections close at once when the server stops gracefully.
    let shutdown = builder.graceful_shutdown_signal();
    let server = builder
        .listen("webhooks-ingest", listener, move || {
            let shutdown = shutdown.clone();
            let app = build_app(state.clone()).into_factory().map_err(|err| err.error_response());
            let http = actix_http::HttpService::build()
                .graceful_shutdown_signal(move || {
                    let shutdown = shutdown.clone();
                    async move { shutdown.notified().await }
                })
                .client_request_timeout(crate::protocol_errors::HEAD_TIMEOUT)
                .keep_alive(KEEP_ALIVE)
                .client_disconnect_timeout(Duration::from_secs(1))
                .local_addr(addr)
                .finish(map_config(app, move |_| AppConfig::default()));
            fn_service(|io: tokio::net::TcpStream| async move {
                let _ = io.set_nodelay(true);
                let peer = io.peer_addr().ok();
                Ok::<_, actix_http::error::DispatchError>((ContractErrors::new(io), actix_http::Protocol::Http1, peer))
            })
            .and_then(http)
        })?
        .run();
    Ok((server, addr))
}

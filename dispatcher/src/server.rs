//! Starting a dispatcher: migrations, pool, broker, and the health listener.

use std::{net::SocketAddr, sync::Arc};

use actix_web::{middleware, web, App, HttpServer};
use shared::{
    amqp::{Broker, Topology},
    config::Config,
    crypto::SecretBox,
    db::{self, DbPool},
    telemetry::{self, Readiness},
};

/// What the dispatcher's tasks share.
#[derive(Clone)]
pub struct Context {
    pub config: Arc<Config>,
    pub pool: DbPool,
    pub broker: Broker,
    pub topology: Arc<Topology>,
    pub secrets: SecretBox,
}

/// A running dispatcher.
pub struct Dispatcher {
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    pub addr: SocketAddr,
    pub context: Context,
    pub health_server: actix_web::dev::ServerHandle,
}

/// Why a dispatcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error("binding the health listener failed: {0}")]
    Bind(#[from] std::io::Error),
}

/// Applies migrations, connects, and serves the health routes.
pub async fn start(config: Config) -> Result<Dispatcher, StartError> {
    telemetry::metrics_handle();
    db::run_migrations(&config.database_url).await?;
    let pool = db::pool(&config.database_url, config.database_pool_size, "webhooks-dispatcher")?;
    let topology = Topology::from_config(&config);
    let broker = Broker::start(config.amqp_url.clone(), topology.clone());
    let context = Context {
        secrets: SecretBox::new(&config.secret_key),
        config: Arc::new(config),
        pool,
        broker,
        topology: Arc::new(topology),
    };
    let readiness = Readiness { pool: context.pool.clone(), broker: context.broker.clone() };
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(readiness.clone()))
            .wrap(middleware::from_fn(telemetry::record_request))
            .configure(telemetry::health_routes)
    })
    .workers(1)
    .disable_signals()
    .bind(context.config.dispatcher_bind)?;
    let addr = server.addrs().first().copied().ok_or_else(|| std::io::Error::other("no listen address"))?;
    let server = server.run();
    let health_server = server.handle();
    tokio::spawn(server);
    log::info!("dispatcher health listening addr={addr}");
    Ok(Dispatcher { addr, context, health_server })
}

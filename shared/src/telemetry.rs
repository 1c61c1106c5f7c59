//! Logs, Prometheus metrics, and the `/healthz`, `/readyz`, `/metrics` routes
//! both services serve.

use std::{sync::OnceLock, time::Instant};

use actix_web::{
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    middleware::Next,
    web, HttpResponse,
};
use diesel_async::RunQueryDsl;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::{amqp::Broker, db::DbPool};

/// Initializes env_logger with `RUST_LOG` (default `info`); safe to call twice.
pub fn init_logging() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info,tracing::span=warn"))
        .format_timestamp_millis()
        .try_init();
}

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub fn metrics_handle() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ])
                // Counts, not seconds: requests per batched statement (`…_batch_size`).
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Suffix("_batch_size".into()),
                        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
                    )
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => {
                    let upkeep = handle.clone();
                    std::thread::spawn(move || loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        upkeep.run_upkeep();
                    });
                    handle
                }
                // Another recorder is installed (only in odd test setups): render an empty one.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// The names under which this shared code records one service's metrics:
/// each service passes its own (`webhooks_ingest_…`, `webhooks_dispatcher_…`),
/// since both may run in one process with one recorder (tests).
#[derive(Debug, Clone, Copy)]
pub struct ServiceMetrics {
    /// Counter `{method, route, status}`: HTTP requests answered.
    pub http_requests: &'static str,
    /// Histogram `{method, route}`: HTTP request latency.
    pub http_duration: &'static str,
    /// Gauge: 1 while the service is ready (as `/readyz`), set on every scrape.
    pub ready: &'static str,
}

/// Middleware body: counts requests by method, route pattern and status, and
/// records their latency, under `names`. Use it as
/// `middleware::from_fn(|req, next| record_request(NAMES, req, next))`.
pub async fn record_request(
    names: ServiceMetrics,
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().to_string();
    let response = next.call(req).await?;
    let status = response.status().as_u16().to_string();
    metrics::counter!(names.http_requests, "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(names.http_duration, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    Ok(response)
}

/// What `/readyz` checks, and the names its result is exported under.
#[derive(Clone)]
pub struct Readiness {
    pub pool: DbPool,
    pub broker: Broker,
    pub metrics: ServiceMetrics,
}

impl Readiness {
    /// Checks the database and the broker, and sets the service's ready gauge.
    async fn check(&self) -> (bool, bool) {
        let database = self.database_ok().await;
        let broker = self.broker.is_connected();
        metrics::gauge!(self.metrics.ready).set(if database && broker { 1.0 } else { 0.0 });
        (database, broker)
    }

    async fn database_ok(&self) -> bool {
        let check = async {
            let mut conn = crate::db::conn(&self.pool).await.ok()?;
            diesel::sql_query("SELECT 1").execute(&mut conn).await.ok()
        };
        matches!(tokio::time::timeout(std::time::Duration::from_secs(2), check).await, Ok(Some(_)))
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn readyz(readiness: web::Data<Readiness>) -> HttpResponse {
    let (database, broker) = readiness.check().await;
    let body = serde_json::json!({
        "status": if database && broker { "ready" } else { "unavailable" },
        "database": if database { "ok" } else { "unavailable" },
        "broker": if broker { "ok" } else { "unavailable" },
    });
    if database && broker {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics_text(readiness: web::Data<Readiness>) -> HttpResponse {
    // Readiness as a gauge, fresh on every scrape (one `SELECT 1`, bounded by 2 s).
    readiness.check().await;
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(metrics_handle().render())
}

/// Registers `/healthz`, `/readyz` and `/metrics` (needs `web::Data<Readiness>`).
pub fn health_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics_text));
}

//! Receivers: real HTTP servers on 127.0.0.1 that record what they get and
//! answer what the test's script says.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::Value;
use shared::testing::eventually;

/// What a receiver answers to one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub delay: Duration,
    pub location: Option<String>,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self { status, delay: Duration::ZERO, location: None, body: String::new(), headers: Vec::new() }
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
    pub fn body(mut self, body: &str) -> Self {
        self.body = body.to_owned();
        self
    }
    pub fn redirect(location: &str) -> Self {
        Self {
            status: 302,
            delay: Duration::ZERO,
            location: Some(location.to_owned()),
            body: String::new(),
            headers: Vec::new(),
        }
    }
}

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    /// Lower-case names; repeated headers joined with ", ".
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("header {name} missing: {:?}", self.headers))
    }
    pub fn delivery_id(&self) -> String {
        self.header("x-webhook-delivery-id").to_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

type Script = dyn Fn(&Received, usize) -> Reply + Send + Sync;

struct ReceiverState {
    script: Box<Script>,
    received: Mutex<Vec<Received>>,
    /// Requests being answered now, and the most at once, per path.
    concurrency: Mutex<HashMap<String, (usize, usize)>>,
}

/// A real HTTP server on 127.0.0.1 that records every request and answers
/// what its script says (given the request and how many came before it).
pub struct Receiver {
    pub base: String,
    state: Arc<ReceiverState>,
    server: actix_web::dev::ServerHandle,
}

impl Receiver {
    pub async fn start(script: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static) -> Self {
        let state = Arc::new(ReceiverState {
            script: Box::new(script),
            received: Mutex::default(),
            concurrency: Mutex::default(),
        });
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || App::new().app_data(data.clone()).default_service(web::to(receive)))
            .workers(1)
            .disable_signals()
            .bind(("127.0.0.1", 0))
            .expect("bind receiver");
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self { base: format!("http://{addr}"), state, server: handle }
    }

    /// Answers every request with `status`.
    pub async fn always(status: u16) -> Self {
        Self::start(move |_, _| Reply::status(status)).await
    }

    /// Answers `status` after `delay`.
    pub async fn slow(status: u16, delay: Duration) -> Self {
        Self::start(move |_, _| Reply::status(status).after(delay)).await
    }

    /// Answers the n-th request with `statuses[n]` (the last one after that).
    pub async fn sequence(statuses: &[u16]) -> Self {
        let statuses = statuses.to_vec();
        Self::start(move |_, n| Reply::status(statuses[n.min(statuses.len() - 1)])).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("lock").clone()
    }

    pub fn count(&self) -> usize {
        self.state.received.lock().expect("lock").len()
    }

    /// Requests per `X-Webhook-Delivery-Id`.
    pub fn count_by_delivery(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for request in self.received() {
            *counts.entry(request.delivery_id()).or_insert(0) += 1;
        }
        counts
    }

    /// The most requests to `path` that were being answered at once.
    pub fn max_concurrency(&self, path: &str) -> usize {
        self.state.concurrency.lock().expect("lock").get(path).map(|c| c.1).unwrap_or(0)
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_count(&self, n: usize, timeout: Duration) {
        let reached = eventually(timeout, || async { (self.count() >= n).then_some(()) }).await;
        assert!(reached.is_some(), "receiver got {} of {n} requests", self.count());
    }

    pub async fn stop(&self) {
        self.server.stop(false).await;
    }
}

async fn receive(req: HttpRequest, body: web::Bytes, state: web::Data<ReceiverState>) -> HttpResponse {
    let mut headers: HashMap<String, String> = HashMap::new();
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers.entry(name.as_str().to_owned()).and_modify(|v| *v = format!("{v}, {value}")).or_insert(value);
    }
    let request = Received { path: req.path().to_owned(), headers, body: body.to_vec(), at: Instant::now() };
    let reply = {
        let mut received = state.received.lock().expect("lock");
        let reply = (state.script)(&request, received.len());
        received.push(request.clone());
        reply
    };
    {
        let mut concurrency = state.concurrency.lock().expect("lock");
        let entry = concurrency.entry(request.path.clone()).or_insert((0, 0));
        entry.0 += 1;
        entry.1 = entry.1.max(entry.0);
    }
    tokio::time::sleep(reply.delay).await;
    if let Some(entry) = state.concurrency.lock().expect("lock").get_mut(&request.path) {
        entry.0 -= 1;
    }
    let mut response = HttpResponse::build(actix_web::http::StatusCode::from_u16(reply.status).expect("status"));
    if let Some(location) = reply.location {
        response.insert_header(("Location", location));
    }
    for (name, value) in reply.headers {
        response.insert_header((name, value));
    }
    response.body(reply.body)
}

/// A URL on 127.0.0.1 where nothing listens (connections are refused).
pub fn refused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}/hook")
}

//! The receiver: a real HTTP server on 127.0.0.1 that subscriptions point at.
//!
//! `POST /{role}/{sub}` where role is `ok`, `fail` or `hang` and `sub` the
//! subscription's number. It records when each (phase, event, subscription)
//! arrived, counts repeats, and verifies both signatures of a sample of
//! requests. Event ids are `bench<tag>.<phase>.<event>`, so the receipt is
//! tied to its publish without a lookup.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant},
};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde::Serialize;

use crate::scenario::Role;

/// How the receiver behaves.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    /// Held before answering each `ok` request.
    pub delay: Duration,
    /// How long `hang` requests are held (longer than the subscription timeout).
    pub hang: Duration,
    /// Verify the signatures of one request in this many (1 = all).
    pub verify_every: u64,
    /// The run's tag in event ids; requests for other runs are counted as foreign.
    pub tag: String,
    /// HTTP worker threads.
    pub workers: usize,
}

/// One request as received.
#[derive(Debug, Clone, Copy)]
pub struct Receipt {
    pub at: Instant,
    pub phase: u16,
    pub event: u32,
    pub sub: u32,
    pub role: Role,
    /// `X-Webhook-Attempt`.
    pub attempt: u32,
}

/// Signature checks, sampled.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SignatureReport {
    pub checked: u64,
    pub failed: u64,
    /// The first few failures, for the report.
    pub failures: Vec<String>,
}

/// Requests the receiver could not attribute to this run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StrayReport {
    /// Well-formed requests for another run or an unknown subscription.
    pub foreign: u64,
    /// Requests without the contract's headers or with an unparsable path.
    pub malformed: u64,
}

#[derive(Default)]
struct Recorded {
    receipts: Vec<Receipt>,
    seen_ok: HashSet<(u16, u32, u32)>,
    /// Distinct `ok` (event, subscription) pairs per phase.
    unique_ok: Vec<u64>,
}

struct SinkState {
    settings: SinkSettings,
    event_prefix: String,
    secrets: RwLock<Vec<Option<String>>>,
    recorded: Mutex<Recorded>,
    requests: AtomicU64,
    signatures: Mutex<SignatureReport>,
    foreign: AtomicU64,
    malformed: AtomicU64,
}

/// A running receiver.
pub struct Sink {
    pub addr: SocketAddr,
    state: Arc<SinkState>,
    server: actix_web::dev::ServerHandle,
}

/// The event id the bench publishes for `event` of `phase`.
pub fn event_id(tag: &str, phase: u16, event: u32) -> String {
    format!("bench{tag}.{phase}.{event}")
}

impl Sink {
    /// Binds 127.0.0.1 on a free port and serves on worker threads of its own.
    pub fn start(settings: SinkSettings) -> std::io::Result<Self> {
        let state = Arc::new(SinkState {
            event_prefix: format!("bench{}.", settings.tag),
            settings,
            secrets: RwLock::new(Vec::new()),
            recorded: Mutex::new(Recorded::default()),
            requests: AtomicU64::new(0),
            signatures: Mutex::new(SignatureReport::default()),
            foreign: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
        });
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(1024 * 1024))
                .route("/{role}/{sub}", web::post().to(receive))
        })
        .workers(state.settings.workers.max(1))
        .backlog(4096)
        .disable_signals()
        .bind(("127.0.0.1", 0))?;
        let addr = server.addrs().first().copied().ok_or_else(|| std::io::Error::other("no listen address"))?;
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(Self { addr, state, server: handle })
    }

    /// The URL of subscription `sub`'s endpoint with the given behaviour.
    pub fn url(&self, role: Role, sub: usize) -> String {
        format!("http://{}/{}/{sub}", self.addr, role.path())
    }

    /// Remembers subscription `sub`'s signing secret for verification.
    pub fn set_secret(&self, sub: usize, secret: String) {
        let mut secrets = self.state.secrets.write().unwrap_or_else(|e| e.into_inner());
        if secrets.len() <= sub {
            secrets.resize(sub + 1, None);
        }
        secrets[sub] = Some(secret);
    }

    /// Distinct successful (event, subscription) pairs received in `phase` so far.
    pub fn unique_ok(&self, phase: u16) -> u64 {
        let recorded = self.state.recorded.lock().unwrap_or_else(|e| e.into_inner());
        recorded.unique_ok.get(phase as usize).copied().unwrap_or(0)
    }

    /// Every receipt of `phase` so far.
    pub fn receipts(&self, phase: u16) -> Vec<Receipt> {
        let recorded = self.state.recorded.lock().unwrap_or_else(|e| e.into_inner());
        recorded.receipts.iter().filter(|r| r.phase == phase).copied().collect()
    }

    /// All requests received so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    pub fn signatures(&self) -> SignatureReport {
        self.state.signatures.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn strays(&self) -> StrayReport {
        StrayReport {
            foreign: self.state.foreign.load(Ordering::Relaxed),
            malformed: self.state.malformed.load(Ordering::Relaxed),
        }
    }

    /// Stops the server without waiting for held (`hang`) requests.
    pub async fn stop(&self) {
        self.server.stop(false).await;
    }
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name)?.to_str().ok()
}

async fn receive(
    req: HttpRequest,
    path: web::Path<(String, u32)>,
    body: web::Bytes,
    state: web::Data<SinkState>,
) -> HttpResponse {
    let at = Instant::now();
    let count = state.requests.fetch_add(1, Ordering::Relaxed);
    let (role, sub) = path.into_inner();
    let Some(role) = Role::from_path(&role) else {
        state.malformed.fetch_add(1, Ordering::Relaxed);
        return HttpResponse::NotFound().finish();
    };
    let parsed = header(&req, "x-webhook-event-id").and_then(|event_id| {
        let Some(rest) = event_id.strip_prefix(&state.event_prefix) else { return Some(None) };
        let (phase, event) = rest.split_once('.')?;
        Some(Some((phase.parse::<u16>().ok()?, event.parse::<u32>().ok()?)))
    });
    let attempt = header(&req, "x-webhook-attempt").and_then(|a| a.parse().ok());
    let (Some(ids), Some(attempt), Some(_delivery)) = (parsed, attempt, header(&req, "x-webhook-delivery-id")) else {
        state.malformed.fetch_add(1, Ordering::Relaxed);
        return HttpResponse::BadRequest().finish();
    };
    let Some((phase, event)) = ids else {
        state.foreign.fetch_add(1, Ordering::Relaxed);
        return HttpResponse::Ok().finish();
    };
    let secret = {
        let secrets = state.secrets.read().unwrap_or_else(|e| e.into_inner());
        secrets.get(sub as usize).cloned().flatten()
    };
    let Some(secret) = secret else {
        state.foreign.fetch_add(1, Ordering::Relaxed);
        return HttpResponse::Ok().finish();
    };
    {
        let mut recorded = state.recorded.lock().unwrap_or_else(|e| e.into_inner());
        recorded.receipts.push(Receipt { at, phase, event, sub, role, attempt });
        if role == Role::Ok && recorded.seen_ok.insert((phase, event, sub)) {
            if recorded.unique_ok.len() <= phase as usize {
                recorded.unique_ok.resize(phase as usize + 1, 0);
            }
            recorded.unique_ok[phase as usize] += 1;
        }
    }
    if count.is_multiple_of(state.settings.verify_every.max(1)) {
        let problem = verify(&req, &body, &secret);
        let mut signatures = state.signatures.lock().unwrap_or_else(|e| e.into_inner());
        signatures.checked += 1;
        if let Some(problem) = problem {
            signatures.failed += 1;
            if signatures.failures.len() < 5 {
                signatures.failures.push(format!("sub {sub} event {phase}.{event}: {problem}"));
            }
        }
    }
    match role {
        Role::Ok => {
            if !state.settings.delay.is_zero() {
                tokio::time::sleep(state.settings.delay).await;
            }
            HttpResponse::Ok().finish()
        }
        Role::Fail => HttpResponse::InternalServerError().finish(),
        Role::Hang => {
            tokio::time::sleep(state.settings.hang).await;
            HttpResponse::Ok().finish()
        }
    }
}

/// Checks both signatures and the headers that go with them; `None` when all is well.
fn verify(req: &HttpRequest, body: &[u8], secret: &str) -> Option<String> {
    let Some(legacy) = header(req, "x-webhook-signature") else { return Some("no X-Webhook-Signature".into()) };
    if !shared::signing::verify_legacy(secret, body, legacy) {
        return Some("X-Webhook-Signature does not verify".into());
    }
    let (Some(msg_id), Some(timestamp), Some(signature)) =
        (header(req, "webhook-id"), header(req, "webhook-timestamp"), header(req, "webhook-signature"))
    else {
        return Some("a Standard Webhooks header is missing".into());
    };
    let Ok(timestamp) = timestamp.parse::<i64>() else { return Some("webhook-timestamp is not an integer".into()) };
    if (chrono::Utc::now().timestamp() - timestamp).abs() > 300 {
        return Some("webhook-timestamp is more than 5 minutes off".into());
    }
    if !shared::signing::verify_standard(secret, msg_id, timestamp, body, signature) {
        return Some("webhook-signature does not verify".into());
    }
    if header(req, "x-webhook-event-id") != Some(msg_id) {
        return Some("webhook-id differs from X-Webhook-Event-Id".into());
    }
    let envelope: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => return Some("body is not JSON".into()),
    };
    if envelope["id"].as_str() != Some(msg_id) {
        return Some("body id differs from webhook-id".into());
    }
    None
}

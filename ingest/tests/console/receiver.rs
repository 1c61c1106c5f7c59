//! A subscriber's endpoint: a real HTTP server on 127.0.0.1 that records what
//! it got and answers with the status and body the test sets.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// Lower-case header names.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

#[derive(Default)]
struct State {
    answer: Mutex<(u16, String)>,
    received: Mutex<Vec<Received>>,
}

/// A running receiver.
pub struct Receiver {
    pub url: String,
    state: Arc<State>,
    server: actix_web::dev::ServerHandle,
}

impl Receiver {
    /// Starts answering 200 with an empty body.
    pub async fn start() -> Self {
        let state = Arc::new(State { answer: Mutex::new((200, String::new())), ..State::default() });
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
        Self { url: format!("http://{addr}/hooks"), state, server: handle }
    }

    /// From now on, answers `status` with `body`.
    pub fn answer(&self, status: u16, body: &str) {
        *self.state.answer.lock().expect("answer lock") = (status, body.to_owned());
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("received lock").clone()
    }

    pub async fn stop(&self) {
        self.server.stop(false).await;
    }
}

async fn receive(req: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let headers = req
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.to_str().unwrap_or_default().to_owned()))
        .collect();
    state.received.lock().expect("received lock").push(Received { headers, body: body.to_vec() });
    let (status, text) = state.answer.lock().expect("answer lock").clone();
    let status = actix_web::http::StatusCode::from_u16(status).expect("status code");
    HttpResponse::build(status).content_type("text/html").body(text)
}

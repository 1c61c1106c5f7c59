//! A property test over the whole API: whatever arrives (odd Unicode, control
//! characters, huge numbers, malformed escapes, wrong types, bad ids, any
//! auth), no route answers 5xx, and every 4xx has the contract's error body.
//!
//! The routes, their query parameters and the body field names come from the
//! OpenAPI document, so a route added later is fuzzed without touching this
//! file. The generator is seeded (ChaCha, fixed seed): a failure reproduces
//! on every run, shrunk to a minimal request.

use std::collections::BTreeSet;

use proptest::{
    collection::{btree_map, vec},
    prelude::*,
    test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner},
};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp};

/// Requests sent (each shrink step sends more); kept small for a 2-core CI.
const CASES: u32 = 160;

/// One documented route.
#[derive(Debug, Clone)]
struct Route {
    method: Method,
    /// With `{name}` placeholders for path parameters.
    path: String,
    query_names: Vec<String>,
}

/// Routes, query parameter names and body field names, from the OpenAPI document.
async fn documented(app: &TestApp) -> (Vec<Route>, Vec<String>) {
    let doc: Value = app
        .client
        .get(format!("{}/api/v1/openapi.json", app.base))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    let mut routes = Vec::new();
    for (path, methods) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in methods.as_object().expect("methods") {
            let Ok(method) = method.to_uppercase().parse::<Method>() else { continue };
            let query_names = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect();
            routes.push(Route { method, path: path.clone(), query_names });
        }
    }
    let mut fields = BTreeSet::new();
    for schema in doc["components"]["schemas"].as_object().expect("schemas").values() {
        fields.extend(schema["properties"].as_object().into_iter().flatten().map(|(name, _)| name.clone()));
    }
    // The publish body (documented inline by some generators) and the guide's names.
    fields
        .extend(["event_type", "event_data", "tenant_id", "event_id", "metadata", "since", "until"].map(String::from));
    (routes, fields.into_iter().collect())
}

/// Characters that have broken services before: NUL and other controls,
/// escapes, quotes, separators, non-characters, astral and combining marks.
fn nasty_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => any::<char>(),
        2 => prop::sample::select(vec![
            '\0', '\u{1}', '\u{7}', '\t', '\n', '\r', '\u{1b}', '\u{7f}', '\u{85}', '\u{a0}', '\u{200b}',
            '\u{202e}', '\u{2028}', '\u{feff}', '\u{fffd}', '\u{ffff}', '\u{10ffff}', '\u{1f600}', '\u{301}',
            '%', '&', '=', '?', '#', '/', '\\', '"', '\'', '.', '*', '+', ';', ',', ' ',
        ]),
        3 => proptest::char::range('a', 'z'),
    ]
}

fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => vec(nasty_char(), 0..24).prop_map(String::from_iter),
        1 => prop::sample::select(vec![
            String::new(),
            "%".into(),
            "%zz".into(),
            "%FF".into(),
            "%00".into(),
            "99999999999999999999999999".into(),
            "-9223372036854775809".into(),
            "1e309".into(),
            "NaN".into(),
            "kPpKYsTgAAD_dDyu_DJCBauQcbsjn0r1".into(),
            "0000-01-01T00:00:00Z".into(),
            "+275760-09-13T00:00:00Z".into(),
            "9999-12-31T23:59:59.999999999+14:00".into(),
            "../../etc/passwd".into(),
            "a".repeat(3000),
        ]),
        1 => (1usize..200).prop_map(|n| "é".repeat(n)),
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("JSON has no NaN or infinity", |f| f.is_finite()).prop_map(Value::from),
        prop::sample::select(vec![json!(i64::MIN), json!(u64::MAX), json!(1e308), json!(-0.0), json!(2147483648_i64)]),
        nasty_string().prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::from),
            btree_map(nasty_string(), inner, 0..5).prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A plausible value for a known field, so requests also get past the first check.
fn plausible(field: &str) -> Value {
    match field {
        "url" => json!("https://example.com/hook"),
        "events" => json!(["*"]),
        "event_type" => json!("invoice.created"),
        "tenant_id" => json!("t1"),
        "event_data" | "metadata" | "headers" => json!({}),
        "since" | "until" => json!("2026-01-01T00:00:00Z"),
        _ => Value::Null,
    }
}

/// What one generated request is made of (indices are resolved against the documented lists).
#[derive(Debug, Clone)]
struct Case {
    route: prop::sample::Index,
    /// Per path parameter: a real id (`None`) or this text.
    path_values: Vec<Option<String>>,
    /// `(parameter index or a made-up name, value, percent-encode it?)`.
    query: Vec<(Result<prop::sample::Index, String>, String, bool)>,
    body: Body,
    auth: Auth,
}

#[derive(Debug, Clone)]
enum Body {
    None,
    /// Known fields with plausible values, some replaced by random JSON.
    Fields(Vec<(prop::sample::Index, Option<Value>)>),
    Json(Value),
    Raw(Vec<u8>),
}

#[derive(Debug, Clone, Copy)]
enum Auth {
    Tenant,
    Publisher,
    Missing,
    Garbage,
}

fn case() -> impl Strategy<Value = Case> {
    let body = prop_oneof![
        1 => Just(Body::None),
        4 => vec((any::<prop::sample::Index>(), prop::option::weighted(0.6, json_value())), 0..7).prop_map(Body::Fields),
        2 => json_value().prop_map(Body::Json),
        1 => vec(any::<u8>(), 0..64).prop_map(Body::Raw),
    ];
    let query_name = prop_oneof![3 => any::<prop::sample::Index>().prop_map(Ok), 1 => nasty_string().prop_map(Err)];
    (
        any::<prop::sample::Index>(),
        vec(prop::option::weighted(0.5, nasty_string()), 2),
        vec((query_name, nasty_string(), any::<bool>()), 0..4),
        body,
        prop::sample::select(vec![Auth::Tenant, Auth::Tenant, Auth::Publisher, Auth::Missing, Auth::Garbage]),
    )
        .prop_map(|(route, path_values, query, body, auth)| Case { route, path_values, query, body, auth })
}

/// Percent-encodes everything but unreserved characters.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

struct Fixture {
    /// How often each status was answered, to show the run reached past authentication.
    statuses: std::sync::Mutex<std::collections::BTreeMap<u16, usize>>,
    routes: Vec<Route>,
    fields: Vec<String>,
    real_ids: Vec<String>,
    tenant: String,
    publisher: String,
}

/// Sends one case; `Err` describes a 5xx or a 4xx without the contract body.
async fn send(app: &TestApp, fixture: &Fixture, case: &Case) -> Result<(), String> {
    let route = case.route.get(&fixture.routes);
    let mut path = route.path.clone();
    let mut values = case.path_values.iter().cycle();
    let mut real = fixture.real_ids.iter().cycle();
    while let Some(start) = path.find('{') {
        let end = path[start..].find('}').map_or(path.len(), |i| start + i + 1);
        let value = match values.next().cloned().flatten() {
            Some(text) => encode(&text),
            None => real.next().cloned().unwrap_or_default(),
        };
        path.replace_range(start..end, &value);
    }
    let query: Vec<String> = case
        .query
        .iter()
        .map(|(name, value, encoded)| {
            let name = match name {
                Ok(index) if !route.query_names.is_empty() => index.get(&route.query_names).clone(),
                Ok(_) => "limit".to_owned(),
                Err(made_up) => encode(made_up),
            };
            // Unencoded values keep raw `%`, `&` and `#`: malformed on purpose.
            let value = if *encoded { encode(value) } else { value.replace(['#', ' '], "") };
            format!("{name}={value}")
        })
        .collect();
    let url = if query.is_empty() { path.clone() } else { format!("{path}?{}", query.join("&")) };
    let mut request = app.client.request(route.method.clone(), format!("{}{url}", app.base));
    request = match case.auth {
        Auth::Tenant => request.bearer_auth(&fixture.tenant),
        Auth::Publisher => request.bearer_auth(&fixture.publisher),
        Auth::Missing => request,
        Auth::Garbage => request.header("Authorization", "Bearer whk_not-a-key"),
    };
    let body: Option<Vec<u8>> = match &case.body {
        Body::None => None,
        Body::Fields(fields) => {
            let object: serde_json::Map<String, Value> = fields
                .iter()
                .map(|(index, value)| {
                    let name = index.get(&fixture.fields).clone();
                    let value = value.clone().unwrap_or_else(|| plausible(&name));
                    (name, value)
                })
                .collect();
            Some(Value::Object(object).to_string().into_bytes())
        }
        Body::Json(value) => Some(value.to_string().into_bytes()),
        Body::Raw(bytes) => Some(bytes.clone()),
    };
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body);
    }
    let response = match request.send().await {
        Ok(response) => response,
        // A URL the client itself cannot send never reaches the server.
        Err(err) if err.is_builder() => return Ok(()),
        Err(err) => return Err(format!("{} {url}: no answer: {err}", route.method)),
    };
    let status = response.status();
    if let Ok(mut statuses) = fixture.statuses.lock() {
        *statuses.entry(status.as_u16()).or_default() += 1;
    }
    let text = response.text().await.unwrap_or_default();
    if status.is_server_error() {
        return Err(format!("{} {url} → {status}: {text}", route.method));
    }
    if status.is_client_error() {
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !(body["error"]["code"].is_string() && body["error"]["message"].is_string()) {
            return Err(format!("{} {url} → {status} without the contract's error body: {text:?}", route.method));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_input_to_any_route_gets_a_5xx_or_an_error_outside_the_contract_shape() {
    let app = spawn_app().await;
    let tenant = app.tenant_key("t1").await;
    let publisher = app.publisher_key().await;
    let subscription = app.insert_subscription("t1", "http://127.0.0.1:9/hook", &["*"], true).await;
    let body = json!({"event_type": "invoice.created", "event_data": {}, "tenant_id": "t1"});
    let (_, published) = app.post("/api/v1/events", &publisher, &body).await;
    let delivery = app.deliveries_of("t1", published["event_id"].as_str().unwrap_or_default()).await;
    let mut real_ids = vec![subscription.to_string()];
    real_ids.extend(delivery.iter().map(|d| d.id.to_string()));
    real_ids.extend(published["event_id"].as_str().map(str::to_owned));
    let (routes, fields) = documented(&app).await;
    assert!(routes.len() >= 10, "the document lists the routes: {routes:?}");
    let fixture = Fixture { statuses: Default::default(), routes, fields, real_ids, tenant, publisher };

    let config = Config { cases: CASES, failure_persistence: None, max_shrink_iters: 200, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::block_in_place(|| {
        runner.run(&case(), |case| handle.block_on(send(&app, &fixture, &case)).map_err(TestCaseError::fail))
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    let statuses = fixture.statuses.lock().map(|s| s.clone()).unwrap_or_default();
    for (class, wanted) in
        [(200..300, "2xx"), (400..401, "400"), (401..402, "401"), (404..405, "404"), (422..423, "422")]
    {
        assert!(statuses.keys().any(|s| class.contains(s)), "no {wanted} answer: the run stays shallow {statuses:?}");
    }
}

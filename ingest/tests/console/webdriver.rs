//! The few W3C WebDriver commands the browser tests use, as JSON over HTTP
//! to a local chromedriver (https://www.w3.org/TR/webdriver2/).
//!
//! Written here rather than taken from `fantoccini`: that crate pulls in
//! Mozilla's `webdriver` crate and with it a second ICU, `cookie` and
//! `thiserror` stack (a dozen duplicate crates in `cargo tree -d`) for what
//! is, for these tests, a dozen requests with `reqwest`, which the tests
//! already use.

use std::fmt;

use base64::Engine;
use reqwest::Method;
use serde_json::{json, Map, Value};

/// The key of an element reference in WebDriver's JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A WebDriver error: the protocol's error code (`no such element`, …) and message.
#[derive(Debug)]
pub struct Error {
    pub code: String,
    pub message: String,
}

impl Error {
    pub fn is_no_such_alert(&self) -> bool {
        self.code == "no such alert"
    }

    fn transport(err: impl fmt::Display) -> Self {
        Self { code: "transport".to_owned(), message: err.to_string() }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// One WebDriver session.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
}

impl Client {
    /// Starts a session with `capabilities` on the WebDriver server at `server`.
    pub async fn connect(server: &str, capabilities: Map<String, Value>) -> Result<Self> {
        let http = reqwest::Client::new();
        let body = json!({ "capabilities": { "alwaysMatch": capabilities } });
        let value = send(&http, Method::POST, &format!("{server}/session"), Some(body)).await?;
        let id = value["sessionId"].as_str().ok_or_else(|| Error::transport(format!("no sessionId in {value}")))?;
        Ok(Self { http, session: format!("{server}/session/{id}") })
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        send(&self.http, method, &format!("{}{path}", self.session), body).await
    }

    pub async fn goto(&self, url: &str) -> Result<()> {
        self.call(Method::POST, "/url", Some(json!({ "url": url }))).await.map(drop)
    }

    pub async fn current_url(&self) -> Result<String> {
        let value = self.call(Method::GET, "/url", None).await?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    /// The first element matching the CSS selector.
    pub async fn find(&self, css: &str) -> Result<Element> {
        let value = self.call(Method::POST, "/element", Some(by_css(css))).await?;
        Element::from_value(self, &value)
    }

    /// Every element matching the CSS selector.
    pub async fn find_all(&self, css: &str) -> Result<Vec<Element>> {
        let value = self.call(Method::POST, "/elements", Some(by_css(css))).await?;
        value.as_array().into_iter().flatten().map(|v| Element::from_value(self, v)).collect()
    }

    pub async fn active_element(&self) -> Result<Element> {
        let value = self.call(Method::GET, "/element/active", None).await?;
        Element::from_value(self, &value)
    }

    /// Runs `script` as a function body in the page; its `return` value.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.call(Method::POST, "/execute/sync", Some(json!({ "script": script, "args": args }))).await
    }

    pub async fn get_alert_text(&self) -> Result<String> {
        let value = self.call(Method::GET, "/alert/text", None).await?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    pub async fn set_window_size(&self, width: u32, height: u32) -> Result<()> {
        self.call(Method::POST, "/window/rect", Some(json!({ "width": width, "height": height }))).await.map(drop)
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Result<Vec<u8>> {
        let value = self.call(Method::GET, "/screenshot", None).await?;
        base64::engine::general_purpose::STANDARD.decode(value.as_str().unwrap_or_default()).map_err(Error::transport)
    }

    /// Ends the session (the browser closes).
    pub async fn close(&self) -> Result<()> {
        self.call(Method::DELETE, "", None).await.map(drop)
    }
}

/// An element of the page, valid until the page changes.
pub struct Element {
    client: Client,
    id: String,
}

impl Element {
    fn from_value(client: &Client, value: &Value) -> Result<Self> {
        let id = value[ELEMENT_KEY].as_str().ok_or_else(|| Error::transport(format!("not an element: {value}")))?;
        Ok(Self { client: client.clone(), id: id.to_owned() })
    }

    async fn call(&self, method: Method, what: &str, body: Option<Value>) -> Result<Value> {
        self.client.call(method, &format!("/element/{}{what}", self.id), body).await
    }

    pub async fn is_displayed(&self) -> Result<bool> {
        Ok(self.call(Method::GET, "/displayed", None).await?.as_bool().unwrap_or(false))
    }

    /// The rendered text.
    pub async fn text(&self) -> Result<String> {
        Ok(self.call(Method::GET, "/text", None).await?.as_str().unwrap_or_default().to_owned())
    }

    pub async fn click(&self) -> Result<()> {
        self.call(Method::POST, "/click", Some(json!({}))).await.map(drop)
    }

    pub async fn clear(&self) -> Result<()> {
        self.call(Method::POST, "/clear", Some(json!({}))).await.map(drop)
    }

    /// Types `text` (WebDriver key codes such as `\u{E004}` included).
    pub async fn send_keys(&self, text: &str) -> Result<()> {
        self.call(Method::POST, "/value", Some(json!({ "text": text }))).await.map(drop)
    }

    /// Chooses the `<option>` with `value` of this `<select>`, as a click would.
    pub async fn select_by_value(&self, value: &str) -> Result<()> {
        let css = format!("option[value={}]", json!(value));
        let option = self.call(Method::POST, "/element", Some(by_css(&css))).await?;
        Element::from_value(&self.client, &option)?.click().await
    }
}

fn by_css(css: &str) -> Value {
    json!({ "using": "css selector", "value": css })
}

/// One WebDriver command: its `value`, or the protocol's error.
async fn send(http: &reqwest::Client, method: Method, url: &str, body: Option<Value>) -> Result<Value> {
    let mut request = http.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.map_err(Error::transport)?;
    let ok = response.status().is_success();
    let mut answer: Value = response.json().await.map_err(Error::transport)?;
    let value = answer.get_mut("value").map(Value::take).unwrap_or(Value::Null);
    if ok {
        return Ok(value);
    }
    Err(Error {
        code: value["error"].as_str().unwrap_or("unknown error").to_owned(),
        message: value["message"].as_str().unwrap_or_default().to_owned(),
    })
}

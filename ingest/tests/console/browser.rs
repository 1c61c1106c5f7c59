//! Headless Chromium through chromedriver, with the few steps the tests use,
//! and screenshots of every screen saved when a test fails.

use std::{
    future::Future,
    net::TcpListener,
    panic::AssertUnwindSafe,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::Duration,
};

use futures_util::FutureExt;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::webdriver::{Client, Element};

/// WebDriver's key codes.
pub const TAB: &str = "\u{E004}";
pub const ENTER: &str = "\u{E007}";

/// How long a condition may take to become true in the page.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Browsers open at once across the tests of this binary (each is a few
/// processes; the machine is small).
static BROWSERS: Semaphore = Semaphore::const_new(2);

/// A chromedriver process (and the Chromium it starts), in a process group
/// of its own that is killed on drop, so a failed test leaves nothing running.
struct Driver {
    child: Child,
    port: u16,
    profile: PathBuf,
}

impl Driver {
    fn spawn() -> Self {
        let chromedriver = find_program("CHROMEDRIVER", &["chromedriver"]).unwrap_or_else(|| {
            panic!("chromedriver not found: install Debian's chromium and chromium-driver (scripts/test.sh does it when run as root) or set CHROMEDRIVER")
        });
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let profile = std::env::temp_dir().join(format!("console-test-chromium-{}", uuid::Uuid::new_v4().simple()));
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("start chromedriver")
        };
        Self { child, port, profile }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and every Chromium process it started.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// `$ENV_VAR`, else the first of `names` found on `PATH`.
fn find_program(env_var: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env_var) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).flat_map(|dir| names.iter().map(move |name| dir.join(name))).find(|p| p.is_file())
}

/// The Chromium binary chromedriver should start.
fn chromium() -> PathBuf {
    // Debian's /usr/bin/chromium is a launcher script; the real binary is beside it.
    let debian = PathBuf::from("/usr/lib/chromium/chromium");
    if std::env::var_os("CHROMIUM").is_none() && debian.is_file() {
        return debian;
    }
    find_program("CHROMIUM", &["chromium", "chromium-browser", "google-chrome"]).unwrap_or_else(|| {
        panic!("chromium not found: install Debian's chromium (scripts/test.sh does it) or set CHROMIUM")
    })
}

/// One browser session on the console of `base`.
pub struct Browser {
    pub client: Client,
    /// `http://127.0.0.1:<port>` of ingest.
    pub base: String,
    test: String,
    shots: Mutex<Vec<(String, Vec<u8>)>>,
    _permit: tokio::sync::SemaphorePermit<'static>,
    _driver: Driver,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium, 1280×900.
    pub async fn open(test: &str, base: &str) -> Self {
        let permit = BROWSERS.acquire().await.expect("browser semaphore");
        let driver = Driver::spawn();
        let webdriver = format!("http://127.0.0.1:{}", driver.port);
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            "--no-proxy-server",
            "--window-size=1280,900",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .chain([format!("--user-data-dir={}", driver.profile.display())])
        .collect::<Vec<_>>();
        let capabilities = json!({
            "browserName": "chrome",
            // Leave any alert open, so a test can see it.
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": { "binary": chromium(), "args": args },
        });
        let capabilities = capabilities.as_object().cloned().expect("capabilities object");
        let mut last_error = String::new();
        // chromedriver needs a moment to listen, and Chromium may take a while
        // to start on a loaded 2-core machine (a session refused meanwhile is
        // an "unknown error"): up to 30 s.
        for _ in 0..300 {
            match Client::connect(&webdriver, capabilities.clone()).await {
                Ok(client) => {
                    return Self {
                        client,
                        base: base.to_owned(),
                        test: test.to_owned(),
                        shots: Mutex::default(),
                        _permit: permit,
                        _driver: driver,
                    }
                }
                Err(err) => last_error = err.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no browser session from chromedriver: {last_error}");
    }

    /// Runs a test's steps; if they panic, saves a screenshot of every screen
    /// visited (and of the last state) before failing the test.
    pub async fn check(&self, steps: impl Future<Output = ()>) {
        let outcome = AssertUnwindSafe(steps).catch_unwind().await;
        let keep = outcome.is_err() || std::env::var("CONSOLE_SCREENSHOTS").is_ok_and(|v| v == "always");
        if keep {
            if let Ok(png) = self.client.screenshot().await {
                self.shots.lock().expect("shots").push(("last".to_owned(), png));
            }
            self.save_screenshots();
        }
        let _ = self.client.close().await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    fn save_screenshots(&self) {
        let dir = artifacts_dir().join(&self.test);
        let _ = std::fs::remove_dir_all(&dir);
        if std::fs::create_dir_all(&dir).is_err() {
            return;
        }
        let shots = self.shots.lock().expect("shots");
        for (i, (name, png)) in shots.iter().enumerate() {
            let _ = std::fs::write(dir.join(format!("{i:02}-{name}.png")), png);
        }
        eprintln!("console screenshots of {}: {}", self.test, dir.display());
    }

    /// Remembers how the page looks now, under `name`.
    pub async fn shot(&self, name: &str) {
        if let Ok(png) = self.client.screenshot().await {
            self.shots.lock().expect("shots").push((name.to_owned(), png));
        }
    }

    /// Opens the console (a fresh page load) at `route` (e.g. `#/subscriptions`).
    pub async fn open_console(&self, route: &str) {
        self.client.goto(&format!("{}/console{route}", self.base)).await.expect("open the console");
    }

    /// Moves to `route` inside the page (no reload), as a link would.
    pub async fn go(&self, route: &str) {
        self.js(&format!("location.hash = {}", json!(route))).await;
    }

    /// Signs in with `key` and waits for the subscriptions screen.
    pub async fn sign_in(&self, key: &str) {
        self.open_console("").await;
        self.type_into("#api-key", key).await;
        self.click("form button[type=submit]").await;
        self.wait_text("h1", "Subscriptions").await;
    }

    pub async fn find(&self, css: &str) -> Element {
        self.wait_for(css).await
    }

    /// Waits until `css` matches a displayed element.
    pub async fn wait_for(&self, css: &str) -> Element {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(element) = self.client.find(css).await {
                if element.is_displayed().await.unwrap_or(false) {
                    return element;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "{css} never appeared");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until an element matching `css` contains `needle`; returns its text.
    pub async fn wait_text(&self, css: &str, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut last = String::new();
        loop {
            for element in self.client.find_all(css).await.unwrap_or_default() {
                if let Ok(text) = element.text().await {
                    if text.contains(needle) {
                        return text;
                    }
                    last = text;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "{css} never showed {needle:?}; last text: {last:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `check` (JavaScript returning a value) returns something truthy; returns it.
    pub async fn wait_js(&self, what: &str, check: &str) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let value = self.client.execute(check, vec![]).await.unwrap_or(Value::Null);
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
                _ => true,
            };
            if truthy {
                return value;
            }
            assert!(tokio::time::Instant::now() < deadline, "never true: {what}");
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("element text")
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        element.clear().await.unwrap_or_else(|e| panic!("clear {css}: {e}"));
        element.send_keys(text).await.unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Sends keys to the focused element, as a user typing.
    pub async fn press(&self, keys: &str) {
        let focused = self.client.active_element().await.expect("a focused element");
        focused.send_keys(keys).await.unwrap_or_else(|e| panic!("press {keys:?}: {e}"));
    }

    /// Runs JavaScript in the page (`return …` to get a value).
    pub async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// The text of an open alert/confirm/prompt dialog, if one is open.
    pub async fn open_dialog(&self) -> Option<String> {
        match self.client.get_alert_text().await {
            Ok(text) => Some(text),
            Err(e) if e.is_no_such_alert() => None,
            Err(e) => panic!("asking for an alert failed: {e}"),
        }
    }

    /// Resizes the window so the page is `width` CSS pixels wide; returns the
    /// width the page reports.
    pub async fn set_width(&self, width: u32) -> u64 {
        self.client.set_window_size(width, 844).await.expect("resize window");
        self.js("return window.innerWidth").await.as_u64().expect("innerWidth")
    }

    /// Asserts the page scrolls only vertically.
    pub async fn assert_no_horizontal_scroll(&self, screen: &str) {
        let sizes = self
            .js("return [document.documentElement.scrollWidth, document.documentElement.clientWidth, document.body.scrollWidth]")
            .await;
        let [scroll, client, body] = [0, 1, 2].map(|i| sizes[i].as_u64().expect("width"));
        assert!(
            scroll <= client && body <= client,
            "{screen} scrolls horizontally: document {scroll} px / body {body} px wide in a {client} px viewport"
        );
    }
}

/// Where failure screenshots go (`CONSOLE_ARTIFACTS`, else under the target dir).
pub fn artifacts_dir() -> PathBuf {
    std::env::var_os("CONSOLE_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots"))
}

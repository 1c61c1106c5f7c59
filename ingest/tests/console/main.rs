//! The tenant console tested in a real browser: headless Chromium driven over
//! WebDriver (chromedriver), against an in-process ingest and dispatcher with
//! their own database and AMQP prefix, delivering to real HTTP receivers.
//!
//! Needs `chromium` and `chromedriver` (Debian: `chromium`, `chromium-driver`;
//! `scripts/test.sh` installs them when missing). On failure each test saves a
//! screenshot of every screen it visited under `CONSOLE_ARTIFACTS` (default
//! `$CARGO_TARGET_DIR/tmp/console-screenshots/<test>/`); set
//! `CONSOLE_SCREENSHOTS=always` to keep them on success too.

mod browser;
mod env;
mod errors;
mod layout;
mod readme;
mod receiver;
mod safety;
mod signin;
mod subscriptions;
mod troubleshooting;
mod webdriver;

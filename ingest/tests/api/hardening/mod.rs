//! Hardening: hostile inputs answer contract 4xx (never 5xx), secrets in
//! custom headers are sealed and masked, API keys can be listed and revoked.

mod api_keys;
mod fuzz;
mod headers;
mod inputs;

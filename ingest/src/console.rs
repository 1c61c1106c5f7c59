//! `GET /console`: the tenant console, a single page over the public REST API.
//!
//! Its HTML, CSS and JavaScript live in `ingest/console/` and are compiled
//! into the binary, so the console needs no files, CDN or build step at run
//! time. Every response carries a strict Content-Security-Policy: scripts and
//! styles only from this server (no inline code), no framing, and Trusted
//! Types enforced so no string can reach an HTML sink.

use std::sync::OnceLock;

use actix_web::{
    http::header::{self, HeaderValue},
    web, HttpRequest, HttpResponse,
};

/// The policy of every console response.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'";

/// One embedded file.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
}

const INDEX: Asset = Asset { body: include_bytes!("../console/index.html"), content_type: "text/html; charset=utf-8" };
const SCRIPT: Asset =
    Asset { body: include_bytes!("../console/console.js"), content_type: "text/javascript; charset=utf-8" };
const STYLE: Asset = Asset { body: include_bytes!("../console/console.css"), content_type: "text/css; charset=utf-8" };
const ICON: Asset = Asset { body: include_bytes!("../console/favicon.svg"), content_type: "image/svg+xml" };

/// A validator for every asset: the console changes only with the binary, so
/// one hash of all files lets browsers revalidate cheaply.
fn etag() -> &'static str {
    static ETAG: OnceLock<String> = OnceLock::new();
    ETAG.get_or_init(|| {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for asset in [&INDEX, &SCRIPT, &STYLE, &ICON] {
            ctx.update(asset.body);
        }
        format!("\"{}\"", hex::encode(&ctx.finish().as_ref()[..12]))
    })
}

/// Serves `asset` with the security headers (or 304 when the browser's copy is current).
fn serve(req: &HttpRequest, asset: &Asset) -> HttpResponse {
    let tag = etag();
    let current = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.split(',').any(|candidate| candidate.trim() == tag));
    let mut res = if current { HttpResponse::NotModified() } else { HttpResponse::Ok() };
    res.insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::CROSS_ORIGIN_OPENER_POLICY, "same-origin"))
        .insert_header((header::CROSS_ORIGIN_RESOURCE_POLICY, "same-origin"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::ETAG, HeaderValue::from_static(tag)));
    if current {
        res.finish()
    } else {
        res.content_type(asset.content_type).body(asset.body)
    }
}

async fn index(req: HttpRequest) -> HttpResponse {
    serve(&req, &INDEX)
}

async fn script(req: HttpRequest) -> HttpResponse {
    serve(&req, &SCRIPT)
}

async fn style(req: HttpRequest) -> HttpResponse {
    serve(&req, &STYLE)
}

async fn icon(req: HttpRequest) -> HttpResponse {
    serve(&req, &ICON)
}

/// `/console/` → `/console`: the page's relative links assume no trailing slash.
async fn without_slash() -> HttpResponse {
    HttpResponse::PermanentRedirect().insert_header((header::LOCATION, "../console")).finish()
}

/// Registers `/console` and its assets.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/console").route(web::get().to(index)))
        .service(web::resource("/console/").route(web::get().to(without_slash)))
        .service(web::resource("/console/console.js").route(web::get().to(script)))
        .service(web::resource("/console/console.css").route(web::get().to(style)))
        .service(web::resource("/console/favicon.svg").route(web::get().to(icon)));
}

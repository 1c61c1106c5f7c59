//! The one HTTP client every attempt uses, and the resolver that keeps it off
//! the internal network.
//!
//! SSRF defence, unless `ALLOW_PRIVATE_TARGETS`: every address a host name
//! resolves to is checked at connect time (so DNS rebinding after the URL was
//! saved does not help), IP-literal hosts are checked before the request
//! (hyper skips the resolver for them), and proxies and redirects are off
//! (either would reach an address nobody checked).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use shared::{config::Config, targets::is_public_ip};

use crate::outcome::{BlockedAddress, DnsFailure};

/// How long establishing a TCP (and TLS) connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the shared client: pooled keep-alive connections, no redirects, no
/// proxies, a connect timeout, and (unless private targets are allowed) the
/// public-only resolver. The per-request timeout is the subscription's.
pub fn build(config: &Config) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(config.dispatcher_per_subscription.max(1))
        .tcp_keepalive(Duration::from_secs(60));
    if !config.allow_private_targets {
        builder = builder.dns_resolver(Arc::new(PublicOnlyResolver));
    }
    builder.build()
}

/// Resolves with the system resolver and drops every non-public address;
/// a host left with none fails with [`BlockedAddress`].
#[derive(Debug, Clone, Copy)]
pub struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| DnsFailure { host: host.clone(), reason: e.to_string() })?
                .collect();
            if resolved.is_empty() {
                return Err(DnsFailure { host, reason: "no addresses".into() }.into());
            }
            let public: Vec<SocketAddr> = resolved.into_iter().filter(|addr| is_public_ip(addr.ip())).collect();
            if public.is_empty() {
                return Err(BlockedAddress { host }.into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

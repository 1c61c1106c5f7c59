//! Where webhooks may be sent: absolute http(s) URLs whose hosts are public.
//!
//! Used twice: when a subscription is saved (hosts that are IP literals or
//! obviously internal names are refused) and by the dispatcher for every
//! resolved address (so DNS rebinding cannot reach the internal network).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use url::{Host, Url};

/// Why a URL is not an acceptable webhook target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("must be an absolute URL")]
    NotAbsolute,
    #[error("scheme must be https (or http when ALLOW_HTTP_TARGETS is set)")]
    Scheme,
    #[error("must not contain credentials")]
    Credentials,
    #[error("host {0} is not a public address (set ALLOW_PRIVATE_TARGETS to allow it)")]
    PrivateHost(String),
    #[error("must be at most 2048 characters")]
    TooLong,
}

/// Parses and checks a subscription URL.
pub fn check_url(raw: &str, allow_http: bool, allow_private: bool) -> Result<Url, TargetError> {
    if raw.len() > 2048 {
        return Err(TargetError::TooLong);
    }
    let url = Url::parse(raw).map_err(|_| TargetError::NotAbsolute)?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        _ => return Err(TargetError::Scheme),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(TargetError::Credentials);
    }
    let host = url.host().ok_or(TargetError::NotAbsolute)?;
    if !allow_private && !is_public_host(&host) {
        return Err(TargetError::PrivateHost(host.to_string()));
    }
    Ok(url)
}

/// Whether a URL host may be public: IP literals must be public addresses;
/// names must not be `localhost` or an internal-only suffix.
pub fn is_public_host(host: &Host<&str>) -> bool {
    match host {
        Host::Ipv4(ip) => is_public_ip(IpAddr::V4(*ip)),
        Host::Ipv6(ip) => is_public_ip(IpAddr::V6(*ip)),
        Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let internal = name == "localhost"
                || name.ends_with(".localhost")
                || name.ends_with(".local")
                || name.ends_with(".internal")
                || name == "metadata.google.internal"
                || !name.contains('.');
            !internal
        }
    }
}

/// IPv4 ranges that are not publicly routable unicast: unspecified/"this
/// network", private, CGNAT, loopback, link-local (which holds cloud metadata,
/// 169.254.169.254), IETF protocol assignments, documentation, benchmarking,
/// multicast and reserved (which includes broadcast).
const NON_PUBLIC_V4: &[Ipv4Net] = &[
    Ipv4Net::new_assert(Ipv4Addr::new(0, 0, 0, 0), 8),
    Ipv4Net::new_assert(Ipv4Addr::new(10, 0, 0, 0), 8),
    Ipv4Net::new_assert(Ipv4Addr::new(100, 64, 0, 0), 10),
    Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8),
    Ipv4Net::new_assert(Ipv4Addr::new(169, 254, 0, 0), 16),
    Ipv4Net::new_assert(Ipv4Addr::new(172, 16, 0, 0), 12),
    Ipv4Net::new_assert(Ipv4Addr::new(192, 0, 0, 0), 24),
    Ipv4Net::new_assert(Ipv4Addr::new(192, 0, 2, 0), 24),
    Ipv4Net::new_assert(Ipv4Addr::new(192, 168, 0, 0), 16),
    Ipv4Net::new_assert(Ipv4Addr::new(198, 18, 0, 0), 15),
    Ipv4Net::new_assert(Ipv4Addr::new(198, 51, 100, 0), 24),
    Ipv4Net::new_assert(Ipv4Addr::new(203, 0, 113, 0), 24),
    Ipv4Net::new_assert(Ipv4Addr::new(224, 0, 0, 0), 4),
    Ipv4Net::new_assert(Ipv4Addr::new(240, 0, 0, 0), 4),
];

const fn v6(segments: [u16; 8], prefix_len: u8) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), prefix_len)
}

/// IPv6 ranges that are never public targets, whatever follows the prefix.
const NON_PUBLIC_V6: &[Ipv6Net] = &[
    v6([0, 0, 0, 0, 0, 0, 0, 0], 128),         // unspecified
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128),         // loopback
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),  // NAT64 local-use (RFC 8215): translates to local IPv4
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),      // discard-only
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),     // documentation (RFC 9637)
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),      // unique local
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),     // link-local
    v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),     // site-local (deprecated)
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),      // multicast
];

/// Where an IPv6 form carries an IPv4 address, and which bits hold it.
enum Embedded {
    /// The last 32 bits.
    Last32,
    /// Bits 16–47 (6to4, `2002:AABB:CCDD::/48`).
    After16,
    /// Teredo: the server at bits 32–63 and the client, inverted, in the last 32 bits.
    Teredo,
}

/// IPv6 forms that carry an IPv4 address; an address in one of them is
/// judged by the IPv4 it carries, so `::ffff:127.0.0.1`, `2002:7f00:1::` or
/// `64:ff9b::a00:1` reach no further than `127.0.0.1` or `10.0.0.1` would.
const EMBEDDING_V6: &[(Ipv6Net, Embedded)] = &[
    (v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96), Embedded::Last32), // IPv4-mapped
    (v6([0, 0, 0, 0, 0xffff, 0, 0, 0], 96), Embedded::Last32), // IPv4-translated (SIIT)
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 96), Embedded::Last32),      // IPv4-compatible (deprecated)
    (v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96), Embedded::Last32), // NAT64 well-known prefix
    (v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16), Embedded::After16), // 6to4
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32), Embedded::Teredo), // Teredo
];

/// Whether `ip` is a public unicast address: not in [`NON_PUBLIC_V4`] or
/// [`NON_PUBLIC_V6`], and, for IPv6 forms that carry an IPv4 address
/// ([`EMBEDDING_V6`]), not carrying a non-public one.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    !NON_PUBLIC_V4.iter().any(|net| net.contains(&ip))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if NON_PUBLIC_V6.iter().any(|net| net.contains(&ip)) {
        return false;
    }
    let bits = u128::from(ip);
    let v4_at = |shift: u32| Ipv4Addr::from((bits >> shift) as u32);
    match EMBEDDING_V6.iter().find(|(net, _)| net.contains(&ip)) {
        Some((_, Embedded::Last32)) => is_public_v4(v4_at(0)),
        Some((_, Embedded::After16)) => is_public_v4(v4_at(80)),
        Some((_, Embedded::Teredo)) => is_public_v4(v4_at(64)) && is_public_v4(Ipv4Addr::from(!(bits as u32))),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "::127.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!is_public_ip(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public_ip(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn ipv6_forms_carrying_a_private_ipv4_are_judged_by_it() {
        for ip in [
            "2002:7f00:1::",             // 6to4 of 127.0.0.1
            "2002:a00:1::1",             // 6to4 of 10.0.0.1
            "2002:a9fe:a9fe::",          // 6to4 of 169.254.169.254
            "2001:0:7f00:1::1",          // Teredo, server 127.0.0.1
            "2001:0:808:808::80ff:fffe", // Teredo, client 127.0.0.1 (inverted)
            "::ffff:0:7f00:1",           // IPv4-translated 127.0.0.1
            "::ffff:0:a00:1",            // IPv4-translated 10.0.0.1
            "64:ff9b::7f00:1",           // NAT64 of 127.0.0.1
            "64:ff9b:1::808:808",        // NAT64 local-use: local by definition
            "64:ff9b:1:ffff::1",
        ] {
            assert!(!is_public_ip(ip.parse().expect("ip")), "{ip}");
        }
        for ip in [
            "2002:808:808::1",           // 6to4 of 8.8.8.8
            "64:ff9b::808:808",          // NAT64 of 8.8.8.8
            "2001:0:808:808::f7f7:f7f7", // Teredo, server and client 8.8.8.8
            "::ffff:0:808:808",
        ] {
            assert!(is_public_ip(ip.parse().expect("ip")), "{ip}");
        }
        for url in ["https://[2002:7f00:1::]/", "https://[::ffff:0:7f00:1]/", "https://[64:ff9b:1::a00:1]/"] {
            assert!(matches!(check_url(url, false, false), Err(TargetError::PrivateHost(_))), "{url}");
        }
    }

    #[test]
    fn urls_are_checked_for_scheme_credentials_and_host() {
        assert!(check_url("https://example.com/hook", false, false).is_ok());
        assert_eq!(check_url("http://example.com/hook", false, false), Err(TargetError::Scheme));
        assert!(check_url("http://example.com/hook", true, false).is_ok());
        assert_eq!(check_url("ftp://example.com", true, true), Err(TargetError::Scheme));
        assert_eq!(check_url("/relative", true, true), Err(TargetError::NotAbsolute));
        assert_eq!(check_url("https://u:p@example.com", true, true), Err(TargetError::Credentials));
        for private in [
            "https://localhost/x",
            "https://127.0.0.1/x",
            "https://[::1]/x",
            "https://[::ffff:10.0.0.1]/x",
            "https://169.254.169.254/latest",
            "https://foo.internal/",
            "https://printer.local/",
            "https://0x7f000001/",
            "https://2130706433/",
        ] {
            assert!(matches!(check_url(private, true, false), Err(TargetError::PrivateHost(_))), "{private}");
            assert!(check_url(private, true, true).is_ok(), "{private}");
        }
    }
}

//! Where webhooks may be sent: absolute http(s) URLs whose hosts are public.
//!
//! Used twice: when a subscription is saved (hosts that are IP literals or
//! obviously internal names are refused) and by the dispatcher for every
//! resolved address (so DNS rebinding cannot reach the internal network).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

/// Whether `ip` is a public unicast address: not loopback, private,
/// link-local (which holds cloud metadata, 169.254.169.254), CGNAT,
/// unspecified, multicast, broadcast, documentation, benchmarking or reserved;
/// IPv6 mapped and compatible forms are judged as the IPv4 they carry.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            is_public_v6(v6)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments 192.0.0/24
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18/15
        || a >= 240) // reserved 240/4
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    // IPv4-compatible (::a.b.c.d, deprecated) and NAT64 (64:ff9b::/96) carry an IPv4 address.
    if segments[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified() {
        return is_public_v4(Ipv4Addr::from(((segments[6] as u32) << 16) | segments[7] as u32));
    }
    if segments[0] == 0x64 && segments[1] == 0xff9b && segments[2..6] == [0, 0, 0, 0] {
        return is_public_v4(Ipv4Addr::from(((segments[6] as u32) << 16) | segments[7] as u32));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (segments[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (segments[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
        || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
        || segments[0] == 0x0100 && segments[1..4] == [0, 0, 0]) // discard-only 100::/64
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
        ] {
            assert!(!is_public_ip(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public_ip(ip.parse().expect("ip")), "{ip}");
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

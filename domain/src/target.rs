//! Which network addresses deliveries may reach.
//!
//! Herald posts to URLs its tenants choose, so without a policy a tenant could make it call
//! internal services or a cloud metadata endpoint (SSRF). Every address a delivery connects
//! to — an IP literal in the URL or every address a name resolves to — is checked here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::Url;

/// Whether deliveries may reach non-public addresses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    /// `HERALD_ALLOW_PRIVATE_TARGETS=true`: for development and tests only.
    pub allow_private: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("`{0}` is not a valid URL")]
    InvalidUrl(String),
    #[error("only http and https URLs can be delivered to, not `{0}`")]
    Scheme(String),
    #[error("the URL has no host")]
    NoHost,
    #[error("{ip} is a {kind} address; deliveries only reach public addresses (set HERALD_ALLOW_PRIVATE_TARGETS=true for development)")]
    Forbidden { ip: IpAddr, kind: &'static str },
}

impl TargetPolicy {
    /// Checks one address a delivery is about to connect to.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), TargetError> {
        match non_public_kind(ip) {
            Some(kind) if !self.allow_private => Err(TargetError::Forbidden { ip, kind }),
            _ => Ok(()),
        }
    }

    /// Checks a URL's shape and, when its host is an IP literal, the address. Names are
    /// checked when they are resolved, at connection time.
    pub fn check_url(&self, raw: &str) -> Result<Url, TargetError> {
        let url =
            Url::parse(raw).map_err(|_| TargetError::InvalidUrl(raw.chars().take(64).collect()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(TargetError::Scheme(url.scheme().to_owned()));
        }
        match url.host() {
            None => Err(TargetError::NoHost),
            Some(url::Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip)).map(|()| url),
            Some(url::Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip)).map(|()| url),
            Some(url::Host::Domain(_)) => Ok(url),
        }
    }
}

/// Names the kind of a non-public address, or `None` for a public one.
pub fn non_public_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => v6_kind(v6),
    }
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(match () {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_private() => "private",
        _ if ip.is_link_local() => "link-local",
        _ if a == 100 && (64..128).contains(&b) => "shared (CGNAT)",
        _ if a == 0 => "\"this network\"",
        _ if a == 192 && b == 0 && ip.octets()[2] == 0 => "IETF protocol",
        _ if a == 198 && (b == 18 || b == 19) => "benchmarking",
        _ if ip.is_broadcast() => "broadcast",
        _ if ip.is_multicast() => "multicast",
        _ if a >= 240 => "reserved",
        _ if ip.is_documentation() => "documentation",
        _ => return None,
    })
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    // Addresses that embed an IPv4 address are judged by it, so `::ffff:127.0.0.1` is loopback.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_kind(v4);
    }
    let segments = ip.segments();
    // Translation prefixes carry an IPv4 address in the last 32 bits: the well-known NAT64
    // prefix (RFC 6052), the local-use NAT64 prefix 64:ff9b:1::/48 (RFC 8215) and
    // IPv4-translated addresses ::ffff:0:a.b.c.d (SIIT, RFC 6145). Judge the embedded address.
    let nat64 = segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || segments[..3] == [0x64, 0xff9b, 1];
    let translated = segments[..6] == [0, 0, 0, 0, 0xffff, 0];
    if nat64 || translated {
        let [a, b] = segments[6].to_be_bytes();
        let [c, d] = segments[7].to_be_bytes();
        return v4_kind(Ipv4Addr::new(a, b, c, d));
    }
    Some(match segments[0] {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        s if s & 0xfe00 == 0xfc00 => "unique local",
        s if s & 0xffc0 == 0xfe80 => "link-local",
        s if s & 0xffc0 == 0xfec0 => "site-local",
        s if s & 0xff00 == 0xff00 => "multicast",
        0x2001 if segments[1] == 0x0db8 => "documentation",
        0x2002 => "6to4",
        // Teredo tunnels reach arbitrary IPv4 hosts through a relay.
        0x2001 if segments[1] == 0 => "Teredo",
        0 if segments[1..6] == [0; 5] => "IPv4-compatible",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: TargetPolicy = TargetPolicy {
        allow_private: false,
    };

    #[test]
    fn refuses_every_non_public_address() {
        let refused = [
            "127.0.0.1",
            "127.8.9.10",
            "0.0.0.0",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.1.2.3",
            "64:ff9b::7f00:1",
            "ff02::1",
            "::127.0.0.1",
            "2001:db8::1",
        ];
        for text in refused {
            let ip: IpAddr = text.parse().unwrap();
            assert!(STRICT.check_ip(ip).is_err(), "{text} should be refused");
        }
    }

    #[test]
    fn allows_public_addresses() {
        for text in [
            "1.1.1.1",
            "8.8.8.8",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(
                STRICT.check_ip(text.parse().unwrap()).is_ok(),
                "{text} should be allowed"
            );
        }
    }

    #[test]
    fn allow_private_lets_everything_through() {
        let open = TargetPolicy {
            allow_private: true,
        };
        assert!(open.check_ip("127.0.0.1".parse().unwrap()).is_ok());
        assert!(open.check_url("http://127.0.0.1:9000/hook").is_ok());
    }

    #[test]
    fn urls_are_checked_for_scheme_and_literal_hosts() {
        assert!(STRICT.check_url("https://example.com/hook").is_ok());
        assert!(matches!(
            STRICT.check_url("ftp://example.com"),
            Err(TargetError::Scheme(_))
        ));
        assert!(matches!(
            STRICT.check_url("not a url"),
            Err(TargetError::InvalidUrl(_))
        ));
        assert!(matches!(
            STRICT.check_url("http://[::1]:80/"),
            Err(TargetError::Forbidden { .. })
        ));
        assert!(matches!(
            STRICT.check_url("http://169.254.169.254/latest"),
            Err(TargetError::Forbidden { .. })
        ));
        assert!(matches!(
            STRICT.check_url("http://0x7f.1/"),
            Err(TargetError::Forbidden { .. })
        ));
    }
}

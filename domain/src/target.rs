//! Which network addresses deliveries may reach.
//!
//! Herald posts to URLs its tenants choose, so without a policy a tenant could make it call
//! internal services or a cloud metadata endpoint (SSRF). Every address a delivery connects
//! to — an IP literal in the URL or every address a name resolves to — is checked here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use url::Url;

/// Whether deliveries may reach non-public addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    /// `HERALD_ALLOW_PRIVATE_TARGETS=true`: for development and tests only.
    pub allow_private: bool,
    /// Non-public networks deliveries may reach anyway, for development (a local receiver on
    /// 127.0.0.1, a test service on 10.0.0.0/8). Public addresses need no entry. An entry for
    /// an IPv4 network also covers its IPv4-mapped IPv6 form (`::ffff:10.0.0.1`), which is the
    /// same destination; other IPv6 forms that embed an IPv4 address (NAT64, 6to4) are not
    /// matched against IPv4 entries.
    pub allowed_cidrs: Vec<IpNet>,
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
            Some(kind) if !self.allow_private && !self.is_allowlisted(ip) => {
                Err(TargetError::Forbidden { ip, kind })
            }
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

    /// Parses an allowlist: comma-separated CIDR blocks (`10.0.0.0/8, fd00::/8`) or bare
    /// addresses (`127.0.0.1` means `127.0.0.1/32`, `::1` means `::1/128`). Whitespace is
    /// ignored; an empty text is an empty list. A block with host bits set (`10.0.0.1/8`) is
    /// refused rather than widened silently.
    pub fn parse_cidrs(text: &str) -> Result<Vec<IpNet>, String> {
        text.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let invalid = || {
                    format!(
                        "`{entry}` is not a CIDR block or IP address (write e.g. 10.0.0.0/8, fd00::/8 or 127.0.0.1)"
                    )
                };
                if !entry.contains('/') {
                    return entry.parse::<IpAddr>().map(IpNet::from).map_err(|_| invalid());
                }
                let net: IpNet = entry.parse().map_err(|_| invalid())?;
                if net.trunc() != net {
                    return Err(format!(
                        "`{entry}` has host bits set; did you mean {}?",
                        net.trunc()
                    ));
                }
                Ok(net)
            })
            .collect()
    }

    /// Whether an allowlist entry covers `ip`. An IPv4 address and its IPv4-mapped IPv6 form
    /// reach the same host (a dual-stack socket connects to `::ffff:a.b.c.d` over IPv4), so
    /// both forms are tried against every entry.
    fn is_allowlisted(&self, ip: IpAddr) -> bool {
        if self.allowed_cidrs.is_empty() {
            return false;
        }
        let forms = match ip {
            IpAddr::V4(v4) => [ip, IpAddr::V6(v4.to_ipv6_mapped())],
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => [ip, IpAddr::V4(v4)],
                None => [ip, ip],
            },
        };
        self.allowed_cidrs
            .iter()
            .any(|net| forms.iter().any(|form| net.contains(form)))
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
    let [a, b] = segments[6].to_be_bytes();
    let [c, d] = segments[7].to_be_bytes();
    let last_32_bits = Ipv4Addr::new(a, b, c, d);
    // Translation prefixes carry an IPv4 address in the last 32 bits: the well-known NAT64
    // prefix 64:ff9b::/96 (RFC 6052) and IPv4-translated addresses ::ffff:0:a.b.c.d (SIIT,
    // RFC 6145). Judge the embedded address.
    let well_known_nat64 = segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    let translated = segments[..6] == [0, 0, 0, 0, 0xffff, 0];
    if well_known_nat64 || translated {
        return v4_kind(last_32_bits);
    }
    // The local-use NAT64 prefix 64:ff9b:1::/48 (RFC 8215) may be cut into translator prefixes
    // of any RFC 6052 length (/48, /56, /64, /96), and only at /96 is the IPv4 address the last
    // 32 bits; at /48 to /64 it sits in the middle and the last bits are a free suffix. Judging
    // the last 32 bits everywhere in the /48 (as this did before) let an address show a public
    // IPv4 at its end while the operator's translator would reach an internal one. Only
    // 64:ff9b:1::/96 is judged by its last 32 bits (the shorter layouts read it as an address
    // in 0.0.0.0/8, which is no valid destination); the rest of the /48 is refused, and an operator whose
    // translator uses another sub-prefix can allowlist it.
    if segments[..3] == [0x64, 0xff9b, 1] {
        if segments[3..6] == [0, 0, 0] {
            return v4_kind(last_32_bits);
        }
        return Some("NAT64 local-use");
    }
    Some(match segments[0] {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        s if s & 0xfe00 == 0xfc00 => "unique local",
        s if s & 0xffc0 == 0xfe80 => "link-local",
        s if s & 0xffc0 == 0xfec0 => "site-local",
        s if s & 0xff00 == 0xff00 => "multicast",
        0x2001 if segments[1] == 0x0db8 => "documentation",
        // 3fff::/20 is the second documentation prefix (RFC 9637), 2001:2::/48 the
        // benchmarking one (RFC 5180), like 192.0.2.0/24 and 198.18.0.0/15 for IPv4.
        0x3fff if segments[1] & 0xf000 == 0 => "documentation",
        0x2001 if segments[1] == 2 && segments[2] == 0 => "benchmarking",
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
        allowed_cidrs: Vec::new(),
    };

    fn allowing(cidrs: &str) -> TargetPolicy {
        TargetPolicy {
            allow_private: false,
            allowed_cidrs: TargetPolicy::parse_cidrs(cidrs).unwrap(),
        }
    }

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
            ..TargetPolicy::default()
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

    /// Every address an SSRF would aim at, as an address and in the URL forms that reach it.
    #[test]
    fn every_ssrf_address_is_refused() {
        let addresses = [
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("10.0.0.1", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("169.254.0.1", "link-local"),
            ("100.64.0.1", "shared (CGNAT)"),
            ("100.127.255.254", "shared (CGNAT)"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "\"this network\""),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fc00::1", "unique local"),
            ("fd12:3456::1", "unique local"),
            ("fe80::1", "link-local"),
            ("fec0::1", "site-local"),
            // IPv4-mapped: a dual-stack socket connects to the IPv4 address itself.
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            // IPv4-translated (SIIT).
            ("::ffff:0:127.0.0.1", "loopback"),
            // NAT64, well-known prefix: 169.254.169.254 and 127.0.0.1 through a translator.
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("64:ff9b::7f00:1", "loopback"),
            // NAT64, local-use prefix: judged at /96, refused elsewhere in the /48 (where
            // 64:ff9b:1:a00:1:0:808:808 reads as 10.0.0.1 to a /48 translator).
            ("64:ff9b:1::a00:1", "private"),
            ("64:ff9b:1:a00:1:0:808:808", "NAT64 local-use"),
            // 6to4 of 127.0.0.1, Teredo, IPv4-compatible.
            ("2002:7f00:0001::", "6to4"),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
            ("::127.0.0.1", "IPv4-compatible"),
            ("2001:db8::1", "documentation"),
            ("3fff::1", "documentation"),
            ("2001:2::1", "benchmarking"),
        ];
        for (text, kind) in addresses {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(non_public_kind(ip), Some(kind), "{text}");
            assert_eq!(
                STRICT.check_ip(ip),
                Err(TargetError::Forbidden { ip, kind }),
                "{text}"
            );
            let host = match ip {
                IpAddr::V4(_) => text.to_owned(),
                IpAddr::V6(_) => format!("[{text}]"),
            };
            let url = format!("https://{host}:8443/hook");
            assert!(
                matches!(STRICT.check_url(&url), Err(TargetError::Forbidden { .. })),
                "{url} should be refused"
            );
        }

        // URL spellings the WHATWG parser (the `url` crate) turns into the addresses above.
        let urls = [
            ("http://127.0.0.1/", "127.0.0.1"),
            ("http://[::1]/", "::1"),
            ("http://[::ffff:7f00:1]/", "::ffff:127.0.0.1"),
            ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1"),
            ("http://[0:0:0:0:0:ffff:7f00:0001]/", "::ffff:127.0.0.1"),
            ("http://2130706433/", "127.0.0.1"),
            ("http://0x7f.0.0.1/", "127.0.0.1"),
            ("http://0x7f000001/", "127.0.0.1"),
            ("http://017700000001/", "127.0.0.1"),
            ("http://0177.0.0.01/", "127.0.0.1"),
            ("http://127.1/", "127.0.0.1"),
            ("http://127.0.0.1./", "127.0.0.1"),
            ("http://0/", "0.0.0.0"),
            ("http://%31%32%37.0.0.1/", "127.0.0.1"),
            ("http://example.com@127.0.0.1/", "127.0.0.1"),
            ("http://169.254.169.254/latest/meta-data", "169.254.169.254"),
            ("http://0xa9fea9fe/latest/meta-data", "169.254.169.254"),
            (
                "http://[64:ff9b::a9fe:a9fe]/latest/meta-data",
                "64:ff9b::a9fe:a9fe",
            ),
            ("HTTP://10.0.0.1:8080/", "10.0.0.1"),
        ];
        for (url, expected) in urls {
            let parsed = Url::parse(url).unwrap();
            let expected: IpAddr = expected.parse().unwrap();
            let ip = match parsed.host() {
                Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
                Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
                other => panic!("{url} parsed to host {other:?}, not an IP literal"),
            };
            assert_eq!(ip, expected, "{url}");
            assert!(
                matches!(STRICT.check_url(url), Err(TargetError::Forbidden { .. })),
                "{url} should be refused"
            );
        }

        // Public addresses pass, in every spelling.
        for ip in [
            "93.184.216.34",
            "2606:2800:220:1::1",
            "::ffff:93.184.216.34",
            "64:ff9b::5db8:d822",
            "64:ff9b:1::5db8:d822",
        ] {
            assert_eq!(STRICT.check_ip(ip.parse().unwrap()), Ok(()), "{ip}");
        }
        for url in [
            "http://93.184.216.34/",
            "https://[2606:2800:220:1::1]/hook",
            "http://1572395042/",
            "https://example.com/hook",
        ] {
            assert!(STRICT.check_url(url).is_ok(), "{url} should be allowed");
        }
    }

    #[test]
    fn parses_cidr_allowlists() {
        assert_eq!(TargetPolicy::parse_cidrs(""), Ok(vec![]));
        assert_eq!(TargetPolicy::parse_cidrs("  "), Ok(vec![]));
        let nets = TargetPolicy::parse_cidrs(" 10.0.0.0/8 ,fd00::/8,127.0.0.1, ::1 ,").unwrap();
        let expected: Vec<IpNet> = ["10.0.0.0/8", "fd00::/8", "127.0.0.1/32", "::1/128"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(nets, expected);
        for bad in [
            "10.0.0.0/33",
            "10.0.0/8",
            "localhost",
            "10.0.0.0/8; 192.168.0.0/16",
            "fe80::1%eth0",
            "::/129",
        ] {
            let err = TargetPolicy::parse_cidrs(bad).unwrap_err();
            assert!(err.contains('`'), "{bad}: {err}");
        }
        let err = TargetPolicy::parse_cidrs("10.1.2.3/8").unwrap_err();
        assert!(err.contains("10.0.0.0/8"), "{err}");
    }

    #[test]
    fn allowlisted_networks_pass_and_nothing_else_does() {
        let policy = allowing("10.0.0.0/8, 127.0.0.1, fd00::/8");
        for ip in [
            "10.0.0.1",
            "10.255.255.255",
            "127.0.0.1",
            "fd12:3456::1",
            // The IPv4-mapped form of an allowlisted IPv4 address is the same destination.
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            // Public addresses need no entry.
            "93.184.216.34",
        ] {
            assert_eq!(policy.check_ip(ip.parse().unwrap()), Ok(()), "{ip}");
        }
        for ip in [
            "127.0.0.2",
            "192.168.1.1",
            "169.254.169.254",
            "::1",
            "fc00::1",
            "::ffff:127.0.0.2",
            "::ffff:192.168.1.1",
            "::ffff:169.254.169.254",
            // Forms that go through a translator are not matched against IPv4 entries.
            "64:ff9b::a00:1",
            "::ffff:0:a00:1",
            "::10.0.0.1",
        ] {
            assert!(
                policy.check_ip(ip.parse().unwrap()).is_err(),
                "{ip} should be refused"
            );
        }
        assert!(policy.check_url("http://10.1.2.3:9000/hook").is_ok());
        assert!(policy.check_url("http://[::ffff:a01:203]/hook").is_ok());
        assert!(policy.check_url("http://0x7f.1/hook").is_ok());
        assert!(policy.check_url("http://169.254.169.254/").is_err());

        // An entry written in the mapped form covers the IPv4 address too.
        let mapped = allowing("::ffff:10.0.0.0/104");
        assert_eq!(mapped.check_ip("10.2.3.4".parse().unwrap()), Ok(()));
        assert_eq!(mapped.check_ip("::ffff:10.2.3.4".parse().unwrap()), Ok(()));
        assert!(mapped.check_ip("11.0.0.1".parse().unwrap()).is_ok()); // public anyway
        assert!(mapped.check_ip("192.168.0.1".parse().unwrap()).is_err());

        // An operator whose local-use NAT64 is not 64:ff9b:1::/96 can allowlist its prefix.
        let nat64 = allowing("64:ff9b:1:a::/96");
        assert_eq!(
            nat64.check_ip("64:ff9b:1:a::5db8:d822".parse().unwrap()),
            Ok(())
        );
        assert!(nat64
            .check_ip("64:ff9b:1:b::5db8:d822".parse().unwrap())
            .is_err());

        // allow_private still allows everything, with or without an allowlist.
        let open = TargetPolicy {
            allow_private: true,
            allowed_cidrs: TargetPolicy::parse_cidrs("10.0.0.0/8").unwrap(),
        };
        assert_eq!(open.check_ip("192.168.1.1".parse().unwrap()), Ok(()));
        assert_eq!(
            open.check_ip("::ffff:169.254.169.254".parse().unwrap()),
            Ok(())
        );
    }
}

//! Who the hub is to a request: the host it answers as, decided in one place for the
//! websocket's `Origin` check, the development sign-in and the page's Content-Security-Policy.
//!
//! The request's `Host` names the hub, except that:
//! - forwarding headers (`Forwarded: host=…;proto=…`, `X-Forwarded-Host`,
//!   `X-Forwarded-Proto`) are read only when the TCP peer is one of `server.trusted_proxies`:
//!   anyone else can write them, so believing them would let any page name itself the hub;
//! - a hub bound to a loopback address serves only loopback names (`localhost`, `127.0.0.1`,
//!   `[::1]`). Another name in `Host` means a browser was pointed here by a DNS name that
//!   resolves to loopback (DNS rebinding): that name is not an origin of ours.
//!
//! Off loopback the hub cannot know its public name, so there the `Host` (or a trusted
//! proxy's forwarded host) is taken as the hub's own.

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    str::FromStr,
};

use actix_web::{
    HttpRequest,
    http::header::{self, HeaderMap},
};
use ipnet::IpNet;

/// What the edge may believe about a request's host: fixed at start from the bound address
/// and `server.trusted_proxies`.
#[derive(Debug, Clone)]
pub struct Hosts {
    trusted: Vec<IpNet>,
    loopback: bool,
    port: u16,
}

impl Hosts {
    /// `trusted_proxies` holds IP addresses and CIDR blocks; the first entry that is neither
    /// is the error.
    pub fn new(bound: SocketAddr, trusted_proxies: &[String]) -> Result<Hosts, String> {
        let trusted = trusted_proxies
            .iter()
            .map(|entry| parse_proxy(entry))
            .collect::<Result<_, _>>()?;
        Ok(Hosts {
            trusted,
            loopback: bound.ip().is_loopback(),
            port: bound.port(),
        })
    }

    /// Whether `peer` is one of the configured proxies.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d.
        let peer = peer.to_canonical();
        self.trusted.iter().any(|net| net.contains(&peer))
    }

    /// The hub's own origin for `req`, or `None` when the request names no host the hub
    /// serves (then only `server.allowed_origins` may open a websocket).
    pub fn own(&self, req: &HttpRequest) -> Option<Own> {
        let peer = req.peer_addr().map(|a| a.ip());
        self.own_from(peer, req.headers(), host_header(req))
    }

    fn own_from(&self, peer: Option<IpAddr>, headers: &HeaderMap, host: Option<&str>) -> Option<Own> {
        let forwarded = match peer {
            Some(ip) if self.trusts(ip) => Forwarded::read(headers),
            _ => Forwarded::default(),
        };
        let authority = match forwarded.host {
            // The operator vouches for the proxy; a browser cannot add this header to a
            // websocket handshake, so a rebinding page cannot forge it either.
            Some(h) => Authority::parse(&h)?,
            None => {
                let a = Authority::parse(host?)?;
                if self.loopback && !a.is_loopback() {
                    return None;
                }
                a
            }
        };
        Some(Own {
            scheme: forwarded.proto,
            authority,
        })
    }

    /// Whether `req` was sent to a loopback name with the port the hub is bound to: the
    /// development sign-in answers nothing else. Only the `Host` header counts, never a
    /// forwarding header: a page that DNS rebinding made same-origin with the hub may set
    /// `X-Forwarded-Host` on its own requests.
    pub fn is_local_request(&self, req: &HttpRequest) -> bool {
        self.is_local_host(host_header(req))
    }

    fn is_local_host(&self, host: Option<&str>) -> bool {
        self.loopback
            && host
                .and_then(Authority::parse)
                .is_some_and(|a| a.is_loopback() && a.port.unwrap_or(Scheme::Http.default_port()) == self.port)
    }
}

fn parse_proxy(entry: &str) -> Result<IpNet, String> {
    let entry = entry.trim();
    IpNet::from_str(entry)
        .or_else(|_| IpAddr::from_str(entry).map(IpNet::from))
        .map_err(|_| {
            format!("server.trusted_proxies: {entry:?} is neither an IP address nor a CIDR block (e.g. 10.0.0.0/8)")
        })
}

/// `Host`, or the authority of an absolute-form request target when there is no `Host`.
fn host_header(req: &HttpRequest) -> Option<&str> {
    match req.headers().get(header::HOST) {
        Some(h) => h.to_str().ok(),
        None => req.uri().authority().map(|a| a.as_str()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn parse(s: &str) -> Option<Scheme> {
        if s.eq_ignore_ascii_case("http") {
            Some(Scheme::Http)
        } else if s.eq_ignore_ascii_case("https") {
            Some(Scheme::Https)
        } else {
            None
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// A host and optional port as `Host` and origins carry them (`example.com:8080`,
/// `[::1]:80`), parsed strictly: anything else (userinfo, a path, spaces) is no authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    /// Lower-cased; an IPv6 literal keeps its brackets.
    host: String,
    port: Option<u16>,
}

impl Authority {
    pub fn parse(s: &str) -> Option<Authority> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (literal, after) = rest.split_once(']')?;
            Ipv6Addr::from_str(literal).ok()?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':')?),
            };
            (&s[..literal.len() + 2], port)
        } else {
            match s.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let valid_name = |h: &str| {
            !h.is_empty()
                && h.len() <= 253
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        };
        if !host.starts_with('[') && !valid_name(host) {
            return None;
        }
        let port = match port {
            None => None,
            Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => Some(p.parse().ok()?),
            Some(_) => return None,
        };
        Some(Authority {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// `localhost`, or an IP literal of the loopback range: names a DNS answer cannot
    /// repoint at this machine.
    pub fn is_loopback(&self) -> bool {
        if self.host == "localhost" {
            return true;
        }
        let literal = self.host.trim_start_matches('[').trim_end_matches(']');
        IpAddr::from_str(literal).is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{p}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

/// The hub's own origin for one request: its authority, and its scheme when a trusted proxy
/// said which (else both `http` and `https` are the hub's: it cannot tell behind TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Own {
    scheme: Option<Scheme>,
    authority: Authority,
}

impl Own {
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Whether the `Origin` header value `origin` is this one (default ports included:
    /// `https://a.example` is `https://a.example:443`).
    pub fn matches(&self, origin: &str) -> bool {
        let Some((scheme, authority)) = parse_origin(origin) else {
            return false;
        };
        self.scheme.is_none_or(|s| s == scheme)
            && authority.host == self.authority.host
            && authority.port.unwrap_or(scheme.default_port()) == self.authority.port.unwrap_or(scheme.default_port())
    }
}

/// `scheme://authority` with an http(s) scheme and nothing after the authority.
fn parse_origin(origin: &str) -> Option<(Scheme, Authority)> {
    let (scheme, rest) = origin.split_once("://")?;
    Some((Scheme::parse(scheme)?, Authority::parse(rest.trim_end_matches('/'))?))
}

/// What a trusted proxy said about the client's request: the values its nearest hop (our
/// peer) wrote, which come last, since a client can send these headers itself and a proxy
/// may append to them.
#[derive(Debug, Default, PartialEq, Eq)]
struct Forwarded {
    host: Option<String>,
    proto: Option<Scheme>,
}

impl Forwarded {
    fn read(headers: &HeaderMap) -> Forwarded {
        let last_element = headers
            .get_all(header::FORWARDED)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .last()
            .unwrap_or_default();
        let mut host = None;
        let mut proto = None;
        for pair in last_element.split(';') {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match key.trim().to_ascii_lowercase().as_str() {
                "host" => host = Some(value.to_owned()),
                "proto" => proto = Scheme::parse(value),
                _ => {}
            }
        }
        let last_of = |name: &str| {
            headers
                .get_all(name)
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .last()
                .map(str::to_owned)
        };
        Forwarded {
            host: host.or_else(|| last_of("x-forwarded-host")),
            proto: proto.or_else(|| last_of("x-forwarded-proto").and_then(|p| Scheme::parse(&p))),
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    fn hosts(bind: &str, trusted: &[&str]) -> Hosts {
        let trusted: Vec<String> = trusted.iter().map(|s| s.to_string()).collect();
        Hosts::new(bind.parse().unwrap(), &trusted).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(HeaderName::from_str(k).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        map
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    /// The own origin's authority as text, for `host` and `pairs` from `peer`.
    fn own(h: &Hosts, peer: &str, host: &str, pairs: &[(&str, &str)]) -> Option<String> {
        h.own_from(ip(peer), &headers(pairs), Some(host))
            .map(|o| o.authority.to_string())
    }

    #[test]
    fn authorities_parse_strictly() {
        for (input, host, port) in [
            ("example.com", "example.com", None),
            ("Example.COM:8080", "example.com", Some(8080)),
            ("127.0.0.1:80", "127.0.0.1", Some(80)),
            ("[::1]", "[::1]", None),
            ("[::1]:8080", "[::1]", Some(8080)),
            ("node_1.internal", "node_1.internal", None),
        ] {
            assert_eq!(
                Authority::parse(input),
                Some(Authority {
                    host: host.into(),
                    port
                }),
                "{input}"
            );
        }
        for bad in [
            "",
            ":80",
            "a.example:",
            "a.example:99999",
            "a.example:8x",
            "user@a.example",
            "a.example/path",
            "a example",
            "[::1",
            "[::1]x",
            "[not-ipv6]:80",
            "::1",
            "a.example:80:80",
        ] {
            assert_eq!(Authority::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn loopback_names_are_localhost_and_loopback_literals_only() {
        for name in ["localhost", "LOCALHOST:1", "127.0.0.1:8080", "127.3.4.5", "[::1]:9"] {
            assert!(Authority::parse(name).unwrap().is_loopback(), "{name}");
        }
        for name in [
            "rebind.attacker.example",
            "localhost.attacker.example",
            "10.0.0.1",
            "[::2]",
            "0.0.0.0",
        ] {
            assert!(!Authority::parse(name).unwrap().is_loopback(), "{name}");
        }
    }

    #[test]
    fn an_origin_matches_its_own_host_with_default_ports_filled_in() {
        let own = |host: &str| Own {
            scheme: None,
            authority: Authority::parse(host).unwrap(),
        };
        assert!(own("127.0.0.1:8080").matches("http://127.0.0.1:8080"));
        assert!(own("127.0.0.1:8080").matches("https://127.0.0.1:8080/"));
        assert!(own("App.Example").matches("https://app.example"));
        assert!(own("app.example:443").matches("https://app.example"));
        assert!(own("app.example").matches("http://app.example:80"));
        assert!(!own("app.example").matches("https://app.example:8443"));
        assert!(!own("127.0.0.1:8080").matches("http://localhost:8080"));
        assert!(!own("app.example").matches("null"));
        assert!(!own("app.example").matches("ftp://app.example"));
        assert!(!own("app.example").matches("http://app.example/path"));
        let https_only = Own {
            scheme: Some(Scheme::Https),
            authority: Authority::parse("app.example").unwrap(),
        };
        assert!(https_only.matches("https://app.example"));
        assert!(!https_only.matches("http://app.example"));
    }

    #[test]
    fn on_a_loopback_bind_only_loopback_host_names_are_the_hubs_own() {
        let h = hosts("127.0.0.1:8080", &[]);
        assert_eq!(
            own(&h, "127.0.0.1", "127.0.0.1:8080", &[]),
            Some("127.0.0.1:8080".into())
        );
        assert_eq!(
            own(&h, "127.0.0.1", "localhost:8080", &[]),
            Some("localhost:8080".into())
        );
        // nginx on loopback passes its own port: the name counts, not the port.
        assert_eq!(
            own(&h, "127.0.0.1", "127.0.0.1:9000", &[]),
            Some("127.0.0.1:9000".into())
        );
        assert_eq!(own(&h, "127.0.0.1", "rebind.attacker.example:8080", &[]), None);
    }

    #[test]
    fn off_loopback_the_host_header_is_the_hubs_own() {
        let h = hosts("0.0.0.0:8080", &[]);
        assert_eq!(own(&h, "10.1.2.3", "app.example", &[]), Some("app.example".into()));
        assert_eq!(own(&h, "10.1.2.3", "not a host", &[]), None);
    }

    #[test]
    fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
        let h = hosts("0.0.0.0:8080", &["10.0.0.0/8"]);
        let evil = [
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "host=evil.example;proto=https"),
        ];
        assert_eq!(own(&h, "192.0.2.7", "app.example", &evil), Some("app.example".into()));
        let none = hosts("0.0.0.0:8080", &[]);
        assert_eq!(own(&none, "10.0.0.1", "app.example", &evil), Some("app.example".into()));
    }

    #[test]
    fn a_trusted_proxy_names_the_host_with_the_value_its_own_hop_wrote() {
        let h = hosts("127.0.0.1:8080", &["127.0.0.1", "10.0.0.0/8"]);
        let got = |pairs: &[(&str, &str)]| h.own_from(ip("10.9.9.9"), &headers(pairs), Some("127.0.0.1:8080"));
        let o = got(&[("x-forwarded-host", "app.example"), ("x-forwarded-proto", "https")]).unwrap();
        assert_eq!(
            (o.authority.to_string(), o.scheme),
            ("app.example".into(), Some(Scheme::Https))
        );
        // What the client sent comes first; the proxy's own value last.
        let o = got(&[("x-forwarded-host", "evil.example, app.example")]).unwrap();
        assert_eq!((o.authority.to_string(), o.scheme), ("app.example".into(), None));
        let o = got(&[
            ("forwarded", "host=evil.example;proto=http"),
            ("forwarded", "for=192.0.2.1;host=\"app.example:8443\";proto=https"),
            ("x-forwarded-host", "other.example"),
        ])
        .unwrap();
        assert_eq!(
            (o.authority.to_string(), o.scheme),
            ("app.example:8443".into(), Some(Scheme::Https))
        );
        // A proto alone keeps the Host; a garbled forwarded host names nothing.
        let o = got(&[("x-forwarded-proto", "https")]).unwrap();
        assert_eq!(
            (o.authority.to_string(), o.scheme),
            ("127.0.0.1:8080".into(), Some(Scheme::Https))
        );
        assert_eq!(got(&[("x-forwarded-host", "evil.example/x")]), None);
        // IPv4 peers of a dual-stack listener.
        assert!(h.trusts("::ffff:10.1.1.1".parse().unwrap()));
        assert!(!h.trusts("11.0.0.1".parse().unwrap()));
    }

    #[test]
    fn the_local_request_check_wants_a_loopback_name_and_the_bound_port() {
        let h = hosts("127.0.0.1:8080", &[]);
        for host in ["localhost:8080", "127.0.0.1:8080", "[::1]:8080", "LocalHost:8080"] {
            assert!(h.is_local_host(Some(host)), "{host}");
        }
        for host in [
            "rebind.attacker.example:8080",
            "127.0.0.1:9090",
            "localhost",
            "localhost:8080.attacker.example",
        ] {
            assert!(!h.is_local_host(Some(host)), "{host}");
        }
        assert!(!h.is_local_host(None));
        assert!(hosts("127.0.0.1:80", &[]).is_local_host(Some("localhost")));
        assert!(!hosts("0.0.0.0:8080", &[]).is_local_host(Some("localhost:8080")));
    }

    #[test]
    fn trusted_proxies_are_addresses_or_cidr_blocks() {
        let h = hosts("0.0.0.0:1", &["192.0.2.10", "10.0.0.0/8", "2001:db8::/32", "::1"]);
        for yes in ["192.0.2.10", "10.200.0.1", "2001:db8::5", "::1"] {
            assert!(h.trusts(yes.parse().unwrap()), "{yes}");
        }
        for no in ["192.0.2.11", "11.0.0.1", "2001:db9::5", "127.0.0.1"] {
            assert!(!h.trusts(no.parse().unwrap()), "{no}");
        }
        let err = Hosts::new(
            "0.0.0.0:1".parse().unwrap(),
            &["10.0.0.0/8".into(), "proxy.internal".into()],
        )
        .unwrap_err();
        assert!(
            err.contains("server.trusted_proxies") && err.contains("proxy.internal"),
            "{err}"
        );
        assert!(Hosts::new("0.0.0.0:1".parse().unwrap(), &["10.0.0.0/33".into()]).is_err());
    }
}

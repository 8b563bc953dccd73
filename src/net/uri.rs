//! Broker URIs (`mqtt://`, `mqtts://`, `ws://`, `wss://`) and proxy URIs
//! (`http://`, `socks5://`), as `../shared/API.md` "Network paths" defines them.
//!
//! Deliberately narrower than RFC 3986: what a user types to reach a broker.
//! Schemes are case-insensitive; a broker URI has no user info (credentials
//! are the client's, not the URI's) and no fragment; only ws/wss carry a path
//! (the HTTP request target, query included; `/mqtt` when absent). Proxy URIs
//! need an explicit port and may carry percent-encoded `user[:password]`.
//! Every failure is an [`UriError`], which converts to
//! [`Error::InvalidArgument`].

use crate::error::Error;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Why a URI was rejected (all are `MQTT_ERR_INVALID_ARGUMENT` for C).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UriError {
    /// No `scheme://` prefix.
    MissingScheme,
    /// A scheme other than those allowed where the URI is used.
    UnknownScheme,
    /// Nothing between `//` and the port, path or end.
    EmptyHost,
    /// A `[` without its `]`, or something other than `:port` after `]`.
    UnclosedBracket,
    /// The text in brackets is not an IPv6 address (zone ids are not supported).
    BadIpv6,
    /// A host name with a character that cannot be in one (space, control, `%`...).
    BadHost,
    /// A port that is not 1..=65535 in decimal digits.
    BadPort,
    /// A proxy URI without a port.
    MissingPort,
    /// A path on a URI that takes none (mqtt, mqtts, proxies), or a fragment.
    UnexpectedPath,
    /// User info in a broker URI.
    UnexpectedUserInfo,
    /// A `%` not followed by two hex digits, or user info that does not decode to UTF-8.
    BadPercentEncoding,
    /// A SOCKS5 user name or password longer than 255 bytes (RFC 1929).
    CredentialsTooLong,
}

impl fmt::Display for UriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UriError::MissingScheme => "no scheme:// prefix",
            UriError::UnknownScheme => "unsupported scheme",
            UriError::EmptyHost => "empty host",
            UriError::UnclosedBracket => "unclosed '[' or junk after ']'",
            UriError::BadIpv6 => "invalid IPv6 literal",
            UriError::BadHost => "invalid character in host",
            UriError::BadPort => "port is not 1..65535",
            UriError::MissingPort => "proxy URI without a port",
            UriError::UnexpectedPath => "a path or fragment where none is allowed",
            UriError::UnexpectedUserInfo => "user info in a broker URI",
            UriError::BadPercentEncoding => "invalid percent-encoding in user info",
            UriError::CredentialsTooLong => "SOCKS5 user name or password over 255 bytes",
        })
    }
}

impl std::error::Error for UriError {}

impl From<UriError> for Error {
    fn from(_: UriError) -> Error {
        Error::InvalidArgument
    }
}

/// The host part of a URI.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// A name to resolve (or to hand unresolved to a SOCKS5 proxy).
    Name(String),
    V4(Ipv4Addr),
    /// Written in brackets in a URI, stored without them.
    V6(Ipv6Addr),
}

impl Host {
    /// `host:port` as an HTTP `Host` header or CONNECT target wants it
    /// (brackets around IPv6).
    pub fn with_port(&self, port: u16) -> String {
        format!("{self}:{port}")
    }

    /// The name or address without brackets, for a resolver or TLS server name.
    pub fn bare(&self) -> String {
        match self {
            Host::Name(n) => n.clone(),
            Host::V4(a) => a.to_string(),
            Host::V6(a) => a.to_string(),
        }
    }
}

impl fmt::Display for Host {
    /// As in a URI: IPv6 in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::V4(a) => write!(f, "{a}"),
            Host::V6(a) => write!(f, "[{a}]"),
        }
    }
}

/// The transport a broker URI asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `mqtt://`: TCP, port 1883.
    Mqtt,
    /// `mqtts://`: TLS, port 8883.
    Mqtts,
    /// `ws://`: WebSocket, port 80.
    Ws,
    /// `wss://`: WebSocket over TLS, port 443.
    Wss,
}

impl Scheme {
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Mqtt => 1883,
            Scheme::Mqtts => 8883,
            Scheme::Ws => 80,
            Scheme::Wss => 443,
        }
    }

    pub fn is_tls(self) -> bool {
        matches!(self, Scheme::Mqtts | Scheme::Wss)
    }

    pub fn is_websocket(self) -> bool {
        matches!(self, Scheme::Ws | Scheme::Wss)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Mqtt => "mqtt",
            Scheme::Mqtts => "mqtts",
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
        }
    }
}

/// The default HTTP path of a ws/wss URI without one.
pub const DEFAULT_WS_PATH: &str = "/mqtt";

/// A parsed broker URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerUri {
    pub scheme: Scheme,
    pub host: Host,
    pub port: u16,
    /// The HTTP request target for ws/wss (starts with `/`; `/mqtt` by
    /// default); empty for mqtt/mqtts.
    pub path: String,
}

impl BrokerUri {
    pub fn parse(uri: &str) -> Result<BrokerUri, UriError> {
        let (scheme, rest) = split_scheme(uri)?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "mqtt" => Scheme::Mqtt,
            "mqtts" => Scheme::Mqtts,
            "ws" => Scheme::Ws,
            "wss" => Scheme::Wss,
            _ => return Err(UriError::UnknownScheme),
        };
        if rest.contains('#') {
            return Err(UriError::UnexpectedPath);
        }
        let (authority, path) = split_authority(rest);
        if authority.contains('@') {
            return Err(UriError::UnexpectedUserInfo);
        }
        let (host, port) = parse_host_port(authority)?;
        let port = port.unwrap_or(scheme.default_port());
        let path = if scheme.is_websocket() {
            match path {
                "" => DEFAULT_WS_PATH.to_owned(),
                // A bare query (`ws://h?x`) keeps the default path.
                p if p.starts_with('?') => {
                    check_request_target(p)?;
                    format!("{DEFAULT_WS_PATH}{p}")
                }
                p => {
                    check_request_target(p)?;
                    p.to_owned()
                }
            }
        } else if path.is_empty() || path == "/" {
            String::new()
        } else {
            return Err(UriError::UnexpectedPath);
        };
        Ok(BrokerUri {
            scheme,
            host,
            port,
            path,
        })
    }
}

impl fmt::Display for BrokerUri {
    /// A URI that parses back to the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}:{}{}",
            self.scheme.as_str(),
            self.host,
            self.port,
            self.path
        )
    }
}

/// Which handshake a proxy speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProxyKind {
    /// `http://`: HTTP/1.1 CONNECT.
    Http,
    /// `socks5://`: SOCKS5 (RFC 1928), host names resolved by the proxy.
    Socks5,
}

/// A parsed proxy URI.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUri {
    pub kind: ProxyKind,
    pub host: Host,
    pub port: u16,
    /// Percent-decoded user name, if the URI has user info.
    pub username: Option<String>,
    /// Percent-decoded password: the user info after its first `:`.
    pub password: Option<String>,
}

impl fmt::Debug for ProxyUri {
    // Never print the password (logs).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyUri")
            .field("kind", &self.kind)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl ProxyUri {
    pub fn parse(uri: &str) -> Result<ProxyUri, UriError> {
        let (scheme, rest) = split_scheme(uri)?;
        let kind = match scheme.to_ascii_lowercase().as_str() {
            "http" => ProxyKind::Http,
            "socks5" | "socks5h" => ProxyKind::Socks5,
            _ => return Err(UriError::UnknownScheme),
        };
        if rest.contains('#') {
            return Err(UriError::UnexpectedPath);
        }
        let (authority, path) = split_authority(rest);
        if !(path.is_empty() || path == "/") {
            return Err(UriError::UnexpectedPath);
        }
        // The host cannot contain '@', user info can (percent-encoded or not):
        // split at the last one.
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        let (host, port) = parse_host_port(hostport)?;
        let port = port.ok_or(UriError::MissingPort)?;
        let (username, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                // Split before decoding: a %3A in the user name stays in it.
                let (user, pass) = match info.find(':') {
                    Some(i) => (&info[..i], Some(&info[i + 1..])),
                    None => (info, None),
                };
                (
                    Some(percent_decode(user)?),
                    pass.map(percent_decode).transpose()?,
                )
            }
        };
        if kind == ProxyKind::Socks5
            && (username.as_ref().is_some_and(|u| u.len() > 255)
                || password.as_ref().is_some_and(|p| p.len() > 255))
        {
            return Err(UriError::CredentialsTooLong);
        }
        Ok(ProxyUri {
            kind,
            host,
            port,
            username,
            password,
        })
    }
}

impl fmt::Display for ProxyUri {
    /// A URI that parses back to the same value (user info percent-encoded).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.kind {
            ProxyKind::Http => "http",
            ProxyKind::Socks5 => "socks5",
        };
        write!(f, "{scheme}://")?;
        if let Some(user) = &self.username {
            f.write_str(&percent_encode(user))?;
            if let Some(pass) = &self.password {
                write!(f, ":{}", percent_encode(pass))?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}:{}", self.host, self.port)
    }
}

fn split_scheme(uri: &str) -> Result<(&str, &str), UriError> {
    let i = uri.find("://").ok_or(UriError::MissingScheme)?;
    let scheme = &uri[..i];
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+')
    {
        return Err(UriError::MissingScheme);
    }
    Ok((scheme, &uri[i + 3..]))
}

/// `authority` up to the first `/` or `?`, and the rest (path and query).
fn split_authority(rest: &str) -> (&str, &str) {
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    rest.split_at(end)
}

fn parse_host_port(hostport: &str) -> Result<(Host, Option<u16>), UriError> {
    let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
        let close = inner.find(']').ok_or(UriError::UnclosedBracket)?;
        let literal = &inner[..close];
        let after = &inner[close + 1..];
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(UriError::UnclosedBracket)?),
        };
        if literal.is_empty() {
            return Err(UriError::EmptyHost);
        }
        let addr: Ipv6Addr = literal.parse().map_err(|_| UriError::BadIpv6)?;
        (Host::V6(addr), port)
    } else {
        let (name, port) = match hostport.find(':') {
            Some(i) => (&hostport[..i], Some(&hostport[i + 1..])),
            None => (hostport, None),
        };
        if name.is_empty() {
            return Err(UriError::EmptyHost);
        }
        if name.contains(']') {
            return Err(UriError::BadHost);
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b) || b >= 0x80)
        {
            return Err(UriError::BadHost);
        }
        let host = match name.parse::<Ipv4Addr>() {
            Ok(a) => Host::V4(a),
            Err(_) => Host::Name(name.to_owned()),
        };
        (host, port)
    };
    let port = match port {
        // RFC 3986 §3.2.3: an empty port is the scheme's default.
        None | Some("") => None,
        Some(p) => Some(parse_port(p)?),
    };
    Ok((host, port))
}

fn parse_port(p: &str) -> Result<u16, UriError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UriError::BadPort);
    }
    match p.parse::<u32>() {
        Ok(n @ 1..=65535) => Ok(n as u16),
        _ => Err(UriError::BadPort),
    }
}

/// The path and query go verbatim into the request line: no spaces or controls.
fn check_request_target(p: &str) -> Result<(), UriError> {
    if p.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(UriError::UnexpectedPath);
    }
    Ok(())
}

fn percent_decode(s: &str) -> Result<String, UriError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .ok_or(UriError::BadPercentEncoding)?;
            let hex = std::str::from_utf8(hex).map_err(|_| UriError::BadPercentEncoding)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(UriError::BadPercentEncoding);
            }
            out.push(u8::from_str_radix(hex, 16).map_err(|_| UriError::BadPercentEncoding)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UriError::BadPercentEncoding)
}

/// Everything but RFC 3986 unreserved characters, so that the result is valid
/// user info whatever the input.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(uri: &str) -> BrokerUri {
        BrokerUri::parse(uri).unwrap_or_else(|e| panic!("{uri}: {e}"))
    }

    fn broker_err(uri: &str) -> UriError {
        match BrokerUri::parse(uri) {
            Ok(u) => panic!("{uri} parsed as {u:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn default_ports_and_paths() {
        let u = broker("mqtt://example.com");
        assert_eq!(u.scheme, Scheme::Mqtt);
        assert_eq!(u.host, Host::Name("example.com".into()));
        assert_eq!((u.port, u.path.as_str()), (1883, ""));
        assert_eq!(broker("mqtts://example.com").port, 8883);
        let ws = broker("ws://example.com");
        assert_eq!((ws.port, ws.path.as_str()), (80, "/mqtt"));
        let wss = broker("wss://example.com");
        assert_eq!((wss.port, wss.path.as_str()), (443, "/mqtt"));
        assert!(wss.scheme.is_tls() && wss.scheme.is_websocket());
        assert!(!Scheme::Mqtt.is_tls() && !Scheme::Mqtt.is_websocket());
    }

    #[test]
    fn explicit_ports_paths_and_case() {
        let u = broker("MQTT://Broker.Local:1884/");
        assert_eq!(
            (u.scheme, u.port, u.path.as_str()),
            (Scheme::Mqtt, 1884, "")
        );
        assert_eq!(u.host, Host::Name("Broker.Local".into()));
        let ws = broker("ws://h:8080/ws/path?token=a%20b");
        assert_eq!((ws.port, ws.path.as_str()), (8080, "/ws/path?token=a%20b"));
        assert_eq!(broker("ws://h?x=1").path, "/mqtt?x=1");
        assert_eq!(broker("wss://h/").path, "/");
        // RFC 3986: an empty port is the default one.
        assert_eq!(broker("mqtts://h:").port, 8883);
        assert_eq!(broker("mqtt://h:65535").port, 65535);
    }

    #[test]
    fn ip_literals() {
        let u = broker("mqtt://127.0.0.1:1883");
        assert_eq!(u.host, Host::V4(Ipv4Addr::LOCALHOST));
        let u = broker("mqtt://[::1]:1884");
        assert_eq!(
            (u.host.clone(), u.port),
            (Host::V6(Ipv6Addr::LOCALHOST), 1884)
        );
        assert_eq!(u.host.with_port(u.port), "[::1]:1884");
        assert_eq!(u.host.bare(), "::1");
        let u = broker("wss://[2001:db8::a]/mqtt");
        assert_eq!(u.host, Host::V6("2001:db8::a".parse().unwrap()));
        assert_eq!(u.port, 443);
        assert_eq!(broker("ws://[::ffff:1.2.3.4]").port, 80);
    }

    #[test]
    fn rejected_broker_uris() {
        assert_eq!(broker_err("tcp://h:1883"), UriError::UnknownScheme);
        assert_eq!(broker_err("http://h"), UriError::UnknownScheme);
        assert_eq!(broker_err("h:1883"), UriError::MissingScheme);
        assert_eq!(broker_err("://h"), UriError::MissingScheme);
        assert_eq!(broker_err(""), UriError::MissingScheme);
        assert_eq!(broker_err("mqtt://h:65536"), UriError::BadPort);
        assert_eq!(broker_err("mqtt://h:99999999999"), UriError::BadPort);
        assert_eq!(broker_err("mqtt://h:0"), UriError::BadPort);
        assert_eq!(broker_err("mqtt://h:-1"), UriError::BadPort);
        assert_eq!(broker_err("mqtt://h:+80"), UriError::BadPort);
        assert_eq!(broker_err("mqtt://h:1883:1"), UriError::BadPort);
        assert_eq!(broker_err("mqtt://[::1:1883"), UriError::UnclosedBracket);
        assert_eq!(broker_err("mqtt://[::1]1883"), UriError::UnclosedBracket);
        assert_eq!(broker_err("mqtt://[::1"), UriError::UnclosedBracket);
        assert_eq!(broker_err("mqtt://[]:1883"), UriError::EmptyHost);
        assert_eq!(broker_err("mqtt://[not-v6]"), UriError::BadIpv6);
        assert_eq!(broker_err("mqtt://[fe80::1%25eth0]"), UriError::BadIpv6);
        assert_eq!(broker_err("mqtt://"), UriError::EmptyHost);
        assert_eq!(broker_err("mqtt://:1883"), UriError::EmptyHost);
        assert_eq!(broker_err("ws:///mqtt"), UriError::EmptyHost);
        assert_eq!(broker_err("mqtt://a b"), UriError::BadHost);
        assert_eq!(broker_err("mqtt://a]"), UriError::BadHost);
        assert_eq!(broker_err("mqtt://h%41"), UriError::BadHost);
        assert_eq!(broker_err("mqtt://h/topic"), UriError::UnexpectedPath);
        assert_eq!(broker_err("mqtt://h#frag"), UriError::UnexpectedPath);
        assert_eq!(broker_err("ws://h/a b"), UriError::UnexpectedPath);
        // a bare query goes into the request line too (proptest found it)
        assert_eq!(broker_err("ws://h? x"), UriError::UnexpectedPath);
        assert_eq!(broker_err("ws://h/a\r\nX: y"), UriError::UnexpectedPath);
        assert_eq!(broker_err("mqtt://u:p@h"), UriError::UnexpectedUserInfo);
        assert_eq!(Error::from(UriError::BadPort), Error::InvalidArgument);
    }

    #[test]
    fn proxy_uris() {
        let p = ProxyUri::parse("http://proxy.local:3128").unwrap();
        assert_eq!(p.kind, ProxyKind::Http);
        assert_eq!(
            (p.host.clone(), p.port),
            (Host::Name("proxy.local".into()), 3128)
        );
        assert_eq!((p.username, p.password), (None, None));

        let p = ProxyUri::parse("socks5://alice:s3cr%3At@127.0.0.1:1080/").unwrap();
        assert_eq!(p.kind, ProxyKind::Socks5);
        assert_eq!(p.host, Host::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(p.username.as_deref(), Some("alice"));
        assert_eq!(p.password.as_deref(), Some("s3cr:t"));

        // Split at the first ':' before decoding; decoded ':' and '@' are data.
        let p = ProxyUri::parse("http://a%3Ab:c:d%40e@[::1]:8080").unwrap();
        assert_eq!(p.username.as_deref(), Some("a:b"));
        assert_eq!(p.password.as_deref(), Some("c:d@e"));
        assert_eq!(p.host, Host::V6(Ipv6Addr::LOCALHOST));
        // A raw '@' in the password: the host starts after the last one.
        let p = ProxyUri::parse("socks5://u:p@ss@h:1").unwrap();
        assert_eq!(p.password.as_deref(), Some("p@ss"));
        assert_eq!(p.host, Host::Name("h".into()));
        // User without password, empty password, UTF-8.
        let p = ProxyUri::parse("socks5://%C3%A9t%C3%A9@h:1").unwrap();
        assert_eq!((p.username.as_deref(), p.password), (Some("été"), None));
        let p = ProxyUri::parse("http://u:@h:1").unwrap();
        assert_eq!(p.password.as_deref(), Some(""));
        assert!(
            !format!("{:?}", ProxyUri::parse("http://u:hunter2@h:1").unwrap()).contains("hunter2")
        );
    }

    #[test]
    fn rejected_proxy_uris() {
        let err = |u: &str| ProxyUri::parse(u).unwrap_err();
        assert_eq!(err("https://h:1"), UriError::UnknownScheme);
        assert_eq!(err("socks4://h:1"), UriError::UnknownScheme);
        assert_eq!(err("mqtt://h:1"), UriError::UnknownScheme);
        assert_eq!(err("http://h"), UriError::MissingPort);
        assert_eq!(err("http://h:"), UriError::MissingPort);
        assert_eq!(err("http://h:70000"), UriError::BadPort);
        assert_eq!(err("http://u:p@:1"), UriError::EmptyHost);
        assert_eq!(err("http://[::1:1"), UriError::UnclosedBracket);
        assert_eq!(err("http://h:1/path"), UriError::UnexpectedPath);
        assert_eq!(err("http://u%4:p@h:1"), UriError::BadPercentEncoding);
        assert_eq!(err("http://u%zz@h:1"), UriError::BadPercentEncoding);
        assert_eq!(err("http://u%ff@h:1"), UriError::BadPercentEncoding);
        let long = "x".repeat(256);
        assert_eq!(
            err(&format!("socks5://{long}:p@h:1")),
            UriError::CredentialsTooLong
        );
        assert_eq!(
            err(&format!("socks5://u:{long}@h:1")),
            UriError::CredentialsTooLong
        );
        // HTTP Basic has no such limit.
        assert!(ProxyUri::parse(&format!("http://{long}:p@h:1")).is_ok());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn host() -> impl Strategy<Value = Host> {
            prop_oneof![
                "[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?(\\.[a-z]{1,8}){0,3}"
                    .prop_filter("not an IPv4 address", |s| s.parse::<Ipv4Addr>().is_err())
                    .prop_map(Host::Name),
                any::<[u8; 4]>().prop_map(|b| Host::V4(Ipv4Addr::from(b))),
                any::<[u16; 8]>().prop_map(|s| Host::V6(Ipv6Addr::from(s))),
            ]
        }

        fn scheme() -> impl Strategy<Value = Scheme> {
            prop_oneof![
                Just(Scheme::Mqtt),
                Just(Scheme::Mqtts),
                Just(Scheme::Ws),
                Just(Scheme::Wss)
            ]
        }

        proptest! {
            #[test]
            fn broker_uri_round_trips(
                scheme in scheme(),
                host in host(),
                port in 1u16..,
                path in "(/[a-zA-Z0-9._~%-]{0,10}){1,3}(\\?[a-z=&]{0,10})?",
            ) {
                let path = if scheme.is_websocket() { path } else { String::new() };
                let uri = BrokerUri { scheme, host, port, path };
                let text = uri.to_string();
                prop_assert_eq!(BrokerUri::parse(&text), Ok(uri), "{}", text);
            }

            #[test]
            fn proxy_uri_round_trips(
                socks in any::<bool>(),
                host in host(),
                port in 1u16..,
                creds in proptest::option::of(("\\PC{0,40}", proptest::option::of("\\PC{0,40}"))),
            ) {
                let (username, password) = match creds {
                    Some((u, p)) => (Some(u), p),
                    None => (None, None),
                };
                let kind = if socks { ProxyKind::Socks5 } else { ProxyKind::Http };
                let uri = ProxyUri { kind, host, port, username, password };
                let text = uri.to_string();
                let parsed = ProxyUri::parse(&text);
                if socks && (uri.username.as_ref().is_some_and(|u| u.len() > 255)
                    || uri.password.as_ref().is_some_and(|p| p.len() > 255)) {
                    prop_assert_eq!(parsed, Err(UriError::CredentialsTooLong));
                } else {
                    prop_assert_eq!(parsed, Ok(uri), "{}", text);
                }
            }

            /// Whatever the input, parsing returns (no panic), and a success
            /// prints back to a URI that parses to the same value.
            #[test]
            fn arbitrary_input_never_panics(s in "\\PC{0,60}", prefix in prop_oneof![
                Just(""), Just("mqtt://"), Just("ws://"), Just("wss://["), Just("http://"), Just("socks5://")
            ]) {
                let s = format!("{prefix}{s}");
                if let Ok(u) = BrokerUri::parse(&s) {
                    prop_assert_eq!(BrokerUri::parse(&u.to_string()), Ok(u));
                }
                if let Ok(u) = ProxyUri::parse(&s) {
                    prop_assert_eq!(ProxyUri::parse(&u.to_string()), Ok(u));
                }
            }
        }
    }
}

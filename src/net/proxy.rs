//! Client side of the proxy handshakes, sans-IO: HTTP/1.1 CONNECT (RFC 9110
//! §9.3.6, optional Basic credentials) and SOCKS5 (RFC 1928, with the
//! username/password method of RFC 1929).
//!
//! Driving a [`ProxyHandshake`]: send [`output`](ProxyHandshake::output) and
//! report what was written with [`written`](ProxyHandshake::written); pass
//! every received byte to [`input`](ProxyHandshake::input) until it returns
//! [`Progress::Done`], whose surplus (bytes the proxy relayed after its reply)
//! belongs to the layer above (TLS, WebSocket or MQTT). A proxy that closes
//! the connection first is [`ProxyHandshake::closed`]. Every failure is a
//! [`ProxyError`], which is `MQTT_ERR_PROXY` for C.
//!
//! The SOCKS5 steps go one at a time (no pipelining): some servers drop bytes
//! that arrive before they asked for them.

use super::base64_encode;
use super::http::{HeadError, HeadReader};
use super::uri::{Host, ProxyKind, ProxyUri};
use crate::error::Error;
use std::fmt;

/// Why the tunnel could not be opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyError {
    /// The HTTP proxy answered with a non-2xx status (407: credentials needed
    /// or wrong).
    HttpStatus(u16),
    /// The SOCKS5 proxy accepts none of the authentication methods offered
    /// (0xFF), e.g. it needs credentials and the URI has none.
    Socks5NoAcceptableMethod,
    /// The SOCKS5 proxy rejected the user name or password (RFC 1929 status).
    Socks5AuthFailed(u8),
    /// The SOCKS5 proxy refused the CONNECT with this reply code (1..=8 per
    /// RFC 1928: general failure, not allowed, network/host unreachable,
    /// connection refused, TTL expired, command/address type not supported).
    Socks5Refused(u8),
    /// The proxy's answer does not follow its protocol.
    Garbage(&'static str),
    /// The HTTP reply head is larger than [`super::http::MAX_HEAD`].
    HeadTooLarge,
    /// The proxy closed the connection before the tunnel was open.
    Closed,
    /// The target or credentials cannot be expressed in the protocol: an
    /// empty host name, one with spaces or control characters (HTTP), a name
    /// or credentials over 255 bytes (SOCKS5).
    BadTarget,
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::HttpStatus(s) => write!(f, "HTTP proxy answered status {s}"),
            ProxyError::Socks5NoAcceptableMethod => {
                f.write_str("SOCKS5 proxy accepts none of the offered authentication methods")
            }
            ProxyError::Socks5AuthFailed(s) => {
                write!(f, "SOCKS5 authentication failed (status {s})")
            }
            ProxyError::Socks5Refused(code) => {
                write!(f, "SOCKS5 proxy refused: {}", socks5_reply_text(*code))
            }
            ProxyError::Garbage(what) => write!(f, "proxy answered garbage: {what}"),
            ProxyError::HeadTooLarge => f.write_str("HTTP proxy reply head too large"),
            ProxyError::Closed => f.write_str("proxy closed the connection during the handshake"),
            ProxyError::BadTarget => {
                f.write_str("target host name or credentials not expressible to the proxy")
            }
        }
    }
}

impl std::error::Error for ProxyError {}

impl From<ProxyError> for Error {
    fn from(_: ProxyError) -> Error {
        Error::Proxy
    }
}

/// RFC 1928 §6 reply texts.
pub fn socks5_reply_text(code: u8) -> &'static str {
    match code {
        0 => "succeeded",
        1 => "general SOCKS server failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unassigned reply code",
    }
}

pub use super::Progress;

#[derive(Debug)]
enum State {
    /// Waiting for the HTTP reply head.
    Http(HeadReader),
    /// Waiting for the 2-byte method selection.
    Socks5Method,
    /// Waiting for the 2-byte RFC 1929 status.
    Socks5Auth,
    /// Waiting for the CONNECT reply (variable length).
    Socks5Reply,
    Done,
    Failed,
}

/// One proxy handshake, from the first byte sent to the open tunnel.
pub struct ProxyHandshake {
    state: State,
    out: Vec<u8>,
    /// Received bytes not yet making a complete SOCKS5 message.
    pending: Vec<u8>,
    /// The SOCKS5 CONNECT request, sent once authentication is settled.
    socks5_connect: Vec<u8>,
    /// The RFC 1929 request, if credentials were given.
    socks5_auth: Option<Vec<u8>>,
}

impl fmt::Debug for ProxyHandshake {
    // The buffers hold credentials: state only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyHandshake")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl ProxyHandshake {
    /// The handshake `proxy` needs to open a tunnel to `target:port` (the broker).
    pub fn new(proxy: &ProxyUri, target: &Host, port: u16) -> Result<ProxyHandshake, ProxyError> {
        let creds = proxy
            .username
            .as_deref()
            .map(|u| (u, proxy.password.as_deref().unwrap_or("")));
        match proxy.kind {
            ProxyKind::Http => ProxyHandshake::http_connect(target, port, creds),
            ProxyKind::Socks5 => ProxyHandshake::socks5(target, port, creds),
        }
    }

    /// HTTP CONNECT to `target:port`, with Basic credentials if given.
    /// Fails only for a host name with spaces or control characters, which
    /// would break (or inject into) the request line.
    pub fn http_connect(
        target: &Host,
        port: u16,
        credentials: Option<(&str, &str)>,
    ) -> Result<ProxyHandshake, ProxyError> {
        if let Host::Name(n) = target {
            if n.is_empty() || n.bytes().any(|b| b <= b' ' || b == 0x7f) {
                return Err(ProxyError::BadTarget);
            }
        }
        let authority = target.with_port(port);
        let mut req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        if let Some((user, pass)) = credentials {
            req.push_str("Proxy-Authorization: Basic ");
            base64_encode(format!("{user}:{pass}").as_bytes(), &mut req);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        Ok(ProxyHandshake {
            state: State::Http(HeadReader::default()),
            out: req.into_bytes(),
            pending: Vec::new(),
            socks5_connect: Vec::new(),
            socks5_auth: None,
        })
    }

    /// SOCKS5 CONNECT to `target:port`: a name goes unresolved (address type
    /// 3), IP literals as types 1 and 4. Offers "no authentication" and, with
    /// credentials, username/password too. Fails only for a name over 255
    /// bytes, or credentials over 255 bytes each.
    pub fn socks5(
        target: &Host,
        port: u16,
        credentials: Option<(&str, &str)>,
    ) -> Result<ProxyHandshake, ProxyError> {
        let mut connect = vec![5, 1, 0];
        match target {
            Host::Name(name) => {
                let len = u8::try_from(name.len()).map_err(|_| ProxyError::BadTarget)?;
                if len == 0 {
                    return Err(ProxyError::BadTarget);
                }
                connect.push(3);
                connect.push(len);
                connect.extend_from_slice(name.as_bytes());
            }
            Host::V4(a) => {
                connect.push(1);
                connect.extend_from_slice(&a.octets());
            }
            Host::V6(a) => {
                connect.push(4);
                connect.extend_from_slice(&a.octets());
            }
        }
        connect.extend_from_slice(&port.to_be_bytes());
        let auth = match credentials {
            None => None,
            Some((user, pass)) => {
                let ulen = u8::try_from(user.len()).map_err(|_| ProxyError::BadTarget)?;
                let plen = u8::try_from(pass.len()).map_err(|_| ProxyError::BadTarget)?;
                let mut a = vec![1, ulen];
                a.extend_from_slice(user.as_bytes());
                a.push(plen);
                a.extend_from_slice(pass.as_bytes());
                Some(a)
            }
        };
        let greeting = if auth.is_some() {
            vec![5, 2, 0, 2]
        } else {
            vec![5, 1, 0]
        };
        Ok(ProxyHandshake {
            state: State::Socks5Method,
            out: greeting,
            pending: Vec::new(),
            socks5_connect: connect,
            socks5_auth: auth,
        })
    }

    /// Bytes to send now (empty while waiting for the proxy).
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// `n` bytes of [`output`](Self::output) were written.
    pub fn written(&mut self, n: usize) {
        self.out.drain(..n.min(self.out.len()));
    }

    /// True once the tunnel is open.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The error for a proxy that closed the connection before the end.
    pub fn closed(&mut self) -> ProxyError {
        self.state = State::Failed;
        ProxyError::Closed
    }

    /// Feed bytes received from the proxy. After an error (or `Done`) the
    /// handshake is over and further input is an error.
    pub fn input(&mut self, bytes: &[u8]) -> Result<Progress, ProxyError> {
        let result = self.step(bytes);
        if result.is_err() {
            self.state = State::Failed;
            self.out.clear();
        }
        result
    }

    fn step(&mut self, bytes: &[u8]) -> Result<Progress, ProxyError> {
        match &mut self.state {
            State::Http(reader) => match reader.feed(bytes) {
                Ok(None) => Ok(Progress::Continue),
                Ok(Some(head)) if (200..300).contains(&head.status) => {
                    self.state = State::Done;
                    Ok(Progress::Done(head.surplus))
                }
                Ok(Some(head)) => Err(ProxyError::HttpStatus(head.status)),
                Err(HeadError::TooLarge) => Err(ProxyError::HeadTooLarge),
                Err(HeadError::Malformed) => Err(ProxyError::Garbage("not an HTTP/1.x response")),
            },
            State::Done | State::Failed => {
                Err(ProxyError::Garbage("bytes after the handshake ended"))
            }
            _ => {
                self.pending.extend_from_slice(bytes);
                self.socks5_step()
            }
        }
    }

    fn socks5_step(&mut self) -> Result<Progress, ProxyError> {
        {
            let p = &self.pending;
            match self.state {
                State::Socks5Method => {
                    if p.first().is_some_and(|&v| v != 5) {
                        return Err(ProxyError::Garbage("SOCKS version is not 5"));
                    }
                    if p.len() < 2 {
                        return Ok(Progress::Continue);
                    }
                    if !self.out.is_empty() {
                        // It answered a greeting we have not finished sending.
                        return Err(ProxyError::Garbage("SOCKS5 reply before the request"));
                    }
                    let method = p[1];
                    self.pending.drain(..2);
                    match (method, self.socks5_auth.take()) {
                        (0, _) => {
                            self.out = std::mem::take(&mut self.socks5_connect);
                            self.state = State::Socks5Reply;
                        }
                        (2, Some(auth)) => {
                            self.out = auth;
                            self.state = State::Socks5Auth;
                        }
                        (0xff, _) => return Err(ProxyError::Socks5NoAcceptableMethod),
                        _ => return Err(ProxyError::Garbage("SOCKS5 method not offered")),
                    }
                }
                State::Socks5Auth => {
                    if p.len() < 2 {
                        return Ok(Progress::Continue);
                    }
                    // RFC 1929 says version 1; some servers echo 5.
                    if p[0] != 1 && p[0] != 5 {
                        return Err(ProxyError::Garbage(
                            "bad SOCKS5 authentication reply version",
                        ));
                    }
                    if p[1] != 0 {
                        return Err(ProxyError::Socks5AuthFailed(p[1]));
                    }
                    self.pending.drain(..2);
                    self.out = std::mem::take(&mut self.socks5_connect);
                    self.state = State::Socks5Reply;
                }
                State::Socks5Reply => {
                    if p.first().is_some_and(|&v| v != 5) {
                        return Err(ProxyError::Garbage("SOCKS version is not 5"));
                    }
                    // The reply code says it all: no need to wait for the address.
                    if let Some(&rep) = p.get(1).filter(|&&rep| rep != 0) {
                        return Err(ProxyError::Socks5Refused(rep));
                    }
                    if p.len() < 5 {
                        return Ok(Progress::Continue);
                    }
                    let addr_len = match p[3] {
                        1 => 4,
                        3 => 1 + usize::from(p[4]),
                        4 => 16,
                        _ => return Err(ProxyError::Garbage("unknown SOCKS5 address type")),
                    };
                    let total = 4 + addr_len + 2;
                    if p.len() < total {
                        return Ok(Progress::Continue);
                    }
                    if !self.out.is_empty() {
                        return Err(ProxyError::Garbage("SOCKS5 reply before the request"));
                    }
                    let surplus = self.pending.split_off(total);
                    self.pending = Vec::new();
                    self.state = State::Done;
                    return Ok(Progress::Done(surplus));
                }
                _ => unreachable!("socks5_step outside the SOCKS5 states"),
            }
        }
        if self.pending.is_empty() {
            Ok(Progress::Continue)
        } else {
            // Bytes for the next step arrived before we sent its request.
            Err(ProxyError::Garbage("SOCKS5 reply before the request"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn name(n: &str) -> Host {
        Host::Name(n.into())
    }

    /// Take all output as sent; return it.
    fn send_all(h: &mut ProxyHandshake) -> Vec<u8> {
        let out = h.output().to_vec();
        h.written(out.len());
        out
    }

    #[test]
    fn http_connect_request_and_2xx() {
        let mut h = ProxyHandshake::http_connect(&name("broker.example"), 1883, None).unwrap();
        assert_eq!(
            send_all(&mut h),
            b"CONNECT broker.example:1883 HTTP/1.1\r\nHost: broker.example:1883\r\n\r\n"
        );
        assert_eq!(
            h.input(b"HTTP/1.1 200 Connection established\r\n"),
            Ok(Progress::Continue)
        );
        assert_eq!(
            h.input(b"\r\n\x20\x02\x00\x00"),
            Ok(Progress::Done(vec![0x20, 2, 0, 0]))
        );
        assert!(h.is_done());
        // Any 2xx opens the tunnel.
        let mut h = ProxyHandshake::http_connect(&name("b"), 1, None).unwrap();
        assert_eq!(
            h.input(b"HTTP/1.0 204 No Content\r\n\r\n"),
            Ok(Progress::Done(vec![]))
        );
    }

    #[test]
    fn http_connect_basic_auth_and_ipv6() {
        let mut h = ProxyHandshake::http_connect(
            &Host::V6(Ipv6Addr::LOCALHOST),
            8883,
            Some(("Aladdin", "open sesame")),
        )
        .unwrap();
        let req = String::from_utf8(send_all(&mut h)).unwrap();
        assert_eq!(
            req,
            "CONNECT [::1]:8883 HTTP/1.1\r\nHost: [::1]:8883\r\n\
             Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n\r\n"
        );
    }

    #[test]
    fn http_refusals_and_garbage() {
        for (reply, err) in [
            (
                &b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n"
                    [..],
                ProxyError::HttpStatus(407),
            ),
            (
                b"HTTP/1.1 403 Forbidden\r\n\r\n",
                ProxyError::HttpStatus(403),
            ),
            (
                b"HTTP/1.1 101 Switching\r\n\r\n",
                ProxyError::HttpStatus(101),
            ),
            (
                b"HTTP/1.1 302 Found\r\nLocation: x\r\n\r\n",
                ProxyError::HttpStatus(302),
            ),
            (
                b"\x05\x00garbage\r\n\r\n",
                ProxyError::Garbage("not an HTTP/1.x response"),
            ),
        ] {
            let mut h = ProxyHandshake::http_connect(&name("b"), 1, None).unwrap();
            assert_eq!(h.input(reply), Err(err.clone()));
            assert_eq!(Error::from(err), Error::Proxy);
            // Over: nothing more to send, further bytes are errors.
            assert!(h.output().is_empty());
            assert!(h.input(b"x").is_err());
        }
        let mut h = ProxyHandshake::http_connect(&name("b"), 1, None).unwrap();
        let mut res = Ok(Progress::Continue);
        for _ in 0..10 {
            res = h.input(&[b'x'; 1000]);
            if res.is_err() {
                break;
            }
        }
        assert_eq!(res, Err(ProxyError::HeadTooLarge));
        let mut h = ProxyHandshake::http_connect(&name("b"), 1, None).unwrap();
        assert_eq!(h.input(b"HTTP/1.1 200"), Ok(Progress::Continue));
        assert_eq!(h.closed(), ProxyError::Closed);
    }

    #[test]
    fn http_reply_byte_by_byte() {
        let reply = b"HTTP/1.1 200 OK\r\nVia: 1.1 tinyproxy\r\n\r\nMQTT";
        let mut h = ProxyHandshake::http_connect(&name("b"), 1, None).unwrap();
        let mut done = None;
        for (i, b) in reply.iter().enumerate() {
            match h.input(&[*b]).unwrap() {
                Progress::Continue => {}
                Progress::Done(s) => {
                    done = Some((i, s));
                    break;
                }
            }
        }
        // Done on the last byte of the head; the rest is the caller's.
        assert_eq!(done, Some((reply.len() - 5, vec![])));
    }

    #[test]
    fn socks5_no_auth_domain_name() {
        let mut h = ProxyHandshake::socks5(&name("broker"), 1883, None).unwrap();
        assert_eq!(send_all(&mut h), [5, 1, 0]);
        assert_eq!(h.input(&[5, 0]), Ok(Progress::Continue));
        let mut expect = vec![5, 1, 0, 3, 6];
        expect.extend_from_slice(b"broker");
        expect.extend_from_slice(&1883u16.to_be_bytes());
        assert_eq!(send_all(&mut h), expect);
        // Bound address as IPv4, then MQTT bytes in the same read.
        assert_eq!(
            h.input(&[5, 0, 0, 1, 10, 0, 0, 1, 0x1f, 0x90, 0x20, 0x02]),
            Ok(Progress::Done(vec![0x20, 0x02]))
        );
        assert!(h.is_done());
    }

    #[test]
    fn socks5_ip_literals_use_types_1_and_4() {
        let mut h =
            ProxyHandshake::socks5(&Host::V4(Ipv4Addr::new(192, 0, 2, 1)), 80, None).unwrap();
        send_all(&mut h);
        h.input(&[5, 0]).unwrap();
        assert_eq!(send_all(&mut h), [5, 1, 0, 1, 192, 0, 2, 1, 0, 80]);
        let mut h = ProxyHandshake::socks5(&Host::V6(Ipv6Addr::LOCALHOST), 443, None).unwrap();
        send_all(&mut h);
        h.input(&[5, 0]).unwrap();
        let out = send_all(&mut h);
        assert_eq!(&out[..4], [5, 1, 0, 4]);
        assert_eq!(&out[4..20], Ipv6Addr::LOCALHOST.octets());
        assert_eq!(&out[20..], 443u16.to_be_bytes());
    }

    #[test]
    fn socks5_user_pass_every_reply_address_type_byte_by_byte() {
        for bound in [
            vec![1, 127, 0, 0, 1],
            {
                let mut v = vec![3, 9];
                v.extend_from_slice(b"localhost");
                v
            },
            {
                let mut v = vec![4];
                v.extend_from_slice(&[0; 16]);
                v
            },
        ] {
            let mut h = ProxyHandshake::socks5(&name("b"), 1883, Some(("user", "pa:ss"))).unwrap();
            assert_eq!(send_all(&mut h), [5, 2, 0, 2]);
            assert_eq!(h.input(&[5]), Ok(Progress::Continue));
            assert!(h.output().is_empty());
            assert_eq!(h.input(&[2]), Ok(Progress::Continue));
            assert_eq!(send_all(&mut h), b"\x01\x04user\x05pa:ss");
            assert_eq!(h.input(&[1]), Ok(Progress::Continue));
            assert_eq!(h.input(&[0]), Ok(Progress::Continue));
            assert_eq!(send_all(&mut h), [5, 1, 0, 3, 1, b'b', 0x07, 0x5b]);
            let mut reply = vec![5, 0, 0];
            reply.extend_from_slice(&bound);
            reply.extend_from_slice(&[0x12, 0x34]);
            let last = reply.len() - 1;
            for (i, b) in reply.iter().enumerate() {
                let p = h.input(&[*b]).unwrap();
                if i < last {
                    assert_eq!(p, Progress::Continue, "byte {i} of {reply:?}");
                } else {
                    assert_eq!(p, Progress::Done(vec![]));
                }
            }
        }
    }

    #[test]
    fn socks5_server_may_pick_no_auth_when_credentials_are_offered() {
        let mut h = ProxyHandshake::socks5(&name("b"), 1, Some(("u", "p"))).unwrap();
        send_all(&mut h);
        h.input(&[5, 0]).unwrap();
        assert_eq!(send_all(&mut h)[..4], [5, 1, 0, 3]);
    }

    #[test]
    fn socks5_refusals() {
        // No acceptable method.
        let mut h = ProxyHandshake::socks5(&name("b"), 1, None).unwrap();
        send_all(&mut h);
        assert_eq!(
            h.input(&[5, 0xff]),
            Err(ProxyError::Socks5NoAcceptableMethod)
        );
        // Bad credentials.
        let mut h = ProxyHandshake::socks5(&name("b"), 1, Some(("u", "wrong"))).unwrap();
        send_all(&mut h);
        h.input(&[5, 2]).unwrap();
        send_all(&mut h);
        assert_eq!(h.input(&[1, 1]), Err(ProxyError::Socks5AuthFailed(1)));
        // Every non-zero reply code, known to the RFC or not, before the address arrives.
        for code in 1..=255u8 {
            let mut h = ProxyHandshake::socks5(&name("b"), 1, None).unwrap();
            send_all(&mut h);
            h.input(&[5, 0]).unwrap();
            send_all(&mut h);
            assert_eq!(h.input(&[5, code]), Err(ProxyError::Socks5Refused(code)));
            assert_eq!(Error::from(ProxyError::Socks5Refused(code)), Error::Proxy);
        }
        assert_eq!(socks5_reply_text(5), "connection refused");
    }

    #[test]
    fn socks5_garbage() {
        let start = || {
            let mut h = ProxyHandshake::socks5(&name("b"), 1, None).unwrap();
            send_all(&mut h);
            h
        };
        // An HTTP proxy on the SOCKS port.
        assert!(matches!(
            start().input(b"HTTP/1.1 400 Bad Request\r\n"),
            Err(ProxyError::Garbage(_))
        ));
        // Version 4 reply.
        assert!(matches!(
            start().input(&[4, 0]),
            Err(ProxyError::Garbage(_))
        ));
        // A method we did not offer.
        assert!(matches!(
            start().input(&[5, 2]),
            Err(ProxyError::Garbage(_))
        ));
        assert!(matches!(
            start().input(&[5, 1]),
            Err(ProxyError::Garbage(_))
        ));
        // Unknown address type in the reply.
        let mut h = start();
        h.input(&[5, 0]).unwrap();
        send_all(&mut h);
        assert!(matches!(
            h.input(&[5, 0, 0, 9, 0, 0, 0]),
            Err(ProxyError::Garbage(_))
        ));
        // The reply to the CONNECT pipelined with the method selection: the
        // request was never sent.
        assert!(matches!(
            start().input(&[5, 0, 5, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
            Err(ProxyError::Garbage(_))
        ));
        // A reply before the greeting was even sent.
        let mut h = ProxyHandshake::socks5(&name("b"), 1, None).unwrap();
        assert!(matches!(h.input(&[5, 0]), Err(ProxyError::Garbage(_))));
        // Closed mid-handshake.
        let mut h = start();
        h.input(&[5]).unwrap();
        assert_eq!(h.closed(), ProxyError::Closed);
    }

    #[test]
    fn http_targets_that_would_break_the_request() {
        for bad in ["", "a b", "evil\r\nX-Injected: 1", "tab\there", "del\x7f"] {
            assert_eq!(
                ProxyHandshake::http_connect(&name(bad), 1, None).unwrap_err(),
                ProxyError::BadTarget,
                "{bad:?}"
            );
        }
        assert!(ProxyHandshake::http_connect(&name("xn--bcher-kva.example"), 1, None).is_ok());
    }

    #[test]
    fn socks5_targets_out_of_range() {
        let long = "h".repeat(256);
        assert_eq!(
            ProxyHandshake::socks5(&name(&long), 1, None).unwrap_err(),
            ProxyError::BadTarget
        );
        assert_eq!(
            ProxyHandshake::socks5(&name(""), 1, None).unwrap_err(),
            ProxyError::BadTarget
        );
        assert!(ProxyHandshake::socks5(&name(&long[..255]), 1, None).is_ok());
        assert!(ProxyHandshake::socks5(&name("h"), 1, Some((&long, "p"))).is_err());
    }

    #[test]
    fn from_uri() {
        let uri = ProxyUri::parse("socks5://u%40x:p@proxy:1080").unwrap();
        let mut h = ProxyHandshake::new(&uri, &name("b"), 1883).unwrap();
        assert_eq!(send_all(&mut h), [5, 2, 0, 2]);
        h.input(&[5, 2]).unwrap();
        assert_eq!(send_all(&mut h), b"\x01\x03u@x\x01p");
        let uri = ProxyUri::parse("http://u@proxy:3128").unwrap();
        let mut h = ProxyHandshake::new(&uri, &name("b"), 1883).unwrap();
        let req = String::from_utf8(send_all(&mut h)).unwrap();
        // "u:" in base64: a user without password has an empty one.
        assert!(req.contains("Proxy-Authorization: Basic dTo=\r\n"), "{req}");
    }

    /// Arbitrary replies never panic and never open the tunnel unless they
    /// are a well-formed success.
    #[test]
    fn random_replies_never_panic() {
        use proptest::prelude::*;
        let mut runner = proptest::test_runner::TestRunner::default();
        runner
            .run(
                &(
                    proptest::collection::vec(any::<u8>(), 0..64),
                    any::<bool>(),
                    1usize..8,
                ),
                |(bytes, socks, chunk)| {
                    let mut h = if socks {
                        ProxyHandshake::socks5(&name("b"), 1, Some(("u", "p"))).unwrap()
                    } else {
                        ProxyHandshake::http_connect(&name("b"), 1, None).unwrap()
                    };
                    for c in bytes.chunks(chunk) {
                        send_all(&mut h);
                        match h.input(c) {
                            Ok(Progress::Continue) => {}
                            Ok(Progress::Done(_)) => {
                                prop_assert!(h.is_done());
                                break;
                            }
                            Err(_) => {
                                prop_assert!(!h.is_done());
                                break;
                            }
                        }
                    }
                    Ok(())
                },
            )
            .unwrap();
    }
}

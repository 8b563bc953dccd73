//! The sans-IO proxy handshakes (`mqtt::net::proxy`) against real proxies:
//! tinyproxy for HTTP CONNECT, microsocks for SOCKS5, each started on a free
//! loopback port, tunnelling to a private mosquitto. Each success is proven by
//! an MQTT CONNECT/CONNACK and a PINGREQ/PINGRESP through the tunnel; each
//! refusal by the exact error (all `MQTT_ERR_PROXY`).
//!
//! The handshake runs over a blocking `TcpStream` here; the reactor will
//! drive the same state machine over its non-blocking transport.

mod common;
mod netpaths_support;

use common::{Broker, HOST, TIMEOUT, connect_packet, encode, free_port};
use mqtt::Error;
use mqtt::net::proxy::{Progress, ProxyError, ProxyHandshake};
use mqtt::net::uri::{Host, ProxyUri};
use mqtt::protocol::codec::Packet;
use netpaths_support::RealProxy;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};

/// Connect to the proxy and run the handshake to the end: the open stream and
/// the bytes that came after the proxy's reply, or the handshake's error.
fn open_tunnel(uri: &str, target: &Host, port: u16) -> Result<(TcpStream, Vec<u8>), ProxyError> {
    let proxy = ProxyUri::parse(uri).unwrap_or_else(|e| panic!("{uri}: {e}"));
    let mut handshake = ProxyHandshake::new(&proxy, target, port)?;
    let mut stream =
        TcpStream::connect((proxy.host.bare(), proxy.port)).expect("connect to the proxy");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        while !handshake.output().is_empty() {
            let n = stream
                .write(handshake.output())
                .expect("write to the proxy");
            handshake.written(n);
        }
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("read from the proxy: {e}"),
        };
        if n == 0 {
            return Err(handshake.closed());
        }
        if let Progress::Done(surplus) = handshake.input(&buf[..n])? {
            return Ok((stream, surplus));
        }
    }
}

/// CONNECT -> CONNACK accepted, then PINGREQ -> PINGRESP, through the tunnel.
fn mqtt_through(mut stream: TcpStream, surplus: Vec<u8>, client_id: &str) {
    assert!(
        surplus.is_empty(),
        "the broker speaks only when spoken to: {surplus:?}"
    );
    stream
        .write_all(&encode(&Packet::Connect(connect_packet(client_id))))
        .unwrap();
    let mut connack = [0u8; 4];
    stream
        .read_exact(&mut connack)
        .expect("CONNACK through the tunnel");
    assert_eq!(
        connack,
        [0x20, 0x02, 0x00, 0x00],
        "CONNACK, session absent, accepted"
    );
    stream.write_all(&[0xc0, 0x00]).unwrap();
    let mut pingresp = [0u8; 2];
    stream
        .read_exact(&mut pingresp)
        .expect("PINGRESP through the tunnel");
    assert_eq!(pingresp, [0xd0, 0x00]);
}

fn localhost_v4() -> Host {
    Host::V4(Ipv4Addr::LOCALHOST)
}

/// A name for the broker's 127.0.0.1, sent unresolved (address type 3).
fn broker_name() -> Host {
    Host::Name(netpaths_support::loopback_name().into())
}

#[test]
fn http_connect_through_tinyproxy() {
    let broker = Broker::start();
    let proxy = RealProxy::tinyproxy(None);
    let (stream, surplus) =
        open_tunnel(&proxy.uri("http", None), &localhost_v4(), broker.port()).expect("tunnel");
    mqtt_through(stream, surplus, "via-http");
}

#[test]
fn http_connect_with_basic_auth() {
    // tinyproxy's config takes only [A-Za-z0-9._-] in credentials; the SOCKS5
    // test has the percent-encoded ones.
    let (user, pass) = ("alice", "open-sesame_1.0");
    let broker = Broker::start();
    let proxy = RealProxy::tinyproxy(Some((user, pass)));

    let (stream, surplus) = open_tunnel(
        &proxy.uri("http", Some((user, pass))),
        &localhost_v4(),
        broker.port(),
    )
    .expect("tunnel with the right credentials");
    mqtt_through(stream, surplus, "via-http-auth");

    let wrong = open_tunnel(
        &proxy.uri("http", Some((user, "nope"))),
        &localhost_v4(),
        broker.port(),
    );
    // tinyproxy 1.11 answers 401 to wrong credentials, 407 to none.
    assert!(
        matches!(wrong, Err(ProxyError::HttpStatus(401 | 407))),
        "{wrong:?}"
    );
    let none = open_tunnel(&proxy.uri("http", None), &localhost_v4(), broker.port());
    assert_eq!(none.unwrap_err(), ProxyError::HttpStatus(407));
    assert_eq!(Error::from(ProxyError::HttpStatus(407)), Error::Proxy);
}

#[test]
fn http_connect_to_a_closed_port_is_refused() {
    let proxy = RealProxy::tinyproxy(None);
    let closed = free_port();
    match open_tunnel(&proxy.uri("http", None), &localhost_v4(), closed) {
        Err(ProxyError::HttpStatus(s)) => assert!(!(200..300).contains(&s), "status {s}"),
        other => panic!("expected a non-2xx status, got {other:?}"),
    }
}

#[test]
fn socks5_through_microsocks_by_name_and_by_address() {
    let broker = Broker::start();
    let proxy = RealProxy::microsocks(None);
    let (stream, surplus) = open_tunnel(&proxy.uri("socks5", None), &broker_name(), broker.port())
        .expect("tunnel by name");
    mqtt_through(stream, surplus, "via-socks-name");
    let (stream, surplus) = open_tunnel(&proxy.uri("socks5", None), &localhost_v4(), broker.port())
        .expect("tunnel by IPv4");
    mqtt_through(stream, surplus, "via-socks-v4");
}

#[test]
fn socks5_user_password() {
    // ':' '@' '%' ' ': percent-encoded in the URI, decoded before they are sent.
    let (user, pass) = ("bob", "s:cr@t 100%");
    let broker = Broker::start();
    let proxy = RealProxy::microsocks(Some((user, pass)));

    let (stream, surplus) = open_tunnel(
        &proxy.uri("socks5", Some((user, pass))),
        &broker_name(),
        broker.port(),
    )
    .expect("tunnel with the right credentials");
    mqtt_through(stream, surplus, "via-socks-auth");

    let wrong = open_tunnel(
        &proxy.uri("socks5", Some((user, "nope"))),
        &broker_name(),
        broker.port(),
    );
    assert!(
        matches!(wrong, Err(ProxyError::Socks5AuthFailed(s)) if s != 0),
        "{wrong:?}"
    );
    let none = open_tunnel(&proxy.uri("socks5", None), &broker_name(), broker.port());
    assert_eq!(none.unwrap_err(), ProxyError::Socks5NoAcceptableMethod);
}

#[test]
fn socks5_to_a_closed_port_is_refused() {
    let proxy = RealProxy::microsocks(None);
    let closed = free_port();
    let result = open_tunnel(&proxy.uri("socks5", None), &localhost_v4(), closed);
    // RFC 1928 reply 5, "connection refused" (microsocks maps errno; any
    // non-zero code is a refusal).
    assert!(
        matches!(result, Err(ProxyError::Socks5Refused(code)) if code != 0),
        "{result:?}"
    );
    assert_eq!(Error::from(result.unwrap_err()), Error::Proxy);
}

#[test]
fn an_mqtt_broker_is_not_a_proxy() {
    // mosquitto takes either greeting for a malformed MQTT packet and hangs up.
    let broker = Broker::start();
    let http = open_tunnel(
        &format!("http://{HOST}:{}", broker.port()),
        &localhost_v4(),
        1883,
    );
    assert!(
        matches!(http, Err(ProxyError::Closed | ProxyError::Garbage(_))),
        "{http:?}"
    );
    let socks = open_tunnel(
        &format!("socks5://{HOST}:{}", broker.port()),
        &localhost_v4(),
        1883,
    );
    assert!(
        matches!(socks, Err(ProxyError::Closed | ProxyError::Garbage(_))),
        "{socks:?}"
    );
}

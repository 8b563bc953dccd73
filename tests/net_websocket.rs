//! The WebSocket client (`mqtt::net::websocket`) against a real broker with a
//! WebSocket listener: aedes behind Node's `ws` (this machine's mosquitto is
//! built without WebSockets). MQTT runs through `WsStream` over a blocking
//! `TcpStream`, directly and through tinyproxy; the reactor will drive the
//! same sans-IO pieces over its non-blocking transport.

mod common;
mod netpaths_support;

use common::{HOST, TIMEOUT, connect_packet, encode};
use mqtt::net::Progress;
use mqtt::net::proxy::ProxyHandshake;
use mqtt::net::uri::{BrokerUri, Host};
use mqtt::net::websocket::{WsError, WsStream, ws_error};
use mqtt::protocol::codec::{Packet, Publish, QoS};
use netpaths_support::{RealProxy, WsBroker};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};

const MAX_FRAME: usize = 1 << 20;

fn tcp(port: u16) -> TcpStream {
    let s = TcpStream::connect((HOST, port)).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}

fn ws_connect(port: u16, path: &str) -> std::io::Result<WsStream<TcpStream>> {
    let uri = BrokerUri::parse(&format!("ws://{HOST}:{port}{path}")).unwrap();
    WsStream::connect(tcp(port), &uri, MAX_FRAME)
}

/// One MQTT packet: (first byte, variable header and payload).
fn read_packet(s: &mut impl Read) -> (u8, Vec<u8>) {
    let mut b = [0u8; 1];
    s.read_exact(&mut b).expect("packet type");
    let first = b[0];
    let (mut len, mut shift) = (0usize, 0);
    loop {
        s.read_exact(&mut b).expect("remaining length");
        len |= usize::from(b[0] & 0x7f) << shift;
        if b[0] & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("packet body");
    (first, body)
}

fn mqtt_connect(s: &mut (impl Read + Write), client_id: &str) {
    s.write_all(&encode(&Packet::Connect(connect_packet(client_id))))
        .unwrap();
    s.flush().unwrap();
    assert_eq!(read_packet(s), (0x20, vec![0, 0]), "CONNACK accepted");
}

fn subscribe(s: &mut (impl Read + Write), topic: &str, qos: u8) {
    let mut body = vec![0, 1, 0, topic.len() as u8];
    body.extend_from_slice(topic.as_bytes());
    body.push(qos);
    let mut p = vec![0x82, body.len() as u8];
    p.extend(body);
    s.write_all(&p).unwrap();
    s.flush().unwrap();
    assert_eq!(read_packet(s), (0x90, vec![0, 1, qos]), "SUBACK");
}

/// Subscribe, publish QoS 1 to ourselves, get both the PUBACK with our
/// packet id and the message back with the same payload.
fn qos1_round_trip(s: &mut (impl Read + Write), topic: &str, payload: &[u8]) {
    subscribe(s, topic, 1);
    let publish = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic,
        pkid: 7,
        payload,
        properties: None,
    };
    s.write_all(&encode(&Packet::Publish(publish))).unwrap();
    s.flush().unwrap();
    let (mut got_puback, mut got_message) = (false, false);
    while !(got_puback && got_message) {
        let (first, body) = read_packet(s);
        match first >> 4 {
            4 => {
                assert_eq!(body, [0, 7], "PUBACK for pkid 7");
                got_puback = true;
            }
            3 => {
                assert_eq!(first & 0x06, 0x02, "delivered at QoS 1");
                let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
                assert_eq!(&body[2..2 + tlen], topic.as_bytes());
                let pkid = [body[2 + tlen], body[3 + tlen]];
                assert_eq!(&body[4 + tlen..], payload, "payload intact");
                // Acknowledge the delivery.
                s.write_all(&[0x40, 0x02, pkid[0], pkid[1]]).unwrap();
                s.flush().unwrap();
                got_message = true;
            }
            t => panic!("unexpected packet type {t}"),
        }
    }
}

#[test]
fn connect_and_qos1_over_websocket() {
    let broker = WsBroker::start("/mqtt");
    let mut ws = ws_connect(broker.port(), "").expect("upgrade on the default /mqtt path");
    mqtt_connect(&mut ws, "ws-qos1");
    qos1_round_trip(&mut ws, "ws/small", b"hello over websocket");
    // 300 bytes: 16-bit frame lengths both ways; 100 kB: 64-bit ones.
    qos1_round_trip(&mut ws, "ws/medium", &[0xa5; 300]);
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    qos1_round_trip(&mut ws, "ws/big", &big);
    // PINGREQ -> PINGRESP, then a clean close: the server's close ends the stream.
    ws.write_all(&[0xc0, 0]).unwrap();
    ws.flush().unwrap();
    assert_eq!(read_packet(&mut ws), (0xd0, vec![]));
    ws.close().unwrap();
    let mut rest = Vec::new();
    ws.read_to_end(&mut rest)
        .expect("clean end after the close handshake");
    assert!(rest.is_empty());
}

#[test]
fn mqtt_bytes_split_over_many_frames() {
    let broker = WsBroker::start("/mqtt");
    let mut ws = ws_connect(broker.port(), "/mqtt").unwrap();
    // One frame per byte of the CONNECT: the broker must reassemble it.
    for b in encode(&Packet::Connect(connect_packet("ws-split"))) {
        assert_eq!(ws.write(&[b]).unwrap(), 1);
    }
    ws.flush().unwrap();
    assert_eq!(read_packet(&mut ws), (0x20, vec![0, 0]));
}

#[test]
fn custom_path_and_a_refused_one() {
    let broker = WsBroker::start("/custom/ws");
    let mut ws = ws_connect(broker.port(), "/custom/ws").expect("upgrade on the configured path");
    mqtt_connect(&mut ws, "ws-path");
    // The default path is not served here: a non-101 status, a protocol error.
    let err = ws_connect(broker.port(), "").unwrap_err();
    match ws_error(&err) {
        Some(WsError::Status(s)) => assert_ne!(s, 101),
        other => panic!("expected a status error, got {other:?} ({err})"),
    }
    assert_eq!(
        mqtt::Error::from(WsError::Status(400)),
        mqtt::Error::ProtocolViolation
    );
}

#[test]
fn websocket_through_an_http_proxy() {
    let broker = WsBroker::start("/mqtt");
    let proxy = RealProxy::tinyproxy(None);
    let mut stream = tcp(proxy.port());
    let mut hs =
        ProxyHandshake::http_connect(&Host::V4(Ipv4Addr::LOCALHOST), broker.port(), None).unwrap();
    let mut buf = [0u8; 512];
    let surplus = loop {
        stream.write_all(hs.output()).unwrap();
        let n = hs.output().len();
        hs.written(n);
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "proxy closed");
        if let Progress::Done(s) = hs.input(&buf[..n]).unwrap() {
            break s;
        }
    };
    assert!(surplus.is_empty());
    let uri = BrokerUri::parse(&format!("ws://{HOST}:{}/mqtt", broker.port())).unwrap();
    let mut ws = WsStream::connect(stream, &uri, MAX_FRAME).expect("upgrade through the tunnel");
    mqtt_connect(&mut ws, "ws-via-proxy");
    qos1_round_trip(&mut ws, "ws/proxied", b"through tinyproxy");
}

/// wss: rustls under the WebSocket layer (as the transport will stack them),
/// against aedes behind an HTTPS server with a certificate from a test CA.
#[cfg(feature = "tls")]
#[test]
fn websocket_over_tls() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use std::sync::Arc;

    let pki = common::pki::pki_for_loopback();
    let broker = WsBroker::start_tls("/mqtt", &pki.path("server.pem"), &pki.path("server.key"));
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_pem().as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let uri = BrokerUri::parse(&format!("wss://localhost:{}", broker.port())).unwrap();
    assert!(uri.scheme.is_tls() && uri.path == "/mqtt");
    let name = ServerName::try_from(uri.host.bare()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tls = rustls::StreamOwned::new(conn, tcp(broker.port()));
    let mut ws = WsStream::connect(tls, &uri, MAX_FRAME).expect("upgrade over TLS");
    mqtt_connect(&mut ws, "wss-qos1");
    qos1_round_trip(&mut ws, "wss/t", &[0x5a; 20_000]);
}

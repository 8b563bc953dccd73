//! The network paths wired into the client: `Client::connect_uri` (mqtt, mqtts,
//! ws, wss) and `Client::set_proxy` (HTTP CONNECT, SOCKS5) end to end, against
//! real brokers (mosquitto; aedes behind a WebSocket listener) and real proxies
//! (tinyproxy, microsocks). QoS 0/1/2 round trips over each path, the external
//! loop over ws, wss and through a proxy, automatic reconnection over ws and wss
//! and through both kinds of proxy (the broker or the proxy restarted), refusing
//! proxies (`Error::Proxy`, blocking and in the DISCONNECT callback), broken
//! WebSocket servers (a protocol error, never a timeout) and malformed URIs
//! (rejected, nothing changed). The faults come from small in-test servers;
//! normal behaviour always from the real programs.

mod common;
mod netpaths_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::thread;
use std::time::{Duration, Instant};

use common::events::{self, Event, expect};
use common::pki::{ca_only, pki_for_loopback, tls_broker};
use common::{Broker, HOST, TIMEOUT, free_port, loopback};
use mqtt::net::websocket::accept_for_key;
use mqtt::protocol::codec::QoS;
use mqtt::{Client, Command, Error};
use netpaths_support::{RealProxy, WsBroker, loopback_name};

const RECORDED: &[Command] = &[
    Command::ConnAck,
    Command::Publish,
    Command::PubAck,
    Command::PubComp,
    Command::PubRel,
    Command::SubAck,
    Command::Disconnect,
];

/// A client (reconnection off, connect timeout `TIMEOUT`) whose callbacks are recorded.
fn recorded_client(id: &str) -> (Client, Receiver<Event>) {
    let client = Client::new(id, true).unwrap();
    client.set_reconnect(None).unwrap();
    client.set_connect_timeout(TIMEOUT).unwrap();
    let rx = events::record(&client, RECORDED);
    (client, rx)
}

/// Subscribe to `prefix/#` at QoS 2, publish QoS 0, 1 and 2 (and one message
/// larger than a WebSocket frame the client writes) to ourselves; every
/// message must come back with its payload and QoS, every ack arrive.
fn round_trip(client: &Client, rx: &Receiver<Event>, prefix: &str) {
    client
        .subscribe(&[(&format!("{prefix}/#"), QoS::ExactlyOnce)])
        .unwrap();
    expect(rx, "SUBACK", |e| e.command == Command::SubAck);
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let sent = [
        (format!("{prefix}/0"), b"zero".to_vec(), QoS::AtMostOnce),
        (format!("{prefix}/1"), b"one".to_vec(), QoS::AtLeastOnce),
        (format!("{prefix}/2"), b"two".to_vec(), QoS::ExactlyOnce),
        (format!("{prefix}/big"), big, QoS::AtLeastOnce),
    ];
    let mut want_acks = Vec::new();
    for (topic, payload, qos) in &sent {
        let mid = client.publish(topic, payload, *qos, false).unwrap();
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => want_acks.push((Command::PubAck as u8, mid)),
            QoS::ExactlyOnce => want_acks.push((Command::PubComp as u8, mid)),
        }
    }
    let mut messages = Vec::new();
    let mut acks = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while messages.len() < sent.len() || acks.len() < want_acks.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = rx.recv_timeout(left).unwrap_or_else(|_| {
            panic!(
                "{prefix}: got {:?} and acks {acks:?} only",
                messages
                    .iter()
                    .map(|m: &Event| &m.topic)
                    .collect::<Vec<_>>()
            )
        });
        match e.command {
            Command::Publish | Command::PubRel if e.topic.is_some() => messages.push(e),
            Command::PubAck | Command::PubComp => acks.push((e.command as u8, e.mid)),
            Command::Disconnect => panic!("{prefix}: connection lost: {e:?}"),
            _ => {}
        }
    }
    for (topic, payload, qos) in &sent {
        let m = messages
            .iter()
            .find(|m| m.topic.as_deref() == Some(topic.as_str()))
            .unwrap_or_else(|| panic!("no message on {topic}"));
        assert!(m.payload == *payload, "{topic}: wrong payload");
        assert_eq!(m.qos, Some(*qos), "{topic}");
    }
    acks.sort();
    want_acks.sort();
    assert_eq!(acks, want_acks, "{prefix}");
}

/// Disconnect cleanly: the DISCONNECT callback reports a requested close.
fn clean_disconnect(client: &Client, rx: &Receiver<Event>) {
    client.disconnect().unwrap();
    let bye = expect(rx, "DISCONNECT", |e| e.command == Command::Disconnect);
    assert_eq!(bye.error, None);
}

fn expect_lost(rx: &Receiver<Event>, what: &str) -> Event {
    let e = expect(rx, what, |e| e.command == Command::Disconnect);
    assert!(e.error.is_some(), "{what}: {e:?}");
    e
}

// ---- ws and wss ------------------------------------------------------------------------

#[test]
fn qos_0_1_2_over_ws() {
    let broker = WsBroker::start("/mqtt");
    let (client, rx) = recorded_client("wired-ws");
    let uri = format!("ws://{HOST}:{}/mqtt", broker.port());
    assert!(!client.connect_uri(&uri, 30).unwrap());
    client.loop_start(None).unwrap();
    round_trip(&client, &rx, "ws");
    clean_disconnect(&client, &rx);
    client.close();
}

#[test]
fn qos_0_1_2_over_wss() {
    let pki = pki_for_loopback();
    let broker = WsBroker::start_tls("/mqtt", &pki.path("server.pem"), &pki.path("server.key"));
    let (client, rx) = recorded_client("wired-wss");
    let ca = pki.path("ca.pem");
    client.set_tls(Some(&ca_only(&ca))).unwrap();
    let uri = format!("wss://{HOST}:{}/mqtt", broker.port());
    client.connect_uri(&uri, 30).unwrap();
    client.loop_start(None).unwrap();
    round_trip(&client, &rx, "wss");
    clean_disconnect(&client, &rx);
    client.close();
}

#[test]
fn wss_checks_the_certificate() {
    // TLS really runs under the WebSocket: a certificate from an unknown CA fails.
    let pki = pki_for_loopback();
    let other = common::pki::Pki::new("other");
    let broker = WsBroker::start_tls("/mqtt", &pki.path("server.pem"), &pki.path("server.key"));
    let (client, _rx) = recorded_client("wired-wss-untrusted");
    let ca = other.path("ca.pem");
    client.set_tls(Some(&ca_only(&ca))).unwrap();
    let uri = format!("wss://{HOST}:{}/mqtt", broker.port());
    assert_eq!(client.connect_uri(&uri, 30), Err(Error::TlsNotTrusted));
}

#[test]
fn the_ws_path_is_the_http_path() {
    let broker = WsBroker::start("/custom/path");
    let (client, rx) = recorded_client("wired-ws-path");
    // The default path (/mqtt) is refused by this server with HTTP 400.
    let started = Instant::now();
    let default = format!("ws://{HOST}:{}", broker.port());
    assert_eq!(
        client.connect_uri(&default, 30),
        Err(Error::ProtocolViolation)
    );
    assert!(started.elapsed() < TIMEOUT / 2, "not a timeout");
    let uri = format!("ws://{HOST}:{}/custom/path", broker.port());
    client.connect_uri(&uri, 30).unwrap();
    client.loop_start(None).unwrap();
    round_trip(&client, &rx, "path");
    client.close();
}

#[test]
fn ws_to_an_ipv6_literal() {
    let broker = WsBroker::start_at("::1", 0, "/mqtt");
    let (client, rx) = recorded_client("wired-ws-v6");
    let uri = format!("ws://[::1]:{}/mqtt", broker.port());
    client.connect_uri(&uri, 30).unwrap();
    client.loop_start(None).unwrap();
    round_trip(&client, &rx, "v6");
    client.close();
}

/// poll(2) on the client's event descriptor for at most `timeout`.
fn poll_fd(fd: i32, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

/// Drive `client` from this thread only: poll its descriptor, honour its
/// timeout, run one turn; stop when `done` says so (within `TIMEOUT`).
fn drive(client: &Client, fd: i32, done: &mut dyn FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "the external loop made no progress"
        );
        let wait = client
            .next_timeout()
            .unwrap()
            .unwrap_or(Duration::from_millis(100))
            .min(Duration::from_millis(100));
        poll_fd(fd, wait);
        client.run_once(Duration::ZERO).unwrap();
    }
}

/// On the external loop only: `connect_uri_async(uri)`, subscribe, a QoS 1
/// message to ourselves (its PUBACK and its copy back). Returns the client's
/// event descriptor and the events seen; no connection was lost.
fn external_round_trip(
    client: &Client,
    rx: &Receiver<Event>,
    uri: &str,
    prefix: &str,
) -> (i32, Vec<Event>) {
    let fd = client.event_fd().unwrap();
    client.connect_uri_async(uri, 30).unwrap();
    let mut seen = Vec::new();
    let take = |want: Command, seen: &mut Vec<Event>| {
        seen.extend(rx.try_iter());
        seen.iter().any(|e| e.command == want)
    };
    drive(client, fd, &mut || take(Command::ConnAck, &mut seen));
    client
        .subscribe(&[(&format!("{prefix}/#"), QoS::AtLeastOnce)])
        .unwrap();
    drive(client, fd, &mut || take(Command::SubAck, &mut seen));
    let topic = format!("{prefix}/1");
    let mid = client
        .publish(&topic, b"polled", QoS::AtLeastOnce, false)
        .unwrap();
    drive(client, fd, &mut || {
        take(Command::PubAck, &mut seen);
        seen.iter()
            .any(|e| e.command == Command::PubAck && e.mid == mid)
            && seen
                .iter()
                .any(|e| e.topic.as_deref() == Some(topic.as_str()) && e.payload == b"polled")
    });
    assert!(
        !seen.iter().any(|e| e.command == Command::Disconnect),
        "{seen:?}"
    );
    (fd, seen)
}

#[test]
fn the_external_loop_over_ws() {
    let broker = WsBroker::start("/mqtt");
    let (client, rx) = recorded_client("wired-ws-external");
    let uri = format!("ws://{HOST}:{}/mqtt", broker.port());
    external_round_trip(&client, &rx, &uri, "ext");
    client.close();
}

#[test]
fn the_external_loop_over_wss() {
    let pki = pki_for_loopback();
    let broker = WsBroker::start_tls("/mqtt", &pki.path("server.pem"), &pki.path("server.key"));
    let (client, rx) = recorded_client("wired-wss-external");
    let ca = pki.path("ca.pem");
    client.set_tls(Some(&ca_only(&ca))).unwrap();
    let uri = format!("wss://{HOST}:{}/mqtt", broker.port());
    external_round_trip(&client, &rx, &uri, "extwss");
    client.close();
}

#[test]
fn the_external_loop_through_either_proxy() {
    // ws through tinyproxy and through microsocks: the proxy's exchange, the
    // upgrade and MQTT all advance on run_once alone.
    let broker = WsBroker::start("/mqtt");
    let uri = format!("ws://{HOST}:{}/mqtt", broker.port());
    for scheme in ["http", "socks5"] {
        let proxy = match scheme {
            "http" => RealProxy::tinyproxy(None),
            _ => RealProxy::microsocks(None),
        };
        let (client, rx) = recorded_client(&format!("wired-external-{scheme}"));
        client.set_proxy(Some(&proxy.uri(scheme, None))).unwrap();
        let (fd, mut seen) = external_round_trip(&client, &rx, &uri, &format!("ext-{scheme}"));
        // The connection runs through the proxy: without it, it is lost; the
        // turn that notices returns the error, the DISCONNECT callback has it.
        drop(proxy);
        let deadline = Instant::now() + TIMEOUT;
        let error = loop {
            assert!(
                Instant::now() < deadline,
                "{scheme}: the loss went unnoticed"
            );
            poll_fd(fd, Duration::from_millis(100));
            if let Err(e) = client.run_once(Duration::ZERO) {
                break e;
            }
        };
        seen.extend(rx.try_iter());
        let lost = seen
            .iter()
            .find(|e| e.command == Command::Disconnect)
            .expect("a DISCONNECT callback");
        assert_eq!(lost.error, Some(error), "{scheme}: {lost:?}");
        assert!(!client.is_connected(), "{scheme}");
        client.close();
    }
}

// ---- automatic reconnection -----------------------------------------------------------

/// The WebSocket `broker` dies under a live `scheme` connection and `restart`
/// starts it again on the same port: the client comes back by itself and a
/// round trip passes (aedes forgot the subscription: round_trip subscribes
/// again).
fn comes_back_after_a_ws_broker_restart(
    id: &str,
    scheme: &str,
    broker: WsBroker,
    ca: Option<&std::path::Path>,
    restart: impl FnOnce(u16) -> WsBroker,
) {
    let port = broker.port();
    let (client, rx) = recorded_client(id);
    client
        .set_reconnect(Some((
            Duration::from_millis(50),
            Duration::from_millis(200),
        )))
        .unwrap();
    if let Some(ca) = ca {
        client.set_tls(Some(&ca_only(ca))).unwrap();
    }
    client
        .connect_uri(&format!("{scheme}://{HOST}:{port}/mqtt"), 30)
        .unwrap();
    client.loop_start(None).unwrap();
    drop(broker);
    expect_lost(&rx, "DISCONNECT after the broker died");
    let _again = restart(port);
    expect(&rx, "CONNACK after the restart", |e| {
        e.command == Command::ConnAck
    });
    assert!(client.is_connected());
    round_trip(&client, &rx, &format!("{scheme}-again"));
    client.close();
}

#[test]
fn reconnects_by_itself_over_ws_after_the_broker_restarts() {
    comes_back_after_a_ws_broker_restart(
        "wired-ws-reconnect",
        "ws",
        WsBroker::start("/mqtt"),
        None,
        |port| WsBroker::start_at(HOST, port, "/mqtt"),
    );
}

/// Through each kind of proxy (HTTP CONNECT, SOCKS5), the broker restarts
/// behind it: the client comes back by itself, through the proxy.
#[test]
fn reconnects_by_itself_through_either_proxy_after_the_broker_restarts() {
    let broker = Broker::start();
    for (scheme, proxy) in [
        ("http", RealProxy::tinyproxy(None)),
        ("socks5", RealProxy::microsocks(None)),
    ] {
        let (client, rx) = recorded_client(&format!("wired-{scheme}-reconnect"));
        client
            .set_reconnect(Some((
                Duration::from_millis(50),
                Duration::from_millis(200),
            )))
            .unwrap();
        client.set_proxy(Some(&proxy.uri(scheme, None))).unwrap();
        client.connect(broker.host(), 30, broker.port()).unwrap();
        client.loop_start(None).unwrap();
        broker.restart();
        expect_lost(&rx, "DISCONNECT after the broker restarted");
        expect(&rx, "CONNACK after the restart", |e| {
            e.command == Command::ConnAck
        });
        round_trip(&client, &rx, &format!("{scheme}-again"));
        // The connection runs through the proxy: without it, it is lost.
        drop(proxy);
        expect_lost(&rx, "DISCONNECT when the proxy went away");
        client.close();
    }
}

#[test]
fn reconnects_by_itself_over_wss_after_the_broker_restarts() {
    let pki = pki_for_loopback();
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    // Only wss is spoken there: the new connection is TLS + WebSocket again.
    comes_back_after_a_ws_broker_restart(
        "wired-wss-reconnect",
        "wss",
        WsBroker::start_tls("/mqtt", &cert, &key),
        Some(&pki.path("ca.pem")),
        |port| WsBroker::start_tls_at(port, "/mqtt", &cert, &key),
    );
}

#[test]
fn reconnects_by_itself_when_the_proxy_comes_back() {
    // Each kind of proxy dies under a live connection, then starts again on the
    // same port: the client, retrying on its own, gets back through it.
    let broker = Broker::start();
    for scheme in ["http", "socks5"] {
        let start = |port| match scheme {
            "http" => RealProxy::tinyproxy_at(port, None),
            _ => RealProxy::microsocks_at(port, None),
        };
        let proxy = start(None);
        let port = proxy.port();
        let (client, rx) = recorded_client(&format!("wired-proxy-back-{scheme}"));
        client
            .set_reconnect(Some((
                Duration::from_millis(50),
                Duration::from_millis(200),
            )))
            .unwrap();
        client.set_proxy(Some(&proxy.uri(scheme, None))).unwrap();
        client
            .connect_uri(&format!("mqtt://{HOST}:{}", broker.port()), 30)
            .unwrap();
        client.loop_start(None).unwrap();
        drop(proxy);
        expect_lost(&rx, "DISCONNECT when the proxy died");
        let again = start(Some(port));
        expect(&rx, "CONNACK through the restarted proxy", |e| {
            e.command == Command::ConnAck
        });
        round_trip(&client, &rx, &format!("back-{scheme}"));
        // The new connection runs through the proxy too.
        drop(again);
        expect_lost(&rx, "DISCONNECT when the proxy went away again");
        client.close();
    }
}

// ---- proxies ---------------------------------------------------------------------------

/// A round trip through `proxy`, then proof that the traffic went through it:
/// stopping the proxy loses the connection.
fn through_proxy(client: &Client, rx: &Receiver<Event>, proxy: RealProxy, prefix: &str) {
    client.loop_start(None).unwrap();
    round_trip(client, rx, prefix);
    drop(proxy);
    expect_lost(rx, "DISCONNECT when the proxy went away");
    client.close();
}

#[test]
fn mqtt_through_tinyproxy() {
    let broker = Broker::start();
    let proxy = RealProxy::tinyproxy(None);
    let (client, rx) = recorded_client("wired-tinyproxy");
    client.set_proxy(Some(&proxy.uri("http", None))).unwrap();
    client
        .connect_uri(&format!("mqtt://{HOST}:{}", broker.port()), 30)
        .unwrap();
    through_proxy(&client, &rx, proxy, "tiny");
}

#[test]
fn ws_through_tinyproxy_with_basic_auth() {
    let broker = WsBroker::start("/mqtt");
    // (tinyproxy's configuration takes plain words only.)
    let creds = ("wired", "s3cret");
    let proxy = RealProxy::tinyproxy(Some(creds));
    let (client, rx) = recorded_client("wired-tinyproxy-auth");
    client
        .set_proxy(Some(&proxy.uri("http", Some(creds))))
        .unwrap();
    client
        .connect_uri(&format!("ws://{HOST}:{}/mqtt", broker.port()), 30)
        .unwrap();
    through_proxy(&client, &rx, proxy, "tinyauth");
}

/// A server list and a proxy together: each entry is the proxy's target.
#[test]
fn a_server_list_goes_through_the_proxy() {
    let broker = Broker::start();
    let proxy = RealProxy::microsocks(None);
    let (client, rx) = recorded_client("wired-servers-socks");
    client.set_proxy(Some(&proxy.uri("socks5", None))).unwrap();
    client
        .set_servers(&[&format!("mqtt://{HOST}:{}", broker.port())])
        .unwrap();
    client.connect("", 30, 0).unwrap();
    through_proxy(&client, &rx, proxy, "servers-socks");
}

#[test]
fn mqtt_through_microsocks_by_name() {
    let broker = Broker::start();
    let proxy = RealProxy::microsocks(None);
    let (client, rx) = recorded_client("wired-socks");
    client.set_proxy(Some(&proxy.uri("socks5", None))).unwrap();
    // The name goes to the proxy unresolved (address type 3).
    client.connect(loopback_name(), 30, broker.port()).unwrap();
    through_proxy(&client, &rx, proxy, "socks");
}

#[test]
fn wss_through_microsocks_with_credentials() {
    // TLS starts once the SOCKS5 tunnel is up, the WebSocket upgrade after it.
    let pki = pki_for_loopback();
    let broker = WsBroker::start_tls("/mqtt", &pki.path("server.pem"), &pki.path("server.key"));
    // `:`, `@`, `%` and a space travel percent-encoded in the URI.
    let creds = ("so:ck", "p@ss w%rd");
    let proxy = RealProxy::microsocks(Some(creds));
    let (client, rx) = recorded_client("wired-socks-wss");
    let ca = pki.path("ca.pem");
    client.set_tls(Some(&ca_only(&ca))).unwrap();
    client
        .set_proxy(Some(&proxy.uri("socks5", Some(creds))))
        .unwrap();
    client
        .connect_uri(
            &format!("wss://{}:{}/mqtt", loopback_name(), broker.port()),
            30,
        )
        .unwrap();
    through_proxy(&client, &rx, proxy, "sockswss");
}

#[test]
fn mqtts_through_tinyproxy() {
    let pki = pki_for_loopback();
    let broker = tls_broker(&pki, "server", false);
    let proxy = RealProxy::tinyproxy(None);
    let (client, rx) = recorded_client("wired-tiny-mqtts");
    let ca = pki.path("ca.pem");
    client.set_tls(Some(&ca_only(&ca))).unwrap();
    client.set_proxy(Some(&proxy.uri("http", None))).unwrap();
    client
        .connect_uri(&format!("mqtts://{HOST}:{}", broker.tls_port()), 30)
        .unwrap();
    through_proxy(&client, &rx, proxy, "tinytls");
}

#[test]
fn a_refusing_proxy_is_a_proxy_error_blocking_and_async() {
    let broker = Broker::start();
    let creds = ("user", "right");
    let http = RealProxy::tinyproxy(Some(creds));
    let socks = RealProxy::microsocks(Some(creds));
    let (client, rx) = recorded_client("wired-refused");
    // Wrong credentials: HTTP 407, SOCKS5 authentication failure.
    for uri in [
        http.uri("http", Some(("user", "wrong"))),
        http.uri("http", None),
        socks.uri("socks5", Some(("user", "wrong"))),
        socks.uri("socks5", None),
    ] {
        client.set_proxy(Some(&uri)).unwrap();
        let started = Instant::now();
        assert_eq!(
            client.connect(broker.host(), 30, broker.port()),
            Err(Error::Proxy),
            "{uri}"
        );
        assert!(started.elapsed() < TIMEOUT / 2, "{uri}: not a timeout");
    }
    // The same through connect_async: the DISCONNECT callback carries it.
    client.loop_start(None).unwrap();
    client
        .set_proxy(Some(&http.uri("http", Some(("user", "wrong")))))
        .unwrap();
    client
        .connect_async(broker.host(), 30, broker.port())
        .unwrap();
    let e = expect(&rx, "DISCONNECT", |e| e.command == Command::Disconnect);
    assert_eq!(e.error, Some(Error::Proxy));
    client
        .set_proxy(Some(&socks.uri("socks5", Some(("user", "wrong")))))
        .unwrap();
    client
        .connect_uri_async(&format!("mqtt://{HOST}:{}", broker.port()), 30)
        .unwrap();
    let e = expect(&rx, "DISCONNECT", |e| e.command == Command::Disconnect);
    assert_eq!(e.error, Some(Error::Proxy));
    // The right credentials work on the same client.
    client
        .set_proxy(Some(&http.uri("http", Some(creds))))
        .unwrap();
    client
        .connect_async(broker.host(), 30, broker.port())
        .unwrap();
    expect(&rx, "CONNACK", |e| e.command == Command::ConnAck);
    client.close();
}

#[test]
fn a_proxy_that_cannot_reach_the_broker_is_a_proxy_error() {
    // tinyproxy answers 5xx, microsocks a non-zero reply, for a closed port.
    let closed = free_port();
    let http = RealProxy::tinyproxy(None);
    let socks = RealProxy::microsocks(None);
    let (client, _rx) = recorded_client("wired-unreachable");
    for uri in [http.uri("http", None), socks.uri("socks5", None)] {
        client.set_proxy(Some(&uri)).unwrap();
        assert_eq!(client.connect(HOST, 30, closed), Err(Error::Proxy), "{uri}");
    }
}

/// A one-connection TCP server on loopback: reads the client's request head,
/// answers `reply`, then (`then`) more bytes; holds the connection until the
/// client closes it. Plays a broken proxy or WebSocket server.
fn fault_server(
    reply: impl FnOnce(&str) -> Vec<u8> + Send + 'static,
    then: Vec<u8>,
) -> (u16, thread::JoinHandle<()>) {
    let listener = TcpListener::bind((HOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        s.set_read_timeout(Some(TIMEOUT * 2)).unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && !head.ends_with(&[5, 1, 0]) {
            match s.read(&mut b) {
                Ok(1) => head.push(b[0]),
                _ => return,
            }
        }
        let _ = s.write_all(&reply(&String::from_utf8_lossy(&head)));
        let _ = s.write_all(&then);
        let mut sink = [0u8; 1024];
        while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
    });
    (port, handle)
}

#[test]
fn a_proxy_answering_garbage_is_a_proxy_error() {
    let broker = Broker::start();
    for (scheme, garbage) in [
        ("http", b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec()),
        ("socks5", b"\x04\x5a".to_vec()),
    ] {
        let (port, server) = fault_server(move |_| garbage, Vec::new());
        let (client, _rx) = recorded_client("wired-garbage");
        client
            .set_proxy(Some(&format!("{scheme}://{HOST}:{port}")))
            .unwrap();
        assert_eq!(
            client.connect(broker.host(), 30, broker.port()),
            Err(Error::Proxy),
            "{scheme}"
        );
        client.close();
        server.join().unwrap();
    }
}

// ---- broken WebSocket servers ----------------------------------------------------------

/// The `Sec-WebSocket-Accept` for the key in a request head.
fn accept_of(head: &str) -> String {
    let key = head
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .expect("a Sec-WebSocket-Key");
    accept_for_key(key.trim())
}

fn switching(accept: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
    .into_bytes()
}

/// A broken server's answer ends a blocking connect with a protocol error, and
/// an async one with the same error in the DISCONNECT callback: never a timeout.
fn ws_fault(reply: fn(&str) -> Vec<u8>, then: &[u8]) {
    for asynchronous in [false, true] {
        let (port, server) = fault_server(reply, then.to_vec());
        let (client, rx) = recorded_client("wired-ws-fault");
        client.set_connect_timeout(TIMEOUT * 2).unwrap();
        let uri = format!("ws://{HOST}:{port}/mqtt");
        let started = Instant::now();
        if asynchronous {
            client.loop_start(None).unwrap();
            client.connect_uri_async(&uri, 30).unwrap();
            let e = expect(&rx, "DISCONNECT", |e| e.command == Command::Disconnect);
            assert_eq!(e.error, Some(Error::ProtocolViolation));
        } else {
            assert_eq!(client.connect_uri(&uri, 30), Err(Error::ProtocolViolation));
        }
        assert!(started.elapsed() < TIMEOUT, "not a timeout");
        assert!(!client.is_connected());
        client.close();
        server.join().unwrap();
    }
}

#[test]
fn a_ws_server_answering_200_is_a_protocol_error() {
    ws_fault(
        |_| b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
        &[],
    );
}

#[test]
fn a_wrong_sec_websocket_accept_is_a_protocol_error() {
    ws_fault(|_| switching("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), &[]);
}

#[test]
fn a_text_frame_is_a_protocol_error() {
    // A correct upgrade, then a text frame instead of the binary CONNACK.
    ws_fault(|head| switching(&accept_of(head)), &[0x81, 2, b'h', b'i']);
}

#[test]
fn an_oversize_frame_is_a_protocol_error() {
    // A binary frame announcing 2^40 bytes.
    let mut frame = vec![0x82, 127];
    frame.extend_from_slice(&(1u64 << 40).to_be_bytes());
    frame.extend_from_slice(&[0x20, 2, 0, 0]);
    let frame: &'static [u8] = frame.leak();
    ws_fault(|head| switching(&accept_of(head)), frame);
}

#[test]
fn a_close_frame_mid_connack_is_a_protocol_error() {
    // A correct upgrade, half a CONNACK in a binary frame, then a close frame.
    ws_fault(
        |head| switching(&accept_of(head)),
        &[0x82, 1, 0x20, 0x88, 2, 0x03, 0xE8],
    );
}

/// One frame from the client (masked, as it must be): its unmasked payload.
fn read_client_frame(s: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head)?;
    assert!(head[1] & 0x80 != 0, "client frames are masked");
    let len = match head[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            s.read_exact(&mut l)?;
            u64::from(u16::from_be_bytes(l))
        }
        127 => {
            let mut l = [0u8; 8];
            s.read_exact(&mut l)?;
            u64::from_be_bytes(l)
        }
        n => u64::from(n),
    };
    let mut mask = [0u8; 4];
    s.read_exact(&mut mask)?;
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload)?;
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    Ok(payload)
}

/// A WebSocket server that upgrades and accepts the CONNECT, waits for the
/// client's first PUBLISH, then sends `fault`. The client must end the live
/// connection with a protocol error (not a timeout), close the TCP
/// connection by itself, and deliver nothing of what the fault carried.
fn live_ws_fault(id: &str, fault: Vec<u8>) {
    let listener = TcpListener::bind((HOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || -> bool {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(TIMEOUT * 2)).unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).unwrap();
            head.push(b[0]);
        }
        s.write_all(&switching(&accept_of(&String::from_utf8_lossy(&head))))
            .unwrap();
        let connect = read_client_frame(&mut s).unwrap();
        assert_eq!(connect[0], 0x10, "CONNECT first");
        s.write_all(&[0x82, 4, 0x20, 2, 0, 0]).unwrap();
        while read_client_frame(&mut s).unwrap()[0] & 0xF0 != 0x30 {}
        s.write_all(&fault).unwrap();
        // Whatever the client says now (a close frame, say), then its FIN.
        let mut sink = [0u8; 1024];
        loop {
            match s.read(&mut sink) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    });
    let (client, rx) = recorded_client(id);
    client
        .connect_uri(&format!("ws://{HOST}:{port}/mqtt"), 30)
        .unwrap();
    client.loop_start(None).unwrap();
    client
        .publish("trigger", b"go", QoS::AtMostOnce, false)
        .unwrap();
    let started = Instant::now();
    let lost = expect_lost(&rx, "DISCONNECT after the fault");
    assert_eq!(lost.error, Some(Error::ProtocolViolation));
    assert!(started.elapsed() < TIMEOUT, "not a timeout");
    assert!(!client.is_connected());
    assert!(server.join().unwrap(), "the client closed the connection");
    assert!(
        !events::drain(&rx)
            .iter()
            .any(|e| e.command == Command::Publish),
        "a message delivered from the fault"
    );
    client.close();
}

#[test]
fn a_close_frame_mid_publish_ends_the_connection_with_an_error() {
    // The first 10 bytes of a 22-byte PUBLISH in a binary frame, then a close.
    let mut fault = vec![0x82, 10, 0x30, 20, 0, 5];
    fault.extend_from_slice(b"mid/xh");
    fault.extend_from_slice(&[0x88, 2, 0x03, 0xE8]);
    live_ws_fault("wired-ws-close-mid", fault);
}

#[test]
fn a_text_frame_on_a_live_connection_ends_it_with_an_error() {
    // A whole PUBLISH, but in a text frame.
    let mut fault = vec![0x81, 9, 0x30, 7, 0, 3];
    fault.extend_from_slice(b"t/xhi");
    live_ws_fault("wired-ws-text-live", fault);
}

#[test]
fn an_oversize_frame_on_a_live_connection_ends_it_with_an_error() {
    // A binary frame announcing 2^40 bytes, then the start of its payload.
    let mut fault = vec![0x82, 127];
    fault.extend_from_slice(&(1u64 << 40).to_be_bytes());
    fault.extend_from_slice(&[0x30, 8, 0, 3]);
    live_ws_fault("wired-ws-oversize-live", fault);
}

// ---- URIs ------------------------------------------------------------------------------

/// A resolver that sends every name to `to`, recording the (name, port) asked.
/// The (name, port) pairs a resolver was asked for.
type Asked = Arc<std::sync::Mutex<Vec<(String, u16)>>>;

fn redirecting(to: SocketAddr) -> (mqtt::Resolver, Asked) {
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = asked.clone();
    let resolver: mqtt::Resolver = Arc::new(move |host: &str, port: u16| {
        log.lock().unwrap().push((host.to_owned(), port));
        Ok(vec![to])
    });
    (resolver, asked)
}

#[test]
fn connect_uri_with_each_scheme_and_its_default_port() {
    let broker = Broker::start();
    let pki = pki_for_loopback();
    let tls = tls_broker(&pki, "server", false);
    let ws = WsBroker::start("/mqtt");
    let wss = WsBroker::start_tls("/mqtt", &pki.path("server.pem"), &pki.path("server.key"));
    let ca = pki.path("ca.pem");
    for (uri, default_port, to) in [
        ("mqtt://localhost", 1883, broker.addr()),
        ("mqtts://localhost", 8883, loopback(tls.tls_port())),
        ("ws://localhost", 80, loopback(ws.port())),
        ("wss://localhost/mqtt", 443, loopback(wss.port())),
    ] {
        let (client, rx) = recorded_client("wired-scheme");
        client.set_tls(Some(&ca_only(&ca))).unwrap();
        let (resolver, asked) = redirecting(to);
        client.set_resolver(Some(resolver));
        client
            .connect_uri(uri, 30)
            .unwrap_or_else(|e| panic!("{uri}: {e:?}"));
        assert_eq!(
            asked.lock().unwrap().as_slice(),
            &[("localhost".to_owned(), default_port)],
            "{uri}"
        );
        client.loop_start(None).unwrap();
        let mid = client
            .publish("scheme/x", uri.as_bytes(), QoS::AtLeastOnce, false)
            .unwrap();
        expect(&rx, "PUBACK", |e| {
            e.command == Command::PubAck && e.mid == mid
        });
        clean_disconnect(&client, &rx);
        client.close();
    }
    // mqtt:// never uses TLS, even when TLS options are set; mqtts:// always does.
    let (client, _rx) = recorded_client("wired-scheme-plain");
    client.set_tls(Some(&ca_only(&ca))).unwrap();
    client
        .connect_uri(&format!("mqtt://{HOST}:{}", broker.port()), 30)
        .unwrap();
    client.close();
    let (client, _rx) = recorded_client("wired-scheme-tls");
    client.set_tls(Some(&ca_only(&ca))).unwrap();
    assert!(
        client
            .connect_uri(&format!("mqtts://{HOST}:{}", broker.port()), 30)
            .is_err(),
        "TLS to a plain listener"
    );
    client.close();
    // Without set_tls, mqtts:// checks against the system's roots, which do not
    // hold the test CA (or there are none: TlsCa).
    let (client, _rx) = recorded_client("wired-scheme-system-roots");
    let err = client
        .connect_uri(&format!("mqtts://{HOST}:{}", tls.tls_port()), 30)
        .unwrap_err();
    assert!(
        matches!(err, Error::TlsNotTrusted | Error::TlsCa),
        "{err:?}"
    );
    client.close();
}

#[test]
fn reconnect_after_connect_uri_goes_to_the_same_uri() {
    let ws = WsBroker::start("/mqtt");
    let (client, rx) = recorded_client("wired-uri-reconnect");
    client
        .connect_uri(&format!("ws://{HOST}:{}/mqtt", ws.port()), 30)
        .unwrap();
    client.loop_start(None).unwrap();
    clean_disconnect(&client, &rx);
    // Only a WebSocket listener is there: a plain MQTT CONNECT would fail.
    client.reconnect().unwrap();
    round_trip(&client, &rx, "reconnected");
    clean_disconnect(&client, &rx);
    // A plain connect() is MQTT over TCP again: the WebSocket listener refuses it.
    assert!(client.connect(HOST, 30, ws.port()).is_err());
    client.close();
}

const MALFORMED: &[&str] = &[
    "",
    "localhost:1883",
    "tcp://localhost:1883",
    "http://localhost",
    "mqtt://",
    "mqtt://:1883",
    "mqtt://localhost:65536",
    "mqtt://localhost:99999999",
    "mqtt://localhost:port",
    "ws://[::1",
    "ws://[::1]x:80",
    "mqtt://user:pass@localhost",
    "mqtt://localhost/path",
    "ws://local host/mqtt",
];

#[test]
fn malformed_uris_are_rejected_and_change_nothing() {
    let broker = Broker::start();
    let (client, rx) = recorded_client("wired-malformed");
    for uri in MALFORMED {
        assert_eq!(
            client.connect_uri(uri, 30),
            Err(Error::InvalidArgument),
            "{uri:?}"
        );
        assert_eq!(
            client.connect_uri_async(uri, 30),
            Err(Error::InvalidArgument),
            "{uri:?}"
        );
    }
    // Nothing was set: there is still no broker to reconnect to.
    assert_eq!(client.reconnect(), Err(Error::NotConnected));
    assert!(events::drain(&rx).is_empty(), "no callback, nothing sent");
    // After a good connect, a malformed URI leaves the target alone.
    client
        .connect_uri(&format!("mqtt://{HOST}:{}", broker.port()), 30)
        .unwrap();
    client.loop_start(None).unwrap();
    clean_disconnect(&client, &rx);
    for uri in MALFORMED {
        assert_eq!(client.connect_uri(uri, 30), Err(Error::InvalidArgument));
    }
    client.reconnect().unwrap();
    assert!(client.is_connected());
    client.close();
}

#[test]
fn malformed_proxy_uris_are_rejected_and_change_nothing() {
    let broker = Broker::start();
    let (client, _rx) = recorded_client("wired-proxy-malformed");
    for uri in [
        "",
        "ftp://h:21",
        "http://h",
        "http://:8080",
        "socks5://h:70000",
        "http://[::1:8080",
        "http://h:8080/path",
        "socks5://%zz@h:1080",
    ] {
        assert_eq!(
            client.set_proxy(Some(uri)),
            Err(Error::InvalidArgument),
            "{uri}"
        );
    }
    // None of them was installed: the direct connection works.
    client.connect(broker.host(), 30, broker.port()).unwrap();
    client.disconnect().unwrap();
    client.close();
    // A proxy that is not there stays set through a malformed one.
    let (client, _rx) = recorded_client("wired-proxy-kept");
    let dead = free_port();
    client
        .set_proxy(Some(&format!("http://{HOST}:{dead}")))
        .unwrap();
    assert_eq!(
        client.set_proxy(Some("gopher://h:70")),
        Err(Error::InvalidArgument)
    );
    assert_eq!(
        client.connect(broker.host(), 30, broker.port()),
        Err(Error::ConnectFailed)
    );
    client.set_proxy(None).unwrap();
    client.connect(broker.host(), 30, broker.port()).unwrap();
    client.close();
}

#[test]
fn a_silent_proxy_or_ws_server_is_bounded_by_the_connect_timeout() {
    // Each accepts the connection, reads the request and never answers.
    for scheme in ["http", "socks5", "ws"] {
        for asynchronous in [false, true] {
            let (port, server) = fault_server(|_| Vec::new(), Vec::new());
            let (client, rx) = recorded_client("wired-silent");
            client
                .set_connect_timeout(Duration::from_millis(300))
                .unwrap();
            let ws_uri = format!("ws://{HOST}:{port}/mqtt");
            if scheme != "ws" {
                client
                    .set_proxy(Some(&format!("{scheme}://{HOST}:{port}")))
                    .unwrap();
            }
            let started = Instant::now();
            let error = if asynchronous {
                client.loop_start(None).unwrap();
                match scheme {
                    "ws" => client.connect_uri_async(&ws_uri, 30).unwrap(),
                    _ => client.connect_async(HOST, 30, 1).unwrap(),
                }
                expect(&rx, "DISCONNECT", |e| e.command == Command::Disconnect).error
            } else {
                match scheme {
                    "ws" => client.connect_uri(&ws_uri, 30),
                    _ => client.connect(HOST, 30, 1),
                }
                .err()
            };
            assert_eq!(
                error,
                Some(Error::Timeout),
                "{scheme}, async: {asynchronous}"
            );
            assert!(started.elapsed() < TIMEOUT, "{scheme}");
            client.close();
            server.join().unwrap();
        }
    }
}

#[test]
fn many_clients_on_one_reactor_over_ws_and_through_a_proxy() {
    let broker = WsBroker::start("/mqtt");
    let proxy = RealProxy::tinyproxy(None);
    let reactor = mqtt::Reactor::new().unwrap();
    reactor.start().unwrap();
    let uri = format!("ws://{HOST}:{}/mqtt", broker.port());
    let clients: Vec<(Client, Receiver<Event>)> = (0..12)
        .map(|i| {
            let (client, rx) = recorded_client(&format!("wired-reactor-{i}"));
            if i % 2 == 1 {
                client.set_proxy(Some(&proxy.uri("http", None))).unwrap();
            }
            client.add_to_reactor(&reactor, None).unwrap();
            client.connect_uri_async(&uri, 30).unwrap();
            (client, rx)
        })
        .collect();
    for (i, (client, rx)) in clients.iter().enumerate() {
        expect(rx, "CONNACK", |e| e.command == Command::ConnAck);
        client
            .subscribe(&[(&format!("reactor/{i}"), QoS::AtLeastOnce)])
            .unwrap();
    }
    for (i, (client, rx)) in clients.iter().enumerate() {
        expect(rx, "SUBACK", |e| e.command == Command::SubAck);
        client
            .publish(
                &format!("reactor/{i}"),
                format!("m{i}").as_bytes(),
                QoS::AtLeastOnce,
                false,
            )
            .unwrap();
    }
    for (i, (_, rx)) in clients.iter().enumerate() {
        let m = events::message_on(rx, &format!("reactor/{i}"));
        assert_eq!(m.payload, format!("m{i}").into_bytes());
    }
    // The odd ones run through the proxy: it goes away, they are lost.
    drop(proxy);
    for (i, (client, rx)) in clients.iter().enumerate() {
        if i % 2 == 1 {
            expect_lost(rx, "DISCONNECT when the proxy went away");
        } else {
            assert!(client.is_connected(), "client {i}");
        }
    }
    for (client, _) in &clients {
        client.close();
    }
    reactor.stop().unwrap();
}

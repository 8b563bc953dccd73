//! Self-tests of the shared harness in tests/common.

mod common;

use common::{
    Broker, Direction, FaultProxy, PeerConn, ScriptedPeer, TIMEOUT, connect_packet, loopback,
    wait_until,
};
use mqtt::protocol::codec::{
    ConnAck, Connect, ConnectReturnCode, Packet, Publish, QoS, SubAck, Subscribe,
};
use std::time::{Duration, Instant};

const SHORT: Duration = Duration::from_millis(300);

fn accepted() -> ConnAck<'static> {
    ConnAck::new(false, ConnectReturnCode::Accepted)
}

#[test]
fn broker_accepts_a_raw_connect() {
    let broker = Broker::start();
    assert_eq!(broker.host(), "127.0.0.1");
    let (mut conn, ack) = PeerConn::connect_mqtt(broker.port(), &connect_packet("harness-raw"));
    assert_eq!(ack, accepted());
    conn.send_packet(&Packet::PingReq);
    assert_eq!(conn.expect_packet(TIMEOUT).packet(), Packet::PingResp);
    conn.send_packet(&Packet::disconnect());
    conn.expect_closed(TIMEOUT);
    assert!(wait_until(TIMEOUT, || broker.log().contains("harness-raw")));
}

#[test]
fn brokers_start_in_parallel() {
    let brokers: Vec<Broker> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8).map(|_| s.spawn(Broker::start)).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ports: Vec<u16> = brokers.iter().map(Broker::port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), brokers.len());
    for b in &brokers {
        let (_conn, ack) = PeerConn::connect_mqtt(b.port(), &connect_packet("p"));
        assert_eq!(ack, accepted());
    }
}

#[test]
fn password_broker_checks_credentials() {
    let broker = Broker::builder().password("alice", "secret").start();
    let with = |user: Option<&'static str>, pass: Option<&'static [u8]>| Connect {
        username: user,
        password: pass,
        ..connect_packet("harness-auth")
    };
    // mosquitto 2 answers 5 "not authorized" (never 4) to MQTT 3.1.1 clients with a
    // wrong password, an unknown user or no credentials, then closes the connection.
    for connect in [
        with(Some("alice"), Some(b"wrong")),
        with(Some("bob"), Some(b"secret")),
        with(Some("alice"), None),
        with(None, None),
    ] {
        let (mut conn, ack) = PeerConn::connect_mqtt(broker.port(), &connect);
        assert_eq!(
            ack.code(),
            Some(ConnectReturnCode::NotAuthorized),
            "{connect:?}\n{}",
            broker.log()
        );
        assert!(!ack.session_present);
        conn.expect_closed(TIMEOUT);
    }
    let (_conn, ack) = PeerConn::connect_mqtt(broker.port(), &with(Some("alice"), Some(b"secret")));
    assert_eq!(ack, accepted());
}

#[test]
fn broker_restarts_on_the_same_port() {
    let broker = Broker::start();
    let port = broker.port();
    let pid = broker.pid().unwrap();
    let (mut conn, _) = PeerConn::connect_mqtt(port, &connect_packet("r1"));

    broker.kill();
    assert!(!broker.is_running());
    conn.expect_closed(TIMEOUT);
    assert!(std::net::TcpStream::connect(loopback(port)).is_err());

    broker.restart();
    assert_eq!(broker.port(), port);
    assert_ne!(broker.pid(), Some(pid));
    let (mut conn, ack) = PeerConn::connect_mqtt(port, &connect_packet("r2"));
    assert_eq!(ack, accepted());

    broker.stop();
    conn.expect_closed(TIMEOUT);
    broker.restart();
    // restart() on a running broker stops it first.
    broker.restart();
    let (_conn, ack) = PeerConn::connect_mqtt(port, &connect_packet("r3"));
    assert_eq!(ack, accepted());
    assert_eq!(broker.log().matches(" running").count(), 4);
}

#[test]
fn persistence_survives_sigkill() {
    let broker = Broker::builder().persistence(true).start();
    let persistent = Connect {
        clean_session: false,
        ..connect_packet("harness-persist")
    };
    let (mut sub, ack) = PeerConn::connect_mqtt(broker.port(), &persistent);
    assert!(!ack.session_present);
    sub.send_packet(&Packet::Subscribe(Subscribe {
        pkid: 1,
        filters: vec![("harness/t", QoS::AtLeastOnce.into())],
        properties: None,
    }));
    assert_eq!(sub.expect_packet(TIMEOUT).pkid(), Some(1));
    sub.send_packet(&Packet::disconnect());
    sub.expect_closed(TIMEOUT);

    // Queue a QoS 1 message for the offline session.
    let (mut publisher, _) = PeerConn::connect_mqtt(broker.port(), &connect_packet("harness-pub"));
    publisher.send_packet(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "harness/t",
        pkid: 7,
        payload: b"kept",
        properties: None,
    }));
    assert_eq!(publisher.expect_packet(TIMEOUT).packet(), Packet::puback(7));
    // One more round trip: mosquitto autosaves at the end of the loop iteration.
    publisher.send_packet(&Packet::PingReq);
    publisher.expect_type(13, TIMEOUT);

    broker.kill();
    broker.restart();
    let (mut sub, ack) = PeerConn::connect_mqtt(broker.port(), &persistent);
    assert!(ack.session_present, "{}", broker.log());
    let msg = sub.expect_packet(TIMEOUT);
    assert_eq!(msg.publish().payload, b"kept");
    assert_eq!(msg.publish().topic, "harness/t");
}

#[test]
fn proxy_forwards_and_cut_all_closes_the_client() {
    let broker = Broker::start();
    let proxy = FaultProxy::start(broker.port());
    let (mut conn, ack) = PeerConn::connect_mqtt(proxy.port(), &connect_packet("via-proxy"));
    assert_eq!(ack, accepted());
    assert_eq!(proxy.connections(), 1);
    assert!(wait_until(TIMEOUT, || proxy.active() == 1));
    assert_eq!(proxy.bytes_down(), 4);
    assert!(proxy.bytes_up() > 10);

    assert_eq!(proxy.cut_all(), 1);
    conn.expect_closed(TIMEOUT);
    assert!(wait_until(TIMEOUT, || proxy.active() == 0));
    assert_eq!(proxy.stats().cuts, 1);
    // The broker saw the connection drop too.
    assert!(wait_until(TIMEOUT, || broker
        .log()
        .contains("via-proxy closed")));

    // The proxy keeps accepting.
    let (mut conn, ack) = PeerConn::connect_mqtt(proxy.port(), &connect_packet("via-proxy-2"));
    assert_eq!(ack, accepted());

    // Dropping the proxy closes its connections and its listener.
    let port = proxy.port();
    drop(proxy);
    conn.expect_closed(TIMEOUT);
    assert!(std::net::TcpStream::connect(loopback(port)).is_err());
}

#[test]
fn proxy_blackhole_down_swallows_the_connack() {
    let broker = Broker::start();
    let proxy = FaultProxy::start(broker.port());
    proxy.blackhole(Direction::Down, true);
    let mut conn = PeerConn::connect(proxy.port());
    conn.send_packet(&Packet::Connect(connect_packet("blackholed")));
    assert!(wait_until(TIMEOUT, || proxy.stats().dropped_down == 4));
    conn.expect_silence(SHORT);

    // The connection is still alive: with the hole closed, PINGRESP gets through.
    proxy.blackhole(Direction::Both, false);
    conn.send_packet(&Packet::PingReq);
    assert_eq!(conn.expect_packet(TIMEOUT).packet(), Packet::PingResp);
}

#[test]
fn proxy_blackhole_up_swallows_the_connect() {
    let broker = Broker::start();
    let proxy = FaultProxy::start(broker.port());
    proxy.blackhole(Direction::Up, true);
    let mut conn = PeerConn::connect(proxy.port());
    conn.send_packet(&Packet::Connect(connect_packet("blackholed-up")));
    assert!(wait_until(TIMEOUT, || proxy.stats().dropped_up > 0));
    conn.expect_silence(SHORT);
    assert_eq!(proxy.bytes_up(), 0);
}

#[test]
fn proxy_cut_after_bytes_refuse_and_delay() {
    let broker = Broker::start();
    let proxy = FaultProxy::start(broker.port());

    proxy.cut_after_bytes(5);
    let mut conn = PeerConn::connect(proxy.port());
    conn.send_packet(&Packet::Connect(connect_packet("cut-after")));
    conn.expect_closed(TIMEOUT);
    assert!(wait_until(TIMEOUT, || proxy.active() == 0));
    assert_eq!(proxy.bytes_up(), 5);

    proxy.cut_after_bytes(None);
    proxy.refuse(true);
    let mut conn = PeerConn::connect(proxy.port());
    conn.expect_closed(TIMEOUT);
    assert_eq!(proxy.stats().refused, 1);

    proxy.refuse(false);
    proxy.set_delay(Duration::from_millis(150));
    let start = Instant::now();
    let (_conn, ack) = PeerConn::connect_mqtt(proxy.port(), &connect_packet("delayed"));
    assert_eq!(ack, accepted());
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(proxy.connections(), 3);
}

#[test]
fn proxy_random_cuts() {
    let broker = Broker::start();
    let proxy = FaultProxy::start_seeded(loopback(broker.port()), 42);
    assert_eq!(proxy.seed(), 42);
    proxy.set_random_cuts(Some((20, 60)));
    for i in 0..3 {
        // A cut may come before or after the CONNACK.
        let mut conn = PeerConn::connect(proxy.port());
        let _ = conn.try_send(&common::encode(&Packet::Connect(connect_packet("random"))));
        conn.expect_closed(TIMEOUT);
        assert!(proxy.stats().cuts > i);
    }
    proxy.set_random_cuts(None);
    let (mut conn, _) = PeerConn::connect_mqtt(proxy.port(), &connect_packet("random"));
    conn.expect_silence(Duration::from_millis(200));
}

#[test]
fn proxy_survives_a_broker_restart() {
    let broker = Broker::start();
    let proxy = FaultProxy::start(broker.port());
    let (mut conn, _) = PeerConn::connect_mqtt(proxy.port(), &connect_packet("restart"));
    broker.kill();
    conn.expect_closed(TIMEOUT);
    // Upstream down: the proxy accepts, fails to connect upstream, closes.
    let mut conn = PeerConn::connect(proxy.port());
    conn.expect_closed(TIMEOUT);
    assert_eq!(proxy.stats().upstream_failures, 1);
    broker.restart();
    let (_conn, ack) = PeerConn::connect_mqtt(proxy.port(), &connect_packet("restart"));
    assert_eq!(ack, accepted());
}

#[test]
fn scripted_peer_round_trip() {
    let peer = ScriptedPeer::bind();
    peer.expect_no_connection(Duration::from_millis(50));
    let mut client = PeerConn::connect(peer.port());
    let mut server = peer.accept(TIMEOUT);

    // Byte by byte: the reader reassembles the packet.
    let connect = common::encode(&Packet::Connect(Connect {
        keep_alive: 30,
        ..connect_packet("scripted")
    }));
    for b in &connect {
        client.send(&[*b]);
    }
    let got = server.handshake(true, TIMEOUT);
    assert_eq!(got.connect().client_id, "scripted");
    assert_eq!(got.connect().keep_alive, 30);
    assert_eq!(got.bytes(), &connect[..]);
    let reply = client.expect_packet(TIMEOUT);
    let ack = reply.connack();
    assert!(ack.session_present);

    client.send_packet(&Packet::Subscribe(Subscribe {
        pkid: 9,
        filters: vec![("a/#", QoS::ExactlyOnce.into())],
        properties: None,
    }));
    let sub = server.expect_type(8, TIMEOUT);
    assert_eq!(
        sub.subscribe().filters,
        vec![("a/#", QoS::ExactlyOnce.into())]
    );
    server.send_packet(&Packet::SubAck(SubAck {
        pkid: 9,
        return_codes: &[2],
        properties: None,
    }));
    // Two packets in one write: both come out, in order.
    let mut two = common::encode(&Packet::PingResp);
    two.extend(common::encode(&Packet::unsuback(3)));
    server.send(&two);
    assert_eq!(client.expect_packet(TIMEOUT).pkid(), Some(9));
    assert_eq!(client.expect_packet(TIMEOUT).packet(), Packet::PingResp);
    assert_eq!(client.expect_packet(TIMEOUT).packet(), Packet::unsuback(3));
    client.expect_silence(Duration::from_millis(50));

    // An invalid CONNACK code goes out as is.
    server.send_connack(false, 6);
    assert!(client.read_packet(TIMEOUT).is_err());

    client.send_packet(&Packet::disconnect());
    client.shutdown_write();
    let before = server.expect_closed(TIMEOUT);
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].packet(), Packet::disconnect());
    server.close();
    client.expect_closed(TIMEOUT);
}

#[test]
fn scripted_peer_sees_a_reset() {
    let peer = ScriptedPeer::bind();
    let client = PeerConn::connect(peer.port());
    let mut server = peer.accept(TIMEOUT);
    client.reset();
    server.expect_closed(TIMEOUT);
}

#[test]
fn broker_options() {
    let broker = Broker::builder()
        .debug_log(true)
        .extra_config("# a comment")
        .extra_config("max_inflight_messages 5")
        .start();
    let (mut conn, _) = PeerConn::connect_mqtt(broker.port(), &connect_packet("debug"));
    conn.send_packet(&Packet::PingReq);
    conn.expect_type(13, TIMEOUT);
    assert!(wait_until(TIMEOUT, || broker
        .log()
        .contains("Received PINGREQ from debug")));
    let conf = std::fs::read_to_string(broker.dir().join("mosquitto.conf")).unwrap();
    assert!(conf.contains("max_inflight_messages 5"), "{conf}");

    // A config mosquitto rejects makes start() panic with the reason.
    let err =
        std::panic::catch_unwind(|| Broker::builder().extra_config("no_such_option 1").start())
            .err()
            .expect("start() must fail");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("no_such_option"), "{msg}");
}

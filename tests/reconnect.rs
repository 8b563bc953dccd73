//! Connections that survive: automatic reconnection (backoff, jitter, CONNACK
//! classification), resend of in-flight messages, resubscription, the offline
//! queue, dead-link detection and broker restarts.
//!
//! Scripted-peer tests play the broker byte by byte to see exactly what the
//! client sends after a reconnection; the others run against a real mosquitto,
//! with a `FaultProxy` in between where the link has to fail.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};
use std::thread;
use std::time::{Duration, Instant};

use common::events::{
    Event, drain, expect, expect_connack, expect_disconnect, expect_message, expect_within,
    recorded_client,
};
use common::{Broker, Direction, FaultProxy, HOST, OwnedPacket, PeerConn, ScriptedPeer, TIMEOUT};
use mqtt::protocol::codec::{Packet, QoS};
use mqtt::{Client, Command, Data, Error};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Connect `client` to a fresh scripted peer that accepts it (no session), and
/// start the client's loop thread.
fn start_on_peer(client: &Client, keepalive: u16) -> (ScriptedPeer, PeerConn) {
    let peer = ScriptedPeer::bind();
    let conn = thread::scope(|s| {
        let script = s.spawn(|| {
            let mut conn = peer.accept(TIMEOUT);
            conn.handshake(false, TIMEOUT);
            conn
        });
        let present = client.connect(HOST, keepalive, peer.port());
        let conn = script.join().unwrap();
        assert_eq!(present, Ok(false));
        conn
    });
    client.loop_start(None).unwrap();
    (peer, conn)
}

/// Broker side of the next (automatic) connection: accept, answer CONNACK 0.
fn accept_handshake(peer: &ScriptedPeer, session_present: bool) -> (PeerConn, OwnedPacket) {
    let mut conn = peer.accept(TIMEOUT);
    let connect = conn.handshake(session_present, TIMEOUT);
    (conn, connect)
}

/// `client.reconnect()` while a scripted peer accepts it.
fn manual_reconnect(client: &Client, peer: &ScriptedPeer) -> (Result<bool, Error>, PeerConn) {
    thread::scope(|s| {
        let script = s.spawn(|| accept_handshake(peer, false).0);
        let result = client.reconnect();
        (result, script.join().unwrap())
    })
}

fn connect_direct(client: &Client, broker: &Broker) {
    client.connect(HOST, 30, broker.port()).unwrap();
    client.loop_start(None).unwrap();
}

// ---------------------------------------------------------------------------
// Resend after reconnection (scripted peer)
// ---------------------------------------------------------------------------

#[test]
fn unacknowledged_publishes_are_resent_with_dup_and_the_same_ids_when_the_session_is_present() {
    let (client, rx) = recorded_client("resend-dup", false);
    client.set_reconnect(Some((ms(20), ms(200)))).unwrap();
    let (peer, mut conn) = start_on_peer(&client, 60);
    expect_connack(&rx);

    let sent = [
        ("r/1", &b"one"[..], QoS::AtLeastOnce),
        ("r/2", &b"two"[..], QoS::ExactlyOnce),
    ];
    let mids: Vec<u16> = sent
        .iter()
        .map(|(topic, payload, qos)| client.publish(topic, payload, *qos, false).unwrap())
        .collect();
    for &mid in &mids {
        let p = conn.expect_type(3, TIMEOUT);
        assert_eq!(p.publish().pkid, mid);
        assert!(!p.publish().dup, "first transmission has DUP=0");
    }
    // Drop the link before any PUBACK/PUBREC.
    conn.close();
    let lost = expect_disconnect(&rx);
    assert_eq!(lost.error, Some(Error::ConnectionLost));

    let (mut conn, connect) = accept_handshake(&peer, true);
    assert!(!connect.connect().clean_session);
    assert!(expect_connack(&rx).session_present);
    for (&mid, (topic, payload, qos)) in mids.iter().zip(sent) {
        let p = conn.expect_type(3, TIMEOUT);
        let p = p.publish();
        assert!(p.dup, "a resent PUBLISH has DUP=1: {p:?}");
        assert_eq!(
            (p.pkid, p.topic, p.payload, p.qos),
            (mid, topic, payload, qos),
            "resent in the original order with the original id"
        );
    }
    conn.send_packet(&Packet::puback(mids[0]));
    conn.send_packet(&Packet::pubrec(mids[1]));
    assert_eq!(conn.expect_type(6, TIMEOUT).pkid(), Some(mids[1]));
    conn.send_packet(&Packet::pubcomp(mids[1]));
    expect(&rx, "PUBACK", |e| {
        e.command == Command::PubAck && e.mid == mids[0]
    });
    expect(&rx, "PUBCOMP", |e| {
        e.command == Command::PubComp && e.mid == mids[1]
    });
    assert_eq!(client.inflight_len(), 0);
    client.close();
}

#[test]
fn after_pubrec_only_the_pubrel_is_resent() {
    let (client, rx) = recorded_client("resend-pubrel", false);
    client.set_reconnect(Some((ms(20), ms(200)))).unwrap();
    let (peer, mut conn) = start_on_peer(&client, 60);
    expect_connack(&rx);

    let mid = client
        .publish("r/q2", b"exactly once", QoS::ExactlyOnce, false)
        .unwrap();
    assert_eq!(conn.expect_type(3, TIMEOUT).pkid(), Some(mid));
    conn.send_packet(&Packet::pubrec(mid));
    assert_eq!(conn.expect_type(6, TIMEOUT).pkid(), Some(mid));
    expect(&rx, "PUBREC", |e| {
        e.command == Command::PubRec && e.mid == mid
    });
    // The PUBREL reached us but we "lose" the connection before PUBCOMP.
    conn.close();
    expect_disconnect(&rx);

    let (mut conn, _) = accept_handshake(&peer, true);
    let first = conn.expect_packet(TIMEOUT);
    assert!(
        first.is(6) && first.pkid() == Some(mid),
        "expected PUBREL {mid} after the reconnection, got {first:?}"
    );
    conn.send_packet(&Packet::pubcomp(mid));
    expect(&rx, "PUBCOMP", |e| {
        e.command == Command::PubComp && e.mid == mid
    });
    // Nothing else: in particular no PUBLISH of the released message.
    conn.expect_silence(ms(300));
    assert_eq!(client.inflight_len(), 0);
    client.close();
}

#[test]
fn without_a_session_unacknowledged_messages_are_published_again_and_pubrecd_ones_reported() {
    let (client, rx) = recorded_client("resend-fresh", true);
    client.set_reconnect(Some((ms(20), ms(200)))).unwrap();
    let (peer, mut conn) = start_on_peer(&client, 60);
    expect_connack(&rx);

    let sent = [
        ("f/1", &b"q1"[..], QoS::AtLeastOnce),
        ("f/2", &b"q2 released"[..], QoS::ExactlyOnce),
        ("f/3", &b"q2 published"[..], QoS::ExactlyOnce),
    ];
    let mids: Vec<u16> = sent
        .iter()
        .map(|(topic, payload, qos)| client.publish(topic, payload, *qos, false).unwrap())
        .collect();
    for &mid in &mids {
        assert_eq!(conn.expect_type(3, TIMEOUT).pkid(), Some(mid));
    }
    // The second message gets as far as PUBREL before the link drops.
    conn.send_packet(&Packet::pubrec(mids[1]));
    assert_eq!(conn.expect_type(6, TIMEOUT).pkid(), Some(mids[1]));
    conn.close();
    expect_disconnect(&rx);

    // The broker lost the session. The unacknowledged messages are published
    // again (DUP=1); the PUBREC'd one must not be [MQTT-4.3.3-1]: its PUBCOMP
    // callback says the outcome is unknown.
    let (mut conn, _) = accept_handshake(&peer, false);
    assert!(!expect_connack(&rx).session_present);
    let given_up = expect(&rx, "PUBCOMP", |e| e.command == Command::PubComp);
    assert_eq!(
        (given_up.mid, given_up.error),
        (mids[1], Some(Error::SessionLost))
    );
    for i in [0, 2] {
        let p = conn.expect_packet(TIMEOUT);
        assert!(p.is(3), "expected PUBLISH {}, got {p:?}", mids[i]);
        let p = p.publish();
        assert!(p.dup, "a re-delivery carries DUP=1: {p:?}");
        let (topic, payload, qos) = sent[i];
        assert_eq!(
            (p.pkid, p.topic, p.payload, p.qos),
            (mids[i], topic, payload, qos)
        );
    }
    conn.send_packet(&Packet::puback(mids[0]));
    conn.send_packet(&Packet::pubrec(mids[2]));
    assert_eq!(conn.expect_type(6, TIMEOUT).pkid(), Some(mids[2]));
    conn.send_packet(&Packet::pubcomp(mids[2]));

    // Exactly one final outcome per message, carrying its mid.
    let mut finals = Vec::new();
    while finals.len() < 2 {
        let e = expect(&rx, "PUBACK/PUBCOMP", |e| {
            matches!(e.command, Command::PubAck | Command::PubComp)
        });
        finals.push((e.command, e.mid, e.error));
    }
    assert_eq!(
        finals,
        vec![
            (Command::PubAck, mids[0], None),
            (Command::PubComp, mids[2], None)
        ]
    );
    conn.expect_silence(ms(200));
    while let Ok(e) = rx.try_recv() {
        assert!(
            !matches!(e.command, Command::PubAck | Command::PubComp),
            "second outcome: {e:?}"
        );
    }
    client.close();
}

// ---------------------------------------------------------------------------
// CONNACK classification and backoff (scripted peer)
// ---------------------------------------------------------------------------

#[test]
fn final_connack_refusals_stop_the_retries_and_are_reported() {
    let cases = [
        (1u8, Error::RefusedProtocolVersion),
        (2, Error::RefusedIdentifier),
        (4, Error::RefusedBadCredentials),
        (5, Error::RefusedNotAuthorized),
    ];
    for (code, error) in cases {
        let (client, rx) = recorded_client("refused-later", true);
        client.set_reconnect(Some((ms(20), ms(100)))).unwrap();
        let (peer, conn) = start_on_peer(&client, 60);
        expect_connack(&rx);
        conn.close();
        assert_eq!(expect_disconnect(&rx).error, Some(Error::ConnectionLost));

        // The automatic reconnection is refused for good.
        let mut conn = peer.accept(TIMEOUT);
        conn.expect_type(1, TIMEOUT);
        conn.send_connack(false, code);
        let ack = expect_connack(&rx);
        assert_eq!(ack.return_code, code);
        let reported = expect_disconnect(&rx);
        assert_eq!(reported.error, Some(error), "CONNACK {code}");
        // With at most 100 ms between attempts, several would have come by now.
        peer.expect_no_connection(ms(700));
        assert!(!client.is_connected());

        // The manual reconnect still works after a final refusal.
        let (result, _conn) = manual_reconnect(&client, &peer);
        assert_eq!(result, Ok(false), "CONNACK {code}");
        expect(&rx, "CONNACK accepted", |e| {
            e.command == Command::ConnAck && e.return_code == 0
        });
        client.close();
    }
}

#[test]
fn the_first_connect_failure_is_returned_and_not_retried() {
    let (client, _rx) = recorded_client("first-refused", true);
    client.set_reconnect(Some((ms(20), ms(100)))).unwrap();
    client.loop_start(None).unwrap();
    let peer = ScriptedPeer::bind();
    let result = thread::scope(|s| {
        s.spawn(|| {
            let mut conn = peer.accept(TIMEOUT);
            conn.expect_type(1, TIMEOUT);
            conn.send_connack(false, 3);
        });
        client.connect(HOST, 60, peer.port())
    });
    assert_eq!(result, Err(Error::RefusedServerUnavailable));
    peer.expect_no_connection(ms(500));
    client.close();
}

#[test]
fn server_unavailable_is_retried_with_exponential_backoff_and_jitter() {
    let min = ms(100);
    let max = ms(1600);
    let (client, rx) = recorded_client("backoff", true);
    client.set_reconnect(Some((min, max))).unwrap();
    let (peer, conn) = start_on_peer(&client, 60);
    expect_connack(&rx);

    // gaps[k]: from the end of one connection (our close, or our CONNACK 3) to
    // the next connection accepted, after k refusals in a row.
    const REFUSALS: usize = 6;
    let mut gaps = Vec::new();
    let mut since = Instant::now();
    conn.close();
    let mut last = None;
    for k in 0..=REFUSALS {
        let mut conn = peer.accept(2 * max);
        gaps.push(since.elapsed());
        conn.expect_type(1, TIMEOUT);
        if k < REFUSALS {
            conn.send_connack(false, 3);
            since = Instant::now();
        } else {
            conn.send_connack(false, 0);
            last = Some(conn);
        }
    }
    for _ in 0..REFUSALS {
        let ack = expect_connack(&rx);
        assert_eq!(
            ack.return_code, 3,
            "each refusal reaches the CONNACK callback"
        );
    }
    assert_eq!(expect_connack(&rx).return_code, 0);

    // Reset after a successful CONNACK: the next loss is retried within [min, 2 x min] again.
    let since = Instant::now();
    last.unwrap().close();
    let _conn = peer.accept(2 * max);
    let after_reset = since.elapsed();

    eprintln!("reconnect gaps (min {min:?}, max {max:?}): {gaps:?}; after reset: {after_reset:?}");
    let slack = |d: Duration| ms(150) + d / 10;
    for (k, &gap) in gaps.iter().enumerate() {
        // The ceiling doubles with every failed attempt from 2 x min, capped at
        // max; the delay is drawn from [ceiling/2, ceiling] and never below min.
        let ceiling = (min * 2u32.pow(k as u32 + 1)).min(max);
        let floor = (ceiling / 2).max(min);
        assert!(
            gap + ms(1) >= floor && gap <= ceiling + slack(ceiling),
            "gap {k} = {gap:?}, expected within [{floor:?}, {ceiling:?}] (+{:?}); all: {gaps:?}",
            slack(ceiling)
        );
        assert!(gap <= max + slack(max), "gap {k} = {gap:?} beyond max");
    }
    // Roughly x2 per attempt until the cap: each early gap is at least the
    // previous ceiling, so the series cannot stay flat.
    assert!(gaps[4] >= gaps[1] * 2, "no exponential growth: {gaps:?}");
    assert!(
        after_reset + ms(1) >= min && after_reset <= 2 * min + slack(min),
        "backoff not reset by a successful CONNACK: {after_reset:?}"
    );
    client.close();
}

// ---------------------------------------------------------------------------
// Dead links
// ---------------------------------------------------------------------------

#[test]
fn a_silent_peer_is_declared_dead_within_one_and_a_half_keepalives() {
    let keepalive = Duration::from_secs(2);
    let (client, rx) = recorded_client("dead-scripted", true);
    client.set_reconnect(Some((ms(20), ms(200)))).unwrap();
    let peer = ScriptedPeer::bind();
    let (mut conn, last_byte) = thread::scope(|s| {
        let script = s.spawn(|| {
            let mut conn = peer.accept(TIMEOUT);
            conn.handshake(false, TIMEOUT);
            // The CONNACK is the last byte this peer ever sends.
            (conn, Instant::now())
        });
        client
            .connect(HOST, keepalive.as_secs() as u16, peer.port())
            .unwrap();
        script.join().unwrap()
    });
    client.loop_start(None).unwrap();

    // The client probes the silent link with PINGREQ; we never answer.
    conn.expect_type(12, 2 * keepalive);
    let ping_after = last_byte.elapsed();
    let lost = expect_within(&rx, 2 * keepalive, "DISCONNECT", |e| {
        e.command == Command::Disconnect
    });
    let detected = lost.at - last_byte;
    conn.expect_closed(TIMEOUT);
    eprintln!("silent peer: PINGREQ after {ping_after:?}, declared dead after {detected:?}");
    assert_eq!(lost.error, Some(Error::KeepaliveTimeout));
    assert!(
        detected <= keepalive * 3 / 2 + ms(300),
        "declared dead after {detected:?}, keepalive {keepalive:?}"
    );
    assert!(
        detected >= keepalive,
        "a link silent for less than the keepalive is not dead yet: {detected:?}"
    );

    // ... and a new connection replaces it.
    let _conn = accept_handshake(&peer, false);
    expect(&rx, "CONNACK after the dead link", |e| {
        e.command == Command::ConnAck && e.return_code == 0
    });
    client.close();
}

#[test]
fn a_blackholed_link_to_mosquitto_is_detected_and_replaced() {
    let keepalive = Duration::from_secs(2);
    let broker = Broker::start();
    let proxy = FaultProxy::start(broker.port());
    let (client, rx) = recorded_client("dead-proxy", false);
    client.set_reconnect(Some((ms(20), ms(200)))).unwrap();
    client
        .connect(HOST, keepalive.as_secs() as u16, proxy.port())
        .unwrap();
    client.loop_start(None).unwrap();
    expect_connack(&rx);

    // A PUBACK is the last byte that comes through before the blackhole; the
    // client's idle timer starts from there at the latest.
    let mid = client
        .publish("dead/probe", b"x", QoS::AtLeastOnce, false)
        .unwrap();
    let last = expect(&rx, "PUBACK", |e| {
        e.command == Command::PubAck && e.mid == mid
    });
    proxy.blackhole(Direction::Down, true);
    let lost = expect_within(&rx, 2 * keepalive, "DISCONNECT", |e| {
        e.command == Command::Disconnect
    });
    let detected = lost.at - last.at;
    proxy.blackhole(Direction::Down, false);
    eprintln!(
        "blackholed link: declared dead {detected:?} after the last byte (keepalive {keepalive:?}), \
         {} bytes swallowed",
        proxy.stats().dropped_down
    );
    assert_eq!(lost.error, Some(Error::KeepaliveTimeout));
    assert!(detected <= keepalive * 3 / 2 + ms(300), "{detected:?}");
    assert!(proxy.stats().dropped_down > 0, "the PINGRESP was swallowed");

    let back = expect(&rx, "CONNACK", |e| e.command == Command::ConnAck);
    assert!(back.session_present);
    let mid = client
        .publish("dead/after", b"y", QoS::AtLeastOnce, false)
        .unwrap();
    expect(&rx, "PUBACK", |e| {
        e.command == Command::PubAck && e.mid == mid
    });
    client.close();
}

// ---------------------------------------------------------------------------
// Callbacks, credentials, manual reconnect
// ---------------------------------------------------------------------------

#[test]
fn credentials_changed_in_the_disconnect_callback_apply_to_the_next_attempt() {
    let (client, rx) = recorded_client("creds-rotate", true);
    client.set_reconnect(Some((ms(20), ms(200)))).unwrap();
    client.set_credentials(Some("old"), Some(b"pw-1")).unwrap();
    let (tx, changed) = channel();
    client.on(
        Command::Disconnect,
        Arc::new(move |c: &Client, data: &Data<'_>| {
            let result = c.set_credentials(Some("new"), Some(b"pw-2"));
            let _ = tx.send((data.error, result));
        }),
        Some(Arc::new(|_: &Data<'_>| true)),
        1,
    );
    let peer = ScriptedPeer::bind();
    let first = thread::scope(|s| {
        let script = s.spawn(|| accept_handshake(&peer, false));
        client.connect(HOST, 60, peer.port()).unwrap();
        script.join().unwrap()
    });
    client.loop_start(None).unwrap();
    let (conn, connect) = first;
    let c = connect.connect();
    assert_eq!((c.username, c.password), (Some("old"), Some(&b"pw-1"[..])));
    expect_connack(&rx);

    conn.close();
    let (error, result) = changed.recv_timeout(TIMEOUT).unwrap();
    assert_eq!(error, Some(Error::ConnectionLost));
    assert_eq!(result, Ok(()));
    let (_conn, connect) = accept_handshake(&peer, false);
    let c = connect.connect();
    assert_eq!((c.username, c.password), (Some("new"), Some(&b"pw-2"[..])));
    client.close();
}

#[test]
fn manual_reconnect_works_without_automatic_reconnection() {
    let (client, rx) = recorded_client("manual", true);
    client.set_reconnect(None).unwrap();
    let (peer, conn) = start_on_peer(&client, 60);
    expect_connack(&rx);
    conn.close();
    assert_eq!(expect_disconnect(&rx).error, Some(Error::ConnectionLost));
    // The default minimum delay is 500 ms: nothing may come on its own.
    peer.expect_no_connection(ms(1200));
    assert!(!client.is_connected());

    let (result, mut conn) = manual_reconnect(&client, &peer);
    assert_eq!(result, Ok(false));
    expect_connack(&rx);
    let mid = client
        .publish("m/t", b"after", QoS::AtLeastOnce, false)
        .unwrap();
    assert_eq!(conn.expect_type(3, TIMEOUT).pkid(), Some(mid));
    conn.send_packet(&Packet::puback(mid));
    expect(&rx, "PUBACK", |e| {
        e.command == Command::PubAck && e.mid == mid
    });

    // Still off after a manual reconnect.
    conn.close();
    expect_disconnect(&rx);
    peer.expect_no_connection(ms(1200));
    client.close();
}

#[test]
fn manual_reconnect_preempts_a_pending_automatic_one() {
    let (client, rx) = recorded_client("manual-auto", true);
    let delay = ms(1500);
    client.set_reconnect(Some((delay, delay))).unwrap();
    let (peer, conn) = start_on_peer(&client, 60);
    expect_connack(&rx);
    conn.close();
    expect_disconnect(&rx);

    let asked = Instant::now();
    let (result, _conn) = manual_reconnect(&client, &peer);
    assert_eq!(result, Ok(false));
    assert!(
        asked.elapsed() < delay / 2,
        "reconnect() waited for the automatic delay: {:?}",
        asked.elapsed()
    );
    expect_connack(&rx);
    // The automatic attempt that was pending is cancelled, not stacked on top.
    peer.expect_no_connection(delay + ms(500));
    assert!(client.is_connected());
    client.close();
}

// ---------------------------------------------------------------------------
// Against mosquitto: resubscribe, offline queue
// ---------------------------------------------------------------------------

#[test]
fn subscriptions_are_restored_after_a_clean_session_reconnect() {
    let broker = Broker::start();
    let proxy = FaultProxy::start(broker.port());
    let (sub, sub_rx) = recorded_client("resub-on", true);
    let (lazy, lazy_rx) = recorded_client("resub-off", true);
    lazy.set_resubscribe(false);
    for (client, rx) in [(&sub, &sub_rx), (&lazy, &lazy_rx)] {
        client.set_reconnect(Some((ms(20), ms(200)))).unwrap();
        client.connect(HOST, 30, proxy.port()).unwrap();
        client.loop_start(None).unwrap();
        client.subscribe(&[("rs/#", QoS::AtLeastOnce)]).unwrap();
        expect(rx, "SUBACK", |e| e.command == Command::SubAck);
    }
    let (publisher, pub_rx) = recorded_client("resub-pub", true);
    connect_direct(&publisher, &broker);
    publisher
        .publish("rs/before", b"", QoS::AtLeastOnce, false)
        .unwrap();
    assert_eq!(
        expect_message(&sub_rx, "rs/before").topic.as_deref(),
        Some("rs/before")
    );
    assert_eq!(
        expect_message(&lazy_rx, "rs/before").topic.as_deref(),
        Some("rs/before")
    );

    assert_eq!(proxy.cut_all(), 2);
    for rx in [&sub_rx, &lazy_rx] {
        assert_eq!(expect_disconnect(rx).error, Some(Error::ConnectionLost));
        assert!(!expect_connack(rx).session_present);
    }
    // Sent after the CONNACK, so behind the automatic SUBSCRIBE on the wire.
    sub.publish("rs/self", b"", QoS::AtLeastOnce, false)
        .unwrap();
    assert_eq!(
        expect_message(&sub_rx, "rs/self").topic.as_deref(),
        Some("rs/self")
    );
    let mut mids = Vec::new();
    for i in 0..20 {
        let payload = format!("{i}");
        mids.push(
            publisher
                .publish("rs/after", payload.as_bytes(), QoS::AtLeastOnce, false)
                .unwrap(),
        );
    }
    for i in 0..20 {
        let e = expect_message(&sub_rx, "rs/after");
        assert_eq!(e.topic.as_deref(), Some("rs/after"));
        assert_eq!(e.payload, format!("{i}").as_bytes());
    }
    for &mid in &mids {
        expect(&pub_rx, "PUBACK", |e| {
            e.command == Command::PubAck && e.mid == mid
        });
    }
    // Control: with resubscription off, the same reconnection leaves the client deaf.
    lazy.publish("rs/self", b"", QoS::AtLeastOnce, false)
        .unwrap();
    expect(&lazy_rx, "PUBACK", |e| e.command == Command::PubAck);
    let heard: Vec<Event> = lazy_rx.try_iter().filter(Event::is_message).collect();
    assert!(heard.is_empty(), "not resubscribed, yet received {heard:?}");
    for c in [sub, lazy, publisher] {
        c.close();
    }
}

/// A client behind `proxy`, connected, with a direct observer subscribed to `filter`.
fn queue_setup(
    broker: &Broker,
    proxy: &FaultProxy,
    id: &str,
    filter: &str,
) -> (Client, Receiver<Event>, Client, Receiver<Event>) {
    let (observer, obs_rx) = recorded_client(&format!("{id}-observer"), true);
    connect_direct(&observer, broker);
    observer.subscribe(&[(filter, QoS::ExactlyOnce)]).unwrap();
    expect(&obs_rx, "SUBACK", |e| e.command == Command::SubAck);
    let (client, rx) = recorded_client(id, true);
    client.set_reconnect(Some((ms(20), ms(100)))).unwrap();
    client.connect(HOST, 30, proxy.port()).unwrap();
    client.loop_start(None).unwrap();
    expect_connack(&rx);
    (client, rx, observer, obs_rx)
}

#[test]
fn the_offline_queue_is_bounded_by_count_and_drains_in_order() {
    let broker = Broker::start();
    let proxy = FaultProxy::start(broker.port());
    let (client, rx, observer, obs_rx) = queue_setup(&broker, &proxy, "queue-count", "q/#");

    // Offline, and kept offline: every reconnection attempt is refused.
    proxy.refuse(true);
    proxy.cut_all();
    assert_eq!(expect_disconnect(&rx).error, Some(Error::ConnectionLost));
    client.set_queue_limits(10, 1 << 20).unwrap();

    assert_eq!(
        client.publish("q/zero", b"", QoS::AtMostOnce, false),
        Err(Error::NotConnected),
        "QoS 0 offline is refused by default"
    );
    let mut mids = Vec::new();
    for i in 0..10 {
        let qos = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        let payload = format!("{i}");
        mids.push((
            client
                .publish("q/m", payload.as_bytes(), qos, false)
                .unwrap(),
            qos,
        ));
        assert_eq!(client.queued_len(), i + 1);
    }
    let bytes = client.queued_bytes();
    assert_eq!(bytes, 10 * "q/m".len() + 10);
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        assert_eq!(
            client.publish("q/m", b"overflow", qos, false),
            Err(Error::QueueFull)
        );
    }
    // A refusal changes nothing.
    assert_eq!((client.queued_len(), client.queued_bytes()), (10, bytes));

    proxy.refuse(false);
    expect_connack(&rx);
    // Each message reaches exactly one final outcome, in order per QoS (a
    // QoS 1 flow takes one round trip, a QoS 2 flow two, so they interleave).
    let mut outcomes: HashMap<Command, Vec<u16>> = HashMap::new();
    for _ in &mids {
        let e = expect(&rx, "PUBACK/PUBCOMP", |e| {
            matches!(e.command, Command::PubAck | Command::PubComp)
        });
        outcomes.entry(e.command).or_default().push(e.mid);
    }
    for (command, qos) in [
        (Command::PubAck, QoS::AtLeastOnce),
        (Command::PubComp, QoS::ExactlyOnce),
    ] {
        let want: Vec<u16> = mids.iter().filter(|m| m.1 == qos).map(|m| m.0).collect();
        assert_eq!(outcomes[&command], want, "{command:?}");
    }
    assert_eq!((client.queued_len(), client.inflight_len()), (0, 0));
    // QoS 2, so that it is delivered (on PUBREL) after every QoS 2 message
    // routed before it; QoS 1 ones are delivered even earlier, on PUBLISH.
    client
        .publish("q/end", b"", QoS::ExactlyOnce, false)
        .unwrap();

    // The observer gets the ten in order per QoS (mosquitto routes QoS 2 on
    // PUBREL, so QoS 1 and 2 may interleave differently), then the marker:
    // the refused "overflow" never went out.
    let mut got: HashMap<QoS, Vec<String>> = HashMap::new();
    loop {
        let e = expect_message(&obs_rx, "q/ message");
        if e.topic.as_deref() == Some("q/end") {
            break;
        }
        got.entry(e.qos.unwrap())
            .or_default()
            .push(String::from_utf8(e.payload).unwrap());
    }
    let strs = |r: &[usize]| r.iter().map(|i| i.to_string()).collect::<Vec<_>>();
    assert_eq!(got[&QoS::AtLeastOnce], strs(&[0, 2, 4, 6, 8]));
    assert_eq!(got[&QoS::ExactlyOnce], strs(&[1, 3, 5, 7, 9]));
    client.close();
    observer.close();
}

#[test]
fn the_offline_queue_is_bounded_by_bytes_and_may_hold_qos0() {
    let broker = Broker::start();
    let (observer, obs_rx) = recorded_client("queue-bytes-observer", true);
    connect_direct(&observer, &broker);
    observer.subscribe(&[("b/#", QoS::AtLeastOnce)]).unwrap();
    expect(&obs_rx, "SUBACK", |e| e.command == Command::SubAck);

    // Never connected yet: offline from the start.
    let (client, rx) = recorded_client("queue-bytes", true);
    client.set_queue_limits(100, 64).unwrap();
    let twenty = [b'x'; 20];
    let m1 = client
        .publish("b/1", &twenty, QoS::AtLeastOnce, false)
        .unwrap();
    let m2 = client
        .publish("b/2", &twenty, QoS::ExactlyOnce, false)
        .unwrap();
    assert_eq!(client.queued_bytes(), 46);
    assert_eq!(
        client.publish("b/3", &twenty, QoS::AtLeastOnce, false),
        Err(Error::QueueFull),
        "46 + 23 bytes > 64"
    );
    assert_eq!(
        client.publish("b/0", &[b'z'; 10], QoS::AtMostOnce, false),
        Err(Error::NotConnected)
    );
    client.set_queue_qos0_offline(true);
    client
        .publish("b/0", &[b'z'; 10], QoS::AtMostOnce, false)
        .unwrap();
    assert_eq!((client.queued_len(), client.queued_bytes()), (3, 59));
    assert_eq!(
        client.publish("b/0", &[b'z'; 10], QoS::AtMostOnce, false),
        Err(Error::QueueFull),
        "QoS 0 counts against the same limits"
    );

    connect_direct(&client, &broker);
    expect(&rx, "PUBACK", |e| {
        e.command == Command::PubAck && e.mid == m1
    });
    expect(&rx, "PUBCOMP", |e| {
        e.command == Command::PubComp && e.mid == m2
    });
    let mut topics: Vec<String> = (0..3)
        .map(|_| expect_message(&obs_rx, "b/ message").topic.unwrap())
        .collect();
    topics.sort();
    assert_eq!(topics, ["b/0", "b/1", "b/2"]);
    assert_eq!(client.queued_len(), 0);
    client.close();
    observer.close();
}

#[test]
fn a_full_inflight_window_queues_and_everything_completes_after_a_reconnection() {
    let broker = Broker::start();
    let proxy = FaultProxy::start(broker.port());
    let (client, rx, observer, obs_rx) = queue_setup(&broker, &proxy, "queue-window", "w/#");
    client.set_max_inflight(2).unwrap();
    client.set_queue_limits(3, 1 << 20).unwrap();

    // The broker never sees these: the window fills and stays full.
    proxy.blackhole(Direction::Up, true);
    let mut mids = Vec::new();
    for i in 0..5 {
        let payload = format!("{i}");
        mids.push(
            client
                .publish("w/m", payload.as_bytes(), QoS::AtLeastOnce, false)
                .unwrap(),
        );
    }
    assert_eq!((client.inflight_len(), client.queued_len()), (2, 3));
    assert_eq!(
        client.publish("w/m", b"overflow", QoS::AtLeastOnce, false),
        Err(Error::QueueFull)
    );
    assert_eq!((client.inflight_len(), client.queued_len()), (2, 3));

    proxy.blackhole(Direction::Up, false);
    proxy.cut_all();
    expect_disconnect(&rx);
    for &mid in &mids {
        let e = expect(&rx, "PUBACK", |e| e.command == Command::PubAck);
        assert_eq!(e.mid, mid);
    }
    for i in 0..5 {
        let e = expect_message(&obs_rx, "w/m");
        assert_eq!(e.payload, format!("{i}").as_bytes());
    }
    assert_eq!((client.inflight_len(), client.queued_len()), (0, 0));
    client.close();
    observer.close();
}

// ---------------------------------------------------------------------------
// Broker restart
// ---------------------------------------------------------------------------

/// Make the broker's database cover everything the clients have seen from it,
/// so that a SIGKILL right after loses nothing the broker acknowledged.
///
/// mosquitto 2.0 saves (with `autosave_on_changes`) only after changes it
/// counts, and in-flight transitions (a PUBLISH sent, a PUBREC or PUBREL
/// received) do not count: killed at a random moment it comes back with a
/// state older than what it already put on the wire, and then reuses a packet
/// id that a subscriber still holds for another message, or answers PUBREL
/// with PUBCOMP for a message it forgot. No client can make up for that, so
/// the test removes it: stop the broker -> client direction at the proxies
/// (what the clients saw is now fixed), force a save (SIGUSR1) and wait until
/// it has finished (a later log line: mosquitto logs from its one loop). The
/// clients keep sending meanwhile; what the broker does with that afterwards
/// is invisible to them, so it may or may not be saved.
fn freeze_and_save(broker: &Broker, proxies: &[&FaultProxy]) {
    use std::io::{Read, Seek, SeekFrom};
    for p in proxies {
        p.blackhole(Direction::Down, true);
    }
    let path = broker.dir().join("mosquitto.log");
    let from = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let since = || {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&path) {
            let _ = f.seek(SeekFrom::Start(from));
            let _ = f.read_to_string(&mut text);
        }
        text
    };
    let pid = broker.pid().expect("broker running") as libc::pid_t;
    // SAFETY: kill(2) on our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR1) }, 0);
    const SAVING: &str = "Saving in-memory database";
    assert!(
        common::wait_until(TIMEOUT, || since().contains(SAVING)),
        "no save"
    );
    let probe = std::net::TcpStream::connect(broker.addr()).unwrap();
    let marker = format!(
        "New connection from {} on port",
        probe.local_addr().unwrap()
    );
    assert!(
        common::wait_until(TIMEOUT, || {
            let text = since();
            text.find(SAVING)
                .is_some_and(|at| text[at..].contains(&marker))
        }),
        "the save did not finish"
    );
}

#[test]
fn a_broker_killed_mid_stream_and_restarted_loses_nothing() {
    const PER_QOS: usize = 1500;
    let broker = Broker::builder()
        .persistence(true)
        .extra_config("max_queued_messages 0")
        .start();
    let sub_proxy = FaultProxy::start(broker.port());
    let pub_proxy = FaultProxy::start(broker.port());
    let reconnect = Some((ms(20), ms(250)));
    let (sub, sub_rx) = recorded_client("restart-sub", false);
    sub.set_reconnect(reconnect).unwrap();
    sub.connect(HOST, 30, sub_proxy.port()).unwrap();
    sub.loop_start(None).unwrap();
    expect_connack(&sub_rx);
    sub.subscribe(&[("restart/#", QoS::ExactlyOnce)]).unwrap();
    expect(&sub_rx, "SUBACK", |e| e.command == Command::SubAck);
    let (publisher, pub_rx) = recorded_client("restart-pub", false);
    publisher.set_reconnect(reconnect).unwrap();
    publisher.set_max_inflight(20).unwrap();
    publisher.connect(HOST, 30, pub_proxy.port()).unwrap();
    publisher.loop_start(None).unwrap();
    expect_connack(&pub_rx);

    let started = Instant::now();
    let (milestones, reached) = channel();
    let mut at_kill = Vec::new();
    let expected: HashMap<u16, (QoS, usize)> = thread::scope(|s| {
        let publishing = s.spawn(|| {
            let mut mids = HashMap::new();
            for i in 0..PER_QOS {
                for (topic, qos) in [
                    ("restart/1", QoS::AtLeastOnce),
                    ("restart/2", QoS::ExactlyOnce),
                ] {
                    let payload = format!("{i}");
                    let mid = publisher
                        .publish(topic, payload.as_bytes(), qos, false)
                        .unwrap();
                    assert!(mids.insert(mid, (qos, i)).is_none(), "mid {mid} reused");
                }
                if i > 0 && i % (PER_QOS / 3) == 0 {
                    let _ = milestones.send(i);
                }
                // A steady stream rather than one burst, so the kills land mid-stream.
                thread::sleep(ms(1));
            }
            mids
        });
        // SIGKILL at a third and at two thirds of the stream, restart on the
        // same port; the clients notice and reconnect on their own.
        for _ in 0..2 {
            reached.recv_timeout(Duration::from_secs(30)).unwrap();
            freeze_and_save(&broker, &[&sub_proxy, &pub_proxy]);
            at_kill.push((publisher.inflight_len(), publisher.queued_len()));
            broker.kill();
            // Bytes the broker wrote after the save may still sit in the
            // proxies: lift the blackhole only once the old connections are
            // gone (attempts while the broker is down never register).
            for p in [&sub_proxy, &pub_proxy] {
                assert!(common::wait_until(TIMEOUT, || p.active() == 0));
                p.blackhole(Direction::Down, false);
            }
            broker.restart();
        }
        publishing.join().unwrap()
    });
    let published_in = started.elapsed();

    let mut received: HashMap<QoS, Vec<usize>> = HashMap::new();
    let mut outcomes: HashMap<u16, usize> = HashMap::new();
    let mut losses = 0;
    let mut reconnects = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let complete = |received: &HashMap<QoS, Vec<usize>>, outcomes: &HashMap<u16, usize>| {
        outcomes.len() == expected.len()
            && [QoS::AtLeastOnce, QoS::ExactlyOnce].iter().all(|q| {
                let mut seen = received.get(q).cloned().unwrap_or_default();
                seen.sort_unstable();
                seen.dedup();
                seen.len() == PER_QOS
            })
    };
    while !complete(&received, &outcomes) && Instant::now() < deadline {
        while let Ok(e) = sub_rx.recv_timeout(ms(10)) {
            match e.command {
                _ if e.is_message() => {
                    let i: usize = String::from_utf8(e.payload).unwrap().parse().unwrap();
                    received.entry(e.qos.unwrap()).or_default().push(i);
                }
                Command::Disconnect => losses += 1,
                Command::ConnAck => reconnects.push(("sub", e.session_present)),
                _ => {}
            }
        }
        while let Ok(e) = pub_rx.try_recv() {
            match e.command {
                Command::PubAck | Command::PubComp => *outcomes.entry(e.mid).or_default() += 1,
                Command::Disconnect => losses += 1,
                Command::ConnAck => reconnects.push(("pub", e.session_present)),
                _ => {}
            }
        }
    }
    let q1 = received.remove(&QoS::AtLeastOnce).unwrap_or_default();
    let q2 = received.remove(&QoS::ExactlyOnce).unwrap_or_default();
    let missing = |got: &[usize]| {
        let got: std::collections::HashSet<usize> = got.iter().copied().collect();
        (0..PER_QOS)
            .filter(|i| !got.contains(i))
            .collect::<Vec<_>>()
    };
    let unfinished: Vec<_> = expected
        .iter()
        .filter(|(mid, _)| !outcomes.contains_key(mid))
        .map(|(_, m)| m)
        .collect();
    eprintln!(
        "broker restart: 2 SIGKILLs (publisher in flight / queued at each: {at_kill:?}), \
         {losses} connection losses reported, reconnections {reconnects:?}; {} messages published in {published_in:?}, all done after {:?}; \
         QoS 1: {} received ({} duplicates), QoS 2: {} received",
        expected.len(),
        started.elapsed(),
        q1.len(),
        q1.len().saturating_sub(PER_QOS),
        q2.len()
    );
    assert!(
        at_kill.iter().all(|&(inflight, _)| inflight > 0),
        "the kills must land mid-flow: {at_kill:?}"
    );
    assert!(
        losses >= 4,
        "each kill ends both connections: {losses} reported"
    );
    assert!(
        reconnects.len() == 4 && reconnects.iter().all(|&(_, present)| present),
        "the persistent sessions survive the restarts: {reconnects:?}"
    );
    assert!(unfinished.is_empty(), "no final outcome for {unfinished:?}");
    assert!(
        outcomes.values().all(|&n| n == 1),
        "an outcome reported twice"
    );
    assert_eq!(missing(&q1), Vec::<usize>::new(), "QoS 1 lost");
    assert_eq!(missing(&q2), Vec::<usize>::new(), "QoS 2 lost");
    let misplaced: Vec<(usize, usize)> = q2
        .iter()
        .enumerate()
        .filter(|&(at, &seq)| at != seq)
        .map(|(at, &seq)| (at, seq))
        .take(10)
        .collect();
    // Exactly once. Order is not asserted across a broker crash: the restored
    // broker resends PUBREL for messages whose PUBREC it had saved ahead of
    // PUBLISH for those it had not (MQTT 4.6 orders each kind, not the two
    // together), and QoS 2 is delivered on PUBREL as API.md requires. Order
    // without a crash is asserted by the chaos tests.
    assert_eq!(q2.len(), PER_QOS, "QoS 2 duplicated");
    if !misplaced.is_empty() {
        eprintln!("QoS 2 reordered by the restart, first (position, seq): {misplaced:?}");
    }
    publisher.close();
    sub.close();
}

#[test]
fn a_close_that_arrives_with_the_last_packet_is_noticed_at_once() {
    // Data and FIN are both queued before the client's next poll, so one
    // readiness edge reports both: the reader must go on past the data to the
    // end of stream instead of waiting for an edge that will not come.
    let peer = ScriptedPeer::bind();
    let (client, events) = recorded_client("fin-with-data", true);
    client.set_reconnect(None).unwrap();
    let port = peer.port();
    let broker_side = thread::spawn(move || {
        let mut conn = peer.accept(TIMEOUT);
        conn.handshake(false, TIMEOUT);
        conn
    });
    client.connect(HOST, 60, port).unwrap();
    let mut conn = broker_side.join().unwrap();
    conn.send_packet(&Packet::Publish(mqtt::protocol::codec::Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "last/words",
        pkid: 0,
        payload: b"bye",
        properties: None,
    }));
    conn.close();
    let started = Instant::now();
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|e: &Event| e.command == Command::Disconnect)
    {
        client.run_once(Duration::from_secs(30)).ok();
        seen.extend(drain(&events));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "end of stream not noticed after {:?}; events: {seen:?}",
            started.elapsed()
        );
    }
    assert!(
        seen.iter()
            .any(|e| e.topic.as_deref() == Some("last/words"))
    );
    let lost = seen
        .iter()
        .find(|e| e.command == Command::Disconnect)
        .unwrap();
    assert_eq!(lost.error, Some(Error::ConnectionLost));
    client.close();
}

// ---------------------------------------------------------------------------
// Name resolution on automatic reconnection
// ---------------------------------------------------------------------------

/// A resolver that answers `first` on its first call and `later()` after, and
/// counts its calls.
fn scripted_resolver(
    first: std::net::SocketAddr,
    later: impl Fn() -> std::io::Result<Vec<std::net::SocketAddr>> + Send + Sync + 'static,
) -> (mqtt::Resolver, Arc<std::sync::atomic::AtomicUsize>) {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let resolver: mqtt::Resolver = Arc::new(move |host: &str, _port: u16| {
        assert_eq!(host, "broker.invalid");
        match counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => Ok(vec![first]),
            _ => later(),
        }
    });
    (resolver, calls)
}

/// Connect `client` to "broker.invalid" (answered by its resolver) where `peer`
/// accepts it, then start the loop thread.
fn start_by_name(client: &Client, peer: &ScriptedPeer) -> PeerConn {
    thread::scope(|s| {
        let script = s.spawn(|| accept_handshake(peer, false).0);
        assert_eq!(client.connect("broker.invalid", 60, 1883), Ok(false));
        let conn = script.join().unwrap();
        client.loop_start(None).unwrap();
        conn
    })
}

#[test]
fn automatic_reconnection_resolves_the_host_name_again() {
    // The broker moved (DNS failover): the old address still accepts TCP but is
    // not where the name points any more.
    let (old, new) = (ScriptedPeer::bind(), ScriptedPeer::bind());
    let new_addr = new.addr();
    let (resolver, calls) = scripted_resolver(old.addr(), move || Ok(vec![new_addr]));
    let (client, rx) = recorded_client("re-resolve", true);
    client.set_resolver(Some(resolver));
    client.set_reconnect(Some((ms(20), ms(200)))).unwrap();
    let conn = start_by_name(&client, &old);
    expect_connack(&rx);

    conn.close();
    assert_eq!(expect_disconnect(&rx).error, Some(Error::ConnectionLost));
    let (_conn, _) = accept_handshake(&new, false);
    expect_connack(&rx);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    old.expect_no_connection(ms(100));
    client.close();
}

#[test]
fn a_failed_resolution_on_reconnection_falls_back_to_the_last_known_addresses() {
    let peer = ScriptedPeer::bind();
    let (resolver, calls) =
        scripted_resolver(peer.addr(), || Err(std::io::Error::other("resolver down")));
    let (client, rx) = recorded_client("re-resolve-fails", true);
    client.set_resolver(Some(resolver));
    client.set_reconnect(Some((ms(20), ms(200)))).unwrap();
    let conn = start_by_name(&client, &peer);
    expect_connack(&rx);

    conn.close();
    expect_disconnect(&rx);
    let (_conn, _) = accept_handshake(&peer, false);
    expect_connack(&rx);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    client.close();
}

#[test]
fn a_resolver_that_hangs_past_the_connect_timeout_does_not_stop_reconnection() {
    let peer = ScriptedPeer::bind();
    let (resolver, calls) = scripted_resolver(peer.addr(), || {
        thread::sleep(Duration::from_secs(3));
        Err(std::io::Error::other("too late"))
    });
    let (client, rx) = recorded_client("re-resolve-hangs", true);
    client.set_resolver(Some(resolver));
    client.set_reconnect(Some((ms(20), ms(200)))).unwrap();
    client.set_connect_timeout(ms(300)).unwrap();
    let conn = start_by_name(&client, &peer);
    expect_connack(&rx);

    conn.close();
    expect_disconnect(&rx);
    let started = Instant::now();
    let (_conn, _) = accept_handshake(&peer, false);
    expect_connack(&rx);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "reconnected after {:?}: the attempt waited for the resolver",
        started.elapsed()
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    client.close();
}

#[test]
fn an_asynchronous_connect_whose_name_does_not_resolve_yet_keeps_trying_to_resolve_it() {
    let peer = ScriptedPeer::bind();
    let addr = peer.addr();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let (client, rx) = recorded_client("resolve-later", true);
    client.set_resolver(Some(Arc::new(move |_: &str, _: u16| {
        match counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 | 1 => Err(std::io::Error::other("not yet")),
            _ => Ok(vec![addr]),
        }
    })));
    client.set_reconnect(Some((ms(20), ms(100)))).unwrap();
    client.loop_start(None).unwrap();
    client.connect_async("broker.invalid", 60, 1883).unwrap();
    assert_eq!(expect_disconnect(&rx).error, Some(Error::Dns));
    assert_eq!(expect_disconnect(&rx).error, Some(Error::Dns));
    let (_conn, _) = accept_handshake(&peer, false);
    expect_connack(&rx);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    client.close();
}

#[test]
fn automatic_reconnection_to_localhost_resolves_through_the_system() {
    let peer = ScriptedPeer::bind();
    let (client, rx) = recorded_client("re-resolve-system", true);
    client.set_reconnect(Some((ms(20), ms(200)))).unwrap();
    let conn = thread::scope(|s| {
        let script = s.spawn(|| accept_handshake(&peer, false).0);
        assert_eq!(client.connect("localhost", 60, peer.port()), Ok(false));
        script.join().unwrap()
    });
    client.loop_start(None).unwrap();
    expect_connack(&rx);
    conn.close();
    expect_disconnect(&rx);
    let (_conn, _) = accept_handshake(&peer, false);
    expect_connack(&rx);
    client.close();
}

#[test]
fn disconnect_during_a_connection_attempt_abandons_it() {
    let peer = ScriptedPeer::bind();
    let (client, rx) = recorded_client("abandon-attempt", true);
    client.set_reconnect(Some((ms(20), ms(100)))).unwrap();
    client.loop_start(None).unwrap();
    client.connect_async(HOST, 60, peer.port()).unwrap();
    let mut conn = peer.accept(TIMEOUT);
    conn.expect_type(1, TIMEOUT); // CONNECT, left without CONNACK
    assert_eq!(
        client.connect_async(HOST, 60, peer.port()),
        Err(Error::AlreadyConnected),
        "a second attempt while one is under way"
    );
    assert_eq!(client.disconnect(), Ok(()));
    assert_eq!(expect_disconnect(&rx).error, None);
    conn.expect_closed(TIMEOUT);
    peer.expect_no_connection(ms(300));
    assert!(!client.is_connected());
    // Abandoned, not wedged: a new connect works.
    let (_conn, _) = thread::scope(|s| {
        let script = s.spawn(|| accept_handshake(&peer, false));
        client.connect(HOST, 60, peer.port()).unwrap();
        script.join().unwrap()
    });
    expect_connack(&rx);
    client.close();
}

#[test]
fn a_second_connect_while_the_name_is_still_resolving_is_refused() {
    let peer = ScriptedPeer::bind();
    let addr = peer.addr();
    let (release_tx, release) = channel::<()>();
    let release = std::sync::Mutex::new(release);
    let (client, rx) = recorded_client("connect-while-resolving", true);
    client.set_resolver(Some(Arc::new(move |_: &str, _: u16| {
        let _ = release.lock().unwrap().recv_timeout(TIMEOUT);
        Ok(vec![addr])
    })));
    client.loop_start(None).unwrap();
    client.connect_async("broker.invalid", 60, 1883).unwrap();
    assert_eq!(
        client.connect_async("broker.invalid", 60, 1883),
        Err(Error::AlreadyConnected)
    );
    assert_eq!(
        client.connect("broker.invalid", 60, 1883),
        Err(Error::AlreadyConnected)
    );
    release_tx.send(()).unwrap();
    let (_conn, _) = accept_handshake(&peer, false);
    expect_connack(&rx);
    peer.expect_no_connection(ms(200));
    client.close();
}

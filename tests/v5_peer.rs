//! MQTT 5.0 behaviours a real mosquitto will not produce on demand, checked
//! against a scripted peer that plays the broker byte by byte: the limits a
//! CONNACK announces, topic aliases both ways, server DISCONNECTs and
//! redirections, refused acks, and the DISCONNECT reason codes the client
//! sends when the server breaks the protocol.

mod common;

use std::collections::VecDeque;
use std::sync::mpsc::Receiver;
use std::thread;
use std::time::Duration;

use common::events::{
    Event, drain, expect, expect_connack, expect_disconnect, expect_message, recorded_client,
};
use common::{HOST, OwnedPacket, PeerConn, ScriptedPeer, TIMEOUT, encode};
use mqtt::protocol::codec::{
    Ack, Packet, Properties, PropertiesBuf, ProtocolVersion, Publish, QoS,
};
use mqtt::protocol::properties as prop;
use mqtt::{Client, Command, Error};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A property list built by `build`.
fn props(build: impl FnOnce(&mut PropertiesBuf)) -> PropertiesBuf {
    let mut buf = PropertiesBuf::new();
    build(&mut buf);
    buf
}

/// A recorded MQTT 5 client whose automatic reconnection retries quickly.
fn v5_client(id: &str, clean: bool) -> (Client, Receiver<Event>) {
    let (client, rx) = recorded_client(id, clean);
    client.set_protocol(ProtocolVersion::V5).unwrap();
    client.set_reconnect(Some((ms(20), ms(100)))).unwrap();
    (client, rx)
}

/// `client.connect` (the loop thread running) to `peer`, which answers an MQTT
/// 5 CONNACK success carrying `connack`: the broker side and the CONNECT.
fn connect_v5(
    client: &Client,
    peer: &ScriptedPeer,
    connack: Properties<'_>,
) -> (PeerConn, OwnedPacket) {
    thread::scope(|s| {
        let script = s.spawn(|| {
            let mut conn = peer.accept(TIMEOUT);
            let connect = conn.handshake_v5(false, connack, TIMEOUT);
            (conn, connect)
        });
        let result = client.connect(HOST, 60, peer.port());
        let scripted = script.join().unwrap();
        assert_eq!(result, Ok(false), "connect");
        scripted
    })
}

/// Broker side of the next (automatic) MQTT 5 connection.
fn accept_v5(
    peer: &ScriptedPeer,
    session_present: bool,
    connack: Properties<'_>,
) -> (PeerConn, OwnedPacket) {
    let mut conn = peer.accept(TIMEOUT);
    let connect = conn.handshake_v5(session_present, connack, TIMEOUT);
    (conn, connect)
}

/// The properties of a PUBLISH (MQTT 5 form: always present).
fn publish_props<'a>(p: &Publish<'a>) -> Properties<'a> {
    p.properties
        .expect("an MQTT 5 PUBLISH has a property section")
}

/// The DISCONNECT callback, asserting that no message was delivered before it.
fn disconnect_without_messages(rx: &Receiver<Event>) -> Event {
    expect(rx, "DISCONNECT", |e| {
        assert!(!e.is_message(), "a message was delivered: {e:?}");
        e.command == Command::Disconnect
    })
}

/// The peer reads exactly one DISCONNECT with `reason_code` before the client
/// closes the connection.
fn expect_disconnect_packet(conn: &mut PeerConn, reason_code: u8) {
    let before_close = conn.expect_closed(TIMEOUT);
    let codes: Vec<(u8, Option<u8>)> = before_close
        .iter()
        .map(|p| (p.packet_type(), p.packet().reason_code()))
        .collect();
    assert_eq!(
        codes,
        [(14, Some(reason_code))],
        "one DISCONNECT {reason_code:#04x} before the close: {before_close:?}"
    );
}

// ---------------------------------------------------------------------------
// 1. Receive Maximum
// ---------------------------------------------------------------------------

#[test]
fn the_servers_receive_maximum_bounds_unacknowledged_publishes() {
    let (client, rx) = v5_client("v5-receive-max", true);
    client.loop_start(None).unwrap();
    let peer = ScriptedPeer::bind();
    let connack = props(|p| p.push_int(prop::RECEIVE_MAXIMUM, 2).unwrap());
    let (mut conn, _) = connect_v5(&client, &peer, connack.as_properties());
    expect_connack(&rx);

    let mids: Vec<u16> = (0..6)
        .map(|i| {
            client
                .publish(&format!("rm/{i}"), b"m", QoS::AtLeastOnce, false)
                .unwrap()
        })
        .collect();
    assert_eq!(client.inflight_len(), 2, "the window is the server's 2");
    assert_eq!(client.queued_len(), 4);

    let mut outstanding = VecDeque::new();
    let mut received = Vec::new();
    while received.len() < mids.len() {
        while outstanding.len() < 2 && received.len() < mids.len() {
            let p = conn.expect_type(3, TIMEOUT);
            let pkid = p.publish().pkid;
            outstanding.push_back(pkid);
            received.push(pkid);
        }
        // Two unacknowledged: not one byte more until the peer acks.
        conn.expect_silence(ms(150));
        let oldest = outstanding.pop_front().unwrap();
        conn.send_packet(&Packet::puback(oldest));
    }
    for pkid in outstanding {
        conn.send_packet(&Packet::puback(pkid));
    }
    assert_eq!(received, mids, "sent in publish order");
    for &mid in &mids {
        let ack = expect(&rx, "PUBACK", |e| {
            e.command == Command::PubAck && e.mid == mid
        });
        assert_eq!((ack.error, ack.reason_code), (None, 0));
    }
    assert_eq!(client.inflight_len() + client.queued_len(), 0);
    client.close();
}

// ---------------------------------------------------------------------------
// 2. Maximum Packet Size
// ---------------------------------------------------------------------------

#[test]
fn a_publish_above_the_servers_maximum_packet_size_is_refused_and_not_sent() {
    const MAX: usize = 64;
    let (client, rx) = v5_client("v5-max-packet", true);
    client.loop_start(None).unwrap();
    let peer = ScriptedPeer::bind();
    let connack = props(|p| p.push_int(prop::MAXIMUM_PACKET_SIZE, MAX as u32).unwrap());
    let (mut conn, _) = connect_v5(&client, &peer, connack.as_properties());
    expect_connack(&rx);

    // QoS 1 PUBLISH to "t": fixed header 2, topic 3, id 2, property length 1.
    let fits = vec![b'f'; MAX - 8];
    let too_big = vec![b'x'; MAX - 7];
    assert_eq!(
        client.publish("t", &too_big, QoS::AtLeastOnce, false),
        Err(Error::PacketTooLarge)
    );
    assert_eq!(
        client.publish("t", &[b'x'; MAX - 5], QoS::AtMostOnce, false),
        Err(Error::PacketTooLarge),
        "QoS 0 (no packet id)"
    );
    assert_eq!(client.inflight_len() + client.queued_len(), 0);

    let mid = client.publish("t", &fits, QoS::AtLeastOnce, false).unwrap();
    let p = conn.expect_type(3, TIMEOUT);
    assert_eq!(p.bytes().len(), MAX, "the largest packet allowed: {p:?}");
    assert_eq!((p.publish().pkid, p.publish().payload), (mid, &fits[..]));
    conn.send_packet(&Packet::puback(mid));
    expect(&rx, "PUBACK", |e| {
        e.command == Command::PubAck && e.mid == mid
    });
    client.close();
}

// ---------------------------------------------------------------------------
// 3. Maximum QoS, Retain Available
// ---------------------------------------------------------------------------

#[test]
fn maximum_qos_and_retain_available_refuse_what_the_server_cannot_take() {
    let (client, rx) = v5_client("v5-max-qos", true);
    client.loop_start(None).unwrap();
    let peer = ScriptedPeer::bind();
    let connack = props(|p| {
        p.push_int(prop::MAXIMUM_QOS, 1).unwrap();
        p.push_int(prop::RETAIN_AVAILABLE, 0).unwrap();
    });
    let (mut conn, _) = connect_v5(&client, &peer, connack.as_properties());
    expect_connack(&rx);

    assert_eq!(
        client.publish("q/2", b"x", QoS::ExactlyOnce, false),
        Err(Error::NotSupported)
    );
    assert_eq!(
        client.publish("q/r", b"x", QoS::AtMostOnce, true),
        Err(Error::NotSupported)
    );
    assert_eq!(
        client.publish("q/r", b"x", QoS::AtLeastOnce, true),
        Err(Error::NotSupported)
    );
    assert_eq!(client.inflight_len() + client.queued_len(), 0);

    // The first thing on the wire is the allowed publish.
    let mid = client
        .publish("q/1", b"ok", QoS::AtLeastOnce, false)
        .unwrap();
    let p = conn.expect_type(3, TIMEOUT);
    let p = p.publish();
    assert_eq!((p.topic, p.qos, p.retain), ("q/1", QoS::AtLeastOnce, false));
    conn.send_packet(&Packet::puback(mid));
    expect(&rx, "PUBACK", |e| {
        e.command == Command::PubAck && e.mid == mid
    });
    client.close();
}

/// What was accepted offline and breaks the limits the CONNACK then announces
/// is not sent (the server would close the connection for it): each QoS 1/2
/// message gets its PUBACK/PUBCOMP callback, each request its SUBACK/UNSUBACK
/// callback, with the error the same call after the CONNACK would have
/// returned, and the rest goes out.
#[test]
fn messages_queued_before_the_connack_obey_its_limits() {
    const MAX: usize = 64;
    let (client, rx) = v5_client("v5-queued-limits", true);
    client.set_queue_qos0_offline(true);
    let too_big = client
        .publish("t", &[b'x'; MAX], QoS::AtLeastOnce, false)
        .unwrap();
    let retained = client.publish("t", b"r", QoS::AtLeastOnce, true).unwrap();
    let qos2 = client.publish("t", b"2", QoS::ExactlyOnce, false).unwrap();
    client
        .publish("t", &[b'y'; MAX], QoS::AtMostOnce, false)
        .unwrap();
    let fine = client.publish("t", b"ok", QoS::AtLeastOnce, false).unwrap();
    assert_eq!(client.queued_len(), 5);
    let long_filter = "f/".repeat(MAX / 2);
    let big_subscribe = client
        .subscribe(&[(long_filter.as_str(), QoS::AtLeastOnce)])
        .unwrap();
    let big_unsubscribe = client.unsubscribe(&[long_filter.as_str()]).unwrap();
    client.loop_start(None).unwrap();
    let peer = ScriptedPeer::bind();
    let connack = props(|p| {
        p.push_int(prop::MAXIMUM_PACKET_SIZE, MAX as u32).unwrap();
        p.push_int(prop::MAXIMUM_QOS, 1).unwrap();
        p.push_int(prop::RETAIN_AVAILABLE, 0).unwrap();
    });
    let (mut conn, _) = connect_v5(&client, &peer, connack.as_properties());
    expect_connack(&rx);
    let refused = |mid: u16, command: Command, error: Error| {
        expect(&rx, "the refusal", |e| {
            e.command == command && e.mid == mid && e.error == Some(error)
        });
    };
    refused(too_big, Command::PubAck, Error::PacketTooLarge);
    refused(retained, Command::PubAck, Error::NotSupported);
    refused(qos2, Command::PubComp, Error::NotSupported);
    refused(big_subscribe, Command::SubAck, Error::PacketTooLarge);
    refused(big_unsubscribe, Command::UnsubAck, Error::PacketTooLarge);
    // Only the message the server can take reaches it.
    let p = conn.expect_type(3, TIMEOUT);
    assert_eq!((p.publish().pkid, p.publish().payload), (fine, &b"ok"[..]));
    conn.send_packet(&Packet::puback(fine));
    expect(&rx, "PUBACK", |e| {
        e.command == Command::PubAck && e.mid == fine && e.error.is_none()
    });
    conn.expect_silence(ms(100));
    assert_eq!(client.inflight_len() + client.queued_len(), 0);
    client.close();
}

// ---------------------------------------------------------------------------
// 4. Assigned Client Identifier
// ---------------------------------------------------------------------------

#[test]
fn the_assigned_client_identifier_is_used_on_reconnection() {
    let (client, rx) = v5_client("", false);
    client.loop_start(None).unwrap();
    let peer = ScriptedPeer::bind();
    let connack = props(|p| {
        p.push_str(prop::ASSIGNED_CLIENT_IDENTIFIER, "auto-7f3a")
            .unwrap()
    });
    let (conn, connect) = connect_v5(&client, &peer, connack.as_properties());
    assert_eq!(connect.connect().client_id, "");
    assert!(!connect.connect().clean_session);
    expect_connack(&rx);

    conn.close();
    assert_eq!(expect_disconnect(&rx).error, Some(Error::ConnectionLost));
    let (_conn, again) = accept_v5(&peer, true, Properties::EMPTY);
    let again = again.connect();
    assert_eq!(again.client_id, "auto-7f3a");
    assert!(!again.clean_session, "resumes the session");
    expect(&rx, "CONNACK", |e| {
        e.command == Command::ConnAck && e.session_present
    });
    client.close();
}

// ---------------------------------------------------------------------------
// 5. Outgoing topic aliases
// ---------------------------------------------------------------------------

/// The topic and Topic Alias of the next PUBLISH, acknowledged.
fn next_aliased(conn: &mut PeerConn) -> (String, Option<u32>) {
    let p = conn.expect_type(3, TIMEOUT);
    let publish = p.publish();
    conn.send_packet(&Packet::puback(publish.pkid));
    (
        publish.topic.to_owned(),
        publish_props(&publish).u32_of(prop::TOPIC_ALIAS),
    )
}

#[test]
fn outgoing_topic_aliases_follow_the_servers_maximum_and_restart_on_reconnection() {
    let (client, rx) = v5_client("v5-alias-out", true);
    client.set_topic_alias_max(10).unwrap();
    client.loop_start(None).unwrap();
    let peer = ScriptedPeer::bind();
    let connack = props(|p| p.push_int(prop::TOPIC_ALIAS_MAXIMUM, 2).unwrap());
    let (mut conn, _) = connect_v5(&client, &peer, connack.as_properties());
    expect_connack(&rx);

    let mut seen = Vec::new();
    for topic in ["a", "a", "b", "c", "a"] {
        client
            .publish(topic, topic.as_bytes(), QoS::AtLeastOnce, false)
            .unwrap();
        seen.push(next_aliased(&mut conn));
    }
    let want = [
        ("a", Some(1)),
        ("", Some(1)),
        ("b", Some(2)),
        ("c", None),
        ("", Some(1)),
    ]
    .map(|(t, a)| (t.to_owned(), a));
    assert_eq!(seen, want);

    conn.close();
    assert_eq!(expect_disconnect(&rx).error, Some(Error::ConnectionLost));
    let (mut conn, _) = accept_v5(&peer, false, connack.as_properties());
    expect_connack(&rx);
    let mut seen = Vec::new();
    for topic in ["b", "b"] {
        client
            .publish(topic, b"again", QoS::AtLeastOnce, false)
            .unwrap();
        seen.push(next_aliased(&mut conn));
    }
    assert_eq!(
        seen,
        [("b".to_owned(), Some(1)), (String::new(), Some(1))],
        "aliases are forgotten with the connection"
    );
    client.close();
}

// ---------------------------------------------------------------------------
// 6. Incoming topic aliases
// ---------------------------------------------------------------------------

fn aliased_publish(topic: &str, alias: u32, qos: QoS, pkid: u16, payload: &[u8]) -> Vec<u8> {
    let properties = props(|p| p.push_int(prop::TOPIC_ALIAS, alias).unwrap());
    encode(&Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic,
        pkid,
        payload,
        properties: Some(properties.as_properties()),
    }))
}

#[test]
fn incoming_topic_aliases_are_resolved_and_invalid_ones_end_the_connection() {
    let (client, rx) = v5_client("v5-alias-in", true);
    let announce = props(|p| p.push_int(prop::TOPIC_ALIAS_MAXIMUM, 5).unwrap());
    client
        .set_connect_properties(Some(announce.as_properties()))
        .unwrap();
    client.loop_start(None).unwrap();
    let peer = ScriptedPeer::bind();
    let (mut conn, connect) = connect_v5(&client, &peer, Properties::EMPTY);
    let announced = connect.connect().properties.unwrap();
    assert_eq!(announced.u32_of(prop::TOPIC_ALIAS_MAXIMUM), Some(5));
    expect_connack(&rx);

    conn.send(&aliased_publish("x/y", 1, QoS::AtMostOnce, 0, b"0"));
    conn.send(&aliased_publish("", 1, QoS::AtLeastOnce, 1, b"1"));
    assert_eq!(conn.expect_type(4, TIMEOUT).pkid(), Some(1));
    conn.send(&aliased_publish("", 1, QoS::ExactlyOnce, 2, b"2"));
    assert_eq!(conn.expect_type(5, TIMEOUT).pkid(), Some(2));
    conn.send_packet(&Packet::pubrel(2));
    assert_eq!(conn.expect_type(7, TIMEOUT).pkid(), Some(2));
    for (payload, command) in [
        (b"0", Command::Publish),
        (b"1", Command::Publish),
        (b"2", Command::PubRel),
    ] {
        let m = expect_message(&rx, "aliased message");
        assert_eq!(
            (m.command, m.topic.as_deref(), &m.payload[..]),
            (command, Some("x/y"), &payload[..])
        );
    }

    // Above the maximum we announced: Topic Alias invalid.
    conn.send(&aliased_publish("z", 7, QoS::AtMostOnce, 0, b"bad"));
    expect_disconnect_packet(&mut conn, 0x94);
    let bye = disconnect_without_messages(&rx);
    assert_eq!(
        (bye.error, bye.reason_code),
        (Some(Error::TopicAliasInvalid), 0x94)
    );

    // An empty topic with an alias never set on this connection, whether
    // never set at all (2) or set on the previous connection (1).
    for alias in [2, 1] {
        let (mut conn, _) = accept_v5(&peer, false, Properties::EMPTY);
        expect_connack(&rx);
        conn.send(&aliased_publish("", alias, QoS::AtLeastOnce, 3, b"unknown"));
        expect_disconnect_packet(&mut conn, 0x82);
        let bye = disconnect_without_messages(&rx);
        assert_eq!(
            (bye.error, bye.reason_code),
            (Some(Error::ProtocolViolation), 0x82),
            "alias {alias}"
        );
    }
    client.close();
}

// ---------------------------------------------------------------------------
// 7. Server DISCONNECT
// ---------------------------------------------------------------------------

#[test]
fn server_disconnects_retry_redirect_or_stop_by_reason_code() {
    let max_delay = ms(200);
    let (client, rx) = v5_client("v5-server-disconnect", true);
    client.set_reconnect(Some((ms(20), max_delay))).unwrap();
    client.loop_start(None).unwrap();
    let first = ScriptedPeer::bind();
    let second = ScriptedPeer::bind();
    let (mut conn, _) = connect_v5(&client, &first, Properties::EMPTY);
    expect_connack(&rx);

    // 0x8B Server shutting down: retried.
    let why = props(|p| p.push_str(prop::REASON_STRING, "maintenance").unwrap());
    conn.send_disconnect_v5(0x8B, why.as_properties());
    let before_close = conn.expect_closed(TIMEOUT);
    assert!(
        before_close.is_empty(),
        "nothing answers a server DISCONNECT: {before_close:?}"
    );
    let bye = expect_disconnect(&rx);
    assert_eq!(
        (bye.error, bye.reason_code),
        (Some(Error::ServerDisconnect), 0x8B)
    );
    assert_eq!(bye.props().str_of(prop::REASON_STRING), Some("maintenance"));
    let (mut conn, _) = accept_v5(&first, false, Properties::EMPTY);
    expect_connack(&rx);

    // 0x8A Banned is a CONNACK reason code only (MQTT 5.0 table 3-10 leaves
    // it out of DISCONNECT): a protocol error, answered as one, and retried.
    conn.send(&[0xE0, 0x01, 0x8A]);
    expect_disconnect_packet(&mut conn, 0x82);
    let bye = expect_disconnect(&rx);
    assert_eq!(
        (bye.error, bye.reason_code),
        (Some(Error::ProtocolViolation), 0x82)
    );
    let (mut conn, _) = accept_v5(&first, false, Properties::EMPTY);
    expect_connack(&rx);

    // 0x9C Use another server: the next connection goes there.
    let reference = format!("127.0.0.1:{}", second.port());
    let moved = props(|p| p.push_str(prop::SERVER_REFERENCE, &reference).unwrap());
    conn.send_disconnect_v5(0x9C, moved.as_properties());
    let bye = expect_disconnect(&rx);
    assert_eq!(
        (bye.error, bye.reason_code),
        (Some(Error::ServerDisconnect), 0x9C)
    );
    assert_eq!(
        bye.props().str_of(prop::SERVER_REFERENCE),
        Some(reference.as_str())
    );
    let (mut conn, _) = accept_v5(&second, false, Properties::EMPTY);
    expect_connack(&rx);
    assert!(
        first.try_accept(Duration::ZERO).is_none(),
        "the old server was tried"
    );

    // 0x87 Not authorized: retrying cannot help, no further attempt.
    conn.send_disconnect_v5(0x87, Properties::EMPTY);
    let bye = expect_disconnect(&rx);
    assert_eq!(
        (bye.error, bye.reason_code),
        (Some(Error::ServerDisconnect), 0x87)
    );
    second.expect_no_connection(max_delay * 2);
    first.expect_no_connection(Duration::ZERO);
    assert!(!client.is_connected());
    client.close();
}

#[test]
fn a_requested_disconnect_with_a_reason_code_and_no_properties_is_sent() {
    let (client, rx) = v5_client("v5-disconnect-with", true);
    client.loop_start(None).unwrap();
    let peer = ScriptedPeer::bind();
    let (mut conn, _) = connect_v5(&client, &peer, Properties::EMPTY);
    expect_connack(&rx);

    // 0x04: Disconnect with Will Message.
    client.disconnect_with(0x04, Properties::EMPTY).unwrap();
    let before_close = conn.expect_closed(TIMEOUT);
    let bytes: Vec<&[u8]> = before_close.iter().map(OwnedPacket::bytes).collect();
    assert_eq!(bytes, [&[0xE0, 0x01, 0x04][..]]);
    let bye = expect_disconnect(&rx);
    assert_eq!(bye.error, None);
    client.close();
}

// ---------------------------------------------------------------------------
// 8. CONNACK refusals
// ---------------------------------------------------------------------------

#[test]
fn connack_refusals_report_the_reason_code_and_a_server_reference_redirects() {
    let (client, rx) = v5_client("v5-refused", true);
    client.loop_start(None).unwrap();
    let first = ScriptedPeer::bind();
    let second = ScriptedPeer::bind();

    // 0x87 Not authorized, to a blocking connect.
    let result = thread::scope(|s| {
        s.spawn(|| {
            let mut conn = first.accept(TIMEOUT);
            conn.expect_type(1, TIMEOUT);
            let why = props(|p| p.push_str(prop::REASON_STRING, "no").unwrap());
            conn.send_connack_v5(false, 0x87, why.as_properties());
        });
        client.connect(HOST, 60, first.port())
    });
    assert_eq!(result, Err(Error::RefusedNotAuthorized));
    let refused = expect_connack(&rx);
    assert_eq!((refused.reason_code, refused.return_code), (0x87, 0x87));
    assert_eq!(refused.props().str_of(prop::REASON_STRING), Some("no"));

    // 0x9C Use another server, to connect_async: the automatic retry goes
    // to the referenced server. After the 0x87 above on purpose: that
    // refusal's "stop retrying" must not carry over to this attempt.
    client.connect_async(HOST, 60, first.port()).unwrap();
    let mut conn = first.accept(TIMEOUT);
    conn.expect_type(1, TIMEOUT);
    let reference = format!("127.0.0.1:{}", second.port());
    let moved = props(|p| p.push_str(prop::SERVER_REFERENCE, &reference).unwrap());
    conn.send_connack_v5(false, 0x9C, moved.as_properties());
    let refused = expect_connack(&rx);
    assert_eq!(refused.reason_code, 0x9C);
    assert_eq!(
        expect_disconnect(&rx).error,
        Some(Error::RefusedByBroker),
        "connect_async reports the failed attempt"
    );
    let (_conn, _) = accept_v5(&second, false, Properties::EMPTY);
    let accepted = expect_connack(&rx);
    assert_eq!(accepted.reason_code, 0);
    assert!(client.is_connected());
    client.close();
}

// ---------------------------------------------------------------------------
// 9. Refused PUBACK / PUBREC
// ---------------------------------------------------------------------------

#[test]
fn a_refused_puback_ends_the_flow_and_the_message_is_not_resent() {
    let (client, rx) = v5_client("v5-puback-refused", false);
    client.loop_start(None).unwrap();
    let peer = ScriptedPeer::bind();
    let (mut conn, _) = connect_v5(&client, &peer, Properties::EMPTY);
    expect_connack(&rx);

    let mid = client
        .publish("deny", b"x", QoS::AtLeastOnce, false)
        .unwrap();
    assert_eq!(conn.expect_type(3, TIMEOUT).pkid(), Some(mid));
    let why = props(|p| p.push_str(prop::REASON_STRING, "acl").unwrap());
    conn.send_packet(&Packet::PubAck(Ack {
        pkid: mid,
        reason_code: 0x87,
        properties: Some(why.as_properties()),
    }));
    let ack = expect(&rx, "PUBACK", |e| e.command == Command::PubAck);
    assert_eq!(
        (ack.mid, ack.error, ack.reason_code),
        (mid, Some(Error::RefusedByBroker), 0x87)
    );
    assert_eq!(ack.props().str_of(prop::REASON_STRING), Some("acl"));
    assert_eq!(client.inflight_len(), 0);

    // With the session present, only a new message goes out.
    conn.close();
    expect_disconnect(&rx);
    let (mut conn, _) = accept_v5(&peer, true, Properties::EMPTY);
    expect_connack(&rx);
    let next = client
        .publish("next", b"y", QoS::AtLeastOnce, false)
        .unwrap();
    let p = conn.expect_type(3, TIMEOUT);
    assert_eq!(
        (p.publish().topic, p.publish().pkid, p.publish().dup),
        ("next", next, false),
        "the refused message was resent"
    );
    client.close();
}

#[test]
fn a_refused_pubrec_ends_the_flow_without_pubrel() {
    let (client, rx) = v5_client("v5-pubrec-refused", true);
    client.loop_start(None).unwrap();
    let peer = ScriptedPeer::bind();
    let (mut conn, _) = connect_v5(&client, &peer, Properties::EMPTY);
    expect_connack(&rx);

    let mid = client
        .publish("deny", b"x", QoS::ExactlyOnce, false)
        .unwrap();
    assert_eq!(conn.expect_type(3, TIMEOUT).pkid(), Some(mid));
    conn.send_packet(&Packet::PubRec(Ack {
        pkid: mid,
        reason_code: 0x80,
        properties: Some(Properties::EMPTY),
    }));
    let rec = expect(&rx, "PUBREC", |e| e.command == Command::PubRec);
    assert_eq!((rec.mid, rec.reason_code), (mid, 0x80));
    let comp = expect(&rx, "PUBCOMP", |e| e.command == Command::PubComp);
    assert_eq!(
        (comp.mid, comp.error, comp.reason_code),
        (mid, Some(Error::RefusedByBroker), 0x80)
    );
    assert_eq!(client.inflight_len(), 0);

    // No PUBREL: the next packet is the next message.
    client
        .publish("next", b"y", QoS::AtMostOnce, false)
        .unwrap();
    let p = conn.expect_packet(TIMEOUT);
    assert!(
        p.is(3) && p.publish().topic == "next",
        "expected the next PUBLISH, got {p:?}"
    );
    client.close();
}

// ---------------------------------------------------------------------------
// 10. Malformed input
// ---------------------------------------------------------------------------

/// A QoS 0 PUBLISH to "t" with raw property bytes and payload "x".
fn publish_with_raw_props(raw: &[u8]) -> Vec<u8> {
    let mut body = vec![0x00, 0x01, b't', raw.len() as u8];
    body.extend_from_slice(raw);
    body.push(b'x');
    let mut packet = vec![0x30, body.len() as u8];
    packet.extend_from_slice(&body);
    packet
}

#[test]
fn malformed_input_is_answered_with_the_matching_disconnect_reason() {
    let oversized = encode(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "t",
        pkid: 0,
        payload: &[b'p'; 2000],
        properties: Some(Properties::EMPTY),
    }));
    let cases: [(&str, Vec<u8>, u8, Error); 5] = [
        (
            "property 0x7F does not exist",
            publish_with_raw_props(&[0x7F, 0x00]),
            0x81,
            Error::MalformedPacket,
        ),
        (
            "Payload Format Indicator twice",
            publish_with_raw_props(&[0x01, 0x01, 0x01, 0x01]),
            0x82,
            Error::ProtocolViolation,
        ),
        (
            "Topic Alias 0",
            publish_with_raw_props(&[0x23, 0x00, 0x00]),
            0x82,
            Error::ProtocolViolation,
        ),
        (
            "PUBACK reason code 0x05",
            vec![0x40, 0x03, 0x00, 0x01, 0x05],
            0x82,
            Error::ProtocolViolation,
        ),
        (
            "a packet above our maximum packet size",
            oversized,
            0x95,
            Error::PacketTooLarge,
        ),
    ];
    for (what, bytes, reason_code, error) in cases {
        let (client, rx) = v5_client("v5-malformed", true);
        client.set_max_packet_size(1024).unwrap();
        client.loop_start(None).unwrap();
        let peer = ScriptedPeer::bind();
        let (mut conn, connect) = connect_v5(&client, &peer, Properties::EMPTY);
        assert_eq!(
            connect
                .connect()
                .properties
                .unwrap()
                .u32_of(prop::MAXIMUM_PACKET_SIZE),
            Some(1024)
        );
        expect_connack(&rx);

        conn.send(&bytes);
        expect_disconnect_packet(&mut conn, reason_code);
        let bye = disconnect_without_messages(&rx);
        assert_eq!(
            (bye.error, bye.reason_code),
            (Some(error), reason_code),
            "{what}"
        );

        // Still usable: it reconnects and receives.
        let (mut conn, _) = accept_v5(&peer, false, Properties::EMPTY);
        expect_connack(&rx);
        conn.send(&publish_with_raw_props(&[]));
        let m = expect_message(&rx, "a valid PUBLISH");
        assert_eq!(m.topic.as_deref(), Some("t"), "{what}");
        client.close();
    }
}

// ---------------------------------------------------------------------------
// 11. Our Receive Maximum
// ---------------------------------------------------------------------------

#[test]
fn a_server_exceeding_our_receive_maximum_is_disconnected() {
    let (client, rx) = v5_client("v5-too-many", true);
    client.set_max_incoming_qos2(2).unwrap();
    client.loop_start(None).unwrap();
    let peer = ScriptedPeer::bind();
    let (mut conn, connect) = connect_v5(&client, &peer, Properties::EMPTY);
    let announced = connect.connect().properties.unwrap();
    assert_eq!(announced.u32_of(prop::RECEIVE_MAXIMUM), Some(2));
    expect_connack(&rx);

    let mut burst = Vec::new();
    for pkid in 1..=3u16 {
        burst.extend(encode(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::ExactlyOnce,
            retain: false,
            topic: "q2",
            pkid,
            payload: b"x",
            properties: Some(Properties::EMPTY),
        })));
    }
    conn.send(&burst);
    let before_close = conn.expect_closed(TIMEOUT);
    let seen: Vec<(u8, Option<u16>, Option<u8>)> = before_close
        .iter()
        .map(|p| (p.packet_type(), p.pkid(), p.packet().reason_code()))
        .collect();
    assert_eq!(
        seen,
        [
            (5, Some(1), Some(0)),
            (5, Some(2), Some(0)),
            (14, None, Some(0x93))
        ]
    );
    let bye = disconnect_without_messages(&rx);
    assert_eq!(
        (bye.error, bye.reason_code),
        (Some(Error::TooManyIncoming), 0x93)
    );
    client.close();
}

// ---------------------------------------------------------------------------
// 12. MQTT 3.1.1 unchanged
// ---------------------------------------------------------------------------

#[test]
fn a_3_1_1_client_still_speaks_3_1_1() {
    let (client, rx) = recorded_client("v311", true);
    client.set_reconnect(None).unwrap();
    client.loop_start(None).unwrap();
    let peer = ScriptedPeer::bind();
    let (result, mut conn, connect) = common::peer::connect_through(&client, &peer, false);
    assert_eq!(result, Ok(false));
    assert_eq!(connect.connect().properties, None);
    let mut want = vec![0x10, 16, 0x00, 0x04];
    want.extend_from_slice(b"MQTT");
    want.extend_from_slice(&[0x04, 0x02, 0x00, 60, 0x00, 0x04]);
    want.extend_from_slice(b"v311");
    assert_eq!(connect.bytes(), &want[..], "level 4, no properties");
    let ack = expect_connack(&rx);
    assert_eq!((ack.return_code, ack.properties), (0, None));

    let mid = client.publish("t", b"p", QoS::AtLeastOnce, false).unwrap();
    let p = conn.expect_type(3, TIMEOUT);
    let [hi, lo] = mid.to_be_bytes();
    assert_eq!(p.bytes(), [0x32, 6, 0x00, 0x01, b't', hi, lo, b'p']);
    conn.send_packet(&Packet::puback(mid));
    let ack = expect(&rx, "PUBACK", |e| e.command == Command::PubAck);
    assert_eq!(
        (ack.mid, ack.error, ack.reason_code, ack.properties),
        (mid, None, 0, None)
    );
    assert!(drain(&rx).iter().all(|e| e.properties.is_none()));
    client.close();
}

// ---------------------------------------------------------------------------
// Limits combined
// ---------------------------------------------------------------------------

#[test]
fn a_topic_alias_never_makes_a_publish_exceed_the_servers_maximum_packet_size() {
    const MAX: usize = 64;
    let (client, rx) = v5_client("v5-alias-size", true);
    client.set_topic_alias_max(10).unwrap();
    client.loop_start(None).unwrap();
    let peer = ScriptedPeer::bind();
    let connack = props(|p| {
        p.push_int(prop::MAXIMUM_PACKET_SIZE, MAX as u32).unwrap();
        p.push_int(prop::TOPIC_ALIAS_MAXIMUM, 2).unwrap();
    });
    let (mut conn, _) = connect_v5(&client, &peer, connack.as_properties());
    expect_connack(&rx);

    // Exactly MAX bytes without an alias (QoS 1 to "t": 8 bytes of headers);
    // a small one on the same topic after it.
    let full = [b'f'; MAX - 8];
    for payload in [&full[..], b"s", &full[..]] {
        let mid = client
            .publish("t", payload, QoS::AtLeastOnce, false)
            .unwrap();
        let p = conn.expect_type(3, TIMEOUT);
        assert!(
            p.bytes().len() <= MAX,
            "{} bytes sent, the server takes {MAX}: {p:?}",
            p.bytes().len()
        );
        assert_eq!(p.publish().payload, payload);
        conn.send_packet(&Packet::puback(mid));
        expect(&rx, "PUBACK", |e| {
            e.command == Command::PubAck && e.mid == mid
        });
    }
    client.close();
}

#[test]
fn a_subscribe_above_the_servers_maximum_packet_size_is_refused_and_not_sent() {
    const MAX: usize = 64;
    let (client, rx) = v5_client("v5-subscribe-size", true);
    client.loop_start(None).unwrap();
    let peer = ScriptedPeer::bind();
    let connack = props(|p| p.push_int(prop::MAXIMUM_PACKET_SIZE, MAX as u32).unwrap());
    let (mut conn, _) = connect_v5(&client, &peer, connack.as_properties());
    expect_connack(&rx);

    let long = "f".repeat(MAX);
    assert_eq!(
        client.subscribe(&[(long.as_str(), QoS::AtLeastOnce)]),
        Err(Error::PacketTooLarge)
    );
    assert_eq!(
        client.unsubscribe(&[long.as_str()]),
        Err(Error::PacketTooLarge)
    );
    let mid = client.subscribe(&[("short", QoS::AtLeastOnce)]).unwrap();
    let p = conn.expect_packet(TIMEOUT);
    assert!(
        p.is(8) && p.pkid() == Some(mid),
        "expected the short SUBSCRIBE, got {p:?}"
    );
    client.close();
}

#[test]
fn a_lower_receive_maximum_after_reconnection_bounds_the_resent_publishes() {
    let (client, rx) = v5_client("v5-receive-max-resend", false);
    client.loop_start(None).unwrap();
    let peer = ScriptedPeer::bind();
    let (mut conn, _) = connect_v5(&client, &peer, Properties::EMPTY);
    expect_connack(&rx);
    let mids: Vec<u16> = (0..4)
        .map(|i| {
            client
                .publish(&format!("rr/{i}"), b"m", QoS::AtLeastOnce, false)
                .unwrap()
        })
        .collect();
    for &mid in &mids {
        assert_eq!(conn.expect_type(3, TIMEOUT).pkid(), Some(mid));
    }
    conn.close();
    expect_disconnect(&rx);

    let connack = props(|p| p.push_int(prop::RECEIVE_MAXIMUM, 2).unwrap());
    let (mut conn, _) = accept_v5(&peer, true, connack.as_properties());
    expect_connack(&rx);
    let mut received = Vec::new();
    for pair in mids.chunks(2) {
        for _ in pair {
            let p = conn.expect_type(3, TIMEOUT);
            assert!(p.publish().dup, "a resent PUBLISH has DUP=1: {p:?}");
            received.push(p.publish().pkid);
        }
        conn.expect_silence(ms(150));
        for &mid in pair {
            conn.send_packet(&Packet::puback(mid));
        }
    }
    assert_eq!(received, mids);
    for &mid in &mids {
        expect(&rx, "PUBACK", |e| {
            e.command == Command::PubAck && e.mid == mid
        });
    }
    client.close();
}

#[test]
fn restored_subscriptions_are_split_to_fit_the_servers_maximum_packet_size() {
    const MAX: usize = 64;
    let (client, rx) = v5_client("v5-resubscribe-size", true);
    client.loop_start(None).unwrap();
    let peer = ScriptedPeer::bind();
    let (mut conn, _) = connect_v5(&client, &peer, Properties::EMPTY);
    expect_connack(&rx);
    let filters: Vec<String> = (0..3)
        .map(|i| format!("filter/{i}/{}", "x".repeat(10)))
        .collect();
    let entries: Vec<(&str, QoS)> = filters
        .iter()
        .map(|f| (f.as_str(), QoS::AtLeastOnce))
        .collect();
    let mid = client.subscribe(&entries).unwrap();
    let subscribe = conn.expect_type(8, TIMEOUT);
    assert!(subscribe.bytes().len() > MAX, "one SUBSCRIBE would not fit");
    conn.send_packet(&Packet::SubAck(mqtt::protocol::codec::SubAck {
        pkid: mid,
        return_codes: &[1, 1, 1],
        properties: Some(Properties::EMPTY),
    }));
    expect(&rx, "SUBACK", |e| e.command == Command::SubAck);

    conn.close();
    expect_disconnect(&rx);
    let connack = props(|p| p.push_int(prop::MAXIMUM_PACKET_SIZE, MAX as u32).unwrap());
    let (mut conn, _) = accept_v5(&peer, false, connack.as_properties());
    expect_connack(&rx);
    let mut restored = Vec::new();
    while restored.len() < filters.len() {
        let p = conn.expect_type(8, TIMEOUT);
        assert!(p.bytes().len() <= MAX, "{} bytes: {p:?}", p.bytes().len());
        restored.extend(p.subscribe().filters.iter().map(|(f, _)| f.to_string()));
    }
    assert_eq!(restored, filters);
    client.close();
}

//! The Rust client end to end against a real mosquitto (and a scripted peer for
//! CONNACK codes a real broker does not send to a 3.1.1 client).

mod common;

use std::time::{Duration, Instant};

use common::events::{expect, message_on, recorded_client};
use common::{Broker, ScriptedPeer, TIMEOUT};
use mqtt::protocol::codec::{ConnectReturnCode, QoS};
use mqtt::{Client, Command, Error};

fn start(client: &Client, broker: &Broker) -> bool {
    let present = client.connect(broker.host(), 30, broker.port()).unwrap();
    client.loop_start(None).unwrap();
    present
}

#[test]
fn connect_reports_session_present_for_persistent_sessions_only() {
    let broker = Broker::start();
    let (persistent, rx) = recorded_client("persistent-1", false);
    assert!(
        !start(&persistent, &broker),
        "first connection has no session"
    );
    let ack = expect(&rx, "CONNACK", |e| e.command == Command::ConnAck);
    assert!(!ack.session_present);
    persistent.disconnect().unwrap();
    let bye = expect(&rx, "DISCONNECT", |e| e.command == Command::Disconnect);
    assert_eq!(bye.error, None, "a requested disconnect reports no error");
    persistent.loop_stop().unwrap();
    assert!(
        persistent
            .connect(broker.host(), 30, broker.port())
            .unwrap()
    );
    persistent.close();

    let (clean, _rx) = recorded_client("clean-1", true);
    assert!(!start(&clean, &broker));
    clean.disconnect().unwrap();
    clean.loop_stop().unwrap();
    assert!(!clean.connect(broker.host(), 30, broker.port()).unwrap());
    clean.close();
}

#[test]
fn each_connack_refusal_has_its_own_error() {
    let cases = [
        (
            ConnectReturnCode::UnacceptableProtocolVersion,
            Error::RefusedProtocolVersion,
        ),
        (
            ConnectReturnCode::IdentifierRejected,
            Error::RefusedIdentifier,
        ),
        (
            ConnectReturnCode::ServerUnavailable,
            Error::RefusedServerUnavailable,
        ),
        (
            ConnectReturnCode::BadUserNameOrPassword,
            Error::RefusedBadCredentials,
        ),
        (
            ConnectReturnCode::NotAuthorized,
            Error::RefusedNotAuthorized,
        ),
    ];
    for (code, error) in cases {
        let peer = ScriptedPeer::bind();
        let port = peer.port();
        let script = std::thread::spawn(move || {
            let mut conn = peer.accept(TIMEOUT);
            conn.expect_type(1, TIMEOUT);
            conn.send_connack(false, code as u8);
        });
        let client = Client::new("refused", true).unwrap();
        assert_eq!(
            client.connect("127.0.0.1", 30, port),
            Err(error),
            "{code:?}"
        );
        assert!(!client.is_connected());
        script.join().unwrap();
    }
}

#[test]
fn credentials_are_checked_by_the_broker() {
    let broker = Broker::builder().password("alice", "s3cret").start();
    let client = Client::new("creds", true).unwrap();
    let refused = client.connect(broker.host(), 30, broker.port());
    assert!(
        matches!(
            refused,
            Err(Error::RefusedNotAuthorized | Error::RefusedBadCredentials)
        ),
        "anonymous: {refused:?}"
    );
    client
        .set_credentials(Some("alice"), Some(b"wrong"))
        .unwrap();
    let refused = client.connect(broker.host(), 30, broker.port());
    assert!(
        matches!(
            refused,
            Err(Error::RefusedNotAuthorized | Error::RefusedBadCredentials)
        ),
        "bad password: {refused:?}"
    );
    client
        .set_credentials(Some("alice"), Some(b"s3cret"))
        .unwrap();
    assert_eq!(client.connect(broker.host(), 30, broker.port()), Ok(false));
    client.close();
}

#[test]
fn subscribe_and_unsubscribe_report_their_mids_and_granted_codes() {
    let broker = Broker::start();
    let (client, rx) = recorded_client("subs", true);
    start(&client, &broker);
    let mid = client
        .subscribe(&[
            ("a/+", QoS::AtLeastOnce),
            ("b/#", QoS::ExactlyOnce),
            ("c", QoS::AtMostOnce),
        ])
        .unwrap();
    let suback = expect(&rx, "SUBACK", |e| e.command == Command::SubAck);
    assert_eq!(suback.mid, mid);
    assert_eq!(suback.granted, vec![1, 2, 0]);
    let unsub_mid = client.unsubscribe(&["a/+", "c"]).unwrap();
    assert_ne!(unsub_mid, mid);
    let unsuback = expect(&rx, "UNSUBACK", |e| e.command == Command::UnsubAck);
    assert_eq!(unsuback.mid, unsub_mid);

    // After unsubscribing, a/x no longer arrives but b/x still does.
    client
        .publish("a/x", b"gone", QoS::AtLeastOnce, false)
        .unwrap();
    client
        .publish("b/x", b"kept", QoS::AtLeastOnce, false)
        .unwrap();
    let got = expect(&rx, "message", |e| e.topic.is_some());
    assert_eq!(got.topic.as_deref(), Some("b/x"));
    client.close();
}

#[test]
fn every_qos_is_published_and_received_with_its_acks() {
    let broker = Broker::start();
    let (subscriber, sub_rx) = recorded_client("qos-sub", true);
    let (publisher, pub_rx) = recorded_client("qos-pub", true);
    start(&subscriber, &broker);
    start(&publisher, &broker);
    subscriber
        .subscribe(&[("qos/#", QoS::ExactlyOnce)])
        .unwrap();
    expect(&sub_rx, "SUBACK", |e| e.command == Command::SubAck);

    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let topic = format!("qos/{}", qos as u8);
        let payload = vec![qos as u8; 1000];
        let mid = publisher.publish(&topic, &payload, qos, false).unwrap();
        assert_ne!(mid, 0, "QoS 0 messages get a mid too");
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                expect(&pub_rx, "PUBACK", |e| {
                    e.command == Command::PubAck && e.mid == mid
                });
            }
            QoS::ExactlyOnce => {
                expect(&pub_rx, "PUBREC", |e| {
                    e.command == Command::PubRec && e.mid == mid
                });
                expect(&pub_rx, "PUBCOMP", |e| {
                    e.command == Command::PubComp && e.mid == mid
                });
            }
        }
        let got = message_on(&sub_rx, &topic);
        assert_eq!(got.payload, payload);
        assert_eq!(got.qos, Some(qos));
        // QoS 2 is delivered on PUBREL, QoS 0/1 on PUBLISH.
        let expected_command = if qos == QoS::ExactlyOnce {
            Command::PubRel
        } else {
            Command::Publish
        };
        assert_eq!(got.command, expected_command);
    }
    subscriber.close();
    publisher.close();
}

#[test]
fn retained_messages_reach_later_subscribers_flagged_retained() {
    let broker = Broker::start();
    let (publisher, pub_rx) = recorded_client("ret-pub", true);
    start(&publisher, &broker);
    let mid = publisher
        .publish("ret/t", b"last", QoS::AtLeastOnce, true)
        .unwrap();
    expect(&pub_rx, "PUBACK", |e| {
        e.command == Command::PubAck && e.mid == mid
    });

    let (subscriber, sub_rx) = recorded_client("ret-sub", true);
    start(&subscriber, &broker);
    subscriber
        .subscribe(&[("ret/#", QoS::AtLeastOnce)])
        .unwrap();
    let got = message_on(&sub_rx, "ret/t");
    assert!(got.retain);
    assert_eq!(got.payload, b"last");
    publisher.close();
    subscriber.close();
}

#[test]
fn the_will_is_published_when_the_connection_drops_without_disconnect() {
    let broker = Broker::start();
    let (watcher, rx) = recorded_client("will-watch", true);
    start(&watcher, &broker);
    watcher.subscribe(&[("will/#", QoS::AtLeastOnce)]).unwrap();
    expect(&rx, "SUBACK", |e| e.command == Command::SubAck);

    let dying = Client::new("will-owner", true).unwrap();
    dying
        .set_will(Some(("will/owner", b"gone", QoS::AtLeastOnce, false)))
        .unwrap();
    dying.connect(broker.host(), 30, broker.port()).unwrap();
    // close() drops the socket without DISCONNECT: an abrupt end for the broker.
    dying.close();
    let will = message_on(&rx, "will/owner");
    assert_eq!(will.payload, b"gone");

    // A clean disconnect must not publish the will.
    let polite = Client::new("will-polite", true).unwrap();
    polite
        .set_will(Some(("will/polite", b"never", QoS::AtLeastOnce, false)))
        .unwrap();
    polite.connect(broker.host(), 30, broker.port()).unwrap();
    polite.disconnect().unwrap();
    polite.close();
    watcher
        .publish("will/marker", b"", QoS::AtLeastOnce, false)
        .unwrap();
    let next = expect(&rx, "a will message", |e| e.topic.is_some());
    assert_eq!(next.topic.as_deref(), Some("will/marker"));
    watcher.close();
}

#[test]
fn persistent_session_keeps_messages_published_while_away() {
    let broker = Broker::start();
    let (sleeper, rx) = recorded_client("sleeper", false);
    start(&sleeper, &broker);
    sleeper.subscribe(&[("mail/#", QoS::AtLeastOnce)]).unwrap();
    expect(&rx, "SUBACK", |e| e.command == Command::SubAck);
    sleeper.disconnect().unwrap();
    expect(&rx, "DISCONNECT", |e| e.command == Command::Disconnect);

    let (sender, sender_rx) = recorded_client("mailer", true);
    start(&sender, &broker);
    let mid = sender
        .publish("mail/box", b"while you were out", QoS::AtLeastOnce, false)
        .unwrap();
    expect(&sender_rx, "PUBACK", |e| {
        e.command == Command::PubAck && e.mid == mid
    });

    sleeper.loop_stop().unwrap();
    assert!(sleeper.connect(broker.host(), 30, broker.port()).unwrap());
    sleeper.loop_start(None).unwrap();
    let got = message_on(&rx, "mail/box");
    assert_eq!(got.payload, b"while you were out");
    sleeper.close();
    sender.close();
}

#[test]
fn a_two_second_keepalive_survives_ten_idle_seconds() {
    let broker = Broker::start();
    let (client, rx) = recorded_client("idle", true);
    client.connect(broker.host(), 2, broker.port()).unwrap();
    client.loop_start(None).unwrap();
    // The broker drops a client silent for 1.5 x keepalive (3 s); pings must
    // flow on their own. The test's own duration is the point, not a sync.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pings = 0;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(e) if e.command == Command::PingResp => pings += 1,
            Ok(e) if e.command == Command::Disconnect => panic!("dropped: {e:?}"),
            _ => {}
        }
    }
    assert!(client.is_connected());
    assert!(
        pings >= 4,
        "only {pings} PINGRESP in 10 s with a 2 s keepalive"
    );
    client.close();
}

#[test]
fn api_errors_change_nothing() {
    let client = Client::new("errors", true).unwrap();
    assert_eq!(
        client.publish("a/+", b"x", QoS::AtMostOnce, false),
        Err(Error::InvalidTopic)
    );
    assert_eq!(
        client.publish("a", b"x", QoS::AtMostOnce, false),
        Err(Error::NotConnected)
    );
    assert_eq!(
        client.subscribe(&[("a/#/b", QoS::AtMostOnce)]),
        Err(Error::InvalidTopic)
    );
    assert_eq!(client.subscribe(&[]), Err(Error::InvalidArgument));
    assert_eq!(client.reconnect(), Err(Error::NotConnected));
    assert_eq!(client.disconnect(), Err(Error::NotConnected));
    assert_eq!(client.loop_stop(), Err(Error::LoopNotRunning));
    // "" with a persistent session: MQTT 5 lets the server assign an id, so
    // the client exists; a 3.1.1 connect refuses it before any I/O.
    let anonymous = Client::new("", false).unwrap();
    assert_eq!(
        anonymous.connect("127.0.0.1", 30, 1),
        Err(Error::InvalidArgument)
    );
    assert_eq!(
        anonymous.connect_async("127.0.0.1", 30, 1),
        Err(Error::InvalidArgument)
    );
    let port = common::free_port();
    assert_eq!(
        client.connect("127.0.0.1", 30, port),
        Err(Error::ConnectFailed)
    );
    assert_eq!(
        client.connect("no-such-host.invalid", 30, 1883),
        Err(Error::Dns)
    );
}

#[test]
fn an_ipv6_literal_reaches_the_broker_and_messages_cross_to_ipv4_clients() {
    let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("skipped: no IPv6 loopback on this machine");
        return;
    };
    let v6_port = probe.local_addr().unwrap().port();
    drop(probe);
    let broker = Broker::builder()
        .extra_config(&format!("listener {v6_port} ::1\n"))
        .start();
    let (v6, v6_events) = recorded_client("over-ipv6", true);
    let (v4, v4_events) = recorded_client("over-ipv4", true);
    assert_eq!(v6.connect("::1", 30, v6_port), Ok(false));
    v4.connect(broker.host(), 30, broker.port()).unwrap();
    v6.loop_start(None).unwrap();
    v4.loop_start(None).unwrap();
    v6.subscribe(&[("ip/v4-to-v6", QoS::AtLeastOnce)]).unwrap();
    v4.subscribe(&[("ip/v6-to-v4", QoS::AtLeastOnce)]).unwrap();
    expect(&v6_events, "SUBACK", |e| e.command == Command::SubAck);
    expect(&v4_events, "SUBACK", |e| e.command == Command::SubAck);
    v6.publish("ip/v6-to-v4", b"from v6", QoS::AtLeastOnce, false)
        .unwrap();
    v4.publish("ip/v4-to-v6", b"from v4", QoS::AtLeastOnce, false)
        .unwrap();
    assert_eq!(message_on(&v4_events, "ip/v6-to-v4").payload, b"from v6");
    assert_eq!(message_on(&v6_events, "ip/v4-to-v6").payload, b"from v4");
    v6.close();
    v4.close();
}

//! The QoS engine driven like a scripted broker: every byte the session wants to
//! send is decoded and checked, every broker packet is fed by hand, and time
//! is a virtual clock (`t0 + Duration`).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use mqtt::Error;
use mqtt::protocol::{codec::*, session::*};

// ---------------------------------------------------------------- harness

/// An owned view of a packet the session sent, for easy comparisons.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Out {
    Connect {
        client_id: String,
        clean_session: bool,
        keep_alive: u16,
    },
    Publish {
        topic: String,
        payload: Vec<u8>,
        qos: QoS,
        pkid: u16,
        dup: bool,
        retain: bool,
    },
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    Subscribe(u16, Vec<(String, QoS)>),
    Unsubscribe(u16, Vec<String>),
    PingReq,
    Disconnect,
    Other(u8),
}

impl From<Packet<'_>> for Out {
    fn from(p: Packet<'_>) -> Out {
        match p {
            Packet::Connect(c) => Out::Connect {
                client_id: c.client_id.into(),
                clean_session: c.clean_session,
                keep_alive: c.keep_alive,
            },
            Packet::Publish(p) => Out::Publish {
                topic: p.topic.into(),
                payload: p.payload.into(),
                qos: p.qos,
                pkid: p.pkid,
                dup: p.dup,
                retain: p.retain,
            },
            Packet::PubAck(Ack { pkid: id, .. }) => Out::PubAck(id),
            Packet::PubRec(Ack { pkid: id, .. }) => Out::PubRec(id),
            Packet::PubRel(Ack { pkid: id, .. }) => Out::PubRel(id),
            Packet::PubComp(Ack { pkid: id, .. }) => Out::PubComp(id),
            Packet::Subscribe(s) => Out::Subscribe(
                s.pkid,
                // Decoded as 3.1.1: the options are the QoS alone.
                s.filters
                    .iter()
                    .map(|(f, o)| (f.to_string(), o.qos))
                    .collect(),
            ),
            Packet::Unsubscribe(u) => {
                Out::Unsubscribe(u.pkid, u.filters.iter().map(|f| f.to_string()).collect())
            }
            Packet::PingReq => Out::PingReq,
            Packet::Disconnect(_) => Out::Disconnect,
            other => Out::Other(other.packet_type()),
        }
    }
}

fn publ(topic: &str, payload: &[u8], qos: QoS, pkid: u16, dup: bool) -> Out {
    Out::Publish {
        topic: topic.into(),
        payload: payload.into(),
        qos,
        pkid,
        dup,
        retain: false,
    }
}

fn decode_all(bytes: &[u8]) -> Vec<Out> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        match decode(rest, usize::MAX).expect("the session sent an invalid packet") {
            Decoded::Packet(p, n) => {
                out.push(Out::from(p));
                rest = &rest[n..];
            }
            Decoded::Incomplete(_) => panic!("truncated packet in the outbox"),
        }
    }
    out
}

/// Everything the session wants to send, as if fully written at `now`.
fn sent(s: &mut Session, now: Instant) -> Vec<Out> {
    let bytes = s.pending_transmit().to_vec();
    s.consume_transmit(now, bytes.len());
    decode_all(&bytes)
}

fn ms(t0: Instant, n: u64) -> Instant {
    t0 + Duration::from_millis(n)
}

fn accepted(session_present: bool) -> Packet<'static> {
    Packet::ConnAck(ConnAck::new(session_present, ConnectReturnCode::Accepted))
}

fn incoming(topic: &str, payload: &[u8], qos: QoS, pkid: u16, dup: bool) -> Packet<'static> {
    // Leaked so the packet can outlive the helper; tests are short-lived.
    let topic: &'static str = Box::leak(topic.to_string().into_boxed_str());
    let payload: &'static [u8] = Box::leak(payload.to_vec().into_boxed_slice());
    Packet::Publish(Publish {
        dup,
        qos,
        retain: false,
        topic,
        pkid,
        payload,
        properties: None,
    })
}

/// Open a connection at `now`, check CONNECT, answer CONNACK.
fn connect(s: &mut Session, now: Instant, session_present: bool) -> Vec<Out> {
    s.connection_opened(now);
    let out = sent(s, now);
    assert!(
        matches!(out.as_slice(), [Out::Connect { .. }]),
        "expected CONNECT only, got {out:?}"
    );
    let ev = s.handle_packet(now, accepted(session_present)).unwrap();
    assert_eq!(
        ev,
        Some(Incoming::ConnAck(ConnAck::new(
            session_present,
            ConnectReturnCode::Accepted
        )))
    );
    assert_eq!(s.state(), ConnectionState::Connected);
    sent(s, now)
}

fn connected(config: SessionConfig) -> (Session, Instant) {
    let t0 = Instant::now();
    let mut s = Session::new(config);
    let out = connect(&mut s, t0, false);
    assert!(out.is_empty(), "{out:?}");
    (s, t0)
}

/// `config` with the limits `set` changes.
fn limited(mut config: SessionConfig, set: impl FnOnce(&mut Limits)) -> SessionConfig {
    set(config.limits_mut());
    config
}

#[test]
fn a_limit_set_to_what_it_is_allocates_nothing_and_one_changed_keeps_the_others() {
    let mut config = cfg();
    let defaults = config.limits().clone();
    config.update_limits(|l| l.max_inflight = defaults.max_inflight);
    assert!(config.extras.is_none());
    config.update_limits(|l| l.max_inflight = 3);
    assert!(config.extras.is_some());
    assert_eq!(
        *config.limits(),
        Limits {
            max_inflight: 3,
            ..defaults
        }
    );
}

fn cfg() -> SessionConfig {
    SessionConfig {
        client_id: "test".into(),
        ..SessionConfig::default()
    }
}

fn handle(s: &mut Session, now: Instant, p: Packet<'_>) -> Option<String> {
    // Debug string, so tests can compare events that borrow from `p`.
    s.handle_packet(now, p).unwrap().map(|e| format!("{e:?}"))
}

// ---------------------------------------------------------------- connect

#[test]
fn connect_packet_carries_the_config() {
    let t0 = Instant::now();
    let mut s = Session::new(SessionConfig {
        client_id: "dev-1".into(),
        clean_session: false,
        keep_alive: 30,
        extras: Some(Box::new(ConfigExtras {
            username: Some("u".into()),
            password: Some(b"p".to_vec()),
            will: Some(Will {
                topic: "w/t".into(),
                payload: b"bye".to_vec(),
                qos: QoS::AtLeastOnce,
                retain: true,
            }),
            ..ConfigExtras::default()
        })),
        ..SessionConfig::default()
    });
    assert_eq!(s.state(), ConnectionState::Disconnected);
    s.connection_opened(t0);
    assert_eq!(s.state(), ConnectionState::AwaitingConnAck);
    let bytes = s.pending_transmit().to_vec();
    let Decoded::Packet(Packet::Connect(c), n) = decode(&bytes, usize::MAX).unwrap() else {
        panic!("not a CONNECT");
    };
    assert_eq!(n, bytes.len());
    assert_eq!(c.client_id, "dev-1");
    assert!(!c.clean_session);
    assert_eq!(c.keep_alive, 30);
    assert_eq!(c.username, Some("u"));
    assert_eq!(c.password, Some(&b"p"[..]));
    let will = c.will.unwrap();
    assert_eq!(
        (will.topic, will.payload, will.qos, will.retain),
        ("w/t", &b"bye"[..], QoS::AtLeastOnce, true)
    );
}

#[test]
fn config_changes_apply_to_the_next_connection() {
    let (mut s, t0) = connected(cfg());
    s.config_mut().keep_alive = 5;
    s.config_mut().client_id = "other".into();
    // The running connection still uses the keepalive the broker was told.
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(60)));
    s.connection_lost(t0);
    s.connection_opened(t0);
    let out = sent(&mut s, t0);
    assert_eq!(
        out,
        vec![Out::Connect {
            client_id: "other".into(),
            clean_session: true,
            keep_alive: 5
        }]
    );
    s.handle_packet(t0, accepted(false)).unwrap();
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(5)));
}

#[test]
fn invalid_config_is_reported_without_waiting_for_the_timeout() {
    let t0 = Instant::now();
    let mut config = cfg();
    config.extras_mut().will = Some(Will {
        topic: "bad/#".into(),
        payload: vec![],
        qos: QoS::AtMostOnce,
        retain: false,
    });
    assert_eq!(config.validate(), Err(Error::InvalidTopic));
    assert_eq!(cfg().validate(), Ok(()));
    let mut s = Session::new(config);
    s.connection_opened(t0);
    assert!(s.pending_transmit().is_empty());
    assert_eq!(s.poll_timeout(), Some(t0));
    assert_eq!(s.handle_timeout(t0), Err(Error::InvalidTopic));

    let mut config = cfg();
    config.extras_mut().password = Some(b"p".to_vec());
    assert_eq!(config.validate(), Err(Error::InvalidArgument));
}

#[test]
fn password_is_not_in_debug_output() {
    let mut config = cfg();
    config.extras_mut().password = Some(b"hunter2".to_vec());
    let text = format!("{config:?}");
    assert!(!text.contains("104, 117")); // "hu" as bytes
    assert!(text.contains("redacted"));
}

#[test]
fn connack_timeout() {
    let t0 = Instant::now();
    let mut s = Session::new(limited(cfg(), |l| {
        l.connect_timeout_ms = 3_000;
    }));
    assert_eq!(s.poll_timeout(), None);
    s.connection_opened(t0);
    assert_eq!(s.poll_timeout(), Some(ms(t0, 3000)));
    assert_eq!(s.handle_timeout(ms(t0, 2999)), Ok(()));
    assert_eq!(s.handle_timeout(ms(t0, 3000)), Err(Error::Timeout));

    // A CONNACK in time cancels the deadline.
    s.connection_lost(ms(t0, 3000));
    assert_eq!(s.poll_timeout(), None);
    s.connection_opened(ms(t0, 4000));
    s.handle_packet(ms(t0, 6000), accepted(false)).unwrap();
    assert_eq!(s.handle_timeout(ms(t0, 7001)), Ok(()));
    assert_ne!(s.poll_timeout(), Some(ms(t0, 7000)));
}

#[test]
fn refused_connack_is_reported_and_disconnects() {
    let t0 = Instant::now();
    let mut s = Session::new(cfg());
    s.connection_opened(t0);
    let ack = ConnAck::new(false, ConnectReturnCode::NotAuthorized);
    assert_eq!(
        s.handle_packet(t0, Packet::ConnAck(ack)),
        Ok(Some(Incoming::ConnAck(ack)))
    );
    assert_eq!(s.state(), ConnectionState::Disconnected);
    assert!(s.pending_transmit().is_empty());
    assert_eq!(s.poll_timeout(), None);
    assert_eq!(
        s.publish(t0, "t", b"x", QoS::AtMostOnce, false),
        Err(Error::NotConnected)
    );
}

#[test]
fn protocol_violations() {
    let t0 = Instant::now();
    let mut s = Session::new(cfg());
    // No transport at all.
    assert_eq!(
        s.handle_packet(t0, Packet::PingResp),
        Err(Error::ProtocolViolation)
    );
    s.connection_opened(t0);
    sent(&mut s, t0);
    // Anything but CONNACK first.
    for p in [
        Packet::PingResp,
        Packet::puback(1),
        incoming("t", b"x", QoS::AtMostOnce, 0, false),
    ] {
        assert_eq!(s.handle_packet(t0, p), Err(Error::ProtocolViolation));
    }
    assert_eq!(s.state(), ConnectionState::AwaitingConnAck);
    s.handle_packet(t0, accepted(false)).unwrap();
    // A second CONNACK.
    assert_eq!(
        s.handle_packet(t0, accepted(false)),
        Err(Error::ProtocolViolation)
    );
    // Packets only a client may send.
    let server_only = [
        Packet::PingReq,
        Packet::disconnect(),
        Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![("a", QoS::AtMostOnce.into())],
            properties: None,
        }),
        Packet::Unsubscribe(Unsubscribe {
            pkid: 1,
            filters: vec!["a"],
            properties: None,
        }),
        Packet::Connect(Connect {
            client_id: "x",
            clean_session: true,
            keep_alive: 0,
            will: None,
            username: None,
            password: None,
            properties: None,
        }),
    ];
    for p in server_only {
        assert_eq!(s.handle_packet(t0, p), Err(Error::ProtocolViolation));
    }
    // Hand-built packets with id 0 (the decoder never yields them).
    assert_eq!(
        s.handle_packet(t0, Packet::pubrel(0)),
        Err(Error::MalformedPacket)
    );
    assert!(s.pending_transmit().is_empty());
}

// ---------------------------------------------------------------- outgoing

#[test]
fn qos0_publish_when_connected_and_offline() {
    let (mut s, t0) = connected(cfg());
    let mid = s.publish(t0, "a/b", b"hi", QoS::AtMostOnce, true).unwrap();
    assert_eq!(mid, 1);
    assert_eq!(
        sent(&mut s, t0),
        vec![Out::Publish {
            topic: "a/b".into(),
            payload: b"hi".to_vec(),
            qos: QoS::AtMostOnce,
            pkid: 0,
            dup: false,
            retain: true
        }]
    );
    assert_eq!(s.inflight_len(), 0);
    // Not reserved, but the counter moved on.
    assert_eq!(s.publish(t0, "a", b"", QoS::AtMostOnce, false), Ok(2));

    s.connection_lost(t0);
    assert_eq!(
        s.publish(t0, "a", b"x", QoS::AtMostOnce, false),
        Err(Error::NotConnected)
    );
    assert_eq!(s.queued_len(), 0);
    // The failed call consumed no id.
    s.config_mut().queue_qos0_offline = true;
    assert_eq!(s.publish(t0, "a", b"x", QoS::AtMostOnce, false), Ok(3));
    assert_eq!(s.queued_len(), 1);
    assert_eq!(s.queued_bytes(), 2);
    let out = connect(&mut s, t0, false);
    assert_eq!(out, vec![publ("a", b"x", QoS::AtMostOnce, 0, false)]);
    assert_eq!(s.queued_len(), 0);
    assert_eq!(s.queued_bytes(), 0);
}

#[test]
fn qos1_outgoing_flow() {
    let (mut s, t0) = connected(cfg());
    let mid = s.publish(t0, "t", b"1", QoS::AtLeastOnce, false).unwrap();
    assert_eq!(
        sent(&mut s, t0),
        vec![publ("t", b"1", QoS::AtLeastOnce, mid, false)]
    );
    assert_eq!(s.inflight_len(), 1);
    assert_eq!(
        s.handle_packet(t0, Packet::puback(mid)),
        Ok(Some(Incoming::PubAck(mid)))
    );
    assert_eq!(s.inflight_len(), 0);
    assert!(sent(&mut s, t0).is_empty());
    // A second PUBACK for the same id is stray now.
    assert_eq!(s.handle_packet(t0, Packet::puback(mid)), Ok(None));
}

#[test]
fn qos2_outgoing_flow() {
    let (mut s, t0) = connected(cfg());
    let mid = s.publish(t0, "t", b"2", QoS::ExactlyOnce, false).unwrap();
    assert_eq!(
        sent(&mut s, t0),
        vec![publ("t", b"2", QoS::ExactlyOnce, mid, false)]
    );
    // PUBCOMP before PUBREC is the wrong stage: ignored.
    assert_eq!(s.handle_packet(t0, Packet::pubcomp(mid)), Ok(None));
    assert_eq!(s.inflight_len(), 1);
    assert_eq!(
        s.handle_packet(t0, Packet::pubrec(mid)),
        Ok(Some(Incoming::PubRec(mid)))
    );
    assert_eq!(sent(&mut s, t0), vec![Out::PubRel(mid)]);
    assert_eq!(s.inflight_len(), 1);
    // PUBACK for a QoS 2 message is stray.
    assert_eq!(s.handle_packet(t0, Packet::puback(mid)), Ok(None));
    assert_eq!(s.inflight_len(), 1);
    assert_eq!(
        s.handle_packet(t0, Packet::pubcomp(mid)),
        Ok(Some(Incoming::PubComp(mid)))
    );
    assert_eq!(s.inflight_len(), 0);
    assert!(sent(&mut s, t0).is_empty());
}

#[test]
fn acks_in_any_order() {
    let (mut s, t0) = connected(cfg());
    let a = s.publish(t0, "t", b"a", QoS::AtLeastOnce, false).unwrap();
    let b = s.publish(t0, "t", b"b", QoS::ExactlyOnce, false).unwrap();
    let c = s.publish(t0, "t", b"c", QoS::AtLeastOnce, false).unwrap();
    let d = s.publish(t0, "t", b"d", QoS::ExactlyOnce, false).unwrap();
    assert_eq!((a, b, c, d), (1, 2, 3, 4));
    sent(&mut s, t0);
    assert_eq!(s.inflight_len(), 4);

    assert_eq!(
        s.handle_packet(t0, Packet::puback(c)),
        Ok(Some(Incoming::PubAck(c)))
    );
    assert_eq!(
        s.handle_packet(t0, Packet::pubrec(d)),
        Ok(Some(Incoming::PubRec(d)))
    );
    assert_eq!(
        s.handle_packet(t0, Packet::pubrec(b)),
        Ok(Some(Incoming::PubRec(b)))
    );
    assert_eq!(sent(&mut s, t0), vec![Out::PubRel(d), Out::PubRel(b)]);
    assert_eq!(
        s.handle_packet(t0, Packet::pubcomp(d)),
        Ok(Some(Incoming::PubComp(d)))
    );
    assert_eq!(
        s.handle_packet(t0, Packet::puback(a)),
        Ok(Some(Incoming::PubAck(a)))
    );
    assert_eq!(s.inflight_len(), 1);
    assert_eq!(
        s.handle_packet(t0, Packet::pubcomp(b)),
        Ok(Some(Incoming::PubComp(b)))
    );
    assert_eq!(s.inflight_len(), 0);
}

#[test]
fn stray_and_duplicate_acks() {
    let (mut s, t0) = connected(cfg());
    let q1 = s.publish(t0, "t", b"", QoS::AtLeastOnce, false).unwrap();
    let q2 = s.publish(t0, "t", b"", QoS::ExactlyOnce, false).unwrap();
    sent(&mut s, t0);

    // Unknown ids.
    assert_eq!(s.handle_packet(t0, Packet::puback(999)), Ok(None));
    assert_eq!(s.handle_packet(t0, Packet::pubcomp(999)), Ok(None));
    assert!(sent(&mut s, t0).is_empty());
    // PUBREC for an unknown id is still released.
    assert_eq!(s.handle_packet(t0, Packet::pubrec(999)), Ok(None));
    assert_eq!(sent(&mut s, t0), vec![Out::PubRel(999)]);
    // PUBREC for a QoS 1 message: ignored, no PUBREL for an id in use.
    assert_eq!(s.handle_packet(t0, Packet::pubrec(q1)), Ok(None));
    assert!(sent(&mut s, t0).is_empty());
    assert_eq!(s.inflight_len(), 2);

    // Duplicate PUBREC: PUBREL again, no second event.
    assert_eq!(
        s.handle_packet(t0, Packet::pubrec(q2)),
        Ok(Some(Incoming::PubRec(q2)))
    );
    assert_eq!(s.handle_packet(t0, Packet::pubrec(q2)), Ok(None));
    assert_eq!(sent(&mut s, t0), vec![Out::PubRel(q2), Out::PubRel(q2)]);
    assert_eq!(
        s.handle_packet(t0, Packet::pubcomp(q2)),
        Ok(Some(Incoming::PubComp(q2)))
    );
    assert_eq!(s.handle_packet(t0, Packet::pubcomp(q2)), Ok(None));
    assert_eq!(
        s.handle_packet(t0, Packet::puback(q1)),
        Ok(Some(Incoming::PubAck(q1)))
    );
    assert_eq!(s.inflight_len(), 0);
}

#[test]
fn window_refills_after_acks() {
    let (mut s, t0) = connected(limited(cfg(), |l| {
        l.max_inflight = 2;
    }));
    let mids: Vec<u16> = (0..5u8)
        .map(|i| s.publish(t0, "t", &[i], QoS::AtLeastOnce, false).unwrap())
        .collect();
    assert_eq!(mids, vec![1, 2, 3, 4, 5]);
    assert_eq!(
        sent(&mut s, t0),
        vec![
            publ("t", &[0], QoS::AtLeastOnce, 1, false),
            publ("t", &[1], QoS::AtLeastOnce, 2, false)
        ]
    );
    assert_eq!(
        (s.inflight_len(), s.queued_len(), s.queued_bytes()),
        (2, 3, 6)
    );
    // Acking the newer one first frees a slot all the same.
    s.handle_packet(t0, Packet::puback(2)).unwrap();
    assert_eq!(
        sent(&mut s, t0),
        vec![publ("t", &[2], QoS::AtLeastOnce, 3, false)]
    );
    assert_eq!((s.inflight_len(), s.queued_len()), (2, 2));
    // A QoS 0 publish while connected does not wait behind the window.
    s.publish(t0, "z", b"", QoS::AtMostOnce, false).unwrap();
    assert_eq!(
        sent(&mut s, t0),
        vec![publ("z", b"", QoS::AtMostOnce, 0, false)]
    );
    s.handle_packet(t0, Packet::puback(1)).unwrap();
    s.handle_packet(t0, Packet::puback(3)).unwrap();
    assert_eq!(
        sent(&mut s, t0),
        vec![
            publ("t", &[3], QoS::AtLeastOnce, 4, false),
            publ("t", &[4], QoS::AtLeastOnce, 5, false)
        ]
    );
    assert_eq!(
        (s.inflight_len(), s.queued_len(), s.queued_bytes()),
        (2, 0, 0)
    );
}

#[test]
fn raising_max_inflight_keeps_the_order() {
    let (mut s, t0) = connected(limited(cfg(), |l| {
        l.max_inflight = 1;
    }));
    s.publish(t0, "t", b"a", QoS::AtLeastOnce, false).unwrap();
    s.publish(t0, "t", b"b", QoS::AtLeastOnce, false).unwrap();
    sent(&mut s, t0);
    s.config_mut().limits_mut().max_inflight = 5;
    s.publish(t0, "t", b"c", QoS::AtLeastOnce, false).unwrap();
    assert_eq!(
        sent(&mut s, t0),
        vec![
            publ("t", b"b", QoS::AtLeastOnce, 2, false),
            publ("t", b"c", QoS::AtLeastOnce, 3, false)
        ]
    );
    assert_eq!((s.inflight_len(), s.queued_len()), (3, 0));
}

#[test]
fn publish_offline_is_queued_and_sent_in_order_after_connack() {
    let t0 = Instant::now();
    let mut s = Session::new(SessionConfig {
        queue_qos0_offline: true,
        ..cfg()
    });
    let a = s.publish(t0, "t", b"a", QoS::AtLeastOnce, false).unwrap();
    let b = s.publish(t0, "t", b"b", QoS::AtMostOnce, false).unwrap();
    let c = s.publish(t0, "t", b"c", QoS::ExactlyOnce, false).unwrap();
    assert_eq!((a, b, c), (1, 2, 3));
    assert_eq!((s.queued_len(), s.queued_bytes()), (3, 6));
    assert_eq!(s.inflight_len(), 0);
    // While waiting for CONNACK they still wait.
    s.connection_opened(t0);
    let d = s.publish(t0, "t", b"d", QoS::AtLeastOnce, false).unwrap();
    assert_eq!(sent(&mut s, t0).len(), 1); // CONNECT only
    s.handle_packet(t0, accepted(false)).unwrap();
    assert_eq!(
        sent(&mut s, t0),
        vec![
            publ("t", b"a", QoS::AtLeastOnce, a, false),
            publ("t", b"b", QoS::AtMostOnce, 0, false),
            publ("t", b"c", QoS::ExactlyOnce, c, false),
            publ("t", b"d", QoS::AtLeastOnce, d, false),
        ]
    );
    assert_eq!(
        (s.inflight_len(), s.queued_len(), s.queued_bytes()),
        (3, 0, 0)
    );
}

#[test]
fn queue_full_at_exact_count_changes_nothing() {
    let t0 = Instant::now();
    let mut s = Session::new(limited(cfg(), |l| {
        l.max_queued_messages = 3;
    }));
    for i in 1..=3 {
        assert_eq!(s.publish(t0, "t", b"xy", QoS::AtLeastOnce, false), Ok(i));
    }
    assert_eq!(
        s.publish(t0, "t", b"xy", QoS::ExactlyOnce, false),
        Err(Error::QueueFull)
    );
    assert_eq!((s.queued_len(), s.queued_bytes()), (3, 9));
    // No id was consumed by the failure.
    let out = connect(&mut s, t0, false);
    assert_eq!(out.len(), 3);
    assert_eq!(s.publish(t0, "t", b"", QoS::AtLeastOnce, false), Ok(4));
}

#[test]
fn queue_full_by_bytes() {
    let t0 = Instant::now();
    let mut s = Session::new(limited(cfg(), |l| {
        l.max_queued_bytes = 10;
    }));
    // topic + payload = 5 bytes each
    assert_eq!(s.publish(t0, "t", b"1234", QoS::AtLeastOnce, false), Ok(1));
    assert_eq!(s.publish(t0, "t", b"1234", QoS::AtLeastOnce, false), Ok(2));
    assert_eq!(
        s.publish(t0, "t", b"1", QoS::AtLeastOnce, false),
        Err(Error::QueueFull)
    );
    assert_eq!((s.queued_len(), s.queued_bytes()), (2, 10));
    // An empty message still fits.
    assert_eq!(
        s.publish(t0, "", b"", QoS::AtLeastOnce, false),
        Err(Error::InvalidTopic)
    );
    // The window being full also queues (and so is bounded) while connected.
    let mut s = Session::new(limited(cfg(), |l| {
        l.max_inflight = 1;
        l.max_queued_messages = 1;
    }));
    connect(&mut s, t0, false);
    assert_eq!(s.publish(t0, "t", b"", QoS::AtLeastOnce, false), Ok(1));
    assert_eq!(s.publish(t0, "t", b"", QoS::AtLeastOnce, false), Ok(2));
    assert_eq!(
        s.publish(t0, "t", b"", QoS::AtLeastOnce, false),
        Err(Error::QueueFull)
    );
    assert_eq!((s.inflight_len(), s.queued_len()), (1, 1));
}

#[test]
fn qos0_is_refused_when_the_outbox_is_backed_up() {
    let (mut s, t0) = connected(limited(cfg(), |l| {
        l.max_unsent_bytes = 20;
    }));
    // Each PUBLISH is 2 + 2 + 1 + 5 = 10 bytes.
    assert!(s.publish(t0, "t", b"12345", QoS::AtMostOnce, false).is_ok());
    assert!(s.publish(t0, "t", b"12345", QoS::AtMostOnce, false).is_ok());
    assert_eq!(
        s.publish(t0, "t", b"12345", QoS::AtMostOnce, false),
        Err(Error::QueueFull)
    );
    assert_eq!(s.pending_transmit().len(), 20);
    s.consume_transmit(t0, 10);
    assert!(s.publish(t0, "t", b"12345", QoS::AtMostOnce, false).is_ok());
}

#[test]
fn invalid_publish_and_subscribe_change_nothing() {
    let (mut s, t0) = connected(limited(cfg(), |l| {
        l.max_packet_size = 64;
    }));
    assert_eq!(
        s.publish(t0, "a/+", b"", QoS::AtLeastOnce, false),
        Err(Error::InvalidTopic)
    );
    assert_eq!(
        s.publish(t0, "", b"", QoS::AtLeastOnce, false),
        Err(Error::InvalidTopic)
    );
    // 2 + 2 + 1 + 2 + 57 = 64 fits exactly; one more byte does not.
    assert_eq!(
        s.publish(t0, "t", &[0; 58], QoS::AtLeastOnce, false),
        Err(Error::PayloadTooLarge)
    );
    assert_eq!(
        s.subscribe(t0, &[("a/#/b", QoS::AtMostOnce)]),
        Err(Error::InvalidTopic)
    );
    assert_eq!(s.subscribe(t0, &[]), Err(Error::InvalidArgument));
    assert_eq!(s.unsubscribe(t0, &[]), Err(Error::InvalidArgument));
    assert_eq!(s.unsubscribe(t0, &["a+"]), Err(Error::InvalidTopic));
    let long = "x".repeat(70);
    assert_eq!(
        s.subscribe(t0, &[(long.as_str(), QoS::AtMostOnce)]),
        Err(Error::PayloadTooLarge)
    );
    assert!(s.pending_transmit().is_empty());
    assert_eq!(s.pending_requests_len(), 0);
    assert_eq!(s.inflight_len(), 0);
    // Nothing consumed an id.
    assert_eq!(s.publish(t0, "t", &[0; 57], QoS::AtLeastOnce, false), Ok(1));
}

// ---------------------------------------------------------------- packet ids

#[test]
fn ids_wrap_around_and_skip_ids_in_use() {
    let (mut s, t0) = connected(limited(cfg(), |l| {
        l.max_queued_bytes = u32::MAX;
    }));
    assert_eq!(s.publish(t0, "t", b"", QoS::AtLeastOnce, false), Ok(1));
    assert_eq!(s.publish(t0, "t", b"", QoS::ExactlyOnce, false), Ok(2));
    assert_eq!(s.publish(t0, "t", b"", QoS::AtLeastOnce, false), Ok(3));
    assert_eq!(s.subscribe(t0, &[("s", QoS::AtMostOnce)]), Ok(4));
    sent(&mut s, t0);
    for expected in 5..=u16::MAX {
        assert_eq!(
            s.publish(t0, "t", b"", QoS::AtMostOnce, false),
            Ok(expected)
        );
        s.consume_transmit(t0, usize::MAX);
    }
    s.handle_packet(t0, Packet::puback(1)).unwrap();
    // 1 was freed; 2, 3 (in flight) and 4 (pending SUBSCRIBE) are skipped;
    // 5 was a QoS 0 id and never reserved; 0 is never used.
    assert_eq!(s.publish(t0, "t", b"", QoS::AtLeastOnce, false), Ok(1));
    assert_eq!(s.publish(t0, "t", b"", QoS::AtLeastOnce, false), Ok(5));
    assert_eq!(s.unsubscribe(t0, &["s"]), Ok(6));
    assert_eq!(
        sent(&mut s, t0),
        vec![
            publ("t", b"", QoS::AtLeastOnce, 1, false),
            publ("t", b"", QoS::AtLeastOnce, 5, false),
            Out::Unsubscribe(6, vec!["s".into()]),
        ]
    );
}

#[test]
fn no_free_id_is_queue_full() {
    let t0 = Instant::now();
    let mut s = Session::new(limited(
        SessionConfig {
            queue_qos0_offline: true,
            ..cfg()
        },
        |l| {
            l.max_queued_messages = u32::MAX;
            l.max_queued_bytes = u32::MAX;
            l.max_inflight = 100;
        },
    ));
    for expected in 1..=u16::MAX {
        assert_eq!(
            s.publish(t0, "t", b"", QoS::AtLeastOnce, false),
            Ok(expected)
        );
    }
    assert_eq!(
        s.publish(t0, "t", b"", QoS::AtLeastOnce, false),
        Err(Error::QueueFull)
    );
    assert_eq!(
        s.publish(t0, "t", b"", QoS::AtMostOnce, false),
        Err(Error::QueueFull)
    );
    assert_eq!(
        s.subscribe(t0, &[("a", QoS::AtMostOnce)]),
        Err(Error::QueueFull)
    );
    assert_eq!(s.queued_len(), 65535);
    // Connect with a window of 100; acking one frees exactly that id.
    connect(&mut s, t0, false);
    assert_eq!(s.inflight_len(), 100);
    s.handle_packet(t0, Packet::puback(42)).unwrap();
    assert_eq!(s.inflight_len(), 100);
    assert_eq!(s.queued_len(), 65535 - 101);
    assert_eq!(s.publish(t0, "t", b"", QoS::AtLeastOnce, false), Ok(42));
}

// ---------------------------------------------------------------- incoming

#[test]
fn incoming_qos0_and_qos1() {
    let (mut s, t0) = connected(cfg());
    let p = incoming("a/b", b"zero", QoS::AtMostOnce, 0, false);
    let ev = s.handle_packet(t0, p).unwrap();
    let Some(Incoming::Publish {
        mid: 0,
        message: Some(m),
    }) = ev
    else {
        panic!("{ev:?}");
    };
    assert_eq!(
        (m.topic, m.payload, m.qos),
        ("a/b", &b"zero"[..], QoS::AtMostOnce)
    );
    assert!(sent(&mut s, t0).is_empty());

    let p = incoming("a/b", b"one", QoS::AtLeastOnce, 7, true);
    let ev = s.handle_packet(t0, p).unwrap();
    let Some(Incoming::Publish {
        mid: 7,
        message: Some(m),
    }) = ev
    else {
        panic!("{ev:?}");
    };
    assert_eq!(
        (m.payload, m.qos, m.dup, m.mid),
        (&b"one"[..], QoS::AtLeastOnce, true, 7)
    );
    assert_eq!(sent(&mut s, t0), vec![Out::PubAck(7)]);
}

#[test]
fn incoming_qos2_is_held_and_delivered_once_on_pubrel() {
    let (mut s, t0) = connected(cfg());
    let p = incoming("q", b"two", QoS::ExactlyOnce, 9, false);
    assert_eq!(
        s.handle_packet(t0, p),
        Ok(Some(Incoming::Publish {
            mid: 9,
            message: None
        }))
    );
    assert_eq!(sent(&mut s, t0), vec![Out::PubRec(9)]);
    assert_eq!(s.held_incoming_len(), 1);
    // The broker did not see our PUBREC and sends again: acked, not delivered.
    let p = incoming("q", b"two", QoS::ExactlyOnce, 9, true);
    assert_eq!(s.handle_packet(t0, p), Ok(None));
    assert_eq!(sent(&mut s, t0), vec![Out::PubRec(9)]);
    assert_eq!(s.held_incoming_len(), 1);

    let ev = s.handle_packet(t0, Packet::pubrel(9)).unwrap();
    let Some(Incoming::PubRel {
        mid: 9,
        message: Some(m),
    }) = ev
    else {
        panic!("{ev:?}");
    };
    assert_eq!(
        m.as_message(),
        Message {
            topic: "q",
            payload: b"two",
            qos: QoS::ExactlyOnce,
            retain: false,
            dup: false,
            mid: 9,
            properties: None,
        }
    );
    assert_eq!(sent(&mut s, t0), vec![Out::PubComp(9)]);
    assert_eq!(s.held_incoming_len(), 0);
    // A repeated PUBREL: completed again, nothing delivered.
    assert_eq!(
        s.handle_packet(t0, Packet::pubrel(9)),
        Ok(Some(Incoming::PubRel {
            mid: 9,
            message: None
        }))
    );
    assert_eq!(sent(&mut s, t0), vec![Out::PubComp(9)]);
}

#[test]
fn pubrel_for_unknown_id_is_completed() {
    let (mut s, t0) = connected(cfg());
    assert_eq!(
        s.handle_packet(t0, Packet::pubrel(1234)),
        Ok(Some(Incoming::PubRel {
            mid: 1234,
            message: None
        }))
    );
    assert_eq!(sent(&mut s, t0), vec![Out::PubComp(1234)]);
}

#[test]
fn too_many_incoming_qos2() {
    let (mut s, t0) = connected(limited(cfg(), |l| {
        l.max_incoming_qos2 = 2;
    }));
    for id in [1, 2] {
        let p = incoming("q", b"", QoS::ExactlyOnce, id, false);
        assert!(s.handle_packet(t0, p).unwrap().is_some());
    }
    sent(&mut s, t0);
    let p = incoming("q", b"", QoS::ExactlyOnce, 3, false);
    assert_eq!(s.handle_packet(t0, p), Err(Error::TooManyIncoming));
    assert_eq!(s.held_incoming_len(), 2);
    assert!(sent(&mut s, t0).is_empty());
    // A duplicate of a held one is still fine.
    let p = incoming("q", b"", QoS::ExactlyOnce, 2, true);
    assert_eq!(s.handle_packet(t0, p), Ok(None));
    // After a release there is room again.
    s.handle_packet(t0, Packet::pubrel(1)).unwrap();
    let p = incoming("q", b"", QoS::ExactlyOnce, 3, false);
    assert!(s.handle_packet(t0, p).unwrap().is_some());
    assert_eq!(s.held_incoming_len(), 2);
}

// ---------------------------------------------------------------- reconnection

/// Three messages in three states: QoS 1 unacked, QoS 2 unacked, QoS 2 PUBREC'd.
fn three_in_flight() -> (Session, Instant) {
    let (mut s, t0) = connected(SessionConfig {
        clean_session: false,
        ..cfg()
    });
    assert_eq!(s.publish(t0, "t", b"1", QoS::AtLeastOnce, false), Ok(1));
    assert_eq!(s.publish(t0, "t", b"2", QoS::ExactlyOnce, false), Ok(2));
    assert_eq!(s.publish(t0, "t", b"3", QoS::ExactlyOnce, true), Ok(3));
    s.handle_packet(t0, Packet::pubrec(3)).unwrap();
    assert_eq!(sent(&mut s, t0).len(), 4);
    // Some unsent bytes are lost with the connection.
    s.handle_packet(t0, Packet::PingResp).unwrap();
    s.publish(t0, "t", b"0", QoS::AtMostOnce, false).unwrap();
    assert!(!s.pending_transmit().is_empty());
    s.connection_lost(t0);
    assert_eq!(s.state(), ConnectionState::Disconnected);
    assert!(s.pending_transmit().is_empty());
    assert_eq!(s.inflight_len(), 3);
    (s, t0)
}

#[test]
fn reconnect_with_session_resends_dup_and_pubrel() {
    let (mut s, t0) = three_in_flight();
    let out = connect(&mut s, ms(t0, 100), true);
    assert_eq!(
        out,
        vec![
            publ("t", b"1", QoS::AtLeastOnce, 1, true),
            publ("t", b"2", QoS::ExactlyOnce, 2, true),
            Out::PubRel(3),
        ]
    );
    // The flows continue where they were.
    assert_eq!(
        s.handle_packet(t0, Packet::pubcomp(3)),
        Ok(Some(Incoming::PubComp(3)))
    );
    assert_eq!(
        s.handle_packet(t0, Packet::pubrec(2)),
        Ok(Some(Incoming::PubRec(2)))
    );
    assert_eq!(
        s.handle_packet(t0, Packet::puback(1)),
        Ok(Some(Incoming::PubAck(1)))
    );
    // A second reconnection resends the same way again (DUP is not sticky
    // in the stored copy, PUBREL stays PUBREL).
    s.connection_lost(t0);
    let out = connect(&mut s, ms(t0, 200), true);
    assert_eq!(out, vec![Out::PubRel(2)]);
}

#[test]
fn reconnect_without_session_republishes_unacknowledged_and_gives_up_pubrecd_qos2() {
    // three_in_flight: 1 (QoS 1) and 2 (QoS 2) unacknowledged, 3 (QoS 2) PUBREC'd.
    let (mut s, t0) = three_in_flight();
    let out = connect(&mut s, ms(t0, 100), false);
    // Re-deliveries carry DUP=1 [MQTT-3.3.1-1]; message 3 reached the broker
    // (PUBREC) and must not be published again [MQTT-4.3.3-1].
    assert_eq!(
        out,
        vec![
            publ("t", b"1", QoS::AtLeastOnce, 1, true),
            publ("t", b"2", QoS::ExactlyOnce, 2, true),
        ]
    );
    assert_eq!(s.take_unresolved(), vec![3]);
    assert_eq!(s.take_unresolved(), Vec::<u16>::new());
    assert_eq!(s.inflight_len(), 2);
    // Its id is free again; a late PUBCOMP for it is stray.
    assert_eq!(s.handle_packet(t0, Packet::pubcomp(3)), Ok(None));
    assert_eq!(
        s.handle_packet(t0, Packet::pubrec(2)),
        Ok(Some(Incoming::PubRec(2)))
    );
    assert_eq!(sent(&mut s, t0), vec![Out::PubRel(2)]);
    assert_eq!(
        s.handle_packet(t0, Packet::pubcomp(2)),
        Ok(Some(Incoming::PubComp(2)))
    );
    assert_eq!(
        s.handle_packet(t0, Packet::puback(1)),
        Ok(Some(Incoming::PubAck(1)))
    );
    assert_eq!(s.inflight_len(), 0);
}

#[test]
fn pubrels_are_resent_in_pubrec_order() {
    // [MQTT-4.6.0-4]: PUBRELs go out in the order their PUBRECs arrived, also
    // when they are resent after a reconnection.
    let (mut s, t0) = connected(cfg());
    for i in 1..=2u8 {
        s.publish(t0, "t", &[i], QoS::ExactlyOnce, false).unwrap();
    }
    sent(&mut s, t0);
    s.handle_packet(t0, Packet::pubrec(2)).unwrap();
    s.handle_packet(t0, Packet::pubrec(1)).unwrap();
    assert_eq!(sent(&mut s, t0), vec![Out::PubRel(2), Out::PubRel(1)]);
    s.connection_lost(t0);
    let out = connect(&mut s, ms(t0, 100), true);
    assert_eq!(out, vec![Out::PubRel(2), Out::PubRel(1)]);
}

#[test]
fn incoming_acks_follow_the_order_of_the_publishes() {
    // [MQTT-4.6.0-2], [MQTT-4.6.0-3]
    let (mut s, t0) = connected(cfg());
    for id in [5, 3, 9] {
        s.handle_packet(t0, incoming("t", b"x", QoS::AtLeastOnce, id, false))
            .unwrap();
    }
    for id in [8, 4] {
        s.handle_packet(t0, incoming("t", b"x", QoS::ExactlyOnce, id, false))
            .unwrap();
    }
    assert_eq!(
        sent(&mut s, t0),
        vec![
            Out::PubAck(5),
            Out::PubAck(3),
            Out::PubAck(9),
            Out::PubRec(8),
            Out::PubRec(4)
        ]
    );
}

#[test]
fn an_id_reused_after_pubcomp_is_a_new_qos2_message() {
    // [MQTT-4.3.3-2]: after PUBREL/PUBCOMP the id may carry a new message.
    let (mut s, t0) = connected(cfg());
    s.handle_packet(t0, incoming("t", b"first", QoS::ExactlyOnce, 9, false))
        .unwrap();
    let released = s.handle_packet(t0, Packet::pubrel(9)).unwrap();
    assert!(
        matches!(released, Some(Incoming::PubRel { mid: 9, message: Some(m) }) if m.payload == b"first")
    );
    assert_eq!(sent(&mut s, t0), vec![Out::PubRec(9), Out::PubComp(9)]);
    s.handle_packet(t0, incoming("t", b"second", QoS::ExactlyOnce, 9, false))
        .unwrap();
    assert_eq!(s.held_incoming_len(), 1);
    assert_eq!(sent(&mut s, t0), vec![Out::PubRec(9)]);
    let released = s.handle_packet(t0, Packet::pubrel(9)).unwrap();
    assert!(
        matches!(released, Some(Incoming::PubRel { mid: 9, message: Some(m) }) if m.payload == b"second")
    );
}

#[test]
fn an_empty_client_id_needs_a_clean_session() {
    // [MQTT-3.1.3-7], also for callers of the sans-IO engine.
    let config = SessionConfig {
        client_id: Default::default(),
        clean_session: false,
        ..cfg()
    };
    assert_eq!(config.validate(), Err(mqtt::Error::InvalidArgument));
    let config = SessionConfig {
        clean_session: true,
        ..config
    };
    assert_eq!(config.validate(), Ok(()));
}

#[test]
fn resend_keeps_original_order_after_out_of_order_acks() {
    let (mut s, t0) = connected(cfg());
    for i in 1..=6u8 {
        s.publish(t0, "t", &[i], QoS::AtLeastOnce, false).unwrap();
    }
    sent(&mut s, t0);
    for id in [5, 2, 3] {
        s.handle_packet(t0, Packet::puback(id)).unwrap();
    }
    s.connection_lost(t0);
    let out = connect(&mut s, t0, true);
    assert_eq!(
        out,
        vec![
            publ("t", &[1], QoS::AtLeastOnce, 1, true),
            publ("t", &[4], QoS::AtLeastOnce, 4, true),
            publ("t", &[6], QoS::AtLeastOnce, 6, true),
        ]
    );
}

#[test]
fn reconnect_resends_in_flight_then_requests_then_fills_the_window() {
    let (mut s, t0) = connected(limited(cfg(), |l| {
        l.max_inflight = 1;
    }));
    assert_eq!(s.publish(t0, "t", b"a", QoS::AtLeastOnce, false), Ok(1));
    assert_eq!(s.subscribe(t0, &[("x", QoS::AtLeastOnce)]), Ok(2));
    assert_eq!(s.publish(t0, "t", b"b", QoS::AtLeastOnce, false), Ok(3));
    s.connection_lost(t0);
    assert_eq!(s.unsubscribe(t0, &["y"]), Ok(4));
    let out = connect(&mut s, t0, true);
    assert_eq!(
        out,
        vec![
            publ("t", b"a", QoS::AtLeastOnce, 1, true),
            Out::Subscribe(2, vec![("x".into(), QoS::AtLeastOnce)]),
            Out::Unsubscribe(4, vec!["y".into()]),
        ]
    );
    // The window (1) is full; the ack of 1 lets 3 go.
    s.handle_packet(t0, Packet::puback(1)).unwrap();
    assert_eq!(
        sent(&mut s, t0),
        vec![publ("t", b"b", QoS::AtLeastOnce, 3, false)]
    );
}

#[test]
fn held_incoming_qos2_survives_only_with_the_session() {
    let (mut s, t0) = connected(cfg());
    let p = incoming("q", b"h", QoS::ExactlyOnce, 5, false);
    s.handle_packet(t0, p).unwrap();
    s.connection_lost(t0);
    assert_eq!(s.held_incoming_len(), 1);
    connect(&mut s, t0, true);
    assert_eq!(s.held_incoming_len(), 1);
    let ev = s.handle_packet(t0, Packet::pubrel(5)).unwrap();
    assert!(matches!(
        ev,
        Some(Incoming::PubRel {
            mid: 5,
            message: Some(_)
        })
    ));

    let p = incoming("q", b"h", QoS::ExactlyOnce, 6, false);
    s.handle_packet(t0, p).unwrap();
    s.connection_lost(t0);
    connect(&mut s, t0, false);
    assert_eq!(s.held_incoming_len(), 0);
}

// ---------------------------------------------------------------- subscriptions

#[test]
fn subscribe_and_unsubscribe_flows() {
    let (mut s, t0) = connected(cfg());
    let mid = s
        .subscribe(t0, &[("a/+", QoS::AtLeastOnce), ("b/#", QoS::ExactlyOnce)])
        .unwrap();
    assert_eq!(
        sent(&mut s, t0),
        vec![Out::Subscribe(
            mid,
            vec![
                ("a/+".into(), QoS::AtLeastOnce),
                ("b/#".into(), QoS::ExactlyOnce)
            ]
        )]
    );
    // Unknown ids.
    let ack = Packet::SubAck(SubAck {
        pkid: 77,
        return_codes: &[0],
        properties: None,
    });
    assert_eq!(s.handle_packet(t0, ack), Ok(None));
    assert_eq!(s.handle_packet(t0, Packet::unsuback(77)), Ok(None));
    // Wrong number of return codes.
    let ack = Packet::SubAck(SubAck {
        pkid: mid,
        return_codes: &[1],
        properties: None,
    });
    assert_eq!(s.handle_packet(t0, ack), Err(Error::ProtocolViolation));

    let codes = [1, SUBACK_FAILURE];
    let ack = Packet::SubAck(SubAck {
        pkid: mid,
        return_codes: &codes,
        properties: None,
    });
    assert_eq!(
        s.handle_packet(t0, ack.clone()),
        Ok(Some(Incoming::SubAck {
            mid,
            return_codes: &codes
        }))
    );
    assert_eq!(s.pending_requests_len(), 0);
    // Only the granted filter is tracked, with the QoS asked for.
    assert_eq!(
        s.subscriptions().collect::<Vec<_>>(),
        vec![("a/+", QoS::AtLeastOnce)]
    );
    // A second SUBACK for the same id is unknown now.
    assert_eq!(s.handle_packet(t0, ack), Ok(None));

    let umid = s.unsubscribe(t0, &["a/+"]).unwrap();
    assert_eq!(
        sent(&mut s, t0),
        vec![Out::Unsubscribe(umid, vec!["a/+".into()])]
    );
    // A SUBACK for an UNSUBSCRIBE id is not its ack.
    let ack = Packet::SubAck(SubAck {
        pkid: umid,
        return_codes: &[0],
        properties: None,
    });
    assert_eq!(s.handle_packet(t0, ack), Ok(None));
    assert_eq!(
        s.handle_packet(t0, Packet::unsuback(umid)),
        Ok(Some(Incoming::UnsubAck(umid)))
    );
    assert_eq!(s.subscriptions().count(), 0);
    assert_eq!(s.pending_requests_len(), 0);
}

#[test]
fn subscribe_offline_is_sent_after_connack_with_the_same_id() {
    let t0 = Instant::now();
    let mut s = Session::new(cfg());
    let mid = s.subscribe(t0, &[("a", QoS::AtMostOnce)]).unwrap();
    assert!(s.pending_transmit().is_empty());
    let out = connect(&mut s, t0, false);
    assert_eq!(
        out,
        vec![Out::Subscribe(mid, vec![("a".into(), QoS::AtMostOnce)])]
    );
    // Lost before the SUBACK: sent again, same id.
    s.connection_lost(t0);
    let out = connect(&mut s, t0, true);
    assert_eq!(
        out,
        vec![Out::Subscribe(mid, vec![("a".into(), QoS::AtMostOnce)])]
    );
    let ev = handle(
        &mut s,
        t0,
        Packet::SubAck(SubAck {
            pkid: mid,
            return_codes: &[0],
            properties: None,
        }),
    );
    assert!(ev.unwrap().starts_with("SubAck"));
}

fn subscribed(filters: &[(&str, QoS)], resubscribe: bool) -> (Session, Instant) {
    let (mut s, t0) = connected(SessionConfig {
        resubscribe,
        ..cfg()
    });
    let mid = s.subscribe(t0, filters).unwrap();
    sent(&mut s, t0);
    let codes: Vec<u8> = filters.iter().map(|(_, q)| *q as u8).collect();
    s.handle_packet(
        t0,
        Packet::SubAck(SubAck {
            pkid: mid,
            return_codes: &codes,
            properties: None,
        }),
    )
    .unwrap();
    s.connection_lost(t0);
    (s, t0)
}

#[test]
fn resubscribe_after_a_lost_session() {
    let (mut s, t0) = subscribed(&[("a", QoS::AtLeastOnce), ("b", QoS::ExactlyOnce)], true);
    let out = connect(&mut s, t0, false);
    let [Out::Subscribe(id, filters)] = out.as_slice() else {
        panic!("{out:?}");
    };
    assert_eq!(
        filters,
        &vec![
            ("a".to_string(), QoS::AtLeastOnce),
            ("b".to_string(), QoS::ExactlyOnce)
        ]
    );
    // The internal SUBACK is no user event, but it is consumed.
    let ack = Packet::SubAck(SubAck {
        pkid: *id,
        return_codes: &[1, 2],
        properties: None,
    });
    assert_eq!(s.handle_packet(t0, ack), Ok(None));
    assert_eq!(s.pending_requests_len(), 0);
    assert_eq!(s.subscriptions().count(), 2);
}

#[test]
fn no_resubscribe_when_the_session_is_present_or_when_disabled() {
    let (mut s, t0) = subscribed(&[("a", QoS::AtLeastOnce)], true);
    assert!(connect(&mut s, t0, true).is_empty());
    let (mut s, t0) = subscribed(&[("a", QoS::AtLeastOnce)], false);
    assert!(connect(&mut s, t0, false).is_empty());
    assert_eq!(s.subscriptions().count(), 1);
}

#[test]
fn resubscribe_skips_filters_covered_by_pending_requests() {
    let (mut s, t0) = subscribed(
        &[
            ("a", QoS::AtMostOnce),
            ("b", QoS::AtMostOnce),
            ("c", QoS::AtMostOnce),
        ],
        true,
    );
    let sub = s.subscribe(t0, &[("a", QoS::ExactlyOnce)]).unwrap();
    let unsub = s.unsubscribe(t0, &["b"]).unwrap();
    let out = connect(&mut s, t0, false);
    let internal = unsub + 1;
    assert_eq!(
        out,
        vec![
            Out::Subscribe(sub, vec![("a".into(), QoS::ExactlyOnce)]),
            Out::Unsubscribe(unsub, vec!["b".into()]),
            Out::Subscribe(internal, vec![("c".into(), QoS::AtMostOnce)]),
        ]
    );
    // The user's SUBACK is an event and updates the tracked QoS.
    let ev = handle(
        &mut s,
        t0,
        Packet::SubAck(SubAck {
            pkid: sub,
            return_codes: &[2],
            properties: None,
        }),
    );
    assert!(ev.is_some());
    s.handle_packet(t0, Packet::unsuback(unsub)).unwrap();
    assert_eq!(
        s.subscriptions().collect::<Vec<_>>(),
        vec![("a", QoS::ExactlyOnce), ("c", QoS::AtMostOnce)]
    );
}

#[test]
fn resubscribe_is_split_to_respect_max_packet_size() {
    let filters: Vec<String> = (0..10).map(|i| format!("topic/{i:02}")).collect();
    let list: Vec<(&str, QoS)> = filters
        .iter()
        .map(|f| (f.as_str(), QoS::AtMostOnce))
        .collect();
    let (mut s, t0) = subscribed(&list, true);
    // Each filter takes 2 + 8 + 1 = 11 bytes; 7 bytes of overhead.
    s.config_mut().limits_mut().max_packet_size = 40;
    let out = connect(&mut s, t0, false);
    let mut resent = Vec::new();
    for packet in &out {
        let Out::Subscribe(_, f) = packet else {
            panic!("{packet:?}");
        };
        assert!(f.len() <= 3, "{f:?}");
        resent.extend(f.iter().map(|(f, _)| f.clone()));
    }
    assert_eq!(out.len(), 4);
    assert_eq!(resent, filters);
}

// ---------------------------------------------------------------- keepalive

fn keepalive_session(keep_alive: u16) -> (Session, Instant) {
    connected(SessionConfig {
        keep_alive,
        ..cfg()
    })
}

#[test]
fn a_subscription_change_that_leaves_no_flow_gives_back_what_it_held() {
    let (mut s, t0) = keepalive_session(60);
    let mid = s.subscribe(t0, &[("a/b", QoS::AtLeastOnce)]).unwrap();
    assert_eq!(sent(&mut s, t0).len(), 1);
    assert!(s.pooled_bytes() == 0 || s.pending_requests_len() == 1);
    let codes = [1];
    let ack = Packet::SubAck(SubAck {
        pkid: mid,
        return_codes: &codes,
        properties: None,
    });
    assert!(s.handle_packet(t0, ack).unwrap().is_some());
    // Not at the next PINGREQ, a minute on: now.
    assert_eq!(s.pooled_bytes(), 0);
    let umid = s.unsubscribe(t0, &["a/b"]).unwrap();
    assert_eq!(sent(&mut s, t0).len(), 1);
    assert!(
        s.handle_packet(t0, Packet::unsuback(umid))
            .unwrap()
            .is_some()
    );
    assert_eq!(s.pooled_bytes(), 0);
    assert_eq!(s.subscriptions().count(), 0);
    // Ids go on from where they were.
    assert_eq!(s.subscribe(t0, &[("c", QoS::AtMostOnce)]), Ok(umid + 1));
}

#[test]
fn an_idle_client_gives_back_its_pools_at_the_ping_and_goes_on() {
    let (mut s, t0) = keepalive_session(10);
    for n in 0..3u64 {
        let mid = s
            .publish(ms(t0, n), "t", b"x", QoS::AtLeastOnce, false)
            .unwrap();
        assert_eq!(sent(&mut s, ms(t0, n)).len(), 1);
        handle(&mut s, ms(t0, n), Packet::PubAck(Ack::new(mid)));
    }
    assert!(s.pooled_bytes() > 0, "steady traffic keeps its buffers");
    s.handle_timeout(ms(t0, 10_002)).unwrap();
    // The PINGREQ is pending, written from a constant: no buffer is kept.
    assert_eq!(s.pooled_bytes(), 0);
    assert_eq!(sent(&mut s, ms(t0, 10_002)), vec![Out::PingReq]);
    handle(&mut s, ms(t0, 10_003), Packet::PingResp);
    // Ids go on from where they were, not back to 1.
    let mid = s
        .publish(ms(t0, 10_004), "t", b"x", QoS::AtLeastOnce, false)
        .unwrap();
    assert_eq!(mid, 4);
    assert!(matches!(
        sent(&mut s, ms(t0, 10_004)).as_slice(),
        [Out::Publish { pkid: 4, .. }]
    ));
}

#[test]
fn ping_when_idle() {
    let (mut s, t0) = keepalive_session(10);
    assert_eq!(s.poll_timeout(), Some(ms(t0, 10_000)));
    s.handle_timeout(ms(t0, 9_999)).unwrap();
    assert!(s.pending_transmit().is_empty());
    s.handle_timeout(ms(t0, 10_000)).unwrap();
    assert_eq!(sent(&mut s, ms(t0, 10_000)), vec![Out::PingReq]);
    // No second ping while one is outstanding.
    s.handle_timeout(ms(t0, 12_000)).unwrap();
    assert!(s.pending_transmit().is_empty());
    assert_eq!(s.poll_timeout(), Some(ms(t0, 15_000)));
    assert_eq!(
        s.handle_packet(ms(t0, 10_050), Packet::PingResp),
        Ok(Some(Incoming::PingResp))
    );
    assert_eq!(s.poll_timeout(), Some(ms(t0, 20_000)));
}

#[test]
fn no_ping_while_traffic_flows_both_ways() {
    let (mut s, t0) = keepalive_session(10);
    for step in 1..=10u64 {
        let now = ms(t0, step * 6_000);
        s.publish(now, "t", b"", QoS::AtMostOnce, false).unwrap();
        sent(&mut s, now);
        let p = incoming("t", b"", QoS::AtMostOnce, 0, false);
        s.handle_packet(now, p).unwrap();
        assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(10)));
        s.handle_timeout(now).unwrap();
        assert!(s.pending_transmit().is_empty(), "pinged at step {step}");
    }
}

#[test]
fn ping_when_only_receiving_or_only_sending() {
    // Only receiving: the client must still send something within keep_alive.
    let (mut s, t0) = keepalive_session(10);
    for step in 1..=3u64 {
        let p = incoming("t", b"", QoS::AtMostOnce, 0, false);
        s.handle_packet(ms(t0, step * 3_000), p).unwrap();
    }
    assert_eq!(s.poll_timeout(), Some(ms(t0, 10_000)));
    s.handle_timeout(ms(t0, 10_000)).unwrap();
    assert_eq!(sent(&mut s, ms(t0, 10_000)), vec![Out::PingReq]);

    // Only sending: a silent broker is probed too.
    let (mut s, t0) = keepalive_session(10);
    for step in 1..=3u64 {
        let now = ms(t0, step * 3_000);
        s.publish(now, "t", b"", QoS::AtMostOnce, false).unwrap();
        sent(&mut s, now);
    }
    assert_eq!(s.poll_timeout(), Some(ms(t0, 10_000)));
    s.handle_timeout(ms(t0, 10_000)).unwrap();
    assert_eq!(sent(&mut s, ms(t0, 10_000)), vec![Out::PingReq]);
}

#[test]
fn unwritten_bytes_do_not_count_as_sent() {
    let (mut s, t0) = keepalive_session(10);
    s.publish(ms(t0, 5_000), "t", b"", QoS::AtMostOnce, false)
        .unwrap();
    s.consume_transmit(ms(t0, 5_000), 0);
    assert_eq!(s.poll_timeout(), Some(ms(t0, 10_000)));
    // A partial write does count.
    s.consume_transmit(ms(t0, 6_000), 1);
    assert_eq!(s.poll_timeout(), Some(ms(t0, 10_000))); // still bounded by receive side
    let p = incoming("t", b"", QoS::AtMostOnce, 0, false);
    s.handle_packet(ms(t0, 7_000), p).unwrap();
    assert_eq!(s.poll_timeout(), Some(ms(t0, 16_000)));
}

#[test]
fn dead_link_detected_at_one_and_a_half_keepalive() {
    let (mut s, t0) = keepalive_session(10);
    s.handle_timeout(ms(t0, 10_000)).unwrap();
    assert_eq!(sent(&mut s, ms(t0, 10_000)), vec![Out::PingReq]);
    assert_eq!(s.poll_timeout(), Some(ms(t0, 15_000)));
    assert_eq!(s.handle_timeout(ms(t0, 14_999)), Ok(()));
    assert_eq!(
        s.handle_timeout(ms(t0, 15_000)),
        Err(Error::KeepaliveTimeout)
    );
}

#[test]
fn late_pingresp_within_the_window_keeps_the_link() {
    let (mut s, t0) = keepalive_session(10);
    s.handle_timeout(ms(t0, 10_000)).unwrap();
    sent(&mut s, ms(t0, 10_000));
    s.handle_packet(ms(t0, 14_900), Packet::PingResp).unwrap();
    assert_eq!(s.handle_timeout(ms(t0, 15_000)), Ok(()));
    assert!(s.pending_transmit().is_empty());
    // Next ping after the interval from the last send (the PINGREQ at 10 s).
    assert_eq!(s.poll_timeout(), Some(ms(t0, 20_000)));
    // Any packet (not only PINGRESP) proves the link alive.
    s.handle_timeout(ms(t0, 20_000)).unwrap();
    sent(&mut s, ms(t0, 20_000));
    let p = incoming("t", b"", QoS::AtMostOnce, 0, false);
    s.handle_packet(ms(t0, 24_000), p).unwrap();
    assert_eq!(s.handle_timeout(ms(t0, 25_000)), Ok(()));
    assert_eq!(s.poll_timeout(), Some(ms(t0, 30_000)));
}

#[test]
fn keep_alive_zero_never_pings() {
    let (mut s, t0) = keepalive_session(0);
    assert_eq!(s.poll_timeout(), None);
    for hours in [1, 10, 1000] {
        s.handle_timeout(t0 + Duration::from_secs(3600 * hours))
            .unwrap();
    }
    assert!(s.pending_transmit().is_empty());
}

#[test]
fn no_keepalive_while_disconnected_or_disconnecting() {
    let (mut s, t0) = keepalive_session(10);
    s.disconnect(t0).unwrap();
    assert_eq!(s.state(), ConnectionState::Disconnecting);
    assert_eq!(sent(&mut s, t0), vec![Out::Disconnect]);
    assert_eq!(s.poll_timeout(), None);
    s.handle_timeout(ms(t0, 60_000)).unwrap();
    assert!(s.pending_transmit().is_empty());
    assert_eq!(s.disconnect(t0), Err(Error::NotConnected));
    s.connection_lost(t0);
    assert_eq!(s.state(), ConnectionState::Disconnected);
    assert_eq!(s.disconnect(t0), Err(Error::NotConnected));
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn disconnecting_still_processes_acks_but_queues_new_messages() {
    let (mut s, t0) = connected(cfg());
    let mid = s.publish(t0, "t", b"", QoS::AtLeastOnce, false).unwrap();
    s.disconnect(t0).unwrap();
    assert_eq!(
        s.handle_packet(t0, Packet::puback(mid)),
        Ok(Some(Incoming::PubAck(mid)))
    );
    assert_eq!(
        s.publish(t0, "t", b"", QoS::AtMostOnce, false),
        Err(Error::NotConnected)
    );
    s.publish(t0, "t", b"", QoS::AtLeastOnce, false).unwrap();
    assert_eq!((s.inflight_len(), s.queued_len()), (0, 1));
}

// ---------------------------------------------------------------- outbox

#[test]
fn partial_writes_keep_the_byte_stream_intact() {
    let (mut s, t0) = connected(limited(cfg(), |l| {
        l.max_queued_bytes = u32::MAX;
    }));
    let mut expected = Vec::new();
    for i in 0..2000u32 {
        s.publish(t0, "t", &i.to_be_bytes(), QoS::AtMostOnce, false)
            .unwrap();
        expected.push(publ("t", &i.to_be_bytes(), QoS::AtMostOnce, 0, false));
    }
    // Write in odd-sized chunks, as a congested socket would.
    let mut wire = Vec::new();
    while !s.pending_transmit().is_empty() {
        let n = s.pending_transmit().len().min(997);
        wire.extend_from_slice(&s.pending_transmit()[..n]);
        s.consume_transmit(t0, n);
    }
    assert_eq!(decode_all(&wire), expected);
    // Overstating n is harmless.
    s.publish(t0, "t", b"", QoS::AtMostOnce, false).unwrap();
    s.consume_transmit(t0, usize::MAX);
    assert!(s.pending_transmit().is_empty());
}

// ---------------------------------------------------------------- MQTT 5 limits

// Regressions found by fuzz/fuzz_targets/session.rs.

mod v5_limits {
    use super::*;
    use mqtt::protocol::properties as prop;

    /// An MQTT 5 session connected to a server whose CONNACK carries `connack`.
    fn connected_v5(config: SessionConfig, connack: Properties<'_>) -> (Session, Instant) {
        let t0 = Instant::now();
        let mut s = Session::new(SessionConfig {
            protocol: ProtocolVersion::V5,
            ..config
        });
        s.connection_opened(t0);
        let connect = s.pending_transmit().len();
        s.consume_transmit(t0, connect);
        let ack = ConnAck {
            session_present: false,
            reason_code: 0,
            properties: Some(connack),
        };
        s.handle_packet(t0, Packet::ConnAck(ack)).unwrap();
        assert_eq!(s.state(), ConnectionState::Connected);
        (s, t0)
    }

    /// The packets the session wants to send, decoded as MQTT 5, with their sizes.
    fn sent_v5(s: &mut Session, now: Instant) -> Vec<(usize, String)> {
        let bytes = s.pending_transmit().to_vec();
        s.consume_transmit(now, bytes.len());
        let mut out = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            match decode_as(rest, usize::MAX, ProtocolVersion::V5).unwrap() {
                Decoded::Packet(p, n) => {
                    out.push((n, format!("{p:?}")));
                    rest = &rest[n..];
                }
                Decoded::Incomplete(_) => panic!("truncated packet in the outbox"),
            }
        }
        out
    }

    fn max_packet_size(max: u32) -> PropertiesBuf {
        let mut p = PropertiesBuf::new();
        p.push_int(prop::MAXIMUM_PACKET_SIZE, max).unwrap();
        p
    }

    #[test]
    fn a_disconnect_leaves_out_user_properties_and_reason_string_above_the_servers_maximum_packet_size()
     {
        let connack = max_packet_size(20);
        let (mut s, t0) = connected_v5(cfg(), connack.as_properties());
        let mut props = PropertiesBuf::new();
        props.push_user("key", "a value too long").unwrap();
        props.push_str(prop::REASON_STRING, "bye").unwrap();
        props.push_int(prop::SESSION_EXPIRY_INTERVAL, 0).unwrap();
        s.disconnect_with(t0, 0x04, props.as_properties()).unwrap();
        let out = sent_v5(&mut s, t0);
        assert_eq!(out.len(), 1, "{out:?}");
        let (size, packet) = &out[0];
        assert!(*size <= 20, "{size} bytes: {packet}");
        assert_eq!(
            packet,
            "Disconnect(Disconnect { reason_code: 4, properties: Some([SessionExpiryInterval(0)]) })"
        );

        // Within the limit they are sent.
        let connack = max_packet_size(100);
        let (mut s, t0) = connected_v5(cfg(), connack.as_properties());
        s.disconnect_with(t0, 0x04, props.as_properties()).unwrap();
        let out = sent_v5(&mut s, t0);
        assert!(out[0].1.contains("UserProperty"), "{out:?}");
    }

    #[test]
    fn no_topic_alias_is_added_to_a_publish_it_would_take_above_our_max_packet_size() {
        // PUBLISH "t/x", QoS 1, 10-byte payload, no properties: 2 + 5 + 2 + 1 + 10.
        let exact = 20;
        let mut connack = PropertiesBuf::new();
        connack.push_int(prop::TOPIC_ALIAS_MAXIMUM, 2).unwrap();
        let config = limited(cfg(), |l| {
            l.max_packet_size = exact;
            l.topic_alias_max = 2;
        });
        let (mut s, t0) = connected_v5(config, connack.as_properties());
        s.publish(t0, "t/x", &[7; 10], QoS::AtLeastOnce, false)
            .unwrap();
        let out = sent_v5(&mut s, t0);
        assert_eq!(out.len(), 1, "{out:?}");
        let (size, packet) = &out[0];
        assert!(*size <= exact as usize, "{size} bytes: {packet}");
        assert!(!packet.contains("TopicAlias"), "{packet}");

        // A smaller one on the same topic gets its alias.
        s.publish(t0, "t/x", &[7; 7], QoS::AtLeastOnce, false)
            .unwrap();
        let out = sent_v5(&mut s, t0);
        assert!(out[0].1.contains("TopicAlias(1)"), "{out:?}");
    }

    #[test]
    fn an_auth_above_the_servers_maximum_packet_size_leaves_out_user_properties_or_is_refused() {
        let mut config = cfg();
        config
            .extras_mut()
            .connect_properties
            .push_str(prop::AUTHENTICATION_METHOD, "m")
            .unwrap();
        let connack = max_packet_size(20);
        let (mut s, t0) = connected_v5(config, connack.as_properties());

        let mut props = PropertiesBuf::new();
        props.push_user("key", "a value too long").unwrap();
        props.push_str(prop::REASON_STRING, "why").unwrap();
        props.push_bin(prop::AUTHENTICATION_DATA, b"abc").unwrap();
        s.auth(0x19, props.as_properties()).unwrap();
        let out = sent_v5(&mut s, t0);
        assert_eq!(out.len(), 1, "{out:?}");
        let (size, packet) = &out[0];
        assert!(*size <= 20, "{size} bytes: {packet}");
        assert_eq!(
            packet,
            "Auth(Auth { reason_code: 25, properties: Some([AuthenticationMethod(\"m\"), \
             AuthenticationData([97, 98, 99])]) })"
        );

        // Authentication Data cannot be left out: nothing is sent.
        let mut props = PropertiesBuf::new();
        props.push_bin(prop::AUTHENTICATION_DATA, &[0; 30]).unwrap();
        assert_eq!(
            s.auth(0x19, props.as_properties()),
            Err(Error::PacketTooLarge)
        );
        assert!(s.pending_transmit().is_empty());
    }
}

// ---------------------------------------------------------------- properties

mod properties {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Publish(u8, u8),
        Subscribe,
        Unsubscribe,
        Ack(u8, u16),
        Incoming(u8, u16),
        PubRel(u16),
        Reconnect(bool),
        Lost,
        Tick(u16),
        Write(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..3, any::<u8>()).prop_map(|(q, n)| Op::Publish(q, n)),
            Just(Op::Subscribe),
            Just(Op::Unsubscribe),
            (0u8..5, 1u16..40).prop_map(|(k, id)| Op::Ack(k, id)),
            (0u8..3, 1u16..20).prop_map(|(q, id)| Op::Incoming(q, id)),
            (1u16..20).prop_map(Op::PubRel),
            any::<bool>().prop_map(Op::Reconnect),
            Just(Op::Lost),
            any::<u16>().prop_map(Op::Tick),
            any::<u16>().prop_map(Op::Write),
        ]
    }

    proptest! {
        /// Whatever the broker does, nothing panics, limits hold, the outbox
        /// always decodes, and an id handed out for a QoS 1/2 message or a
        /// request is never handed out again before its flow completed.
        #[test]
        fn engine_invariants(ops in proptest::collection::vec(op(), 1..200)) {
            let t0 = Instant::now();
            let mut s = Session::new(limited(
                SessionConfig {
                    keep_alive: 5,
                    // Keeps the model simple: every queued message and every
                    // pending request holds exactly one id the test knows of.
                    resubscribe: false,
                    ..cfg()
                },
                |l| {l.max_inflight = 3; l.max_queued_messages = 5; l.max_incoming_qos2 = 4;},
            ));
            let mut now = t0;
            let mut in_use: HashSet<u16> = HashSet::new();
            // Bytes written on the current connection: with what is still
            // pending they must always form whole, valid packets.
            let mut wire: Vec<u8> = Vec::new();
            for op in ops {
                match op {
                    Op::Publish(q, n) => {
                        let qos = QoS::from_u8(q).unwrap();
                        if let Ok(mid) = s.publish(now, "t", &[n], qos, false) {
                            prop_assert_ne!(mid, 0);
                            prop_assert!(!in_use.contains(&mid), "id {} reused", mid);
                            if qos != QoS::AtMostOnce {
                                in_use.insert(mid);
                            }
                        }
                    }
                    Op::Subscribe => {
                        if let Ok(mid) = s.subscribe(now, &[("f", QoS::AtLeastOnce)]) {
                            prop_assert!(!in_use.contains(&mid), "id {} reused", mid);
                            in_use.insert(mid);
                        }
                    }
                    Op::Unsubscribe => {
                        if let Ok(mid) = s.unsubscribe(now, &["f"]) {
                            prop_assert!(!in_use.contains(&mid), "id {} reused", mid);
                            in_use.insert(mid);
                        }
                    }
                    Op::Ack(kind, id) => {
                        let packet = match kind {
                            0 => Packet::puback(id),
                            1 => Packet::pubrec(id),
                            2 => Packet::pubcomp(id),
                            3 => Packet::unsuback(id),
                            _ => Packet::SubAck(SubAck { pkid: id, return_codes: &[1], properties: None }),
                        };
                        if let Ok(Some(
                            Incoming::PubAck(m)
                            | Incoming::PubComp(m)
                            | Incoming::SubAck { mid: m, .. }
                            | Incoming::UnsubAck(m),
                        )) = s.handle_packet(now, packet)
                        {
                            prop_assert!(in_use.remove(&m), "ack for id {} not in use", m);
                        }
                    }
                    Op::Incoming(q, id) => {
                        let qos = QoS::from_u8(q).unwrap();
                        let pkid = if qos == QoS::AtMostOnce { 0 } else { id };
                        let _ = s.handle_packet(now, incoming("t", b"x", qos, pkid, false));
                    }
                    Op::PubRel(id) => {
                        let _ = s.handle_packet(now, Packet::pubrel(id));
                    }
                    Op::Reconnect(present) => {
                        s.connection_lost(now);
                        wire.clear();
                        s.connection_opened(now);
                        let _ = s.handle_packet(now, accepted(present));
                        // Given up (PUBREC'd, then no session): final outcomes too.
                        for m in s.take_unresolved() {
                            prop_assert!(!present, "id {} given up with the session kept", m);
                            prop_assert!(in_use.remove(&m), "id {} given up, not in use", m);
                        }
                    }
                    Op::Lost => {
                        s.connection_lost(now);
                        wire.clear();
                    }
                    Op::Tick(n) => {
                        now += Duration::from_millis(n.into());
                        // After a successful timeout turn the next deadline
                        // lies in the future: no busy loop for the reactor.
                        if s.handle_timeout(now).is_ok()
                            && let Some(deadline) = s.poll_timeout()
                        {
                            prop_assert!(deadline > now);
                        }
                    }
                    Op::Write(n) => {
                        let n = s.pending_transmit().len().min(n.into());
                        wire.extend_from_slice(&s.pending_transmit()[..n]);
                        s.consume_transmit(now, n);
                    }
                }
                prop_assert!(s.inflight_len() <= 3);
                prop_assert!(s.queued_len() <= 5);
                prop_assert!(s.held_incoming_len() <= 4);
                prop_assert_eq!(
                    s.inflight_len() + s.queued_len() + s.pending_requests_len(),
                    in_use.len()
                );
                let mut stream = wire.clone();
                stream.extend_from_slice(s.pending_transmit());
                decode_all(&stream);
            }
        }
    }
}

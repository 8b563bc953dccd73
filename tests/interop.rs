//! The interop matrix: the same end-to-end scenarios against every broker of
//! `common::brokers::Kind` (mosquitto, rumqttd, aedes, amqtt, ejabberd), each
//! test with its own private broker on free loopback ports.
//!
//! Where a broker departs from MQTT 3.1.1, the scenario consults [`KNOWN`]: the
//! deviation is named, cites the normative statement, and the test asserts
//! that the deviating behaviour really happens, so it fails (and the entry
//! must go) once the broker is fixed. Nothing is skipped silently.
//!
//! Brokers other than mosquitto come from `scripts/interop-deps.sh`; a missing
//! one fails its tests unless `MQTT_SKIP_INTEROP=1`. Run the matrix alone:
//! `cargo test --test interop` (one broker: `cargo test --test interop aedes::`).

mod common;

use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::FaultProxy;
use common::brokers::{AnyBroker, Kind, skip_requested};
use common::events::{Event, expect_within, recorded_client};
use mqtt::protocol::codec::QoS;
use mqtt::{Client, Command, Data, Error};

/// How long one expected event may take. Generous: the matrix runs several
/// brokers at once on a small machine, and an Erlang or Python broker under
/// load answers in tens of milliseconds, not microseconds.
const WAIT: Duration = Duration::from_secs(10);

/// The bound of a whole scenario, broker start included.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------
// Known deviations from MQTT 3.1.1
// ---------------------------------------------------------------------------

/// A behaviour some broker gets wrong; each scenario checks the ones it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deviation {
    /// A message goes out at the QoS the subscription was granted even when
    /// it was published at a lower one (QoS 0 published, QoS 2 delivered).
    QosNotDowngraded,
    /// Two overlapping subscriptions (QoS 0 and QoS 2) get one copy at QoS 0.
    OverlapNotMaxQos,
    /// QoS 1/2 messages published while a clean_session=0 client is away are
    /// not queued for it.
    NoOfflineQueue,
    /// A live QoS 2 message racing the replay of the offline queue breaks the
    /// queued QoS 2 flow (a race: not every run shows it).
    OfflineReplayRace,
    /// A second connection with a connected client's id leaves the first one
    /// connected.
    NoTakeover,
}

struct Known {
    broker: Kind,
    deviation: Deviation,
    /// The normative statement it departs from.
    spec: &'static str,
    /// What the broker does instead (the test asserts exactly this).
    what: &'static str,
}

/// The table the README's compatibility table reflects.
const KNOWN: &[Known] = &[
    Known {
        broker: Kind::Rumqttd,
        deviation: Deviation::QosNotDowngraded,
        spec: "[MQTT-3.8.4-6]: delivered QoS = min(published QoS, granted QoS)",
        what: "delivers at the granted QoS: a QoS 0 or 1 message to a QoS 2 subscription arrives as QoS 2",
    },
    Known {
        broker: Kind::Amqtt,
        deviation: Deviation::QosNotDowngraded,
        spec: "[MQTT-3.8.4-6]: delivered QoS = min(published QoS, granted QoS)",
        what: "delivers at the granted QoS: a QoS 0 or 1 message to a QoS 2 subscription arrives as QoS 2",
    },
    Known {
        broker: Kind::Rumqttd,
        deviation: Deviation::OverlapNotMaxQos,
        spec: "[MQTT-3.3.5-1]: overlapping subscriptions get the maximum QoS of those matching",
        what: "one copy at QoS 0 for subscriptions ov/# (QoS 0) and ov/+ (QoS 2) and a QoS 2 message",
    },
    Known {
        broker: Kind::Aedes,
        deviation: Deviation::OverlapNotMaxQos,
        spec: "[MQTT-3.3.5-1]: overlapping subscriptions get the maximum QoS of those matching",
        what: "one copy at QoS 0 for subscriptions ov/# (QoS 0) and ov/+ (QoS 2) and a QoS 2 message",
    },
    Known {
        broker: Kind::Amqtt,
        deviation: Deviation::OverlapNotMaxQos,
        spec: "[MQTT-3.3.5-1]: overlapping subscriptions get the maximum QoS of those matching",
        what: "one copy at QoS 0 for subscriptions ov/# (QoS 0) and ov/+ (QoS 2) and a QoS 2 message",
    },
    Known {
        broker: Kind::Aedes,
        deviation: Deviation::OfflineReplayRace,
        spec: "[MQTT-4.3.3-1]: the sender answers PUBREC with a PUBREL of the same packet id; \
               [MQTT-4.6.0-6]: messages keep their publication order",
        what: "INTERMITTENT (about 1 run in 5 here; the test accepts both outcomes and says which it saw): \
               a QoS 2 message published right after a clean_session=0 client reconnects interleaves \
               with the replay of its offline queue, and the PUBREC of the queued QoS 2 message is \
               answered with a PUBREL carrying the live message's packet id: the queued message is \
               never released on that connection",
    },
    Known {
        broker: Kind::Amqtt,
        deviation: Deviation::NoOfflineQueue,
        spec: "[MQTT-3.1.2-5]: QoS 1/2 messages for a disconnected clean_session=0 client are stored; \
               [MQTT-3.1.2-4]: the session lasts until the client connects with clean_session=1",
        what: "with allow_anonymous (as the matrix runs it) every client counts as anonymous, and amqtt \
               queues nothing for an absent anonymous client and drops its session within about a second \
               (with a password file it behaves: the scenario then passes in full against such an amqtt)",
    },
    Known {
        broker: Kind::Amqtt,
        deviation: Deviation::NoTakeover,
        spec: "[MQTT-3.1.4-2]: a CONNECT with the id of a connected client disconnects that client",
        what: "accepts the second connection and leaves the first one connected and working",
    },
];

fn deviates(kind: Kind, deviation: Deviation) -> bool {
    let known = KNOWN
        .iter()
        .find(|k| k.broker == kind && k.deviation == deviation);
    if let Some(k) = known {
        eprintln!(
            "{}: known deviation {:?} ({}): {}",
            kind.name(),
            k.deviation,
            k.spec,
            k.what
        );
    }
    known.is_some()
}

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// Run `scenario` against a fresh `kind` broker, bounded by SCENARIO_TIMEOUT.
fn run(kind: Kind, scenario: fn(&AnyBroker)) {
    if kind != Kind::Mosquitto && skip_requested() {
        eprintln!(
            "SKIPPED: {} (MQTT_SKIP_INTEROP is set: the interop matrix runs against mosquitto only)",
            kind.name()
        );
        return;
    }
    let (done_tx, done_rx) = channel();
    let worker = thread::Builder::new()
        .name(format!("interop-{}", kind.name()))
        .spawn(move || {
            let broker = AnyBroker::start(kind);
            scenario(&broker);
            let _ = done_tx.send(());
        })
        .unwrap();
    match done_rx.recv_timeout(SCENARIO_TIMEOUT) {
        Ok(()) => worker.join().unwrap(),
        // The worker panicked (it dropped the sender): report its panic.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(worker.join().unwrap_err())
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!(
            "{}: the scenario did not finish within {SCENARIO_TIMEOUT:?}",
            kind.name()
        ),
    }
}

/// A client recording every callback, with the credentials the broker needs.
fn client(broker: &AnyBroker, id: &str, clean: bool) -> (Client, Receiver<Event>) {
    let (client, rx) = recorded_client(id, clean);
    // MQTT_INTEROP_TRACE=1: every packet each client sends and receives, on stderr.
    if std::env::var_os("MQTT_INTEROP_TRACE").is_some_and(|v| v != "0") {
        let id = id.to_owned();
        let t0 = Instant::now();
        let log: mqtt::log::LogFn = Arc::new(move |_, msg: &str| {
            eprintln!("[{id} {:>6} ms] {msg}", t0.elapsed().as_millis())
        });
        client.set_log(Some(log), mqtt::log::Level::Debug);
    }
    if let Some((user, pass)) = broker.credentials(id) {
        client
            .set_credentials(Some(&user), Some(pass.as_bytes()))
            .unwrap();
    }
    (client, rx)
}

/// Connect (blocking, returns session present) and start the loop thread.
fn start(client: &Client, broker: &AnyBroker, keepalive: u16) -> bool {
    let present = client
        .connect(broker.host(), keepalive, broker.port())
        .unwrap_or_else(|e| panic!("{}: connect: {e:?}", broker.kind().name()));
    client.loop_start(None).unwrap();
    present
}

fn wait_for(rx: &Receiver<Event>, what: &str, want: impl Fn(&Event) -> bool) -> Event {
    expect_within(rx, WAIT, what, want)
}

fn connack(rx: &Receiver<Event>) -> Event {
    wait_for(rx, "CONNACK", |e| e.command == Command::ConnAck)
}

fn disconnected(rx: &Receiver<Event>) -> Event {
    wait_for(rx, "DISCONNECT", |e| e.command == Command::Disconnect)
}

fn suback(rx: &Receiver<Event>, mid: u16) -> Event {
    let e = wait_for(rx, "SUBACK", |e| e.command == Command::SubAck);
    assert_eq!(
        e.mid, mid,
        "SUBACK carries the SUBSCRIBE's mid [MQTT-3.8.4-2]"
    );
    e
}

fn subscribe(client: &Client, rx: &Receiver<Event>, filters: &[(&str, QoS)]) -> Vec<u8> {
    let mid = client.subscribe(filters).unwrap();
    suback(rx, mid).granted
}

/// Messages (PUBLISH or PUBREL callbacks) until one on `marker` arrives; the
/// marker itself is not returned.
fn messages_until(rx: &Receiver<Event>, marker: &str) -> Vec<Event> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(e) if e.is_message() && e.topic.as_deref() == Some(marker) => return got,
            Ok(e) if e.is_message() => got.push(e),
            Ok(_) => {}
            Err(_) => panic!("no message on {marker} within {WAIT:?}; before it: {got:?}"),
        }
    }
}

/// Messages until each of `topics` has arrived at least once (in any order).
fn messages_until_all(rx: &Receiver<Event>, topics: &[&str]) -> Vec<Event> {
    let deadline = Instant::now() + WAIT;
    let mut got: Vec<Event> = Vec::new();
    while !topics
        .iter()
        .all(|t| got.iter().any(|e| e.topic.as_deref() == Some(*t)))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(e) if e.is_message() => got.push(e),
            Ok(_) => {}
            Err(_) => panic!("not all of {topics:?} within {WAIT:?}: {got:?}"),
        }
    }
    got
}

fn publish_acked(
    client: &Client,
    rx: &Receiver<Event>,
    topic: &str,
    payload: &[u8],
    qos: QoS,
    retain: bool,
) -> u16 {
    let mid = client.publish(topic, payload, qos, retain).unwrap();
    match qos {
        QoS::AtMostOnce => {}
        QoS::AtLeastOnce => {
            wait_for(rx, "PUBACK", |e| {
                e.command == Command::PubAck && e.mid == mid
            });
        }
        QoS::ExactlyOnce => {
            wait_for(rx, "PUBCOMP", |e| {
                e.command == Command::PubComp && e.mid == mid
            });
        }
    }
    mid
}

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

/// CONNACK with session present 0 for a clean session [MQTT-3.2.2-1], the
/// CONNACK callback; a requested disconnect reports no error; connect again.
fn connect_disconnect(b: &AnyBroker) {
    let (c, rx) = client(b, "cd-1", true);
    assert!(!start(&c, b, 30), "clean session: session present 0");
    let ack = connack(&rx);
    assert!(!ack.session_present);
    assert_eq!(ack.return_code, 0);
    assert!(c.is_connected());
    c.disconnect().unwrap();
    let bye = disconnected(&rx);
    assert_eq!(bye.error, None, "a requested disconnect reports no error");
    assert!(!c.is_connected());
    c.loop_stop().unwrap();
    assert!(!c.connect(b.host(), 30, b.port()).unwrap());
    assert!(c.is_connected());
    c.close();
}

/// QoS 0/1/2 out and in, with their acknowledgements carrying the mids that
/// publish returned, and QoS 2 delivered on PUBREL.
fn qos_round_trips(b: &AnyBroker) {
    let (sub, sub_rx) = client(b, "qos-sub", true);
    let (publ, pub_rx) = client(b, "qos-pub", true);
    start(&sub, b, 30);
    start(&publ, b, 30);
    let granted = subscribe(&sub, &sub_rx, &[("qos/#", QoS::ExactlyOnce)]);
    assert_eq!(granted, vec![2], "granted QoS 2");
    let mut mids = Vec::new();
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let topic = format!("qos/{}", qos as u8);
        let payload: Vec<u8> = (0..1000u32).map(|i| (i * 7 + qos as u32) as u8).collect();
        let mid = publ.publish(&topic, &payload, qos, false).unwrap();
        mids.push(mid);
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                wait_for(&pub_rx, "PUBACK", |e| {
                    e.command == Command::PubAck && e.mid == mid
                });
            }
            QoS::ExactlyOnce => {
                wait_for(&pub_rx, "PUBREC", |e| {
                    e.command == Command::PubRec && e.mid == mid
                });
                wait_for(&pub_rx, "PUBCOMP", |e| {
                    e.command == Command::PubComp && e.mid == mid
                });
            }
        }
        let got = wait_for(&sub_rx, &topic, |e| {
            e.is_message() && e.topic.as_deref() == Some(topic.as_str())
        });
        assert_eq!(got.payload, payload);
        assert!(!got.retain);
        if qos != QoS::ExactlyOnce && deviates(b.kind(), Deviation::QosNotDowngraded) {
            assert_eq!(
                got.qos,
                Some(QoS::ExactlyOnce),
                "QosNotDowngraded: published at {qos:?}"
            );
            assert_eq!(got.command, Command::PubRel);
            continue;
        }
        assert_eq!(got.qos, Some(qos), "min(published, granted) [MQTT-3.8.4-6]");
        let expected = if qos == QoS::ExactlyOnce {
            Command::PubRel
        } else {
            Command::Publish
        };
        assert_eq!(got.command, expected, "QoS 2 is delivered on PUBREL");
    }
    mids.sort_unstable();
    mids.dedup();
    assert_eq!(mids.len(), 3, "every publish has its own mid");
    // A burst of each QoS: every message arrives exactly once, in order per QoS
    // ([MQTT-4.6.0-6] for the ordered topic at QoS 1 and 2).
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let topic = format!("qos/burst{}", qos as u8);
        for i in 0..50u32 {
            publ.publish(&topic, &i.to_be_bytes(), qos, false).unwrap();
        }
        publ.publish("qos/end", b"", qos, false).unwrap();
        let got = messages_until(&sub_rx, "qos/end");
        let seq: Vec<u32> = got
            .iter()
            .map(|e| u32::from_be_bytes(e.payload[..4].try_into().unwrap()))
            .collect();
        assert_eq!(seq, (0..50).collect::<Vec<_>>(), "QoS {} burst", qos as u8);
    }
    sub.close();
    publ.close();
}

/// Retained messages: stored, sent with RETAIN 1 to a new subscriber
/// [MQTT-3.3.1-6], [MQTT-3.3.1-8]; forwarded with RETAIN 0 to existing
/// subscribers [MQTT-3.3.1-9]; an empty retained payload clears it
/// [MQTT-3.3.1-10], [MQTT-3.3.1-11].
fn retained(b: &AnyBroker) {
    let (live, live_rx) = client(b, "ret-live", true);
    let (publ, pub_rx) = client(b, "ret-pub", true);
    start(&live, b, 30);
    start(&publ, b, 30);
    subscribe(&live, &live_rx, &[("ret/#", QoS::AtLeastOnce)]);
    publish_acked(&publ, &pub_rx, "ret/a", b"kept", QoS::AtLeastOnce, true);
    let forwarded = wait_for(&live_rx, "ret/a", |e| e.is_message());
    assert_eq!(forwarded.payload, b"kept");
    assert!(
        !forwarded.retain,
        "forwarded to an existing subscription with RETAIN 0 [MQTT-3.3.1-9]"
    );

    let (late, late_rx) = client(b, "ret-late", true);
    start(&late, b, 30);
    subscribe(&late, &late_rx, &[("ret/#", QoS::AtLeastOnce)]);
    let stored = wait_for(&late_rx, "retained ret/a", |e| e.is_message());
    assert_eq!(stored.topic.as_deref(), Some("ret/a"));
    assert_eq!(stored.payload, b"kept");
    assert!(
        stored.retain,
        "a retained message is sent with RETAIN 1 [MQTT-3.3.1-8]"
    );
    assert_eq!(stored.qos, Some(QoS::AtLeastOnce));
    late.close();

    // Clear it; a new subscriber then gets nothing before a live marker.
    publish_acked(&publ, &pub_rx, "ret/a", b"", QoS::AtLeastOnce, true);
    let (after, after_rx) = client(b, "ret-after", true);
    start(&after, b, 30);
    subscribe(&after, &after_rx, &[("ret/#", QoS::AtLeastOnce)]);
    publish_acked(&publ, &pub_rx, "ret/marker", b"m", QoS::AtLeastOnce, false);
    let before = messages_until(&after_rx, "ret/marker");
    assert!(
        before.is_empty(),
        "a cleared retained message is not sent [MQTT-3.3.1-10]: {before:?}"
    );
    after.close();
    live.close();
    publ.close();
}

/// The will is published when the connection ends without DISCONNECT
/// [MQTT-3.1.2-8], not after one [MQTT-3.1.2-10] / [MQTT-3.14.4-3].
fn will(b: &AnyBroker) {
    let (watch, watch_rx) = client(b, "will-watch", true);
    start(&watch, b, 30);
    subscribe(&watch, &watch_rx, &[("will/#", QoS::AtLeastOnce)]);

    // A clean DISCONNECT: no will.
    let (polite, polite_rx) = client(b, "will-polite", true);
    polite
        .set_will(Some((
            "will/polite",
            b"should not",
            QoS::AtLeastOnce,
            false,
        )))
        .unwrap();
    start(&polite, b, 30);
    polite.disconnect().unwrap();
    assert_eq!(disconnected(&polite_rx).error, None);
    polite.close();

    // The link drops (a proxy cuts it): the will goes out.
    let proxy = FaultProxy::start(b.port());
    let (rude, rude_rx) = client(b, "will-rude", true);
    rude.set_reconnect(None).unwrap();
    rude.set_will(Some(("will/rude", b"gone", QoS::AtLeastOnce, false)))
        .unwrap();
    rude.connect(b.host(), 30, proxy.port()).unwrap();
    rude.loop_start(None).unwrap();
    connack(&rude_rx);
    proxy.cut_all();
    assert_eq!(disconnected(&rude_rx).error, Some(Error::ConnectionLost));
    let got = wait_for(&watch_rx, "the will", |e| e.is_message());
    assert_eq!(
        got.topic.as_deref(),
        Some("will/rude"),
        "the first will seen is the dropped client's, not the polite one's"
    );
    assert_eq!(got.payload, b"gone");
    assert_eq!(got.qos, Some(QoS::AtLeastOnce));
    rude.close();
    watch.close();
}

/// A persistent session: subscriptions kept and QoS 1/2 messages queued while
/// offline [MQTT-3.1.2-4], [MQTT-3.1.2-5]; session present 1 on return
/// [MQTT-3.2.2-2].
fn persistent_session(b: &AnyBroker) {
    session_scenario(b, false)
}

/// As [`persistent_session`], with a live message published as soon as the
/// client is back, racing the replay of what was queued while it was away:
/// the queue comes first ([MQTT-4.6.0-6]) and every QoS 2 flow completes.
fn offline_replay_with_live_traffic(b: &AnyBroker) {
    session_scenario(b, true)
}

fn session_scenario(b: &AnyBroker, race: bool) {
    let (s, s_rx) = client(b, "ps-sub", false);
    s.set_resubscribe(false); // what arrives must come from the broker's session
    let (p, p_rx) = client(b, "ps-pub", true);
    start(&p, b, 30);
    start(&s, b, 30);
    subscribe(&s, &s_rx, &[("ps/#", QoS::ExactlyOnce)]);
    s.disconnect().unwrap();
    disconnected(&s_rx);
    s.loop_stop().unwrap();

    for (i, qos) in [QoS::AtLeastOnce, QoS::ExactlyOnce, QoS::AtLeastOnce]
        .into_iter()
        .enumerate()
    {
        publish_acked(
            &p,
            &p_rx,
            &format!("ps/{i}"),
            format!("offline {i}").as_bytes(),
            qos,
            false,
        );
    }
    if !b.authenticated() && deviates(b.kind(), Deviation::NoOfflineQueue) {
        // Whether the session (and so the subscription) is still there depends
        // on the broker's sweep: subscribe again, then nothing queued arrives
        // before a live marker.
        start(&s, b, 30);
        subscribe(&s, &s_rx, &[("ps/#", QoS::ExactlyOnce)]);
        p.publish("ps/end", b"", QoS::ExactlyOnce, false).unwrap();
        let got = messages_until(&s_rx, "ps/end");
        assert!(got.is_empty(), "NoOfflineQueue: {got:?}");
        s.close();
        p.close();
        // The deviation is amqtt's policy for anonymous clients only: with a
        // password file the whole scenario must pass.
        let authenticated = AnyBroker::start_authenticated(b.kind());
        session_scenario(&authenticated, race);
        return;
    }
    assert!(
        start(&s, b, 30),
        "session present after a clean_session=0 reconnection [MQTT-3.2.2-2]"
    );
    let queued = ["ps/0", "ps/1", "ps/2"];
    let check_queued = |got: &[Event]| {
        let topics: Vec<_> = got.iter().filter_map(|e| e.topic.clone()).collect();
        for t in queued {
            let n = topics.iter().filter(|x| *x == t).count();
            assert_eq!(n, 1, "{t} once: {topics:?}");
        }
        // QoS 2 is delivered on PUBREL, so QoS 1 messages may overtake ps/1.
        let q1: Vec<_> = topics
            .iter()
            .filter(|t| *t == "ps/0" || *t == "ps/2")
            .collect();
        assert_eq!(
            q1,
            ["ps/0", "ps/2"],
            "queued while offline, in order: {topics:?}"
        );
        let q2 = got
            .iter()
            .find(|e| e.topic.as_deref() == Some("ps/1"))
            .unwrap();
        assert_eq!(q2.qos, Some(QoS::ExactlyOnce));
        assert_eq!(q2.command, Command::PubRel);
    };
    if !race {
        check_queued(&messages_until_all(&s_rx, &queued));
        // Nothing more (no duplicate) before a later message.
        p.publish("ps/end", b"", QoS::ExactlyOnce, false).unwrap();
        let extra = messages_until(&s_rx, "ps/end");
        assert!(extra.is_empty(), "after the queue: {extra:?}");
    } else if deviates(b.kind(), Deviation::OfflineReplayRace) {
        p.publish("ps/end", b"", QoS::ExactlyOnce, false).unwrap();
        // ps/1 may never come: wait less than WAIT for it (aedes answers in ms).
        let deadline = Instant::now() + Duration::from_secs(4);
        let mut got = Vec::new();
        while got.len() < 4 {
            let left = deadline.saturating_duration_since(Instant::now());
            match s_rx.recv_timeout(left) {
                Ok(e) if e.is_message() => got.push(e),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        let topics: Vec<_> = got.iter().filter_map(|e| e.topic.clone()).collect();
        let observed = !topics.iter().any(|t| t == "ps/1");
        eprintln!("OfflineReplayRace observed in this run: {observed}: {topics:?}");
        if observed {
            let mut rest = topics.clone();
            rest.sort();
            assert_eq!(
                rest,
                ["ps/0", "ps/2", "ps/end"],
                "OfflineReplayRace: {topics:?}"
            );
        } else {
            check_queued(&got);
        }
    } else {
        // The QoS 2 marker, published after them, comes after everything.
        p.publish("ps/end", b"", QoS::ExactlyOnce, false).unwrap();
        let got = messages_until_all(&s_rx, &["ps/0", "ps/1", "ps/2", "ps/end"]);
        let topics: Vec<_> = got.iter().filter_map(|e| e.topic.clone()).collect();
        assert_eq!(
            topics.last().map(String::as_str),
            Some("ps/end"),
            "[MQTT-4.6.0-6]: {topics:?}"
        );
        check_queued(&got[..got.len() - 1]);
    }

    // clean_session=1 ends the session: nothing is kept after it.
    match s.disconnect() {
        Ok(()) => {
            disconnected(&s_rx);
        }
        // aedes may have ended that connection over the crossed packet ids
        // of its OfflineReplayRace (seen in CI): the client is between
        // connections, which is all this step needs.
        Err(Error::NotConnected) if race && deviates(b.kind(), Deviation::OfflineReplayRace) => {
            eprintln!("OfflineReplayRace: the broker had closed the connection");
        }
        Err(e) => panic!("{}: disconnect: {e:?}", b.kind().name()),
    }
    s.loop_stop().unwrap();
    let (fresh, fresh_rx) = client(b, "ps-sub", true);
    assert!(
        !start(&fresh, b, 30),
        "clean session: session present 0 [MQTT-3.2.2-1]"
    );
    connack(&fresh_rx);
    fresh.close();
    s.close();
    p.close();
}

/// UNSUBSCRIBE stops delivery on that filter only; UNSUBACK carries its mid
/// [MQTT-3.10.4-4], [MQTT-3.11.2-1].
fn unsubscribe(b: &AnyBroker) {
    let (c, rx) = client(b, "unsub", true);
    start(&c, b, 30);
    subscribe(
        &c,
        &rx,
        &[("un/a/#", QoS::AtLeastOnce), ("un/b/#", QoS::AtLeastOnce)],
    );
    let mid = c.unsubscribe(&["un/a/#"]).unwrap();
    let ack = wait_for(&rx, "UNSUBACK", |e| e.command == Command::UnsubAck);
    assert_eq!(ack.mid, mid);
    c.publish("un/a/x", b"gone", QoS::AtLeastOnce, false)
        .unwrap();
    c.publish("un/b/x", b"kept", QoS::AtLeastOnce, false)
        .unwrap();
    c.publish("un/b/end", b"", QoS::AtLeastOnce, false).unwrap();
    let got = messages_until(&rx, "un/b/end");
    let topics: Vec<_> = got.iter().map(|e| e.topic.clone().unwrap()).collect();
    assert_eq!(topics, ["un/b/x"]);
    c.close();
}

/// Two subscriptions matching one topic: the message is delivered with the
/// maximum QoS of the matching subscriptions [MQTT-3.3.5-1] (once, or once
/// per subscription: both are allowed by 3.1.1).
fn overlapping_subscriptions(b: &AnyBroker) {
    let (c, rx) = client(b, "overlap", true);
    let (p, _p_rx) = client(b, "overlap-pub", true);
    start(&c, b, 30);
    start(&p, b, 30);
    let granted = subscribe(
        &c,
        &rx,
        &[("ov/#", QoS::AtMostOnce), ("ov/+", QoS::ExactlyOnce)],
    );
    assert_eq!(granted, vec![0, 2]);
    p.publish("ov/x", b"both", QoS::ExactlyOnce, false).unwrap();
    // QoS 2 like the message: a QoS 0 marker would overtake its PUBREL.
    p.publish("ov/end", b"", QoS::ExactlyOnce, false).unwrap();
    let got = messages_until(&rx, "ov/end");
    assert!(
        (1..=2).contains(&got.len()),
        "one copy, or one per subscription: {got:?}"
    );
    let best = got.iter().filter_map(|e| e.qos).max();
    if deviates(b.kind(), Deviation::OverlapNotMaxQos) {
        assert_eq!(got.len(), 1, "OverlapNotMaxQos: {got:?}");
        assert_eq!(best, Some(QoS::AtMostOnce), "OverlapNotMaxQos: {got:?}");
        c.close();
        p.close();
        return;
    }
    assert_eq!(
        best,
        Some(QoS::ExactlyOnce),
        "the maximum QoS of the matching subscriptions [MQTT-3.3.5-1]: {got:?}"
    );
    eprintln!(
        "{}: {} cop{} for two overlapping subscriptions",
        b.kind().name(),
        got.len(),
        if got.len() == 1 { "y" } else { "ies" }
    );
    c.close();
    p.close();
}

/// A 1 s keepalive over several intervals: PINGREQ/PINGRESP keep an idle
/// connection up [MQTT-3.1.2-23], [MQTT-3.12.4-1], and it still works after.
fn keepalive(b: &AnyBroker) {
    let (c, rx) = client(b, "ka", true);
    start(&c, b, 1);
    subscribe(&c, &rx, &[("ka/t", QoS::AtLeastOnce)]);
    let began = Instant::now();
    let mut pings = 0;
    while pings < 4 {
        let e = wait_for(&rx, "PINGRESP or DISCONNECT", |e| {
            matches!(e.command, Command::PingResp | Command::Disconnect)
        });
        assert_eq!(
            e.command,
            Command::PingResp,
            "the idle connection dropped: {e:?}"
        );
        pings += 1;
    }
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(2500),
        "4 pings, one per idle second, took {took:?}"
    );
    assert!(c.is_connected());
    c.publish("ka/t", b"alive", QoS::AtLeastOnce, false)
        .unwrap();
    let got = wait_for(&rx, "ka/t", |e| e.is_message());
    assert_eq!(got.payload, b"alive");
    c.close();
}

/// The seed's callback rules with real traffic: per packet at most one
/// specific callback, the highest priority whose condition holds (ties: the
/// first registered); the generic one only when no condition held; QoS 2
/// messages reach PUBREL callbacks.
fn callback_rules(b: &AnyBroker) {
    let c = Client::new("cb", true).unwrap();
    if let Some((user, pass)) = b.credentials("cb") {
        c.set_credentials(Some(&user), Some(pass.as_bytes()))
            .unwrap();
    }
    let log: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let record = |name: &'static str| {
        let log = log.clone();
        Arc::new(move |_: &Client, d: &Data<'_>| {
            let topic = d.message.map(|m| m.topic.to_owned()).unwrap_or_default();
            log.lock().unwrap().push((name.to_owned(), topic));
        }) as mqtt::dispatch::Callback<Client>
    };
    let topic_is = |t: &'static str| {
        Arc::new(move |d: &Data<'_>| d.message.is_some_and(|m| m.topic == t))
            as mqtt::dispatch::Condition
    };
    let under_cb = Arc::new(|d: &Data<'_>| d.message.is_some_and(|m| m.topic.starts_with("cb/")))
        as mqtt::dispatch::Condition;
    c.on(Command::Publish, record("low"), Some(under_cb.clone()), 1);
    c.on(Command::Publish, record("high"), Some(topic_is("cb/a")), 5);
    c.on(
        Command::Publish,
        record("tie-first"),
        Some(topic_is("cb/tie")),
        3,
    );
    c.on(
        Command::Publish,
        record("tie-second"),
        Some(topic_is("cb/tie")),
        3,
    );
    c.on(Command::Publish, record("generic-1"), None, 0);
    c.on(Command::Publish, record("generic"), None, 0); // replaces generic-1
    c.on(Command::PubRel, record("pubrel"), None, 0);
    let (tx, rx) = channel();
    let done_tx = Mutex::new(tx);
    c.on(
        Command::PubRel,
        Arc::new(move |_: &Client, _: &Data<'_>| {
            let _ = done_tx.lock().unwrap().send(());
        }),
        Some(topic_is("other/end")),
        0,
    );
    let suback = common::events::record(&c, &[Command::SubAck]);
    c.connect(b.host(), 30, b.port()).unwrap();
    c.loop_start(None).unwrap();
    let mid = c
        .subscribe(&[
            ("cb/#", QoS::AtLeastOnce),
            ("other/#", QoS::ExactlyOnce),
            ("gen/#", QoS::AtLeastOnce),
        ])
        .unwrap();
    suback_mid(&suback, mid);
    for t in ["cb/a", "cb/b", "cb/tie", "gen/c"] {
        c.publish(t, b"x", QoS::AtLeastOnce, false).unwrap();
    }
    c.publish("other/q2", b"x", QoS::ExactlyOnce, false)
        .unwrap();
    c.publish("other/end", b"x", QoS::ExactlyOnce, false)
        .unwrap();
    rx.recv_timeout(WAIT).expect("the PUBREL of other/end");
    let mut got = log.lock().unwrap().clone();
    // A QoS 2 PUBLISH runs the PUBLISH callbacks without a message (it is
    // delivered on PUBREL): no condition holds, so the generic one runs.
    let announced = got.iter().filter(|(_, t)| t.is_empty()).count();
    got.retain(|(_, t)| !t.is_empty());
    assert!(
        log.lock()
            .unwrap()
            .iter()
            .filter(|(_, t)| t.is_empty())
            .all(|(n, _)| n == "generic"),
        "{:?}",
        log.lock().unwrap()
    );
    assert_eq!(announced, 2, "the two QoS 2 PUBLISHes");
    let want: Vec<(String, String)> = [
        ("high", "cb/a"),
        ("low", "cb/b"),
        ("tie-first", "cb/tie"),
        ("generic", "gen/c"),
        ("pubrel", "other/q2"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want);
    c.close();
}

fn suback_mid(rx: &Receiver<Event>, mid: u16) {
    suback(rx, mid);
}

/// The broker is killed and restarted on the same port: DISCONNECT callback
/// with ConnectionLost, automatic reconnection, CONNACK callback again,
/// subscriptions restored by the client, a QoS 1 message published while the
/// broker was down delivered and acknowledged with the mid publish returned.
fn reconnect_after_restart(b: &AnyBroker) {
    let (s, s_rx) = client(b, "rc-sub", true);
    let (p, p_rx) = client(b, "rc-pub", true);
    for c in [&s, &p] {
        c.set_reconnect(Some((
            Duration::from_millis(100),
            Duration::from_millis(500),
        )))
        .unwrap();
    }
    start(&s, b, 30);
    start(&p, b, 30);
    connack(&s_rx);
    connack(&p_rx);
    subscribe(&s, &s_rx, &[("rc/#", QoS::AtLeastOnce)]);
    publish_acked(&p, &p_rx, "rc/before", b"1", QoS::AtLeastOnce, false);
    wait_for(&s_rx, "rc/before", |e| e.is_message());

    b.kill();
    assert_eq!(disconnected(&s_rx).error, Some(Error::ConnectionLost));
    assert_eq!(disconnected(&p_rx).error, Some(Error::ConnectionLost));
    let offline_mid = p
        .publish("rc/offline", b"queued", QoS::AtLeastOnce, false)
        .unwrap();
    b.restart();
    let back = connack(&s_rx);
    assert!(!back.session_present, "a clean session after the restart");
    connack(&p_rx);
    wait_for(&p_rx, "PUBACK of the queued message", |e| {
        e.command == Command::PubAck && e.mid == offline_mid
    });
    // The client subscribes again by itself (its SUBACK runs no callback: the
    // application did not ask for it). A broker handles one connection's
    // packets in order, so a message the subscriber publishes itself after the
    // CONNACK comes back to it. (The queued message above may have reached the
    // broker before that subscription did.)
    s.publish("rc/after", b"2", QoS::AtLeastOnce, false)
        .unwrap();
    let got = wait_for(&s_rx, "rc/after", |e| {
        e.is_message() && e.topic.as_deref() == Some("rc/after")
    });
    assert_eq!(got.payload, b"2");
    s.close();
    p.close();
}

/// A zero-byte client id with clean session 1 is accepted and each such
/// client gets its own identity [MQTT-3.1.3-6]: two of them do not take each
/// other over.
fn empty_client_id(b: &AnyBroker) {
    let (a, a_rx) = client(b, "", true);
    let (c, c_rx) = client(b, "", true);
    start(&a, b, 30);
    connack(&a_rx);
    start(&c, b, 30);
    connack(&c_rx);
    subscribe(&a, &a_rx, &[("empty/#", QoS::AtLeastOnce)]);
    subscribe(&c, &c_rx, &[("empty/#", QoS::AtLeastOnce)]);
    c.publish("empty/x", b"hi", QoS::AtLeastOnce, false)
        .unwrap();
    for rx in [&a_rx, &c_rx] {
        let got = wait_for(rx, "empty/x", |e| {
            e.is_message() || e.command == Command::Disconnect
        });
        assert_eq!(got.topic.as_deref(), Some("empty/x"), "{got:?}");
    }
    assert!(a.is_connected() && c.is_connected());
    a.close();
    c.close();
}

/// A second connection with the same client id takes over: the server
/// disconnects the first [MQTT-3.1.4-2]; the newcomer works.
fn session_takeover(b: &AnyBroker) {
    let (first, first_rx) = client(b, "twin", true);
    first.set_reconnect(None).unwrap(); // no tug of war
    start(&first, b, 30);
    connack(&first_rx);
    let (second, second_rx) = client(b, "twin", true);
    start(&second, b, 30);
    if deviates(b.kind(), Deviation::NoTakeover) {
        // The first connection still works after the second's CONNACK.
        let mid = first
            .publish("twin/first", b"still", QoS::AtLeastOnce, false)
            .unwrap();
        let e = wait_for(&first_rx, "PUBACK or DISCONNECT", |e| {
            e.command == Command::PubAck || e.command == Command::Disconnect
        });
        assert_eq!(
            (e.command, e.mid),
            (Command::PubAck, mid),
            "NoTakeover: {e:?}"
        );
        assert!(first.is_connected());
        first.close();
        second.close();
        return;
    }
    assert_eq!(disconnected(&first_rx).error, Some(Error::ConnectionLost));
    assert!(!first.is_connected());
    subscribe(&second, &second_rx, &[("twin/t", QoS::AtLeastOnce)]);
    second
        .publish("twin/t", b"me", QoS::AtLeastOnce, false)
        .unwrap();
    let got = wait_for(&second_rx, "twin/t", |e| e.is_message());
    assert_eq!(got.payload, b"me");
    first.close();
    second.close();
}

/// A 256 KiB message at QoS 1 both ways: a remaining length of 3 bytes, the
/// packet split across many reads and writes.
fn large_message(b: &AnyBroker) {
    let (c, rx) = client(b, "large", true);
    start(&c, b, 30);
    subscribe(&c, &rx, &[("large/t", QoS::AtLeastOnce)]);
    let payload: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mid = c
        .publish("large/t", &payload, QoS::AtLeastOnce, false)
        .unwrap();
    let mut acked = false;
    let mut got = None;
    while !(acked && got.is_some()) {
        let e = wait_for(&rx, "PUBACK and the message", |e| {
            e.is_message() || e.command == Command::PubAck || e.command == Command::Disconnect
        });
        assert_ne!(e.command, Command::Disconnect, "{:?}", e.error);
        if e.command == Command::PubAck {
            assert_eq!(e.mid, mid);
            acked = true;
        } else {
            got = Some(e);
        }
    }
    let got = got.unwrap();
    assert_eq!(got.payload.len(), payload.len());
    assert!(got.payload == payload, "payload corrupted");
    c.close();
}

/// Filters starting with a wildcard do not match topics starting with `$`
/// [MQTT-4.7.2-1].
fn dollar_topics(b: &AnyBroker) {
    let (all, all_rx) = client(b, "dollar-all", true);
    let (p, p_rx) = client(b, "dollar-pub", true);
    start(&all, b, 30);
    start(&p, b, 30);
    subscribe(
        &all,
        &all_rx,
        &[("#", QoS::AtLeastOnce), ("+/x", QoS::AtLeastOnce)],
    );
    // The broker may refuse a client's $ topic (a SHOULD, [MQTT-4.7.2-1]
    // non-normative part): the PUBACK, or a closed connection, is not checked.
    p.publish("$interop/x", b"hidden", QoS::AtMostOnce, false)
        .unwrap();
    let (m, m_rx) = client(b, "dollar-marker", true);
    start(&m, b, 30);
    publish_acked(&m, &m_rx, "dollar/end", b"", QoS::AtLeastOnce, false);
    let got = messages_until(&all_rx, "dollar/end");
    let dollar: Vec<_> = got
        .iter()
        .filter(|e| e.topic.as_deref().is_some_and(|t| t.starts_with('$')))
        .collect();
    assert!(
        dollar.is_empty(),
        "'#' and '+/x' matched $ topics: {dollar:?}"
    );
    drop(p_rx);
    all.close();
    p.close();
    m.close();
}

/// The WebSocket listener the launcher exposes (for the WebSocket transport's
/// tests): an HTTP/1.1 upgrade on path /mqtt with subprotocol `mqtt` is
/// answered 101 with that subprotocol (RFC 6455 4.2.2; MQTT 3.1.1 section 6).
fn websocket_listener(b: &AnyBroker) {
    use std::io::{Read, Write};
    let Some(port) = b.ws_port() else {
        assert_eq!(
            b.kind(),
            Kind::Mosquitto,
            "only Debian's mosquitto has no WebSocket listener"
        );
        return;
    };
    let mut tcp = std::net::TcpStream::connect((b.host(), port)).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        tcp,
        "GET /mqtt HTTP/1.1\r\nHost: {}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n\r\n",
        b.host()
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(tcp.read(&mut byte).unwrap(), 1, "closed after {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    // Header values without the optional space (ejabberd writes
    // "sec-websocket-protocol:mqtt", as HTTP allows).
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            (n.trim() == name).then(|| v.trim().to_owned())
        })
    };
    // The accept key of RFC 6455's own example.
    assert_eq!(
        header("sec-websocket-accept").as_deref(),
        Some("s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    assert_eq!(
        header("sec-websocket-protocol").as_deref(),
        Some("mqtt"),
        "{head}"
    );
}

/// The README's compatibility table names every known deviation in its
/// broker's row, and no other.
#[test]
fn readme_lists_the_known_deviations() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for kind in Kind::ALL {
        let row = readme
            .lines()
            // "| <broker> | <version> | all 16 ... | <deviations> |"
            .find(|l| {
                l.starts_with(&format!("| {} | ", kind.name()))
                    && l.split(" | ").nth(2).is_some_and(|c| c.starts_with("all "))
            })
            .unwrap_or_else(|| panic!("no compatibility row for {}", kind.name()));
        let names = [
            Deviation::QosNotDowngraded,
            Deviation::OverlapNotMaxQos,
            Deviation::NoOfflineQueue,
            Deviation::OfflineReplayRace,
            Deviation::NoTakeover,
        ];
        for d in names {
            let known = KNOWN.iter().any(|k| k.broker == kind && k.deviation == d);
            let listed = row.contains(&format!("`{d:?}`"));
            assert_eq!(listed, known, "{} row and {d:?}: {row}", kind.name());
        }
    }
}

// ---------------------------------------------------------------------------
// The matrix: one module per broker, one test per scenario
// ---------------------------------------------------------------------------

macro_rules! matrix {
    ($($module:ident => $kind:expr),* $(,)?) => {$(
        mod $module {
            use super::*;
            #[test] fn connect_disconnect() { run($kind, super::connect_disconnect) }
            #[test] fn qos_round_trips() { run($kind, super::qos_round_trips) }
            #[test] fn retained() { run($kind, super::retained) }
            #[test] fn will() { run($kind, super::will) }
            #[test] fn persistent_session() { run($kind, super::persistent_session) }
            #[test] fn offline_replay_with_live_traffic() { run($kind, super::offline_replay_with_live_traffic) }
            #[test] fn unsubscribe() { run($kind, super::unsubscribe) }
            #[test] fn overlapping_subscriptions() { run($kind, super::overlapping_subscriptions) }
            #[test] fn keepalive() { run($kind, super::keepalive) }
            #[test] fn callback_rules() { run($kind, super::callback_rules) }
            #[test] fn reconnect_after_restart() { run($kind, super::reconnect_after_restart) }
            #[test] fn websocket_listener() { run($kind, super::websocket_listener) }
            #[test] fn empty_client_id() { run($kind, super::empty_client_id) }
            #[test] fn session_takeover() { run($kind, super::session_takeover) }
            #[test] fn large_message() { run($kind, super::large_message) }
            #[test] fn dollar_topics() { run($kind, super::dollar_topics) }
        }
    )*};
}

matrix! {
    mosquitto => Kind::Mosquitto,
    rumqttd => Kind::Rumqttd,
    aedes => Kind::Aedes,
    amqtt => Kind::Amqtt,
    ejabberd => Kind::Ejabberd,
}

//! MQTT 5.0 against a real mosquitto 2 broker: properties end to end, reason
//! codes, subscription options, subscription identifiers, message and session
//! expiry, will delay, shared subscriptions, topic aliases on the wire, server
//! keep alive, and resubscription with options after the broker lost the session.

mod common;

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::events::{self, Event};
use common::{Broker, FaultProxy, TIMEOUT, wait_until};
use mqtt::protocol::codec::{ProtocolVersion, SubscribeOptions};
use mqtt::protocol::properties::{self as prop, Properties, PropertiesBuf};
use mqtt::{Client, Command, QoS};

/// The properties of an event: its message's, else its packet's.
fn props_of(e: &Event) -> Properties<'_> {
    e.message_properties
        .as_ref()
        .or(e.properties.as_ref())
        .map(PropertiesBuf::as_properties)
        .unwrap_or_default()
}

fn int(e: &Event, id: u8) -> Option<u32> {
    props_of(e).u32_of(id)
}

fn ints(e: &Event, id: u8) -> Vec<u32> {
    let props = props_of(e);
    (0..props.count(id))
        .filter_map(|i| props.int_at(id, i))
        .collect()
}

/// A v5 client whose callbacks all go to the returned channel.
fn v5_client(id: &str, clean: bool) -> (Client, Receiver<Event>) {
    let client = Client::new(id, clean).unwrap();
    client.set_protocol(ProtocolVersion::V5).unwrap();
    client.set_connect_timeout(TIMEOUT).unwrap();
    let rx = events::record(&client, &events::ALL_COMMANDS);
    (client, rx)
}

fn connected(broker: &Broker, id: &str, clean: bool) -> (Client, Receiver<Event>) {
    let (client, rx) = v5_client(id, clean);
    client.connect(broker.host(), 30, broker.port()).unwrap();
    client.loop_start(None).unwrap();
    (client, rx)
}

fn expect(rx: &Receiver<Event>, what: &str, want: impl Fn(&Event) -> bool) -> Event {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(e) if want(&e) => return e,
            Ok(_) => {}
            Err(_) => panic!("no {what} within {TIMEOUT:?}"),
        }
    }
}

/// No event satisfying `want` within `window` (the absence a test asserts).
fn expect_none(rx: &Receiver<Event>, window: Duration, want: impl Fn(&Event) -> bool) {
    let deadline = Instant::now() + window;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if let Ok(e) = rx.recv_timeout(left) {
            assert!(!want(&e), "unexpected {e:?}");
        }
    }
}

fn subscribe(client: &Client, rx: &Receiver<Event>, filter: &str, options: SubscribeOptions) {
    subscribe_with(client, rx, filter, options, &PropertiesBuf::new());
}

fn subscribe_with(
    client: &Client,
    rx: &Receiver<Event>,
    filter: &str,
    options: SubscribeOptions,
    props: &PropertiesBuf,
) {
    let mid = client
        .subscribe_with(&[(filter, options)], props.as_properties())
        .unwrap();
    let ack = expect(rx, "SUBACK", |e| {
        e.command == Command::SubAck && e.mid == mid
    });
    assert_eq!(ack.reason_codes, vec![options.qos as u8], "{filter}");
}

fn qos(qos: QoS) -> SubscribeOptions {
    qos.into()
}

fn publish_acked(
    client: &Client,
    rx: &Receiver<Event>,
    topic: &str,
    payload: &[u8],
    retain: bool,
    props: &PropertiesBuf,
) -> Event {
    let mid = client
        .publish_with(
            topic,
            payload,
            QoS::AtLeastOnce,
            retain,
            props.as_properties(),
        )
        .unwrap();
    expect(rx, "PUBACK", |e| {
        e.command == Command::PubAck && e.mid == mid
    })
}

#[test]
fn properties_travel_end_to_end() {
    let broker = Broker::start();
    let (sub, sub_rx) = connected(&broker, "v5-props-sub", true);
    subscribe(&sub, &sub_rx, "v5/props", qos(QoS::ExactlyOnce));
    let (publisher, pub_rx) = connected(&broker, "v5-props-pub", true);

    let mut props = PropertiesBuf::new();
    props.push_user("room", "kitchen").unwrap();
    props.push_user("room", "hall").unwrap();
    props.push_str(prop::CONTENT_TYPE, "text/plain").unwrap();
    props.push_str(prop::RESPONSE_TOPIC, "v5/reply").unwrap();
    props
        .push_bin(prop::CORRELATION_DATA, b"\x00\x01corr")
        .unwrap();
    props.push_int(prop::PAYLOAD_FORMAT_INDICATOR, 1).unwrap();
    for q in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        publisher
            .publish_with("v5/props", &[q as u8], q, false, props.as_properties())
            .unwrap();
        let m = expect(&sub_rx, "the message", |e| {
            e.is_message() && e.payload == [q as u8]
        });
        let got = m
            .message_properties
            .as_ref()
            .expect("properties")
            .as_properties();
        let users: Vec<(&str, &str)> = (0..got.count(prop::USER_PROPERTY))
            .filter_map(|i| got.user_at(i))
            .collect();
        assert_eq!(users, vec![("room", "kitchen"), ("room", "hall")], "{q:?}");
        assert_eq!(got.str_of(prop::CONTENT_TYPE), Some("text/plain"));
        assert_eq!(got.str_of(prop::RESPONSE_TOPIC), Some("v5/reply"));
        assert_eq!(
            got.bin_of(prop::CORRELATION_DATA),
            Some(&b"\x00\x01corr"[..])
        );
        assert_eq!(got.u32_of(prop::PAYLOAD_FORMAT_INDICATOR), Some(1));
    }
    drop(pub_rx);
    publisher.close();
    sub.close();
}

#[test]
fn acks_carry_reason_codes() {
    let broker = Broker::start();
    let (client, rx) = connected(&broker, "v5-reasons", true);
    // Nobody subscribes: mosquitto answers 0x10 "No matching subscribers".
    let ack = publish_acked(
        &client,
        &rx,
        "v5/nobody",
        b"x",
        false,
        &PropertiesBuf::new(),
    );
    assert_eq!(ack.reason_code, 0x10);
    assert_eq!(ack.error, None, "0x10 is a success");
    subscribe(&client, &rx, "v5/somebody", qos(QoS::AtLeastOnce));
    let ack = publish_acked(
        &client,
        &rx,
        "v5/somebody",
        b"x",
        false,
        &PropertiesBuf::new(),
    );
    assert_eq!(ack.reason_code, 0x00);

    let mid = client.unsubscribe(&["v5/somebody", "v5/never"]).unwrap();
    let unsuback = expect(&rx, "UNSUBACK", |e| {
        e.command == Command::UnsubAck && e.mid == mid
    });
    // 0x11: "No subscription existed" for the second filter.
    assert_eq!(unsuback.reason_codes, vec![0x00, 0x11]);
    client.close();
}

#[test]
fn no_local_and_retain_as_published() {
    let broker = Broker::start();
    let (client, rx) = connected(&broker, "v5-options", true);
    let other = connected(&broker, "v5-options-other", true).0;
    let no_local = SubscribeOptions {
        no_local: true,
        ..qos(QoS::AtLeastOnce)
    };
    subscribe(&client, &rx, "v5/nl", no_local);
    client
        .publish("v5/nl", b"mine", QoS::AtLeastOnce, false)
        .unwrap();
    other
        .publish("v5/nl", b"theirs", QoS::AtLeastOnce, false)
        .unwrap();
    let m = expect(&rx, "a message", Event::is_message);
    assert_eq!(
        m.payload, b"theirs",
        "no_local: our own message must not come back"
    );

    // Forwarded live, a retained message keeps retain=1 only with retain_as_published.
    subscribe(&client, &rx, "v5/rap/plain", qos(QoS::AtLeastOnce));
    let rap = SubscribeOptions {
        retain_as_published: true,
        ..qos(QoS::AtLeastOnce)
    };
    subscribe(&client, &rx, "v5/rap/kept", rap);
    other
        .publish("v5/rap/plain", b"p", QoS::AtLeastOnce, true)
        .unwrap();
    let m = expect(&rx, "plain", |e| e.topic.as_deref() == Some("v5/rap/plain"));
    assert!(!m.retain);
    other
        .publish("v5/rap/kept", b"k", QoS::AtLeastOnce, true)
        .unwrap();
    let m = expect(&rx, "kept", |e| e.topic.as_deref() == Some("v5/rap/kept"));
    assert!(m.retain);
    other.close();
    client.close();
}

#[test]
fn retain_handling_0_1_2() {
    let broker = Broker::start();
    let (client, rx) = connected(&broker, "v5-rh", true);
    for t in ["v5/rh/0", "v5/rh/1", "v5/rh/2"] {
        publish_acked(&client, &rx, t, b"retained", true, &PropertiesBuf::new());
    }
    let with = |h| SubscribeOptions {
        retain_handling: h,
        ..qos(QoS::AtLeastOnce)
    };
    let retained_on = |topic: &'static str| move |e: &Event| e.topic.as_deref() == Some(topic);
    for (topic, handling, first, again) in [
        ("v5/rh/0", 0, true, true),
        ("v5/rh/1", 1, true, false),
        ("v5/rh/2", 2, false, false),
    ] {
        subscribe(&client, &rx, topic, with(handling));
        if first {
            expect(&rx, topic, retained_on(topic));
        }
        // The same subscription again: only handling 0 sends the retained message.
        subscribe(&client, &rx, topic, with(handling));
        if again {
            expect(&rx, topic, retained_on(topic));
        }
    }
    // Whatever was not expected must not come: a marker message closes the window.
    subscribe(&client, &rx, "v5/rh/marker", qos(QoS::AtLeastOnce));
    client
        .publish("v5/rh/marker", b"m", QoS::AtLeastOnce, false)
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let e = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the marker");
        match e.topic.as_deref() {
            Some("v5/rh/marker") => break,
            Some(t) => panic!("unexpected retained message on {t}"),
            None => {}
        }
    }
    for t in ["v5/rh/0", "v5/rh/1", "v5/rh/2"] {
        client.publish(t, b"", QoS::AtLeastOnce, true).unwrap();
    }
    client.close();
}

#[test]
fn subscription_identifiers_come_back_with_each_message() {
    let broker = Broker::start();
    let (client, rx) = connected(&broker, "v5-subid", true);
    let mut id7 = PropertiesBuf::new();
    id7.push_int(prop::SUBSCRIPTION_IDENTIFIER, 7).unwrap();
    let mut id9 = PropertiesBuf::new();
    id9.push_int(prop::SUBSCRIPTION_IDENTIFIER, 9).unwrap();
    subscribe_with(&client, &rx, "v5/id/+", qos(QoS::AtLeastOnce), &id7);
    subscribe_with(&client, &rx, "v5/id/#", qos(QoS::AtLeastOnce), &id9);
    subscribe(&client, &rx, "v5/other", qos(QoS::AtLeastOnce));

    client
        .publish("v5/id/x", b"both", QoS::AtLeastOnce, false)
        .unwrap();
    let mut ids = Vec::new();
    // One message per matching subscription, or one carrying both identifiers.
    while !(ids.contains(&7) && ids.contains(&9)) {
        let m = expect(&rx, "the message", Event::is_message);
        assert_eq!(m.topic.as_deref(), Some("v5/id/x"));
        ids.extend(ints(&m, prop::SUBSCRIPTION_IDENTIFIER));
    }
    client
        .publish("v5/other", b"none", QoS::AtLeastOnce, false)
        .unwrap();
    let m = expect(&rx, "v5/other", |e| e.topic.as_deref() == Some("v5/other"));
    assert!(ints(&m, prop::SUBSCRIPTION_IDENTIFIER).is_empty());
    client.close();
}

#[test]
fn an_expired_retained_message_is_not_delivered() {
    let broker = Broker::start();
    let (client, rx) = connected(&broker, "v5-expiry", true);
    let mut one_second = PropertiesBuf::new();
    one_second
        .push_int(prop::MESSAGE_EXPIRY_INTERVAL, 1)
        .unwrap();
    let mut an_hour = PropertiesBuf::new();
    an_hour
        .push_int(prop::MESSAGE_EXPIRY_INTERVAL, 3600)
        .unwrap();
    publish_acked(&client, &rx, "v5/exp/short", b"s", true, &one_second);
    publish_acked(&client, &rx, "v5/exp/long", b"l", true, &an_hour);
    std::thread::sleep(Duration::from_millis(2100)); // the expiry itself
    subscribe(&client, &rx, "v5/exp/#", qos(QoS::AtLeastOnce));
    let m = expect(&rx, "the long-lived message", Event::is_message);
    assert_eq!(m.topic.as_deref(), Some("v5/exp/long"));
    let left = int(&m, prop::MESSAGE_EXPIRY_INTERVAL).expect("expiry left");
    assert!((3590..3600).contains(&left), "{left}");
    expect_none(&rx, Duration::from_millis(300), |e| {
        e.topic.as_deref() == Some("v5/exp/short")
    });
    client
        .publish("v5/exp/long", b"", QoS::AtLeastOnce, true)
        .unwrap();
    client.close();
}

#[test]
fn session_expiry_keeps_the_session_within_the_interval_only() {
    let broker = Broker::start();
    let connect = || {
        let (client, rx) = v5_client("v5-session-expiry", false);
        let mut props = PropertiesBuf::new();
        props.push_int(prop::SESSION_EXPIRY_INTERVAL, 2).unwrap();
        client
            .set_connect_properties(Some(props.as_properties()))
            .unwrap();
        let present = client.connect(broker.host(), 30, broker.port()).unwrap();
        client.loop_start(None).unwrap();
        (client, rx, present)
    };
    let (client, _rx, present) = connect();
    assert!(!present);
    client.disconnect().unwrap();
    client.close();
    // Back after 1 s: the session is there.
    std::thread::sleep(Duration::from_secs(1));
    let (client, _rx, present) = connect();
    assert!(present, "session gone after 1 s of a 2 s expiry");
    client.disconnect().unwrap();
    client.close();
    // Back after 3 s: it expired.
    std::thread::sleep(Duration::from_secs(3));
    let (client, _rx, present) = connect();
    assert!(!present, "session kept 3 s after a 2 s expiry");
    client.close();
}

#[test]
fn a_persistent_v5_session_outlives_the_connection_without_an_expiry_property() {
    let broker = Broker::start();
    let (client, rx) = v5_client("v5-persistent", false);
    assert!(!client.connect(broker.host(), 30, broker.port()).unwrap());
    client.loop_start(None).unwrap();
    subscribe(&client, &rx, "v5/persist", qos(QoS::AtLeastOnce));
    client.disconnect().unwrap();
    client.close();
    let (client, rx) = v5_client("v5-persistent", false);
    assert!(
        client.connect(broker.host(), 30, broker.port()).unwrap(),
        "clean_session=false keeps the session as in 3.1.1"
    );
    client.loop_start(None).unwrap();
    let (other, _o) = connected(&broker, "v5-persistent-other", true);
    other
        .publish("v5/persist", b"kept", QoS::AtLeastOnce, false)
        .unwrap();
    let m = expect(&rx, "a message on the kept subscription", Event::is_message);
    assert_eq!(m.payload, b"kept");
    other.close();
    client.close();
}

/// A client behind a proxy whose connection the test can cut.
fn will_client(broker: &Broker, proxy: &FaultProxy, delay_s: u32) -> Client {
    let (client, _rx) = v5_client("v5-will", false);
    client
        .set_will(Some(("v5/will", b"gone", QoS::AtLeastOnce, false)))
        .unwrap();
    let mut will = PropertiesBuf::new();
    will.push_int(prop::WILL_DELAY_INTERVAL, delay_s).unwrap();
    client
        .set_will_properties(Some(will.as_properties()))
        .unwrap();
    let mut connect = PropertiesBuf::new();
    connect.push_int(prop::SESSION_EXPIRY_INTERVAL, 60).unwrap();
    client
        .set_connect_properties(Some(connect.as_properties()))
        .unwrap();
    client
        .set_reconnect(Some((
            Duration::from_millis(50),
            Duration::from_millis(100),
        )))
        .unwrap();
    client.connect(broker.host(), 30, proxy.port()).unwrap();
    client.loop_start(None).unwrap();
    let _ = broker;
    client
}

#[test]
fn will_delay_holds_the_will_back_while_the_client_comes_back() {
    let broker = Broker::start();
    let (watcher, rx) = connected(&broker, "v5-will-watcher", true);
    subscribe(&watcher, &rx, "v5/will", qos(QoS::AtLeastOnce));
    let proxy = FaultProxy::start(broker.port());

    // Cut, and the client reconnects by itself within the 2 s delay: no will.
    let client = will_client(&broker, &proxy, 2);
    let connections = proxy.connections();
    proxy.cut_all();
    assert!(wait_until(TIMEOUT, || proxy.connections() > connections
        && client.is_connected()));
    expect_none(&rx, Duration::from_millis(2500), Event::is_message);
    client.disconnect().unwrap();
    client.close();

    // Cut and never come back: the will arrives after the delay, not before.
    let client = will_client(&broker, &proxy, 2);
    proxy.refuse(true);
    let cut_at = Instant::now();
    proxy.cut_all();
    let m = expect(&rx, "the will", Event::is_message);
    assert_eq!(m.payload, b"gone");
    assert!(
        cut_at.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        cut_at.elapsed()
    );
    client.close();
    watcher.close();
}

#[test]
fn shared_subscriptions_balance_between_clients() {
    let broker = Broker::start();
    let (a, a_rx) = connected(&broker, "v5-share-a", true);
    let (b, b_rx) = connected(&broker, "v5-share-b", true);
    subscribe(&a, &a_rx, "$share/group/v5/jobs", qos(QoS::AtLeastOnce));
    subscribe(&b, &b_rx, "$share/group/v5/jobs", qos(QoS::AtLeastOnce));
    let (publisher, pub_rx) = connected(&broker, "v5-share-pub", true);
    for i in 0..20u8 {
        publish_acked(
            &publisher,
            &pub_rx,
            "v5/jobs",
            &[i],
            false,
            &PropertiesBuf::new(),
        );
    }
    let mut got = Vec::new();
    let (mut from_a, mut from_b) = (0, 0);
    while got.len() < 20 {
        if let Ok(e) = a_rx.recv_timeout(Duration::from_millis(20)) {
            if e.is_message() {
                from_a += 1;
                got.push(e.payload[0]);
            }
        }
        if let Ok(e) = b_rx.recv_timeout(Duration::from_millis(20)) {
            if e.is_message() {
                from_b += 1;
                got.push(e.payload[0]);
            }
        }
    }
    got.sort_unstable();
    assert_eq!(got, (0..20).collect::<Vec<u8>>(), "each job exactly once");
    assert!(from_a > 0 && from_b > 0, "a {from_a}, b {from_b}");
    publisher.close();
    a.close();
    b.close();
}

/// Bytes a client sends to publish `n` messages on one long topic, through a
/// counting proxy; the subscriber checks every message arrived with the topic.
fn bytes_for_messages(alias_max: u16) -> u64 {
    let broker = Broker::start();
    let topic = "v5/aliases/a/rather/long/topic/name/that/repeats/on/every/message";
    let (sub, sub_rx) = connected(&broker, "v5-alias-sub", true);
    subscribe(&sub, &sub_rx, topic, qos(QoS::AtLeastOnce));
    let proxy = FaultProxy::start(broker.port());
    let (client, rx) = v5_client("v5-alias-pub", true);
    client.set_topic_alias_max(alias_max).unwrap();
    client.connect(broker.host(), 30, proxy.port()).unwrap();
    client.loop_start(None).unwrap();
    let before = proxy.bytes_up();
    let n = 50;
    let mut last = 0;
    for i in 0..n {
        last = client
            .publish(topic, &[i as u8], QoS::AtLeastOnce, false)
            .unwrap();
    }
    expect(&rx, "the last PUBACK", |e| {
        e.command == Command::PubAck && e.mid == last
    });
    let sent = proxy.bytes_up() - before;
    for i in 0..n {
        let m = expect(&sub_rx, "a message", Event::is_message);
        assert_eq!(m.topic.as_deref(), Some(topic));
        assert_eq!(m.payload, [i as u8]);
    }
    client.close();
    sub.close();
    sent
}

#[test]
fn topic_aliases_shrink_what_goes_on_the_wire() {
    let full = bytes_for_messages(0);
    let aliased = bytes_for_messages(10);
    // 50 PUBLISHes of a 68-byte topic: all but the first carry an empty
    // topic and a 3-byte alias property instead.
    assert!(
        aliased + 49 * 60 <= full,
        "with aliases {aliased} bytes, without {full}"
    );
}

#[test]
fn the_server_keep_alive_is_adopted() {
    // mosquitto's smallest max_keepalive is 10.
    let broker = Broker::builder().extra_config("max_keepalive 10\n").start();
    let (client, rx) = v5_client("v5-keepalive", true);
    client.connect(broker.host(), 60, broker.port()).unwrap();
    let connack_at = Instant::now();
    client.loop_start(None).unwrap();
    let connack = expect(&rx, "CONNACK", |e| e.command == Command::ConnAck);
    assert_eq!(int(&connack, prop::SERVER_KEEP_ALIVE), Some(10));
    // With our 60 s the first PINGREQ would come after a minute.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = rx.recv_timeout(left).expect("a PINGRESP within 15 s");
        if e.command == Command::PingResp {
            break;
        }
    }
    let waited = connack_at.elapsed();
    assert!(waited >= Duration::from_secs(9), "{waited:?}");
    client.close();
}

#[test]
fn resubscription_keeps_options_and_identifier_after_the_broker_lost_the_session() {
    let broker = Broker::start();
    let (client, rx) = v5_client("v5-resub", true);
    client
        .set_reconnect(Some((
            Duration::from_millis(50),
            Duration::from_millis(200),
        )))
        .unwrap();
    client.connect(broker.host(), 30, broker.port()).unwrap();
    client.loop_start(None).unwrap();
    let mut id = PropertiesBuf::new();
    id.push_int(prop::SUBSCRIPTION_IDENTIFIER, 42).unwrap();
    let no_local = SubscribeOptions {
        no_local: true,
        ..qos(QoS::AtLeastOnce)
    };
    subscribe_with(&client, &rx, "v5/resub", no_local, &id);
    broker.restart();
    let connack = expect(&rx, "CONNACK after the restart", |e| {
        e.command == Command::ConnAck
    });
    assert!(!connack.session_present);
    assert!(wait_until(TIMEOUT, || client.is_connected()));
    // The restored subscription is in place once our own message does not
    // come back (no_local) and another client's does, with identifier 42.
    let (other, _o) = connected(&broker, "v5-resub-other", true);
    let deadline = Instant::now() + TIMEOUT;
    let m = loop {
        client
            .publish("v5/resub", b"mine", QoS::AtMostOnce, false)
            .unwrap();
        other
            .publish("v5/resub", b"theirs", QoS::AtMostOnce, false)
            .unwrap();
        if let Ok(e) = rx.recv_timeout(Duration::from_millis(100))
            && e.is_message()
        {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "the subscription was not restored"
        );
    };
    assert_eq!(m.payload, b"theirs");
    assert_eq!(ints(&m, prop::SUBSCRIPTION_IDENTIFIER), vec![42]);
    other.close();
    client.close();
}

#[cfg(feature = "tls")]
#[test]
fn v5_over_tls() {
    use common::pki::{ca_only, pki_for_loopback, tls_broker};
    let pki = pki_for_loopback();
    let broker = tls_broker(&pki, "server", false);
    let ca = pki.path("ca.pem");
    let (client, rx) = v5_client("v5-tls", true);
    client.set_tls(Some(&ca_only(&ca))).unwrap();
    client.set_topic_alias_max(5).unwrap();
    client
        .connect(broker.host(), 30, broker.tls_port())
        .unwrap();
    client.loop_start(None).unwrap();
    subscribe(&client, &rx, "v5/tls", qos(QoS::ExactlyOnce));
    let mut props = PropertiesBuf::new();
    props.push_user("over", "tls").unwrap();
    for q in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        client
            .publish_with("v5/tls", &[q as u8], q, false, props.as_properties())
            .unwrap();
        let m = expect(&rx, "the message", |e| {
            e.is_message() && e.payload == [q as u8]
        });
        let got = m.message_properties.expect("properties");
        assert_eq!(got.as_properties().user_at(0), Some(("over", "tls")));
        assert_eq!(m.topic.as_deref(), Some("v5/tls"));
    }
    client.disconnect().unwrap();
    client.close();
}

/// The caller's loop (no library thread), as an external event loop runs it.
#[test]
fn v5_in_the_callers_loop() {
    let broker = Broker::start();
    let (client, rx) = v5_client("v5-own-loop", true);
    client.connect(broker.host(), 30, broker.port()).unwrap();
    let turn_until = |what: &str, want: &dyn Fn(&Event) -> bool| {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            client.run_once(Duration::from_millis(50)).unwrap();
            while let Ok(e) = rx.try_recv() {
                if want(&e) {
                    return e;
                }
            }
            assert!(Instant::now() < deadline, "no {what}");
        }
    };
    let mut id = PropertiesBuf::new();
    id.push_int(prop::SUBSCRIPTION_IDENTIFIER, 3).unwrap();
    let mid = client
        .subscribe_with(&[("v5/own", qos(QoS::ExactlyOnce))], id.as_properties())
        .unwrap();
    turn_until("SUBACK", &|e| e.command == Command::SubAck && e.mid == mid);
    let mut props = PropertiesBuf::new();
    props.push_bin(prop::CORRELATION_DATA, b"c").unwrap();
    client
        .publish_with(
            "v5/own",
            b"x",
            QoS::ExactlyOnce,
            false,
            props.as_properties(),
        )
        .unwrap();
    let m = turn_until("the message", &|e| e.is_message());
    assert_eq!(ints(&m, prop::SUBSCRIPTION_IDENTIFIER), vec![3]);
    assert_eq!(
        m.message_properties
            .unwrap()
            .as_properties()
            .bin_of(prop::CORRELATION_DATA),
        Some(&b"c"[..])
    );
    client.close();
}

/// QoS 1/2 messages in flight or queued when the broker dies are completed
/// once it is back (persistent session), under MQTT 5 as under 3.1.1.
#[test]
fn v5_messages_survive_a_broker_restart() {
    let broker = Broker::builder().persistence(true).start();
    let (sub, sub_rx) = v5_client("v5-restart-sub", false);
    sub.set_reconnect(Some((
        Duration::from_millis(50),
        Duration::from_millis(200),
    )))
    .unwrap();
    sub.connect(broker.host(), 30, broker.port()).unwrap();
    sub.loop_start(None).unwrap();
    subscribe(&sub, &sub_rx, "v5/restart", qos(QoS::ExactlyOnce));

    let (client, rx) = v5_client("v5-restart-pub", false);
    client
        .set_reconnect(Some((
            Duration::from_millis(50),
            Duration::from_millis(200),
        )))
        .unwrap();
    client.connect(broker.host(), 30, broker.port()).unwrap();
    client.loop_start(None).unwrap();
    broker.stop();
    assert!(wait_until(TIMEOUT, || !client.is_connected()));
    // Published while the broker is down: queued, then sent after it is back.
    let mut mids = Vec::new();
    for i in 0..10u8 {
        let q = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        let mut props = PropertiesBuf::new();
        props.push_user("seq", &i.to_string()).unwrap();
        mids.push(
            client
                .publish_with("v5/restart", &[i], q, false, props.as_properties())
                .unwrap(),
        );
    }
    broker.restart();
    let mut acked = Vec::new();
    while acked.len() < mids.len() {
        let e = expect(&rx, "PUBACK/PUBCOMP", |e| {
            matches!(e.command, Command::PubAck | Command::PubComp)
        });
        assert_eq!(e.error, None);
        acked.push(e.mid);
    }
    acked.sort_unstable();
    mids.sort_unstable();
    assert_eq!(acked, mids);
    let mut got = Vec::new();
    while got.len() < 10 {
        let m = expect(&sub_rx, "a message", Event::is_message);
        let seq = m
            .message_properties
            .as_ref()
            .and_then(|p| p.as_properties().user_at(0).map(|(_, v)| v.to_owned()));
        assert_eq!(seq, Some(m.payload[0].to_string()), "properties kept");
        got.push(m.payload[0]);
    }
    got.sort_unstable();
    got.dedup();
    assert_eq!(got, (0..10).collect::<Vec<u8>>());
    client.close();
    sub.close();
}

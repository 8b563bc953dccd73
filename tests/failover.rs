//! Failover across brokers (`set_servers`, API.md "Durable sessions and
//! failover"): the walk order, the backoff per round, the CONNACK's
//! `server_index`, argument checks, and a publisher that moves from one
//! bridged mosquitto to the other without losing a QoS 1 message.
//!
//! Attempts are counted by `FaultProxy`s in front of the brokers (a refusing
//! proxy accepts and closes at once: a server that is "down" but whose
//! attempts can be counted). Every wait is on an event (a callback recorded
//! in a channel, a counter reaching a value); timing is only asserted as a
//! bound on what the backoff must produce.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::ffi::CString;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::events::{Event, expect, expect_connack, expect_disconnect, recorded_client};
use common::{Broker, FaultProxy, TIMEOUT, wait_until};
use mqtt::ffi::*;
use mqtt::protocol::codec::QoS;
use mqtt::{Client, Command, Error};

fn uri(port: u16) -> String {
    format!("mqtt://127.0.0.1:{port}")
}

fn set_servers(client: &Client, ports: &[u16]) {
    let uris: Vec<String> = ports.iter().map(|&p| uri(p)).collect();
    let uris: Vec<&str> = uris.iter().map(String::as_str).collect();
    client.set_servers(&uris).unwrap();
}

fn connack_from(rx: &Receiver<Event>, index: usize) -> Event {
    let event = expect_connack(rx);
    assert_eq!(event.error, None, "CONNACK refused: {event:?}");
    assert_eq!(
        event.server_index,
        Some(index),
        "answered by another server"
    );
    event
}

// ---------------------------------------------------------------------------
// Walk order
// ---------------------------------------------------------------------------

/// The first server is down: the second answers (index 1); from then on
/// the second is tried first; once it fails the walk goes on to the first,
/// which then becomes the one tried first.
#[test]
fn the_walk_starts_at_the_last_server_that_answered() {
    let broker = Broker::start();
    let first = FaultProxy::start(broker.port());
    let second = FaultProxy::start(broker.port());
    first.refuse(true);

    let (client, rx) = recorded_client("failover-walk", true);
    client.set_reconnect(Some((ms(20), ms(20)))).unwrap();
    set_servers(&client, &[first.port(), second.port()]);
    // No host, no port: the list says where to go.
    assert_eq!(client.connect("", 30, 0), Ok(false));
    connack_from(&rx, 1);
    assert_eq!(first.connections(), 1, "the first entry is tried first");
    assert_eq!(second.connections(), 1);
    client.loop_start(None).unwrap();

    // Lost: the server that answered last is tried first, and answers.
    second.cut_all();
    expect_disconnect(&rx);
    connack_from(&rx, 1);
    assert_eq!(
        first.connections(),
        1,
        "the first entry was tried although the second answered last"
    );
    assert_eq!(second.connections(), 2);

    // The second goes down too: tried first, it fails, and the walk moves
    // on to the first, which answers.
    second.refuse(true);
    first.refuse(false);
    second.cut_all();
    expect_disconnect(&rx);
    connack_from(&rx, 0);
    assert_eq!(second.connections(), 3);
    assert_eq!(first.connections(), 2);

    // Now the first is the last good one: tried first after the next loss.
    first.cut_all();
    expect_disconnect(&rx);
    connack_from(&rx, 0);
    assert_eq!(first.connections(), 3);
    assert_eq!(
        second.connections(),
        3,
        "the refusing second entry was tried first"
    );
    client.close();
}

/// connect_async walks the list as well, and `reconnect` needs no host.
#[test]
fn connect_async_and_reconnect_walk_the_list() {
    let broker = Broker::start();
    let down = FaultProxy::start(broker.port());
    down.refuse(true);
    let (client, rx) = recorded_client("failover-async", true);
    set_servers(&client, &[down.port(), broker.port()]);
    client.loop_start(None).unwrap();
    client.connect_async("", 30, 0).unwrap();
    connack_from(&rx, 1);
    assert_eq!(down.connections(), 1);
    client.disconnect().unwrap();
    expect_disconnect(&rx);
    client.loop_stop().unwrap();
    // The broker answered last: tried first, the refusing entry not at all.
    assert_eq!(client.reconnect(), Ok(false));
    connack_from(&rx, 1);
    assert_eq!(down.connections(), 1);
    client.close();
}

/// Every entry refuses: a blocking connect reports the failure once, after
/// trying each entry once.
#[test]
fn a_blocking_connect_fails_after_one_round() {
    let broker = Broker::start();
    let a = FaultProxy::start(broker.port());
    let b = FaultProxy::start(broker.port());
    a.refuse(true);
    b.refuse(true);
    let (client, rx) = recorded_client("failover-round", true);
    set_servers(&client, &[a.port(), b.port()]);
    let result = client.connect("", 30, 0);
    assert!(result.is_err(), "{result:?}");
    assert_eq!((a.connections(), b.connections()), (1, 1));
    assert!(
        !rx.try_iter().any(|e| e.command == Command::ConnAck),
        "no CONNACK"
    );
    client.close();
}

// ---------------------------------------------------------------------------
// Backoff: once per round
// ---------------------------------------------------------------------------

const ROUND_DELAY: Duration = Duration::from_millis(700);

/// Two servers that accept and close at once. Automatic reconnection must
/// try both back to back and wait its delay once per round: each DISCONNECT
/// callback (one per failed round) finds both counters advanced by exactly
/// one, consecutive rounds are at least the delay apart, and clearly less
/// than two delays (a delay per server would take two).
#[test]
fn the_backoff_applies_once_per_round_not_per_server() {
    let broker = Broker::start();
    let a = Arc::new(FaultProxy::start(broker.port()));
    let b = Arc::new(FaultProxy::start(broker.port()));
    a.refuse(true);
    b.refuse(true);
    let client = Client::new("failover-backoff", true).unwrap();
    // min == max: every delay is exactly ROUND_DELAY (no jitter span).
    client
        .set_reconnect(Some((ROUND_DELAY, ROUND_DELAY)))
        .unwrap();
    set_servers(&client, &[a.port(), b.port()]);
    let scheduled = Arc::new(AtomicUsize::new(0));
    {
        let scheduled = scheduled.clone();
        client.set_log(
            Some(Arc::new(move |_, line: &str| {
                if line.starts_with("reconnecting in") {
                    scheduled.fetch_add(1, Ordering::SeqCst);
                }
            })),
            mqtt::log::Level::Info,
        );
    }
    let (tx, rx) = channel();
    {
        let (a, b, scheduled) = (a.clone(), b.clone(), scheduled.clone());
        client.on(
            Command::Disconnect,
            Arc::new(move |_, data| {
                let _ = tx.send(Round {
                    at: Instant::now(),
                    tried: (a.connections(), b.connections()),
                    delays_before: scheduled.load(Ordering::SeqCst),
                    error: data.error,
                });
            }),
            None,
            0,
        );
    }
    client.loop_start(None).unwrap();
    client.connect_async("", 30, 0).unwrap();

    let rounds: Vec<_> = (0..3)
        .map(|_| {
            rx.recv_timeout(TIMEOUT)
                .expect("a DISCONNECT per failed round")
        })
        .collect();
    client.close();
    for (i, round) in rounds.iter().enumerate() {
        let n = i as u64 + 1;
        assert_eq!(
            round.tried,
            (n, n),
            "round {n}: each server tried once per round ({rounds:?})"
        );
        // A round's failure is reported before its delay is scheduled.
        assert_eq!(
            round.delays_before, i,
            "round {n}: one delay per earlier round ({rounds:?})"
        );
        assert!(round.error.is_some(), "round {n} failed with an error");
    }
    for pair in rounds.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= ROUND_DELAY, "rounds {gap:?} apart: no backoff");
        assert!(
            gap < ROUND_DELAY * 2 - ms(100),
            "rounds {gap:?} apart: a delay per server?"
        );
    }
}

/// What a DISCONNECT callback (one per failed round) saw.
#[derive(Debug)]
struct Round {
    at: Instant,
    /// Connections the two servers had accepted by then.
    tried: (u64, u64),
    /// "reconnecting in" log lines by then.
    delays_before: usize,
    error: Option<Error>,
}

// ---------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------

#[test]
fn rust_api_refuses_bad_uris_and_keeps_the_list() {
    let broker = Broker::start();
    let (client, rx) = recorded_client("failover-args", true);
    set_servers(&client, &[broker.port()]);
    let dead = uri(common::free_port());
    for bad in [
        vec![dead.as_str(), "ws://127.0.0.1:80"],
        vec![dead.as_str(), "wss://127.0.0.1:443/mqtt"],
        vec![dead.as_str(), "127.0.0.1:1883"],
        vec![dead.as_str(), "http://127.0.0.1:1883"],
        vec![dead.as_str(), "mqtt://"],
        vec![dead.as_str(), "mqtt://127.0.0.1:0"],
        vec![dead.as_str(), "mqtt://host:1883/path"],
        vec![dead.as_str(), "mqtt://user@127.0.0.1:1883"],
    ] {
        assert_eq!(
            client.set_servers(&bad),
            Err(Error::InvalidArgument),
            "{bad:?}"
        );
    }
    // The list is still [broker]: a partial update would have made it [dead].
    assert_eq!(client.connect("", 30, 0), Ok(false));
    connack_from(&rx, 0);
    client.disconnect().unwrap();
    client.close();
}

#[test]
fn without_a_list_the_host_is_needed_and_server_index_is_none() {
    let broker = Broker::start();
    let (client, rx) = recorded_client("failover-nolist", true);
    assert_eq!(client.connect("", 30, 0), Err(Error::InvalidArgument));
    set_servers(&client, &[broker.port()]);
    // An empty slice clears the list again.
    client.set_servers(&[]).unwrap();
    assert_eq!(client.connect("", 30, 0), Err(Error::InvalidArgument));
    assert_eq!(client.connect(broker.host(), 30, broker.port()), Ok(false));
    let connack = expect_connack(&rx);
    assert_eq!(connack.server_index, None);
    client.close();
}

struct CClient(*mut mqtt_client);

impl Drop for CClient {
    fn drop(&mut self) {
        // SAFETY: a handle from mqtt_client_new, freed once.
        unsafe { mqtt_client_free(self.0) }
    }
}

unsafe extern "C" fn record_index(
    _: *mut mqtt_client,
    data: *const mqtt_data,
    user: *mut std::ffi::c_void,
) {
    // SAFETY: `user` is the `Mutex<Vec<i32>>` below, alive while the client is;
    // `data` is valid during the callback.
    let seen = unsafe { &*(user as *const Mutex<Vec<i32>>) };
    seen.lock().unwrap().push(unsafe { (*data).server_index });
}

/// The C function: NULL array with a count, NULL entry, a bad URI, bad UTF-8,
/// ws: all MQTT_ERR_INVALID_ARGUMENT and the list stays as it was;
/// connect(NULL, 0) works with a list; count 0 clears it.
#[test]
fn c_api_refuses_bad_input_and_changes_nothing() {
    let broker = Broker::start();
    let dead = CString::new(uri(common::free_port())).unwrap();
    let good = CString::new(uri(broker.port())).unwrap();
    let id = CString::new("failover-c-args").unwrap();
    // SAFETY: plain FFI calls with valid arguments (or the NULLs being tested).
    unsafe {
        let client = CClient(mqtt_client_new(id.as_ptr(), true));
        assert!(!client.0.is_null());
        let seen = Box::new(Mutex::new(Vec::<i32>::new()));
        let user = &*seen as *const Mutex<Vec<i32>> as *mut std::ffi::c_void;
        assert_eq!(
            mqtt_client_on(
                client.0,
                Command::ConnAck as i32,
                Some(record_index),
                None,
                0,
                user
            ),
            0
        );
        let invalid = mqtt_error::MQTT_ERR_INVALID_ARGUMENT as i32;
        let list = [good.as_ptr()];
        assert_eq!(mqtt_client_set_servers(client.0, list.as_ptr(), 1), 0);

        assert_eq!(
            mqtt_client_set_servers(client.0, std::ptr::null(), 2),
            invalid
        );
        let with_null = [dead.as_ptr(), std::ptr::null()];
        assert_eq!(
            mqtt_client_set_servers(client.0, with_null.as_ptr(), 2),
            invalid
        );
        let bad = CString::new("mqtt://127.0.0.1:99999").unwrap();
        let with_bad = [dead.as_ptr(), bad.as_ptr()];
        assert_eq!(
            mqtt_client_set_servers(client.0, with_bad.as_ptr(), 2),
            invalid
        );
        let ws = CString::new("ws://127.0.0.1:8080").unwrap();
        let with_ws = [dead.as_ptr(), ws.as_ptr()];
        assert_eq!(
            mqtt_client_set_servers(client.0, with_ws.as_ptr(), 2),
            invalid
        );
        let latin1 = CString::new(b"mqtt://h\xe9te:1883".to_vec()).unwrap();
        let with_latin1 = [dead.as_ptr(), latin1.as_ptr()];
        assert_eq!(
            mqtt_client_set_servers(client.0, with_latin1.as_ptr(), 2),
            invalid
        );
        assert_eq!(
            mqtt_client_set_servers(std::ptr::null_mut(), list.as_ptr(), 1),
            invalid
        );

        // Still [good]: NULL host and port 0 connect to it, as entry 0.
        assert_eq!(mqtt_client_connect(client.0, std::ptr::null(), 30, 0), 0);
        assert_eq!(*seen.lock().unwrap(), [0]);
        assert_eq!(mqtt_client_disconnect(client.0), 0);

        // count 0 (NULL array) clears it: NULL host is an error again.
        assert_eq!(mqtt_client_set_servers(client.0, std::ptr::null(), 0), 0);
        assert_eq!(
            mqtt_client_connect(client.0, std::ptr::null(), 30, 0),
            invalid
        );
        let host = CString::new(broker.host()).unwrap();
        assert_eq!(
            mqtt_client_connect(client.0, host.as_ptr(), 30, broker.port()),
            0
        );
        assert_eq!(*seen.lock().unwrap(), [0, -1], "no list: -1");
        drop(client);
        drop(seen);
    }
}

// ---------------------------------------------------------------------------
// Failover between bridged brokers
// ---------------------------------------------------------------------------

const TOPIC: &str = "failover/stream";

fn payload_id(payload: &[u8]) -> u32 {
    std::str::from_utf8(payload)
        .ok()
        .and_then(|s| s.strip_prefix("m"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected payload {payload:?}"))
}

/// Two mosquittos bridged both ways on `#` (one bridge connection on the
/// first, `topic # both 1`); a publisher of ours with both in its list, a
/// subscriber on the second. The publisher's path to the first is cut in
/// the middle of a QoS 1 stream; the publisher moves to the second on its
/// own, and every message arrives at the subscriber at least once.
///
/// Why the cut goes through a proxy and the first broker is stopped only
/// later: mosquitto PUBACKs a message before its bridge forwarded it, and a
/// broker that dies (SIGKILL, and even SIGTERM, which does not drain the
/// bridge) loses what it acknowledged but had not bridged yet. That loss is
/// the broker's, not the client's, whose duty ends at the PUBACK. So the
/// publisher's path is cut first (the proxy closes its connection and
/// refuses new ones: to the client, the first broker is gone), the first
/// broker keeps running until the subscriber has every message it
/// acknowledged, and only then is stopped, while the stream goes on through
/// the second.
#[test]
fn a_publisher_moves_to_the_second_broker_and_no_qos1_message_is_lost() {
    let second = Broker::start();
    let first = Broker::builder()
        .extra_config(&format!(
            "connection to-second\n\
             address 127.0.0.1:{}\n\
             topic # both 1\n\
             cleansession true\n\
             try_private true\n\
             restart_timeout 1\n\
             notifications true",
            second.port()
        ))
        .start();
    let path = FaultProxy::start(first.port());

    // Subscriber on the second; the bridge announces itself there (retained
    // `$SYS/broker/connection/<id>/state` = 1) once it is up.
    let (subscriber, sub_rx) = recorded_client("failover-sub", true);
    subscriber.loop_start(None).unwrap();
    subscriber
        .connect(second.host(), 30, second.port())
        .unwrap();
    subscriber
        .subscribe(&[
            (TOPIC, QoS::AtLeastOnce),
            ("$SYS/broker/connection/+/state", QoS::AtMostOnce),
        ])
        .unwrap();
    expect(&sub_rx, "the bridge up on the second broker", |e| {
        e.topic
            .as_deref()
            .is_some_and(|t| t.starts_with("$SYS/broker/connection/"))
            && e.payload == b"1"
    });

    let (publisher, pub_rx) = recorded_client("failover-pub", false);
    publisher.set_reconnect(Some((ms(50), ms(200)))).unwrap();
    set_servers(&publisher, &[path.port(), second.port()]);
    publisher.loop_start(None).unwrap();
    assert_eq!(publisher.connect("", 30, 0), Ok(false));
    connack_from(&pub_rx, 0);

    let total = 300u32;
    let mut mids: HashMap<u16, u32> = HashMap::new();
    // Packet ids come from a counter: 300 messages reuse none.
    let publish = |mids: &mut HashMap<u16, u32>, range: std::ops::Range<u32>| {
        for id in range {
            let mid = publisher
                .publish(TOPIC, format!("m{id}").as_bytes(), QoS::AtLeastOnce, false)
                .unwrap();
            mids.insert(mid, id);
        }
    };
    // Mid-stream: the cut comes once the first broker acknowledged part of
    // the first batch (the rest is in flight or queued).
    publish(&mut mids, 0..150);
    let mut acked_by_first = BTreeSet::new();
    let mut failed_over = None;
    while acked_by_first.len() < 30 {
        let e = expect(&pub_rx, "PUBACK from the first broker", |e| {
            e.command == Command::PubAck
        });
        acked_by_first.insert(mids[&e.mid]);
    }
    path.refuse(true);
    path.cut_all();
    publish(&mut mids, 150..200);
    // Everything up to the CONNACK from the second was acknowledged by the first.
    while failed_over.is_none() {
        let e = expect(&pub_rx, "CONNACK from the second broker", |e| {
            matches!(e.command, Command::PubAck | Command::ConnAck)
        });
        match e.command {
            Command::PubAck => {
                acked_by_first.insert(mids[&e.mid]);
            }
            _ => failed_over = Some(e),
        }
    }
    let connack = failed_over.unwrap();
    assert_eq!(connack.server_index, Some(1), "failed over to the second");
    assert_eq!(connack.error, None);

    // Collect at the subscriber until `want` holds.
    let mut received: BTreeSet<u32> = BTreeSet::new();
    let receive_until =
        |received: &mut BTreeSet<u32>, what: &str, want: &dyn Fn(&BTreeSet<u32>) -> bool| {
            while !want(received) {
                let e = expect(&sub_rx, what, |e| e.topic.as_deref() == Some(TOPIC));
                received.insert(payload_id(&e.payload));
            }
        };
    receive_until(
        &mut received,
        "the messages the first broker acknowledged",
        &|r| acked_by_first.is_subset(r),
    );
    // The first broker goes away for good, mid-stream.
    first.stop();
    publish(&mut mids, 200..total);
    receive_until(&mut received, "every message", &|r| {
        r.len() == total as usize
    });
    assert_eq!(received, (0..total).collect::<BTreeSet<_>>());
    assert!(
        wait_until(TIMEOUT, || publisher.inflight_len() == 0
            && publisher.queued_len() == 0),
        "the publisher still holds messages"
    );
    assert!(
        !pub_rx
            .try_iter()
            .any(|e| e.command == Command::ConnAck && e.server_index != Some(1)),
        "went back to the first broker"
    );
    publisher.close();
    subscriber.close();
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------
// TLS entries
// ---------------------------------------------------------------------------

/// An `mqtts` entry uses the client's TLS options; an `mqtt` entry of the
/// same list stays plain TCP although TLS options are set. The broker has a
/// plain and a TLS listener: the plain entry (first) answers; once its path
/// refuses, the TLS entry does.
#[cfg(feature = "tls")]
#[test]
fn mqtts_entries_use_the_tls_options_and_mqtt_entries_stay_plain() {
    use common::pki::{ca_only, pki_for_loopback, tls_broker};
    let pki = pki_for_loopback();
    let broker = tls_broker(&pki, "server", false);
    let plain = FaultProxy::start(broker.port());
    let ca = pki.path("ca.pem");
    let (client, rx) = recorded_client("failover-tls", true);
    client.set_reconnect(Some((ms(20), ms(20)))).unwrap();
    client.set_tls(Some(&ca_only(&ca))).unwrap();
    let tls_uri = format!("mqtts://localhost:{}", broker.tls_port());
    client
        .set_servers(&[uri(plain.port()).as_str(), tls_uri.as_str()])
        .unwrap();
    // A TLS ClientHello to a plain listener would not get a CONNACK.
    assert_eq!(client.connect("", 30, 0), Ok(false));
    connack_from(&rx, 0);
    client.loop_start(None).unwrap();
    plain.refuse(true);
    plain.cut_all();
    expect_disconnect(&rx);
    // The TLS listener answers the second entry; its certificate names localhost.
    connack_from(&rx, 1);
    client.subscribe(&[("fo/tls", QoS::AtLeastOnce)]).unwrap();
    expect(&rx, "SUBACK over TLS", |e| e.command == Command::SubAck);
    client.close();
}

/// Host names are resolved per entry, with the client's resolver: an entry
/// whose name does not resolve hands over to the next.
#[test]
fn an_entry_whose_name_does_not_resolve_hands_over_to_the_next() {
    let broker = Broker::start();
    let (client, rx) = recorded_client("failover-dns", true);
    let asked = Arc::new(Mutex::new(Vec::new()));
    {
        let asked = asked.clone();
        let port = broker.port();
        client.set_resolver(Some(Arc::new(move |host: &str, _port: u16| {
            asked.lock().unwrap().push(host.to_owned());
            match host {
                "up.example" => Ok(vec![common::loopback(port)]),
                _ => Err(std::io::Error::other("no such host")),
            }
        })));
    }
    let up = format!("mqtt://up.example:{}", broker.port());
    client
        .set_servers(&["mqtt://down.example:1883", up.as_str()])
        .unwrap();
    assert_eq!(client.connect("", 30, 0), Ok(false));
    connack_from(&rx, 1);
    assert_eq!(*asked.lock().unwrap(), ["down.example", "up.example"]);
    client.close();
}

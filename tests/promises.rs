//! Promises of include/mqtt.h, one test each, stated in the doc comment of the
//! function they are about:
//!
//! * `mqtt_client_set_tls`: a failing call leaves the previous setting in force.
//! * `mqtt_client_disconnect`: unacknowledged QoS 1/2 messages stay in the
//!   session (resent with DUP and their ids after the next connect), and without
//!   a loop thread the DISCONNECT is written before the call returns.
//! * `mqtt_client_set_credentials` / `mqtt_client_set_will`: NULL clears, and a
//!   will set from inside a callback applies to the next attempt.
//! * `mqtt_client_on`: callable from inside a callback, used for later packets.
//! * `mqtt_client_loop` (`Client::run_once`): returns the error that ended the
//!   connection during that turn, which the DISCONNECT callback got too.
//!
//! Normal behaviour runs against a real mosquitto; where the exact packets
//! matter (CONNECT fields, DUP flags, a DISCONNECT on the wire) a scripted peer
//! plays the broker. The promises about `mqtt_client_socket`, `next_timeout_ms`
//! and `mqtt_client_loop` from two threads are tested in C: tests/c/promises.c.

mod common;

use std::ffi::{CString, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::events::{self, Event, drain, expect, expect_connack, expect_disconnect};
use common::{Broker, HOST, OwnedPacket, PeerConn, ScriptedPeer, TIMEOUT};
use mqtt::ffi::*;
use mqtt::protocol::codec::{LastWill, QoS};
use mqtt::{Client, Command, Data, Error};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const OK: i32 = mqtt_error::MQTT_OK as i32;

/// A client whose callbacks are all recorded, with automatic reconnection off
/// (nothing connects behind the test's back) and a bounded connect timeout.
fn quiet_client(id: &str, clean: bool) -> (Client, Receiver<Event>) {
    let (client, rx) = events::recorded_client(id, clean);
    client.set_reconnect(None).unwrap();
    client.set_connect_timeout(TIMEOUT).unwrap();
    (client, rx)
}

// ---------------------------------------------------------------------------
// 1. mqtt_client_set_tls: "Returns MQTT_OK, or (the previous setting then
//    stays in force): ..."
// ---------------------------------------------------------------------------

#[cfg(feature = "tls")]
mod tls {
    use super::*;
    use common::pki::{ca_only, pki_for_loopback, tls_broker};
    use mqtt::{PemSource, TlsOptions};
    use rcgen::ExtendedKeyUsagePurpose;

    fn plain_client(id: &str) -> Client {
        let client = Client::new(id, true).unwrap();
        client.set_reconnect(None).unwrap();
        client.set_connect_timeout(Duration::from_secs(3)).unwrap();
        client
    }

    /// The TLS listener really refuses plaintext MQTT (otherwise a success
    /// there would prove nothing), and TLS to the plain listener fails.
    #[test]
    fn control_the_tls_listener_refuses_plaintext_and_the_plain_one_refuses_tls() {
        let pki = pki_for_loopback();
        let broker = tls_broker(&pki, "server", false);
        let plain = plain_client("promise-tls-control-plain");
        let err = plain.connect(HOST, 30, broker.tls_port());
        assert!(
            err.is_err(),
            "plaintext MQTT must not get through the TLS listener"
        );
        plain.close();
        let ca = pki.path("ca.pem");
        let tls = plain_client("promise-tls-control-tls");
        tls.set_tls(Some(&ca_only(&ca))).unwrap();
        assert_eq!(
            tls.connect(HOST, 30, broker.port()),
            Err(Error::TlsHandshake)
        );
        tls.connect(HOST, 30, broker.tls_port())
            .expect("TLS with the right CA connects to the TLS listener");
        tls.close();
    }

    #[test]
    fn a_failing_set_tls_leaves_the_previous_tls_setting_in_force() {
        let pki = pki_for_loopback();
        let broker = tls_broker(&pki, "server", false);
        // A second, valid CA that does not know the broker: had any failing call
        // below installed part of its options, the handshake would fail with
        // TlsNotTrusted.
        let other = pki_for_loopback();
        let other_client = other.issue("client", &["client"], ExtendedKeyUsagePurpose::ClientAuth);
        let ca = pki.path("ca.pem");
        let other_ca = other.path("ca.pem");
        let missing = pki.path("missing.pem");
        let garbage = b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";

        let client = plain_client("promise-tls-keep");
        client.set_tls(Some(&ca_only(&ca))).unwrap();

        let failing: Vec<(TlsOptions<'_>, Error)> = vec![
            (ca_only(&missing), Error::TlsCa),
            (
                TlsOptions {
                    ca: Some(PemSource::Pem(garbage)),
                    ..TlsOptions::default()
                },
                Error::TlsCa,
            ),
            // Valid CA, then a certificate without its key.
            (
                TlsOptions {
                    cert: Some(PemSource::Pem(other_client.cert_pem.as_bytes())),
                    ..ca_only(&other_ca)
                },
                Error::TlsKey,
            ),
            // Valid CA, then a key without certificate.
            (
                TlsOptions {
                    key: Some(PemSource::Pem(other_client.key_pem.as_bytes())),
                    ..ca_only(&other_ca)
                },
                Error::TlsCert,
            ),
            // Valid CA and certificate, unreadable key.
            (
                TlsOptions {
                    cert: Some(PemSource::Pem(other_client.cert_pem.as_bytes())),
                    key: Some(PemSource::File(&missing)),
                    ..ca_only(&other_ca)
                },
                Error::TlsKey,
            ),
            (
                TlsOptions {
                    server_name: Some("not a name"),
                    ..ca_only(&other_ca)
                },
                Error::InvalidArgument,
            ),
            (
                TlsOptions {
                    alpn: &["mqtt", ""],
                    insecure_skip_verify: true,
                    ..ca_only(&other_ca)
                },
                Error::InvalidArgument,
            ),
        ];
        for (options, want) in &failing {
            assert_eq!(client.set_tls(Some(options)), Err(*want), "{options:?}");
        }

        // Still TLS, still with the first CA: the TLS-only listener accepts us...
        assert_eq!(
            client.connect(HOST, 30, broker.tls_port()),
            Ok(false),
            "after failing set_tls calls the client must still use the TLS setting it had"
        );
        assert!(client.is_connected());
        client.disconnect().unwrap();
        // ...and the plain listener does not: the client still speaks TLS.
        assert_eq!(
            client.connect(HOST, 30, broker.port()),
            Err(Error::TlsHandshake),
            "the client fell back to plain TCP after a failing set_tls"
        );
        client.close();
    }

    #[test]
    fn a_failing_set_tls_on_a_plain_client_leaves_it_plain() {
        let pki = pki_for_loopback();
        let broker = tls_broker(&pki, "server", false);
        let missing = pki.path("missing.pem");
        let client = plain_client("promise-tls-stays-plain");
        assert_eq!(client.set_tls(Some(&ca_only(&missing))), Err(Error::TlsCa));
        let issued = pki.issue("client", &["client"], ExtendedKeyUsagePurpose::ClientAuth);
        let ca = pki.path("ca.pem");
        let half = TlsOptions {
            cert: Some(PemSource::Pem(issued.cert_pem.as_bytes())),
            ..ca_only(&ca)
        };
        assert_eq!(client.set_tls(Some(&half)), Err(Error::TlsKey));
        assert_eq!(
            client.connect(HOST, 30, broker.port()),
            Ok(false),
            "the previous setting (plain TCP) must stay in force"
        );
        client.close();
    }

    /// The same promise through the C entry point, including the errors only
    /// the C boundary can produce (file and PEM both given, bad UTF-8).
    #[test]
    fn a_failing_mqtt_client_set_tls_leaves_the_previous_setting_in_force() {
        let pki = pki_for_loopback();
        let broker = tls_broker(&pki, "server", false);
        let ca_path = CString::new(pki.path("ca.pem").to_str().unwrap()).unwrap();
        let missing = CString::new(pki.path("missing.pem").to_str().unwrap()).unwrap();
        let not_utf8 = CString::new(vec![b'/', 0xff, 0xfe, b'x']).unwrap();
        let ca_pem = pki.ca_pem();
        let host = CString::new(HOST).unwrap();
        let c = CClient::new("promise-tls-keep-c", true);
        // SAFETY: valid pointers; `c` is live until dropped.
        unsafe {
            assert_eq!(mqtt_client_set_reconnect(c.0, 0, 0), OK);
            assert_eq!(mqtt_client_set_connect_timeout(c.0, 3000), OK);
            let good = mqtt_tls_options {
                ca_file: ca_path.as_ptr(),
                ..common::no_tls_options()
            };
            assert_eq!(mqtt_client_set_tls(c.0, &good), OK);
            for (options, want) in [
                (
                    mqtt_tls_options {
                        ca_file: missing.as_ptr(),
                        ..common::no_tls_options()
                    },
                    Error::TlsCa,
                ),
                (
                    mqtt_tls_options {
                        ca_file: ca_path.as_ptr(),
                        ca_pem: ca_pem.as_ptr(),
                        ca_pem_len: ca_pem.len(),
                        ..common::no_tls_options()
                    },
                    Error::InvalidArgument,
                ),
                (
                    mqtt_tls_options {
                        ca_pem: std::ptr::null(),
                        ca_pem_len: 10,
                        ..common::no_tls_options()
                    },
                    Error::InvalidArgument,
                ),
                (
                    mqtt_tls_options {
                        ca_file: not_utf8.as_ptr(),
                        ..common::no_tls_options()
                    },
                    Error::InvalidUtf8,
                ),
            ] {
                assert_eq!(mqtt_client_set_tls(c.0, &options), want as i32, "{want:?}");
            }
            assert_eq!(
                mqtt_client_connect(c.0, host.as_ptr(), 30, broker.tls_port()),
                OK,
                "after failing mqtt_client_set_tls calls the TLS setting must still be in force"
            );
            assert_eq!(mqtt_client_disconnect(c.0), OK);
            assert_eq!(
                mqtt_client_connect(c.0, host.as_ptr(), 30, broker.port()),
                Error::TlsHandshake as i32,
                "the client fell back to plain TCP after a failing mqtt_client_set_tls"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// 3. mqtt_client_disconnect: "Unacknowledged QoS 1/2 messages stay in the
//    session." (and, per mqtt_client_reconnect, are resent)
// ---------------------------------------------------------------------------

#[test]
fn unacknowledged_messages_survive_disconnect_and_are_resent_with_dup_after_the_next_connect() {
    let (client, rx) = quiet_client("promise-disconnect-session", false);
    client.loop_start(None).unwrap();
    let peer = ScriptedPeer::bind();
    let (result, mut conn, connect) = common::peer::connect_through(&client, &peer, false);
    assert_eq!(result, Ok(false));
    assert!(!connect.connect().clean_session);
    expect_connack(&rx);

    let sent = [
        ("keep/1", &b"one"[..], QoS::AtLeastOnce),
        ("keep/2", &b"two"[..], QoS::ExactlyOnce),
    ];
    let mids: Vec<u16> = sent
        .iter()
        .map(|(topic, payload, qos)| client.publish(topic, payload, *qos, false).unwrap())
        .collect();
    for &mid in &mids {
        let p = conn.expect_type(3, TIMEOUT);
        assert_eq!(p.publish().pkid, mid);
        assert!(!p.publish().dup);
    }
    // The peer never acknowledges. The client disconnects on purpose.
    client.disconnect().unwrap();
    let before_close = conn.expect_closed(TIMEOUT);
    assert!(
        before_close.len() == 1 && before_close[0].is(14),
        "expected exactly a DISCONNECT before the close, got {before_close:?}"
    );
    assert_eq!(expect_disconnect(&rx).error, None);
    assert_eq!(
        client.inflight_len(),
        2,
        "both unacknowledged messages must stay in the session"
    );

    // The next connect: the broker kept the session.
    let (result, mut conn, connect) = common::peer::connect_through(&client, &peer, true);
    assert_eq!(result, Ok(true));
    assert!(!connect.connect().clean_session);
    for (&mid, (topic, payload, qos)) in mids.iter().zip(sent) {
        let p = conn.expect_packet(TIMEOUT);
        assert!(p.is(3), "expected the PUBLISH {mid} again, got {p:?}");
        let p = p.publish();
        assert!(p.dup, "a resent PUBLISH has DUP=1: {p:?}");
        assert_eq!(
            (p.pkid, p.topic, p.payload, p.qos),
            (mid, topic, payload, qos)
        );
    }
    // And they complete normally on the new connection.
    conn.send_packet(&mqtt::protocol::codec::Packet::puback(mids[0]));
    conn.send_packet(&mqtt::protocol::codec::Packet::pubrec(mids[1]));
    assert_eq!(conn.expect_type(6, TIMEOUT).pkid(), Some(mids[1]));
    conn.send_packet(&mqtt::protocol::codec::Packet::pubcomp(mids[1]));
    expect(&rx, "PUBACK", |e| {
        e.command == Command::PubAck && e.mid == mids[0]
    });
    expect(&rx, "PUBCOMP", |e| {
        e.command == Command::PubComp && e.mid == mids[1]
    });
    client.close();
}

// ---------------------------------------------------------------------------
// 4. mqtt_client_disconnect: "Without a loop thread the DISCONNECT is written
//    before this returns."
// ---------------------------------------------------------------------------

#[test]
fn without_a_loop_thread_disconnect_writes_the_disconnect_before_returning() {
    let (client, rx) = quiet_client("promise-disconnect-written", true);
    let peer = ScriptedPeer::bind();
    let (result, mut conn, _) = common::peer::connect_through(&client, &peer, false);
    assert_eq!(result, Ok(false));
    expect_connack(&rx);
    assert!(!client.loop_running());
    conn.expect_silence(ms(100));

    client.disconnect().unwrap();
    // From here on nobody runs the client: no loop thread, no run_once, and the
    // handle stays alive (closing it would flush). What arrives was written by
    // disconnect() itself.
    let p = conn.expect_packet(TIMEOUT);
    assert!(p.is(14), "expected DISCONNECT, got {p:?}");
    drop(conn);
    client.close();
}

// ---------------------------------------------------------------------------
// 5. mqtt_client_set_credentials: "`username` NULL clears both."
//    mqtt_client_set_will: "`topic` NULL clears it. ... applies from the next
//    connection attempt." (also from inside a callback)
// ---------------------------------------------------------------------------

/// A C handle, freed on drop.
struct CClient(*mut mqtt_client);

// SAFETY: every mqtt_* function may be called from any thread (mqtt.h).
unsafe impl Send for CClient {}
// SAFETY: as above.
unsafe impl Sync for CClient {}

impl CClient {
    fn new(id: &str, clean: bool) -> CClient {
        let id = CString::new(id).unwrap();
        // SAFETY: a valid NUL-terminated id.
        let c = unsafe { mqtt_client_new(id.as_ptr(), clean) };
        assert!(!c.is_null());
        CClient(c)
    }
}

impl Drop for CClient {
    fn drop(&mut self) {
        // SAFETY: a live handle, freed once.
        unsafe { mqtt_client_free(self.0) };
    }
}

/// `mqtt_client_connect` in this thread while the peer answers the handshake.
fn c_connect_to_peer(c: &CClient, peer: &ScriptedPeer) -> (i32, PeerConn, OwnedPacket) {
    let host = CString::new(HOST).unwrap();
    thread::scope(|s| {
        let script = s.spawn(|| {
            let mut conn = peer.accept(TIMEOUT);
            let connect = conn.handshake(false, TIMEOUT);
            (conn, connect)
        });
        // SAFETY: valid handle and host.
        let rc = unsafe { mqtt_client_connect(c.0, host.as_ptr(), 60, peer.port()) };
        let (conn, connect) = script.join().unwrap();
        (rc, conn, connect)
    })
}

#[test]
fn null_user_name_clears_the_credentials_and_null_will_topic_clears_the_will() {
    let c = CClient::new("promise-null-clears", true);
    let user = CString::new("alice").unwrap();
    let pass = CString::new("s3cret").unwrap();
    let topic = CString::new("will/topic").unwrap();
    let peer = ScriptedPeer::bind();
    // SAFETY: valid pointers; `c` is live.
    unsafe {
        assert_eq!(mqtt_client_set_reconnect(c.0, 0, 0), OK);
        assert_eq!(
            mqtt_client_set_credentials(c.0, user.as_ptr(), pass.as_ptr()),
            OK
        );
        assert_eq!(
            mqtt_client_set_will(c.0, topic.as_ptr(), b"bye".as_ptr().cast(), 3, 1, true),
            OK
        );
    }
    // Baseline: both are sent.
    let (rc, mut conn, first) = c_connect_to_peer(&c, &peer);
    assert_eq!(rc, OK);
    let first = first.connect();
    assert_eq!(first.username, Some("alice"));
    assert_eq!(first.password, Some(&b"s3cret"[..]));
    assert_eq!(
        first.will,
        Some(LastWill {
            topic: "will/topic",
            payload: b"bye",
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: None
        })
    );
    // SAFETY: valid handle; NULL is the documented way to clear.
    unsafe {
        assert_eq!(mqtt_client_disconnect(c.0), OK);
        assert_eq!(
            mqtt_client_set_credentials(c.0, std::ptr::null(), std::ptr::null()),
            OK
        );
        assert_eq!(
            mqtt_client_set_will(c.0, std::ptr::null(), std::ptr::null(), 0, 0, false),
            OK
        );
    }
    assert!(conn.expect_packet(TIMEOUT).is(14));
    drop(conn);

    let (rc, _conn, second) = c_connect_to_peer(&c, &peer);
    assert_eq!(rc, OK);
    let second = second.connect();
    assert_eq!(
        (second.username, second.password),
        (None, None),
        "set_credentials(NULL, NULL) must clear user name and password"
    );
    assert_eq!(
        second.will, None,
        "set_will(NULL topic) must clear the will"
    );
}

/// What the DISCONNECT callback of the test below shares with it.
#[derive(Default)]
struct WillSwap {
    disconnects: AtomicUsize,
    set_will_results: Mutex<Vec<i32>>,
}

/// DISCONNECT callback: after the first lost connection set a new will, after
/// the second clear it (NULL topic), from inside the callback.
unsafe extern "C" fn swap_will_on_disconnect(
    client: *mut mqtt_client,
    _data: *const mqtt_data,
    user_data: *mut c_void,
) {
    // SAFETY: user_data is the &WillSwap the test registered, alive until free.
    let shared = unsafe { &*(user_data as *const WillSwap) };
    let n = shared.disconnects.fetch_add(1, Ordering::SeqCst);
    // SAFETY: the client handle passed to the callback; literal strings.
    let rc = unsafe {
        if n == 0 {
            mqtt_client_set_will(
                client,
                c"will/second".as_ptr(),
                b"second".as_ptr().cast(),
                6,
                2,
                true,
            )
        } else {
            mqtt_client_set_will(client, std::ptr::null(), std::ptr::null(), 0, 0, false)
        }
    };
    shared.set_will_results.lock().unwrap().push(rc);
}

#[test]
fn a_will_set_or_cleared_inside_a_callback_applies_to_the_next_attempt() {
    let shared = Box::new(WillSwap::default());
    let c = CClient::new("promise-will-in-callback", true);
    let first_topic = CString::new("will/first").unwrap();
    let peer = ScriptedPeer::bind();
    // SAFETY: valid pointers; `shared` outlives `c` (dropped after it).
    unsafe {
        assert_eq!(mqtt_client_set_reconnect(c.0, 20, 100), OK);
        assert_eq!(
            mqtt_client_set_will(
                c.0,
                first_topic.as_ptr(),
                b"first".as_ptr().cast(),
                5,
                0,
                false
            ),
            OK
        );
        assert_eq!(
            mqtt_client_on(
                c.0,
                mqtt_command::MQTT_DISCONNECT as i32,
                Some(swap_will_on_disconnect),
                None,
                0,
                &*shared as *const WillSwap as *mut c_void,
            ),
            OK
        );
    }
    let (rc, conn, first) = c_connect_to_peer(&c, &peer);
    assert_eq!(rc, OK);
    assert_eq!(first.connect().will.map(|w| w.topic), Some("will/first"));
    // SAFETY: valid handle, no callback of ours is running.
    assert_eq!(
        unsafe { mqtt_client_loop_start(c.0, None, std::ptr::null_mut()) },
        OK
    );

    // Lose the connection: the DISCONNECT callback sets a new will, and the
    // automatic reconnection must carry it.
    conn.close();
    let mut conn = peer.accept(TIMEOUT);
    let second = conn.handshake(false, TIMEOUT);
    assert_eq!(shared.disconnects.load(Ordering::SeqCst), 1);
    assert_eq!(
        second.connect().will,
        Some(LastWill {
            topic: "will/second",
            payload: b"second",
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: None
        }),
        "the will set inside the DISCONNECT callback must apply to the next attempt"
    );

    // Again: this time the callback clears it.
    conn.close();
    let mut conn = peer.accept(TIMEOUT);
    let third = conn.handshake(false, TIMEOUT);
    assert_eq!(shared.disconnects.load(Ordering::SeqCst), 2);
    assert_eq!(
        third.connect().will,
        None,
        "the will cleared inside the DISCONNECT callback must not be sent"
    );
    assert_eq!(*shared.set_will_results.lock().unwrap(), vec![OK, OK]);
    drop(c);
    drop(conn);
}

// ---------------------------------------------------------------------------
// 6. mqtt_client_on: "may be called from inside a callback (takes effect from
//    the next packet)."
// ---------------------------------------------------------------------------

#[test]
fn a_callback_registered_from_inside_a_callback_handles_the_later_packets() {
    let broker = Broker::start();
    let client = Client::new("promise-on-inside", true).unwrap();
    client.set_reconnect(None).unwrap();
    let (tx, rx) = channel::<(&'static str, Vec<u8>)>();

    // The SUBACK callback registers the PUBLISH callback "first"; "first",
    // on the first message, replaces itself with "second".
    let on_suback = {
        let tx = tx.clone();
        move |c: &Client, _: &Data<'_>| {
            let tx_first = tx.clone();
            let first = move |c: &Client, d: &Data<'_>| {
                let payload = d.message.map(|m| m.payload.to_vec()).unwrap_or_default();
                let _ = tx_first.send(("first", payload));
                let tx_second = tx_first.clone();
                let second = move |_: &Client, d: &Data<'_>| {
                    let payload = d.message.map(|m| m.payload.to_vec()).unwrap_or_default();
                    let _ = tx_second.send(("second", payload));
                };
                c.on(Command::Publish, Arc::new(second), None, 0);
            };
            c.on(Command::Publish, Arc::new(first), None, 0);
            let _ = tx.send(("suback", Vec::new()));
        }
    };
    client.on(Command::SubAck, Arc::new(on_suback), None, 0);
    client.connect(HOST, 30, broker.port()).unwrap();
    client.loop_start(None).unwrap();
    client
        .subscribe(&[("promise/on/#", QoS::AtLeastOnce)])
        .unwrap();

    let next = |what: &str| {
        rx.recv_timeout(TIMEOUT)
            .unwrap_or_else(|_| panic!("no {what} within {TIMEOUT:?}"))
    };
    assert_eq!(next("SUBACK").0, "suback");
    // Published back to back: they may well arrive in one read.
    for payload in ["m1", "m2", "m3"] {
        client
            .publish("promise/on/x", payload.as_bytes(), QoS::AtLeastOnce, false)
            .unwrap();
    }
    let got: Vec<(&str, Vec<u8>)> = (0..3).map(|_| next("message")).collect();
    assert_eq!(
        got,
        vec![
            ("first", b"m1".to_vec()),
            ("second", b"m2".to_vec()),
            ("second", b"m3".to_vec()),
        ],
        "callbacks registered inside callbacks must handle the later packets"
    );
    client.close();
}

// ---------------------------------------------------------------------------
// 7. mqtt_client_loop / Client::run_once: "Returns MQTT_OK; the error that
//    ended the connection during this turn (the DISCONNECT callback got it too)"
// ---------------------------------------------------------------------------

/// Run turns until one returns an error; every turn before it must return Ok
/// without a DISCONNECT callback, and the failing turn's error must be the one
/// its DISCONNECT callback got.
fn turn_until_error(client: &Client, rx: &Receiver<Event>) -> Error {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        assert!(
            Instant::now() < deadline,
            "no turn reported the end of the connection within {TIMEOUT:?}"
        );
        let result = client.run_once(ms(500));
        let disconnects: Vec<Event> = drain(rx)
            .into_iter()
            .filter(|e| e.command == Command::Disconnect)
            .collect();
        match result {
            Ok(()) => assert!(
                disconnects.is_empty(),
                "run_once returned Ok in the turn whose DISCONNECT callback got {disconnects:?}"
            ),
            Err(e) => {
                assert_eq!(
                    disconnects.iter().map(|d| d.error).collect::<Vec<_>>(),
                    vec![Some(e)],
                    "the DISCONNECT callback of that turn must have got the same error"
                );
                return e;
            }
        }
    }
}

#[test]
fn run_once_returns_the_error_that_ended_the_connection_in_its_turn() {
    for (case, bytes, want) in [
        (
            "malformed",
            Some(&[0x00u8, 0x00][..]),
            Error::MalformedPacket,
        ),
        ("closed", None, Error::ConnectionLost),
    ] {
        let (client, rx) = quiet_client(&format!("promise-run-once-{case}"), true);
        let peer = ScriptedPeer::bind();
        let (result, mut conn, _) = common::peer::connect_through(&client, &peer, false);
        assert_eq!(result, Ok(false), "{case}");
        expect_connack(&rx);
        match bytes {
            // Reserved packet type 0.
            Some(bytes) => conn.send(bytes),
            None => conn.close(),
        }
        assert_eq!(turn_until_error(&client, &rx), want, "{case}");
        assert!(!client.is_connected(), "{case}");
        // Reported once: the next turn, with no connection, is Ok.
        assert_eq!(client.run_once(Duration::ZERO), Ok(()), "{case}");
        client.close();
    }
}

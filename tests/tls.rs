//! TLS end to end against mosquitto TLS listeners, with certificates made by
//! the test (rcgen): QoS 0/1/2 over TLS, trust and name failures, client
//! certificates, PEM from files and from memory, errors at set time, and the C
//! entry point.
#![cfg(feature = "tls")]

mod common;

use std::ffi::CString;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::events::{self, Event, expect, message_on};
use common::pki::{Pki, ca_only, pki_for_loopback, tls_broker};
use common::{Broker, TIMEOUT};
use mqtt::protocol::codec::QoS;
use mqtt::{Client, Command, Error, PemSource, TlsOptions};
use rcgen::ExtendedKeyUsagePurpose;

/// A client (reconnection off) whose callbacks for these commands are recorded.
fn recorded_client(id: &str) -> (Client, Receiver<Event>) {
    let client = Client::new(id, true).unwrap();
    client.set_reconnect(None).unwrap();
    client.set_connect_timeout(TIMEOUT).unwrap();
    let rx = events::record(
        &client,
        &[
            Command::ConnAck,
            Command::Publish,
            Command::PubAck,
            Command::PubComp,
            Command::PubRel,
            Command::SubAck,
            Command::Disconnect,
        ],
    );
    (client, rx)
}

/// Connect with `options` to the broker's TLS listener.
fn connect_tls(broker: &Broker, id: &str, options: &TlsOptions<'_>) -> Result<Client, Error> {
    let client = Client::new(id, true).unwrap();
    client.set_reconnect(None).unwrap();
    client.set_connect_timeout(TIMEOUT).unwrap();
    client.set_tls(Some(options))?;
    client.connect(broker.host(), 30, broker.tls_port())?;
    Ok(client)
}

#[test]
fn qos_0_1_2_and_a_large_message_over_tls_then_a_clean_disconnect() {
    let pki = pki_for_loopback();
    let broker = tls_broker(&pki, "server", false);
    let ca = pki.path("ca.pem");
    let (client, rx) = recorded_client("tls-qos");
    client.set_tls(Some(&ca_only(&ca))).unwrap();
    assert!(
        !client
            .connect(broker.host(), 30, broker.tls_port())
            .unwrap()
    );
    client.loop_start(None).unwrap();
    expect(&rx, "CONNACK", |e| e.command == Command::ConnAck);
    client.subscribe(&[("tls/#", QoS::ExactlyOnce)]).unwrap();
    expect(&rx, "SUBACK", |e| e.command == Command::SubAck);

    client
        .publish("tls/0", b"zero", QoS::AtMostOnce, false)
        .unwrap();
    let m1 = client
        .publish("tls/1", b"one", QoS::AtLeastOnce, false)
        .unwrap();
    let m2 = client
        .publish("tls/2", b"two", QoS::ExactlyOnce, false)
        .unwrap();
    // Larger than rustls's 64 KiB send buffer and than one TLS record (16 KiB).
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let m3 = client
        .publish("tls/big", &big, QoS::AtLeastOnce, false)
        .unwrap();

    // Collect until every message and acknowledgement arrived, in any order.
    let mut messages = Vec::new();
    let mut acks = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while messages.len() < 4 || acks.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("got {messages:?} and acks {acks:?} only"));
        match e.command {
            Command::Publish | Command::PubRel if e.topic.is_some() => messages.push(e),
            Command::PubAck | Command::PubComp => acks.push((e.command as u8, e.mid)),
            _ => {}
        }
    }
    for (topic, payload, qos) in [
        ("tls/0", &b"zero"[..], QoS::AtMostOnce),
        ("tls/1", &b"one"[..], QoS::AtLeastOnce),
        ("tls/2", &b"two"[..], QoS::ExactlyOnce),
        ("tls/big", &big[..], QoS::AtLeastOnce),
    ] {
        let m = messages
            .iter()
            .find(|m| m.topic.as_deref() == Some(topic))
            .unwrap_or_else(|| panic!("no message on {topic}"));
        assert!(m.payload == payload, "{topic}: wrong payload");
        assert_eq!(m.qos, Some(qos), "{topic}");
    }
    acks.sort();
    let mut want = vec![
        (Command::PubAck as u8, m1),
        (Command::PubComp as u8, m2),
        (Command::PubAck as u8, m3),
    ];
    want.sort();
    assert_eq!(acks, want);

    client.disconnect().unwrap();
    let bye = expect(&rx, "DISCONNECT", |e| e.command == Command::Disconnect);
    assert_eq!(bye.error, None);
    client.close();
    // mosquitto saw our DISCONNECT (through TLS), not a lost connection.
    assert!(
        common::wait_until(TIMEOUT, || broker
            .log()
            .contains("Client tls-qos disconnected.")),
        "{}",
        broker.log()
    );
}

#[test]
fn a_certificate_from_another_ca_is_not_trusted() {
    let pki = pki_for_loopback();
    let broker = tls_broker(&pki, "server", false);
    let other = Pki::new("other");
    let ca = other.path("ca.pem");
    let err = connect_tls(&broker, "tls-wrong-ca", &ca_only(&ca)).err();
    assert_eq!(err, Some(Error::TlsNotTrusted));
    // The system trust store does not know the test CA either (a machine
    // without one gets TlsCa when the options are set).
    let err = connect_tls(&broker, "tls-system-ca", &TlsOptions::default()).err();
    assert!(
        matches!(err, Some(Error::TlsNotTrusted | Error::TlsCa)),
        "{err:?}"
    );
    if err == Some(Error::TlsCa) {
        eprintln!("no system trust store: its case was not exercised");
    }
}

#[test]
fn the_server_name_must_match_the_certificate() {
    let pki = Pki::new("named");
    pki.issue(
        "server",
        &["broker.test"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let broker = tls_broker(&pki, "server", false);
    let ca = pki.path("ca.pem");
    // Connecting to 127.0.0.1 verifies the certificate against that address.
    let err = connect_tls(&broker, "tls-ip", &ca_only(&ca)).err();
    assert_eq!(err, Some(Error::TlsHostname));
    let named = TlsOptions {
        server_name: Some("broker.test"),
        ..ca_only(&ca)
    };
    let client = connect_tls(&broker, "tls-named", &named).unwrap();
    assert!(client.is_connected());
    client.close();
}

#[test]
fn insecure_skip_verify_accepts_an_untrusted_certificate() {
    let pki = Pki::new("named");
    pki.issue(
        "server",
        &["broker.test"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let broker = tls_broker(&pki, "server", false);
    let insecure = TlsOptions {
        insecure_skip_verify: true,
        alpn: &["mqtt"],
        ..TlsOptions::default()
    };
    let client = connect_tls(&broker, "tls-insecure", &insecure).unwrap();
    assert!(client.is_connected());
    client.close();
}

#[test]
fn a_listener_requiring_client_certificates_accepts_ours_only() {
    let pki = pki_for_loopback();
    pki.issue("client", &["client"], ExtendedKeyUsagePurpose::ClientAuth);
    let broker = tls_broker(&pki, "server", true);
    let (ca, cert, key) = (
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key"),
    );
    let with_cert = TlsOptions {
        cert: Some(PemSource::File(&cert)),
        key: Some(PemSource::File(&key)),
        ..ca_only(&ca)
    };
    let client = connect_tls(&broker, "tls-client-cert", &with_cert).unwrap();
    client.publish("x", b"y", QoS::AtLeastOnce, false).unwrap();
    client.close();

    // Without a certificate the broker aborts the handshake. With TLS 1.3 the
    // client has finished its side already and learns it from the alert (or,
    // if the broker's close overtakes it, from the lost connection).
    let err = connect_tls(&broker, "tls-no-cert", &ca_only(&ca)).err();
    assert!(
        matches!(err, Some(Error::TlsHandshake | Error::ConnectionLost)),
        "{err:?}"
    );

    // A certificate from another CA is refused as well.
    let other = Pki::new("other");
    other.issue("client", &["client"], ExtendedKeyUsagePurpose::ClientAuth);
    let (other_cert, other_key) = (other.path("client.pem"), other.path("client.key"));
    let foreign = TlsOptions {
        cert: Some(PemSource::File(&other_cert)),
        key: Some(PemSource::File(&other_key)),
        ..ca_only(&ca)
    };
    let err = connect_tls(&broker, "tls-foreign-cert", &foreign).err();
    assert!(
        matches!(err, Some(Error::TlsHandshake | Error::ConnectionLost)),
        "{err:?}"
    );
}

#[test]
fn ca_certificate_and_key_from_memory_work_like_files() {
    let pki = pki_for_loopback();
    let issued = pki.issue("client", &["client"], ExtendedKeyUsagePurpose::ClientAuth);
    let broker = tls_broker(&pki, "server", true);
    let ca_pem = pki.ca_pem();
    let options = TlsOptions {
        ca: Some(PemSource::Pem(ca_pem.as_bytes())),
        cert: Some(PemSource::Pem(issued.cert_pem.as_bytes())),
        key: Some(PemSource::Pem(issued.key_pem.as_bytes())),
        ..TlsOptions::default()
    };
    let (client, rx) = recorded_client("tls-memory");
    client.set_tls(Some(&options)).unwrap();
    client
        .connect(broker.host(), 30, broker.tls_port())
        .unwrap();
    client.loop_start(None).unwrap();
    client.subscribe(&[("mem", QoS::AtLeastOnce)]).unwrap();
    expect(&rx, "SUBACK", |e| e.command == Command::SubAck);
    client
        .publish("mem", b"from memory", QoS::AtLeastOnce, false)
        .unwrap();
    assert_eq!(message_on(&rx, "mem").payload, b"from memory");
    client.close();
}

#[test]
fn bad_pem_is_reported_when_set() {
    let pki = pki_for_loopback();
    let issued = pki.issue("client", &["client"], ExtendedKeyUsagePurpose::ClientAuth);
    let client = Client::new("tls-bad", true).unwrap();
    let garbage = b"-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n";
    let set = |options: TlsOptions<'_>| client.set_tls(Some(&options));
    let cert = Some(PemSource::Pem(issued.cert_pem.as_bytes()));
    let key = Some(PemSource::Pem(issued.key_pem.as_bytes()));

    let missing = pki.path("missing.pem");
    for (options, want) in [
        (
            TlsOptions {
                ca: Some(PemSource::Pem(garbage)),
                ..TlsOptions::default()
            },
            Error::TlsCa,
        ),
        (
            TlsOptions {
                ca: Some(PemSource::Pem(b"no PEM here")),
                ..TlsOptions::default()
            },
            Error::TlsCa,
        ),
        (ca_only(&missing), Error::TlsCa),
        (
            TlsOptions {
                cert: Some(PemSource::Pem(garbage)),
                key,
                ..TlsOptions::default()
            },
            Error::TlsCert,
        ),
        (
            TlsOptions {
                cert,
                key: Some(PemSource::Pem(issued.cert_pem.as_bytes())),
                ..TlsOptions::default()
            },
            Error::TlsKey,
        ),
        (
            TlsOptions {
                cert,
                key: Some(PemSource::File(&missing)),
                ..TlsOptions::default()
            },
            Error::TlsKey,
        ),
        (
            TlsOptions {
                cert,
                ..TlsOptions::default()
            },
            Error::TlsKey,
        ),
        (
            TlsOptions {
                key,
                ..TlsOptions::default()
            },
            Error::TlsCert,
        ),
        (
            TlsOptions {
                server_name: Some("not a name"),
                ..TlsOptions::default()
            },
            Error::InvalidArgument,
        ),
        (
            TlsOptions {
                alpn: &[""],
                ..TlsOptions::default()
            },
            Error::InvalidArgument,
        ),
    ] {
        assert_eq!(set(options), Err(want), "{options:?}");
    }
    // A key that is valid but belongs to another certificate.
    let other = pki.issue("other", &["other"], ExtendedKeyUsagePurpose::ClientAuth);
    let mismatched = TlsOptions {
        cert,
        key: Some(PemSource::Pem(other.key_pem.as_bytes())),
        ..TlsOptions::default()
    };
    assert_eq!(set(mismatched), Err(Error::TlsKey));
    client.close();
}

#[test]
fn tls_to_a_plain_listener_fails_the_handshake() {
    let pki = pki_for_loopback();
    let broker = Broker::start();
    let ca = pki.path("ca.pem");
    let client = Client::new("tls-plain", true).unwrap();
    client.set_reconnect(None).unwrap();
    client.set_tls(Some(&ca_only(&ca))).unwrap();
    let err = client.connect(broker.host(), 30, broker.port()).err();
    assert_eq!(err, Some(Error::TlsHandshake));
    // Back to plain TCP on the same client.
    client.set_tls(None).unwrap();
    client.connect(broker.host(), 30, broker.port()).unwrap();
    client.close();
}

#[test]
fn async_connect_reports_the_tls_error_in_the_disconnect_callback() {
    let pki = pki_for_loopback();
    let broker = tls_broker(&pki, "server", false);
    let other = Pki::new("other");
    let ca = other.path("ca.pem");
    let (client, rx) = recorded_client("tls-async");
    client.set_tls(Some(&ca_only(&ca))).unwrap();
    client.loop_start(None).unwrap();
    client
        .connect_async(broker.host(), 30, broker.tls_port())
        .unwrap();
    let bye = expect(&rx, "DISCONNECT", |e| e.command == Command::Disconnect);
    assert_eq!(bye.error, Some(Error::TlsNotTrusted));
    client.close();
}

#[test]
fn automatic_reconnection_redoes_the_handshake() {
    let pki = pki_for_loopback();
    let broker = tls_broker(&pki, "server", false);
    let ca = pki.path("ca.pem");
    let (client, rx) = recorded_client("tls-reconnect");
    client
        .set_reconnect(Some((
            Duration::from_millis(50),
            Duration::from_millis(200),
        )))
        .unwrap();
    client.set_tls(Some(&ca_only(&ca))).unwrap();
    client
        .connect(broker.host(), 30, broker.tls_port())
        .unwrap();
    client.loop_start(None).unwrap();
    expect(&rx, "CONNACK", |e| e.command == Command::ConnAck);
    broker.restart();
    let lost = expect(&rx, "DISCONNECT", |e| e.command == Command::Disconnect);
    assert!(lost.error.is_some());
    expect(&rx, "second CONNACK", |e| e.command == Command::ConnAck);
    let mid = client
        .publish("again", b"x", QoS::AtLeastOnce, false)
        .unwrap();
    expect(&rx, "PUBACK", |e| {
        e.command == Command::PubAck && e.mid == mid
    });
    client.close();
}

#[test]
fn the_c_entry_point_reads_files_and_buffers_and_checks_its_arguments() {
    use mqtt::ffi::*;
    let pki = pki_for_loopback();
    let issued = pki.issue("client", &["client"], ExtendedKeyUsagePurpose::ClientAuth);
    let broker = tls_broker(&pki, "server", true);
    let ca_path = CString::new(pki.path("ca.pem").to_str().unwrap()).unwrap();
    let host = CString::new(broker.host()).unwrap();
    let id = CString::new("tls-ffi").unwrap();
    let alpn = CString::new("mqtt, x-test").unwrap();
    let ok = mqtt_error::MQTT_OK as i32;
    // SAFETY: valid pointers throughout; the client is freed once.
    unsafe {
        let client = mqtt_client_new(id.as_ptr(), true);
        assert!(!client.is_null());
        assert_eq!(mqtt_client_set_reconnect(client, 0, 0), ok);
        // Both a file and a buffer for the CA.
        let ca_pem = pki.ca_pem();
        let both = mqtt_tls_options {
            ca_file: ca_path.as_ptr(),
            ca_pem: ca_pem.as_ptr(),
            ca_pem_len: ca_pem.len(),
            ..common::no_tls_options()
        };
        assert_eq!(
            mqtt_client_set_tls(client, &both),
            mqtt_error::MQTT_ERR_INVALID_ARGUMENT as i32
        );
        let bad_key = mqtt_tls_options {
            cert_pem: issued.cert_pem.as_ptr(),
            cert_pem_len: issued.cert_pem.len(),
            key_pem: b"junk".as_ptr(),
            key_pem_len: 4,
            ..common::no_tls_options()
        };
        assert_eq!(
            mqtt_client_set_tls(client, &bad_key),
            mqtt_error::MQTT_ERR_TLS_KEY as i32
        );
        assert_eq!(
            mqtt_client_set_tls(std::ptr::null_mut(), &bad_key),
            mqtt_error::MQTT_ERR_INVALID_ARGUMENT as i32
        );
        let good = mqtt_tls_options {
            ca_file: ca_path.as_ptr(),
            cert_pem: issued.cert_pem.as_ptr(),
            cert_pem_len: issued.cert_pem.len(),
            key_pem: issued.key_pem.as_ptr(),
            key_pem_len: issued.key_pem.len(),
            alpn: alpn.as_ptr(),
            ..common::no_tls_options()
        };
        assert_eq!(mqtt_client_set_tls(client, &good), ok);
        assert_eq!(
            mqtt_client_connect(client, host.as_ptr(), 30, broker.tls_port()),
            ok
        );
        assert!(mqtt_client_is_connected(client));
        assert_eq!(mqtt_client_disconnect(client), ok);
        // NULL options: plain TCP again.
        assert_eq!(mqtt_client_set_tls(client, std::ptr::null()), ok);
        assert_eq!(
            mqtt_client_connect(client, host.as_ptr(), 30, broker.port()),
            ok
        );
        mqtt_client_free(client);

        let text =
            std::ffi::CStr::from_ptr(mqtt_strerror(mqtt_error::MQTT_ERR_TLS_HOSTNAME as i32));
        assert!(text.to_str().unwrap().contains("server name"));
    }
}

/// TLS on a shared reactor: one client added before it connects, one moved
/// there with its TLS session after connecting on its own; a message larger
/// than a TLS record crosses between them both ways.
#[test]
fn tls_clients_share_a_reactor_and_a_connected_one_moves_there() {
    let pki = pki_for_loopback();
    let broker = tls_broker(&pki, "server", false);
    let ca = pki.path("ca.pem");
    let reactor = mqtt::Reactor::new().unwrap();
    reactor.start().unwrap();

    let (early, early_rx) = recorded_client("tls-reactor-early");
    early.set_tls(Some(&ca_only(&ca))).unwrap();
    early.add_to_reactor(&reactor, None).unwrap();
    early
        .connect_async(broker.host(), 30, broker.tls_port())
        .unwrap();
    expect(&early_rx, "CONNACK", |e| e.command == Command::ConnAck);

    let (late, late_rx) = recorded_client("tls-reactor-late");
    late.set_tls(Some(&ca_only(&ca))).unwrap();
    late.connect(broker.host(), 30, broker.tls_port()).unwrap();
    expect(&late_rx, "CONNACK", |e| e.command == Command::ConnAck);
    late.add_to_reactor(&reactor, None).unwrap();

    for client in [&early, &late] {
        client.subscribe(&[("tlsr/#", QoS::AtLeastOnce)]).unwrap();
    }
    expect(&early_rx, "SUBACK", |e| e.command == Command::SubAck);
    expect(&late_rx, "SUBACK", |e| e.command == Command::SubAck);
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    early
        .publish("tlsr/from-early", &big, QoS::AtLeastOnce, false)
        .unwrap();
    late.publish("tlsr/from-late", b"small", QoS::AtLeastOnce, false)
        .unwrap();
    for rx in [&early_rx, &late_rx] {
        assert_eq!(message_on(rx, "tlsr/from-early").payload, big);
        assert_eq!(message_on(rx, "tlsr/from-late").payload, b"small");
    }
    early.close();
    late.close();
}

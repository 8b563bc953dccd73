//! MQTT 5 enhanced authentication against a scripted broker (mosquitto does it
//! only through a plugin): the AUTH exchange before CONNACK driven by the
//! application from its MQTT_AUTH callback, a refusal, re-authentication, and
//! AUTH packets the client must refuse.

mod common;

use std::io::Read;
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{PeerConn, ScriptedPeer, TIMEOUT, encode};
use mqtt::protocol::codec::{self, Auth, ConnAck, Decoded, Disconnect, Packet, ProtocolVersion};
use mqtt::protocol::properties::{self as prop, Properties, PropertiesBuf};
use mqtt::{Client, Command, Data, Error};

const METHOD: &str = "TEST-CHALLENGE";

/// One v5 packet read from the client, kept as bytes.
fn read_v5(conn: &mut PeerConn, pending: &mut Vec<u8>) -> Vec<u8> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Ok(Decoded::Packet(_, used)) =
            codec::decode_as(pending, usize::MAX, ProtocolVersion::V5)
        {
            return pending.drain(..used).collect();
        }
        assert!(Instant::now() < deadline, "no packet from the client");
        let mut stream = conn.stream();
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) => panic!("the client closed the connection"),
            Ok(n) => pending.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
    }
}

fn packet(bytes: &[u8]) -> Packet<'_> {
    match codec::decode_as(bytes, usize::MAX, ProtocolVersion::V5) {
        Ok(Decoded::Packet(p, _)) => p,
        other => panic!("{other:?}"),
    }
}

fn auth_props(data: &[u8]) -> PropertiesBuf {
    let mut props = PropertiesBuf::new();
    props.push_str(prop::AUTHENTICATION_METHOD, METHOD).unwrap();
    props.push_bin(prop::AUTHENTICATION_DATA, data).unwrap();
    props
}

fn send_auth(conn: &mut PeerConn, reason_code: u8, props: &PropertiesBuf) {
    conn.send(&encode(&Packet::Auth(Auth {
        reason_code,
        properties: Some(props.as_properties()),
    })));
}

fn send_connack(conn: &mut PeerConn, reason_code: u8, props: Properties<'_>) {
    conn.send(&encode(&Packet::ConnAck(ConnAck {
        session_present: false,
        reason_code,
        properties: Some(props),
    })));
}

/// The client's AUTH callbacks: the data each carried.
fn auth_client(answer: Option<&'static [u8]>) -> (Client, Receiver<(u8, Vec<u8>)>) {
    let client = Client::new("auth-client", true).unwrap();
    client.set_protocol(ProtocolVersion::V5).unwrap();
    client.set_reconnect(None).unwrap();
    client.set_connect_timeout(TIMEOUT).unwrap();
    client
        .set_connect_properties(Some(auth_props(b"client-first").as_properties()))
        .unwrap();
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    client.on(
        Command::Auth,
        Arc::new(move |c: &Client, data: &Data<'_>| {
            let got = data
                .properties
                .and_then(|p| p.bin_of(prop::AUTHENTICATION_DATA))
                .unwrap_or_default()
                .to_vec();
            let _ = tx.lock().unwrap().send((data.reason_code, got));
            if let Some(answer) = answer {
                let mut props = PropertiesBuf::new();
                props.push_bin(prop::AUTHENTICATION_DATA, answer).unwrap();
                // The method is added by the client.
                c.auth(0x18, props.as_properties()).unwrap();
            }
        }),
        None,
        0,
    );
    (client, rx)
}

fn auth_data(bytes: &[u8]) -> (u8, Vec<u8>, Option<String>) {
    let Packet::Auth(auth) = packet(bytes) else {
        panic!("not AUTH: {bytes:02x?}");
    };
    let props = auth.properties.unwrap_or_default();
    (
        auth.reason_code,
        props
            .bin_of(prop::AUTHENTICATION_DATA)
            .unwrap_or_default()
            .to_vec(),
        props.str_of(prop::AUTHENTICATION_METHOD).map(str::to_owned),
    )
}

#[test]
fn a_challenge_before_connack_is_answered_from_the_auth_callback() {
    let peer = ScriptedPeer::bind();
    let (client, auths) = auth_client(Some(b"client-final"));
    let port = peer.port();
    let connecting = std::thread::spawn(move || {
        let result = client.connect("127.0.0.1", 30, port);
        (client, result)
    });
    let mut conn = peer.accept(TIMEOUT);
    let mut pending = Vec::new();
    let connect = read_v5(&mut conn, &mut pending);
    let Packet::Connect(c) = packet(&connect) else {
        panic!("not CONNECT");
    };
    let props = c.properties.expect("a v5 CONNECT");
    assert_eq!(props.str_of(prop::AUTHENTICATION_METHOD), Some(METHOD));
    assert_eq!(
        props.bin_of(prop::AUTHENTICATION_DATA),
        Some(&b"client-first"[..])
    );

    send_auth(&mut conn, 0x18, &auth_props(b"server-first"));
    let answer = read_v5(&mut conn, &mut pending);
    assert_eq!(
        auth_data(&answer),
        (0x18, b"client-final".to_vec(), Some(METHOD.to_owned()))
    );
    send_connack(&mut conn, 0, auth_props(b"server-final").as_properties());

    let (client, result) = connecting.join().unwrap();
    assert_eq!(result, Ok(false));
    assert_eq!(
        auths.recv_timeout(TIMEOUT).unwrap(),
        (0x18, b"server-first".to_vec())
    );
    assert!(client.is_connected());

    // Re-authentication: 0x19 from us, success (0x00) from the server.
    client.loop_start(None).unwrap();
    client
        .auth(0x19, auth_props(b"again").as_properties())
        .unwrap();
    let reauth = read_v5(&mut conn, &mut pending);
    assert_eq!(
        auth_data(&reauth),
        (0x19, b"again".to_vec(), Some(METHOD.to_owned()))
    );
    send_auth(&mut conn, 0x00, &auth_props(b"welcome-back"));
    assert_eq!(
        auths.recv_timeout(TIMEOUT).unwrap(),
        (0x00, b"welcome-back".to_vec())
    );
    assert!(client.is_connected());
    client.close();
}

#[test]
fn a_refused_authentication_fails_the_connect() {
    let peer = ScriptedPeer::bind();
    let (client, _auths) = auth_client(Some(b"wrong"));
    let port = peer.port();
    let connecting = std::thread::spawn(move || client.connect("127.0.0.1", 30, port));
    let mut conn = peer.accept(TIMEOUT);
    let mut pending = Vec::new();
    read_v5(&mut conn, &mut pending);
    send_auth(&mut conn, 0x18, &auth_props(b"challenge"));
    read_v5(&mut conn, &mut pending);
    // 0x8C: bad authentication method.
    send_connack(&mut conn, 0x8C, Properties::EMPTY);
    assert_eq!(connecting.join().unwrap(), Err(Error::RefusedByBroker));
}

/// The client answers a wrong AUTH with DISCONNECT `reason`, and reports
/// ProtocolViolation.
fn refused_auth(configure_method: bool, server_props: PropertiesBuf) {
    let peer = ScriptedPeer::bind();
    let client = Client::new("auth-wrong", true).unwrap();
    client.set_protocol(ProtocolVersion::V5).unwrap();
    client.set_reconnect(None).unwrap();
    if configure_method {
        client
            .set_connect_properties(Some(auth_props(b"x").as_properties()))
            .unwrap();
    }
    let (tx, disconnects) = channel();
    let tx = Mutex::new(tx);
    client.on(
        Command::Disconnect,
        Arc::new(move |_: &Client, data: &Data<'_>| {
            let _ = tx.lock().unwrap().send((data.error, data.reason_code));
        }),
        None,
        0,
    );
    client.connect_async("127.0.0.1", 30, peer.port()).unwrap();
    client.loop_start(None).unwrap();
    let mut conn = peer.accept(TIMEOUT);
    let mut pending = Vec::new();
    read_v5(&mut conn, &mut pending);
    send_auth(&mut conn, 0x18, &server_props);
    let bye = read_v5(&mut conn, &mut pending);
    assert_eq!(
        packet(&bye),
        Packet::Disconnect(Disconnect {
            reason_code: 0x82,
            properties: Some(Properties::EMPTY),
        })
    );
    assert_eq!(
        disconnects.recv_timeout(TIMEOUT).unwrap(),
        (Some(Error::ProtocolViolation), 0x82)
    );
    client.close();
}

#[test]
fn auth_with_another_method_is_a_protocol_error() {
    let mut other = PropertiesBuf::new();
    other
        .push_str(prop::AUTHENTICATION_METHOD, "SOMETHING-ELSE")
        .unwrap();
    refused_auth(true, other);
}

#[test]
fn auth_without_enhanced_authentication_is_a_protocol_error() {
    refused_auth(false, auth_props(b"unasked"));
}

#[test]
fn auth_arguments_are_checked() {
    let client = Client::new("auth-args", true).unwrap();
    assert_eq!(
        client.auth(0x18, Properties::EMPTY),
        Err(Error::ProtocolVersion)
    );
    client.set_protocol(ProtocolVersion::V5).unwrap();
    assert_eq!(
        client.auth(0x18, Properties::EMPTY),
        Err(Error::NotConnected)
    );
    let mut reason = PropertiesBuf::new();
    reason.push_user("k", "v").unwrap();
    reason.push_int(prop::SESSION_EXPIRY_INTERVAL, 5).unwrap();
    assert_eq!(
        client.auth(0x18, reason.as_properties()),
        Err(Error::InvalidProperty)
    );
    // Authentication Data without a Method cannot be a CONNECT property.
    let mut data_only = PropertiesBuf::new();
    data_only.push_bin(prop::AUTHENTICATION_DATA, b"d").unwrap();
    assert_eq!(
        client.set_connect_properties(Some(data_only.as_properties())),
        Err(Error::InvalidProperty)
    );
}

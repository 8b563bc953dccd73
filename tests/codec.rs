//! MQTT 3.1.1 codec: round trips of all 14 packets, hand-written byte vectors
//! from the specification, and one test per validation rule.

use mqtt::protocol::codec::{
    CodecError, ConnAck, Connect, ConnectReturnCode, DEFAULT_MAX_PACKET_SIZE, Decoded, LastWill,
    MAX_REMAINING_LENGTH, Packet, Publish, QoS, SUBACK_FAILURE, SubAck, Subscribe, Unsubscribe,
    decode, decode_body, parse_fixed_header,
};

// ---------------------------------------------------------------- helpers

fn encode(packet: &Packet<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let n = packet
        .encode(&mut out)
        .unwrap_or_else(|e| panic!("encoding {packet:?}: {e}"));
    assert_eq!(
        n,
        out.len(),
        "encode must return the number of bytes written"
    );
    assert_eq!(
        packet.encoded_len(),
        Ok(n),
        "encoded_len disagrees with encode"
    );
    out
}

fn decode_ok(bytes: &[u8]) -> Packet<'_> {
    match decode(bytes, DEFAULT_MAX_PACKET_SIZE) {
        Ok(Decoded::Packet(p, used)) => {
            assert_eq!(
                used,
                bytes.len(),
                "packet did not use every byte of {bytes:02x?}"
            );
            p
        }
        other => panic!("{bytes:02x?} decoded as {other:?}"),
    }
}

fn decode_err(bytes: &[u8]) -> CodecError {
    match decode(bytes, DEFAULT_MAX_PACKET_SIZE) {
        Err(e) => e,
        Ok(d) => panic!("{bytes:02x?} decoded as {d:?}, expected an error"),
    }
}

/// Encode, decode, compare; also every proper prefix of the encoding is Incomplete.
fn round_trip(packet: Packet<'_>) -> Vec<u8> {
    let bytes = encode(&packet);
    assert_eq!(decode_ok(&bytes), packet, "round trip of {bytes:02x?}");
    for cut in 0..bytes.len() {
        match decode(&bytes[..cut], DEFAULT_MAX_PACKET_SIZE) {
            Ok(Decoded::Incomplete(n)) => {
                assert!(n >= 1 && n <= bytes.len() - cut, "Incomplete({n}) at {cut}")
            }
            other => panic!("prefix {cut} of {bytes:02x?} decoded as {other:?}"),
        }
    }
    bytes
}

/// Packet = fixed header byte + single-byte remaining length + body.
fn frame(byte1: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128);
    let mut v = vec![byte1, body.len() as u8];
    v.extend_from_slice(body);
    v
}

/// 2-byte big-endian length prefixed field.
fn field(bytes: &[u8]) -> Vec<u8> {
    let mut v = (bytes.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(bytes);
    v
}

fn connect_body(flags: u8, rest: &[u8]) -> Vec<u8> {
    let mut v = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, flags, 0x00, 0x3c];
    v.extend_from_slice(rest);
    v
}

fn minimal_connect() -> Connect<'static> {
    Connect {
        client_id: "client",
        clean_session: true,
        keep_alive: 60,
        will: None,
        username: None,
        password: None,
        properties: None,
    }
}

fn publish<'a>(qos: QoS, pkid: u16, topic: &'a str, payload: &'a [u8]) -> Publish<'a> {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic,
        pkid,
        payload,
        properties: None,
    }
}

// ------------------------------------------------------------ round trips

#[test]
fn connect_round_trips_minimal() {
    let bytes = round_trip(Packet::Connect(minimal_connect()));
    assert_eq!(bytes[0], 0x10);
    // Flags: only clean session.
    assert_eq!(bytes[9], 0b0000_0010);
}

#[test]
fn connect_round_trips_empty_client_id_and_no_clean_session() {
    let bytes = round_trip(Packet::Connect(Connect {
        client_id: "",
        clean_session: false,
        keep_alive: 0,
        ..minimal_connect()
    }));
    assert_eq!(
        bytes,
        [0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 4, 0, 0, 0, 0, 0]
    );
}

#[test]
fn connect_round_trips_every_will_qos_and_retain() {
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        for retain in [false, true] {
            let bytes = round_trip(Packet::Connect(Connect {
                will: Some(LastWill {
                    topic: "clients/gone",
                    payload: b"bye\x00\xff",
                    qos,
                    retain,
                    properties: None,
                }),
                ..minimal_connect()
            }));
            let expect_flags = 0b10 | 0b100 | ((qos as u8) << 3) | ((retain as u8) << 5);
            assert_eq!(bytes[9], expect_flags, "qos {qos:?} retain {retain}");
        }
    }
}

#[test]
fn connect_round_trips_username_only() {
    let bytes = round_trip(Packet::Connect(Connect {
        username: Some("user"),
        ..minimal_connect()
    }));
    assert_eq!(bytes[9], 0b1000_0010);
    assert!(bytes.ends_with(&[0, 4, b'u', b's', b'e', b'r']));
}

#[test]
fn connect_round_trips_username_and_binary_password() {
    let bytes = round_trip(Packet::Connect(Connect {
        username: Some("user"),
        password: Some(&[0x00, 0xff, 0xc3, 0x28]),
        ..minimal_connect()
    }));
    assert_eq!(bytes[9], 0b1100_0010);
    assert!(bytes.ends_with(&[0, 4, 0x00, 0xff, 0xc3, 0x28]));
}

#[test]
fn connect_round_trips_everything_and_empty_fields() {
    round_trip(Packet::Connect(Connect {
        client_id: "ünïcødé-€-𝄞",
        clean_session: false,
        keep_alive: u16::MAX,
        will: Some(LastWill {
            topic: "a",
            payload: b"",
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: None,
        }),
        username: Some(""),
        password: Some(b""),
        properties: None,
    }));
}

#[test]
fn connect_round_trips_max_length_client_id() {
    let id = "x".repeat(65_535);
    let bytes = round_trip(Packet::Connect(Connect {
        client_id: &id,
        ..minimal_connect()
    }));
    // 3-byte remaining length, then 10 bytes of variable header.
    assert_eq!(&bytes[1..4], &[0x8b, 0x80, 0x04]);
    assert_eq!(&bytes[14..16], &[0xff, 0xff]);
}

#[test]
fn connack_round_trips_every_code() {
    for code in 0..=5u8 {
        let code = ConnectReturnCode::from_u8(code).unwrap();
        let bytes = round_trip(Packet::ConnAck(ConnAck::new(false, code)));
        assert_eq!(bytes, [0x20, 0x02, 0x00, code as u8]);
    }
    let bytes = round_trip(Packet::ConnAck(ConnAck::new(
        true,
        ConnectReturnCode::Accepted,
    )));
    assert_eq!(bytes, [0x20, 0x02, 0x01, 0x00]);
}

#[test]
fn publish_round_trips_every_flag_combination() {
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        for dup in [false, true] {
            if dup && qos == QoS::AtMostOnce {
                continue;
            }
            for retain in [false, true] {
                let pkid = if qos == QoS::AtMostOnce { 0 } else { 0xbeef };
                let bytes = round_trip(Packet::Publish(Publish {
                    dup,
                    qos,
                    retain,
                    topic: "sensors/temp",
                    pkid,
                    payload: b"21.5",
                    properties: None,
                }));
                let flags = ((dup as u8) << 3) | ((qos as u8) << 1) | retain as u8;
                assert_eq!(bytes[0], 0x30 | flags);
                if qos != QoS::AtMostOnce {
                    // Packet id right after the topic, big-endian.
                    assert_eq!(&bytes[16..18], &[0xbe, 0xef]);
                }
            }
        }
    }
}

#[test]
fn publish_round_trips_empty_payload() {
    let bytes = round_trip(Packet::Publish(publish(QoS::AtMostOnce, 0, "t", b"")));
    assert_eq!(bytes, [0x30, 0x03, 0x00, 0x01, b't']);
    let bytes = round_trip(Packet::Publish(publish(QoS::ExactlyOnce, 7, "t", b"")));
    assert_eq!(bytes, [0x34, 0x05, 0x00, 0x01, b't', 0x00, 0x07]);
}

#[test]
fn publish_round_trips_binary_payload_and_odd_topics() {
    let payload: Vec<u8> = (0..=255).collect();
    for topic in ["/", "a//b", "$SYS/x", " spaced topic ", "ü/€"] {
        round_trip(Packet::Publish(publish(
            QoS::AtLeastOnce,
            1,
            topic,
            &payload,
        )));
    }
}

#[test]
fn ack_packets_round_trip() {
    type Ctor = fn(u16) -> Packet<'static>;
    let cases: [(Ctor, u8); 5] = [
        (Packet::puback, 0x40),
        (Packet::pubrec, 0x50),
        (Packet::pubrel, 0x62),
        (Packet::pubcomp, 0x70),
        (Packet::unsuback, 0xb0),
    ];
    for (ctor, byte1) in cases {
        for id in [1u16, 0x0102, 0xff00, u16::MAX] {
            let bytes = round_trip(ctor(id));
            assert_eq!(bytes, [byte1, 0x02, (id >> 8) as u8, id as u8]);
        }
    }
}

#[test]
fn subscribe_round_trips_several_filters() {
    let bytes = round_trip(Packet::Subscribe(Subscribe {
        pkid: 10,
        filters: vec![
            ("a/b", QoS::AtMostOnce.into()),
            ("sport/+/player1", QoS::AtLeastOnce.into()),
            ("#", QoS::ExactlyOnce.into()),
            ("$SYS/#", QoS::AtLeastOnce.into()),
        ],
        properties: None,
    }));
    assert_eq!(bytes[0], 0x82);
    assert_eq!(&bytes[2..4], &[0x00, 0x0a]);
    assert_eq!(&bytes[4..10], &[0x00, 0x03, b'a', b'/', b'b', 0x00]);
}

#[test]
fn suback_round_trips_with_failure_code() {
    let bytes = round_trip(Packet::SubAck(SubAck {
        pkid: 0x1234,
        return_codes: &[0, 1, 2, SUBACK_FAILURE],
        properties: None,
    }));
    assert_eq!(bytes, [0x90, 0x06, 0x12, 0x34, 0x00, 0x01, 0x02, 0x80]);
}

#[test]
fn unsubscribe_round_trips_several_filters() {
    let bytes = round_trip(Packet::Unsubscribe(Unsubscribe {
        pkid: 0x0203,
        filters: vec!["a/b", "c/+", "#"],
        properties: None,
    }));
    assert_eq!(
        bytes,
        [
            0xa2, 0x0f, 0x02, 0x03, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x03, b'c', b'/', b'+',
            0x00, 0x01, b'#'
        ]
    );
}

#[test]
fn empty_packets_round_trip() {
    assert_eq!(round_trip(Packet::PingReq), [0xc0, 0x00]);
    assert_eq!(round_trip(Packet::PingResp), [0xd0, 0x00]);
    assert_eq!(round_trip(Packet::disconnect()), [0xe0, 0x00]);
}

#[test]
fn packet_type_numbers() {
    let sub = Subscribe {
        pkid: 1,
        filters: vec![("a", QoS::AtMostOnce.into())],
        properties: None,
    };
    let unsub = Unsubscribe {
        pkid: 1,
        filters: vec!["a"],
        properties: None,
    };
    let packets = [
        Packet::Connect(minimal_connect()),
        Packet::ConnAck(ConnAck::new(false, ConnectReturnCode::Accepted)),
        Packet::Publish(publish(QoS::AtMostOnce, 0, "t", b"")),
        Packet::puback(1),
        Packet::pubrec(1),
        Packet::pubrel(1),
        Packet::pubcomp(1),
        Packet::Subscribe(sub),
        Packet::SubAck(SubAck {
            pkid: 1,
            return_codes: &[0],
            properties: None,
        }),
        Packet::Unsubscribe(unsub),
        Packet::unsuback(1),
        Packet::PingReq,
        Packet::PingResp,
        Packet::disconnect(),
    ];
    for (i, p) in packets.iter().enumerate() {
        assert_eq!(p.packet_type() as usize, i + 1);
        assert_eq!(round_trip(p.clone())[0] >> 4, p.packet_type());
    }
}

#[test]
fn decoding_borrows_from_the_input() {
    let bytes = encode(&Packet::Publish(publish(
        QoS::AtMostOnce,
        0,
        "t/x",
        b"payload",
    )));
    let Packet::Publish(p) = decode_ok(&bytes) else {
        panic!()
    };
    let range = bytes.as_ptr_range();
    assert!(range.contains(&p.payload.as_ptr()));
    assert!(range.contains(&p.topic.as_ptr()));
}

#[test]
fn several_packets_in_one_buffer_decode_one_at_a_time() {
    let mut stream = encode(&Packet::puback(5));
    stream.extend(encode(&Packet::PingReq));
    stream.extend(encode(&Packet::Publish(publish(
        QoS::AtMostOnce,
        0,
        "t",
        b"x",
    ))));
    let mut rest = &stream[..];
    let mut got = Vec::new();
    while let Ok(Decoded::Packet(p, used)) = decode(rest, DEFAULT_MAX_PACKET_SIZE) {
        got.push((p, used));
        rest = &rest[used..];
    }
    assert!(rest.is_empty());
    assert_eq!(
        got,
        [
            (Packet::puback(5), 4),
            (Packet::PingReq, 2),
            (Packet::Publish(publish(QoS::AtMostOnce, 0, "t", b"x")), 6),
        ]
    );
}

// ---------------------------------------------- byte vectors from the spec

/// Figure 3.6 of MQTT 3.1.1 (protocol name "MQTT", level 4, flags 0xCE =
/// user name, password, will QoS 1, will, clean session; keep alive 10),
/// completed with a payload in the order of section 3.1.3.
#[test]
fn spec_connect_example_decodes_and_encodes_byte_for_byte() {
    let bytes = [
        0x10, 0x1e, // CONNECT, remaining length 30
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
        0x04, // protocol level 4
        0xce, // connect flags
        0x00, 0x0a, // keep alive 10
        0x00, 0x02, b'c', b'1', // client id
        0x00, 0x03, b'w', b'/', b't', // will topic
        0x00, 0x03, b'b', b'y', b'e', // will message
        0x00, 0x01, b'u', // user name
        0x00, 0x01, b'p', // password
    ];
    let expected = Packet::Connect(Connect {
        client_id: "c1",
        clean_session: true,
        keep_alive: 10,
        will: Some(LastWill {
            topic: "w/t",
            payload: b"bye",
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
        }),
        username: Some("u"),
        password: Some(b"p"),
        properties: None,
    });
    assert_eq!(decode_ok(&bytes), expected);
    assert_eq!(encode(&expected), bytes);
}

#[test]
fn connect_with_empty_will_payload_encodes_its_two_length_bytes() {
    let packet = Packet::Connect(Connect {
        client_id: "c",
        clean_session: true,
        keep_alive: 60,
        will: Some(LastWill {
            topic: "t",
            payload: b"",
            qos: QoS::AtMostOnce,
            retain: false,
            properties: None,
        }),
        username: None,
        password: None,
        properties: None,
    });
    let expected = [
        0x10, 0x12, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x06, 0x00, 0x3c, 0x00, 0x01, b'c',
        0x00, 0x01, b't', 0x00, 0x00,
    ];
    assert_eq!(encode(&packet), expected);
    assert_eq!(decode_ok(&expected), packet);
    // Without the two zero bytes the packet is truncated, not silently accepted.
    let mut short = expected[..expected.len() - 2].to_vec();
    short[1] -= 2;
    assert_eq!(decode_err(&short), CodecError::Truncated);
}

#[test]
fn sixteen_bit_fields_are_big_endian() {
    // Keep alive 0x1234.
    let bytes = encode(&Packet::Connect(Connect {
        keep_alive: 0x1234,
        ..minimal_connect()
    }));
    assert_eq!(&bytes[10..12], &[0x12, 0x34]);
    // Packet identifier.
    assert_eq!(encode(&Packet::puback(0x1234)), [0x40, 0x02, 0x12, 0x34]);
    assert_eq!(decode_ok(&[0x40, 0x02, 0x12, 0x34]), Packet::puback(0x1234));
    assert_eq!(decode_ok(&[0x40, 0x02, 0x00, 0x01]), Packet::puback(1));
    assert_eq!(decode_ok(&[0x40, 0x02, 0x01, 0x00]), Packet::puback(256));
    // String length 300 = 0x012c.
    let topic = "t".repeat(300);
    let bytes = encode(&Packet::Publish(publish(QoS::AtMostOnce, 0, &topic, b"")));
    assert_eq!(&bytes[..5], &[0x30, 0xae, 0x02, 0x01, 0x2c]);
    // Decoding: the high byte comes first.
    let mut wire = vec![0x30, 0xae, 0x02, 0x01, 0x2c];
    wire.extend(topic.as_bytes());
    let Packet::Publish(p) = decode_ok(&wire) else {
        panic!()
    };
    assert_eq!(p.topic.len(), 300);
    // Keep alive decoded big-endian.
    let wire = frame(
        0x10,
        &[0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0x01, 0x02, 0, 0],
    );
    let Packet::Connect(c) = decode_ok(&wire) else {
        panic!()
    };
    assert_eq!(c.keep_alive, 0x0102);
}

/// Table 2.4: remaining length boundaries.
const REMAINING_LENGTH_EXAMPLES: [(usize, &[u8]); 8] = [
    (0, &[0x00]),
    (127, &[0x7f]),
    (128, &[0x80, 0x01]),
    (16_383, &[0xff, 0x7f]),
    (16_384, &[0x80, 0x80, 0x01]),
    (2_097_151, &[0xff, 0xff, 0x7f]),
    (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
    (268_435_455, &[0xff, 0xff, 0xff, 0x7f]),
];

#[test]
fn remaining_length_table_decodes() {
    for (value, encoded) in REMAINING_LENGTH_EXAMPLES {
        let mut bytes = vec![0x30];
        bytes.extend_from_slice(encoded);
        let header = parse_fixed_header(&bytes, usize::MAX).unwrap().unwrap();
        assert_eq!(header.remaining_length, value, "{encoded:02x?}");
        assert_eq!(header.header_len, 1 + encoded.len());
        assert_eq!(header.packet_type(), 3);
        assert_eq!(header.frame_len(), 1 + encoded.len() + value);
        // The announced body is then awaited in full; an empty PUBLISH body
        // is complete but has no topic.
        let expected = if value == 0 {
            Err(CodecError::Truncated)
        } else {
            Ok(Decoded::Incomplete(value))
        };
        assert_eq!(decode(&bytes, usize::MAX), expected, "{encoded:02x?}");
    }
}

#[test]
fn remaining_length_table_encodes_and_decodes_whole_packets() {
    for (value, encoded) in REMAINING_LENGTH_EXAMPLES {
        if !(3..=2_097_152).contains(&value) {
            continue;
        }
        // A PUBLISH with topic "t" (3 bytes) and value - 3 bytes of payload.
        let payload = vec![0x5a; value - 3];
        let packet = Packet::Publish(publish(QoS::AtMostOnce, 0, "t", &payload));
        let bytes = encode(&packet);
        assert_eq!(
            &bytes[1..1 + encoded.len()],
            encoded,
            "remaining length {value}"
        );
        assert_eq!(bytes.len(), 1 + encoded.len() + value);
        assert_eq!(decode_ok(&bytes), packet);
    }
    // Remaining length 0 and 2 via other packets.
    assert_eq!(encode(&Packet::PingReq), [0xc0, 0x00]);
    assert_eq!(decode_ok(&[0xc0, 0x00]), Packet::PingReq);
}

#[test]
fn largest_remaining_length_is_encodable_and_one_more_is_not() {
    // vec![0; n] maps zeroed pages lazily; neither call below writes them.
    let payload = vec![0u8; MAX_REMAINING_LENGTH - 3];
    let packet = Packet::Publish(publish(QoS::AtMostOnce, 0, "t", &payload));
    assert_eq!(packet.encoded_len(), Ok(1 + 4 + MAX_REMAINING_LENGTH));
    drop(payload);

    let payload = vec![0u8; MAX_REMAINING_LENGTH - 2];
    let packet = Packet::Publish(publish(QoS::AtMostOnce, 0, "t", &payload));
    assert_eq!(packet.encoded_len(), Err(CodecError::PacketTooLongToEncode));
    let mut out = vec![0xaa, 0xbb];
    assert_eq!(
        packet.encode(&mut out),
        Err(CodecError::PacketTooLongToEncode)
    );
    assert_eq!(out, [0xaa, 0xbb]);
}

// ------------------------------------------------------- validation rules

#[test]
fn fifth_remaining_length_byte_is_malformed() {
    assert_eq!(
        decode_err(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x7f]),
        CodecError::MalformedRemainingLength
    );
    // Known from the 4th continuation bit alone, without waiting for a 5th byte.
    assert_eq!(
        decode_err(&[0x30, 0x80, 0x80, 0x80, 0x80]),
        CodecError::MalformedRemainingLength
    );
    assert_eq!(
        parse_fixed_header(&[0xc0, 0x80, 0x80, 0x80, 0x80, 0x00], usize::MAX),
        Err(CodecError::MalformedRemainingLength)
    );
}

#[test]
fn reserved_packet_type_0_is_rejected() {
    assert_eq!(decode_err(&[0x00, 0x00]), CodecError::ReservedPacketType(0));
    // From the first byte alone.
    assert_eq!(decode_err(&[0x00]), CodecError::ReservedPacketType(0));
    assert_eq!(
        decode_body(0x00, &[]),
        Err(CodecError::ReservedPacketType(0))
    );
}

#[test]
fn reserved_packet_type_15_is_rejected() {
    assert_eq!(
        decode_err(&[0xf0, 0x00]),
        CodecError::ReservedPacketType(15)
    );
    assert_eq!(decode_err(&[0xf0]), CodecError::ReservedPacketType(15));
    assert_eq!(
        decode_body(0xf0, &[]),
        Err(CodecError::ReservedPacketType(15))
    );
}

/// A valid body for each non-PUBLISH type, and the flags the spec fixes.
fn valid_bodies() -> Vec<(u8, u8, Vec<u8>)> {
    vec![
        (1, 0, connect_body(0x02, &field(b"id"))),
        (2, 0, vec![0, 0]),
        (4, 0, vec![0, 1]),
        (5, 0, vec![0, 1]),
        (6, 0b0010, vec![0, 1]),
        (7, 0, vec![0, 1]),
        (8, 0b0010, vec![0, 1, 0, 1, b'a', 1]),
        (9, 0, vec![0, 1, 0]),
        (10, 0b0010, vec![0, 1, 0, 1, b'a']),
        (11, 0, vec![0, 1]),
        (12, 0, vec![]),
        (13, 0, vec![]),
        (14, 0, vec![]),
    ]
}

#[test]
fn wrong_fixed_header_flags_are_rejected_for_every_type() {
    for (packet_type, required, body) in valid_bodies() {
        let ok = frame(packet_type << 4 | required, &body);
        assert_eq!(decode_ok(&ok).packet_type(), packet_type);
        for flags in 0..16u8 {
            if flags == required {
                continue;
            }
            assert_eq!(
                decode_err(&frame(packet_type << 4 | flags, &body)),
                CodecError::InvalidFlags { packet_type, flags },
                "type {packet_type} flags {flags:#06b}"
            );
        }
    }
}

#[test]
fn pubrel_subscribe_unsubscribe_with_zero_flags_are_rejected() {
    // The common implementation mistake: sending these with flags 0.
    for (byte1, body) in [
        (0x60, vec![0, 1]),
        (0x80, vec![0, 1, 0, 1, b'a', 0]),
        (0xa0, vec![0, 1, 0, 1, b'a']),
    ] {
        assert_eq!(
            decode_err(&frame(byte1, &body)),
            CodecError::InvalidFlags {
                packet_type: byte1 >> 4,
                flags: 0
            }
        );
    }
}

#[test]
fn invalid_utf8_is_rejected() {
    for bad in [
        &[0xc3, 0x28][..],         // bad continuation
        &[0xc0, 0xaf],             // overlong '/'
        &[0xed, 0xa0, 0x80],       // UTF-16 surrogate U+D800
        &[0xff],                   // never valid
        &[b'a', 0xe2, 0x82],       // truncated sequence
        &[0xf4, 0x90, 0x80, 0x80], // above U+10FFFF
    ] {
        // PUBLISH topic.
        let mut body = field(bad);
        body.push(b'x');
        assert_eq!(decode_err(&frame(0x30, &body)), CodecError::InvalidUtf8);
        // CONNECT client id.
        assert_eq!(
            decode_err(&frame(0x10, &connect_body(0x02, &field(bad)))),
            CodecError::InvalidUtf8
        );
        // CONNECT user name.
        let mut payload = field(b"id");
        payload.extend(field(bad));
        assert_eq!(
            decode_err(&frame(0x10, &connect_body(0x82, &payload))),
            CodecError::InvalidUtf8
        );
        // SUBSCRIBE filter.
        let mut body = vec![0, 1];
        body.extend(field(bad));
        body.push(0);
        assert_eq!(decode_err(&frame(0x82, &body)), CodecError::InvalidUtf8);
        // UNSUBSCRIBE filter.
        let mut body = vec![0, 1];
        body.extend(field(bad));
        assert_eq!(decode_err(&frame(0xa2, &body)), CodecError::InvalidUtf8);
    }
    // A non-UTF-8 password is binary data and fine.
    let mut payload = field(b"id");
    payload.extend(field(b"u"));
    payload.extend(field(&[0xff, 0xc3, 0x28]));
    let wire = frame(0x10, &connect_body(0xc2, &payload));
    let Packet::Connect(c) = decode_ok(&wire) else {
        panic!()
    };
    assert_eq!(c.password, Some(&[0xff, 0xc3, 0x28][..]));
}

#[test]
fn nul_character_in_strings_is_rejected() {
    // PUBLISH topic.
    assert_eq!(
        decode_err(&frame(0x30, &field(b"a\0b"))),
        CodecError::NulInString
    );
    // CONNECT client id, will topic, user name.
    assert_eq!(
        decode_err(&frame(0x10, &connect_body(0x02, &field(b"\0")))),
        CodecError::NulInString
    );
    let mut payload = field(b"id");
    payload.extend(field(b"w\0"));
    payload.extend(field(b""));
    assert_eq!(
        decode_err(&frame(0x10, &connect_body(0x06, &payload))),
        CodecError::NulInString
    );
    let mut payload = field(b"id");
    payload.extend(field(b"us\0er"));
    assert_eq!(
        decode_err(&frame(0x10, &connect_body(0x82, &payload))),
        CodecError::NulInString
    );
    // SUBSCRIBE / UNSUBSCRIBE filters.
    assert_eq!(
        decode_err(&frame(0x82, &[0, 1, 0, 2, b'a', 0, 0])),
        CodecError::NulInString
    );
    assert_eq!(
        decode_err(&frame(0xa2, &[0, 1, 0, 2, 0, b'a'])),
        CodecError::NulInString
    );
    // A NUL in a PUBLISH payload is just data.
    let wire = frame(0x30, &[0, 1, b't', 0, 0]);
    let Packet::Publish(p) = decode_ok(&wire) else {
        panic!()
    };
    assert_eq!(p.payload, [0, 0]);
}

#[test]
fn publish_qos_3_is_rejected() {
    for byte1 in [0x36, 0x37, 0x3e, 0x3f] {
        assert_eq!(
            decode_err(&frame(byte1, &[0, 1, b't', 0, 1])),
            CodecError::InvalidQoS(3)
        );
    }
}

#[test]
fn publish_dup_with_qos_0_is_rejected() {
    for byte1 in [0x38, 0x39] {
        assert_eq!(
            decode_err(&frame(byte1, &[0, 1, b't', b'x'])),
            CodecError::InvalidFlags {
                packet_type: 3,
                flags: byte1 & 0x0f
            }
        );
    }
    // DUP with QoS 1 is fine.
    let wire = frame(0x3a, &[0, 1, b't', 0, 1]);
    let Packet::Publish(p) = decode_ok(&wire) else {
        panic!()
    };
    assert!(p.dup);
}

#[test]
fn zero_packet_id_is_rejected_where_required() {
    let cases: [(u8, &[u8]); 10] = [
        (0x32, &[0, 1, b't', 0, 0, b'p']), // PUBLISH QoS 1
        (0x34, &[0, 1, b't', 0, 0]),       // PUBLISH QoS 2
        (0x40, &[0, 0]),                   // PUBACK
        (0x50, &[0, 0]),                   // PUBREC
        (0x62, &[0, 0]),                   // PUBREL
        (0x70, &[0, 0]),                   // PUBCOMP
        (0x82, &[0, 0, 0, 1, b'a', 0]),    // SUBSCRIBE
        (0x90, &[0, 0, 0]),                // SUBACK
        (0xa2, &[0, 0, 0, 1, b'a']),       // UNSUBSCRIBE
        (0xb0, &[0, 0]),                   // UNSUBACK
    ];
    for (byte1, body) in cases {
        assert_eq!(
            decode_err(&frame(byte1, body)),
            CodecError::ZeroPacketId,
            "byte1 {byte1:#04x}"
        );
        // The same packet with id 1 is accepted.
        let mut fixed = body.to_vec();
        let at = if byte1 >> 4 == 3 { 3 } else { 0 };
        fixed[at + 1] = 1;
        decode_ok(&frame(byte1, &fixed));
    }
    // A QoS 0 PUBLISH has no packet identifier: those two bytes are payload.
    let wire = frame(0x30, &[0, 1, b't', 0, 0]);
    let Packet::Publish(p) = decode_ok(&wire) else {
        panic!()
    };
    assert_eq!((p.pkid, p.payload), (0, &[0u8, 0][..]));
}

#[test]
fn connack_code_6_and_above_is_rejected() {
    for code in 6..=255u8 {
        assert_eq!(
            decode_err(&[0x20, 0x02, 0x00, code]),
            CodecError::InvalidConnackCode(code)
        );
    }
}

#[test]
fn connack_reserved_flag_bits_are_rejected() {
    for bit in 1..8 {
        let flags = 1u8 << bit;
        assert_eq!(
            decode_err(&[0x20, 0x02, flags, 0x00]),
            CodecError::InvalidConnackFlags(flags)
        );
    }
    assert_eq!(
        decode_err(&[0x20, 0x02, 0xff, 0x00]),
        CodecError::InvalidConnackFlags(0xff)
    );
    // Session present together with a refusal (3.2.2.2).
    assert_eq!(
        decode_err(&[0x20, 0x02, 0x01, 0x05]),
        CodecError::InvalidConnackFlags(0x01)
    );
}

#[test]
fn connect_protocol_name_and_level_are_checked() {
    // MQTT 3.1's "MQIsdp" with level 3.
    let mut body = field(b"MQIsdp");
    body.extend([3, 2, 0, 60]);
    body.extend(field(b"id"));
    assert_eq!(
        decode_err(&frame(0x10, &body)),
        CodecError::InvalidProtocolName
    );
    let mut body = connect_body(0x02, &field(b"id"));
    body[2] = b'm';
    assert_eq!(
        decode_err(&frame(0x10, &body)),
        CodecError::InvalidProtocolName
    );
    for level in [0, 3, 6, 255] {
        let mut body = connect_body(0x02, &field(b"id"));
        body[6] = level;
        assert_eq!(
            decode_err(&frame(0x10, &body)),
            CodecError::InvalidProtocolLevel(level)
        );
    }
    // Level 5 is MQTT 5, decoded as such even by the 3.1.1 `decode`: this
    // body lacks the property length, so its client id overruns the packet.
    let mut body = connect_body(0x02, &field(b"id"));
    body[6] = 5;
    assert_eq!(decode_err(&frame(0x10, &body)), CodecError::Truncated);
}

#[test]
fn connect_invalid_flags_are_rejected() {
    let id = field(b"id");
    for flags in [
        0b0000_0011, // reserved bit
        0b0000_1010, // will QoS 1 without will flag
        0b0001_0010, // will QoS 2 without will flag
        0b0010_0010, // will retain without will flag
        0b0001_1110, // will QoS 3
        0b0100_0010, // password without user name
    ] {
        assert_eq!(
            decode_err(&frame(0x10, &connect_body(flags, &id))),
            CodecError::InvalidConnectFlags(flags),
            "flags {flags:#010b}"
        );
    }
}

#[test]
fn trailing_bytes_are_rejected() {
    let cases: [(u8, &[u8]); 9] = [
        (0x20, &[0, 0, 0]),
        (0x40, &[0, 1, 0]),
        (0x50, &[0, 1, 0]),
        (0x62, &[0, 1, 0]),
        (0x70, &[0, 1, 0]),
        (0xb0, &[0, 1, 0]),
        (0xc0, &[0]),
        (0xd0, &[0]),
        (0xe0, &[0]),
    ];
    for (byte1, body) in cases {
        assert_eq!(
            decode_err(&frame(byte1, body)),
            CodecError::TrailingBytes,
            "byte1 {byte1:#04x}"
        );
    }
    let mut body = connect_body(0x02, &field(b"id"));
    body.push(0);
    assert_eq!(decode_err(&frame(0x10, &body)), CodecError::TrailingBytes);
}

#[test]
fn truncated_fields_are_rejected() {
    let cases: [(u8, &[u8]); 13] = [
        (0x20, &[0]),                // CONNACK: code missing
        (0x20, &[]),                 // CONNACK: empty
        (0x40, &[0]),                // PUBACK: half an id
        (0x62, &[]),                 // PUBREL: no id
        (0xb0, &[1]),                // UNSUBACK
        (0x30, &[]),                 // PUBLISH: no topic length
        (0x30, &[0]),                // PUBLISH: half a topic length
        (0x30, &[0, 5, b'a', b'b']), // PUBLISH: topic beyond the packet
        (0x32, &[0, 1, b't']),       // PUBLISH QoS 1: no packet id
        (0x32, &[0, 1, b't', 0]),    // PUBLISH QoS 1: half a packet id
        (0x82, &[0, 1, 0, 1, b'a']), // SUBSCRIBE: options byte missing
        (0x82, &[0, 1, 0, 9, b'a']), // SUBSCRIBE: filter beyond the packet
        (0xa2, &[0, 1, 0, 2, b'a']), // UNSUBSCRIBE: filter beyond the packet
    ];
    for (byte1, body) in cases {
        assert_eq!(
            decode_err(&frame(byte1, body)),
            CodecError::Truncated,
            "{byte1:#04x} {body:02x?}"
        );
    }
    // Every proper prefix of a full CONNECT body, announced as the whole body.
    let full = Packet::Connect(Connect {
        client_id: "cid",
        clean_session: false,
        keep_alive: 5,
        will: Some(LastWill {
            topic: "w",
            payload: b"wp",
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: None,
        }),
        username: Some("u"),
        password: Some(b"pw"),
        properties: None,
    });
    let bytes = encode(&full);
    let body = &bytes[2..];
    for cut in 0..body.len() {
        assert_eq!(
            decode_err(&frame(0x10, &body[..cut])),
            CodecError::Truncated,
            "CONNECT body cut at {cut}"
        );
        assert_eq!(decode_body(0x10, &body[..cut]), Err(CodecError::Truncated));
    }
    assert_eq!(decode_body(0x10, body), Ok(full));
}

#[test]
fn suback_invalid_return_codes_are_rejected() {
    for code in [3u8, 4, 0x7f, 0x81, 0xff] {
        assert_eq!(
            decode_err(&frame(0x90, &[0, 1, 0, code])),
            CodecError::InvalidSubackCode(code)
        );
    }
}

#[test]
fn empty_subscribe_unsubscribe_and_suback_are_rejected() {
    assert_eq!(decode_err(&[0x82, 0x02, 0, 1]), CodecError::EmptyPayload);
    assert_eq!(decode_err(&[0xa2, 0x02, 0, 1]), CodecError::EmptyPayload);
    assert_eq!(decode_err(&[0x90, 0x02, 0, 1]), CodecError::EmptyPayload);
}

#[test]
fn subscribe_requested_qos_is_checked() {
    for options in [3u8, 4, 0x80, 0xfd] {
        assert_eq!(
            decode_err(&frame(0x82, &[0, 1, 0, 1, b'a', options])),
            CodecError::InvalidQoS(options)
        );
    }
}

#[test]
fn wildcards_in_publish_topic_are_rejected() {
    for topic in [&b"a/+"[..], b"+", b"#", b"a/#", b"sport/tennis#", b"a+b"] {
        assert_eq!(
            decode_err(&frame(0x30, &field(topic))),
            CodecError::InvalidTopic,
            "{}",
            String::from_utf8_lossy(topic)
        );
    }
    // An empty topic name is not allowed either.
    assert_eq!(
        decode_err(&frame(0x30, &field(b""))),
        CodecError::InvalidTopic
    );
    // Nor in a will topic.
    let mut payload = field(b"id");
    payload.extend(field(b"w/#"));
    payload.extend(field(b""));
    assert_eq!(
        decode_err(&frame(0x10, &connect_body(0x06, &payload))),
        CodecError::InvalidTopic
    );
}

#[test]
fn invalid_topic_filters_are_rejected() {
    for filter in [&b"a/#/b"[..], b"a+", b"#a", b"", b"sport/tennis#"] {
        let mut body = vec![0, 1];
        body.extend(field(filter));
        assert_eq!(
            decode_err(&frame(0xa2, &body)),
            CodecError::InvalidTopic,
            "UNSUBSCRIBE {filter:?}"
        );
        body.push(0);
        assert_eq!(
            decode_err(&frame(0x82, &body)),
            CodecError::InvalidTopic,
            "SUBSCRIBE {filter:?}"
        );
    }
}

#[test]
fn huge_announced_packet_is_rejected_from_the_first_five_bytes() {
    let header = [0x30, 0xff, 0xff, 0xff, 0x7f];
    assert_eq!(
        decode_err(&header),
        CodecError::PacketTooLarge {
            size: 5 + MAX_REMAINING_LENGTH,
            max: DEFAULT_MAX_PACKET_SIZE
        }
    );
    assert_eq!(
        parse_fixed_header(&header, DEFAULT_MAX_PACKET_SIZE),
        Err(CodecError::PacketTooLarge {
            size: 5 + MAX_REMAINING_LENGTH,
            max: DEFAULT_MAX_PACKET_SIZE
        })
    );
    // With a large enough limit the same header just waits for the body.
    assert_eq!(
        decode(&header, usize::MAX),
        Ok(Decoded::Incomplete(MAX_REMAINING_LENGTH))
    );
}

#[test]
fn configurable_max_packet_size() {
    let packet = Packet::Publish(publish(QoS::AtMostOnce, 0, "topic", b"0123456789"));
    let bytes = encode(&packet);
    assert_eq!(bytes.len(), 19);
    assert_eq!(
        decode(&bytes, 19),
        Ok(Decoded::Packet(packet.clone(), 19)),
        "a packet of exactly the maximum is accepted"
    );
    let too_large = Err(CodecError::PacketTooLarge { size: 19, max: 18 });
    assert_eq!(decode(&bytes, 18), too_large);
    // Rejected from the fixed header alone, before the body arrives.
    assert_eq!(decode(&bytes[..2], 18), too_large);
    assert_eq!(
        decode(&[0xc0, 0x00], 1),
        Err(CodecError::PacketTooLarge { size: 2, max: 1 })
    );
}

#[test]
fn incomplete_reports_bytes_still_needed() {
    // Nothing yet: the smallest packet is 2 bytes.
    assert_eq!(
        decode(&[], DEFAULT_MAX_PACKET_SIZE),
        Ok(Decoded::Incomplete(2))
    );
    // First byte only: at least one remaining-length byte.
    assert_eq!(
        decode(&[0x30], DEFAULT_MAX_PACKET_SIZE),
        Ok(Decoded::Incomplete(1))
    );
    // Remaining length continues.
    assert_eq!(
        decode(&[0x30, 0x80], DEFAULT_MAX_PACKET_SIZE),
        Ok(Decoded::Incomplete(1))
    );
    assert_eq!(
        decode(&[0x30, 0x80, 0x80, 0x80], DEFAULT_MAX_PACKET_SIZE),
        Ok(Decoded::Incomplete(1))
    );
    // Header complete: exactly the missing body bytes.
    assert_eq!(
        decode(&[0x30, 0x0a], DEFAULT_MAX_PACKET_SIZE),
        Ok(Decoded::Incomplete(10))
    );
    assert_eq!(
        decode(&[0x30, 0x0a, 0x00, 0x01, b't'], DEFAULT_MAX_PACKET_SIZE),
        Ok(Decoded::Incomplete(7))
    );
    assert_eq!(
        decode(&[0x30, 0x80, 0x01], DEFAULT_MAX_PACKET_SIZE),
        Ok(Decoded::Incomplete(128))
    );
    assert_eq!(
        decode(&[0x62, 0x02, 0x00], DEFAULT_MAX_PACKET_SIZE),
        Ok(Decoded::Incomplete(1))
    );
    // Supplying exactly that many bytes completes the packet.
    let mut bytes = vec![0x30, 0x0a, 0x00, 0x01, b't'];
    bytes.extend_from_slice(b"1234567");
    assert_eq!(
        decode(&bytes, DEFAULT_MAX_PACKET_SIZE),
        Ok(Decoded::Packet(
            Packet::Publish(publish(QoS::AtMostOnce, 0, "t", b"1234567")),
            12
        ))
    );
    // Bytes after a complete packet are not part of it.
    bytes.extend_from_slice(&[0xc0]);
    assert!(matches!(
        decode(&bytes, DEFAULT_MAX_PACKET_SIZE),
        Ok(Decoded::Packet(_, 12))
    ));
}

// ------------------------------------------------------------ encode errors

fn assert_encode_err(packet: Packet<'_>, err: CodecError) {
    let mut out = vec![0xaa, 0xbb, 0xcc];
    assert_eq!(packet.encode(&mut out), Err(err), "{packet:?}");
    assert_eq!(
        out,
        [0xaa, 0xbb, 0xcc],
        "bytes appended on error for {packet:?}"
    );
    assert_eq!(packet.encoded_len(), Err(err));
}

#[test]
fn encode_rejects_zero_packet_ids() {
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        assert_encode_err(
            Packet::Publish(publish(qos, 0, "t", b"x")),
            CodecError::ZeroPacketId,
        );
    }
    for p in [
        Packet::puback(0),
        Packet::pubrec(0),
        Packet::pubrel(0),
        Packet::pubcomp(0),
        Packet::unsuback(0),
        Packet::Subscribe(Subscribe {
            pkid: 0,
            filters: vec![("a", QoS::AtMostOnce.into())],
            properties: None,
        }),
        Packet::SubAck(SubAck {
            pkid: 0,
            return_codes: &[0],
            properties: None,
        }),
        Packet::Unsubscribe(Unsubscribe {
            pkid: 0,
            filters: vec!["a"],
            properties: None,
        }),
    ] {
        assert_encode_err(p, CodecError::ZeroPacketId);
    }
}

#[test]
fn encode_rejects_fields_longer_than_65535() {
    let long = "a".repeat(65_536);
    let long_bytes = long.as_bytes();
    assert_encode_err(
        Packet::Connect(Connect {
            client_id: &long,
            ..minimal_connect()
        }),
        CodecError::FieldTooLong,
    );
    assert_encode_err(
        Packet::Connect(Connect {
            username: Some(&long),
            ..minimal_connect()
        }),
        CodecError::FieldTooLong,
    );
    assert_encode_err(
        Packet::Connect(Connect {
            username: Some("u"),
            password: Some(long_bytes),
            ..minimal_connect()
        }),
        CodecError::FieldTooLong,
    );
    assert_encode_err(
        Packet::Connect(Connect {
            will: Some(LastWill {
                topic: "t",
                payload: long_bytes,
                qos: QoS::AtMostOnce,
                retain: false,
                properties: None,
            }),
            ..minimal_connect()
        }),
        CodecError::FieldTooLong,
    );
    // Topics and filters that long are invalid topics.
    assert_encode_err(
        Packet::Connect(Connect {
            will: Some(LastWill {
                topic: &long,
                payload: b"",
                qos: QoS::AtMostOnce,
                retain: false,
                properties: None,
            }),
            ..minimal_connect()
        }),
        CodecError::InvalidTopic,
    );
    assert_encode_err(
        Packet::Publish(publish(QoS::AtMostOnce, 0, &long, b"")),
        CodecError::InvalidTopic,
    );
    assert_encode_err(
        Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![
                ("a", QoS::AtMostOnce.into()),
                (&long, QoS::AtMostOnce.into()),
            ],
            properties: None,
        }),
        CodecError::InvalidTopic,
    );
    assert_encode_err(
        Packet::Unsubscribe(Unsubscribe {
            pkid: 1,
            filters: vec![&long],
            properties: None,
        }),
        CodecError::InvalidTopic,
    );
    // 65535 is still fine, and a PUBLISH payload is not length-prefixed.
    let max = &long[..65_535];
    round_trip(Packet::Connect(Connect {
        username: Some(max),
        password: Some(max.as_bytes()),
        ..minimal_connect()
    }));
    round_trip(Packet::Publish(publish(
        QoS::AtMostOnce,
        0,
        max,
        long_bytes,
    )));
}

#[test]
fn encode_rejects_other_invalid_packets() {
    assert_encode_err(
        Packet::Connect(Connect {
            client_id: "a\0b",
            ..minimal_connect()
        }),
        CodecError::NulInString,
    );
    assert_encode_err(
        Packet::Connect(Connect {
            username: Some("\0"),
            ..minimal_connect()
        }),
        CodecError::NulInString,
    );
    assert_encode_err(
        Packet::Connect(Connect {
            password: Some(b"pw"),
            ..minimal_connect()
        }),
        CodecError::InvalidConnectFlags(0b0100_0000),
    );
    assert_encode_err(
        Packet::Connect(Connect {
            will: Some(LastWill {
                topic: "a/+",
                payload: b"",
                qos: QoS::AtMostOnce,
                retain: false,
                properties: None,
            }),
            ..minimal_connect()
        }),
        CodecError::InvalidTopic,
    );
    assert_encode_err(
        Packet::ConnAck(ConnAck::new(true, ConnectReturnCode::NotAuthorized)),
        CodecError::InvalidConnackFlags(1),
    );
    for topic in ["a/+", "#", "", "a\0"] {
        assert_encode_err(
            Packet::Publish(publish(QoS::AtMostOnce, 0, topic, b"")),
            CodecError::InvalidTopic,
        );
    }
    assert_encode_err(
        Packet::Publish(Publish {
            dup: true,
            ..publish(QoS::AtMostOnce, 0, "t", b"")
        }),
        CodecError::InvalidFlags {
            packet_type: 3,
            flags: 0b1000,
        },
    );
    assert_encode_err(
        Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![],
            properties: None,
        }),
        CodecError::EmptyPayload,
    );
    assert_encode_err(
        Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![("a/#/b", QoS::AtMostOnce.into())],
            properties: None,
        }),
        CodecError::InvalidTopic,
    );
    assert_encode_err(
        Packet::Unsubscribe(Unsubscribe {
            pkid: 1,
            filters: vec![],
            properties: None,
        }),
        CodecError::EmptyPayload,
    );
    assert_encode_err(
        Packet::Unsubscribe(Unsubscribe {
            pkid: 1,
            filters: vec!["a+"],
            properties: None,
        }),
        CodecError::InvalidTopic,
    );
    assert_encode_err(
        Packet::SubAck(SubAck {
            pkid: 1,
            return_codes: &[],
            properties: None,
        }),
        CodecError::EmptyPayload,
    );
    assert_encode_err(
        Packet::SubAck(SubAck {
            pkid: 1,
            return_codes: &[0, 3],
            properties: None,
        }),
        CodecError::InvalidSubackCode(3),
    );
}

#[test]
fn encode_appends_after_existing_bytes() {
    let mut out = vec![0x01, 0x02];
    assert_eq!(Packet::PingReq.encode(&mut out), Ok(2));
    assert_eq!(Packet::puback(9).encode(&mut out), Ok(4));
    assert_eq!(out, [0x01, 0x02, 0xc0, 0x00, 0x40, 0x02, 0x00, 0x09]);
}

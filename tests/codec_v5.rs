//! MQTT 5.0 codec: byte-exact encodings written by hand from the
//! specification, the short forms of acks and DISCONNECT, and one test per
//! validation rule with the exact error expected.

use mqtt::protocol::codec::{
    Ack, Auth, CodecError, ConnAck, Connect, ConnectReturnCode, Decoded, Disconnect, LastWill,
    Packet, Properties, PropertiesBuf, Property, PropertyContext, PropertyType, ProtocolVersion,
    Publish, QoS, SubAck, Subscribe, SubscribeOptions, UnsubAck, Unsubscribe, decode, decode_as,
    decode_body_as, parse_fixed_header_as, valid_reason_code,
};
use mqtt::protocol::properties::{self as props, allowed, property_type, repeatable};

const V5: ProtocolVersion = ProtocolVersion::V5;

// ---------------------------------------------------------------- helpers

fn encode(packet: &Packet<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let n = packet
        .encode(&mut out)
        .unwrap_or_else(|e| panic!("encoding {packet:?}: {e}"));
    assert_eq!(n, out.len(), "encode must return the bytes written");
    assert_eq!(packet.encoded_len(), Ok(n), "encoded_len disagrees");
    out
}

fn decode5(bytes: &[u8]) -> Packet<'_> {
    match decode_as(bytes, usize::MAX, V5) {
        Ok(Decoded::Packet(p, used)) => {
            assert_eq!(used, bytes.len(), "{bytes:02x?} not fully used");
            p
        }
        other => panic!("{bytes:02x?} decoded as {other:?}"),
    }
}

fn decode5_err(bytes: &[u8]) -> CodecError {
    match decode_as(bytes, usize::MAX, V5) {
        Err(e) => e,
        Ok(d) => panic!("{bytes:02x?} decoded as {d:?}, expected an error"),
    }
}

fn encode_err(packet: Packet<'_>) -> CodecError {
    let mut out = vec![0xaa];
    let err = packet
        .encode(&mut out)
        .expect_err("encoding should have failed");
    assert_eq!(out, [0xaa], "a failed encode appends nothing");
    assert_eq!(packet.encoded_len(), Err(err));
    err
}

/// Encode, compare with `expected`, decode as MQTT 5, compare with `packet`,
/// and check that every proper prefix is incomplete.
fn exact(packet: Packet<'_>, expected: &[u8]) {
    let bytes = encode(&packet);
    assert_eq!(bytes, expected, "encoding of {packet:?}");
    assert_eq!(decode5(&bytes), packet, "decoding {bytes:02x?}");
    for cut in 0..bytes.len() {
        assert!(
            matches!(
                decode_as(&bytes[..cut], usize::MAX, V5),
                Ok(Decoded::Incomplete(_))
            ),
            "prefix {cut} of {bytes:02x?}"
        );
    }
}

fn buf(list: &[Property<'_>]) -> PropertiesBuf {
    let mut b = PropertiesBuf::new();
    for p in list {
        b.push(*p).unwrap_or_else(|e| panic!("push {p:?}: {e}"));
    }
    b
}

/// A packet: first byte, 1-byte remaining length, body.
fn frame(byte1: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128);
    let mut v = vec![byte1, body.len() as u8];
    v.extend_from_slice(body);
    v
}

/// A PUBACK (id 1, reason 0) whose property section is `props` (raw bytes).
fn puback_with(props: &[u8]) -> Vec<u8> {
    let mut body = vec![0x00, 0x01, 0x00, props.len() as u8];
    body.extend_from_slice(props);
    frame(0x40, &body)
}

/// A QoS 0 PUBLISH to "t" whose property section is `props` (raw bytes).
fn publish_with(props: &[u8]) -> Vec<u8> {
    let mut body = vec![0x00, 0x01, b't', props.len() as u8];
    body.extend_from_slice(props);
    frame(0x30, &body)
}

fn publish5<'a>(topic: &'a str, properties: Properties<'a>) -> Publish<'a> {
    Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic,
        pkid: 0,
        payload: b"",
        properties: Some(properties),
    }
}

// --------------------------------------------------------- exact encodings

#[test]
fn connect_v5_with_properties_and_will_properties() {
    let connect_props = buf(&[
        Property::SessionExpiryInterval(120),
        Property::ReceiveMaximum(20),
        Property::UserProperty("k", "v"),
    ]);
    let will_props = buf(&[Property::WillDelayInterval(5), Property::ContentType("t")]);
    let packet = Packet::Connect(Connect {
        client_id: "c1",
        clean_session: true,
        keep_alive: 10,
        will: Some(LastWill {
            topic: "w",
            payload: b"bye",
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Some(will_props.as_properties()),
        }),
        username: Some("u"),
        password: Some(b"p"),
        properties: Some(connect_props.as_properties()),
    });
    #[rustfmt::skip]
    let expected = [
        0x10, 54,
        0x00, 0x04, b'M', b'Q', b'T', b'T', 5,
        0xce, // user name, password, will QoS 1, will, clean start
        0x00, 0x0a,
        15, // property length
        0x11, 0x00, 0x00, 0x00, 0x78,
        0x21, 0x00, 0x14,
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v',
        0x00, 0x02, b'c', b'1',
        9, // will property length
        0x18, 0x00, 0x00, 0x00, 0x05,
        0x03, 0x00, 0x01, b't',
        0x00, 0x01, b'w',
        0x00, 0x03, b'b', b'y', b'e',
        0x00, 0x01, b'u',
        0x00, 0x01, b'p',
    ];
    exact(packet.clone(), &expected);
    // CONNECT follows its own protocol level, even through the 3.1.1 decoder.
    assert_eq!(
        decode(&expected, usize::MAX),
        Ok(Decoded::Packet(packet, expected.len()))
    );
}

#[test]
fn connect_v5_minimal_and_password_without_user_name() {
    let minimal = Packet::Connect(Connect {
        client_id: "",
        clean_session: true,
        keep_alive: 0,
        will: None,
        username: None,
        password: None,
        properties: Some(Properties::EMPTY),
    });
    exact(
        minimal,
        &[
            0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 0, 0, 0, 0,
        ],
    );
    // MQTT 5 dropped the 3.1.1 rule that a password needs a user name.
    let password_only = Packet::Connect(Connect {
        client_id: "",
        clean_session: true,
        keep_alive: 0,
        will: None,
        username: None,
        password: Some(b"pw"),
        properties: Some(Properties::EMPTY),
    });
    exact(
        password_only,
        &[
            0x10, 17, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x42, 0, 0, 0, 0, 0, 0, 2, b'p', b'w',
        ],
    );
}

#[test]
fn connect_will_properties_follow_the_connect_version() {
    let will = |properties| LastWill {
        topic: "w",
        payload: b"",
        qos: QoS::AtMostOnce,
        retain: false,
        properties,
    };
    let connect = |will, properties| {
        Packet::Connect(Connect {
            client_id: "c",
            clean_session: true,
            keep_alive: 0,
            will: Some(will),
            username: None,
            password: None,
            properties,
        })
    };
    assert!(matches!(
        encode_err(connect(will(Some(Properties::EMPTY)), None)),
        CodecError::VersionMismatch(_)
    ));
    assert!(matches!(
        encode_err(connect(will(None), Some(Properties::EMPTY))),
        CodecError::VersionMismatch(_)
    ));
    // Properties of the wrong section are refused on both sides.
    let connect_only = buf(&[Property::SessionExpiryInterval(1)]);
    assert_eq!(
        encode_err(connect(
            will(Some(connect_only.as_properties())),
            Some(Properties::EMPTY)
        )),
        CodecError::PropertyNotAllowed {
            id: props::SESSION_EXPIRY_INTERVAL,
            context: PropertyContext::Will
        }
    );
    let will_only = buf(&[Property::WillDelayInterval(1)]);
    let bytes_with_will_delay_in_connect = {
        let mut b = encode(&connect(
            will(Some(Properties::EMPTY)),
            Some(Properties::EMPTY),
        ));
        // Splice the Will Delay Interval into the CONNECT property section.
        let at = 12;
        assert_eq!(b[at], 0);
        b[at] = will_only.len() as u8;
        for (i, &x) in will_only.as_bytes().iter().enumerate() {
            b.insert(at + 1 + i, x);
        }
        b[1] += will_only.len() as u8;
        b
    };
    assert_eq!(
        decode5_err(&bytes_with_will_delay_in_connect),
        CodecError::PropertyNotAllowed {
            id: props::WILL_DELAY_INTERVAL,
            context: PropertyContext::Connect
        }
    );
}

#[test]
fn connack_v5_with_properties() {
    let p = buf(&[
        Property::TopicAliasMaximum(10),
        Property::AssignedClientIdentifier("id"),
        Property::MaximumQoS(1),
    ]);
    let ack = ConnAck {
        session_present: true,
        reason_code: 0,
        properties: Some(p.as_properties()),
    };
    exact(
        Packet::ConnAck(ack),
        &[
            0x20, 13, 0x01, 0x00, 10, 0x22, 0x00, 0x0a, 0x12, 0x00, 0x02, b'i', b'd', 0x24, 0x01,
        ],
    );
    assert!(ack.is_success());
    assert_eq!(ack.code(), None, "no 3.1.1 return code in MQTT 5 form");
    let refused = ConnAck {
        session_present: false,
        reason_code: 0x87,
        properties: Some(Properties::EMPTY),
    };
    exact(Packet::ConnAck(refused), &[0x20, 0x03, 0x00, 0x87, 0x00]);
    assert!(!refused.is_success());
    let v311 = ConnAck::new(false, ConnectReturnCode::NotAuthorized);
    assert_eq!(v311.code(), Some(ConnectReturnCode::NotAuthorized));
    assert!(!v311.is_success());
}

#[test]
fn connack_v5_reason_codes_and_flags_are_checked() {
    for code in 0..=255u8 {
        let bytes = [0x20, 0x03, 0x00, code, 0x00];
        let listed = matches!(
            code,
            0x00 | 0x80..=0x8A | 0x8C | 0x90 | 0x95 | 0x97 | 0x99..=0x9D | 0x9F
        );
        if listed {
            assert_eq!(decode5(&bytes).reason_code(), Some(code));
        } else {
            assert_eq!(
                decode5_err(&bytes),
                CodecError::InvalidReasonCode {
                    packet_type: 2,
                    code
                },
                "{code:#x}"
            );
        }
    }
    // Session present with a refusal.
    assert_eq!(
        decode5_err(&[0x20, 0x03, 0x01, 0x80, 0x00]),
        CodecError::InvalidConnackFlags(1)
    );
    // The property length is not optional in a CONNACK.
    assert_eq!(
        decode5_err(&[0x20, 0x02, 0x00, 0x00]),
        CodecError::Truncated
    );
    // 3.1.1 form: only 0..=5; MQTT 5 form: only the listed codes.
    assert_eq!(
        encode_err(Packet::ConnAck(ConnAck {
            session_present: false,
            reason_code: 6,
            properties: None
        })),
        CodecError::InvalidConnackCode(6)
    );
    assert_eq!(
        encode_err(Packet::ConnAck(ConnAck {
            session_present: false,
            reason_code: 0x8B,
            properties: Some(Properties::EMPTY)
        })),
        CodecError::InvalidReasonCode {
            packet_type: 2,
            code: 0x8B
        }
    );
    // Reason String is allowed in CONNACK, Topic Alias is not.
    let alias = buf(&[Property::TopicAlias(1)]);
    assert_eq!(
        encode_err(Packet::ConnAck(ConnAck {
            session_present: false,
            reason_code: 0,
            properties: Some(alias.as_properties())
        })),
        CodecError::PropertyNotAllowed {
            id: props::TOPIC_ALIAS,
            context: PropertyContext::ConnAck
        }
    );
}

#[test]
fn publish_v5_with_properties() {
    let p = buf(&[
        Property::PayloadFormatIndicator(1),
        Property::MessageExpiryInterval(60),
        Property::TopicAlias(3),
        Property::UserProperty("a", "b"),
        Property::SubscriptionIdentifier(300),
    ]);
    let packet = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "a/b",
        pkid: 10,
        payload: b"hi",
        properties: Some(p.as_properties()),
    });
    #[rustfmt::skip]
    exact(packet, &[
        0x32, 30,
        0x00, 0x03, b'a', b'/', b'b',
        0x00, 0x0a,
        20,
        0x01, 0x01,
        0x02, 0x00, 0x00, 0x00, 0x3c,
        0x23, 0x00, 0x03,
        0x26, 0x00, 0x01, b'a', 0x00, 0x01, b'b',
        0x0b, 0xac, 0x02,
        b'h', b'i',
    ]);
    // QoS 0: no packet identifier, property length 0.
    exact(
        Packet::Publish(Publish {
            payload: b"x",
            retain: true,
            ..publish5("t", Properties::EMPTY)
        }),
        &[0x31, 0x05, 0x00, 0x01, b't', 0x00, b'x'],
    );
}

#[test]
fn publish_v5_empty_topic_needs_a_topic_alias() {
    let alias = buf(&[Property::TopicAlias(3)]);
    exact(
        Packet::Publish(Publish {
            payload: b"x",
            ..publish5("", alias.as_properties())
        }),
        &[0x30, 0x07, 0x00, 0x00, 0x03, 0x23, 0x00, 0x03, b'x'],
    );
    let no_alias = buf(&[Property::PayloadFormatIndicator(0)]);
    assert_eq!(
        encode_err(Packet::Publish(publish5("", no_alias.as_properties()))),
        CodecError::EmptyTopicWithoutAlias
    );
    assert_eq!(
        decode5_err(&[0x30, 0x05, 0x00, 0x00, 0x02, 0x01, 0x00]),
        CodecError::EmptyTopicWithoutAlias
    );
    assert_eq!(
        decode5_err(&[0x30, 0x03, 0x00, 0x00, 0x00]),
        CodecError::EmptyTopicWithoutAlias
    );
    // 3.1.1 has no alias: an empty topic is invalid there, as are wildcards in both.
    assert_eq!(
        decode(&[0x30, 0x02, 0x00, 0x00], usize::MAX),
        Err(CodecError::InvalidTopic)
    );
    assert_eq!(
        decode5_err(&[0x30, 0x04, 0x00, 0x01, b'#', 0x00]),
        CodecError::InvalidTopic
    );
    let mut p = publish5("", alias.as_properties());
    p.properties = None;
    assert_eq!(encode_err(Packet::Publish(p)), CodecError::InvalidTopic);
}

#[test]
fn acks_use_the_short_medium_and_long_forms() {
    let reason = buf(&[Property::ReasonString("ok")]);
    let ack = |pkid, reason_code, properties| Ack {
        pkid,
        reason_code,
        properties: Some(properties),
    };
    // Short: reason 0, no properties: as in 3.1.1.
    exact(
        Packet::PubAck(ack(5, 0, Properties::EMPTY)),
        &[0x40, 0x02, 0x00, 0x05],
    );
    // Medium: reason code only.
    exact(
        Packet::PubAck(ack(5, 0x10, Properties::EMPTY)),
        &[0x40, 0x03, 0x00, 0x05, 0x10],
    );
    // Long: reason code and properties (even with reason 0).
    exact(
        Packet::PubAck(ack(5, 0, reason.as_properties())),
        &[
            0x40, 0x09, 0x00, 0x05, 0x00, 0x05, 0x1f, 0x00, 0x02, b'o', b'k',
        ],
    );
    exact(
        Packet::PubRec(ack(0x0102, 0x80, reason.as_properties())),
        &[
            0x50, 0x09, 0x01, 0x02, 0x80, 0x05, 0x1f, 0x00, 0x02, b'o', b'k',
        ],
    );
    exact(
        Packet::PubRel(ack(7, 0x92, Properties::EMPTY)),
        &[0x62, 0x03, 0x00, 0x07, 0x92],
    );
    exact(
        Packet::PubComp(ack(7, 0, Properties::EMPTY)),
        &[0x70, 0x02, 0x00, 0x07],
    );
    // An explicit empty property section decodes to the same packet, which
    // re-encodes in the shorter form.
    let p = decode5(&[0x40, 0x04, 0x00, 0x05, 0x10, 0x00]);
    assert_eq!(p, Packet::PubAck(ack(5, 0x10, Properties::EMPTY)));
    assert_eq!(encode(&p), [0x40, 0x03, 0x00, 0x05, 0x10]);
    // 3.1.1: no reason code at all.
    assert_eq!(
        decode(&[0x40, 0x03, 0x00, 0x05, 0x10], usize::MAX),
        Err(CodecError::TrailingBytes)
    );
    assert_eq!(
        decode(&[0x40, 0x02, 0x00, 0x05], usize::MAX),
        Ok(Decoded::Packet(Packet::puback(5), 4))
    );
    assert!(matches!(
        encode_err(Packet::PubAck(Ack {
            pkid: 5,
            reason_code: 0x10,
            properties: None
        })),
        CodecError::VersionMismatch(_)
    ));
    assert_eq!(
        encode_err(Packet::PubAck(ack(0, 0, Properties::EMPTY))),
        CodecError::ZeroPacketId
    );
    assert_eq!(
        decode5_err(&[0x40, 0x03, 0x00, 0x00, 0x00]),
        CodecError::ZeroPacketId
    );
}

#[test]
fn ack_reason_codes_are_checked_per_packet() {
    let puback_codes = [0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
    let pubrel_codes = [0x00, 0x92];
    for (byte1, packet_type, valid) in [
        (0x40, 4, &puback_codes[..]),
        (0x50, 5, &puback_codes[..]),
        (0x62, 6, &pubrel_codes[..]),
        (0x70, 7, &pubrel_codes[..]),
    ] {
        for code in 0..=255u8 {
            let bytes = [byte1, 0x03, 0x00, 0x01, code];
            if valid.contains(&code) {
                assert_eq!(decode5(&bytes).reason_code(), Some(code));
                assert!(valid_reason_code(packet_type, code));
            } else {
                assert_eq!(
                    decode5_err(&bytes),
                    CodecError::InvalidReasonCode { packet_type, code }
                );
                assert!(!valid_reason_code(packet_type, code));
            }
        }
    }
    // Encoding refuses them too.
    assert_eq!(
        encode_err(Packet::PubRel(Ack {
            pkid: 1,
            reason_code: 0x10,
            properties: Some(Properties::EMPTY)
        })),
        CodecError::InvalidReasonCode {
            packet_type: 6,
            code: 0x10
        }
    );
    // Ack properties: Reason String and User Property only.
    assert_eq!(
        decode5_err(&puback_with(&[0x23, 0x00, 0x01])),
        CodecError::PropertyNotAllowed {
            id: props::TOPIC_ALIAS,
            context: PropertyContext::PubAck
        }
    );
}

#[test]
fn subscribe_v5_options_byte() {
    let p = buf(&[Property::SubscriptionIdentifier(5)]);
    let packet = Packet::Subscribe(Subscribe {
        pkid: 1,
        filters: vec![
            (
                "a/+",
                SubscribeOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: 2,
                },
            ),
            (
                "$share/g/t",
                SubscribeOptions {
                    qos: QoS::ExactlyOnce,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: 1,
                },
            ),
        ],
        properties: Some(p.as_properties()),
    });
    #[rustfmt::skip]
    exact(packet, &[
        0x82, 24,
        0x00, 0x01,
        2, 0x0b, 0x05,
        0x00, 0x03, b'a', b'/', b'+', 0x2d,
        0x00, 0x0a, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g', b'/', b't', 0x12,
    ]);
    assert_eq!(SubscribeOptions::from(QoS::ExactlyOnce).to_byte(), 0x02);
}

#[test]
fn subscribe_v5_options_are_validated() {
    let sub = |options: u8| frame(0x82, &[0x00, 0x01, 0x00, 0x00, 0x01, b'a', options]);
    assert_eq!(
        decode5_err(&sub(0x40)),
        CodecError::InvalidSubscribeOptions(0x40)
    );
    assert_eq!(
        decode5_err(&sub(0x81)),
        CodecError::InvalidSubscribeOptions(0x81)
    );
    assert_eq!(
        decode5_err(&sub(0x30)),
        CodecError::InvalidRetainHandling(0x30)
    );
    assert_eq!(decode5_err(&sub(0x03)), CodecError::InvalidQoS(3));
    // No Local is fine on an ordinary filter...
    let bytes = sub(0x04);
    let Packet::Subscribe(s) = decode5(&bytes) else {
        panic!("not a SUBSCRIBE")
    };
    assert!(s.filters[0].1.no_local);
    // ...not on a shared subscription.
    let shared = frame(
        0x82,
        &[
            0x00, 0x01, 0x00, 0x00, 0x0a, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g', b'/',
            b't', 0x04,
        ],
    );
    assert_eq!(
        decode5_err(&shared),
        CodecError::NoLocalOnSharedSubscription
    );

    let no_local = SubscribeOptions {
        no_local: true,
        ..SubscribeOptions::from(QoS::AtMostOnce)
    };
    let subscribe = |filter, options, properties| {
        Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![(filter, options)],
            properties,
        })
    };
    assert_eq!(
        encode_err(subscribe("$share/g/t", no_local, Some(Properties::EMPTY))),
        CodecError::NoLocalOnSharedSubscription
    );
    assert_eq!(
        encode_err(subscribe(
            "a",
            SubscribeOptions {
                retain_handling: 3,
                ..SubscribeOptions::from(QoS::AtMostOnce)
            },
            Some(Properties::EMPTY)
        )),
        CodecError::InvalidRetainHandling(0x30)
    );
    assert!(matches!(
        encode_err(subscribe("a", no_local, None)),
        CodecError::VersionMismatch(_)
    ));
    // Subscription Identifier once per SUBSCRIBE, and not 0.
    let twice = frame(
        0x82,
        &[
            0x00, 0x01, 0x04, 0x0b, 0x01, 0x0b, 0x02, 0x00, 0x01, b'a', 0x00,
        ],
    );
    assert_eq!(
        decode5_err(&twice),
        CodecError::DuplicateProperty(props::SUBSCRIPTION_IDENTIFIER)
    );
    let zero = frame(
        0x82,
        &[0x00, 0x01, 0x02, 0x0b, 0x00, 0x00, 0x01, b'a', 0x00],
    );
    assert_eq!(
        decode5_err(&zero),
        CodecError::InvalidPropertyValue(props::SUBSCRIPTION_IDENTIFIER)
    );
}

#[test]
fn suback_and_unsuback_v5() {
    let no = buf(&[Property::ReasonString("no")]);
    exact(
        Packet::SubAck(SubAck {
            pkid: 1,
            return_codes: &[0x00, 0x01, 0x02, 0x80, 0x97, 0xa2],
            properties: Some(no.as_properties()),
        }),
        &[
            0x90, 14, 0x00, 0x01, 5, 0x1f, 0x00, 0x02, b'n', b'o', 0x00, 0x01, 0x02, 0x80, 0x97,
            0xa2,
        ],
    );
    for code in 0..=255u8 {
        let bytes = [0x90, 0x04, 0x00, 0x01, 0x00, code];
        if [
            0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8f, 0x91, 0x97, 0x9e, 0xa1, 0xa2,
        ]
        .contains(&code)
        {
            decode5(&bytes);
        } else {
            assert_eq!(
                decode5_err(&bytes),
                CodecError::InvalidReasonCode {
                    packet_type: 9,
                    code
                }
            );
        }
    }
    // 3.1.1 keeps its own table.
    assert_eq!(
        decode(&[0x90, 0x03, 0x00, 0x01, 0x97], usize::MAX),
        Err(CodecError::InvalidSubackCode(0x97))
    );
    assert_eq!(
        decode5_err(&[0x90, 0x03, 0x00, 0x01, 0x00]),
        CodecError::EmptyPayload
    );

    exact(
        Packet::UnsubAck(UnsubAck {
            pkid: 2,
            reason_codes: &[0x00, 0x11, 0x8f],
            properties: Some(Properties::EMPTY),
        }),
        &[0xb0, 0x06, 0x00, 0x02, 0x00, 0x00, 0x11, 0x8f],
    );
    for code in 0..=255u8 {
        let bytes = [0xb0, 0x04, 0x00, 0x02, 0x00, code];
        if [0x00, 0x11, 0x80, 0x83, 0x87, 0x8f, 0x91].contains(&code) {
            decode5(&bytes);
        } else {
            assert_eq!(
                decode5_err(&bytes),
                CodecError::InvalidReasonCode {
                    packet_type: 11,
                    code
                }
            );
        }
    }
    assert_eq!(
        decode5_err(&[0xb0, 0x03, 0x00, 0x02, 0x00]),
        CodecError::EmptyPayload
    );
    assert_eq!(
        encode_err(Packet::UnsubAck(UnsubAck {
            pkid: 2,
            reason_codes: &[],
            properties: Some(Properties::EMPTY)
        })),
        CodecError::EmptyPayload
    );
    assert!(matches!(
        encode_err(Packet::UnsubAck(UnsubAck {
            pkid: 2,
            reason_codes: &[0],
            properties: None
        })),
        CodecError::VersionMismatch(_)
    ));
    // 3.1.1 UNSUBACK: no reason codes.
    assert_eq!(
        decode(&[0xb0, 0x02, 0x00, 0x02], usize::MAX),
        Ok(Decoded::Packet(Packet::unsuback(2), 4))
    );
    assert_eq!(
        decode(&[0xb0, 0x03, 0x00, 0x02, 0x00], usize::MAX),
        Err(CodecError::TrailingBytes)
    );
}

#[test]
fn unsubscribe_v5_with_user_property() {
    let user = buf(&[Property::UserProperty("k", "v")]);
    exact(
        Packet::Unsubscribe(Unsubscribe {
            pkid: 3,
            filters: vec!["a/#"],
            properties: Some(user.as_properties()),
        }),
        &[
            0xa2, 15, 0x00, 0x03, 7, 0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', 0x00, 0x03, b'a',
            b'/', b'#',
        ],
    );
    // Reason String is not an UNSUBSCRIBE property.
    assert_eq!(
        decode5_err(&frame(
            0xa2,
            &[0x00, 0x03, 0x04, 0x1f, 0x00, 0x01, b'x', 0x00, 0x01, b'a']
        )),
        CodecError::PropertyNotAllowed {
            id: props::REASON_STRING,
            context: PropertyContext::Unsubscribe
        }
    );
}

#[test]
fn disconnect_v5_forms_and_reason_codes() {
    let d = |reason_code, properties| {
        Packet::Disconnect(Disconnect {
            reason_code,
            properties: Some(properties),
        })
    };
    exact(d(0, Properties::EMPTY), &[0xe0, 0x00]);
    exact(d(0x04, Properties::EMPTY), &[0xe0, 0x01, 0x04]);
    let p = buf(&[
        Property::ReasonString("bye"),
        Property::ServerReference("s"),
    ]);
    exact(
        d(0x8e, p.as_properties()),
        &[
            0xe0, 12, 0x8e, 10, 0x1f, 0x00, 0x03, b'b', b'y', b'e', 0x1c, 0x00, 0x01, b's',
        ],
    );
    // Reason 0 with properties still needs the reason code byte.
    let user = buf(&[Property::UserProperty("", "")]);
    exact(
        d(0, user.as_properties()),
        &[0xe0, 0x07, 0x00, 0x05, 0x26, 0x00, 0x00, 0x00, 0x00],
    );
    for code in 0..=255u8 {
        let bytes = [0xe0, 0x01, code];
        let listed = matches!(
            code,
            0x00 | 0x04 | 0x80..=0x83 | 0x87 | 0x89 | 0x8b..=0x90 | 0x93..=0xa2
        );
        if listed {
            assert_eq!(decode5(&bytes), d(code, Properties::EMPTY));
        } else {
            assert_eq!(
                decode5_err(&bytes),
                CodecError::InvalidReasonCode {
                    packet_type: 14,
                    code
                }
            );
        }
    }
    // 3.1.1: empty body only.
    assert_eq!(
        decode(&[0xe0, 0x01, 0x04], usize::MAX),
        Err(CodecError::TrailingBytes)
    );
    assert!(matches!(
        encode_err(Packet::Disconnect(Disconnect {
            reason_code: 4,
            properties: None
        })),
        CodecError::VersionMismatch(_)
    ));
    // Topic Alias is not a DISCONNECT property.
    assert_eq!(
        decode5_err(&[0xe0, 0x05, 0x00, 0x03, 0x23, 0x00, 0x01]),
        CodecError::PropertyNotAllowed {
            id: props::TOPIC_ALIAS,
            context: PropertyContext::Disconnect
        }
    );
}

#[test]
fn auth_v5_only() {
    let p = buf(&[
        Property::AuthenticationMethod("m"),
        Property::AuthenticationData(&[1, 2]),
    ]);
    let auth = |reason_code, properties| {
        Packet::Auth(Auth {
            reason_code,
            properties: Some(properties),
        })
    };
    exact(
        auth(0x18, p.as_properties()),
        &[
            0xf0, 11, 0x18, 9, 0x15, 0x00, 0x01, b'm', 0x16, 0x00, 0x02, 0x01, 0x02,
        ],
    );
    exact(auth(0, Properties::EMPTY), &[0xf0, 0x00]);
    // No reason-only form for AUTH: reason code and property length go together.
    exact(auth(0x19, Properties::EMPTY), &[0xf0, 0x02, 0x19, 0x00]);
    assert_eq!(decode5_err(&[0xf0, 0x01, 0x18]), CodecError::Truncated);
    for code in 0..=255u8 {
        let bytes = [0xf0, 0x02, code, 0x00];
        if [0x00, 0x18, 0x19].contains(&code) {
            assert_eq!(decode5(&bytes), auth(code, Properties::EMPTY));
        } else {
            assert_eq!(
                decode5_err(&bytes),
                CodecError::InvalidReasonCode {
                    packet_type: 15,
                    code
                }
            );
        }
    }
    assert_eq!(
        decode5_err(&[0xf1, 0x00]),
        CodecError::InvalidFlags {
            packet_type: 15,
            flags: 1
        }
    );
    // Type 15 is reserved in 3.1.1, at the fixed header already.
    assert_eq!(
        decode(&[0xf0, 0x00], usize::MAX),
        Err(CodecError::ReservedPacketType(15))
    );
    assert_eq!(
        parse_fixed_header_as(&[0xf0], usize::MAX, ProtocolVersion::V311),
        Err(CodecError::ReservedPacketType(15))
    );
    assert_eq!(parse_fixed_header_as(&[0xf0], usize::MAX, V5), Ok(Err(1)));
    assert!(matches!(
        encode_err(Packet::Auth(Auth {
            reason_code: 0,
            properties: None
        })),
        CodecError::VersionMismatch(_)
    ));
    // Session Expiry Interval is not an AUTH property.
    assert_eq!(
        decode5_err(&[0xf0, 0x07, 0x18, 0x05, 0x11, 0x00, 0x00, 0x00, 0x01]),
        CodecError::PropertyNotAllowed {
            id: props::SESSION_EXPIRY_INTERVAL,
            context: PropertyContext::Auth
        }
    );
    assert_eq!(auth(0, Properties::EMPTY).packet_type(), 15);
}

#[test]
fn v311_packets_decode_the_same_under_v5_where_the_forms_agree() {
    for bytes in [
        &[0xc0, 0x00][..],
        &[0xd0, 0x00],
        &[0x40, 0x02, 0x00, 0x01],
        &[0x62, 0x02, 0x00, 0x01],
    ] {
        let p311 = match decode(bytes, usize::MAX) {
            Ok(Decoded::Packet(p, _)) => p,
            other => panic!("{other:?}"),
        };
        let p5 = decode5(bytes);
        assert_eq!(p311.packet_type(), p5.packet_type());
        assert_eq!(p311.reason_code(), p5.reason_code());
        // Only the MQTT 5 decoding has a property section.
        assert_eq!(p311.properties(), None);
        if p5.packet_type() < 12 {
            assert_eq!(p5.properties(), Some(Properties::EMPTY));
        }
    }
    // decode_body_as agrees with decode_as.
    assert_eq!(
        decode_body_as(0x40, &[0x00, 0x01, 0x10], V5),
        Ok(Packet::PubAck(Ack {
            pkid: 1,
            reason_code: 0x10,
            properties: Some(Properties::EMPTY)
        }))
    );
}

// ------------------------------------------------------------- properties

#[test]
fn unknown_property_ids_are_malformed() {
    for id in [
        0x00, 0x04, 0x0a, 0x10, 0x14, 0x1b, 0x20, 0x2b, 0x7f, 0x80, 0xff,
    ] {
        assert_eq!(property_type(id), None);
        assert_eq!(
            decode5_err(&puback_with(&[id, 0x00])),
            CodecError::UnknownProperty(id)
        );
    }
    let e = CodecError::UnknownProperty(0x04);
    assert!(!e.is_protocol_error());
    assert_eq!(e.reason_code(), 0x81);
}

#[test]
fn allowed_follows_the_table_of_section_2_2_2_2() {
    use PropertyContext::*;
    let all = [
        Connect,
        ConnAck,
        Publish,
        Will,
        PubAck,
        PubRec,
        PubRel,
        PubComp,
        Subscribe,
        SubAck,
        Unsubscribe,
        UnsubAck,
        Disconnect,
        Auth,
    ];
    let table: &[(u8, &[PropertyContext])] = &[
        (0x01, &[Publish, Will]),
        (0x02, &[Publish, Will]),
        (0x03, &[Publish, Will]),
        (0x08, &[Publish, Will]),
        (0x09, &[Publish, Will]),
        (0x0b, &[Publish, Subscribe]),
        (0x11, &[Connect, ConnAck, Disconnect]),
        (0x12, &[ConnAck]),
        (0x13, &[ConnAck]),
        (0x15, &[Connect, ConnAck, Auth]),
        (0x16, &[Connect, ConnAck, Auth]),
        (0x17, &[Connect]),
        (0x18, &[Will]),
        (0x19, &[Connect]),
        (0x1a, &[ConnAck]),
        (0x1c, &[ConnAck, Disconnect]),
        (
            0x1f,
            &[
                ConnAck, PubAck, PubRec, PubRel, PubComp, SubAck, UnsubAck, Disconnect, Auth,
            ],
        ),
        (0x21, &[Connect, ConnAck]),
        (0x22, &[Connect, ConnAck]),
        (0x23, &[Publish]),
        (0x24, &[ConnAck]),
        (0x25, &[ConnAck]),
        (0x26, &all),
        (0x27, &[Connect, ConnAck]),
        (0x28, &[ConnAck]),
        (0x29, &[ConnAck]),
        (0x2a, &[ConnAck]),
    ];
    let mut defined = 0;
    for id in 0..=255u8 {
        let places = table.iter().find(|(i, _)| *i == id).map(|(_, p)| *p);
        assert_eq!(property_type(id).is_some(), places.is_some(), "{id:#x}");
        defined += places.is_some() as usize;
        for ctx in all {
            let expected = places.is_some_and(|p| p.contains(&ctx));
            assert_eq!(allowed(id, ctx), expected, "{id:#x} in {ctx:?}");
        }
    }
    assert_eq!(defined, 27);
    // Repeatable: User Property everywhere, Subscription Identifier in PUBLISH.
    for ctx in all {
        assert!(repeatable(props::USER_PROPERTY, ctx));
        assert_eq!(
            repeatable(props::SUBSCRIPTION_IDENTIFIER, ctx),
            ctx == Publish
        );
        assert!(!repeatable(props::REASON_STRING, ctx));
    }
}

#[test]
fn property_types_match_the_spec() {
    use PropertyType::*;
    for (id, ty) in [
        (0x01, Byte),
        (0x02, FourByte),
        (0x03, String),
        (0x08, String),
        (0x09, Binary),
        (0x0b, VarInt),
        (0x11, FourByte),
        (0x12, String),
        (0x13, TwoByte),
        (0x15, String),
        (0x16, Binary),
        (0x17, Byte),
        (0x18, FourByte),
        (0x19, Byte),
        (0x1a, String),
        (0x1c, String),
        (0x1f, String),
        (0x21, TwoByte),
        (0x22, TwoByte),
        (0x23, TwoByte),
        (0x24, Byte),
        (0x25, Byte),
        (0x26, StringPair),
        (0x27, FourByte),
        (0x28, Byte),
        (0x29, Byte),
        (0x2a, Byte),
    ] {
        assert_eq!(property_type(id), Some(ty), "{id:#x}");
    }
}

#[test]
fn property_in_the_wrong_packet_is_malformed() {
    let e = decode5_err(&publish_with(&[0x12, 0x00, 0x01, b'x']));
    assert_eq!(
        e,
        CodecError::PropertyNotAllowed {
            id: props::ASSIGNED_CLIENT_IDENTIFIER,
            context: PropertyContext::Publish
        }
    );
    assert!(!e.is_protocol_error());
    assert_eq!(e.reason_code(), 0x81);
    let text = e.to_string();
    assert!(
        text.contains("0x12")
            && text.contains("Assigned Client Identifier")
            && text.contains("PUBLISH"),
        "{text}"
    );
    assert_eq!(
        Properties::parse(&[0x17, 0x01], PropertyContext::ConnAck),
        Err(CodecError::PropertyNotAllowed {
            id: props::REQUEST_PROBLEM_INFORMATION,
            context: PropertyContext::ConnAck
        })
    );
}

#[test]
fn duplicate_properties_are_protocol_errors() {
    let e = decode5_err(&puback_with(&[
        0x1f, 0x00, 0x01, b'a', 0x1f, 0x00, 0x01, b'b',
    ]));
    assert_eq!(e, CodecError::DuplicateProperty(props::REASON_STRING));
    assert!(e.is_protocol_error());
    assert_eq!(e.reason_code(), 0x82);
    assert!(e.to_string().contains("Reason String"), "{e}");
    // User Property may repeat, with equal pairs even.
    let bytes = puback_with(&[
        0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', 0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v',
    ]);
    let p = decode5(&bytes);
    assert_eq!(p.properties().unwrap().count(props::USER_PROPERTY), 2);
    // Subscription Identifier may repeat in PUBLISH only.
    let bytes = publish_with(&[0x0b, 0x01, 0x0b, 0x02]);
    let p = decode5(&bytes);
    let properties = p.properties().unwrap();
    assert_eq!(
        properties.int_at(props::SUBSCRIPTION_IDENTIFIER, 0),
        Some(1)
    );
    assert_eq!(
        properties.int_at(props::SUBSCRIPTION_IDENTIFIER, 1),
        Some(2)
    );
    assert_eq!(properties.int_at(props::SUBSCRIPTION_IDENTIFIER, 2), None);
    for (bytes, id) in [
        (&[0x01, 0x00, 0x01, 0x01][..], 0x01),
        (&[0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 1], 0x02),
        (&[0x23, 0, 1, 0x23, 0, 2], 0x23),
        (&[0x09, 0, 0, 0x09, 0, 0], 0x09),
    ] {
        assert_eq!(
            decode5_err(&publish_with(bytes)),
            CodecError::DuplicateProperty(id)
        );
    }
    assert_eq!(
        Properties::parse(
            &[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 1],
            PropertyContext::Connect
        ),
        Err(CodecError::DuplicateProperty(
            props::SESSION_EXPIRY_INTERVAL
        ))
    );
}

#[test]
fn out_of_range_values_are_protocol_errors() {
    let connack = |props: &[u8]| {
        let mut body = vec![0x00, 0x00, props.len() as u8];
        body.extend_from_slice(props);
        frame(0x20, &body)
    };
    for (bytes, id) in [
        (&[0x24, 0x02][..], props::MAXIMUM_QOS),
        (&[0x25, 0x02], props::RETAIN_AVAILABLE),
        (&[0x28, 0x02], props::WILDCARD_SUBSCRIPTION_AVAILABLE),
        (&[0x29, 0xff], props::SUBSCRIPTION_IDENTIFIER_AVAILABLE),
        (&[0x2a, 0x02], props::SHARED_SUBSCRIPTION_AVAILABLE),
        (&[0x21, 0x00, 0x00], props::RECEIVE_MAXIMUM),
        (&[0x27, 0x00, 0x00, 0x00, 0x00], props::MAXIMUM_PACKET_SIZE),
    ] {
        let e = decode5_err(&connack(bytes));
        assert_eq!(e, CodecError::InvalidPropertyValue(id), "{bytes:02x?}");
        assert!(e.is_protocol_error());
        assert_eq!(e.reason_code(), 0x82);
    }
    for (bytes, id) in [
        (&[0x01, 0x02][..], props::PAYLOAD_FORMAT_INDICATOR),
        (&[0x23, 0x00, 0x00], props::TOPIC_ALIAS),
        (&[0x0b, 0x00], props::SUBSCRIPTION_IDENTIFIER),
        // A non-minimal 0 is still 0.
        (&[0x0b, 0x80, 0x00], props::SUBSCRIPTION_IDENTIFIER),
    ] {
        assert_eq!(
            decode5_err(&publish_with(bytes)),
            CodecError::InvalidPropertyValue(id)
        );
    }
    for (bytes, id) in [
        (&[0x17, 0x02][..], props::REQUEST_PROBLEM_INFORMATION),
        (&[0x19, 0x02], props::REQUEST_RESPONSE_INFORMATION),
    ] {
        assert_eq!(
            Properties::parse(bytes, PropertyContext::Connect),
            Err(CodecError::InvalidPropertyValue(id))
        );
    }
    // The limits themselves are fine.
    let bytes = connack(&[
        0x24, 0x01, 0x21, 0xff, 0xff, 0x27, 0xff, 0xff, 0xff, 0xff, 0x13, 0x00, 0x00,
    ]);
    let ok = decode5(&bytes);
    let p = ok.properties().unwrap();
    assert_eq!(p.u32_of(props::MAXIMUM_QOS), Some(1));
    assert_eq!(p.u32_of(props::RECEIVE_MAXIMUM), Some(65535));
    assert_eq!(p.u32_of(props::MAXIMUM_PACKET_SIZE), Some(u32::MAX));
    assert_eq!(p.u32_of(props::SERVER_KEEP_ALIVE), Some(0));
    let bytes = publish_with(&[0x0b, 0xff, 0xff, 0xff, 0x7f]);
    let max_id = decode5(&bytes);
    assert_eq!(
        max_id
            .properties()
            .unwrap()
            .u32_of(props::SUBSCRIPTION_IDENTIFIER),
        Some(268_435_455)
    );
}

#[test]
fn truncated_and_overrunning_properties_are_malformed() {
    // A value running past the property section.
    for bytes in [
        &[0x1f, 0x00, 0x05, b'a', b'b'][..],
        &[0x1f, 0x00],
        &[0x1f],
        &[0x26, 0x00, 0x01, b'k'],
        &[0x26, 0x00, 0x01, b'k', 0x00, 0x02, b'v'],
    ] {
        assert_eq!(
            Properties::parse(bytes, PropertyContext::PubAck),
            Err(CodecError::Truncated),
            "{bytes:02x?}"
        );
    }
    for bytes in [
        &[0x02, 0x00, 0x00, 0x01][..],
        &[0x23, 0x00],
        &[0x01],
        &[0x0b, 0x80],
        &[0x09, 0x00, 0x01],
    ] {
        assert_eq!(
            Properties::parse(bytes, PropertyContext::Publish),
            Err(CodecError::Truncated),
            "{bytes:02x?}"
        );
    }
    assert_eq!(
        decode5_err(&puback_with(&[0x1f, 0x00, 0x05, b'a', b'b'])),
        CodecError::Truncated
    );
    // A property length beyond the packet.
    assert_eq!(
        decode5_err(&[0x40, 0x06, 0x00, 0x01, 0x00, 0x0a, 0x1f, 0x00]),
        CodecError::Truncated
    );
    assert_eq!(
        decode5_err(&[0x30, 0x05, 0x00, 0x01, b't', 0x80, 0x01]),
        CodecError::Truncated
    );
    // A property length that does not end within the packet.
    assert_eq!(
        decode5_err(&[0x20, 0x04, 0x00, 0x00, 0x80, 0x80]),
        CodecError::Truncated
    );
    // Variable byte integers longer than 4 bytes.
    let e = decode5_err(&[0x20, 0x07, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x01]);
    assert_eq!(e, CodecError::MalformedVarInt);
    assert!(!e.is_protocol_error());
    assert_eq!(
        decode5_err(&publish_with(&[0x0b, 0xff, 0xff, 0xff, 0xff, 0x01])),
        CodecError::MalformedVarInt
    );
    // A non-minimal property length is accepted.
    let p = decode5(&[0x40, 0x05, 0x00, 0x01, 0x10, 0x80, 0x00]);
    assert_eq!(p.reason_code(), Some(0x10));
}

#[test]
fn property_strings_are_checked_like_other_strings() {
    assert_eq!(
        decode5_err(&puback_with(&[0x1f, 0x00, 0x02, 0xc3, 0x28])),
        CodecError::InvalidUtf8
    );
    assert_eq!(
        decode5_err(&puback_with(&[0x1f, 0x00, 0x01, 0x00])),
        CodecError::NulInString
    );
    assert_eq!(
        decode5_err(&puback_with(&[0x26, 0x00, 0x01, b'k', 0x00, 0x01, 0x00])),
        CodecError::NulInString
    );
    // Binary data may hold anything.
    let bytes = publish_with(&[0x09, 0x00, 0x03, 0x00, 0xff, 0xc3]);
    let p = decode5(&bytes);
    assert_eq!(
        p.properties().unwrap().bin_of(props::CORRELATION_DATA),
        Some(&[0x00, 0xff, 0xc3][..])
    );
}

// ------------------------------------------------ Properties and the buf

#[test]
fn properties_getters_and_debug() {
    let b = buf(&[
        Property::ContentType("text/plain"),
        Property::UserProperty("a", "1"),
        Property::SubscriptionIdentifier(7),
        Property::CorrelationData(b"\x01\x02"),
        Property::UserProperty("b", "2"),
        Property::SubscriptionIdentifier(9),
        Property::MessageExpiryInterval(30),
    ]);
    let p = Properties::parse(b.as_bytes(), PropertyContext::Publish).unwrap();
    assert_eq!(p, b.as_properties());
    assert!(!p.is_empty());
    assert_eq!(p.as_bytes(), b.as_bytes());
    assert_eq!(p.iter().count(), 7);
    assert_eq!(
        p.get(props::CONTENT_TYPE),
        Some(Property::ContentType("text/plain"))
    );
    assert_eq!(p.get(props::TOPIC_ALIAS), None);
    assert_eq!(p.str_of(props::CONTENT_TYPE), Some("text/plain"));
    assert_eq!(p.str_of(props::MESSAGE_EXPIRY_INTERVAL), None);
    assert_eq!(p.u32_of(props::MESSAGE_EXPIRY_INTERVAL), Some(30));
    assert_eq!(p.u32_of(props::SUBSCRIPTION_IDENTIFIER), Some(7));
    assert_eq!(p.u32_of(props::CONTENT_TYPE), None);
    assert_eq!(p.bin_of(props::CORRELATION_DATA), Some(&b"\x01\x02"[..]));
    assert_eq!(p.count(props::USER_PROPERTY), 2);
    assert_eq!(p.count(props::SUBSCRIPTION_IDENTIFIER), 2);
    assert_eq!(p.count(props::TOPIC_ALIAS), 0);
    assert_eq!(p.int_at(props::SUBSCRIPTION_IDENTIFIER, 1), Some(9));
    assert_eq!(p.user_at(0), Some(("a", "1")));
    assert_eq!(p.user_at(1), Some(("b", "2")));
    assert_eq!(p.user_at(2), None);
    assert_eq!(
        format!(
            "{:?}",
            buf(&[Property::TopicAlias(2), Property::UserProperty("k", "v")]).as_properties()
        ),
        r#"[TopicAlias(2), UserProperty("k", "v")]"#
    );
    assert_eq!(format!("{:?}", Properties::EMPTY), "[]");
    assert!(Properties::EMPTY.is_empty());
    assert_eq!(Properties::default(), Properties::EMPTY);
    // Not allowed together in one packet: parse says where.
    assert_eq!(
        Properties::parse(b.as_bytes(), PropertyContext::Will),
        Err(CodecError::PropertyNotAllowed {
            id: props::SUBSCRIPTION_IDENTIFIER,
            context: PropertyContext::Will
        })
    );
    assert_eq!(
        Properties::parse(b.as_bytes(), PropertyContext::Subscribe),
        Err(CodecError::PropertyNotAllowed {
            id: props::CONTENT_TYPE,
            context: PropertyContext::Subscribe
        })
    );
}

#[test]
fn properties_buf_checks_values_but_not_context() {
    let mut b = PropertiesBuf::new();
    assert!(b.is_empty());
    assert_eq!(b.len(), 0);
    b.push_int(props::TOPIC_ALIAS, 0x0102).unwrap();
    b.push_int(props::SESSION_EXPIRY_INTERVAL, 0x0a0b0c0d)
        .unwrap();
    b.push_int(props::SUBSCRIPTION_IDENTIFIER, 128).unwrap();
    b.push_int(props::MAXIMUM_QOS, 0).unwrap();
    b.push_str(props::REASON_STRING, "r").unwrap();
    b.push_bin(props::AUTHENTICATION_DATA, &[9]).unwrap();
    b.push_user("k", "v").unwrap();
    // Twice, and in no single packet: only parsing for a packet says no.
    b.push_int(props::TOPIC_ALIAS, 1).unwrap();
    assert_eq!(
        b.as_bytes(),
        [
            0x23, 0x01, 0x02, 0x11, 0x0a, 0x0b, 0x0c, 0x0d, 0x0b, 0x80, 0x01, 0x24, 0x00, 0x1f,
            0x00, 0x01, b'r', 0x16, 0x00, 0x01, 0x09, 0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v',
            0x23, 0x00, 0x01,
        ]
    );
    assert_eq!(b.len(), b.as_bytes().len());
    assert!(Properties::parse(b.as_bytes(), PropertyContext::Publish).is_err());
    assert_eq!(b.as_properties().iter().count(), 8);
    assert_eq!(format!("{b:?}"), format!("{:?}", b.as_properties()));
    let copy = b.clone();
    assert_eq!(copy, b);
    b.clear();
    assert!(b.is_empty());
    assert_ne!(copy, b);

    // Value checks, nothing appended on error.
    let e = |r: Result<(), CodecError>| r.unwrap_err();
    assert_eq!(
        e(b.push(Property::PayloadFormatIndicator(2))),
        CodecError::InvalidPropertyValue(props::PAYLOAD_FORMAT_INDICATOR)
    );
    assert_eq!(
        e(b.push(Property::MaximumQoS(2))),
        CodecError::InvalidPropertyValue(props::MAXIMUM_QOS)
    );
    assert_eq!(
        e(b.push(Property::RetainAvailable(7))),
        CodecError::InvalidPropertyValue(props::RETAIN_AVAILABLE)
    );
    assert_eq!(
        e(b.push(Property::ReceiveMaximum(0))),
        CodecError::InvalidPropertyValue(props::RECEIVE_MAXIMUM)
    );
    assert_eq!(
        e(b.push(Property::MaximumPacketSize(0))),
        CodecError::InvalidPropertyValue(props::MAXIMUM_PACKET_SIZE)
    );
    assert_eq!(
        e(b.push(Property::TopicAlias(0))),
        CodecError::InvalidPropertyValue(props::TOPIC_ALIAS)
    );
    assert_eq!(
        e(b.push(Property::SubscriptionIdentifier(0))),
        CodecError::InvalidPropertyValue(props::SUBSCRIPTION_IDENTIFIER)
    );
    assert_eq!(
        e(b.push(Property::SubscriptionIdentifier(268_435_456))),
        CodecError::InvalidPropertyValue(props::SUBSCRIPTION_IDENTIFIER)
    );
    assert_eq!(
        e(b.push(Property::ContentType("a\0b"))),
        CodecError::NulInString
    );
    assert_eq!(e(b.push_user("k", "\0")), CodecError::NulInString);
    let long = "x".repeat(65_536);
    assert_eq!(
        e(b.push_str(props::REASON_STRING, &long)),
        CodecError::FieldTooLong
    );
    assert_eq!(
        e(b.push_bin(props::CORRELATION_DATA, long.as_bytes())),
        CodecError::FieldTooLong
    );
    assert_eq!(e(b.push_user(&long, "v")), CodecError::FieldTooLong);
    b.push_str(props::REASON_STRING, &long[1..]).unwrap();
    b.clear();

    // push_int: the id's type and width.
    assert_eq!(
        e(b.push_int(props::MAXIMUM_QOS, 256)),
        CodecError::InvalidPropertyValue(props::MAXIMUM_QOS)
    );
    assert_eq!(
        e(b.push_int(props::TOPIC_ALIAS, 65_536)),
        CodecError::InvalidPropertyValue(props::TOPIC_ALIAS)
    );
    assert_eq!(
        e(b.push_int(props::SUBSCRIPTION_IDENTIFIER, 268_435_456)),
        CodecError::InvalidPropertyValue(props::SUBSCRIPTION_IDENTIFIER)
    );
    assert_eq!(
        e(b.push_int(props::CONTENT_TYPE, 1)),
        CodecError::WrongPropertyType(props::CONTENT_TYPE)
    );
    assert_eq!(
        e(b.push_int(props::USER_PROPERTY, 1)),
        CodecError::WrongPropertyType(props::USER_PROPERTY)
    );
    assert_eq!(e(b.push_int(0x04, 1)), CodecError::UnknownProperty(0x04));
    assert_eq!(
        e(b.push_str(props::TOPIC_ALIAS, "x")),
        CodecError::WrongPropertyType(props::TOPIC_ALIAS)
    );
    assert_eq!(
        e(b.push_str(props::USER_PROPERTY, "x")),
        CodecError::WrongPropertyType(props::USER_PROPERTY)
    );
    assert_eq!(
        e(b.push_bin(props::CONTENT_TYPE, b"x")),
        CodecError::WrongPropertyType(props::CONTENT_TYPE)
    );
    assert_eq!(e(b.push_str(0xff, "x")), CodecError::UnknownProperty(0xff));
    assert!(b.is_empty(), "failed pushes append nothing");
    b.push_int(props::MAXIMUM_PACKET_SIZE, u32::MAX).unwrap();
    assert_eq!(b.as_bytes(), [0x27, 0xff, 0xff, 0xff, 0xff]);
}

#[test]
fn encoding_validates_properties_for_the_packet() {
    // A PropertiesBuf is not checked for a packet: the encoder does it.
    let mut b = PropertiesBuf::new();
    b.push(Property::ReasonString("a")).unwrap();
    b.push(Property::ReasonString("b")).unwrap();
    assert_eq!(
        encode_err(Packet::PubAck(Ack {
            pkid: 1,
            reason_code: 0,
            properties: Some(b.as_properties())
        })),
        CodecError::DuplicateProperty(props::REASON_STRING)
    );
    assert_eq!(
        encode_err(Packet::Publish(publish5("t", b.as_properties()))),
        CodecError::PropertyNotAllowed {
            id: props::REASON_STRING,
            context: PropertyContext::Publish
        }
    );
    let mut twice = PropertiesBuf::new();
    twice.push(Property::SubscriptionIdentifier(1)).unwrap();
    twice.push(Property::SubscriptionIdentifier(2)).unwrap();
    encode(&Packet::Publish(publish5("t", twice.as_properties())));
    assert_eq!(
        encode_err(Packet::Subscribe(Subscribe {
            pkid: 1,
            filters: vec![("a", QoS::AtMostOnce.into())],
            properties: Some(twice.as_properties()),
        })),
        CodecError::DuplicateProperty(props::SUBSCRIPTION_IDENTIFIER)
    );
}

#[test]
fn error_classification() {
    let protocol = [
        CodecError::DuplicateProperty(0x1f),
        CodecError::InvalidPropertyValue(0x23),
        CodecError::InvalidReasonCode {
            packet_type: 4,
            code: 1,
        },
        CodecError::EmptyTopicWithoutAlias,
        CodecError::InvalidRetainHandling(0x30),
        CodecError::NoLocalOnSharedSubscription,
    ];
    for e in protocol {
        assert!(e.is_protocol_error(), "{e:?}");
        assert_eq!(e.reason_code(), 0x82, "{e:?}");
    }
    let malformed = [
        CodecError::MalformedRemainingLength,
        CodecError::ReservedPacketType(0),
        CodecError::InvalidFlags {
            packet_type: 3,
            flags: 6,
        },
        CodecError::Truncated,
        CodecError::TrailingBytes,
        CodecError::InvalidUtf8,
        CodecError::NulInString,
        CodecError::InvalidQoS(3),
        CodecError::ZeroPacketId,
        CodecError::InvalidConnackFlags(2),
        CodecError::InvalidTopic,
        CodecError::EmptyPayload,
        CodecError::MalformedVarInt,
        CodecError::UnknownProperty(0),
        CodecError::PropertyNotAllowed {
            id: 0x23,
            context: PropertyContext::Connect,
        },
        CodecError::InvalidSubscribeOptions(0x40),
    ];
    for e in malformed {
        assert!(!e.is_protocol_error(), "{e:?}");
        assert_eq!(e.reason_code(), 0x81, "{e:?}");
    }
    let too_large = CodecError::PacketTooLarge { size: 10, max: 5 };
    assert!(!too_large.is_protocol_error());
    assert_eq!(too_large.reason_code(), 0x95);
    // Display names the property, the packet and the code.
    assert_eq!(
        CodecError::InvalidReasonCode {
            packet_type: 6,
            code: 0x10
        }
        .to_string(),
        "reason code 0x10 not allowed in PUBREL"
    );
    assert_eq!(
        CodecError::InvalidPropertyValue(0x23).to_string(),
        "invalid value for property 0x23 (Topic Alias)"
    );
    assert_eq!(
        CodecError::PropertyNotAllowed {
            id: 0x18,
            context: PropertyContext::Connect
        }
        .to_string(),
        "property 0x18 (Will Delay Interval) not allowed in CONNECT"
    );
    assert_eq!(
        CodecError::UnknownProperty(0x04).to_string(),
        "unknown property identifier 0x04"
    );
}

#[test]
fn packet_accessors() {
    let p = buf(&[Property::ReasonString("r")]);
    let ack = Packet::PubRec(Ack {
        pkid: 1,
        reason_code: 0x10,
        properties: Some(p.as_properties()),
    });
    assert_eq!(ack.properties(), Some(p.as_properties()));
    assert_eq!(ack.reason_code(), Some(0x10));
    assert_eq!(Packet::puback(1).properties(), None);
    assert_eq!(Packet::puback(1).reason_code(), Some(0));
    assert_eq!(Packet::PingReq.properties(), None);
    assert_eq!(Packet::PingReq.reason_code(), None);
    assert_eq!(
        Packet::disconnect(),
        Packet::Disconnect(Disconnect::default())
    );
    assert_eq!(
        Ack::new(3),
        Ack {
            pkid: 3,
            reason_code: 0,
            properties: None
        }
    );
    assert_eq!(
        Packet::unsuback(4),
        Packet::UnsubAck(UnsubAck {
            pkid: 4,
            reason_codes: &[],
            properties: None
        })
    );
    assert_eq!(mqtt::protocol::codec::packet_type_name(15), "AUTH");
    assert_eq!(ProtocolVersion::V311 as u8, 4);
    assert_eq!(ProtocolVersion::V5 as u8, 5);
}

//! Property tests of the MQTT 3.1.1 and MQTT 5.0 codec: round trips of
//! arbitrary valid packets (with arbitrary valid property lists), robustness
//! against arbitrary bytes, and incremental decoding of a stream split at
//! arbitrary points.

use mqtt::protocol::codec::{
    Ack, Auth, CodecError, ConnAck, Connect, ConnectReturnCode, DEFAULT_MAX_PACKET_SIZE, Decoded,
    Disconnect, LastWill, Packet, Properties, PropertiesBuf, PropertyContext, PropertyType,
    ProtocolVersion, Publish, QoS, SUBACK_FAILURE, SubAck, Subscribe, SubscribeOptions, UnsubAck,
    Unsubscribe, decode, decode_as, decode_body, decode_body_as, valid_reason_code,
};
use mqtt::protocol::properties::{self as props, allowed, property_type, repeatable};
use mqtt::protocol::topic::{matches, valid_topic_filter, valid_topic_name};
use proptest::prelude::*;

// ------------------------------------------------------------ owned packets

/// Owned data a `Packet` can borrow from.
#[derive(Clone, Debug)]
enum Owned {
    Connect {
        client_id: String,
        clean_session: bool,
        keep_alive: u16,
        will: Option<(String, Vec<u8>, QoS, bool)>,
        /// User name, and a password that only exists with a user name.
        credentials: Option<(String, Option<Vec<u8>>)>,
    },
    ConnAck(bool, ConnectReturnCode),
    Publish {
        dup: bool,
        qos: QoS,
        retain: bool,
        topic: String,
        pkid: u16,
        payload: Vec<u8>,
    },
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    Subscribe(u16, Vec<(String, QoS)>),
    SubAck(u16, Vec<u8>),
    Unsubscribe(u16, Vec<String>),
    UnsubAck(u16),
    PingReq,
    PingResp,
    Disconnect,
}

impl Owned {
    fn packet(&self) -> Packet<'_> {
        match self {
            Owned::Connect {
                client_id,
                clean_session,
                keep_alive,
                will,
                credentials,
            } => Packet::Connect(Connect {
                client_id,
                clean_session: *clean_session,
                keep_alive: *keep_alive,
                will: will.as_ref().map(|(topic, payload, qos, retain)| LastWill {
                    topic,
                    payload,
                    qos: *qos,
                    retain: *retain,
                    properties: None,
                }),
                username: credentials.as_ref().map(|(u, _)| u.as_str()),
                password: credentials.as_ref().and_then(|(_, p)| p.as_deref()),
                properties: None,
            }),
            Owned::ConnAck(session_present, code) => {
                Packet::ConnAck(ConnAck::new(*session_present, *code))
            }
            Owned::Publish {
                dup,
                qos,
                retain,
                topic,
                pkid,
                payload,
            } => Packet::Publish(Publish {
                dup: *dup,
                qos: *qos,
                retain: *retain,
                topic,
                pkid: *pkid,
                payload,
                properties: None,
            }),
            Owned::PubAck(id) => Packet::puback(*id),
            Owned::PubRec(id) => Packet::pubrec(*id),
            Owned::PubRel(id) => Packet::pubrel(*id),
            Owned::PubComp(id) => Packet::pubcomp(*id),
            Owned::Subscribe(pkid, filters) => Packet::Subscribe(Subscribe {
                pkid: *pkid,
                filters: filters
                    .iter()
                    .map(|(f, q)| (f.as_str(), (*q).into()))
                    .collect(),
                properties: None,
            }),
            Owned::SubAck(pkid, codes) => Packet::SubAck(SubAck {
                pkid: *pkid,
                return_codes: codes,
                properties: None,
            }),
            Owned::Unsubscribe(pkid, filters) => Packet::Unsubscribe(Unsubscribe {
                pkid: *pkid,
                filters: filters.iter().map(String::as_str).collect(),
                properties: None,
            }),
            Owned::UnsubAck(id) => Packet::unsuback(*id),
            Owned::PingReq => Packet::PingReq,
            Owned::PingResp => Packet::PingResp,
            Owned::Disconnect => Packet::disconnect(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let packet = self.packet();
        let n = packet
            .encode(&mut out)
            .unwrap_or_else(|e| panic!("valid packet {packet:?} failed to encode: {e}"));
        assert_eq!(n, out.len());
        out
    }
}

// --------------------------------------------------------------- strategies

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn pkid() -> impl Strategy<Value = u16> {
    prop_oneof![1..=u16::MAX, Just(1u16), Just(u16::MAX), Just(0x0100u16)]
}

/// Any string without U+0000 (client ids, user names).
fn mqtt_string() -> impl Strategy<Value = String> {
    "[^\\x00]{0,24}"
}

fn binary(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

/// One level of a topic: no separator, wildcard or NUL; may be empty.
fn level() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z]{1,5}",
        1 => Just(String::new()),
        1 => "[^/+#\\x00]{1,6}",
        1 => "\\$[A-Z]{1,4}",
    ]
}

fn topic_name() -> impl Strategy<Value = String> {
    prop::collection::vec(level(), 1..6).prop_map(|levels| {
        let name = levels.join("/");
        if name.is_empty() {
            "t".to_owned()
        } else {
            name
        }
    })
}

fn topic_filter() -> impl Strategy<Value = String> {
    let filter_level = prop_oneof![3 => level(), 1 => Just("+".to_owned())];
    (prop::collection::vec(filter_level, 0..6), any::<bool>()).prop_map(|(mut levels, hash)| {
        if hash || levels.is_empty() {
            levels.push("#".to_owned());
        }
        let filter = levels.join("/");
        if filter.is_empty() {
            "+".to_owned()
        } else {
            filter
        }
    })
}

fn connect() -> impl Strategy<Value = Owned> {
    (
        mqtt_string(),
        any::<bool>(),
        any::<u16>(),
        prop::option::of((topic_name(), binary(40), qos(), any::<bool>())),
        prop::option::of((mqtt_string(), prop::option::of(binary(40)))),
    )
        .prop_map(
            |(client_id, clean_session, keep_alive, will, credentials)| Owned::Connect {
                client_id,
                clean_session,
                keep_alive,
                will,
                credentials,
            },
        )
}

fn connack() -> impl Strategy<Value = Owned> {
    (any::<bool>(), 0u8..=5).prop_map(|(session_present, code)| {
        let code = ConnectReturnCode::from_u8(code).unwrap();
        // Session present is only allowed with an acceptance.
        Owned::ConnAck(session_present && code == ConnectReturnCode::Accepted, code)
    })
}

fn publish() -> impl Strategy<Value = Owned> {
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        topic_name(),
        pkid(),
        // Up to 300 bytes crosses the 1- to 2-byte remaining length boundary.
        binary(300),
    )
        .prop_map(|(dup, qos, retain, topic, pkid, payload)| {
            let qos0 = qos == QoS::AtMostOnce;
            Owned::Publish {
                dup: dup && !qos0,
                qos,
                retain,
                topic,
                pkid: if qos0 { 0 } else { pkid },
                payload,
            }
        })
}

fn any_packet() -> impl Strategy<Value = Owned> {
    prop_oneof![
        connect(),
        connack(),
        publish(),
        pkid().prop_map(Owned::PubAck),
        pkid().prop_map(Owned::PubRec),
        pkid().prop_map(Owned::PubRel),
        pkid().prop_map(Owned::PubComp),
        (pkid(), prop::collection::vec((topic_filter(), qos()), 1..5))
            .prop_map(|(id, f)| Owned::Subscribe(id, f)),
        (
            pkid(),
            prop::collection::vec(prop::sample::select(vec![0u8, 1, 2, SUBACK_FAILURE]), 1..8)
        )
            .prop_map(|(id, c)| Owned::SubAck(id, c)),
        (pkid(), prop::collection::vec(topic_filter(), 1..5))
            .prop_map(|(id, f)| Owned::Unsubscribe(id, f)),
        pkid().prop_map(Owned::UnsubAck),
        Just(Owned::PingReq),
        Just(Owned::PingResp),
        Just(Owned::Disconnect),
    ]
}

// ------------------------------------------------------------------ helpers

/// Decode `data` as a stream of packets; stop at the first error or
/// incomplete packet. Returns the packets, the bytes used, and the final outcome.
fn decode_stream(data: &[u8], max: usize) -> (Vec<Packet<'_>>, usize, Result<usize, CodecError>) {
    decode_stream_as(data, max, ProtocolVersion::V311)
}

fn decode_stream_as(
    data: &[u8],
    max: usize,
    version: ProtocolVersion,
) -> (Vec<Packet<'_>>, usize, Result<usize, CodecError>) {
    let mut packets = Vec::new();
    let mut pos = 0;
    loop {
        match decode_as(&data[pos..], max, version) {
            Ok(Decoded::Packet(p, used)) => {
                assert!(used >= 2 && pos + used <= data.len());
                packets.push(p);
                pos += used;
            }
            Ok(Decoded::Incomplete(n)) => return (packets, pos, Ok(n)),
            Err(e) => return (packets, pos, Err(e)),
        }
    }
}

/// A decoded packet re-encodes to bytes that decode to the same packet.
fn assert_reencodes(packet: &Packet<'_>) {
    assert_reencodes_as(packet, ProtocolVersion::V311)
}

fn assert_reencodes_as(packet: &Packet<'_>, version: ProtocolVersion) {
    let mut out = Vec::new();
    let n = packet
        .encode(&mut out)
        .unwrap_or_else(|e| panic!("decoded {packet:?} does not re-encode: {e}"));
    assert_eq!(packet.encoded_len(), Ok(n));
    assert_eq!(
        decode_as(&out, usize::MAX, version),
        Ok(Decoded::Packet(packet.clone(), n))
    );
}

// -------------------------------------------------------------- properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn generated_topics_are_valid(name in topic_name(), filter in topic_filter()) {
        prop_assert!(valid_topic_name(&name), "{:?}", name);
        prop_assert!(valid_topic_filter(&filter), "{:?}", filter);
    }

    /// A filter matches the names obtained by filling its wildcards, unless
    /// the name starts with `$` and the filter with a wildcard.
    #[test]
    fn filters_match_their_instantiations(
        filter in topic_filter(),
        fills in prop::collection::vec(level(), 8),
        tail in prop::collection::vec(level(), 0..3),
    ) {
        let mut levels = Vec::new();
        let mut fills = fills.into_iter();
        for level in filter.split('/') {
            match level {
                "+" => levels.push(fills.next().unwrap()),
                "#" => levels.extend(tail.iter().cloned()),
                l => levels.push(l.to_owned()),
            }
        }
        let name = levels.join("/");
        prop_assume!(valid_topic_name(&name));
        let dollar_guard = name.starts_with('$') && filter.starts_with(['+', '#']);
        prop_assert_eq!(matches(&filter, &name), !dollar_guard, "{:?} vs {:?}", filter, name);
    }

    #[test]
    fn every_valid_packet_round_trips(owned in any_packet()) {
        let packet = owned.packet();
        let bytes = owned.encode();
        prop_assert_eq!(packet.encoded_len(), Ok(bytes.len()));
        prop_assert_eq!(
            decode(&bytes, DEFAULT_MAX_PACKET_SIZE),
            Ok(Decoded::Packet(packet.clone(), bytes.len()))
        );
        // The body alone decodes the same way.
        let header_len = bytes[1..].iter().position(|b| b & 0x80 == 0).unwrap() + 2;
        prop_assert_eq!(decode_body(bytes[0], &bytes[header_len..]), Ok(packet));
        // Appending after existing bytes writes the same bytes.
        let mut out = vec![0xee; 3];
        owned.packet().encode(&mut out).unwrap();
        prop_assert_eq!(&out[3..], &bytes[..]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in binary(600),
        max in prop_oneof![Just(DEFAULT_MAX_PACKET_SIZE), 0usize..700],
    ) {
        let (packets, used, end) = decode_stream(&bytes, max);
        prop_assert!(used <= bytes.len());
        for p in &packets {
            assert_reencodes(p);
        }
        if let Ok(n) = end {
            prop_assert!(n >= 1);
        }
        if let Err(CodecError::PacketTooLarge { size, max: m }) = end {
            prop_assert!(size > m && m == max);
        }
    }

    /// Arbitrary bodies behind every possible first byte.
    #[test]
    fn arbitrary_bodies_never_panic(byte1 in any::<u8>(), body in binary(80)) {
        if let Ok(p) = decode_body(byte1, &body) {
            prop_assert_eq!(p.packet_type(), byte1 >> 4);
            assert_reencodes(&p);
        }
    }

    /// Mostly-valid input: one valid packet with one byte changed.
    #[test]
    fn mutated_packets_never_panic(
        owned in any_packet(),
        at in any::<prop::sample::Index>(),
        value in any::<u8>(),
    ) {
        let mut bytes = owned.encode();
        let i = at.index(bytes.len());
        bytes[i] = value;
        let (packets, _, _) = decode_stream(&bytes, DEFAULT_MAX_PACKET_SIZE);
        for p in &packets {
            assert_reencodes(p);
        }
    }

    #[test]
    fn stream_fed_in_random_chunks_yields_the_same_packets(
        owned in prop::collection::vec(any_packet(), 1..8),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let stream: Vec<u8> = owned.iter().flat_map(Owned::encode).collect();

        // Whole stream at once.
        let (whole, used, end) = decode_stream(&stream, DEFAULT_MAX_PACKET_SIZE);
        prop_assert_eq!(used, stream.len());
        prop_assert_eq!(end, Ok(2));
        let expected: Vec<Packet<'_>> = owned.iter().map(Owned::packet).collect();
        prop_assert_eq!(&whole, &expected);

        // Incrementally: accumulate chunks, decode whenever possible.
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        cuts.push(stream.len());
        cuts.sort_unstable();
        let mut buf: Vec<u8> = Vec::new();
        let mut fed = 0;
        let mut next = 0;
        for cut in cuts {
            buf.extend_from_slice(&stream[fed..cut]);
            fed = cut;
            loop {
                match decode(&buf, DEFAULT_MAX_PACKET_SIZE) {
                    Ok(Decoded::Packet(p, n)) => {
                        prop_assert_eq!(&p, &expected[next]);
                        next += 1;
                        buf.drain(..n);
                    }
                    Ok(Decoded::Incomplete(n)) => {
                        // Never more than what the stream still holds.
                        prop_assert!(n >= 1);
                        if next < expected.len() {
                            prop_assert!(n <= stream.len() - fed);
                        }
                        break;
                    }
                    Err(e) => prop_assert!(false, "error {:?} in a valid stream", e),
                }
            }
        }
        prop_assert_eq!(next, expected.len());
        prop_assert!(buf.is_empty());
    }

    /// Incomplete(n) never overstates: with fewer than n more bytes the
    /// packet is still incomplete, and n more bytes is never beyond its end.
    #[test]
    fn incomplete_never_overstates(
        owned in any_packet(),
        k in any::<prop::sample::Index>(),
        m in any::<prop::sample::Index>(),
    ) {
        let bytes = owned.encode();
        let k = k.index(bytes.len());
        let Ok(Decoded::Incomplete(n)) = decode(&bytes[..k], DEFAULT_MAX_PACKET_SIZE) else {
            panic!("prefix {k} of {bytes:02x?} is not incomplete");
        };
        prop_assert!(n >= 1);
        prop_assert!(k + n <= bytes.len(), "Incomplete({}) at {} of {}", n, k, bytes.len());
        let m = m.index(n);
        let more = decode(&bytes[..k + m], DEFAULT_MAX_PACKET_SIZE);
        prop_assert!(
            matches!(more, Ok(Decoded::Incomplete(_))),
            "{} + {} < {} bytes gave {:?}", k, m, k + n, more
        );
        // Once the fixed header is complete, n is exact.
        let header_len = bytes[1..].iter().position(|b| b & 0x80 == 0).unwrap() + 2;
        if k >= header_len {
            prop_assert_eq!(k + n, bytes.len());
        }
    }
}

// ------------------------------------------------------------ MQTT 5.0

/// Owned data an MQTT 5 `Packet` can borrow from; every packet carries a
/// property section (possibly empty).
#[derive(Clone, Debug)]
enum Owned5 {
    Connect {
        client_id: String,
        clean_start: bool,
        keep_alive: u16,
        will: Option<(String, Vec<u8>, QoS, bool, PropertiesBuf)>,
        username: Option<String>,
        password: Option<Vec<u8>>,
        props: PropertiesBuf,
    },
    ConnAck {
        session_present: bool,
        reason_code: u8,
        props: PropertiesBuf,
    },
    Publish {
        dup: bool,
        qos: QoS,
        retain: bool,
        topic: String,
        pkid: u16,
        payload: Vec<u8>,
        props: PropertiesBuf,
    },
    /// PUBACK, PUBREC, PUBREL or PUBCOMP (packet type 4..=7).
    Ack {
        packet_type: u8,
        pkid: u16,
        reason_code: u8,
        props: PropertiesBuf,
    },
    Subscribe {
        pkid: u16,
        filters: Vec<(String, SubscribeOptions)>,
        props: PropertiesBuf,
    },
    SubAck {
        pkid: u16,
        codes: Vec<u8>,
        props: PropertiesBuf,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
        props: PropertiesBuf,
    },
    UnsubAck {
        pkid: u16,
        codes: Vec<u8>,
        props: PropertiesBuf,
    },
    PingReq,
    PingResp,
    Disconnect {
        reason_code: u8,
        props: PropertiesBuf,
    },
    Auth {
        reason_code: u8,
        props: PropertiesBuf,
    },
}

impl Owned5 {
    fn packet(&self) -> Packet<'_> {
        match self {
            Owned5::Connect {
                client_id,
                clean_start,
                keep_alive,
                will,
                username,
                password,
                props,
            } => Packet::Connect(Connect {
                client_id,
                clean_session: *clean_start,
                keep_alive: *keep_alive,
                will: will
                    .as_ref()
                    .map(|(topic, payload, qos, retain, p)| LastWill {
                        topic,
                        payload,
                        qos: *qos,
                        retain: *retain,
                        properties: Some(p.as_properties()),
                    }),
                username: username.as_deref(),
                password: password.as_deref(),
                properties: Some(props.as_properties()),
            }),
            Owned5::ConnAck {
                session_present,
                reason_code,
                props,
            } => Packet::ConnAck(ConnAck {
                session_present: *session_present,
                reason_code: *reason_code,
                properties: Some(props.as_properties()),
            }),
            Owned5::Publish {
                dup,
                qos,
                retain,
                topic,
                pkid,
                payload,
                props,
            } => Packet::Publish(Publish {
                dup: *dup,
                qos: *qos,
                retain: *retain,
                topic,
                pkid: *pkid,
                payload,
                properties: Some(props.as_properties()),
            }),
            Owned5::Ack {
                packet_type,
                pkid,
                reason_code,
                props,
            } => {
                let ack = Ack {
                    pkid: *pkid,
                    reason_code: *reason_code,
                    properties: Some(props.as_properties()),
                };
                match packet_type {
                    4 => Packet::PubAck(ack),
                    5 => Packet::PubRec(ack),
                    6 => Packet::PubRel(ack),
                    _ => Packet::PubComp(ack),
                }
            }
            Owned5::Subscribe {
                pkid,
                filters,
                props,
            } => Packet::Subscribe(Subscribe {
                pkid: *pkid,
                filters: filters.iter().map(|(f, o)| (f.as_str(), *o)).collect(),
                properties: Some(props.as_properties()),
            }),
            Owned5::SubAck { pkid, codes, props } => Packet::SubAck(SubAck {
                pkid: *pkid,
                return_codes: codes,
                properties: Some(props.as_properties()),
            }),
            Owned5::Unsubscribe {
                pkid,
                filters,
                props,
            } => Packet::Unsubscribe(Unsubscribe {
                pkid: *pkid,
                filters: filters.iter().map(String::as_str).collect(),
                properties: Some(props.as_properties()),
            }),
            Owned5::UnsubAck { pkid, codes, props } => Packet::UnsubAck(UnsubAck {
                pkid: *pkid,
                reason_codes: codes,
                properties: Some(props.as_properties()),
            }),
            Owned5::PingReq => Packet::PingReq,
            Owned5::PingResp => Packet::PingResp,
            Owned5::Disconnect { reason_code, props } => Packet::Disconnect(Disconnect {
                reason_code: *reason_code,
                properties: Some(props.as_properties()),
            }),
            Owned5::Auth { reason_code, props } => Packet::Auth(Auth {
                reason_code: *reason_code,
                properties: Some(props.as_properties()),
            }),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let packet = self.packet();
        let n = packet
            .encode(&mut out)
            .unwrap_or_else(|e| panic!("valid packet {packet:?} failed to encode: {e}"));
        assert_eq!(n, out.len());
        out
    }
}

/// One property of `id` with a valid value derived from the seeds.
fn push_property(buf: &mut PropertiesBuf, id: u8, n: u32, a: &str, b: &str, bin: &[u8]) {
    let nonzero = matches!(
        id,
        props::RECEIVE_MAXIMUM
            | props::TOPIC_ALIAS
            | props::MAXIMUM_PACKET_SIZE
            | props::SUBSCRIPTION_IDENTIFIER
    );
    let result = match property_type(id).unwrap() {
        PropertyType::Byte => buf.push_int(id, n % 2),
        PropertyType::TwoByte if nonzero => buf.push_int(id, 1 + n % 0xffff),
        PropertyType::TwoByte => buf.push_int(id, n % 0x1_0000),
        PropertyType::FourByte => buf.push_int(id, if nonzero { n.max(1) } else { n }),
        // Small and large values, across the 1- to 4-byte encodings.
        PropertyType::VarInt => buf.push_int(id, 1 + (n >> (n % 28)) % 268_435_455),
        PropertyType::String => buf.push_str(id, a),
        PropertyType::Binary => buf.push_bin(id, bin),
        PropertyType::StringPair => buf.push_user(a, b),
    };
    result.unwrap_or_else(|e| panic!("property {id:#x} from ({n}, {a:?}, {b:?}): {e}"));
}

/// A valid property list for `ctx`: any allowed properties, each at most
/// once unless repeatable there.
fn properties(ctx: PropertyContext) -> impl Strategy<Value = PropertiesBuf> {
    let ids: Vec<u8> = (0..=255u8).filter(|&id| allowed(id, ctx)).collect();
    let one = (
        prop::sample::select(ids),
        any::<u32>(),
        mqtt_string(),
        mqtt_string(),
        binary(20),
    );
    prop_oneof![
        1 => Just(PropertiesBuf::new()),
        4 => prop::collection::vec(one, 0..7).prop_map(move |list| {
            let mut buf = PropertiesBuf::new();
            for (id, n, a, b, bin) in list {
                if !repeatable(id, ctx) && buf.as_properties().get(id).is_some() {
                    continue;
                }
                push_property(&mut buf, id, n, &a, &b, &bin);
            }
            buf
        }),
    ]
}

fn reason_code(packet_type: u8) -> impl Strategy<Value = u8> {
    let codes: Vec<u8> = (0..=255u8)
        .filter(|&c| valid_reason_code(packet_type, c))
        .collect();
    prop_oneof![1 => Just(0u8), 2 => prop::sample::select(codes)]
}

fn subscribe_options() -> impl Strategy<Value = SubscribeOptions> {
    (qos(), any::<bool>(), any::<bool>(), 0u8..=2).prop_map(
        |(qos, no_local, retain_as_published, retain_handling)| SubscribeOptions {
            qos,
            no_local,
            retain_as_published,
            retain_handling,
        },
    )
}

fn connect5() -> impl Strategy<Value = Owned5> {
    (
        mqtt_string(),
        any::<bool>(),
        any::<u16>(),
        prop::option::of((
            topic_name(),
            binary(40),
            qos(),
            any::<bool>(),
            properties(PropertyContext::Will),
        )),
        prop::option::of(mqtt_string()),
        prop::option::of(binary(40)),
        properties(PropertyContext::Connect),
    )
        .prop_map(
            |(client_id, clean_start, keep_alive, will, username, password, props)| {
                Owned5::Connect {
                    client_id,
                    clean_start,
                    keep_alive,
                    will,
                    username,
                    password,
                    props,
                }
            },
        )
}

fn connack5() -> impl Strategy<Value = Owned5> {
    (
        any::<bool>(),
        reason_code(2),
        properties(PropertyContext::ConnAck),
    )
        .prop_map(|(session_present, reason_code, props)| Owned5::ConnAck {
            session_present: session_present && reason_code == 0,
            reason_code,
            props,
        })
}

fn publish5() -> impl Strategy<Value = Owned5> {
    (
        any::<bool>(),
        qos(),
        any::<bool>(),
        prop_oneof![4 => topic_name(), 1 => Just(String::new())],
        pkid(),
        binary(300),
        properties(PropertyContext::Publish),
        1..=u16::MAX,
    )
        .prop_map(
            |(dup, qos, retain, topic, pkid, payload, mut list, alias)| {
                // An empty topic stands for a Topic Alias.
                if topic.is_empty() && list.as_properties().get(props::TOPIC_ALIAS).is_none() {
                    list.push_int(props::TOPIC_ALIAS, alias.into()).unwrap();
                }
                let qos0 = qos == QoS::AtMostOnce;
                Owned5::Publish {
                    dup: dup && !qos0,
                    qos,
                    retain,
                    topic,
                    pkid: if qos0 { 0 } else { pkid },
                    payload,
                    props: list,
                }
            },
        )
}

fn ack5() -> impl Strategy<Value = Owned5> {
    (4u8..=7).prop_flat_map(|packet_type| {
        let ctx = [
            PropertyContext::PubAck,
            PropertyContext::PubRec,
            PropertyContext::PubRel,
            PropertyContext::PubComp,
        ][packet_type as usize - 4];
        (pkid(), reason_code(packet_type), properties(ctx)).prop_map(
            move |(pkid, reason_code, props)| Owned5::Ack {
                packet_type,
                pkid,
                reason_code,
                props,
            },
        )
    })
}

/// A filter, sometimes a shared subscription (which refuses No Local).
fn filter5() -> impl Strategy<Value = (String, SubscribeOptions)> {
    (topic_filter(), subscribe_options(), any::<bool>()).prop_map(|(filter, options, shared)| {
        if shared {
            (
                format!("$share/group/{filter}"),
                SubscribeOptions {
                    no_local: false,
                    ..options
                },
            )
        } else {
            (filter, options)
        }
    })
}

fn any_packet5() -> impl Strategy<Value = Owned5> {
    prop_oneof![
        connect5(),
        connack5(),
        publish5(),
        ack5(),
        (
            pkid(),
            prop::collection::vec(filter5(), 1..5),
            properties(PropertyContext::Subscribe)
        )
            .prop_map(|(pkid, filters, props)| Owned5::Subscribe {
                pkid,
                filters,
                props
            }),
        (
            pkid(),
            prop::collection::vec(reason_code(9), 1..8),
            properties(PropertyContext::SubAck)
        )
            .prop_map(|(pkid, codes, props)| Owned5::SubAck { pkid, codes, props }),
        (
            pkid(),
            prop::collection::vec(topic_filter(), 1..5),
            properties(PropertyContext::Unsubscribe)
        )
            .prop_map(|(pkid, filters, props)| Owned5::Unsubscribe {
                pkid,
                filters,
                props
            }),
        (
            pkid(),
            prop::collection::vec(reason_code(11), 1..8),
            properties(PropertyContext::UnsubAck)
        )
            .prop_map(|(pkid, codes, props)| Owned5::UnsubAck { pkid, codes, props }),
        Just(Owned5::PingReq),
        Just(Owned5::PingResp),
        (reason_code(14), properties(PropertyContext::Disconnect))
            .prop_map(|(reason_code, props)| Owned5::Disconnect { reason_code, props }),
        (reason_code(15), properties(PropertyContext::Auth))
            .prop_map(|(reason_code, props)| Owned5::Auth { reason_code, props }),
    ]
}

const ALL_CONTEXTS: [PropertyContext; 14] = [
    PropertyContext::Connect,
    PropertyContext::ConnAck,
    PropertyContext::Publish,
    PropertyContext::Will,
    PropertyContext::PubAck,
    PropertyContext::PubRec,
    PropertyContext::PubRel,
    PropertyContext::PubComp,
    PropertyContext::Subscribe,
    PropertyContext::SubAck,
    PropertyContext::Unsubscribe,
    PropertyContext::UnsubAck,
    PropertyContext::Disconnect,
    PropertyContext::Auth,
];

const V5: ProtocolVersion = ProtocolVersion::V5;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_valid_v5_packet_round_trips(owned in any_packet5()) {
        let packet = owned.packet();
        let bytes = owned.encode();
        prop_assert_eq!(packet.encoded_len(), Ok(bytes.len()));
        prop_assert_eq!(
            decode_as(&bytes, DEFAULT_MAX_PACKET_SIZE, V5),
            Ok(Decoded::Packet(packet.clone(), bytes.len()))
        );
        let header_len = bytes[1..].iter().position(|b| b & 0x80 == 0).unwrap() + 2;
        prop_assert_eq!(decode_body_as(bytes[0], &bytes[header_len..], V5), Ok(packet.clone()));
        // The decoded properties read back as generated.
        if let Some(p) = packet.properties() {
            let again = Properties::parse(p.as_bytes(), context_of(&packet)).unwrap();
            prop_assert_eq!(again.iter().collect::<Vec<_>>(), p.iter().collect::<Vec<_>>());
        }
        let mut out = vec![0xee; 3];
        owned.packet().encode(&mut out).unwrap();
        prop_assert_eq!(&out[3..], &bytes[..]);
    }

    #[test]
    fn arbitrary_bytes_never_panic_v5(
        bytes in binary(600),
        max in prop_oneof![Just(DEFAULT_MAX_PACKET_SIZE), 0usize..700],
    ) {
        let (packets, used, end) = decode_stream_as(&bytes, max, V5);
        prop_assert!(used <= bytes.len());
        for p in &packets {
            assert_reencodes_as(p, V5);
        }
        if let Ok(n) = end {
            prop_assert!(n >= 1);
        }
        if let Err(CodecError::PacketTooLarge { size, max: m }) = end {
            prop_assert!(size > m && m == max);
        }
    }

    /// Arbitrary bodies behind every possible first byte, with a property
    /// section of arbitrary properties so the property parser is reached.
    #[test]
    fn arbitrary_bodies_never_panic_v5(
        byte1 in any::<u8>(),
        head in binary(6),
        section in binary(40),
        tail in binary(20),
    ) {
        let mut body = head;
        body.push(section.len() as u8);
        body.extend_from_slice(&section);
        body.extend_from_slice(&tail);
        for body in [&body[..], &section[..]] {
            if let Ok(p) = decode_body_as(byte1, body, V5) {
                prop_assert_eq!(p.packet_type(), byte1 >> 4);
                assert_reencodes_as(&p, V5);
            }
        }
    }

    /// Arbitrary property sections: parsing never panics, and what parses
    /// reads back, property by property, through a PropertiesBuf.
    #[test]
    fn arbitrary_property_sections_never_panic(section in binary(60), ctx in prop::sample::select(ALL_CONTEXTS.to_vec())) {
        if let Ok(p) = Properties::parse(&section, ctx) {
            let mut rebuilt = PropertiesBuf::new();
            for property in p.iter() {
                prop_assert!(allowed(property.id(), ctx));
                rebuilt.push(property).unwrap();
            }
            let again = Properties::parse(rebuilt.as_bytes(), ctx).unwrap();
            prop_assert_eq!(again.iter().collect::<Vec<_>>(), p.iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn mutated_v5_packets_never_panic(
        owned in any_packet5(),
        at in any::<prop::sample::Index>(),
        value in any::<u8>(),
    ) {
        let mut bytes = owned.encode();
        let i = at.index(bytes.len());
        bytes[i] = value;
        let (packets, _, _) = decode_stream_as(&bytes, DEFAULT_MAX_PACKET_SIZE, V5);
        for p in &packets {
            assert_reencodes_as(p, V5);
        }
    }

    #[test]
    fn v5_stream_fed_in_random_chunks_yields_the_same_packets(
        owned in prop::collection::vec(any_packet5(), 1..8),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let stream: Vec<u8> = owned.iter().flat_map(Owned5::encode).collect();
        let expected: Vec<Packet<'_>> = owned.iter().map(Owned5::packet).collect();

        let (whole, used, end) = decode_stream_as(&stream, DEFAULT_MAX_PACKET_SIZE, V5);
        prop_assert_eq!(used, stream.len());
        prop_assert_eq!(end, Ok(2));
        prop_assert_eq!(&whole, &expected);

        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        cuts.push(stream.len());
        cuts.sort_unstable();
        let mut buf: Vec<u8> = Vec::new();
        let mut fed = 0;
        let mut next = 0;
        for cut in cuts {
            buf.extend_from_slice(&stream[fed..cut]);
            fed = cut;
            loop {
                match decode_as(&buf, DEFAULT_MAX_PACKET_SIZE, V5) {
                    Ok(Decoded::Packet(p, n)) => {
                        prop_assert_eq!(&p, &expected[next]);
                        next += 1;
                        buf.drain(..n);
                    }
                    Ok(Decoded::Incomplete(n)) => {
                        prop_assert!(n >= 1);
                        if next < expected.len() {
                            prop_assert!(n <= stream.len() - fed);
                        }
                        break;
                    }
                    Err(e) => prop_assert!(false, "error {:?} in a valid stream", e),
                }
            }
        }
        prop_assert_eq!(next, expected.len());
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn incomplete_never_overstates_v5(
        owned in any_packet5(),
        k in any::<prop::sample::Index>(),
    ) {
        let bytes = owned.encode();
        let k = k.index(bytes.len());
        let Ok(Decoded::Incomplete(n)) = decode_as(&bytes[..k], DEFAULT_MAX_PACKET_SIZE, V5) else {
            panic!("prefix {k} of {bytes:02x?} is not incomplete");
        };
        prop_assert!(n >= 1);
        prop_assert!(k + n <= bytes.len(), "Incomplete({}) at {} of {}", n, k, bytes.len());
    }
}

/// The property context of a packet's own property section.
fn context_of(packet: &Packet<'_>) -> PropertyContext {
    match packet {
        Packet::Connect(_) => PropertyContext::Connect,
        Packet::ConnAck(_) => PropertyContext::ConnAck,
        Packet::Publish(_) => PropertyContext::Publish,
        Packet::PubAck(_) => PropertyContext::PubAck,
        Packet::PubRec(_) => PropertyContext::PubRec,
        Packet::PubRel(_) => PropertyContext::PubRel,
        Packet::PubComp(_) => PropertyContext::PubComp,
        Packet::Subscribe(_) => PropertyContext::Subscribe,
        Packet::SubAck(_) => PropertyContext::SubAck,
        Packet::Unsubscribe(_) => PropertyContext::Unsubscribe,
        Packet::UnsubAck(_) => PropertyContext::UnsubAck,
        Packet::Disconnect(_) => PropertyContext::Disconnect,
        Packet::Auth(_) => PropertyContext::Auth,
        Packet::PingReq | Packet::PingResp => unreachable!("no properties"),
    }
}

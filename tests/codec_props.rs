//! Property tests of the MQTT 3.1.1 codec: round trips of arbitrary valid
//! packets, robustness against arbitrary bytes, and incremental decoding of a
//! stream split at arbitrary points.

use mqtt::protocol::codec::{
    CodecError, ConnAck, Connect, ConnectReturnCode, DEFAULT_MAX_PACKET_SIZE, Decoded, LastWill,
    Packet, Publish, QoS, SUBACK_FAILURE, SubAck, Subscribe, Unsubscribe, decode, decode_body,
};
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
    let mut packets = Vec::new();
    let mut pos = 0;
    loop {
        match decode(&data[pos..], max) {
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
    let mut out = Vec::new();
    let n = packet
        .encode(&mut out)
        .unwrap_or_else(|e| panic!("decoded {packet:?} does not re-encode: {e}"));
    assert_eq!(
        decode(&out, usize::MAX),
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

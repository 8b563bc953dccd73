//! Drive the sans-IO `Session` with an arbitrary sequence of actions, the way
//! the reactor does: incoming bytes (raw, or packets built from fields) go
//! through the codec, API calls (publish of each QoS, subscribe, unsubscribe,
//! disconnect), timeouts with a virtual clock, partial writes, connection loss
//! and reopening. Any error the reactor would close the connection for closes
//! it here too (under MQTT 5 after the DISCONNECT with the reason code the
//! reactor sends, `Session::refuse_server`).
//!
//! The first input byte picks the protocol: bit 7 set is MQTT 5.0, clear is
//! MQTT 3.1.1 (bit 0 is the clean session flag either way), so the 3.1.1
//! inputs of `seeds/session` keep their meaning. Under MQTT 5 a few more
//! config bytes follow the 3.1.1 ones (connect properties: Receive Maximum,
//! Topic Alias Maximum, Session Expiry, an Authentication Method; our
//! `topic_alias_max`), and there are more actions: CONNACKs with arbitrary
//! valid properties (Receive Maximum, Maximum Packet Size, Maximum QoS, Retain
//! Available, Topic Alias Maximum, Server Keep Alive, Assigned Client
//! Identifier, ...) or refusals with v5 reason codes; PUBLISHes with
//! properties (topic aliases set, used, out of range or unknown, user
//! properties, subscription identifiers); acks with reason codes (refusals
//! too), SUBACK/UNSUBACK with v5 reason codes, server DISCONNECT and AUTH; the
//! API's `publish_with`, `subscribe_with` (options, subscription identifier),
//! `unsubscribe_with`, `disconnect_with` (reason codes, properties) and
//! `auth`. Everything is decoded with `codec::decode_as` in the connection's
//! protocol.
//!
//! Invariants checked after every action:
//! * no panic;
//! * `inflight_len() <= max_inflight`, the queue within its count and byte
//!   limits (MQTT 5: queue and flight together, as a server's Receive Maximum
//!   sends in-flight messages back to the queue), held incoming QoS 2 messages within `max_incoming_qos2` (MQTT 5:
//!   within the Receive Maximum we announced);
//! * the bytes written so far on this connection plus `pending_transmit()`
//!   always decode as a stream of complete, valid client packets: CONNECT
//!   first and alone until CONNACK (MQTT 5: AUTH and DISCONNECT too), nothing
//!   after DISCONNECT;
//! * mids returned by the API are unique among the flows in flight, and every
//!   acknowledgement event matches a flow of the right kind; every PUBLISH of
//!   a flow carries the topic it was published with (an alias resolved);
//! * an incoming QoS 2 message is delivered (on PUBREL) at most once per
//!   PUBLISH, with the content it was published with.
//!
//! And under MQTT 5, for what is queued after an accepted CONNACK:
//! * never more QoS 1/2 PUBLISHes written and not acknowledged (PUBACK,
//!   PUBCOMP, or a PUBREC refusal) on the connection than the server's
//!   Receive Maximum;
//! * no packet larger than the server's Maximum Packet Size;
//! * no PUBLISH above the server's Maximum QoS, nor retained when it has no
//!   Retain Available;
//! * outgoing topic aliases within 1..=min(our `topic_alias_max`, the
//!   server's Topic Alias Maximum), and an empty-topic PUBLISH only with an
//!   alias set earlier on the same connection;
//! * every message event names its full topic: non-empty, or an alias that
//!   `incoming_alias_topic` resolves to the topic the server set it to (a
//!   model of the incoming aliases decides which PUBLISHes must be refused).
//!
//! Run (nightly, `cargo install cargo-fuzz`): see `fuzz/README.md`.
#![no_main]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mqtt::Error;
use mqtt::protocol::codec::{
    self, Ack, Auth, ConnAck, ConnectReturnCode, Decoded, Disconnect, Packet, ProtocolVersion,
    Publish, QoS, SubAck, Subscribe, SubscribeOptions, UnsubAck, Unsubscribe,
};
use mqtt::protocol::properties::{self as prop, Properties, PropertiesBuf};
use mqtt::protocol::session::{ConnectionState, Incoming, Refused, Session, SessionConfig};

/// Reads the fuzz input as a stream of small numbers; zeros once exhausted.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    /// `0..n`
    fn below(&mut self, n: usize) -> usize {
        self.u8() as usize % n
    }
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }
    fn qos(&mut self) -> QoS {
        QoS::from_u8(self.u8() % 3).unwrap_or(QoS::AtMostOnce)
    }
    /// One of `items`.
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
    /// A string of 0 to 39 bytes, now and then a long one (to reach the
    /// server's Maximum Packet Size).
    fn text(&mut self, c: char) -> String {
        let n = match self.u8() {
            240..=255 => 300,
            n => n as usize % 40,
        };
        std::iter::repeat_n(c, n).collect()
    }
}

const TOPICS: [&str; 8] = ["a", "a/b", "a/b/c", "b", "$SYS/x", "x/y", "", "a/+"];
const FILTERS: [&str; 8] = ["a", "a/+", "#", "a/#", "+/+", "b", "a/#/b", ""];
/// MQTT 5 filters: a shared subscription too (no local is refused there).
const FILTERS_V5: [&str; 10] = [
    "a",
    "a/+",
    "#",
    "a/#",
    "+/+",
    "b",
    "a/#/b",
    "",
    "$share/g/a",
    "$share/g/#",
];

/// Reason codes, the valid ones of each packet first (MQTT 5.0 tables 3-1 to 3-11).
const CONNACK_REFUSALS: [u8; 22] = [
    0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97, 0x99,
    0x9A, 0x9B, 0x9C, 0x9D, 0x9F, 0x8C,
];
const PUBACK_CODES: [u8; 10] = [0x00, 0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
const PUBREL_CODES: [u8; 3] = [0x00, 0x00, 0x92];
const SUBACK_CODES: [u8; 13] = [
    0x00, 0x01, 0x02, 0x00, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
const UNSUBACK_CODES: [u8; 8] = [0x00, 0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
const SERVER_DISCONNECT_CODES: [u8; 16] = [
    0x00, 0x80, 0x81, 0x82, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x93, 0x94, 0x95, 0x97, 0x9C, 0x9D, 0xA2,
];
/// What `disconnect_with` is asked to send: valid codes, and a few a client
/// DISCONNECT may not carry.
const CLIENT_DISCONNECT_CODES: [u8; 10] =
    [0x00, 0x00, 0x04, 0x80, 0x83, 0x90, 0x98, 0x01, 0x18, 0xFF];
const AUTH_CODES: [u8; 4] = [0x18, 0x18, 0x19, 0x00];
/// The Authentication Method of the CONNECT, when the config has one.
const AUTH_METHOD: &str = "m";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Publish(QoS),
    Subscribe,
    Unsubscribe,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Held {
    topic: String,
    payload: Vec<u8>,
}

/// MQTT 5: what the server announced in its CONNACK, as read by the harness.
#[derive(Clone, Debug)]
struct Limits {
    receive_maximum: u16,
    maximum_packet_size: Option<u32>,
    maximum_qos: QoS,
    retain_available: bool,
    topic_alias_maximum: u16,
}

impl Limits {
    fn from_connack(props: Properties<'_>) -> Limits {
        Limits {
            receive_maximum: props
                .u32_of(prop::RECEIVE_MAXIMUM)
                .map_or(u16::MAX, |v| v as u16),
            maximum_packet_size: props.u32_of(prop::MAXIMUM_PACKET_SIZE),
            maximum_qos: match props.u32_of(prop::MAXIMUM_QOS) {
                Some(0) => QoS::AtMostOnce,
                Some(_) => QoS::AtLeastOnce,
                None => QoS::ExactlyOnce,
            },
            retain_available: props.u32_of(prop::RETAIN_AVAILABLE) != Some(0),
            topic_alias_maximum: props
                .u32_of(prop::TOPIC_ALIAS_MAXIMUM)
                .map_or(0, |v| v as u16),
        }
    }
}

/// What the packets of the current connection's stream established so far:
/// the written ones (`Harness::wire`), or those and the pending ones (a copy,
/// in `check`).
#[derive(Clone, Debug, Default)]
struct Wire {
    /// Index of the next packet on the connection.
    packets: usize,
    disconnect: bool,
    /// MQTT 5, once a CONNACK accepted the connection (boxed: nothing to
    /// create, copy or free for the rest).
    v5: Option<Box<V5Wire>>,
}

/// What the stream of an MQTT 5 connection established since its CONNACK.
#[derive(Clone, Debug)]
struct V5Wire {
    /// The CONNACK's limits, for packets from index `limits_from` on (the
    /// first queued after the CONNACK was handled).
    limits: Limits,
    limits_from: usize,
    /// Outgoing topic aliases set on this connection.
    aliases: BTreeMap<u16, String>,
    /// Ids of the QoS 1/2 PUBLISHes on the connection (after its CONNACK) not
    /// yet acknowledged.
    unacked: BTreeSet<u16>,
    /// Flows the server acknowledged before their PUBLISH was written (the
    /// harness's server may ack any id): that PUBLISH is acknowledged already.
    acked_unwritten: BTreeSet<u16>,
    /// Packets queued by an API call made after the CONNACK (so checked by
    /// the session against its limits), by index on the connection.
    vetted: BTreeSet<usize>,
    /// QoS 1/2 messages published after the CONNACK and queued for room in
    /// the window: id -> (topic, QoS, retain, payload length).
    vetted_queued: BTreeMap<u16, (String, QoS, bool, usize)>,
}

impl V5Wire {
    fn new(limits: Limits, limits_from: usize) -> V5Wire {
        V5Wire {
            limits,
            limits_from,
            aliases: BTreeMap::new(),
            unacked: BTreeSet::new(),
            acked_unwritten: BTreeSet::new(),
            vetted: BTreeSet::new(),
            vetted_queued: BTreeMap::new(),
        }
    }
}

/// The packets the session queued on the connection and not yet written.
struct Unwritten {
    count: usize,
    /// Ids of the QoS 1/2 PUBLISHes among them.
    publish_ids: Vec<u16>,
    /// The type and packet id (0: none) of the last one.
    last: Option<(u8, u16)>,
}

/// Whether messages and requests made before a CONNACK must obey its limits
/// too: they do, since the session refuses at the CONNACK what was queued or
/// in flight before it and breaks its limits (`Session::take_refused`), and
/// leaves out of a resubscription a filter that alone cannot fit.
/// `MQTT_FUZZ_LAX_LIMITS` set turns the check off.
static STRICT_LIMITS: LazyLock<bool> =
    LazyLock::new(|| std::env::var_os("MQTT_FUZZ_LAX_LIMITS").is_none());

/// `MQTT_FUZZ_TRACE` set: every step on stderr (to read a crash's input).
static TRACE: LazyLock<bool> = LazyLock::new(|| std::env::var_os("MQTT_FUZZ_TRACE").is_some());

macro_rules! trace {
    ($($arg:tt)*) => {
        if *TRACE {
            eprintln!($($arg)*);
        }
    };
}

struct Harness {
    session: Session,
    /// The protocol of every connection (the harness never switches).
    v5: bool,
    now: Instant,
    /// Bytes of the current connection received and not yet decoded.
    incoming: Vec<u8>,
    /// Bytes written on the current connection that do not yet form a
    /// complete packet.
    written: Vec<u8>,
    /// What the packets written on the current connection established.
    wire: Wire,
    /// The API's mids in flight: publish QoS 1/2, subscribe, unsubscribe.
    flows: HashMap<u16, Flow>,
    /// The topic of each QoS 1/2 publish flow.
    flow_topics: HashMap<u16, String>,
    /// Incoming QoS 2 messages delivered as held (PUBLISH) and not yet released.
    held: HashMap<u16, Held>,
    /// Ids seen on the wire, to aim acks at.
    known_ids: Vec<u16>,
    /// MQTT 5: the server's topic aliases on this connection (a model of
    /// what the session must resolve), and the maximum we announced.
    in_aliases: HashMap<u16, String>,
    in_alias_max: u16,
}

impl Harness {
    fn new(config: SessionConfig) -> Harness {
        Harness {
            v5: config.is_v5(),
            session: Session::new(config),
            now: Instant::now(),
            incoming: Vec::new(),
            written: Vec::new(),
            wire: Wire::default(),
            flows: HashMap::new(),
            flow_topics: HashMap::new(),
            held: HashMap::new(),
            known_ids: Vec::new(),
            in_aliases: HashMap::new(),
            in_alias_max: 0,
        }
    }

    fn version(&self) -> ProtocolVersion {
        if self.v5 {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V311
        }
    }

    fn connected(&self) -> bool {
        self.session.state() != ConnectionState::Disconnected
    }

    fn open(&mut self) {
        if self.connected() {
            return;
        }
        self.incoming.clear();
        self.written.clear();
        self.wire = Wire::default();
        self.in_aliases.clear();
        self.in_alias_max = self.session.config().incoming_topic_alias_max();
        trace!("open");
        self.session.connection_opened(self.now);
    }

    fn lose(&mut self) {
        trace!("lost");
        self.session.connection_lost(self.now);
        self.incoming.clear();
        self.written.clear();
    }

    /// The reactor closes the connection on every error: under MQTT 5 after
    /// writing a DISCONNECT that tells the server why, when there is a reason
    /// code for the error.
    fn fail(&mut self, e: Error) {
        if self.v5
            && let Some(reason_code) = e.disconnect_reason()
            && self.session.refuse_server(reason_code)
        {
            self.write(usize::MAX);
        }
        self.lose();
    }

    /// The reactor closes the connection on every error it gets back.
    fn check_result<T>(&mut self, result: Result<T, Error>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.fail(e);
                None
            }
        }
    }

    fn remember_id(&mut self, id: u16) {
        if id != 0 && !self.known_ids.contains(&id) {
            if self.known_ids.len() >= 16 {
                self.known_ids.remove(0);
            }
            self.known_ids.push(id);
        }
    }

    fn pick_id(&mut self, input: &mut Input<'_>) -> u16 {
        let choice = input.u8();
        if !self.known_ids.is_empty() && choice < 192 {
            self.known_ids[choice as usize % self.known_ids.len()]
        } else {
            choice as u16 % 8
        }
    }

    // -- API calls, as `Client` makes them --------------------------------

    fn start_flow(&mut self, mid: u16, flow: Flow) {
        if let Some(old) = self.flows.insert(mid, flow) {
            panic!("mid {mid} handed out for {flow:?} while {old:?} is in flight");
        }
    }

    fn publish(&mut self, input: &mut Input<'_>) {
        let topic = TOPICS[input.below(TOPICS.len())];
        let qos = input.qos();
        let retain = input.bool();
        let len = match input.u8() {
            250..=255 => 300,
            n => n as usize % 40,
        };
        let payload = vec![input.u8(); len];
        let (before, queued) = self.before_call();
        let result = self.session.publish(self.now, topic, &payload, qos, retain);
        trace!("publish {topic:?} {qos:?} retain {retain} {len} bytes: {result:?}");
        if let Ok(mid) = result {
            assert_ne!(mid, 0);
            self.vet(before, queued, mid, Some((topic, qos, retain, len)));
            if qos != QoS::AtMostOnce {
                self.start_flow(mid, Flow::Publish(qos));
                self.flow_topics.insert(mid, topic.to_owned());
            }
        }
    }

    fn subscribe(&mut self, input: &mut Input<'_>) {
        let n = input.below(3) + 1;
        let filters: Vec<(&str, QoS)> = (0..n)
            .map(|_| (FILTERS[input.below(FILTERS.len())], input.qos()))
            .collect();
        let (before, queued) = self.before_call();
        let result = self.session.subscribe(self.now, &filters);
        trace!("subscribe {filters:?}: {result:?}");
        if let Ok(mid) = result {
            self.vet(before, queued, mid, None);
            self.start_flow(mid, Flow::Subscribe);
        }
    }

    fn unsubscribe(&mut self, input: &mut Input<'_>) {
        let n = input.below(3) + 1;
        let filters: Vec<&str> = (0..n)
            .map(|_| FILTERS[input.below(FILTERS.len())])
            .collect();
        let result = self.session.unsubscribe(self.now, &filters);
        trace!("unsubscribe {filters:?}: {result:?}");
        if let Ok(mid) = result {
            self.start_flow(mid, Flow::Unsubscribe);
        }
    }

    /// MQTT 5 `publish_with`: PUBLISH properties, now and then one the
    /// application may not send (Topic Alias, Subscription Identifier).
    fn publish_v5(&mut self, input: &mut Input<'_>) {
        let topic = TOPICS[input.below(TOPICS.len())];
        let qos = input.qos();
        let retain = input.bool();
        let len = match input.u8() {
            250..=255 => 300,
            n => n as usize % 40,
        };
        let payload = vec![input.u8(); len];
        let flags = input.u8();
        let mut props = PropertiesBuf::new();
        if flags & 1 != 0 {
            let (key, value) = (input.text('k'), input.text('v'));
            props.push_user(&key, &value).unwrap();
        }
        if flags & 2 != 0 {
            props
                .push_int(prop::MESSAGE_EXPIRY_INTERVAL, input.u8().into())
                .unwrap();
        }
        if flags & 4 != 0 {
            props.push_str(prop::CONTENT_TYPE, "text/plain").unwrap();
        }
        if flags & 8 != 0 {
            props.push_str(prop::RESPONSE_TOPIC, "r/t").unwrap();
            props
                .push_bin(prop::CORRELATION_DATA, input.text('c').as_bytes())
                .unwrap();
        }
        if flags & 16 != 0 {
            props
                .push_int(prop::PAYLOAD_FORMAT_INDICATOR, input.below(2) as u32)
                .unwrap();
        }
        let forbidden = flags & 0xC0 == 0xC0;
        if forbidden {
            if input.bool() {
                props.push_int(prop::TOPIC_ALIAS, 1).unwrap();
            } else {
                props.push_int(prop::SUBSCRIPTION_IDENTIFIER, 1).unwrap();
            }
        }
        let limits = self.session.server_limits().clone();
        let (before, queued) = self.before_call();
        let result = self.session.publish_with(
            self.now,
            topic,
            &payload,
            qos,
            retain,
            props.as_properties(),
        );
        trace!(
            "publish_with {topic:?} {qos:?} retain {retain} {len} bytes {:?}: {result:?}",
            props.as_properties()
        );
        if forbidden {
            assert_eq!(result, Err(Error::InvalidProperty), "a forbidden property");
        }
        let Ok(mid) = result else {
            return;
        };
        assert_ne!(mid, 0);
        assert!(
            qos <= limits.maximum_qos && (!retain || limits.retain_available),
            "QoS {qos:?} retain {retain} accepted with {limits:?}"
        );
        self.vet(before, queued, mid, Some((topic, qos, retain, len)));
        if qos != QoS::AtMostOnce {
            self.start_flow(mid, Flow::Publish(qos));
            self.flow_topics.insert(mid, topic.to_owned());
        }
    }

    /// MQTT 5 `subscribe_with`: subscription options and a Subscription
    /// Identifier, user properties.
    fn subscribe_v5(&mut self, input: &mut Input<'_>) {
        let n = input.below(3) + 1;
        let filters: Vec<(&str, SubscribeOptions)> = (0..n)
            .map(|_| {
                let filter = FILTERS_V5[input.below(FILTERS_V5.len())];
                let options = input.u8();
                let options = SubscribeOptions {
                    qos: QoS::from_u8(options % 3).unwrap_or(QoS::AtMostOnce),
                    no_local: options & 0x04 != 0,
                    retain_as_published: options & 0x08 != 0,
                    retain_handling: (options >> 4) & 3,
                };
                (filter, options)
            })
            .collect();
        let flags = input.u8();
        let mut props = PropertiesBuf::new();
        if flags & 1 != 0 {
            let id = match input.u8() {
                255 => prop::MAX_VARIABLE_BYTE_INTEGER,
                n => 1 + u32::from(n % 4),
            };
            props.push_int(prop::SUBSCRIPTION_IDENTIFIER, id).unwrap();
        }
        if flags & 2 != 0 {
            let (key, value) = (input.text('k'), input.text('v'));
            props.push_user(&key, &value).unwrap();
        }
        let forbidden = flags & 0x0C == 0x0C;
        if forbidden {
            props.push_int(prop::TOPIC_ALIAS, 1).unwrap();
        }
        let (before, queued) = self.before_call();
        let result = self
            .session
            .subscribe_with(self.now, &filters, props.as_properties());
        trace!(
            "subscribe_with {filters:?} {:?}: {result:?}",
            props.as_properties()
        );
        if filters.iter().any(|(_, o)| o.retain_handling > 2) {
            assert!(result.is_err(), "retain handling 3 accepted");
        }
        if let Ok(mid) = result {
            assert!(!forbidden, "a Topic Alias in SUBSCRIBE accepted");
            self.vet(before, queued, mid, None);
            self.start_flow(mid, Flow::Subscribe);
        }
    }

    fn unsubscribe_v5(&mut self, input: &mut Input<'_>) {
        let n = input.below(3) + 1;
        let filters: Vec<&str> = (0..n)
            .map(|_| FILTERS_V5[input.below(FILTERS_V5.len())])
            .collect();
        let mut props = PropertiesBuf::new();
        if input.bool() {
            let (key, value) = (input.text('k'), input.text('v'));
            props.push_user(&key, &value).unwrap();
        }
        let (before, queued) = self.before_call();
        let result = self
            .session
            .unsubscribe_with(self.now, &filters, props.as_properties());
        trace!(
            "unsubscribe_with {filters:?} {:?}: {result:?}",
            props.as_properties()
        );
        if let Ok(mid) = result {
            self.vet(before, queued, mid, None);
            self.start_flow(mid, Flow::Unsubscribe);
        }
    }

    fn disconnect_v5(&mut self, input: &mut Input<'_>) {
        let reason_code = input.pick(&CLIENT_DISCONNECT_CODES);
        let flags = input.u8();
        let mut props = PropertiesBuf::new();
        if flags & 1 != 0 {
            props
                .push_str(prop::REASON_STRING, &input.text('r'))
                .unwrap();
        }
        if flags & 2 != 0 {
            let (key, value) = (input.text('k'), input.text('v'));
            props.push_user(&key, &value).unwrap();
        }
        if flags & 4 != 0 {
            let expiry = input.pick(&[0, 0, 60]);
            props
                .push_int(prop::SESSION_EXPIRY_INTERVAL, expiry)
                .unwrap();
        }
        let result = self
            .session
            .disconnect_with(self.now, reason_code, props.as_properties());
        trace!(
            "disconnect_with {reason_code:#04x} {:?}: {result:?}",
            props.as_properties()
        );
        if !codec::valid_reason_code(14, reason_code) {
            assert_eq!(
                result,
                Err(Error::InvalidArgument),
                "DISCONNECT {reason_code:#x}"
            );
        }
        if result.is_ok() {
            assert_eq!(self.session.state(), ConnectionState::Disconnecting);
        }
    }

    fn auth(&mut self, input: &mut Input<'_>) {
        let reason_code = input.pick(&AUTH_CODES);
        let flags = input.u8();
        let mut props = PropertiesBuf::new();
        if flags & 1 != 0 {
            let method = if flags & 2 != 0 { "other" } else { AUTH_METHOD };
            props.push_str(prop::AUTHENTICATION_METHOD, method).unwrap();
        }
        if flags & 4 != 0 {
            props
                .push_bin(prop::AUTHENTICATION_DATA, input.text('d').as_bytes())
                .unwrap();
        }
        if flags & 8 != 0 {
            let (key, value) = (input.text('k'), input.text('v'));
            props.push_user(&key, &value).unwrap();
        }
        let result = self.session.auth(reason_code, props.as_properties());
        trace!(
            "auth {reason_code:#04x} {:?}: {result:?}",
            props.as_properties()
        );
        if reason_code == 0 {
            assert!(result.is_err(), "AUTH 0x00 from the client accepted");
        }
    }

    // -- Incoming -------------------------------------------------------------

    /// Bytes from the broker, decoded as the reactor does.
    fn receive(&mut self, bytes: &[u8]) {
        if self.session.state() == ConnectionState::Disconnected {
            return;
        }
        self.incoming.extend_from_slice(bytes);
        let max = self.session.config().max_packet_size as usize;
        let version = self.version();
        let buf = std::mem::take(&mut self.incoming);
        let mut start = 0;
        loop {
            match codec::decode_as(&buf[start..], max, version) {
                Ok(Decoded::Packet(packet, used)) => {
                    start += used;
                    if !self.deliver(packet) {
                        return;
                    }
                }
                Ok(Decoded::Incomplete(_)) => break,
                Err(e) => {
                    self.fail(Error::from_codec(e));
                    return;
                }
            }
        }
        self.incoming = buf[start..].to_vec();
    }

    /// MQTT 5: the full topic of an incoming PUBLISH by the harness's model of
    /// the aliases, or the error the session must refuse it with.
    fn expected_topic(&self, p: &Publish<'_>) -> Result<String, Error> {
        if p.qos != QoS::AtMostOnce && p.pkid == 0 {
            // Hand-built only: refused before its topic is looked at.
            return Err(Error::MalformedPacket);
        }
        match p
            .properties
            .and_then(|props| props.u32_of(prop::TOPIC_ALIAS))
        {
            None => Ok(p.topic.to_owned()),
            Some(alias) if alias == 0 || alias > self.in_alias_max.into() => {
                Err(Error::TopicAliasInvalid)
            }
            Some(alias) if p.topic.is_empty() => self
                .in_aliases
                .get(&(alias as u16))
                .cloned()
                .ok_or(Error::ProtocolViolation),
            Some(_) => Ok(p.topic.to_owned()),
        }
    }

    /// One packet into the session; false when the connection was closed.
    fn deliver(&mut self, packet: Packet<'_>) -> bool {
        let state = self.session.state();
        let was_awaiting = state == ConnectionState::AwaitingConnAck;
        // Outgoing packets queued before a CONNACK are not bound by its limits.
        let queued_before = match &packet {
            Packet::ConnAck(_) if self.v5 => self.unwritten().count,
            _ => 0,
        };
        let pubrec_refused = matches!(
            packet,
            Packet::PubRec(Ack {
                reason_code: 0x80..,
                ..
            })
        );
        // MQTT 5: the topic the PUBLISH stands for, and the alias it sets.
        let mut expected_topic = None;
        let mut alias_set = None;
        if let Packet::Publish(p) = &packet
            && self.v5
        {
            let expected = self.expected_topic(p);
            let alias = p
                .properties
                .and_then(|props| props.u32_of(prop::TOPIC_ALIAS));
            if let (Some(alias), Ok(_), false) = (alias, &expected, p.topic.is_empty()) {
                alias_set = Some((alias as u16, p.topic.to_owned()));
            }
            expected_topic = Some(expected);
        }
        let qos2 = match &packet {
            Packet::Publish(p) if p.qos == QoS::ExactlyOnce => Some(Held {
                topic: match &expected_topic {
                    Some(Ok(topic)) => topic.clone(),
                    Some(Err(_)) => String::new(),
                    None => p.topic.to_owned(),
                },
                payload: p.payload.to_vec(),
            }),
            _ => None,
        };
        trace!("<- {packet:?}");
        let result = self.session.handle_packet(self.now, packet);
        trace!("   {result:?}");
        if let Some(expected) = &expected_topic
            && matches!(
                state,
                ConnectionState::Connected | ConnectionState::Disconnecting
            )
        {
            match (expected, &result) {
                (Err(e), result) => assert_eq!(
                    result.as_ref().err(),
                    Some(e),
                    "an incoming PUBLISH with a bad topic alias"
                ),
                (Ok(_), Err(e)) => assert!(
                    !matches!(e, Error::TopicAliasInvalid),
                    "a valid topic alias refused"
                ),
                (Ok(_), Ok(_)) => {
                    if let Some((alias, topic)) = alias_set {
                        self.in_aliases.insert(alias, topic);
                    }
                }
            }
        }
        let Some(incoming) = self.check_result(result) else {
            return false;
        };
        let Some(incoming) = incoming else {
            return true;
        };
        match incoming {
            Incoming::ConnAck(ack) => {
                assert!(was_awaiting, "CONNACK event outside the handshake");
                let accepted = if self.v5 {
                    ack.is_success()
                } else {
                    ack.code() == Some(ConnectReturnCode::Accepted)
                };
                if !accepted {
                    assert_eq!(self.session.state(), ConnectionState::Disconnected);
                    assert!(self.session.pending_transmit().is_empty());
                    self.lose();
                    return false;
                }
                if !ack.session_present {
                    // The broker forgot the incoming QoS 2 flows.
                    self.held.clear();
                }
                // PUBREC'd QoS 2 messages given up for want of a session end
                // their flows too (never with the session kept).
                for id in self.session.take_unresolved() {
                    assert!(!ack.session_present, "{id} given up with the session kept");
                    self.finish(id, Flow::Publish(QoS::ExactlyOnce));
                }
                // Accepted before this CONNACK, above its limits: refused,
                // never sent, their flows ended by the refusal.
                for (id, what, error) in self.session.take_refused() {
                    assert!(self.v5, "{what:?} {id} refused under 3.1.1");
                    assert!(matches!(error, Error::PacketTooLarge | Error::NotSupported));
                    let flow = match what {
                        Refused::Publish(QoS::AtMostOnce) => continue,
                        Refused::Publish(qos) => Flow::Publish(qos),
                        Refused::Subscribe => Flow::Subscribe,
                        Refused::Unsubscribe => Flow::Unsubscribe,
                    };
                    self.finish(id, flow);
                    if let Some(v5) = &mut self.wire.v5 {
                        v5.vetted_queued.remove(&id);
                    }
                }
                if self.v5 {
                    let props = ack.properties.unwrap_or_default();
                    let limits = Limits::from_connack(props);
                    let known = self.session.server_limits();
                    assert_eq!(
                        (
                            known.receive_maximum,
                            known.maximum_packet_size,
                            known.maximum_qos,
                            known.retain_available,
                            known.topic_alias_maximum
                        ),
                        (
                            limits.receive_maximum,
                            limits.maximum_packet_size,
                            limits.maximum_qos,
                            limits.retain_available,
                            limits.topic_alias_maximum
                        ),
                        "the session's server limits"
                    );
                    if let Some(id) = props.str_of(prop::ASSIGNED_CLIENT_IDENTIFIER) {
                        assert_eq!(self.session.config().client_id, id);
                    }
                    let from = self.wire.packets + queued_before;
                    self.wire.v5 = Some(Box::new(V5Wire::new(limits, from)));
                }
            }
            Incoming::Publish { mid, message } => match message {
                Some(m) => {
                    assert_eq!(m.mid, mid);
                    assert_ne!(m.qos, QoS::ExactlyOnce, "QoS 2 delivered on PUBLISH");
                    if self.v5 {
                        let full = if m.topic.is_empty() {
                            let alias = m
                                .properties
                                .and_then(|p| p.u32_of(prop::TOPIC_ALIAS))
                                .expect("a message without topic nor alias");
                            self.session
                                .incoming_alias_topic(alias as u16)
                                .expect("a message whose alias the session cannot resolve")
                        } else {
                            m.topic
                        };
                        let expected = expected_topic.and_then(Result::ok);
                        assert_eq!(Some(full), expected.as_deref(), "message topic");
                    }
                }
                None => {
                    // A QoS 2 message is now held until its PUBREL.
                    let content = qos2.expect("held event for a packet that is not QoS 2");
                    if let Some(old) = self.held.insert(mid, content) {
                        panic!("QoS 2 message {mid} held twice (first {old:?})");
                    }
                }
            },
            Incoming::PubRel { mid, message } => {
                if let Some(m) = message {
                    let Some(held) = self.held.remove(&mid) else {
                        panic!("QoS 2 message {mid} delivered without a PUBLISH since its release");
                    };
                    assert_eq!(
                        (m.topic.as_str(), &m.payload[..]),
                        (&held.topic[..], &held.payload[..])
                    );
                    assert_eq!(m.mid, mid);
                    assert_eq!(m.qos, QoS::ExactlyOnce);
                } else {
                    assert!(!self.held.contains_key(&mid), "held message {mid} lost");
                }
            }
            Incoming::PubAck(id) => {
                self.finish(id, Flow::Publish(QoS::AtLeastOnce));
                self.acknowledged(id);
            }
            Incoming::PubRec(id) if pubrec_refused => {
                // A refusal ends the flow.
                self.finish(id, Flow::Publish(QoS::ExactlyOnce));
                self.acknowledged(id);
            }
            Incoming::PubRec(id) => assert_eq!(
                self.flows.get(&id),
                Some(&Flow::Publish(QoS::ExactlyOnce)),
                "PUBREC event for {id}"
            ),
            Incoming::PubComp(id) => {
                self.finish(id, Flow::Publish(QoS::ExactlyOnce));
                self.acknowledged(id);
            }
            Incoming::SubAck { mid, return_codes } => {
                assert!(!return_codes.is_empty());
                self.finish(mid, Flow::Subscribe);
            }
            Incoming::UnsubAck(id) => self.finish(id, Flow::Unsubscribe),
            Incoming::PingResp => {}
            Incoming::Disconnect(_) => {
                assert!(self.v5, "a server DISCONNECT under 3.1.1");
                assert!(!was_awaiting, "a server DISCONNECT before CONNACK");
                // The reactor closes the connection.
                self.lose();
                return false;
            }
            Incoming::Auth(auth) => {
                assert!(self.v5, "AUTH under 3.1.1");
                assert!(
                    auth.reason_code != 0x19,
                    "a re-authentication started by the server"
                );
            }
        }
        true
    }

    fn finish(&mut self, id: u16, expected: Flow) {
        let flow = self.flows.remove(&id);
        assert_eq!(
            flow,
            Some(expected),
            "acknowledgement event for {id}, which stands for {flow:?}"
        );
        self.flow_topics.remove(&id);
    }

    /// The PUBLISH of flow `id` is acknowledged: it no longer counts against
    /// the server's Receive Maximum.
    fn acknowledged(&mut self, id: u16) {
        let Some(v5) = &mut self.wire.v5 else {
            return;
        };
        if v5.unacked.remove(&id) {
            return;
        }
        if self.unwritten().publish_ids.contains(&id)
            && let Some(v5) = &mut self.wire.v5
        {
            v5.acked_unwritten.insert(id);
        }
    }

    /// The complete packets not yet written on this connection (the partly
    /// written one included).
    fn unwritten(&self) -> Unwritten {
        let mut stream = self.written.clone();
        stream.extend_from_slice(self.session.peek_transmit());
        let mut rest = &stream[..];
        let mut unwritten = Unwritten {
            count: 0,
            publish_ids: Vec::new(),
            last: None,
        };
        while let Ok(Decoded::Packet(packet, used)) =
            codec::decode_as(rest, usize::MAX, self.version())
        {
            let pkid = match &packet {
                Packet::Publish(p) => p.pkid,
                Packet::Subscribe(s) => s.pkid,
                Packet::Unsubscribe(u) => u.pkid,
                _ => 0,
            };
            if let Packet::Publish(p) = &packet
                && p.qos != QoS::AtMostOnce
            {
                unwritten.publish_ids.push(p.pkid);
            }
            unwritten.count += 1;
            unwritten.last = Some((packet.packet_type(), pkid));
            rest = &rest[used..];
        }
        unwritten
    }

    /// MQTT 5: the state and the number of unwritten packets before an API
    /// call, for `vet`.
    fn before_call(&self) -> (ConnectionState, usize) {
        if !self.v5 {
            return (self.session.state(), 0);
        }
        (self.session.state(), self.unwritten().count)
    }

    /// MQTT 5: the API call made in state `before` (with `queued` packets
    /// unwritten) returned `mid`: mark what it queued as checked against this
    /// connection's limits. `publish`: the message's topic, QoS, retain flag
    /// and payload length.
    fn vet(
        &mut self,
        before: ConnectionState,
        queued: usize,
        mid: u16,
        publish: Option<(&str, QoS, bool, usize)>,
    ) {
        if !self.v5 || before != ConnectionState::Connected || self.wire.v5.is_none() {
            return;
        }
        let now = self.unwritten();
        let last = self.wire.packets + now.count.saturating_sub(1);
        let Some(v5) = &mut self.wire.v5 else {
            return;
        };
        match publish {
            Some((_, QoS::AtMostOnce, ..)) | None => {
                // Written at once, alone.
                if now.count == queued + 1 {
                    v5.vetted.insert(last);
                }
            }
            Some((topic, qos, retain, len)) => {
                // Written at once (last, after what a raised window let
                // through), or queued.
                if now.count > queued && now.last.is_some_and(|(kind, id)| kind == 3 && id == mid) {
                    v5.vetted.insert(last);
                } else {
                    v5.vetted_queued
                        .insert(mid, (topic.to_owned(), qos, retain, len));
                }
            }
        }
    }

    /// A packet built from fields, sent through the codec when it encodes
    /// (as the broker's bytes would), handed over directly when it does not
    /// (id 0: the session must refuse it on its own).
    fn receive_packet(&mut self, input: &mut Input<'_>) {
        if self.session.state() == ConnectionState::Disconnected {
            return;
        }
        let id = self.pick_id(input);
        let codes_buf: Vec<u8> = (0..input.below(4))
            .map(|_| [0, 1, 2, 0x80][input.below(4)])
            .collect();
        let payload_len = input.below(16);
        let payload = input.bytes(payload_len).to_vec();
        let topic = TOPICS[input.below(6)];
        let packet = match input.below(16) {
            0 => Packet::ConnAck(ConnAck::new(
                input.bool(),
                ConnectReturnCode::from_u8(input.u8() % 8 % 6)
                    .unwrap_or(ConnectReturnCode::Accepted),
            )),
            1..=3 => {
                let qos = input.qos();
                Packet::Publish(Publish {
                    dup: qos != QoS::AtMostOnce && input.bool(),
                    qos,
                    retain: input.bool(),
                    topic,
                    pkid: if qos == QoS::AtMostOnce { 0 } else { id },
                    payload: &payload,
                    properties: None,
                })
            }
            4 | 5 => Packet::puback(id),
            6 => Packet::pubrec(id),
            7 | 8 => Packet::pubrel(id),
            9 => Packet::pubcomp(id),
            10 => Packet::SubAck(SubAck {
                pkid: id,
                return_codes: &codes_buf,
                properties: None,
            }),
            11 => Packet::unsuback(id),
            12 => Packet::PingResp,
            13 => Packet::PingReq,
            14 => Packet::Subscribe(Subscribe {
                pkid: id.max(1),
                filters: vec![("a", QoS::AtMostOnce.into())],
                properties: None,
            }),
            _ => Packet::Unsubscribe(Unsubscribe {
                pkid: id.max(1),
                filters: vec!["a"],
                properties: None,
            }),
        };
        self.receive_built(packet);
    }

    /// A built packet from the server: through the codec when it encodes.
    fn receive_built(&mut self, packet: Packet<'_>) {
        let mut bytes = Vec::new();
        match packet.encode(&mut bytes) {
            Ok(_) => self.receive(&bytes),
            // Only between two packets: it stands for a whole packet.
            Err(_) if self.incoming.is_empty() => {
                self.deliver(packet);
            }
            Err(_) => {}
        }
    }

    /// MQTT 5: a server packet in MQTT 5 form, with properties and reason codes.
    fn receive_packet_v5(&mut self, input: &mut Input<'_>) {
        if self.session.state() == ConnectionState::Disconnected {
            return;
        }
        let id = self.pick_id(input);
        let mut props = PropertiesBuf::new();
        if input.u8() >= 224 {
            props
                .push_str(prop::REASON_STRING, &input.text('r'))
                .unwrap();
        }
        let codes: Vec<u8>;
        let payload: Vec<u8>;
        let packet = match input.below(16) {
            0 => {
                let session_present = input.bool();
                let reason_code = match input.u8() {
                    0..=191 => 0,
                    n => CONNACK_REFUSALS[n as usize % CONNACK_REFUSALS.len()],
                };
                connack_properties(input, &mut props);
                Packet::ConnAck(ConnAck {
                    // A refusal has no session [MQTT-3.2.2-6].
                    session_present: session_present && reason_code == 0,
                    reason_code,
                    properties: Some(props.as_properties()),
                })
            }
            1..=5 => {
                let len = input.below(16);
                payload = input.bytes(len).to_vec();
                let qos = input.qos();
                let (dup, retain) = (input.bool(), input.bool());
                let flags = input.u8();
                let mut topic = TOPICS[input.below(6)];
                // The reason string is not a PUBLISH property.
                props.clear();
                if flags & 1 != 0 {
                    let alias = 1 + input.below(usize::from(self.in_alias_max) + 1) as u32;
                    props.push_int(prop::TOPIC_ALIAS, alias).unwrap();
                    if flags & 2 != 0 {
                        topic = "";
                    }
                }
                if flags & 4 != 0 {
                    let (key, value) = (input.text('k'), input.text('v'));
                    props.push_user(&key, &value).unwrap();
                }
                if flags & 8 != 0 {
                    for _ in 0..1 + input.below(2) {
                        let id = match input.u8() {
                            255 => prop::MAX_VARIABLE_BYTE_INTEGER,
                            n => 1 + u32::from(n % 4),
                        };
                        props.push_int(prop::SUBSCRIPTION_IDENTIFIER, id).unwrap();
                    }
                }
                if flags & 16 != 0 {
                    props
                        .push_int(prop::MESSAGE_EXPIRY_INTERVAL, input.u8().into())
                        .unwrap();
                    props.push_str(prop::CONTENT_TYPE, "t").unwrap();
                }
                if flags & 32 != 0 {
                    props.push_str(prop::RESPONSE_TOPIC, "r").unwrap();
                    props.push_bin(prop::CORRELATION_DATA, b"c").unwrap();
                }
                Packet::Publish(Publish {
                    dup: qos != QoS::AtMostOnce && dup,
                    qos,
                    retain,
                    topic,
                    pkid: if qos == QoS::AtMostOnce { 0 } else { id },
                    payload: &payload,
                    properties: Some(props.as_properties()),
                })
            }
            6 | 7 => Packet::PubAck(Ack {
                pkid: id,
                reason_code: input.pick(&PUBACK_CODES),
                properties: Some(props.as_properties()),
            }),
            8 => Packet::PubRec(Ack {
                pkid: id,
                reason_code: input.pick(&PUBACK_CODES),
                properties: Some(props.as_properties()),
            }),
            9 => Packet::PubRel(Ack {
                pkid: id,
                reason_code: input.pick(&PUBREL_CODES),
                properties: Some(props.as_properties()),
            }),
            10 => Packet::PubComp(Ack {
                pkid: id,
                reason_code: input.pick(&PUBREL_CODES),
                properties: Some(props.as_properties()),
            }),
            11 => {
                codes = (0..input.below(4))
                    .map(|_| input.pick(&SUBACK_CODES))
                    .collect();
                Packet::SubAck(SubAck {
                    pkid: id,
                    return_codes: &codes,
                    properties: Some(props.as_properties()),
                })
            }
            12 => {
                codes = (0..input.below(4))
                    .map(|_| input.pick(&UNSUBACK_CODES))
                    .collect();
                Packet::UnsubAck(UnsubAck {
                    pkid: id,
                    reason_codes: &codes,
                    properties: Some(props.as_properties()),
                })
            }
            13 => {
                let reason_code = input.pick(&SERVER_DISCONNECT_CODES);
                if input.bool() {
                    let reference = input.pick(&["b.example:1884", "[::1]", ""]);
                    props.push_str(prop::SERVER_REFERENCE, reference).unwrap();
                }
                Packet::Disconnect(Disconnect {
                    reason_code,
                    properties: Some(props.as_properties()),
                })
            }
            14 => {
                let reason_code = input.pick(&[0x18, 0x18, 0x00, 0x19]);
                match input.below(4) {
                    0 => {}
                    1 => props.push_str(prop::AUTHENTICATION_METHOD, "x").unwrap(),
                    _ => props
                        .push_str(prop::AUTHENTICATION_METHOD, AUTH_METHOD)
                        .unwrap(),
                }
                if input.bool() {
                    props
                        .push_bin(prop::AUTHENTICATION_DATA, input.text('d').as_bytes())
                        .unwrap();
                }
                Packet::Auth(Auth {
                    reason_code,
                    properties: Some(props.as_properties()),
                })
            }
            _ => match input.below(3) {
                0 => Packet::PingResp,
                1 => Packet::PingReq,
                _ => Packet::Unsubscribe(Unsubscribe {
                    pkid: id.max(1),
                    filters: vec!["a"],
                    properties: Some(Properties::EMPTY),
                }),
            },
        };
        self.receive_built(packet);
    }

    /// Accept the connection as a broker would, with or without session
    /// (MQTT 5: with CONNACK properties from the input).
    fn accept(&mut self, input: &mut Input<'_>) {
        if self.session.state() != ConnectionState::AwaitingConnAck {
            return;
        }
        let present = input.bool();
        if !self.v5 {
            self.receive(&[0x20, 0x02, present as u8, 0x00]);
            return;
        }
        let mut props = PropertiesBuf::new();
        connack_properties(input, &mut props);
        self.receive_built(Packet::ConnAck(ConnAck {
            session_present: present,
            reason_code: 0,
            properties: Some(props.as_properties()),
        }));
    }

    // -- Outgoing -------------------------------------------------------------

    /// The reactor wrote `n` bytes of `pending_transmit()`.
    fn write(&mut self, n: usize) {
        if !self.connected() {
            return;
        }
        let pending = self.session.pending_transmit();
        let n = n.min(pending.len());
        self.written.extend_from_slice(&pending[..n]);
        self.session.consume_transmit(self.now, n);
        // Strip the packets completed by these bytes.
        let mut start = 0;
        let mut ids = Vec::new();
        let mut wire = std::mem::take(&mut self.wire);
        loop {
            match codec::decode_as(&self.written[start..], usize::MAX, self.version()) {
                Ok(Decoded::Packet(packet, used)) => {
                    start += used;
                    match &packet {
                        Packet::Publish(p) => ids.push(p.pkid),
                        Packet::Subscribe(s) => ids.push(s.pkid),
                        Packet::Unsubscribe(u) => ids.push(u.pkid),
                        Packet::PubRel(Ack { pkid, .. }) => ids.push(*pkid),
                        _ => {}
                    }
                    trace!("-> {packet:?}");
                    self.observe(&mut wire, &packet, used);
                }
                Ok(Decoded::Incomplete(_)) => break,
                Err(e) => panic!("written bytes do not decode: {e}"),
            }
        }
        self.wire = wire;
        self.written.drain(..start);
        for id in ids {
            self.remember_id(id);
        }
        // After a requested disconnect, the reactor closes the socket once
        // everything queued is written.
        if self.session.state() == ConnectionState::Disconnecting
            && self.session.pending_transmit().is_empty()
        {
            self.lose();
        }
    }

    fn advance(&mut self, input: &mut Input<'_>) {
        let step = match input.u8() {
            0..=199 => Duration::from_millis(input.u16() as u64),
            200..=249 => Duration::from_secs(input.u8() as u64),
            _ => self
                .session
                .poll_timeout()
                .map(|t| t.saturating_duration_since(self.now))
                .unwrap_or(Duration::ZERO),
        };
        self.now += step;
        if self.session.state() != ConnectionState::Disconnected {
            let result = self.session.handle_timeout(self.now);
            trace!("+{step:?}: {result:?}");
            self.check_result(result);
        }
    }

    // -- Invariants -----------------------------------------------------------

    /// One packet of the connection's stream (written, or pending), `used`
    /// bytes long, at index `wire.packets`.
    fn observe(&self, wire: &mut Wire, packet: &Packet<'_>, used: usize) {
        let s = &self.session;
        let config = s.config();
        let index = wire.packets;
        assert!(!wire.disconnect, "{packet:?} queued after DISCONNECT");
        if self.v5 {
            // Our own limit bounds what the application sends.
            if matches!(
                packet,
                Packet::Publish(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_)
            ) {
                assert!(
                    used <= config.max_packet_size as usize,
                    "{used} bytes: {packet:?}"
                );
            }
        } else {
            assert!(
                used <= config.max_packet_size as usize || matches!(packet, Packet::Connect(_))
            );
        }
        match packet {
            Packet::Connect(_) => assert_eq!(index, 0, "CONNECT not first"),
            _ if index == 0 => panic!("{packet:?} before CONNECT"),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                panic!("server packet {packet:?} from the client")
            }
            Packet::Disconnect(_) => wire.disconnect = true,
            // Enhanced authentication goes on before CONNACK.
            Packet::Auth(_) if self.v5 => {}
            _ => assert_ne!(
                s.state(),
                ConnectionState::AwaitingConnAck,
                "{packet:?} before CONNACK"
            ),
        }
        wire.packets += 1;

        // Every PUBLISH of a flow names the topic it was published with.
        // The topic of a PUBLISH that uses an alias set earlier.
        let mut aliased: Option<String> = None;
        if let Some(v5) = wire.v5.as_deref_mut().filter(|v5| index >= v5.limits_from) {
            let limits = v5.limits.clone();
            if let Packet::Publish(p) = packet {
                match p
                    .properties
                    .and_then(|props| props.u32_of(prop::TOPIC_ALIAS))
                {
                    None => assert!(!p.topic.is_empty(), "empty topic without alias"),
                    Some(alias) => {
                        let max = config.topic_alias_max.min(limits.topic_alias_maximum);
                        assert!(
                            (1..=u32::from(max)).contains(&alias),
                            "topic alias {alias}, maximum {max}"
                        );
                        let alias = alias as u16;
                        if p.topic.is_empty() {
                            let set = v5.aliases.get(&alias);
                            assert!(set.is_some(), "topic alias {alias} used before it was set");
                            aliased = set.cloned();
                        } else {
                            v5.aliases.insert(alias, p.topic.to_owned());
                        }
                    }
                }
                if p.qos != QoS::AtMostOnce && !v5.acked_unwritten.remove(&p.pkid) {
                    v5.unacked.insert(p.pkid);
                    assert!(
                        v5.unacked.len() <= limits.receive_maximum.into(),
                        "{} QoS 1/2 PUBLISHes unacknowledged, the server's Receive Maximum is {}",
                        v5.unacked.len(),
                        limits.receive_maximum
                    );
                }
            }
            // What was made before the CONNACK is not held to its limits
            // unless asked (see `STRICT_LIMITS`).
            let vetted = v5.vetted.contains(&index)
                || match packet {
                    Packet::Publish(p) => {
                        let topic = aliased.as_deref().unwrap_or(p.topic);
                        let this = (p.qos, p.retain, p.payload.len());
                        let vetted = p.qos != QoS::AtMostOnce
                            && v5
                                .vetted_queued
                                .get(&p.pkid)
                                .is_some_and(|(t, q, r, l)| t == topic && (*q, *r, *l) == this);
                        if vetted {
                            v5.vetted_queued.remove(&p.pkid);
                        }
                        vetted
                    }
                    Packet::Subscribe(_) | Packet::Unsubscribe(_) => false,
                    _ => true,
                };
            if vetted || *STRICT_LIMITS {
                if let Some(max) = limits.maximum_packet_size {
                    assert!(
                        used <= max as usize,
                        "{used} bytes, above the server's Maximum Packet Size {max}: {packet:?}"
                    );
                }
                if let Packet::Publish(p) = packet {
                    assert!(
                        p.qos <= limits.maximum_qos,
                        "{:?} above the server's Maximum QoS {:?}",
                        p.qos,
                        limits.maximum_qos
                    );
                    assert!(
                        !p.retain || limits.retain_available,
                        "retained PUBLISH without Retain Available"
                    );
                }
            }
        }
        if let Packet::Publish(p) = packet
            && p.qos != QoS::AtMostOnce
            && let Some(published) = self.flow_topics.get(&p.pkid)
        {
            assert_eq!(
                aliased.as_deref().unwrap_or(p.topic),
                published,
                "the topic of PUBLISH {}",
                p.pkid
            );
        }
    }

    fn check(&self) {
        let s = &self.session;
        let config = s.config();
        assert!(
            s.inflight_len() <= config.max_inflight.max(1) as usize,
            "{} in flight, max {}",
            s.inflight_len(),
            config.max_inflight
        );
        if self.v5 {
            // A server Receive Maximum below what is in flight sends the
            // surplus back to the front of the queue, whatever its limits: the
            // messages were accepted already. Together they stay bounded.
            let window = config.max_inflight.max(1) as usize;
            assert!(
                s.queued_len() + s.inflight_len() <= config.max_queued_messages as usize + window,
                "{} queued + {} in flight",
                s.queued_len(),
                s.inflight_len()
            );
            assert!(
                s.queued_bytes()
                    <= config.max_queued_bytes as usize + window * config.max_packet_size as usize
            );
        } else {
            assert!(s.queued_len() <= config.max_queued_messages as usize);
            assert!(s.queued_bytes() <= config.max_queued_bytes as usize);
        }
        if self.v5 {
            assert!(s.held_incoming_len() <= config.receive_maximum().into());
        } else {
            assert!(s.held_incoming_len() <= config.max_incoming_qos2 as usize);
        }
        assert_eq!(s.held_incoming_len(), self.held.len(), "held messages");
        let publishes = self
            .flows
            .values()
            .filter(|f| matches!(f, Flow::Publish(_)))
            .count();
        let requests = self.flows.len() - publishes;
        assert!(
            s.inflight_len() + s.queued_len() >= publishes,
            "{publishes} QoS 1/2 publishes outstanding, {} in flight + {} queued",
            s.inflight_len(),
            s.queued_len()
        );
        assert!(s.inflight_len() <= publishes);
        assert!(s.pending_requests_len() >= requests);

        // The connection's byte stream: complete, valid client packets.
        let pending = s.peek_transmit();
        if s.state() == ConnectionState::Disconnected {
            assert!(pending.is_empty(), "bytes pending without a connection");
            return;
        }
        let mut stream = self.written.clone();
        stream.extend_from_slice(pending);
        let mut rest = &stream[..];
        let mut wire = self.wire.clone();
        while !rest.is_empty() {
            let (packet, used) = match codec::decode_as(rest, usize::MAX, self.version()) {
                Ok(Decoded::Packet(p, used)) => (p, used),
                other => panic!("pending bytes are not whole packets: {other:?}"),
            };
            self.observe(&mut wire, &packet, used);
            rest = &rest[used..];
        }
    }
}

/// MQTT 5: CONNACK properties, each there or not: the limits the session
/// obeys, and a few it only records.
fn connack_properties(input: &mut Input<'_>, props: &mut PropertiesBuf) {
    let flags = input.u8();
    if flags & 1 != 0 {
        let receive_maximum = match input.u8() {
            255 => u32::from(u16::MAX),
            n => 1 + u32::from(n % 8),
        };
        props
            .push_int(prop::RECEIVE_MAXIMUM, receive_maximum)
            .unwrap();
    }
    if flags & 2 != 0 {
        let maximum_packet_size = match input.u8() {
            250..=255 => u32::MAX,
            n => 12 + u32::from(n),
        };
        props
            .push_int(prop::MAXIMUM_PACKET_SIZE, maximum_packet_size)
            .unwrap();
    }
    if flags & 4 != 0 {
        props
            .push_int(prop::MAXIMUM_QOS, input.below(2) as u32)
            .unwrap();
    }
    if flags & 8 != 0 {
        props
            .push_int(prop::RETAIN_AVAILABLE, input.below(2) as u32)
            .unwrap();
    }
    if flags & 16 != 0 {
        props
            .push_int(prop::TOPIC_ALIAS_MAXIMUM, input.below(5) as u32)
            .unwrap();
    }
    if flags & 32 != 0 {
        props
            .push_int(prop::SERVER_KEEP_ALIVE, input.below(4) as u32)
            .unwrap();
    }
    if flags & 64 != 0 {
        let id = input.pick(&["srv-1", "srv-2", "fuzz"]);
        props
            .push_str(prop::ASSIGNED_CLIENT_IDENTIFIER, id)
            .unwrap();
    }
    if flags & 128 != 0 {
        let more = input.u8();
        if more & 1 != 0 {
            props
                .push_int(prop::SESSION_EXPIRY_INTERVAL, input.u8().into())
                .unwrap();
        }
        for (bit, id) in [
            (2, prop::WILDCARD_SUBSCRIPTION_AVAILABLE),
            (4, prop::SUBSCRIPTION_IDENTIFIER_AVAILABLE),
            (8, prop::SHARED_SUBSCRIPTION_AVAILABLE),
        ] {
            if more & bit != 0 {
                props.push_int(id, input.below(2) as u32).unwrap();
            }
        }
        if more & 16 != 0 {
            let (key, value) = (input.text('k'), input.text('v'));
            props.push_user(&key, &value).unwrap();
        }
        if more & 32 != 0 {
            props
                .push_str(prop::AUTHENTICATION_METHOD, AUTH_METHOD)
                .unwrap();
        }
    }
}

fn config(input: &mut Input<'_>) -> SessionConfig {
    let first = input.u8();
    let mut config = SessionConfig {
        client_id: "fuzz".into(),
        clean_session: first & 1 == 1,
        keep_alive: input.below(4) as u16,
        connect_timeout_ms: 1_000 * (1 + input.below(10) as u32),
        max_inflight: 1 + input.below(6) as u16,
        max_queued_messages: 1 + input.below(12) as u32,
        max_queued_bytes: 1 + input.below(256) as u32,
        queue_qos0_offline: input.bool(),
        max_incoming_qos2: 1 + input.below(6) as u16,
        max_packet_size: 16 + input.below(240) as u32,
        resubscribe: input.bool(),
        ..SessionConfig::default()
    };
    if first & 0x80 != 0 {
        config.protocol = ProtocolVersion::V5;
        let flags = input.u8();
        let props = &mut config.extras_mut().connect_properties;
        if flags & 1 != 0 {
            props
                .push_int(prop::RECEIVE_MAXIMUM, 1 + input.below(8) as u32)
                .unwrap();
        }
        if flags & 2 != 0 {
            props
                .push_int(prop::TOPIC_ALIAS_MAXIMUM, input.below(5) as u32)
                .unwrap();
        }
        if flags & 4 != 0 {
            let expiry = input.pick(&[0, 30, u32::MAX]);
            props
                .push_int(prop::SESSION_EXPIRY_INTERVAL, expiry)
                .unwrap();
        }
        if flags & 8 != 0 {
            props
                .push_str(prop::AUTHENTICATION_METHOD, AUTH_METHOD)
                .unwrap();
        }
        if flags & 16 != 0 {
            // The server assigns one.
            config.client_id = Default::default();
        }
        config.topic_alias_max = input.below(5) as u16;
    }
    config
}

fn run(data: &[u8]) {
    let mut input = Input { data };
    let mut h = Harness::new(config(&mut input));
    h.check();
    let actions = if h.v5 { 24 } else { 16 };
    while !input.is_empty() {
        match input.below(actions) {
            0 => h.open(),
            1 => h.lose(),
            2 => {
                let n = input.below(48);
                let bytes = input.bytes(n).to_vec();
                h.receive(&bytes);
            }
            3..=5 if h.v5 => h.receive_packet_v5(&mut input),
            3..=5 => h.receive_packet(&mut input),
            6 | 7 if h.v5 => h.publish_v5(&mut input),
            6 | 7 => h.publish(&mut input),
            8 if h.v5 => h.subscribe_v5(&mut input),
            8 => h.subscribe(&mut input),
            9 if h.v5 => h.unsubscribe_v5(&mut input),
            9 => h.unsubscribe(&mut input),
            10 | 11 | 21 => {
                let n = match input.u8() {
                    0..=127 => usize::MAX,
                    n => n as usize % 24,
                };
                h.write(n);
            }
            12 | 22 => h.advance(&mut input),
            13 => h.accept(&mut input),
            14 if h.v5 => h.disconnect_v5(&mut input),
            14 => {
                let _ = h.session.disconnect(h.now);
            }
            15 => {
                // Raise the window, as `set_max_inflight` may at any time.
                let config = h.session.config_mut();
                config.max_inflight = (config.max_inflight + input.below(3) as u16).min(16);
            }
            // MQTT 5 only from here.
            16..=18 => h.receive_packet_v5(&mut input),
            19 => h.publish_v5(&mut input),
            20 => h.auth(&mut input),
            _ => {
                // The plain 3.1.1-style calls on an MQTT 5 session.
                if input.bool() {
                    h.publish(&mut input);
                } else {
                    h.subscribe(&mut input);
                }
            }
        }
        h.check();
    }
}

fuzz_target!(|data: &[u8]| run(data));

//! The QoS engine: packet ids, in-flight tables, the offline queue, keepalive
//! deadlines and the resend rules after a reconnection.
//!
//! Sans-IO: the reactor feeds it decoded packets, timer expiries and the number
//! of bytes it managed to write; the session answers with user-facing events
//! and bytes to transmit. Every input that depends on time carries `now`, so
//! tests drive it with a virtual clock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::protocol::codec::{
    self, Ack, CodecError, ConnAck, LastWill, Packet, ProtocolVersion, Publish, QoS,
    SubscribeOptions,
};
use crate::protocol::outbox::Outbox;
use crate::protocol::properties::{self as prop, Properties, PropertiesBuf, PropertyContext};
use crate::protocol::short_str::ShortStr;
use crate::protocol::stamp::Stamp;
use crate::protocol::subscriptions::Subscriptions;
use crate::protocol::topic;
use crate::protocol::v5::{AliasUse, IncomingAliases, OutgoingAliases, ServerLimits};
use crate::store::{self, Durable, Record, Store, SyncMode};

/// The last will the broker publishes if the connection ends without DISCONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
}

/// Everything the session needs to know before connecting. Fields that go into
/// CONNECT (client id, credentials, will, keepalive) are read at
/// `connection_opened`; the limits are read whenever they are checked.
#[derive(Clone)]
pub struct SessionConfig {
    pub client_id: ShortStr,
    pub clean_session: bool,
    /// Seconds; 0 disables keepalive.
    pub keep_alive: u16,
    /// Credentials, will, MQTT 5 CONNECT and will properties, and the limits
    /// (see `extras` and `limits`).
    pub extras: Option<Box<ConfigExtras>>,
    /// QoS 0 publish while not connected: queue it (true) or `Err(NotConnected)`.
    pub queue_qos0_offline: bool,
    /// After a CONNACK without a session, subscribe again to the tracked filters.
    pub resubscribe: bool,
    /// MQTT 3.1.1 (the default) or 5.0, from the next connection.
    pub protocol: ProtocolVersion,
}

/// How much a session may hold and send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// CONNACK must arrive within this after `connection_opened` (ms).
    pub connect_timeout_ms: u32,
    /// Outgoing QoS 1/2 messages in flight at once (0 is treated as 1).
    pub max_inflight: u16,
    /// Outgoing messages waiting (offline, or the in-flight window is full).
    pub max_queued_messages: u32,
    /// Sum of topic + payload bytes of the waiting messages.
    pub max_queued_bytes: u32,
    /// Bytes written to the connection's buffer and not yet to the socket,
    /// beyond which a QoS 0 publish while connected is refused (`QueueFull`):
    /// a burst faster than the network must not grow memory without bound.
    pub max_unsent_bytes: u32,
    /// Incoming QoS 2 messages held between PUBLISH and PUBREL.
    pub max_incoming_qos2: u16,
    /// Largest outgoing PUBLISH (or SUBSCRIBE/UNSUBSCRIBE), fixed header included.
    pub max_packet_size: u32,
    /// MQTT 5: topic aliases we may assign to outgoing PUBLISHes (also bounded
    /// by the server's Topic Alias Maximum); 0 sends none.
    pub topic_alias_max: u16,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        connect_timeout_ms: 10_000,
        max_inflight: 20,
        max_queued_messages: 10_000,
        max_queued_bytes: 64 * 1024 * 1024,
        max_unsent_bytes: DEFAULT_MAX_UNSENT_BYTES as u32,
        max_incoming_qos2: 1000,
        max_packet_size: codec::DEFAULT_MAX_PACKET_SIZE as u32,
        topic_alias_max: 0,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// What a config holds besides the client id and the flags: what a CONNECT
/// may carry, and the limits. Boxed in `SessionConfig`: most clients leave
/// all of it at its default, and thousands of idle ones share a reactor.
#[derive(Clone, Default)]
pub struct ConfigExtras {
    pub username: Option<String>,
    pub password: Option<Vec<u8>>,
    pub will: Option<Will>,
    /// MQTT 5: the application's CONNECT properties (checked for CONNECT when
    /// set). The session adds Receive Maximum, Maximum Packet Size and, for a
    /// persistent session, Session Expiry Interval where they are absent.
    pub connect_properties: PropertiesBuf,
    /// MQTT 5 will properties (will delay, message expiry, ...), sent with the
    /// will when there is one.
    pub will_properties: PropertiesBuf,
    pub limits: Limits,
}

/// What a config without `ConfigExtras` reads.
static NO_EXTRAS: ConfigExtras = ConfigExtras {
    username: None,
    password: None,
    will: None,
    connect_properties: PropertiesBuf::new(),
    will_properties: PropertiesBuf::new(),
    limits: Limits::DEFAULT,
};

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            client_id: ShortStr::default(),
            clean_session: true,
            keep_alive: 60,
            extras: None,
            queue_qos0_offline: false,
            resubscribe: true,
            protocol: ProtocolVersion::V311,
        }
    }
}

// Hand-written so that a logged config never leaks the password.
impl fmt::Debug for SessionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionConfig")
            .field("client_id", &self.client_id)
            .field("clean_session", &self.clean_session)
            .field("keep_alive", &self.keep_alive)
            .field("username", &self.extras().username)
            .field(
                "password",
                &self.extras().password.as_ref().map(|_| "<redacted>"),
            )
            .field("will", &self.extras().will)
            .field("queue_qos0_offline", &self.queue_qos0_offline)
            .field("resubscribe", &self.resubscribe)
            .field("protocol", &self.protocol)
            .field("connect_properties", &self.extras().connect_properties)
            .field("limits", self.limits())
            .field("will_properties", &self.extras().will_properties)
            .finish()
    }
}

/// A size or count limit as `SessionConfig` keeps it: 32 bits, so that an
/// idle client of thousands holds less (a larger value means no limit in
/// practice, and is kept as `u32::MAX`).
pub fn saturate(limit: usize) -> u32 {
    u32::try_from(limit).unwrap_or(u32::MAX)
}

/// A duration as the session and the client's options keep it: whole
/// milliseconds, rounded up (a short one does not become 0), at most
/// `u32::MAX` (49 days).
pub(crate) fn whole_millis(d: Duration) -> u32 {
    u32::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u32::MAX)
}

impl SessionConfig {
    /// CONNACK must arrive within this after `connection_opened`.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.limits().connect_timeout_ms.into())
    }

    /// Whole milliseconds, rounded up (see `whole_millis`).
    pub fn set_connect_timeout(&mut self, timeout: Duration) {
        let ms = whole_millis(timeout);
        self.update_limits(|limits| limits.connect_timeout_ms = ms);
    }

    pub fn is_v5(&self) -> bool {
        self.protocol == ProtocolVersion::V5
    }

    /// How much the session may hold and send.
    pub fn limits(&self) -> &Limits {
        &self.extras().limits
    }

    /// The same to change (the extras are allocated at first need).
    pub fn limits_mut(&mut self) -> &mut Limits {
        &mut self.extras_mut().limits
    }

    /// `change` applied to the limits; one that changes nothing (setting a
    /// default, say) allocates nothing.
    pub fn update_limits(&mut self, change: impl FnOnce(&mut Limits)) {
        let mut limits = self.limits().clone();
        change(&mut limits);
        if limits != *self.limits() {
            *self.limits_mut() = limits;
        }
    }

    /// Credentials, will, MQTT 5 CONNECT properties and limits (the defaults
    /// when unset).
    pub fn extras(&self) -> &ConfigExtras {
        self.extras.as_deref().unwrap_or(&NO_EXTRAS)
    }

    /// The same to change, allocated at first need.
    pub fn extras_mut(&mut self) -> &mut ConfigExtras {
        self.extras.get_or_insert_with(Default::default)
    }

    /// `extras_mut`, except that clearing what nobody set allocates nothing.
    pub fn extras_to_set(&mut self, clearing: bool) -> Option<&mut ConfigExtras> {
        if clearing && self.extras.is_none() {
            return None;
        }
        Some(self.extras_mut())
    }

    /// The CONNECT properties sent: the application's, plus what the session
    /// announces by itself where the application set nothing:
    /// - Receive Maximum: `max_incoming_qos2` (capped at 65535), enforced;
    /// - Maximum Packet Size: `max_packet_size`, enforced;
    /// - Session Expiry Interval 0xFFFFFFFF (never) with `clean_session` false,
    ///   so that a persistent session outlives the connection as in 3.1.1
    ///   (without it MQTT 5 ends the session when the connection ends).
    fn connect_properties_into(&self, out: &mut PropertiesBuf) {
        let given = self.extras().connect_properties.as_properties();
        out.set(given);
        if given.get(prop::RECEIVE_MAXIMUM).is_none() {
            let _ = out.push_int(prop::RECEIVE_MAXIMUM, self.receive_maximum().into());
        }
        if given.get(prop::MAXIMUM_PACKET_SIZE).is_none() {
            let _ = out.push_int(prop::MAXIMUM_PACKET_SIZE, self.limits().max_packet_size);
        }
        if given.get(prop::SESSION_EXPIRY_INTERVAL).is_none() && !self.clean_session {
            let _ = out.push_int(prop::SESSION_EXPIRY_INTERVAL, u32::MAX);
        }
    }

    /// The Receive Maximum we announce and enforce on incoming QoS 1/2 flows.
    pub fn receive_maximum(&self) -> u16 {
        self.extras()
            .connect_properties
            .as_properties()
            .u32_of(prop::RECEIVE_MAXIMUM)
            .map_or_else(|| self.limits().max_incoming_qos2.max(1), |v| v as u16)
    }

    /// The Topic Alias Maximum we announce for incoming PUBLISHes (0: none).
    pub fn incoming_topic_alias_max(&self) -> u16 {
        if !self.is_v5() {
            return 0;
        }
        self.extras()
            .connect_properties
            .as_properties()
            .u32_of(prop::TOPIC_ALIAS_MAXIMUM)
            .map_or(0, |v| v as u16)
    }

    /// The Session Expiry Interval the CONNECT carries (0 under 3.1.1 and for
    /// a clean session without one).
    fn session_expiry(&self) -> u32 {
        if !self.is_v5() {
            return 0;
        }
        match self
            .extras()
            .connect_properties
            .as_properties()
            .u32_of(prop::SESSION_EXPIRY_INTERVAL)
        {
            Some(v) => v,
            None if !self.clean_session => u32::MAX,
            None => 0,
        }
    }

    fn connect_packet<'a>(&'a self, props: &'a PropertiesBuf) -> Packet<'a> {
        let v5 = self.is_v5();
        Packet::Connect(codec::Connect {
            client_id: &self.client_id,
            clean_session: self.clean_session,
            keep_alive: self.keep_alive,
            will: self.extras().will.as_ref().map(|w| LastWill {
                topic: &w.topic,
                payload: &w.payload,
                qos: w.qos,
                retain: w.retain,
                properties: v5.then(|| self.extras().will_properties.as_properties()),
            }),
            username: self.extras().username.as_deref(),
            password: self.extras().password.as_deref(),
            properties: v5.then(|| props.as_properties()),
        })
    }

    /// Whether a CONNECT can be built from this config (string lengths, NUL
    /// characters, will topic, password without user name). Lets a caller
    /// reject a bad option before connecting; `connection_opened` with an
    /// invalid config makes the next `handle_timeout` return this error.
    pub fn validate(&self) -> Result<()> {
        // A zero-byte client id is only allowed with a clean session
        // [MQTT-3.1.3-7]; MQTT 5 lets the server assign one either way.
        if self.client_id.is_empty() && !self.clean_session && !self.is_v5() {
            return Err(Error::InvalidArgument);
        }
        let mut props = PropertiesBuf::new();
        self.connect_properties_into(&mut props);
        self.connect_packet(&props)
            .encoded_len()
            .map(drop)
            .map_err(encode_error)
    }
}

fn encode_error(e: CodecError) -> Error {
    match e {
        CodecError::UnknownProperty(_)
        | CodecError::PropertyNotAllowed { .. }
        | CodecError::DuplicateProperty(_)
        | CodecError::InvalidPropertyValue(_)
        | CodecError::WrongPropertyType(_) => Error::InvalidProperty,
        CodecError::NoLocalOnSharedSubscription => Error::InvalidArgument,
        // The application never sends a Topic Alias itself: an empty MQTT 5
        // topic is an invalid topic name, as under 3.1.1.
        CodecError::InvalidTopic | CodecError::EmptyTopicWithoutAlias => Error::InvalidTopic,
        CodecError::NulInString | CodecError::InvalidUtf8 => Error::InvalidUtf8,
        CodecError::PacketTooLongToEncode => Error::PayloadTooLarge,
        _ => Error::InvalidArgument,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    Disconnected,
    AwaitingConnAck,
    Connected,
    Disconnecting,
}

/// An application message borrowed from a received packet or a held message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: QoS,
    pub retain: bool,
    pub dup: bool,
    /// The packet id (0 for QoS 0).
    pub mid: u16,
    /// MQTT 5: the PUBLISH's properties; `None` under 3.1.1. The topic of a
    /// PUBLISH that used an existing topic alias is empty here: see
    /// `Session::incoming_alias_topic`.
    pub properties: Option<Properties<'a>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedMessage {
    /// Always the full topic (an alias resolved).
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
    pub dup: bool,
    pub mid: u16,
    /// MQTT 5 properties (None under 3.1.1).
    pub properties: Option<PropertiesBuf>,
}

impl OwnedMessage {
    pub fn as_message(&self) -> Message<'_> {
        Message {
            properties: self.properties.as_ref().map(PropertiesBuf::as_properties),
            topic: &self.topic,
            payload: &self.payload,
            qos: self.qos,
            retain: self.retain,
            dup: self.dup,
            mid: self.mid,
        }
    }
}

/// What an incoming packet means for the user (at most one per packet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// Accepted or refused; on a refusal the session is already `Disconnected`.
    ConnAck(ConnAck<'a>),
    /// QoS 0/1: the message, borrowed from the packet. QoS 2 first arrival:
    /// `None`, the message is held until its PUBREL.
    Publish {
        mid: u16,
        message: Option<Message<'a>>,
    },
    /// QoS 2 release: the held message (`None` if the id was unknown).
    PubRel {
        mid: u16,
        message: Option<OwnedMessage>,
    },
    PubAck(u16),
    PubRec(u16),
    PubComp(u16),
    SubAck {
        mid: u16,
        return_codes: &'a [u8],
    },
    UnsubAck(u16),
    PingResp,
    /// MQTT 5: the server ended the connection (the session is `Disconnected`).
    Disconnect(codec::Disconnect<'a>),
    /// MQTT 5 enhanced authentication: the server's AUTH (continue, or the
    /// success of a re-authentication); answer with `Session::auth`.
    Auth(codec::Auth<'a>),
}

/// A map keyed by packet id. The keys are at most 65535 small integers whose
/// count the session bounds (in-flight window, Receive Maximum), so a fixed
/// multiplicative hash is enough, and the map carries no per-instance seed.
type IdMap<V> = HashMap<u16, V, BuildHasherDefault<IdHasher>>;

#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u16(&mut self, id: u16) {
        // Spread the id over the high bits, which hashbrown's tags use.
        self.0 = u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Ids per chunk of the packet-id set, and chunks in it.
const IDS_PER_CHUNK: usize = 4096;
const WORDS_PER_CHUNK: usize = IDS_PER_CHUNK / 64;
const ID_CHUNKS: usize = 65536 / IDS_PER_CHUNK;

/// What a CONNACK's limits refused before it was sent (`Session::take_refused`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    Publish(QoS),
    Subscribe,
    Unsubscribe,
}

/// Packet ids in use, as a 65536-bit set, plus the rolling counter. The set is
/// 16 chunks of 4096 ids, each allocated while an id in it is taken: an idle
/// client (thousands on one reactor) holds none, a busy one the chunk its
/// counter is in. A chunk that empties is kept as the spare for the next one,
/// so ids rolling through the range allocate nothing in steady state. The
/// chunk table itself is allocated at the first id taken, so a client that
/// never took one holds three words. Id 0 is never handed out: `word`
/// reports it taken.
struct PacketIds {
    table: Option<Box<IdChunks>>,
    in_use: u32,
    next: u16,
}

type IdChunk = Box<[u64; WORDS_PER_CHUNK]>;

#[derive(Default)]
struct IdChunks {
    chunks: [Option<IdChunk>; ID_CHUNKS],
    /// Ids taken in each chunk.
    taken: [u16; ID_CHUNKS],
    spare: Option<IdChunk>,
}

impl PacketIds {
    fn new() -> Self {
        PacketIds {
            table: None,
            in_use: 0,
            next: 1,
        }
    }

    /// Word `w` (ids `64w .. 64w+63`) of the set.
    fn word(&self, w: usize) -> u64 {
        let bits = self
            .table
            .as_ref()
            .and_then(|table| table.chunks[w / WORDS_PER_CHUNK].as_ref())
            .map_or(0, |chunk| chunk[w % WORDS_PER_CHUNK]);
        if w == 0 { bits | 1 } else { bits }
    }

    /// The first free id at or after the counter, wrapping; `None` when all
    /// 65535 are taken. Skips whole words, so at most 1025 word reads.
    fn next_free(&self) -> Option<u16> {
        if self.in_use >= u32::from(u16::MAX) {
            return None;
        }
        const WORDS: usize = 65536 / 64;
        let start = self.next as usize;
        let mut word = start / 64;
        let mut free = !self.word(word) & (u64::MAX << (start % 64));
        for _ in 0..=WORDS {
            if free != 0 {
                return Some((word * 64 + free.trailing_zeros() as usize) as u16);
            }
            word = (word + 1) % WORDS;
            free = !self.word(word);
        }
        None
    }

    /// Move the counter past an id just handed out (reserved or not).
    fn advance_past(&mut self, id: u16) {
        self.next = id.checked_add(1).unwrap_or(1);
    }

    fn reserve(&mut self, id: u16) {
        if id == 0 {
            return;
        }
        let (c, w, b) = Self::locate(id);
        let table = self.table.get_or_insert_with(Default::default);
        let spare = &mut table.spare;
        let chunk = table.chunks[c].get_or_insert_with(|| {
            spare
                .take()
                .unwrap_or_else(|| Box::new([0; WORDS_PER_CHUNK]))
        });
        if chunk[w] & (1 << b) == 0 {
            chunk[w] |= 1 << b;
            table.taken[c] += 1;
            self.in_use += 1;
        }
    }

    fn release(&mut self, id: u16) {
        if id == 0 {
            return;
        }
        let (c, w, b) = Self::locate(id);
        let Some(table) = self.table.as_mut() else {
            return;
        };
        let Some(chunk) = table.chunks[c].as_mut() else {
            return;
        };
        if chunk[w] & (1 << b) != 0 {
            chunk[w] &= !(1 << b);
            table.taken[c] -= 1;
            self.in_use -= 1;
            if table.taken[c] == 0 {
                // All its bits are clear again: ready to serve any chunk.
                let empty = table.chunks[c].take();
                if table.spare.is_none() {
                    table.spare = empty;
                }
            }
        }
    }

    /// Gives back the memory of an empty set (an idle client's): the next id
    /// taken allocates it again.
    fn release_memory_if_empty(&mut self) {
        if self.in_use == 0 {
            self.table = None;
        }
    }

    /// Chunk, word within the chunk, bit within the word.
    fn locate(id: u16) -> (usize, usize, u16) {
        let id = id as usize;
        (
            id / IDS_PER_CHUNK,
            id % IDS_PER_CHUNK / 64,
            (id % 64) as u16,
        )
    }
}

impl fmt::Debug for PacketIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketIds")
            .field("in_use", &self.in_use)
            .field("next", &self.next)
            .finish()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// Named after the packet awaited, which is clearer than any shorter name.
#[allow(clippy::enum_variant_names)]
enum Awaiting {
    PubAck,
    PubRec,
    PubComp,
}

impl Awaiting {
    fn initial(qos: QoS) -> Awaiting {
        if qos == QoS::ExactlyOnce {
            Awaiting::PubRec
        } else {
            Awaiting::PubAck
        }
    }
}

/// An outgoing QoS 1/2 message in flight. The encoded PUBLISH (DUP=0) is kept
/// until the flow completes: it is resent as is (DUP set on the copy) after a
/// reconnection, and a QoS 2 flow may have to restart from PUBLISH when the
/// broker lost the session even after PUBREC.
#[derive(Debug)]
struct Outgoing {
    /// Order of entry into flight, for resending in the original order.
    seq: u64,
    stage: Awaiting,
    packet: Vec<u8>,
}

/// A message waiting for a connection or for room in the in-flight window.
#[derive(Debug)]
struct Queued {
    mid: u16,
    qos: QoS,
    /// topic + payload bytes, as counted against `max_queued_bytes`.
    cost: usize,
    /// The store's write count of its record (`Durable::before_sending`);
    /// 0 when nothing unsynced can be behind it.
    written: u64,
    packet: Vec<u8>,
}

#[derive(Debug)]
enum Request {
    Subscribe {
        filters: Vec<(String, SubscribeOptions)>,
        /// MQTT 5 properties (subscription identifier, user properties).
        properties: PropertiesBuf,
        /// Sent by the session itself to restore subscriptions: its SUBACK is
        /// not a user event.
        internal: bool,
    },
    Unsubscribe {
        filters: Vec<String>,
        properties: PropertiesBuf,
    },
}

/// A subscription the session restores when the broker lost it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tracked {
    options: SubscribeOptions,
    /// MQTT 5 Subscription Identifier it was made with.
    identifier: Option<u32>,
}

#[derive(Debug)]
struct Pending {
    seq: u64,
    request: Request,
}

impl Request {
    /// The packet in the form of the connection: a request made under MQTT 5
    /// and sent after a switch to 3.1.1 loses its MQTT 5 options.
    fn packet(&self, pkid: u16, v5: bool) -> Packet<'_> {
        match self {
            Request::Subscribe {
                filters,
                properties,
                ..
            } => Packet::Subscribe(codec::Subscribe {
                pkid,
                filters: filters
                    .iter()
                    .map(|(f, o)| (f.as_str(), if v5 { *o } else { o.qos.into() }))
                    .collect(),
                properties: v5.then(|| properties.as_properties()),
            }),
            Request::Unsubscribe {
                filters,
                properties,
            } => Packet::Unsubscribe(codec::Unsubscribe {
                pkid,
                filters: filters.iter().map(String::as_str).collect(),
                properties: v5.then(|| properties.as_properties()),
            }),
        }
    }

    fn encode(
        &self,
        pkid: u16,
        v5: bool,
        out: &mut Vec<u8>,
    ) -> std::result::Result<usize, CodecError> {
        self.packet(pkid, v5).encode(out)
    }

    fn encoded_len(&self, pkid: u16, v5: bool) -> Option<usize> {
        self.packet(pkid, v5).encoded_len().ok()
    }

    fn filters(&self) -> impl Iterator<Item = &str> {
        let (subs, unsubs) = match self {
            Request::Subscribe { filters, .. } => (filters.as_slice(), &[][..]),
            Request::Unsubscribe { filters, .. } => (&[][..], filters.as_slice()),
        };
        subs.iter()
            .map(|(f, _)| f.as_str())
            .chain(unsubs.iter().map(String::as_str))
    }
}

/// What the keepalive timer is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeepaliveDeadline {
    /// Time to send PINGREQ.
    Ping(Instant),
    /// A PINGREQ is outstanding: nothing received by then means the link is dead.
    Dead(Instant),
}

/// What only a client with traffic holds: the flows' tables, the reuse pools
/// and the connection's Authentication Method. Allocated at first use and
/// freed, once it holds no flow, at the CONNACK and at an idle client's
/// PINGREQ (with the pools, see `release_idle_memory`): an idle client, one
/// of thousands on a reactor, holds one word for all of it.
#[derive(Debug)]
struct Activity {
    inflight: IdMap<Outgoing>,
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    requests: IdMap<Pending>,
    /// Incoming QoS 2 messages between PUBLISH and PUBREL, by the broker's id.
    held: IdMap<OwnedMessage>,
    /// QoS 2 messages the broker acknowledged (PUBREC) and then reconnected
    /// without their session: their outcome is unknown. See `take_unresolved`.
    unresolved: Vec<u16>,
    /// Messages and requests accepted before a CONNACK whose limits they
    /// break (MQTT 5: Maximum Packet Size, Maximum QoS, Retain Available):
    /// not sent, and reported by the reactor (see `take_refused`).
    refused: Vec<(u16, Refused, Error)>,
    /// Buffers of completed flows, reused so that steady-state traffic does
    /// not allocate per message (bounded: see `POOL_MAX`).
    spare_packets: Vec<Vec<u8>>,
    spare_messages: Vec<OwnedMessage>,
    /// Reused for the CONNECT's properties and those of aliased PUBLISHes.
    scratch_props: PropertiesBuf,
    /// The Authentication Method of the current connection's CONNECT (empty:
    /// no enhanced authentication).
    auth_method: String,
}

/// What a session without an `Activity` reads.
static NO_ACTIVITY: Activity = Activity::EMPTY;

/// The activity in `slot`, allocated at first need (a free function, so that
/// callers can borrow the session's other fields beside it).
fn active(slot: &mut Option<Box<Activity>>) -> &mut Activity {
    slot.get_or_insert_with(|| Box::new(Activity::EMPTY))
}

impl Activity {
    const EMPTY: Activity = Activity {
        inflight: IdMap::with_hasher(BuildHasherDefault::new()),
        queue: VecDeque::new(),
        queued_bytes: 0,
        requests: IdMap::with_hasher(BuildHasherDefault::new()),
        held: IdMap::with_hasher(BuildHasherDefault::new()),
        unresolved: Vec::new(),
        refused: Vec::new(),
        spare_packets: Vec::new(),
        spare_messages: Vec::new(),
        scratch_props: PropertiesBuf::new(),
        auth_method: String::new(),
    };

    /// Whether it holds anything but reuse pools and scratch space.
    fn is_idle(&self) -> bool {
        self.inflight.is_empty()
            && self.queue.is_empty()
            && self.requests.is_empty()
            && self.held.is_empty()
            && self.unresolved.is_empty()
            && self.refused.is_empty()
            && self.auth_method.is_empty()
    }

    fn take_packet(&mut self) -> Vec<u8> {
        self.spare_packets.pop().unwrap_or_default()
    }

    fn recycle_packet(&mut self, packet: Vec<u8>) {
        if self.spare_packets.len() < POOL_MAX {
            self.spare_packets.push(packet);
        }
    }
}

/// One client session (MQTT 3.1.1 section 4.1): survives connections.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    state: ConnectionState,
    ids: PacketIds,
    /// The flows, reuse pools and authentication method: `None` while the
    /// client has none (see `Activity`).
    activity: Option<Box<Activity>>,
    /// Active subscriptions (filter -> requested options), restored after a
    /// CONNACK without a session.
    subscriptions: Subscriptions<Tracked>,
    seq: u64,
    /// Encoded packets not yet written: one buffer reused while there is
    /// traffic, so that sending allocates nothing.
    outbox: Outbox,
    /// Snapshot of `config.keep_alive` taken at `connection_opened`: the value
    /// the broker was told.
    keep_alive: u16,
    /// What the state waits for, one word for both (they never overlap):
    /// awaiting the CONNACK, its deadline; connected, when the unanswered
    /// PINGREQ was sent. Read through `connack_deadline` and `ping_sent`.
    pending: Option<Stamp>,
    connect_error: Option<Error>,
    last_sent: Option<Stamp>,
    last_received: Option<Stamp>,
    /// Whether the current (or last) connection speaks MQTT 5.
    v5: bool,
    /// What an MQTT 5 connection has besides: `None` for 3.1.1.
    v5_link: Option<Box<V5Link>>,
    /// The durable store, when there is one (see `set_store`).
    durable: Option<Box<Durable>>,
    /// A store write or sync the connection cannot go on without failed:
    /// `handle_timeout` reports it, so the reactor closes the connection.
    store_error: Option<Error>,
}

/// What only an MQTT 5 connection has: the server's CONNACK limits and the
/// topic alias maps. Boxed: a 3.1.1 client holds one word for them.
#[derive(Debug, Default)]
struct V5Link {
    server: ServerLimits,
    in_aliases: IncomingAliases,
    out_aliases: OutgoingAliases,
}

/// The server's limits of the current connection (the defaults under 3.1.1).
/// A function of the field, not of `Session`, so that callers may borrow
/// other fields mutably meanwhile.
fn limits(link: &Option<Box<V5Link>>) -> &ServerLimits {
    link.as_deref()
        .map_or(&ServerLimits::DEFAULT, |link| &link.server)
}

impl Session {
    pub fn new(config: SessionConfig) -> Session {
        Session {
            config,
            state: ConnectionState::Disconnected,
            ids: PacketIds::new(),
            activity: None,
            subscriptions: Subscriptions::default(),
            seq: 0,
            outbox: Outbox::default(),
            keep_alive: 0,
            pending: None,
            connect_error: None,
            last_sent: None,
            last_received: None,
            v5: false,
            v5_link: None,
            durable: None,
            store_error: None,
        }
    }

    /// The activity; an empty one when there is none (reading allocates
    /// nothing).
    fn flows(&self) -> &Activity {
        self.activity.as_deref().unwrap_or(&NO_ACTIVITY)
    }

    /// The activity, allocated at first need.
    fn flows_mut(&mut self) -> &mut Activity {
        active(&mut self.activity)
    }

    /// The reusable properties buffer (a new one without an activity).
    fn take_scratch_props(&mut self) -> PropertiesBuf {
        self.activity
            .as_mut()
            .map(|act| std::mem::take(&mut act.scratch_props))
            .unwrap_or_default()
    }

    /// Keeps `props` for reuse; without an activity it is freed.
    fn return_scratch_props(&mut self, props: PropertiesBuf) {
        if let Some(act) = self.activity.as_mut() {
            act.scratch_props = props;
        }
    }

    /// Frees the activity when it holds no flow.
    fn release_activity_if_idle(&mut self) {
        if self.activity.as_ref().is_some_and(|a| a.is_idle()) {
            self.activity = None;
        }
    }

    /// Whether a durable store is attached.
    pub fn has_store(&self) -> bool {
        self.durable.is_some()
    }

    /// Attach a durable store (`None`: memory only from now on; what is in
    /// memory stays). Only while disconnected (`AlreadyConnected`) and, to
    /// attach one, with no message or request in the session
    /// (`InvalidArgument`: they were accepted without it).
    ///
    /// With `clean_session` false the store's records become the session:
    /// outgoing messages queued (DUP set, in publish order, same ids; those
    /// past PUBREC await PUBCOMP), incoming QoS 2 messages held, the
    /// subscriptions tracked, and the packet-id counter after the newest
    /// message. With `clean_session` true they are ignored and removed at the
    /// first accepted CONNACK. `Store` if loading fails.
    pub fn set_store(&mut self, store: Option<(Box<dyn Store>, SyncMode)>) -> Result<()> {
        self.check_store_change(store.is_some())?;
        let Some((mut store, mode)) = store else {
            self.durable = None;
            self.store_error = None;
            return Ok(());
        };
        let records = store::load(&mut *store)?;
        let mut durable = Durable::new(store, mode);
        if !records.is_empty() {
            durable.mark_loaded();
        }
        if self.config.clean_session {
            durable.stale = records.into_iter().map(|(k, _)| k).collect();
        } else {
            self.restore(&records, &mut durable);
        }
        // Subscriptions made before the store (while in memory) go in too.
        for (filter, tracked) in self.subscriptions.iter() {
            let _ = durable.put_subscription(filter, tracked.options.to_byte(), tracked.identifier);
        }
        self.durable = Some(Box::new(durable));
        self.store_error = None;
        Ok(())
    }

    /// Close the store whatever the state (the client is being freed).
    pub fn detach_store(&mut self) {
        self.durable = None;
    }

    /// The errors `set_store` gives before touching anything.
    pub fn check_store_change(&self, attach: bool) -> Result<()> {
        if self.state != ConnectionState::Disconnected {
            return Err(Error::AlreadyConnected);
        }
        if attach
            && (!self.flows().inflight.is_empty()
                || !self.flows().queue.is_empty()
                || !self.flows().held.is_empty()
                || !self.flows().requests.is_empty())
        {
            return Err(Error::InvalidArgument);
        }
        Ok(())
    }

    /// Rebuild the session from a store's records; records this version
    /// cannot use are removed from the store.
    fn restore(&mut self, records: &[(Vec<u8>, Vec<u8>)], durable: &mut Durable) {
        let v5 = self.config.is_v5();
        let mut outgoing: Vec<(u64, u16, Option<Vec<u8>>)> = Vec::new();
        let mut unusable: Vec<&[u8]> = Vec::new();
        for (key, value) in records {
            match Record::parse(key, value) {
                Some(Record::Outgoing {
                    mid,
                    seq,
                    v5: was_v5,
                    packet,
                }) => match reencode(packet, was_v5, v5) {
                    Some(p) => outgoing.push((seq, mid, Some(p))),
                    None => unusable.push(key),
                },
                Some(Record::Released { mid, seq }) => outgoing.push((seq, mid, None)),
                Some(Record::Held {
                    mid,
                    v5: was_v5,
                    packet,
                }) => {
                    let proto = if was_v5 {
                        ProtocolVersion::V5
                    } else {
                        ProtocolVersion::V311
                    };
                    match codec::decode_as(packet, usize::MAX, proto) {
                        Ok(codec::Decoded::Packet(Packet::Publish(p), _))
                            if p.pkid == mid && p.qos == QoS::ExactlyOnce =>
                        {
                            let m = self.hold(&p);
                            self.reserve_held();
                            self.flows_mut().held.insert(mid, m);
                        }
                        _ => unusable.push(key),
                    }
                }
                Some(Record::Subscription {
                    filter,
                    options,
                    identifier,
                }) => match options_from_byte(options) {
                    Some(options) if topic::valid_topic_filter(filter) => {
                        self.subscriptions.insert(
                            filter.to_owned(),
                            Tracked {
                                options,
                                identifier,
                            },
                        );
                    }
                    _ => unusable.push(key),
                },
                None => unusable.push(key),
            }
        }
        for key in unusable {
            let _ = durable.store_mut().remove(key);
        }
        outgoing.sort_unstable_by_key(|o| o.0);
        for (seq, mid, packet) in outgoing {
            durable.see_seq(seq);
            self.ids.reserve(mid);
            self.ids.advance_past(mid);
            match packet {
                // Past PUBREC: only PUBREL, after a CONNACK with the session.
                None => {
                    self.reserve_inflight();
                    let seq = self.next_seq();
                    self.flows_mut().inflight.insert(
                        mid,
                        Outgoing {
                            seq,
                            stage: Awaiting::PubComp,
                            packet: Vec::new(),
                        },
                    );
                }
                // Perhaps sent by the previous life: DUP set.
                Some(mut packet) => {
                    packet[0] |= 0b1000;
                    let qos = QoS::from_u8((packet[0] >> 1) & 3).unwrap_or(QoS::AtLeastOnce);
                    let cost = publish_cost(&packet, self.config.protocol);
                    self.enqueue(mid, qos, cost, 0, packet);
                }
            }
        }
    }

    /// What the server announced in its last CONNACK (MQTT 5; defaults otherwise).
    pub fn server_limits(&self) -> &ServerLimits {
        limits(&self.v5_link)
    }

    /// The largest packet this connection may send: ours, and the server's
    /// Maximum Packet Size when it set one.
    fn packet_size_limit(&self) -> usize {
        self.server_limits()
            .maximum_packet_size
            .map_or(self.config.limits().max_packet_size, |max| {
                self.config.limits().max_packet_size.min(max)
            }) as usize
    }

    /// Why an outgoing packet of `len` bytes may not be sent: above our
    /// `max_packet_size` (`PayloadTooLarge`), or above the server's Maximum
    /// Packet Size (`PacketTooLarge`).
    fn size_error(&self, len: usize) -> Option<Error> {
        if len > self.config.limits().max_packet_size as usize {
            Some(Error::PayloadTooLarge)
        } else if self
            .server_limits()
            .maximum_packet_size
            .is_some_and(|max| len > max as usize)
        {
            Some(Error::PacketTooLarge)
        } else {
            None
        }
    }

    /// Whether outgoing PUBLISHes may use topic aliases on this connection.
    fn aliasing_out(&self) -> bool {
        self.v5_link
            .as_ref()
            .is_some_and(|link| link.out_aliases.is_active())
    }

    /// Whether the current connection (or the last one) speaks MQTT 5.
    pub fn is_v5(&self) -> bool {
        self.v5
    }

    /// The topic an incoming alias stands for on this connection (for a
    /// message whose `topic` is empty because it reused an alias).
    pub fn incoming_alias_topic(&self, alias: u16) -> Option<&str> {
        self.v5_link.as_ref()?.in_aliases.get(alias)
    }

    /// In-flight window: ours, bounded by the server's Receive Maximum.
    fn window(&self) -> usize {
        (self.config.limits().max_inflight.max(1) as usize)
            .min(self.server_limits().receive_maximum.into())
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Credentials, will and keepalive changes apply to the next
    /// `connection_opened`; limits apply from their next check.
    /// The ids of outgoing QoS 2 messages given up by the last CONNACK: the
    /// broker had acknowledged them with PUBREC, then came back without a
    /// session, so they were neither completed nor may be published again.
    pub fn take_unresolved(&mut self) -> Vec<u16> {
        self.activity
            .as_mut()
            .map(|a| std::mem::take(&mut a.unresolved))
            .unwrap_or_default()
    }

    /// What the last CONNACK's limits refused before it was sent: mid (0 for
    /// a QoS 0 message), what it was, and the error the same call made after
    /// that CONNACK would have returned (`PacketTooLarge`, `NotSupported`).
    pub fn take_refused(&mut self) -> Vec<(u16, Refused, Error)> {
        self.activity
            .as_mut()
            .map(|a| std::mem::take(&mut a.refused))
            .unwrap_or_default()
    }

    /// Why the server just announced could not take this encoded PUBLISH.
    fn over_server_limits(server: &ServerLimits, packet: &[u8]) -> Option<Error> {
        let flags = packet.first()?;
        let qos = QoS::from_u8((flags >> 1) & 3)?;
        let retain = flags & 1 == 1;
        if server
            .maximum_packet_size
            .is_some_and(|max| packet.len() > max as usize)
        {
            return Some(Error::PacketTooLarge);
        }
        (qos > server.maximum_qos || (retain && !server.retain_available))
            .then_some(Error::NotSupported)
    }

    /// After an MQTT 5 CONNACK: take out what was accepted before it and
    /// breaks its limits (sending it would only get the connection closed),
    /// for `take_refused`. Flows past PUBREC only send PUBREL: kept.
    fn refuse_over_limits(&mut self) {
        let Some(act) = self.activity.as_deref_mut() else {
            return;
        };
        let server = limits(&self.v5_link);
        let mut refused = std::mem::take(&mut act.refused);
        let mut over: Vec<(u64, u16, Error)> = act
            .inflight
            .iter()
            .filter(|(_, o)| o.stage != Awaiting::PubComp)
            .filter_map(|(&id, o)| Some((o.seq, id, Self::over_server_limits(server, &o.packet)?)))
            .collect();
        // Reported in the order they were sent.
        over.sort_unstable_by_key(|&(seq, ..)| seq);
        for (_, id, error) in over {
            if let Some(out) = act.inflight.remove(&id) {
                let qos = QoS::from_u8((out.packet[0] >> 1) & 3).unwrap_or(QoS::AtLeastOnce);
                act.recycle_packet(out.packet);
                refused.push((id, Refused::Publish(qos), error));
            }
        }
        let mut kept = VecDeque::with_capacity(act.queue.len());
        while let Some(q) = act.queue.pop_front() {
            match Self::over_server_limits(server, &q.packet) {
                Some(error) => {
                    act.queued_bytes -= q.cost;
                    refused.push((q.mid, Refused::Publish(q.qos), error));
                    act.recycle_packet(q.packet);
                }
                None => kept.push_back(q),
            }
        }
        act.queue = kept;
        for &(id, what, _) in &refused {
            if what != Refused::Publish(QoS::AtMostOnce) {
                if let Some(durable) = self.durable.as_mut() {
                    let _ = durable.remove_outgoing(id);
                }
                self.ids.release(id);
            }
        }
        if let Some(max) = server.maximum_packet_size {
            let v5 = self.v5;
            let mut over: Vec<(u64, u16)> = act
                .requests
                .iter()
                .filter(|&(&id, p)| {
                    p.request
                        .encoded_len(id, v5)
                        .is_some_and(|len| len > max as usize)
                })
                .map(|(&id, p)| (p.seq, id))
                .collect();
            // Reported in the order they were made.
            over.sort_unstable();
            for (_, id) in over {
                let Some(pending) = act.requests.remove(&id) else {
                    continue;
                };
                self.ids.release(id);
                let what = match pending.request {
                    // Its filters are the tracked ones: a later resubscription
                    // splits them to fit.
                    Request::Subscribe { internal: true, .. } => continue,
                    Request::Subscribe { .. } => Refused::Subscribe,
                    Request::Unsubscribe { .. } => Refused::Unsubscribe,
                };
                refused.push((id, what, Error::PacketTooLarge));
            }
        }
        act.refused = refused;
    }

    /// Change the in-flight window; a raised one takes queued messages, oldest
    /// first, at once.
    pub fn set_max_inflight(&mut self, max_inflight: usize) {
        let max_inflight = u16::try_from(max_inflight).unwrap_or(u16::MAX);
        self.config
            .update_limits(|limits| limits.max_inflight = max_inflight);
        self.refill();
    }

    pub fn config_mut(&mut self) -> &mut SessionConfig {
        &mut self.config
    }

    pub fn state(&self) -> ConnectionState {
        self.state
    }

    /// Outgoing QoS 1/2 messages sent and not yet completed.
    pub fn inflight_len(&self) -> usize {
        self.flows().inflight.len()
    }

    /// Outgoing messages waiting for a connection or for the window.
    pub fn queued_len(&self) -> usize {
        self.flows().queue.len()
    }

    /// Topic + payload bytes of the waiting messages.
    pub fn queued_bytes(&self) -> usize {
        self.flows().queued_bytes
    }

    /// Incoming QoS 2 messages received and not yet released.
    pub fn held_incoming_len(&self) -> usize {
        self.flows().held.len()
    }

    /// SUBSCRIBE/UNSUBSCRIBE requests (user and internal) awaiting their ack.
    pub fn pending_requests_len(&self) -> usize {
        self.flows().requests.len()
    }

    /// The tracked subscriptions (acknowledged filters and their requested QoS).
    pub fn subscriptions(&self) -> impl Iterator<Item = (&str, QoS)> {
        self.subscriptions
            .iter()
            .map(|(f, t)| (f.as_str(), t.options.qos))
    }

    fn connack_deadline(&self) -> Option<Stamp> {
        self.pending
            .filter(|_| self.state == ConnectionState::AwaitingConnAck)
    }

    fn ping_sent(&self) -> Option<Stamp> {
        self.pending
            .filter(|_| self.state == ConnectionState::Connected)
    }

    /// No PINGREQ is unanswered any more (a CONNACK deadline stays).
    fn clear_ping(&mut self) {
        if self.state != ConnectionState::AwaitingConnAck {
            self.pending = None;
        }
    }

    /// The CONNACK must come by `deadline` too, if that is sooner than the
    /// connect timeout after `connection_opened` (the attempt's own timeout
    /// also covered the TCP, TLS and proxy handshakes before it).
    pub fn bound_connack_deadline(&mut self, deadline: Instant) {
        if let Some(current) = self.connack_deadline()
            && deadline < current.instant()
        {
            self.pending = Some(Stamp::new(deadline));
        }
    }

    /// The transport is up: queue CONNECT and start the CONNACK timer.
    pub fn connection_opened(&mut self, now: Instant) {
        self.outbox.clear();
        self.state = ConnectionState::AwaitingConnAck;
        self.keep_alive = self.config.keep_alive;
        self.pending = None;
        self.last_sent = Some(Stamp::new(now));
        self.last_received = Some(Stamp::new(now));
        self.v5 = self.config.is_v5();
        if self.v5 {
            let link = self.v5_link.get_or_insert_default();
            link.server = ServerLimits::DEFAULT;
            link.in_aliases
                .reset(self.config.incoming_topic_alias_max());
            link.out_aliases.reset(0);
        } else {
            self.v5_link = None;
        }
        if let Some(act) = self.activity.as_mut() {
            act.auth_method.clear();
        }
        if self.v5
            && let Some(method) = self
                .config
                .extras()
                .connect_properties
                .as_properties()
                .str_of(prop::AUTHENTICATION_METHOD)
        {
            active(&mut self.activity).auth_method.push_str(method);
        }
        let mut props = self.take_scratch_props();
        // A 3.1.1 CONNECT has no properties: none are built.
        if self.v5 {
            self.config.connect_properties_into(&mut props);
        }
        let encoded = self
            .config
            .connect_packet(&props)
            .encode(self.outbox.bytes());
        self.return_scratch_props(props);
        match encoded {
            Ok(_) => {
                self.connect_error = None;
                self.pending = now
                    .checked_add(self.config.connect_timeout())
                    .map(Stamp::new);
            }
            Err(e) => {
                // Without a CONNECT there is nothing to wait for: report at once.
                self.connect_error = Some(encode_error(e));
                self.pending = Some(Stamp::new(now));
            }
        }
    }

    /// The transport is gone, whatever the reason. Unsent bytes are dropped
    /// (everything that matters is re-encoded after the next CONNACK); the
    /// session state (in-flight, queue, requests, held messages,
    /// subscriptions) is kept.
    pub fn connection_lost(&mut self, _now: Instant) {
        // The next connection tries the store again.
        self.store_error = None;
        self.state = ConnectionState::Disconnected;
        self.outbox.clear();
        self.pending = None;
        self.connect_error = None;
    }

    /// All encoded packets waiting to be written, in order. With a store in
    /// BATCH mode, what was stored since the last sync is synced first, so no
    /// packet reaches the socket before the records it depends on are stable
    /// (one sync per reactor turn: the turn's packets are all in here). A
    /// failed sync hands out nothing and `handle_timeout` reports it.
    pub fn pending_transmit(&mut self) -> &[u8] {
        if self.outbox.unsent_len() > 0
            && let Some(durable) = self.durable.as_mut()
        {
            if self.store_error.is_some() {
                return &[];
            }
            if let Err(e) = durable.sync_batch() {
                self.store_error = Some(e);
                return &[];
            }
        }
        self.outbox.unsent()
    }

    /// The bytes `pending_transmit` would hand out, without the BATCH sync:
    /// to inspect them (tests, fuzzing), never to write them.
    pub fn peek_transmit(&self) -> &[u8] {
        self.outbox.unsent()
    }

    /// Bytes waiting to be written (`pending_transmit().len()` without syncing).
    pub fn unsent_len(&self) -> usize {
        self.outbox.unsent_len()
    }

    /// `n` bytes of `pending_transmit()` were written.
    pub fn consume_transmit(&mut self, now: Instant, n: usize) {
        if self.outbox.consume(n) > 0 {
            self.last_sent = Some(Stamp::new(now));
        }
    }

    /// The earliest deadline at which `handle_timeout` has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.store_error.is_some() && self.state != ConnectionState::Disconnected {
            // Due already: any instant of the past will do.
            return self
                .last_received
                .or(self.connack_deadline())
                .map(Stamp::instant);
        }
        match self.state {
            ConnectionState::AwaitingConnAck => self.connack_deadline().map(Stamp::instant),
            ConnectionState::Connected => match self.keepalive_deadline()? {
                KeepaliveDeadline::Ping(t) | KeepaliveDeadline::Dead(t) => Some(t),
            },
            _ => None,
        }
    }

    /// Send PINGREQ when due. Errors (`Timeout` for a missing CONNACK,
    /// `KeepaliveTimeout` for a dead link, or the reason CONNECT could not be
    /// encoded) mean the reactor should close the transport and call
    /// `connection_lost`; the state is left as is until then.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<()> {
        if self.state != ConnectionState::Disconnected
            && let Some(e) = self.store_error
        {
            return Err(e);
        }
        match self.state {
            ConnectionState::AwaitingConnAck => {
                if let Some(e) = self.connect_error {
                    return Err(e);
                }
                if self.connack_deadline().is_some_and(|d| now >= d.instant()) {
                    return Err(Error::Timeout);
                }
            }
            ConnectionState::Connected => match self.keepalive_deadline() {
                Some(KeepaliveDeadline::Dead(t)) if now >= t => {
                    return Err(Error::KeepaliveTimeout);
                }
                Some(KeepaliveDeadline::Ping(t)) if now >= t => {
                    // Nothing was sent for a keepalive period: an idle client
                    // (of thousands on a reactor) gives back its reuse pools.
                    self.release_idle_memory();
                    self.outbox.push_ping();
                    self.pending = Some(Stamp::new(now));
                }
                _ => {}
            },
            ConnectionState::Disconnected | ConnectionState::Disconnecting => {}
        }
        Ok(())
    }

    /// Heap bytes held only for reuse by later traffic (the packet and
    /// message pools, the outbox, the packet-id set, an activity without
    /// flows), which an idle client gives back at its next PINGREQ.
    pub fn pooled_bytes(&self) -> usize {
        let ids = self.ids.table.as_ref().map_or(0, |table| {
            let chunks = table.chunks.iter().flatten().count() + usize::from(table.spare.is_some());
            size_of::<IdChunks>() + chunks * WORDS_PER_CHUNK * 8
        });
        let act = self.flows();
        let packets: usize = act.spare_packets.iter().map(Vec::capacity).sum();
        let idle_activity = self
            .activity
            .as_ref()
            .filter(|act| act.is_idle())
            .map_or(0, |_| size_of::<Activity>());
        ids + packets
            + idle_activity
            + act.spare_packets.capacity() * size_of::<Vec<u8>>()
            + act.spare_messages.capacity() * size_of::<OwnedMessage>()
            + self.outbox.capacity()
    }

    /// Frees what only steady traffic reuses (the packet and message pools,
    /// a drained outbox, an empty packet-id set, an activity without flows):
    /// at most one allocation per keepalive period comes back for it, never
    /// one per message.
    fn release_idle_memory(&mut self) {
        if let Some(act) = self.activity.as_mut() {
            act.spare_packets = Vec::new();
            act.spare_messages = Vec::new();
            act.scratch_props = PropertiesBuf::new();
        }
        self.release_activity_if_idle();
        self.outbox.release_if_written();
        self.ids.release_memory_if_empty();
    }

    fn keepalive_deadline(&self) -> Option<KeepaliveDeadline> {
        if self.state != ConnectionState::Connected || self.keep_alive == 0 {
            return None;
        }
        let interval = Duration::from_secs(self.keep_alive.into());
        if let Some(sent) = self.ping_sent() {
            return sent
                .instant()
                .checked_add(interval / 2)
                .map(KeepaliveDeadline::Dead);
        }
        // The client must send within the interval (spec 3.1.2.10), and a
        // silent broker is probed after the same interval: ping on whichever
        // side went quiet first.
        let quiet_since = self.last_sent?.min(self.last_received?).instant();
        quiet_since
            .checked_add(interval)
            .map(KeepaliveDeadline::Ping)
    }

    /// Queue DISCONNECT; the reactor closes the transport once it is written.
    pub fn disconnect(&mut self, now: Instant) -> Result<()> {
        self.disconnect_with(now, 0, Properties::EMPTY)
    }

    /// DISCONNECT with an MQTT 5 reason code and properties (3.1.1: only 0 and
    /// no properties, else `ProtocolVersion`). A reason code DISCONNECT may not
    /// carry is `InvalidArgument`; a Session Expiry Interval other than 0 when
    /// the CONNECT's was 0 is `InvalidProperty` [MQTT-3.14.2-2].
    pub fn disconnect_with(
        &mut self,
        _now: Instant,
        reason_code: u8,
        props: Properties<'_>,
    ) -> Result<()> {
        let props = self.check_disconnect(reason_code, props)?;
        if self.state != ConnectionState::Connected {
            return Err(Error::NotConnected);
        }
        // MQTT 5 form even without properties: the 3.1.1 form has no reason
        // code, and the encoder writes the shortest MQTT 5 form anyway.
        let disconnect = Packet::Disconnect(codec::Disconnect {
            reason_code,
            properties: props,
        });
        let too_large = self
            .server_limits()
            .maximum_packet_size
            .is_some_and(|max| disconnect.encoded_len().is_ok_and(|len| len > max as usize));
        if let (true, Some(props)) = (too_large, props) {
            // Above the server's Maximum Packet Size the Reason String and
            // User Properties are left out [MQTT-3.14.2-3, MQTT-3.14.2-4].
            let mut kept = self.take_scratch_props();
            kept.clear();
            for p in props.iter() {
                if !matches!(p.id(), prop::REASON_STRING | prop::USER_PROPERTY) {
                    let _ = kept.push(p);
                }
            }
            self.emit(&Packet::Disconnect(codec::Disconnect {
                reason_code,
                properties: Some(kept.as_properties()),
            }));
            self.return_scratch_props(kept);
        } else {
            self.emit(&disconnect);
        }
        self.state = ConnectionState::Disconnecting;
        self.clear_ping();
        Ok(())
    }

    /// MQTT 5: the server broke the protocol; queue DISCONNECT with
    /// `reason_code` (also before CONNACK) so it learns why. False when there
    /// is no connection to tell, or under 3.1.1.
    pub fn refuse_server(&mut self, reason_code: u8) -> bool {
        if !self.v5
            || !matches!(
                self.state,
                ConnectionState::Connected | ConnectionState::AwaitingConnAck
            )
        {
            return false;
        }
        self.emit(&Packet::Disconnect(codec::Disconnect {
            reason_code,
            properties: self.v5.then_some(Properties::EMPTY),
        }));
        self.state = ConnectionState::Disconnecting;
        self.clear_ping();
        true
    }

    /// MQTT 5 enhanced authentication: send AUTH with `reason_code` 0x18
    /// (continue: answer the server's AUTH, also before CONNACK) or 0x19
    /// (re-authenticate, once connected). The connection's Authentication
    /// Method is added when `props` lacks it. `ProtocolVersion` under 3.1.1;
    /// `InvalidArgument` for another reason code, 0x19 before CONNACK, or a
    /// connection without an Authentication Method; `InvalidProperty` for a
    /// property AUTH may not carry or another method; `NotConnected`;
    /// `PacketTooLarge` above the server's Maximum Packet Size even without
    /// the Reason String and User Properties (which are left out when they
    /// alone make it too large).
    pub fn auth(&mut self, reason_code: u8, props: Properties<'_>) -> Result<()> {
        if !self.config.is_v5() {
            return Err(Error::ProtocolVersion);
        }
        let props = Properties::parse(props.as_bytes(), PropertyContext::Auth)
            .map_err(|_| Error::InvalidProperty)?;
        match (self.state, reason_code) {
            (ConnectionState::AwaitingConnAck, 0x18)
            | (ConnectionState::Connected, 0x18 | 0x19) => {}
            (ConnectionState::AwaitingConnAck | ConnectionState::Connected, _) => {
                return Err(Error::InvalidArgument);
            }
            _ => return Err(Error::NotConnected),
        }
        let Some(act) = self
            .activity
            .as_deref_mut()
            .filter(|act| !act.auth_method.is_empty())
        else {
            return Err(Error::InvalidArgument);
        };
        match props.str_of(prop::AUTHENTICATION_METHOD) {
            Some(method) if method != act.auth_method => return Err(Error::InvalidProperty),
            Some(_) => act.scratch_props.set(props),
            None => {
                act.scratch_props.clear();
                act.scratch_props
                    .push_str(prop::AUTHENTICATION_METHOD, &act.auth_method)
                    .map_err(|_| Error::InvalidProperty)?;
                act.scratch_props.extend(props);
            }
        }
        if let Some(max) = limits(&self.v5_link).maximum_packet_size {
            let fits = |props: &PropertiesBuf| {
                Packet::Auth(codec::Auth {
                    reason_code,
                    properties: Some(props.as_properties()),
                })
                .encoded_len()
                .is_ok_and(|len| len <= max as usize)
            };
            if !fits(&act.scratch_props) {
                // Above the server's Maximum Packet Size the Reason String and
                // User Properties are left out [MQTT-3.15.2-2, MQTT-3.15.2-3];
                // if it is still too large, nothing is sent [MQTT-3.1.2-24].
                let mut kept = PropertiesBuf::new();
                for p in act.scratch_props.as_properties().iter() {
                    if !matches!(p.id(), prop::REASON_STRING | prop::USER_PROPERTY) {
                        let _ = kept.push(p);
                    }
                }
                if !fits(&kept) {
                    return Err(Error::PacketTooLarge);
                }
                act.scratch_props = kept;
            }
        }
        let _ = Packet::Auth(codec::Auth {
            reason_code,
            properties: Some(act.scratch_props.as_properties()),
        })
        .encode(self.outbox.bytes());
        Ok(())
    }

    /// The errors `disconnect_with` gives for its arguments, whatever the
    /// state; the properties to send.
    pub fn check_disconnect<'a>(
        &self,
        reason_code: u8,
        props: Properties<'a>,
    ) -> Result<Option<Properties<'a>>> {
        if !self.config.is_v5() {
            if reason_code != 0 || !props.is_empty() {
                return Err(Error::ProtocolVersion);
            }
            return Ok(None);
        }
        if !codec::valid_reason_code(14, reason_code) {
            return Err(Error::InvalidArgument);
        }
        let props = Properties::parse(props.as_bytes(), PropertyContext::Disconnect)
            .map_err(|_| Error::InvalidProperty)?;
        if props
            .u32_of(prop::SESSION_EXPIRY_INTERVAL)
            .is_some_and(|v| v != 0)
            && self.config.session_expiry() == 0
        {
            return Err(Error::InvalidProperty);
        }
        Ok(Some(props))
    }

    /// Publish a message; returns its id. On any error nothing changes.
    pub fn publish(
        &mut self,
        now: Instant,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
    ) -> Result<u16> {
        self.publish_with(now, topic, payload, qos, retain, Properties::EMPTY)
    }

    /// `publish` with MQTT 5 properties (3.1.1: none, else `ProtocolVersion`).
    /// Beyond `publish`'s errors: `InvalidProperty` (not a PUBLISH property, a
    /// duplicate, or a Topic Alias or Subscription Identifier, which are not
    /// the application's to send), `NotSupported` (above the server's Maximum
    /// QoS, or retained when it has no retain), `PacketTooLarge` (above the
    /// server's Maximum Packet Size).
    pub fn publish_with(
        &mut self,
        _now: Instant,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        props: Properties<'_>,
    ) -> Result<u16> {
        let v5 = self.config.is_v5();
        if !v5 && !props.is_empty() {
            return Err(Error::ProtocolVersion);
        }
        let props = if v5 {
            let props = Properties::parse(props.as_bytes(), PropertyContext::Publish)
                .map_err(|_| Error::InvalidProperty)?;
            // Aliases are assigned by the session; a Subscription Identifier
            // is for the server to send [MQTT-3.3.4-6].
            if props.get(prop::TOPIC_ALIAS).is_some()
                || props.get(prop::SUBSCRIPTION_IDENTIFIER).is_some()
            {
                return Err(Error::InvalidProperty);
            }
            let server = self.server_limits();
            if qos > server.maximum_qos || (retain && !server.retain_available) {
                return Err(Error::NotSupported);
            }
            Some(props)
        } else {
            None
        };
        // The id only affects the size through its presence, so any non-zero
        // placeholder gives the exact length. Sizing also validates the topic
        // (InvalidTopic for wildcards, empty or over-long names).
        let mut publish = Publish {
            dup: false,
            qos,
            retain,
            topic,
            pkid: 1,
            payload,
            properties: props,
        };
        let len = Packet::Publish(publish)
            .encoded_len()
            .map_err(encode_error)?;
        if let Some(e) = self.size_error(len) {
            return Err(e);
        }
        let connected = self.state == ConnectionState::Connected;
        if qos == QoS::AtMostOnce && !connected && !self.config.queue_qos0_offline {
            return Err(Error::NotConnected);
        }
        let mid = self.ids.next_free().ok_or(Error::QueueFull)?;
        publish.pkid = mid;
        let cost = topic.len() + payload.len();

        if qos == QoS::AtMostOnce {
            if connected {
                // A QoS 0 message has no other bound while connected: refuse
                // it rather than grow the outbox without limit behind a slow
                // socket.
                if self.outbox.unsent_len() + len > self.config.limits().max_unsent_bytes as usize {
                    return Err(Error::QueueFull);
                }
                self.write_publish(publish);
            } else {
                self.check_queue_room(cost)?;
                let packet = self.encode_owned(&Packet::Publish(publish), len);
                self.enqueue(mid, qos, cost, 0, packet);
            }
            // QoS 0 ids are counted but never reserved: they are not on the wire.
            self.ids.advance_past(mid);
            return Ok(mid);
        }

        // Room made by a raised `max_inflight` goes to older messages first.
        self.refill();
        let into_flight = connected
            && self.flows().queue.is_empty()
            && self.flows().inflight.len() < self.window();
        if !into_flight {
            self.check_queue_room(cost)?;
        }
        let packet = self.encode_owned(&Packet::Publish(publish), len);
        // Accepted only once stored: on failure nothing changed.
        let mut written = 0;
        if let Some(durable) = self.durable.as_mut() {
            let stored = match self.store_error {
                Some(e) => Err(e),
                None => durable.put_outgoing(mid, v5, &packet, into_flight),
            };
            match stored {
                Ok(w) => written = w,
                Err(e) => {
                    self.recycle_packet(packet);
                    return Err(e);
                }
            }
        }
        self.ids.reserve(mid);
        self.ids.advance_past(mid);
        if into_flight {
            self.write_stored_publish(&packet);
            self.start_flight(mid, qos, packet);
        } else {
            self.enqueue(mid, qos, cost, written, packet);
        }
        Ok(mid)
    }

    fn check_queue_room(&self, cost: usize) -> Result<()> {
        if self.flows().queue.len() >= self.config.limits().max_queued_messages as usize
            || self.flows().queued_bytes.saturating_add(cost)
                > self.config.limits().max_queued_bytes as usize
        {
            return Err(Error::QueueFull);
        }
        Ok(())
    }

    fn enqueue(&mut self, mid: u16, qos: QoS, cost: usize, written: u64, packet: Vec<u8>) {
        let act = self.flows_mut();
        act.queued_bytes += cost;
        act.queue.push_back(Queued {
            mid,
            qos,
            cost,
            written,
            packet,
        });
    }

    /// Put an in-flight PUBLISH back at the front of the queue, to be resent
    /// (DUP set) when the window has room; its id stays reserved.
    fn requeue_front(&mut self, mid: u16, mut packet: Vec<u8>) {
        packet[0] |= 0b1000;
        let qos = QoS::from_u8((packet[0] >> 1) & 3).unwrap_or(QoS::AtLeastOnce);
        let cost = match codec::decode_as(&packet, usize::MAX, self.config.protocol) {
            Ok(codec::Decoded::Packet(Packet::Publish(p), _)) => p.topic.len() + p.payload.len(),
            _ => 0,
        };
        let act = self.flows_mut();
        act.queued_bytes += cost;
        // It was sent before, so a sync covered its record then.
        act.queue.push_front(Queued {
            mid,
            qos,
            cost,
            written: 0,
            packet,
        });
    }

    /// Size the outgoing flow table for twice the window, once, at its first
    /// flow: under churn a hash table more than half full grows instead of
    /// rehashing in place, which would allocate at random in steady state; and
    /// a client that never publishes at QoS 1/2 (thousands idle on a reactor)
    /// never pays for it.
    fn reserve_inflight(&mut self) {
        let window = self.flow_window();
        let act = self.flows_mut();
        if act.inflight.capacity() == 0 {
            act.inflight.reserve(window);
        }
    }

    /// The same for incoming QoS 2 messages held until PUBREL.
    fn reserve_held(&mut self) {
        let held = self
            .flow_window()
            .min(self.config.limits().max_incoming_qos2 as usize);
        let act = self.flows_mut();
        if act.held.capacity() == 0 {
            act.held.reserve(held);
        }
    }

    fn flow_window(&self) -> usize {
        self.config.limits().max_inflight.clamp(1, 1024) as usize * 2
    }

    fn start_flight(&mut self, mid: u16, qos: QoS, packet: Vec<u8>) {
        self.reserve_inflight();
        let seq = self.next_seq();
        self.flows_mut().inflight.insert(
            mid,
            Outgoing {
                seq,
                stage: Awaiting::initial(qos),
                packet,
            },
        );
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Send waiting messages, in order, while the window has room.
    fn refill(&mut self) {
        if self.state != ConnectionState::Connected {
            return;
        }
        let max = self.window();
        // Nothing queued (no activity): nothing to do, and nothing allocated.
        while let Some(act) = self.activity.as_deref_mut() {
            let Some(front) = act.queue.front() else {
                break;
            };
            if front.qos != QoS::AtMostOnce && act.inflight.len() >= max {
                break;
            }
            let Some(q) = act.queue.pop_front() else {
                break;
            };
            act.queued_bytes -= q.cost;
            if let Some(durable) = self.durable.as_mut() {
                durable.before_sending(q.written);
            }
            self.write_stored_publish(&q.packet);
            if q.qos == QoS::AtMostOnce {
                self.recycle_packet(q.packet);
            } else {
                self.start_flight(q.mid, q.qos, q.packet);
            }
        }
    }

    /// Subscribe to topic filters; returns the SUBSCRIBE's id. Sent now if
    /// connected, else after the next accepted CONNACK.
    pub fn subscribe(&mut self, now: Instant, filters: &[(&str, QoS)]) -> Result<u16> {
        let filters: Vec<(&str, SubscribeOptions)> =
            filters.iter().map(|&(f, q)| (f, q.into())).collect();
        self.subscribe_with(now, &filters, Properties::EMPTY)
    }

    /// `subscribe` with MQTT 5 options (no local, retain as published, retain
    /// handling) and properties (a Subscription Identifier, user properties).
    /// Under 3.1.1 anything beyond the QoS is `ProtocolVersion`. No local on a
    /// shared subscription is `InvalidArgument` [MQTT-3.8.3-4].
    pub fn subscribe_with(
        &mut self,
        _now: Instant,
        filters: &[(&str, SubscribeOptions)],
        props: Properties<'_>,
    ) -> Result<u16> {
        if filters.is_empty() {
            return Err(Error::InvalidArgument);
        }
        if !filters.iter().all(|(f, _)| topic::valid_topic_filter(f)) {
            return Err(Error::InvalidTopic);
        }
        if filters
            .iter()
            .any(|(f, o)| o.retain_handling > 2 || (o.no_local && f.starts_with("$share/")))
        {
            return Err(Error::InvalidArgument);
        }
        let props = self.request_properties(
            props,
            PropertyContext::Subscribe,
            filters
                .iter()
                .any(|(_, o)| *o != SubscribeOptions::from(o.qos)),
        )?;
        let request = Request::Subscribe {
            filters: filters.iter().map(|(f, o)| (f.to_string(), *o)).collect(),
            properties: props,
            internal: false,
        };
        self.add_request(request)
    }

    /// Unsubscribe from topic filters; returns the UNSUBSCRIBE's id.
    pub fn unsubscribe(&mut self, now: Instant, filters: &[&str]) -> Result<u16> {
        self.unsubscribe_with(now, filters, Properties::EMPTY)
    }

    /// `unsubscribe` with MQTT 5 properties (user properties).
    pub fn unsubscribe_with(
        &mut self,
        _now: Instant,
        filters: &[&str],
        props: Properties<'_>,
    ) -> Result<u16> {
        if filters.is_empty() {
            return Err(Error::InvalidArgument);
        }
        if !filters.iter().all(|f| topic::valid_topic_filter(f)) {
            return Err(Error::InvalidTopic);
        }
        let props = self.request_properties(props, PropertyContext::Unsubscribe, false)?;
        let request = Request::Unsubscribe {
            filters: filters.iter().map(|f| f.to_string()).collect(),
            properties: props,
        };
        self.add_request(request)
    }

    /// The checked, owned properties of a SUBSCRIBE or UNSUBSCRIBE;
    /// `v5_options`: options beyond the QoS were asked for.
    fn request_properties(
        &self,
        props: Properties<'_>,
        ctx: PropertyContext,
        v5_options: bool,
    ) -> Result<PropertiesBuf> {
        if !self.config.is_v5() {
            if !props.is_empty() || v5_options {
                return Err(Error::ProtocolVersion);
            }
            return Ok(PropertiesBuf::new());
        }
        let props = Properties::parse(props.as_bytes(), ctx).map_err(|_| Error::InvalidProperty)?;
        Ok(PropertiesBuf::from_properties(props))
    }

    fn add_request(&mut self, request: Request) -> Result<u16> {
        let mid = self.ids.next_free().ok_or(Error::QueueFull)?;
        // Encode into the outbox even when offline, to check the size, then
        // roll back: the bytes are only kept when they can be sent now.
        let mark = self.outbox.bytes().len();
        let len = request
            .encode(mid, self.config.is_v5(), self.outbox.bytes())
            .map_err(encode_error)?;
        let send_now = self.state == ConnectionState::Connected;
        // As for PUBLISH.
        let too_large = self.size_error(len);
        if too_large.is_some() || !send_now {
            self.outbox.bytes().truncate(mark);
            if let Some(e) = too_large {
                return Err(e);
            }
        }
        self.ids.reserve(mid);
        self.ids.advance_past(mid);
        let seq = self.next_seq();
        self.flows_mut()
            .requests
            .insert(mid, Pending { seq, request });
        Ok(mid)
    }

    /// Feed one decoded packet from the broker.
    pub fn handle_packet<'a>(
        &mut self,
        now: Instant,
        packet: Packet<'a>,
    ) -> Result<Option<Incoming<'a>>> {
        match &packet {
            // A server DISCONNECT exists in MQTT 5 only, AUTH only after a
            // CONNECT with an Authentication Method, and with the same method
            // [MQTT-4.12.0-5]; a server never starts a re-authentication (0x19).
            Packet::Disconnect(_) if self.v5 => {}
            Packet::Auth(auth)
                if !self.flows().auth_method.is_empty()
                    && auth.reason_code != 0x19
                    && auth
                        .properties
                        .and_then(|p| p.str_of(prop::AUTHENTICATION_METHOD))
                        == Some(self.flows().auth_method.as_str()) => {}
            Packet::Connect(_)
            | Packet::Subscribe(_)
            | Packet::Unsubscribe(_)
            | Packet::PingReq
            | Packet::Disconnect(_)
            | Packet::Auth(_) => return Err(Error::ProtocolViolation),
            // The decoder never yields id 0; a hand-built packet might.
            Packet::PubAck(Ack { pkid: 0, .. })
            | Packet::PubRec(Ack { pkid: 0, .. })
            | Packet::PubRel(Ack { pkid: 0, .. })
            | Packet::PubComp(Ack { pkid: 0, .. })
            | Packet::UnsubAck(codec::UnsubAck { pkid: 0, .. })
            | Packet::SubAck(codec::SubAck { pkid: 0, .. }) => {
                return Err(Error::MalformedPacket);
            }
            Packet::Publish(p) if p.qos != QoS::AtMostOnce && p.pkid == 0 => {
                return Err(Error::MalformedPacket);
            }
            _ => {}
        }
        match self.state {
            ConnectionState::Disconnected => return Err(Error::ProtocolViolation),
            ConnectionState::AwaitingConnAck => {
                return match packet {
                    Packet::ConnAck(ack) => Ok(Some(self.on_connack(now, ack))),
                    // Only "continue" before CONNACK [MQTT-4.12.0-2].
                    Packet::Auth(auth) if auth.reason_code == 0x18 => {
                        Ok(Some(Incoming::Auth(auth)))
                    }
                    _ => Err(Error::ProtocolViolation),
                };
            }
            ConnectionState::Connected | ConnectionState::Disconnecting => {}
        }
        self.last_received = Some(Stamp::new(now));
        self.clear_ping();
        match packet {
            Packet::ConnAck(_) => Err(Error::ProtocolViolation),
            Packet::Publish(p) => self.on_publish(p),
            Packet::PubAck(Ack { pkid: id, .. }) => {
                Ok(self.complete(id, Awaiting::PubAck).map(Incoming::PubAck))
            }
            // A refusal ends the flow: no PUBREL [MQTT-4.3.3-4 and 3.5.2.1].
            Packet::PubRec(Ack {
                pkid: id,
                reason_code: 0x80..,
                ..
            }) => Ok(self.complete(id, Awaiting::PubRec).map(Incoming::PubRec)),
            Packet::PubRec(Ack { pkid: id, .. }) => self.on_pubrec(id),
            Packet::PubRel(Ack { pkid: id, .. }) => {
                let message = self.activity.as_mut().and_then(|act| act.held.remove(&id));
                if message.is_some() && self.durable.is_some() {
                    // PUBCOMP waits for `delivered`, once the callback returned.
                    return Ok(Some(Incoming::PubRel { mid: id, message }));
                }
                // MQTT 5 tells the server an id it released is unknown here.
                let reason_code = if message.is_none() && self.v5 {
                    0x92
                } else {
                    0
                };
                self.emit(&Packet::PubComp(Ack {
                    pkid: id,
                    reason_code,
                    properties: self.v5.then_some(Properties::EMPTY),
                }));
                Ok(Some(Incoming::PubRel { mid: id, message }))
            }
            Packet::PubComp(Ack { pkid: id, .. }) => {
                Ok(self.complete(id, Awaiting::PubComp).map(Incoming::PubComp))
            }
            Packet::SubAck(ack) => self.on_suback(ack),
            Packet::UnsubAck(ack) => self.on_unsuback(ack),
            Packet::PingResp => Ok(Some(Incoming::PingResp)),
            // The reactor closes the transport and reports it.
            Packet::Disconnect(d) => Ok(Some(Incoming::Disconnect(d))),
            Packet::Auth(auth) => Ok(Some(Incoming::Auth(auth))),
            // Rejected above.
            Packet::Connect(_)
            | Packet::Subscribe(_)
            | Packet::Unsubscribe(_)
            | Packet::PingReq => Err(Error::ProtocolViolation),
        }
    }

    fn on_connack<'a>(&mut self, now: Instant, ack: ConnAck<'a>) -> Incoming<'a> {
        self.pending = None;
        if !ack.is_success() {
            self.state = ConnectionState::Disconnected;
            self.outbox.clear();
            return Incoming::ConnAck(ack);
        }
        self.state = ConnectionState::Connected;
        self.last_received = Some(Stamp::new(now));
        // The CONNECT's buffer: a connection that stays idle (one of
        // thousands on a reactor) should not keep it; traffic allocates one
        // again, once per connection.
        self.outbox.release_if_written();
        let session_present = ack.session_present;
        if let Some(props) = ack.properties.filter(|_| self.v5) {
            let link = self.v5_link.get_or_insert_default();
            link.server = ServerLimits::from_connack(props);
            // Reconnections resume the session the server named [MQTT-3.2.2-16].
            if let Some(id) = props.str_of(prop::ASSIGNED_CLIENT_IDENTIFIER) {
                self.config.client_id = id.into();
            }
            if let Some(keep_alive) = link.server.server_keep_alive {
                self.keep_alive = keep_alive;
            }
            let out_max = self
                .config
                .limits()
                .topic_alias_max
                .min(link.server.topic_alias_maximum);
            link.out_aliases.reset(out_max);
            self.refuse_over_limits();
        }

        // (1) The broker forgot its half of the incoming QoS 2 flows: a later
        // PUBREL for them cannot come, so holding them would only leak.
        if !session_present && let Some(act) = self.activity.as_mut() {
            if let Some(durable) = self.durable.as_mut() {
                for &id in act.held.keys() {
                    let _ = durable.remove_held(id);
                }
            }
            act.held.clear();
        }
        if self.config.clean_session
            && let Some(durable) = self.durable.as_mut()
        {
            // What a previous life stored is not part of a clean session.
            let _ = durable.remove_stale();
        }

        // (2) With the session, each flow continues where it stopped. Without
        // it, a message not yet acknowledged is published again rather than
        // lost; one the broker acknowledged with PUBREC must not be
        // [MQTT-4.3.3-1], and whether the broker delivered it before losing
        // its session cannot be known: it is reported as unresolved.
        // DUP=1 on every resent PUBLISH [MQTT-3.3.1-1].
        // Resent PUBLISHes count against the server's Receive Maximum as new
        // ones do [MQTT-3.3.4-7], and so do the flows awaiting PUBCOMP: a
        // server announcing less than is in flight gets the oldest, and the
        // others wait at the front of the queue (DUP set) for room.
        let mut order: Vec<(u64, u16)> = self
            .flows()
            .inflight
            .iter()
            .map(|(id, o)| (o.seq, *id))
            .collect();
        order.sort_unstable();
        let awaiting_pubcomp = if session_present {
            self.flows()
                .inflight
                .values()
                .filter(|o| o.stage == Awaiting::PubComp)
                .count()
        } else {
            0
        };
        let mut room =
            usize::from(self.server_limits().receive_maximum).saturating_sub(awaiting_pubcomp);
        let mut deferred = Vec::new();
        for &(_, id) in &order {
            let Some(out) = self
                .activity
                .as_deref()
                .and_then(|act| act.inflight.get(&id))
            else {
                continue;
            };
            match (out.stage, session_present) {
                (Awaiting::PubComp, true) => {
                    let _ = Packet::pubrel(id).encode(self.outbox.bytes());
                }
                (Awaiting::PubComp, false) => {
                    let act = self.flows_mut();
                    if let Some(out) = act.inflight.remove(&id) {
                        act.recycle_packet(out.packet);
                    }
                    act.unresolved.push(id);
                    if let Some(durable) = self.durable.as_mut() {
                        let _ = durable.remove_outgoing(id);
                    }
                    self.ids.release(id);
                }
                _ if room == 0 => deferred.push(id),
                _ => {
                    room -= 1;
                    let start = self.outbox.bytes().len();
                    self.outbox.bytes().extend_from_slice(&out.packet);
                    self.outbox.bytes()[start] |= 0b1000;
                }
            }
        }
        for &id in deferred.iter().rev() {
            if let Some(out) = self
                .activity
                .as_mut()
                .and_then(|act| act.inflight.remove(&id))
            {
                self.requeue_front(id, out.packet);
            }
        }

        // (3) Requests keep their ids so the acks still match.
        let mut order: Vec<(u64, u16)> = self
            .flows()
            .requests
            .iter()
            .map(|(id, p)| (p.seq, *id))
            .collect();
        order.sort_unstable();
        for &(_, id) in &order {
            if let Some(pending) = self
                .activity
                .as_deref()
                .and_then(|act| act.requests.get(&id))
            {
                let _ = pending.request.encode(id, self.v5, self.outbox.bytes());
            }
        }

        // (4)
        if !session_present && self.config.resubscribe {
            self.resubscribe();
        }

        // (5)
        self.refill();
        // A connection with nothing to do (one of thousands idle on a
        // reactor) keeps no activity; traffic allocates it again.
        self.release_activity_if_idle();
        Incoming::ConnAck(ack)
    }

    /// Restore the tracked subscriptions a fresh broker session lacks, except
    /// filters a pending request is about to (un)subscribe anyway. Split into
    /// several SUBSCRIBEs if one would exceed `max_packet_size` or the
    /// server's Maximum Packet Size.
    fn resubscribe(&mut self) {
        let covered: HashSet<&str> = self
            .activity
            .as_deref()
            .unwrap_or(&NO_ACTIVITY)
            .requests
            .values()
            .flat_map(|p| p.request.filters())
            .collect();
        let mut missing: Vec<(String, Tracked)> = self
            .subscriptions
            .iter()
            .filter(|(f, _)| !covered.contains(f.as_str()))
            .map(|(f, t)| (f.clone(), *t))
            .collect();
        drop(covered);
        // One SUBSCRIBE carries one Subscription Identifier: group by it.
        missing.sort_by_key(|(_, t)| t.identifier);
        let v5 = self.v5;

        // Fixed header (at most 5) + packet id, and under MQTT 5 the property
        // length and a Subscription Identifier (at most 4 + 5).
        let overhead = if v5 { 5 + 2 + 4 + 5 } else { 5 + 2 };
        let max_packet_size = self.packet_size_limit();
        let mut chunk: Vec<(String, SubscribeOptions)> = Vec::new();
        let mut chunk_len = overhead;
        let mut missing = missing.into_iter().peekable();
        while let Some((filter, tracked)) = missing.next() {
            chunk_len += 2 + filter.len() + 1;
            chunk.push((filter, tracked.options));
            let ends = missing.peek().is_none_or(|(next, next_tracked)| {
                next_tracked.identifier != tracked.identifier
                    || chunk_len + 2 + next.len() + 1 > max_packet_size
            });
            if ends {
                let filters = std::mem::take(&mut chunk);
                chunk_len = overhead;
                // No free id: the subscriptions stay tracked and are retried
                // at the next reconnection.
                let Some(mid) = self.ids.next_free() else {
                    return;
                };
                let mut properties = PropertiesBuf::new();
                if let (true, Some(id)) = (v5, tracked.identifier) {
                    let _ = properties.push_int(prop::SUBSCRIPTION_IDENTIFIER, id);
                }
                let request = Request::Subscribe {
                    filters,
                    properties,
                    internal: true,
                };
                // A filter that alone does not fit this server's Maximum
                // Packet Size cannot be restored here (the server would close
                // the connection): it stays tracked, for a later server.
                let mark = self.outbox.bytes().len();
                if !request
                    .encode(mid, v5, self.outbox.bytes())
                    .is_ok_and(|len| len <= max_packet_size)
                {
                    self.outbox.bytes().truncate(mark);
                    continue;
                }
                self.ids.reserve(mid);
                self.ids.advance_past(mid);
                let seq = self.next_seq();
                self.flows_mut()
                    .requests
                    .insert(mid, Pending { seq, request });
            }
        }
    }

    fn on_publish<'a>(&mut self, p: Publish<'a>) -> Result<Option<Incoming<'a>>> {
        // An alias is set (topic given) or used (topic empty); the full topic
        // of a used one stays in `in_aliases` for `incoming_alias_topic`.
        if let Some(alias) = p
            .properties
            .and_then(|props| props.u32_of(prop::TOPIC_ALIAS))
        {
            self.v5_link
                .get_or_insert_default()
                .in_aliases
                .resolve(alias as u16, p.topic)
                .map_err(|e| e.error())?;
        }
        let message = Message {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            dup: p.dup,
            mid: p.pkid,
            properties: p.properties,
        };
        match p.qos {
            QoS::AtMostOnce => Ok(Some(Incoming::Publish {
                mid: 0,
                message: Some(message),
            })),
            QoS::AtLeastOnce => {
                // Queued now, written by the reactor after the callbacks ran.
                self.emit(&Packet::puback(p.pkid));
                Ok(Some(Incoming::Publish {
                    mid: p.pkid,
                    message: Some(message),
                }))
            }
            QoS::ExactlyOnce => {
                if self.flows().held.contains_key(&p.pkid) {
                    // Our PUBREC was lost: acknowledge again, deliver once.
                    self.emit(&Packet::pubrec(p.pkid));
                    return Ok(None);
                }
                // The Receive Maximum we announced bounds them under MQTT 5
                // (DISCONNECT 0x93 when exceeded).
                let limit = if self.v5 {
                    self.config.receive_maximum().into()
                } else {
                    self.config.limits().max_incoming_qos2 as usize
                };
                if self.flows().held.len() >= limit {
                    return Err(Error::TooManyIncoming);
                }
                let held = self.hold(&p);
                // Stored before PUBREC: the broker then never sends it again.
                if let Err(e) = self.store_held(&held) {
                    self.recycle(held);
                    return Err(e);
                }
                self.reserve_held();
                self.flows_mut().held.insert(p.pkid, held);
                self.emit(&Packet::pubrec(p.pkid));
                Ok(Some(Incoming::Publish {
                    mid: p.pkid,
                    message: None,
                }))
            }
        }
    }

    /// End the flow of `id` if it is at `stage`; a stray ack is ignored.
    fn complete(&mut self, id: u16, stage: Awaiting) -> Option<u16> {
        let act = self.activity.as_deref_mut()?;
        if act.inflight.get(&id)?.stage != stage {
            return None;
        }
        if let Some(done) = act.inflight.remove(&id) {
            act.recycle_packet(done.packet);
        }
        if let Some(durable) = self.durable.as_mut() {
            // A record left behind only repeats the flow in a later life.
            let _ = durable.remove_outgoing(id);
        }
        self.ids.release(id);
        self.refill();
        Some(id)
    }

    fn on_pubrec(&mut self, id: u16) -> Result<Option<Incoming<'static>>> {
        let seq = self.seq + 1;
        if let (Some(durable), Some(Awaiting::PubRec)) = (
            self.durable.as_mut(),
            self.activity
                .as_deref()
                .and_then(|act| act.inflight.get(&id))
                .map(|o| o.stage),
        ) {
            // Before PUBREL may go: a later life must never publish it again.
            durable.put_released(id)?;
        }
        let out = self
            .activity
            .as_deref_mut()
            .and_then(|act| act.inflight.get_mut(&id));
        Ok(match out {
            Some(out) if out.stage == Awaiting::PubRec => {
                out.stage = Awaiting::PubComp;
                // PUBRELs are resent in PUBREC order [MQTT-4.6.0-4].
                out.seq = seq;
                self.seq = seq;
                self.emit(&Packet::pubrel(id));
                Some(Incoming::PubRec(id))
            }
            // Our PUBREL was lost or is late: send it again.
            Some(out) if out.stage == Awaiting::PubComp => {
                self.emit(&Packet::pubrel(id));
                None
            }
            // A PUBREC for a QoS 1 message: answering would confuse the
            // broker about an id it is using for another flow.
            Some(_) => None,
            // The broker holds a flow we no longer know (e.g. completed before
            // a crash): releasing it lets it finish and free the id; MQTT 5
            // says the id was not found.
            None => {
                self.emit(&Packet::PubRel(Ack {
                    pkid: id,
                    reason_code: if self.v5 { 0x92 } else { 0 },
                    properties: self.v5.then_some(Properties::EMPTY),
                }));
                None
            }
        })
    }

    fn on_suback<'a>(&mut self, ack: codec::SubAck<'a>) -> Result<Option<Incoming<'a>>> {
        match self.flows().requests.get(&ack.pkid).map(|p| &p.request) {
            Some(Request::Subscribe { filters, .. }) => {
                if filters.len() != ack.return_codes.len() {
                    return Err(Error::ProtocolViolation);
                }
            }
            _ => return Ok(None),
        }
        let Some(Pending {
            request:
                Request::Subscribe {
                    filters,
                    properties,
                    internal,
                },
            ..
        }) = self
            .activity
            .as_mut()
            .and_then(|act| act.requests.remove(&ack.pkid))
        else {
            return Ok(None);
        };
        self.ids.release(ack.pkid);
        let identifier = properties
            .as_properties()
            .u32_of(prop::SUBSCRIPTION_IDENTIFIER);
        for ((filter, options), &code) in filters.into_iter().zip(ack.return_codes) {
            // 0x80 and above refuse the filter (3.1.1: only 0x80).
            if code < 0x80 {
                if let Some(durable) = self.durable.as_mut() {
                    // Lost, it only leaves the filter out of a resubscription.
                    let _ = durable.put_subscription(&filter, options.to_byte(), identifier);
                }
                // Track what was asked for, not what was granted, so a
                // resubscription asks for the same again.
                self.subscriptions.insert(
                    filter,
                    Tracked {
                        options,
                        identifier,
                    },
                );
            }
        }
        self.release_after_request();
        if internal {
            return Ok(None);
        }
        Ok(Some(Incoming::SubAck {
            mid: ack.pkid,
            return_codes: ack.return_codes,
        }))
    }

    fn on_unsuback(&mut self, ack: codec::UnsubAck<'_>) -> Result<Option<Incoming<'static>>> {
        let id = ack.pkid;
        match self.flows().requests.get(&id).map(|p| &p.request) {
            Some(Request::Unsubscribe { filters, .. }) => {
                // MQTT 5: one reason code per filter.
                if self.v5 && filters.len() != ack.reason_codes.len() {
                    return Err(Error::ProtocolViolation);
                }
            }
            _ => return Ok(None),
        }
        let Some(Pending {
            request: Request::Unsubscribe { filters, .. },
            ..
        }) = self
            .activity
            .as_mut()
            .and_then(|act| act.requests.remove(&id))
        else {
            return Ok(None);
        };
        self.ids.release(id);
        for (i, filter) in filters.iter().enumerate() {
            // A refused unsubscription (0x80 and above) leaves it in place.
            if ack.reason_codes.get(i).is_none_or(|&code| code < 0x80) {
                if let Some(durable) = self.durable.as_mut() {
                    let _ = durable.remove_subscription(filter);
                }
                self.subscriptions.remove(filter);
            }
        }
        self.release_after_request();
        Ok(Some(Incoming::UnsubAck(id)))
    }

    /// A subscription change is not steady traffic: once it leaves no flow
    /// behind, what the session held for it goes back at once rather than at
    /// the next PINGREQ (a fleet subscribes once, then idles).
    fn release_after_request(&mut self) {
        if self.activity.as_ref().is_some_and(|act| act.is_idle()) {
            self.release_idle_memory();
        }
    }

    fn encode_owned(&mut self, packet: &Packet<'_>, len: usize) -> Vec<u8> {
        let mut out = self
            .activity
            .as_mut()
            .map(|act| act.take_packet())
            .unwrap_or_default();
        out.clear();
        out.reserve(len);
        let _ = packet.encode(&mut out);
        out
    }

    /// Keeps `packet` for reuse; without an activity (nothing to reuse it
    /// for soon) it is freed.
    fn recycle_packet(&mut self, packet: Vec<u8>) {
        if let Some(act) = self.activity.as_mut() {
            act.recycle_packet(packet);
        }
    }

    /// An incoming QoS 2 message released by PUBREL was delivered: its
    /// callbacks returned. With a store, its record is removed (stable
    /// before PUBCOMP) and only then PUBCOMP is queued; without one PUBCOMP
    /// was queued with the PUBREL and this does nothing. On a store failure
    /// no PUBCOMP is sent and the connection ends (`handle_timeout`).
    pub fn delivered(&mut self, mid: u16) -> Result<()> {
        let Some(durable) = self.durable.as_mut() else {
            return Ok(());
        };
        if let Err(e) = durable.remove_held(mid) {
            self.store_error = Some(e);
            return Err(e);
        }
        self.emit(&Packet::PubComp(Ack {
            pkid: mid,
            reason_code: 0,
            properties: self.v5.then_some(Properties::EMPTY),
        }));
        Ok(())
    }

    fn store_held(&mut self, held: &OwnedMessage) -> Result<()> {
        let Some(durable) = self.durable.as_mut() else {
            return Ok(());
        };
        let v5 = self.v5;
        let mut buf = self
            .activity
            .as_mut()
            .map(|act| act.take_packet())
            .unwrap_or_default();
        buf.clear();
        let _ = Packet::Publish(Publish {
            dup: held.dup,
            qos: held.qos,
            retain: held.retain,
            topic: &held.topic,
            pkid: held.mid,
            payload: &held.payload,
            properties: v5.then(|| {
                held.properties
                    .as_ref()
                    .map_or(Properties::EMPTY, PropertiesBuf::as_properties)
            }),
        })
        .encode(&mut buf);
        let result = durable.put_held(held.mid, v5, &buf);
        self.recycle_packet(buf);
        result
    }

    /// Hand back a message released by PUBREL once the user has seen it, so
    /// its buffers serve the next incoming QoS 2 message.
    pub fn recycle(&mut self, message: OwnedMessage) {
        if let Some(act) = self.activity.as_mut()
            && act.spare_messages.len() < POOL_MAX
        {
            act.spare_messages.push(message);
        }
    }

    fn hold(&mut self, p: &Publish<'_>) -> OwnedMessage {
        let spare = self
            .activity
            .as_mut()
            .and_then(|act| act.spare_messages.pop());
        let mut m = spare.unwrap_or_else(|| OwnedMessage {
            topic: String::new(),
            payload: Vec::new(),
            qos: p.qos,
            retain: false,
            dup: false,
            mid: 0,
            properties: None,
        });
        m.topic.clear();
        // An empty topic used an alias, resolved by `on_publish` already.
        let alias = p
            .properties
            .and_then(|props| props.u32_of(prop::TOPIC_ALIAS));
        let in_aliases = self.v5_link.as_ref().map(|link| &link.in_aliases);
        match alias.and_then(|a| in_aliases?.get(a as u16)) {
            Some(topic) if p.topic.is_empty() => m.topic.push_str(topic),
            _ => m.topic.push_str(p.topic),
        }
        match (p.properties, &mut m.properties) {
            (None, kept) => *kept = None,
            (Some(props), Some(kept)) => kept.set(props),
            (Some(props), kept) => *kept = Some(PropertiesBuf::from_properties(props)),
        }
        m.payload.clear();
        m.payload.extend_from_slice(p.payload);
        m.qos = p.qos;
        m.retain = p.retain;
        m.dup = p.dup;
        m.mid = p.pkid;
        m
    }

    /// Append a packet built by the session itself. Such packets are valid by
    /// construction (non-zero ids, no strings), so encoding cannot fail; were
    /// it to, `encode` appends nothing and the packet is simply not sent.
    ///
    /// Nothing may follow a DISCONNECT on the connection (MQTT-3.14.4-2):
    /// packets still arriving meanwhile are processed, but their acks are
    /// left to the next connection (the broker resends what it needs).
    fn emit(&mut self, packet: &Packet<'_>) {
        if self.state == ConnectionState::Disconnecting {
            return;
        }
        let _ = packet.encode(self.outbox.bytes());
    }

    /// Append a PUBLISH, using a topic alias where one is (or can be) assigned.
    fn write_publish(&mut self, p: Publish<'_>) {
        if self.state == ConnectionState::Disconnecting {
            return;
        }
        let alias = match p.properties {
            Some(props) if self.aliasing_out() && self.fits_with_alias(&p, props) => self
                .v5_link
                .as_mut()
                .map_or(AliasUse::None, |link| link.out_aliases.for_topic(p.topic)),
            _ => AliasUse::None,
        };
        let (topic, alias) = match alias {
            AliasUse::None => {
                let _ = Packet::Publish(p).encode(self.outbox.bytes());
                return;
            }
            AliasUse::Set(alias) => (p.topic, alias),
            AliasUse::Reuse(alias) => ("", alias),
        };
        let scratch = &mut active(&mut self.activity).scratch_props;
        scratch.set(p.properties.unwrap_or_default());
        let _ = scratch.push_int(prop::TOPIC_ALIAS, alias.into());
        let aliased = Publish {
            topic,
            properties: Some(scratch.as_properties()),
            ..p
        };
        let _ = Packet::Publish(aliased).encode(self.outbox.bytes());
    }

    /// Whether `p` still fits our `max_packet_size` and the server's Maximum
    /// Packet Size with a Topic Alias added to its full topic: the larger of
    /// the two aliased forms (an empty topic and the alias is never longer),
    /// up to 3 bytes more than the form `publish_with` checked.
    fn fits_with_alias(&mut self, p: &Publish<'_>, props: Properties<'_>) -> bool {
        let max = self.packet_size_limit();
        let scratch = &mut active(&mut self.activity).scratch_props;
        scratch.set(props);
        let _ = scratch.push_int(prop::TOPIC_ALIAS, 1);
        let aliased = Publish {
            properties: Some(scratch.as_properties()),
            ..*p
        };
        Packet::Publish(aliased)
            .encoded_len()
            .is_ok_and(|len| len <= max)
    }

    /// Append a PUBLISH the session keeps encoded (queued or in flight).
    fn write_stored_publish(&mut self, packet: &[u8]) {
        if !self.aliasing_out() {
            self.outbox.bytes().extend_from_slice(packet);
            return;
        }
        match codec::decode_as(packet, usize::MAX, ProtocolVersion::V5) {
            Ok(codec::Decoded::Packet(Packet::Publish(p), _)) => self.write_publish(p),
            _ => self.outbox.bytes().extend_from_slice(packet),
        }
    }
}

/// Default `max_unsent_bytes`: 256 KiB. A loopback socket takes some hundreds
/// of kilobytes before it pushes back, so a burst then waits in the kernel
/// rather than in the process; a device keeps it smaller still.
pub const DEFAULT_MAX_UNSENT_BYTES: usize = 256 * 1024;

/// Spare buffers kept for reuse; beyond this they are freed.
const POOL_MAX: usize = 256;

/// The options byte of a stored subscription (`SubscribeOptions::to_byte`).
fn options_from_byte(b: u8) -> Option<SubscribeOptions> {
    if b & 0xC0 != 0 || (b >> 4) & 3 == 3 {
        return None;
    }
    Some(SubscribeOptions {
        qos: QoS::from_u8(b & 3)?,
        no_local: b & 4 != 0,
        retain_as_published: b & 8 != 0,
        retain_handling: (b >> 4) & 3,
    })
}

/// Topic + payload bytes of an encoded PUBLISH (what the queue counts).
fn publish_cost(packet: &[u8], protocol: ProtocolVersion) -> usize {
    match codec::decode_as(packet, usize::MAX, protocol) {
        Ok(codec::Decoded::Packet(Packet::Publish(p), _)) => p.topic.len() + p.payload.len(),
        _ => 0,
    }
}

/// A stored outgoing PUBLISH in the current protocol's form (a store may
/// outlive a switch between 3.1.1 and 5.0; properties are dropped for 3.1.1).
/// `None` if it is not a QoS 1/2 PUBLISH.
fn reencode(packet: &[u8], was_v5: bool, v5: bool) -> Option<Vec<u8>> {
    let proto = if was_v5 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    };
    let p = match codec::decode_as(packet, usize::MAX, proto) {
        Ok(codec::Decoded::Packet(Packet::Publish(p), used))
            if used == packet.len() && p.qos != QoS::AtMostOnce =>
        {
            p
        }
        _ => return None,
    };
    if was_v5 == v5 {
        return Some(packet.to_vec());
    }
    let mut out = Vec::new();
    Packet::Publish(Publish {
        properties: v5.then(|| p.properties.unwrap_or(Properties::EMPTY)),
        ..p
    })
    .encode(&mut out)
    .ok()?;
    Some(out)
}

#[cfg(test)]
mod packet_id_tests {
    use super::PacketIds;

    fn chunks_held(ids: &PacketIds) -> usize {
        ids.table.as_ref().map_or(0, |table| {
            table.chunks.iter().filter(|c| c.is_some()).count() + usize::from(table.spare.is_some())
        })
    }

    fn take(ids: &mut PacketIds) -> Option<u16> {
        let id = ids.next_free()?;
        ids.reserve(id);
        ids.advance_past(id);
        Some(id)
    }

    #[test]
    fn an_idle_set_holds_no_chunk_and_never_hands_out_zero() {
        let mut ids = PacketIds::new();
        assert_eq!(chunks_held(&ids), 0);
        assert_eq!(take(&mut ids), Some(1));
        assert_eq!(chunks_held(&ids), 1);
        ids.release(1);
        ids.release(1);
        assert_eq!(ids.in_use, 0);
        assert!(ids.table.is_some(), "the emptied chunk stays as the spare");
        ids.release_memory_if_empty();
        assert!(ids.table.is_none());
        assert_eq!(take(&mut ids), Some(2), "the counter survives the release");
    }

    #[test]
    fn all_65535_ids_then_none_then_the_released_one() {
        let mut ids = PacketIds::new();
        for expected in 1..=u16::MAX {
            assert_eq!(take(&mut ids), Some(expected));
        }
        assert_eq!(ids.next_free(), None);
        ids.release(4242);
        assert_eq!(take(&mut ids), Some(4242));
        assert_eq!(ids.next_free(), None);
    }

    #[test]
    fn rolling_ids_through_the_range_keeps_at_most_two_chunks_and_a_spare() {
        let mut ids = PacketIds::new();
        let mut window = std::collections::VecDeque::new();
        for _ in 0..3 * 65536 {
            window.push_back(take(&mut ids).unwrap());
            if window.len() > 20 {
                ids.release(window.pop_front().unwrap());
            }
            assert!(chunks_held(&ids) <= 3);
        }
        // Wrapped around, so ids already released come back in order.
        assert_eq!(ids.in_use, 20);
    }
}

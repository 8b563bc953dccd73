//! Every MQTT 3.1.1 and MQTT 5.0 control packet: encoding into a caller's
//! buffer and strict, allocation-bounded decoding from a byte slice.
//!
//! Decoding borrows strings, payloads and properties from the input so the
//! receive hot path copies nothing; encoding appends to a caller-owned
//! `Vec<u8>` whose capacity is reused from packet to packet.
//!
//! One packet type serves both versions: a packet carrying `properties:
//! Some(..)` (even empty) is in MQTT 5 form, one with `None` in 3.1.1 form, so
//! encoding needs no version. Decoding does: [`decode`] and [`decode_body`]
//! read MQTT 3.1.1, [`decode_as`] and [`decode_body_as`] either version.

use std::fmt;

use crate::protocol::properties::{self, property_name};
pub use crate::protocol::properties::{
    Properties, PropertiesBuf, Property, PropertyContext, PropertyType,
};

/// Default limit on the size of one incoming packet (fixed header included).
pub const DEFAULT_MAX_PACKET_SIZE: usize = 4 * 1024 * 1024;

/// The largest remaining length the 4-byte variable length encoding can express.
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// Quality of service of a PUBLISH or of a subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum QoS {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    pub fn from_u8(value: u8) -> Option<QoS> {
        match value {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// CONNACK return codes (MQTT 3.1.1 table 3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ConnectReturnCode {
    Accepted = 0,
    UnacceptableProtocolVersion = 1,
    IdentifierRejected = 2,
    ServerUnavailable = 3,
    BadUserNameOrPassword = 4,
    NotAuthorized = 5,
}

impl ConnectReturnCode {
    pub fn from_u8(value: u8) -> Option<ConnectReturnCode> {
        Some(match value {
            0 => ConnectReturnCode::Accepted,
            1 => ConnectReturnCode::UnacceptableProtocolVersion,
            2 => ConnectReturnCode::IdentifierRejected,
            3 => ConnectReturnCode::ServerUnavailable,
            4 => ConnectReturnCode::BadUserNameOrPassword,
            5 => ConnectReturnCode::NotAuthorized,
            _ => return None,
        })
    }
}

/// SUBACK return code for a refused filter.
pub const SUBACK_FAILURE: u8 = 0x80;

/// The protocol a connection speaks: the CONNECT's protocol level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ProtocolVersion {
    /// MQTT 3.1.1 (protocol level 4).
    V311 = 4,
    /// MQTT 5.0 (protocol level 5).
    V5 = 5,
}

/// Whether `code` is a reason code MQTT 5.0 allows in packets of type
/// `packet_type` (CONNACK 2, PUBACK 4, PUBREC 5, PUBREL 6, PUBCOMP 7, SUBACK 9,
/// UNSUBACK 11, DISCONNECT 14, AUTH 15); `false` for the other types.
pub fn valid_reason_code(packet_type: u8, code: u8) -> bool {
    match packet_type {
        // Table 3-1.
        2 => matches!(
            code,
            0x00 | 0x80..=0x8A | 0x8C | 0x90 | 0x95 | 0x97 | 0x99..=0x9D | 0x9F
        ),
        // Tables 3-4 and 3-5.
        4 | 5 => matches!(
            code,
            0x00 | 0x10 | 0x80 | 0x83 | 0x87 | 0x90 | 0x91 | 0x97 | 0x99
        ),
        // Tables 3-6 and 3-7.
        6 | 7 => matches!(code, 0x00 | 0x92),
        // Table 3-8.
        9 => matches!(
            code,
            0x00 | 0x01 | 0x02 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91 | 0x97 | 0x9E | 0xA1 | 0xA2
        ),
        // Table 3-9.
        11 => matches!(code, 0x00 | 0x11 | 0x80 | 0x83 | 0x87 | 0x8F | 0x91),
        // Table 3-10, plus 0x8C (Bad authentication method), which table 2-6
        // lists for DISCONNECT too.
        14 => matches!(
            code,
            0x00 | 0x04 | 0x80..=0x83 | 0x87 | 0x89 | 0x8B..=0x90 | 0x93..=0xA2
        ),
        // Table 3-11.
        15 => matches!(code, 0x00 | 0x18 | 0x19),
        _ => false,
    }
}

/// The last will of a CONNECT. `properties` (the will properties) is `Some`
/// exactly when the CONNECT is in MQTT 5 form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastWill<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: QoS,
    pub retain: bool,
    pub properties: Option<Properties<'a>>,
}

/// A CONNECT: protocol level 4 when `properties` is `None`, 5 when `Some`.
/// In MQTT 5 `clean_session` is the Clean Start flag, and a password may
/// come without a user name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect<'a> {
    pub client_id: &'a str,
    pub clean_session: bool,
    pub keep_alive: u16,
    pub will: Option<LastWill<'a>>,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
    pub properties: Option<Properties<'a>>,
}

impl Connect<'_> {
    pub fn version(&self) -> ProtocolVersion {
        if self.properties.is_some() {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V311
        }
    }
}

/// A CONNACK. In 3.1.1 form (`properties: None`) `reason_code` is a return
/// code 0..=5 (see [`ConnAck::code`]); in MQTT 5 form a CONNACK reason code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnAck<'a> {
    pub session_present: bool,
    pub reason_code: u8,
    pub properties: Option<Properties<'a>>,
}

impl ConnAck<'_> {
    /// A CONNACK in 3.1.1 form.
    pub fn new(session_present: bool, code: ConnectReturnCode) -> ConnAck<'static> {
        ConnAck {
            session_present,
            reason_code: code as u8,
            properties: None,
        }
    }

    /// The 3.1.1 return code; `None` for a CONNACK in MQTT 5 form.
    pub fn code(&self) -> Option<ConnectReturnCode> {
        if self.properties.is_some() {
            None
        } else {
            ConnectReturnCode::from_u8(self.reason_code)
        }
    }

    /// Whether the connection was accepted (return or reason code 0).
    pub fn is_success(&self) -> bool {
        self.reason_code == 0
    }
}

/// A PUBLISH. `pkid` is 0 for QoS 0 (no packet identifier on the wire).
/// In MQTT 5 form the topic may be empty when a Topic Alias property is present.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Publish<'a> {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    pub topic: &'a str,
    pub pkid: u16,
    pub payload: &'a [u8],
    pub properties: Option<Properties<'a>>,
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP. In 3.1.1 form (`properties: None`)
/// `reason_code` must be 0. In MQTT 5 form the encoding is as short as the
/// content allows: 2 bytes for reason 0 without properties, 3 with another
/// reason code and no properties; decoding always yields `Some` properties.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack<'a> {
    pub pkid: u16,
    pub reason_code: u8,
    pub properties: Option<Properties<'a>>,
}

impl Ack<'_> {
    /// The 3.1.1 form: reason 0, no properties.
    pub fn new(pkid: u16) -> Ack<'static> {
        Ack {
            pkid,
            reason_code: 0,
            properties: None,
        }
    }
}

/// The options byte of one SUBSCRIBE entry. 3.1.1 only has `qos`; the rest
/// must keep their defaults there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscribeOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// 0: send retained messages at subscribe, 1: only for a new
    /// subscription, 2: never. 3 is a protocol error.
    pub retain_handling: u8,
}

impl From<QoS> for SubscribeOptions {
    fn from(qos: QoS) -> SubscribeOptions {
        SubscribeOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
        }
    }
}

impl SubscribeOptions {
    /// The options byte.
    pub fn to_byte(self) -> u8 {
        self.qos as u8
            | (self.no_local as u8) << 2
            | (self.retain_as_published as u8) << 3
            | (self.retain_handling & 3) << 4
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe<'a> {
    pub pkid: u16,
    pub filters: Vec<(&'a str, SubscribeOptions)>,
    pub properties: Option<Properties<'a>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubAck<'a> {
    pub pkid: u16,
    /// One per requested filter. 3.1.1: 0, 1, 2 or `SUBACK_FAILURE`; MQTT 5:
    /// a SUBACK reason code.
    pub return_codes: &'a [u8],
    pub properties: Option<Properties<'a>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsubscribe<'a> {
    pub pkid: u16,
    pub filters: Vec<&'a str>,
    pub properties: Option<Properties<'a>>,
}

/// An UNSUBACK. 3.1.1 form: no reason codes, `properties: None`; MQTT 5 form:
/// one reason code per filter (at least one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnsubAck<'a> {
    pub pkid: u16,
    pub reason_codes: &'a [u8],
    pub properties: Option<Properties<'a>>,
}

/// A DISCONNECT. 3.1.1 form: reason 0, `properties: None` (no body).
/// MQTT 5 form: 0 bytes for reason 0 without properties, 1 byte for another
/// reason code without properties; decoding always yields `Some` properties.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Disconnect<'a> {
    pub reason_code: u8,
    pub properties: Option<Properties<'a>>,
}

/// An AUTH (MQTT 5 only, so `properties` must be `Some`). Reason 0 without
/// properties encodes as an empty body; decoding always yields `Some`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Auth<'a> {
    pub reason_code: u8,
    pub properties: Option<Properties<'a>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    Connect(Connect<'a>),
    ConnAck(ConnAck<'a>),
    Publish(Publish<'a>),
    PubAck(Ack<'a>),
    PubRec(Ack<'a>),
    PubRel(Ack<'a>),
    PubComp(Ack<'a>),
    Subscribe(Subscribe<'a>),
    SubAck(SubAck<'a>),
    Unsubscribe(Unsubscribe<'a>),
    UnsubAck(UnsubAck<'a>),
    PingReq,
    PingResp,
    Disconnect(Disconnect<'a>),
    Auth(Auth<'a>),
}

/// Why bytes could not be decoded (or a packet could not be encoded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodecError {
    /// The remaining length used a 5th byte (or does not terminate in 4).
    MalformedRemainingLength,
    /// The fixed header announces a packet larger than the configured maximum.
    PacketTooLarge {
        size: usize,
        max: usize,
    },
    /// Packet type 0, or 15 (AUTH) outside MQTT 5.
    ReservedPacketType(u8),
    /// Fixed-header flag bits that the spec fixes to other values.
    InvalidFlags {
        packet_type: u8,
        flags: u8,
    },
    /// A length field points beyond the packet's remaining length.
    Truncated,
    /// Bytes left after the last field of a packet with a fixed layout.
    TrailingBytes,
    InvalidUtf8,
    /// A string containing U+0000.
    NulInString,
    InvalidQoS(u8),
    /// A packet identifier of 0 where the spec requires non-zero.
    ZeroPacketId,
    InvalidConnackCode(u8),
    /// CONNACK acknowledge flags with reserved bits set, or session present on a refusal.
    InvalidConnackFlags(u8),
    InvalidProtocolName,
    InvalidProtocolLevel(u8),
    InvalidConnectFlags(u8),
    /// SUBACK return code other than 0, 1, 2 or 0x80 (3.1.1).
    InvalidSubackCode(u8),
    /// SUBSCRIBE, UNSUBSCRIBE, SUBACK or MQTT 5 UNSUBACK without a single entry.
    EmptyPayload,
    /// A topic name containing a wildcard or an invalid topic filter.
    InvalidTopic,
    /// A string or binary field longer than 65535 bytes (encoding only).
    FieldTooLong,
    /// The packet would need a remaining length above 268,435,455 (encoding only).
    PacketTooLongToEncode,
    /// A Variable Byte Integer inside the packet (a property length or a
    /// Subscription Identifier) that does not end within 4 bytes.
    MalformedVarInt,
    /// A property identifier MQTT 5.0 does not define.
    UnknownProperty(u8),
    /// A property the packet (or the will properties) may not carry.
    PropertyNotAllowed {
        id: u8,
        context: PropertyContext,
    },
    /// A property that may appear once appears again (protocol error).
    DuplicateProperty(u8),
    /// A property value outside its range, e.g. a flag other than 0 or 1 or
    /// a Topic Alias of 0 (protocol error).
    InvalidPropertyValue(u8),
    /// A `PropertiesBuf::push_*` call for a property of another type (encoding only).
    WrongPropertyType(u8),
    /// A reason code the packet type does not allow (protocol error).
    InvalidReasonCode {
        packet_type: u8,
        code: u8,
    },
    /// An MQTT 5 PUBLISH with an empty topic and no Topic Alias (protocol error).
    EmptyTopicWithoutAlias,
    /// MQTT 5 subscription options with reserved bits 6-7 set.
    InvalidSubscribeOptions(u8),
    /// MQTT 5 subscription options with Retain Handling 3 (protocol error).
    InvalidRetainHandling(u8),
    /// No Local on a shared subscription (`$share/...`) (protocol error).
    NoLocalOnSharedSubscription,
    /// A packet mixing the two protocol versions, e.g. will properties on a
    /// 3.1.1 CONNECT, or a reason code on a 3.1.1 PUBACK (encoding only).
    VersionMismatch(&'static str),
}

impl CodecError {
    /// Whether MQTT 5 calls this a Protocol Error (reason code 0x82) rather
    /// than a Malformed Packet (0x81): the packet parses but breaks a rule.
    pub fn is_protocol_error(&self) -> bool {
        matches!(
            self,
            CodecError::DuplicateProperty(_)
                | CodecError::InvalidPropertyValue(_)
                | CodecError::InvalidReasonCode { .. }
                | CodecError::EmptyTopicWithoutAlias
                | CodecError::InvalidRetainHandling(_)
                | CodecError::NoLocalOnSharedSubscription
        )
    }

    /// The MQTT 5 reason code a DISCONNECT sent because of this error
    /// carries: 0x95 (Packet too large), 0x82 (Protocol Error) or 0x81
    /// (Malformed Packet).
    pub fn reason_code(&self) -> u8 {
        match self {
            CodecError::PacketTooLarge { .. } => 0x95,
            e if e.is_protocol_error() => 0x82,
            _ => 0x81,
        }
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::MalformedRemainingLength => write!(f, "malformed remaining length"),
            CodecError::PacketTooLarge { size, max } => {
                write!(f, "packet of {size} bytes exceeds the maximum of {max}")
            }
            CodecError::ReservedPacketType(t) => write!(f, "reserved packet type {t}"),
            CodecError::InvalidFlags { packet_type, flags } => {
                write!(
                    f,
                    "invalid fixed header flags {flags:#x} for packet type {packet_type}"
                )
            }
            CodecError::Truncated => write!(f, "field extends beyond the packet"),
            CodecError::TrailingBytes => write!(f, "unexpected bytes at the end of the packet"),
            CodecError::InvalidUtf8 => write!(f, "string is not valid UTF-8"),
            CodecError::NulInString => write!(f, "string contains U+0000"),
            CodecError::InvalidQoS(q) => write!(f, "invalid QoS {q}"),
            CodecError::ZeroPacketId => write!(f, "packet identifier 0"),
            CodecError::InvalidConnackCode(c) => write!(f, "invalid CONNACK return code {c}"),
            CodecError::InvalidConnackFlags(b) => write!(f, "invalid CONNACK flags {b:#x}"),
            CodecError::InvalidProtocolName => write!(f, "protocol name is not MQTT"),
            CodecError::InvalidProtocolLevel(l) => write!(f, "unsupported protocol level {l}"),
            CodecError::InvalidConnectFlags(b) => write!(f, "invalid CONNECT flags {b:#x}"),
            CodecError::InvalidSubackCode(c) => write!(f, "invalid SUBACK return code {c:#x}"),
            CodecError::EmptyPayload => write!(f, "packet without any topic entry"),
            CodecError::InvalidTopic => write!(f, "invalid topic"),
            CodecError::FieldTooLong => write!(f, "field longer than 65535 bytes"),
            CodecError::PacketTooLongToEncode => write!(f, "packet too long to encode"),
            CodecError::MalformedVarInt => {
                write!(f, "variable byte integer longer than 4 bytes")
            }
            CodecError::UnknownProperty(id) => write!(f, "unknown property identifier {id:#04x}"),
            CodecError::PropertyNotAllowed { id, context } => write!(
                f,
                "property {id:#04x} ({}) not allowed in {}",
                property_name(*id),
                context.name()
            ),
            CodecError::DuplicateProperty(id) => write!(
                f,
                "property {id:#04x} ({}) included more than once",
                property_name(*id)
            ),
            CodecError::InvalidPropertyValue(id) => write!(
                f,
                "invalid value for property {id:#04x} ({})",
                property_name(*id)
            ),
            CodecError::WrongPropertyType(id) => write!(
                f,
                "property {id:#04x} ({}) has another value type",
                property_name(*id)
            ),
            CodecError::InvalidReasonCode { packet_type, code } => write!(
                f,
                "reason code {code:#04x} not allowed in {}",
                packet_type_name(*packet_type)
            ),
            CodecError::EmptyTopicWithoutAlias => {
                write!(f, "PUBLISH with an empty topic and no Topic Alias")
            }
            CodecError::InvalidSubscribeOptions(b) => {
                write!(f, "reserved bits set in subscription options {b:#04x}")
            }
            CodecError::InvalidRetainHandling(b) => {
                write!(f, "retain handling 3 in subscription options {b:#04x}")
            }
            CodecError::NoLocalOnSharedSubscription => {
                write!(f, "No Local set on a shared subscription")
            }
            CodecError::VersionMismatch(what) => write!(f, "{what}"),
        }
    }
}

impl std::error::Error for CodecError {}

/// Outcome of trying to decode one packet from the front of a byte slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// Not enough bytes yet; at least this many more are needed.
    Incomplete(usize),
    /// A packet and the number of bytes it used.
    Packet(Packet<'a>, usize),
}

/// The fixed header: first byte, remaining length, and the header's own length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedHeader {
    pub byte1: u8,
    pub remaining_length: usize,
    pub header_len: usize,
}

impl FixedHeader {
    pub fn packet_type(&self) -> u8 {
        self.byte1 >> 4
    }
    pub fn flags(&self) -> u8 {
        self.byte1 & 0x0f
    }
    pub fn frame_len(&self) -> usize {
        self.header_len + self.remaining_length
    }
}

/// The MQTT name of a control packet type ("PUBLISH" for 3); "reserved"
/// for 0 and anything above 15.
pub fn packet_type_name(packet_type: u8) -> &'static str {
    match packet_type {
        1 => "CONNECT",
        2 => "CONNACK",
        3 => "PUBLISH",
        4 => "PUBACK",
        5 => "PUBREC",
        6 => "PUBREL",
        7 => "PUBCOMP",
        8 => "SUBSCRIBE",
        9 => "SUBACK",
        10 => "UNSUBSCRIBE",
        11 => "UNSUBACK",
        12 => "PINGREQ",
        13 => "PINGRESP",
        14 => "DISCONNECT",
        15 => "AUTH",
        _ => "reserved",
    }
}

/// Parse the fixed header of an MQTT 3.1.1 packet, enforcing
/// `max_packet_size` before any payload is looked at, so a peer announcing a
/// huge packet costs nothing. `Ok(Err(n))` means at least `n` more bytes are needed.
pub fn parse_fixed_header(
    buf: &[u8],
    max_packet_size: usize,
) -> Result<Result<FixedHeader, usize>, CodecError> {
    parse_fixed_header_as(buf, max_packet_size, ProtocolVersion::V311)
}

/// [`parse_fixed_header`] for `version`: type 15 (AUTH) is reserved in 3.1.1 only.
pub fn parse_fixed_header_as(
    buf: &[u8],
    max_packet_size: usize,
    version: ProtocolVersion,
) -> Result<Result<FixedHeader, usize>, CodecError> {
    let Some(&byte1) = buf.first() else {
        return Ok(Err(2));
    };
    let packet_type = byte1 >> 4;
    if packet_type == 0 || (packet_type == 15 && version == ProtocolVersion::V311) {
        return Err(CodecError::ReservedPacketType(packet_type));
    }
    let mut remaining_length = 0usize;
    let mut i = 1;
    loop {
        if i > 4 {
            return Err(CodecError::MalformedRemainingLength);
        }
        let Some(&b) = buf.get(i) else {
            return Ok(Err(1));
        };
        remaining_length |= ((b & 0x7f) as usize) << (7 * (i - 1));
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
    }
    let header = FixedHeader {
        byte1,
        remaining_length,
        header_len: i,
    };
    if header.frame_len() > max_packet_size {
        return Err(CodecError::PacketTooLarge {
            size: header.frame_len(),
            max: max_packet_size,
        });
    }
    Ok(Ok(header))
}

/// Decode one MQTT 3.1.1 packet from the front of `buf`.
pub fn decode(buf: &[u8], max_packet_size: usize) -> Result<Decoded<'_>, CodecError> {
    decode_as(buf, max_packet_size, ProtocolVersion::V311)
}

/// Decode one packet of a connection speaking `version` from the front of
/// `buf`. A CONNECT is decoded by its own protocol level whatever `version`
/// says.
pub fn decode_as(
    buf: &[u8],
    max_packet_size: usize,
    version: ProtocolVersion,
) -> Result<Decoded<'_>, CodecError> {
    let header = match parse_fixed_header_as(buf, max_packet_size, version)? {
        Ok(h) => h,
        Err(needed) => return Ok(Decoded::Incomplete(needed)),
    };
    let frame_len = header.frame_len();
    if buf.len() < frame_len {
        return Ok(Decoded::Incomplete(frame_len - buf.len()));
    }
    let body = &buf[header.header_len..frame_len];
    let packet = decode_body_as(header.byte1, body, version)?;
    Ok(Decoded::Packet(packet, frame_len))
}

/// Decode the variable header and payload of an MQTT 3.1.1 packet whose
/// fixed header is known.
pub fn decode_body(byte1: u8, body: &[u8]) -> Result<Packet<'_>, CodecError> {
    decode_body_as(byte1, body, ProtocolVersion::V311)
}

/// [`decode_body`] for a connection speaking `version`. MQTT 5 packets come
/// back with `Some` properties (`Properties::EMPTY` when the wire omitted them).
pub fn decode_body_as(
    byte1: u8,
    body: &[u8],
    version: ProtocolVersion,
) -> Result<Packet<'_>, CodecError> {
    let v5 = version == ProtocolVersion::V5;
    let packet_type = byte1 >> 4;
    let flags = byte1 & 0x0f;
    let expect_flags = |want: u8| {
        if flags == want {
            Ok(())
        } else {
            Err(CodecError::InvalidFlags { packet_type, flags })
        }
    };
    let check_reason = |code: u8| {
        if valid_reason_code(packet_type, code) {
            Ok(code)
        } else {
            Err(CodecError::InvalidReasonCode { packet_type, code })
        }
    };
    let mut r = Reader { buf: body, pos: 0 };
    let packet = match packet_type {
        1 => {
            expect_flags(0)?;
            Packet::Connect(decode_connect(&mut r)?)
        }
        2 => {
            expect_flags(0)?;
            let ack_flags = r.u8()?;
            let code = r.u8()?;
            if ack_flags & 0xfe != 0 {
                return Err(CodecError::InvalidConnackFlags(ack_flags));
            }
            let properties = if v5 {
                check_reason(code)?;
                Some(r.properties(PropertyContext::ConnAck)?)
            } else {
                ConnectReturnCode::from_u8(code).ok_or(CodecError::InvalidConnackCode(code))?;
                None
            };
            let session_present = ack_flags & 1 == 1;
            if session_present && code != 0 {
                return Err(CodecError::InvalidConnackFlags(ack_flags));
            }
            Packet::ConnAck(ConnAck {
                session_present,
                reason_code: code,
                properties,
            })
        }
        3 => {
            let qos_bits = (flags >> 1) & 3;
            let qos = QoS::from_u8(qos_bits).ok_or(CodecError::InvalidQoS(qos_bits))?;
            let dup = flags & 0b1000 != 0;
            if qos == QoS::AtMostOnce && dup {
                return Err(CodecError::InvalidFlags { packet_type, flags });
            }
            let topic = r.string()?;
            // An empty MQTT 5 topic stands for a Topic Alias, checked below.
            let aliased = v5 && topic.is_empty();
            if !aliased && !crate::protocol::topic::valid_topic_name(topic) {
                return Err(CodecError::InvalidTopic);
            }
            let pkid = if qos == QoS::AtMostOnce { 0 } else { r.pkid()? };
            let properties = if v5 {
                let properties = r.properties(PropertyContext::Publish)?;
                if topic.is_empty() && properties.get(properties::TOPIC_ALIAS).is_none() {
                    return Err(CodecError::EmptyTopicWithoutAlias);
                }
                Some(properties)
            } else {
                None
            };
            let payload = r.rest();
            return Ok(Packet::Publish(Publish {
                dup,
                qos,
                retain: flags & 1 != 0,
                topic,
                pkid,
                payload,
                properties,
            }));
        }
        4..=7 => {
            expect_flags(if packet_type == 6 { 0b0010 } else { 0 })?;
            let pkid = r.pkid()?;
            let (reason_code, properties) = if v5 {
                let reason_code = if r.is_empty() {
                    0
                } else {
                    check_reason(r.u8()?)?
                };
                let properties = if r.is_empty() {
                    Properties::EMPTY
                } else {
                    r.properties(ack_context(packet_type))?
                };
                (reason_code, Some(properties))
            } else {
                (0, None)
            };
            let ack = Ack {
                pkid,
                reason_code,
                properties,
            };
            match packet_type {
                4 => Packet::PubAck(ack),
                5 => Packet::PubRec(ack),
                6 => Packet::PubRel(ack),
                _ => Packet::PubComp(ack),
            }
        }
        8 => {
            expect_flags(0b0010)?;
            let pkid = r.pkid()?;
            let properties = if v5 {
                Some(r.properties(PropertyContext::Subscribe)?)
            } else {
                None
            };
            let mut filters = Vec::new();
            while !r.is_empty() {
                let filter = r.string()?;
                if !crate::protocol::topic::valid_topic_filter(filter) {
                    return Err(CodecError::InvalidTopic);
                }
                let byte = r.u8()?;
                let options = if v5 {
                    decode_subscribe_options(filter, byte)?
                } else {
                    if byte & 0xfc != 0 {
                        return Err(CodecError::InvalidQoS(byte));
                    }
                    QoS::from_u8(byte)
                        .ok_or(CodecError::InvalidQoS(byte))?
                        .into()
                };
                filters.push((filter, options));
            }
            if filters.is_empty() {
                return Err(CodecError::EmptyPayload);
            }
            return Ok(Packet::Subscribe(Subscribe {
                pkid,
                filters,
                properties,
            }));
        }
        9 => {
            expect_flags(0)?;
            let pkid = r.pkid()?;
            let properties = if v5 {
                Some(r.properties(PropertyContext::SubAck)?)
            } else {
                None
            };
            let return_codes = r.rest();
            if return_codes.is_empty() {
                return Err(CodecError::EmptyPayload);
            }
            if v5 {
                for &code in return_codes {
                    check_reason(code)?;
                }
            } else if let Some(&bad) = return_codes.iter().find(|&&c| c > 2 && c != SUBACK_FAILURE)
            {
                return Err(CodecError::InvalidSubackCode(bad));
            }
            return Ok(Packet::SubAck(SubAck {
                pkid,
                return_codes,
                properties,
            }));
        }
        10 => {
            expect_flags(0b0010)?;
            let pkid = r.pkid()?;
            let properties = if v5 {
                Some(r.properties(PropertyContext::Unsubscribe)?)
            } else {
                None
            };
            let mut filters = Vec::new();
            while !r.is_empty() {
                let filter = r.string()?;
                if !crate::protocol::topic::valid_topic_filter(filter) {
                    return Err(CodecError::InvalidTopic);
                }
                filters.push(filter);
            }
            if filters.is_empty() {
                return Err(CodecError::EmptyPayload);
            }
            return Ok(Packet::Unsubscribe(Unsubscribe {
                pkid,
                filters,
                properties,
            }));
        }
        11 => {
            expect_flags(0)?;
            let pkid = r.pkid()?;
            if v5 {
                let properties = r.properties(PropertyContext::UnsubAck)?;
                let reason_codes = r.rest();
                if reason_codes.is_empty() {
                    return Err(CodecError::EmptyPayload);
                }
                for &code in reason_codes {
                    check_reason(code)?;
                }
                return Ok(Packet::UnsubAck(UnsubAck {
                    pkid,
                    reason_codes,
                    properties: Some(properties),
                }));
            }
            Packet::unsuback(pkid)
        }
        12 => {
            expect_flags(0)?;
            Packet::PingReq
        }
        13 => {
            expect_flags(0)?;
            Packet::PingResp
        }
        14 => {
            expect_flags(0)?;
            if v5 {
                let reason_code = if r.is_empty() {
                    0
                } else {
                    check_reason(r.u8()?)?
                };
                let properties = if r.is_empty() {
                    Properties::EMPTY
                } else {
                    r.properties(PropertyContext::Disconnect)?
                };
                Packet::Disconnect(Disconnect {
                    reason_code,
                    properties: Some(properties),
                })
            } else {
                Packet::disconnect()
            }
        }
        15 if v5 => {
            expect_flags(0)?;
            // Reason code and property length are omitted together or not
            // at all (section 3.15.2): a lone reason code is truncated.
            let (reason_code, properties) = if r.is_empty() {
                (0, Properties::EMPTY)
            } else {
                (check_reason(r.u8()?)?, r.properties(PropertyContext::Auth)?)
            };
            Packet::Auth(Auth {
                reason_code,
                properties: Some(properties),
            })
        }
        _ => return Err(CodecError::ReservedPacketType(packet_type)),
    };
    if !r.is_empty() {
        return Err(CodecError::TrailingBytes);
    }
    Ok(packet)
}

fn ack_context(packet_type: u8) -> PropertyContext {
    match packet_type {
        4 => PropertyContext::PubAck,
        5 => PropertyContext::PubRec,
        6 => PropertyContext::PubRel,
        _ => PropertyContext::PubComp,
    }
}

fn is_shared(filter: &str) -> bool {
    filter.starts_with("$share/")
}

fn decode_subscribe_options(filter: &str, byte: u8) -> Result<SubscribeOptions, CodecError> {
    if byte & 0xc0 != 0 {
        return Err(CodecError::InvalidSubscribeOptions(byte));
    }
    let qos = QoS::from_u8(byte & 3).ok_or(CodecError::InvalidQoS(byte & 3))?;
    let options = SubscribeOptions {
        qos,
        no_local: byte & 0b100 != 0,
        retain_as_published: byte & 0b1000 != 0,
        retain_handling: (byte >> 4) & 3,
    };
    check_subscribe_options(filter, options)?;
    Ok(options)
}

/// The MQTT 5 rules on subscription options beyond their encoding.
fn check_subscribe_options(filter: &str, options: SubscribeOptions) -> Result<(), CodecError> {
    if options.retain_handling > 2 {
        return Err(CodecError::InvalidRetainHandling(options.to_byte()));
    }
    if options.no_local && is_shared(filter) {
        return Err(CodecError::NoLocalOnSharedSubscription);
    }
    Ok(())
}

fn decode_connect<'a>(r: &mut Reader<'a>) -> Result<Connect<'a>, CodecError> {
    if r.binary()? != b"MQTT" {
        return Err(CodecError::InvalidProtocolName);
    }
    let level = r.u8()?;
    let v5 = match level {
        4 => false,
        5 => true,
        _ => return Err(CodecError::InvalidProtocolLevel(level)),
    };
    let flags = r.u8()?;
    let will_flag = flags & 0b0000_0100 != 0;
    let will_qos_bits = (flags >> 3) & 3;
    let will_retain = flags & 0b0010_0000 != 0;
    let has_password = flags & 0b0100_0000 != 0;
    let has_username = flags & 0b1000_0000 != 0;
    let invalid = flags & 1 != 0
        || (!will_flag && (will_qos_bits != 0 || will_retain))
        || will_qos_bits == 3
        || (has_password && !has_username && !v5);
    if invalid {
        return Err(CodecError::InvalidConnectFlags(flags));
    }
    let keep_alive = r.u16()?;
    let properties = if v5 {
        Some(r.properties(PropertyContext::Connect)?)
    } else {
        None
    };
    let client_id = r.string()?;
    let will = if will_flag {
        let will_properties = if v5 {
            Some(r.properties(PropertyContext::Will)?)
        } else {
            None
        };
        let topic = r.string()?;
        if !crate::protocol::topic::valid_topic_name(topic) {
            return Err(CodecError::InvalidTopic);
        }
        let payload = r.binary()?;
        Some(LastWill {
            topic,
            payload,
            qos: QoS::from_u8(will_qos_bits).ok_or(CodecError::InvalidQoS(will_qos_bits))?,
            retain: will_retain,
            properties: will_properties,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(r.string()?)
    } else {
        None
    };
    let password = if has_password {
        Some(r.binary()?)
    } else {
        None
    };
    Ok(Connect {
        client_id,
        clean_session: flags & 0b10 != 0,
        keep_alive,
        will,
        username,
        password,
        properties,
    })
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self.pos.checked_add(n).ok_or(CodecError::Truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or(CodecError::Truncated)?;
        self.pos = end;
        Ok(bytes)
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, CodecError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn pkid(&mut self) -> Result<u16, CodecError> {
        match self.u16()? {
            0 => Err(CodecError::ZeroPacketId),
            id => Ok(id),
        }
    }
    fn binary(&mut self) -> Result<&'a [u8], CodecError> {
        let len = self.u16()? as usize;
        self.take(len)
    }
    fn string(&mut self) -> Result<&'a str, CodecError> {
        let bytes = self.binary()?;
        let s = std::str::from_utf8(bytes).map_err(|_| CodecError::InvalidUtf8)?;
        if bytes.contains(&0) {
            return Err(CodecError::NulInString);
        }
        Ok(s)
    }
    /// A property length and the property section it announces, validated.
    fn properties(&mut self, ctx: PropertyContext) -> Result<Properties<'a>, CodecError> {
        let len = properties::read_varint(self.buf, &mut self.pos)?;
        let bytes = self.take(len as usize)?;
        Properties::parse(bytes, ctx)
    }
    fn rest(&mut self) -> &'a [u8] {
        let rest = &self.buf[self.pos.min(self.buf.len())..];
        self.pos = self.buf.len();
        rest
    }
}

/// Append the remaining-length varint for `len`.
/// The whole packet's size for a remaining length, which must fit the
/// four-byte Variable Byte Integer.
fn frame_len(remaining: usize) -> Result<usize, CodecError> {
    if remaining > MAX_REMAINING_LENGTH {
        return Err(CodecError::PacketTooLongToEncode);
    }
    Ok(1 + properties::varint_len(remaining) + remaining)
}

fn put_binary(out: &mut Vec<u8>, bytes: &[u8]) {
    // Lengths are checked by `encoded_len` before anything is written.
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Append a property section (length and properties), if any.
fn put_properties(out: &mut Vec<u8>, properties: Option<Properties<'_>>) {
    if let Some(p) = properties {
        properties::put_varint(out, p.as_bytes().len());
        out.extend_from_slice(p.as_bytes());
    }
}

fn field_len(bytes: &[u8]) -> Result<usize, CodecError> {
    if bytes.len() > u16::MAX as usize {
        Err(CodecError::FieldTooLong)
    } else {
        Ok(2 + bytes.len())
    }
}

fn check_str(s: &str) -> Result<usize, CodecError> {
    if s.as_bytes().contains(&0) {
        return Err(CodecError::NulInString);
    }
    field_len(s.as_bytes())
}

fn check_pkid(pkid: u16) -> Result<(), CodecError> {
    if pkid == 0 {
        Err(CodecError::ZeroPacketId)
    } else {
        Ok(())
    }
}

/// Validate a property section for `ctx` and return its encoded size
/// (property length included); 0 for `None`.
fn check_properties(
    properties: Option<Properties<'_>>,
    ctx: PropertyContext,
) -> Result<usize, CodecError> {
    let Some(p) = properties else {
        return Ok(0);
    };
    Properties::parse(p.as_bytes(), ctx)?;
    if p.as_bytes().len() > MAX_REMAINING_LENGTH {
        return Err(CodecError::PacketTooLongToEncode);
    }
    Ok(p.encoded_len())
}

fn check_reason_code(packet_type: u8, code: u8) -> Result<(), CodecError> {
    if valid_reason_code(packet_type, code) {
        Ok(())
    } else {
        Err(CodecError::InvalidReasonCode { packet_type, code })
    }
}

/// How much of "reason code, properties" an ack, DISCONNECT or AUTH puts
/// on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tail {
    /// Neither (reason 0, no properties).
    None,
    /// The reason code only.
    Reason,
    /// Both.
    Full,
}

fn tail(reason_code: u8, properties: Option<Properties<'_>>, reason_alone: bool) -> Tail {
    let empty = properties.is_none_or(|p| p.is_empty());
    match (reason_code, empty) {
        (0, true) => Tail::None,
        (_, true) if reason_alone => Tail::Reason,
        _ => Tail::Full,
    }
}

fn tail_len(tail: Tail, properties: Option<Properties<'_>>) -> usize {
    match tail {
        Tail::None => 0,
        Tail::Reason => 1,
        Tail::Full => 1 + properties.unwrap_or_default().encoded_len(),
    }
}

fn put_tail(out: &mut Vec<u8>, tail: Tail, reason_code: u8, properties: Option<Properties<'_>>) {
    match tail {
        Tail::None => {}
        Tail::Reason => out.push(reason_code),
        Tail::Full => {
            out.push(reason_code);
            put_properties(out, Some(properties.unwrap_or_default()));
        }
    }
}

impl<'a> Packet<'a> {
    /// PUBACK in 3.1.1 form.
    pub fn puback(pkid: u16) -> Packet<'a> {
        Packet::PubAck(Ack::new(pkid))
    }
    /// PUBREC in 3.1.1 form.
    pub fn pubrec(pkid: u16) -> Packet<'a> {
        Packet::PubRec(Ack::new(pkid))
    }
    /// PUBREL in 3.1.1 form.
    pub fn pubrel(pkid: u16) -> Packet<'a> {
        Packet::PubRel(Ack::new(pkid))
    }
    /// PUBCOMP in 3.1.1 form.
    pub fn pubcomp(pkid: u16) -> Packet<'a> {
        Packet::PubComp(Ack::new(pkid))
    }
    /// UNSUBACK in 3.1.1 form.
    pub fn unsuback(pkid: u16) -> Packet<'a> {
        Packet::UnsubAck(UnsubAck {
            pkid,
            reason_codes: &[],
            properties: None,
        })
    }
    /// DISCONNECT in 3.1.1 form.
    pub fn disconnect() -> Packet<'a> {
        Packet::Disconnect(Disconnect::default())
    }

    /// The packet's property section: `None` for a packet in 3.1.1 form and
    /// for PINGREQ/PINGRESP. For CONNECT, the CONNECT properties (the will's
    /// are in `will.properties`).
    pub fn properties(&self) -> Option<Properties<'a>> {
        match self {
            Packet::Connect(c) => c.properties,
            Packet::ConnAck(a) => a.properties,
            Packet::Publish(p) => p.properties,
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                a.properties
            }
            Packet::Subscribe(s) => s.properties,
            Packet::SubAck(s) => s.properties,
            Packet::Unsubscribe(u) => u.properties,
            Packet::UnsubAck(u) => u.properties,
            Packet::PingReq | Packet::PingResp => None,
            Packet::Disconnect(d) => d.properties,
            Packet::Auth(a) => a.properties,
        }
    }

    /// The reason code of an ack (PUBACK to PUBCOMP), CONNACK, DISCONNECT or
    /// AUTH; `None` for the others (SUBACK and UNSUBACK have one per filter).
    pub fn reason_code(&self) -> Option<u8> {
        match self {
            Packet::ConnAck(a) => Some(a.reason_code),
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                Some(a.reason_code)
            }
            Packet::Disconnect(d) => Some(d.reason_code),
            Packet::Auth(a) => Some(a.reason_code),
            _ => None,
        }
    }
}

impl Packet<'_> {
    /// The MQTT control packet type (1..=15).
    pub fn packet_type(&self) -> u8 {
        match self {
            Packet::Connect(_) => 1,
            Packet::ConnAck(_) => 2,
            Packet::Publish(_) => 3,
            Packet::PubAck(_) => 4,
            Packet::PubRec(_) => 5,
            Packet::PubRel(_) => 6,
            Packet::PubComp(_) => 7,
            Packet::Subscribe(_) => 8,
            Packet::SubAck(_) => 9,
            Packet::Unsubscribe(_) => 10,
            Packet::UnsubAck(_) => 11,
            Packet::PingReq => 12,
            Packet::PingResp => 13,
            Packet::Disconnect(_) => 14,
            Packet::Auth(_) => 15,
        }
    }

    fn first_byte(&self) -> u8 {
        let flags = match self {
            Packet::Publish(p) => ((p.dup as u8) << 3) | ((p.qos as u8) << 1) | p.retain as u8,
            Packet::PubRel(_) | Packet::Subscribe(_) | Packet::Unsubscribe(_) => 0b0010,
            _ => 0,
        };
        (self.packet_type() << 4) | flags
    }

    /// How an ack, DISCONNECT or AUTH ends (`Tail::None` for other packets).
    fn tail(&self) -> Tail {
        match self {
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a)
                if a.properties.is_some() =>
            {
                tail(a.reason_code, a.properties, true)
            }
            Packet::Disconnect(d) if d.properties.is_some() => {
                tail(d.reason_code, d.properties, true)
            }
            Packet::Auth(a) => tail(a.reason_code, a.properties, false),
            _ => Tail::None,
        }
    }

    /// Validate the packet and return its remaining length.
    fn remaining_length(&self) -> Result<usize, CodecError> {
        Ok(match self {
            Packet::Connect(c) => {
                let v5 = c.properties.is_some();
                let mut len = 10
                    + check_properties(c.properties, PropertyContext::Connect)?
                    + check_str(c.client_id)?;
                if let Some(w) = &c.will {
                    if w.properties.is_some() != v5 {
                        return Err(CodecError::VersionMismatch(if v5 {
                            "MQTT 5 CONNECT with a will without will properties"
                        } else {
                            "will properties on an MQTT 3.1.1 CONNECT"
                        }));
                    }
                    if !crate::protocol::topic::valid_topic_name(w.topic) {
                        return Err(CodecError::InvalidTopic);
                    }
                    len += check_properties(w.properties, PropertyContext::Will)?
                        + check_str(w.topic)?
                        + field_len(w.payload)?;
                }
                if let Some(u) = c.username {
                    len += check_str(u)?;
                } else if c.password.is_some() && !v5 {
                    return Err(CodecError::InvalidConnectFlags(0b0100_0000));
                }
                if let Some(p) = c.password {
                    len += field_len(p)?;
                }
                len
            }
            Packet::ConnAck(a) => {
                if a.properties.is_some() {
                    check_reason_code(2, a.reason_code)?;
                } else if ConnectReturnCode::from_u8(a.reason_code).is_none() {
                    return Err(CodecError::InvalidConnackCode(a.reason_code));
                }
                if a.session_present && a.reason_code != 0 {
                    return Err(CodecError::InvalidConnackFlags(1));
                }
                2 + check_properties(a.properties, PropertyContext::ConnAck)?
            }
            Packet::Publish(p) => {
                let properties_len = check_properties(p.properties, PropertyContext::Publish)?;
                match p.properties {
                    Some(props) if p.topic.is_empty() => {
                        if props.get(properties::TOPIC_ALIAS).is_none() {
                            return Err(CodecError::EmptyTopicWithoutAlias);
                        }
                    }
                    _ => {
                        if !crate::protocol::topic::valid_topic_name(p.topic) {
                            return Err(CodecError::InvalidTopic);
                        }
                    }
                }
                if p.qos == QoS::AtMostOnce && p.dup {
                    return Err(CodecError::InvalidFlags {
                        packet_type: 3,
                        flags: 0b1000,
                    });
                }
                let id_len = if p.qos == QoS::AtMostOnce {
                    0
                } else {
                    check_pkid(p.pkid)?;
                    2
                };
                check_str(p.topic)? + id_len + properties_len + p.payload.len()
            }
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                check_pkid(a.pkid)?;
                let packet_type = self.packet_type();
                if a.properties.is_none() {
                    if a.reason_code != 0 {
                        return Err(CodecError::VersionMismatch(
                            "reason code on an MQTT 3.1.1 acknowledgement",
                        ));
                    }
                    2
                } else {
                    check_reason_code(packet_type, a.reason_code)?;
                    check_properties(a.properties, ack_context(packet_type))?;
                    2 + tail_len(self.tail(), a.properties)
                }
            }
            Packet::Subscribe(s) => {
                check_pkid(s.pkid)?;
                if s.filters.is_empty() {
                    return Err(CodecError::EmptyPayload);
                }
                let mut len = 2 + check_properties(s.properties, PropertyContext::Subscribe)?;
                for (filter, options) in &s.filters {
                    if !crate::protocol::topic::valid_topic_filter(filter) {
                        return Err(CodecError::InvalidTopic);
                    }
                    if s.properties.is_some() {
                        check_subscribe_options(filter, *options)?;
                    } else if *options != SubscribeOptions::from(options.qos) {
                        return Err(CodecError::VersionMismatch(
                            "MQTT 5 subscription options in an MQTT 3.1.1 SUBSCRIBE",
                        ));
                    }
                    len += check_str(filter)? + 1;
                }
                len
            }
            Packet::SubAck(s) => {
                check_pkid(s.pkid)?;
                if s.return_codes.is_empty() {
                    return Err(CodecError::EmptyPayload);
                }
                if s.properties.is_some() {
                    for &code in s.return_codes {
                        check_reason_code(9, code)?;
                    }
                } else if let Some(&bad) = s
                    .return_codes
                    .iter()
                    .find(|&&c| c > 2 && c != SUBACK_FAILURE)
                {
                    return Err(CodecError::InvalidSubackCode(bad));
                }
                2 + check_properties(s.properties, PropertyContext::SubAck)? + s.return_codes.len()
            }
            Packet::Unsubscribe(u) => {
                check_pkid(u.pkid)?;
                if u.filters.is_empty() {
                    return Err(CodecError::EmptyPayload);
                }
                let mut len = 2 + check_properties(u.properties, PropertyContext::Unsubscribe)?;
                for filter in &u.filters {
                    if !crate::protocol::topic::valid_topic_filter(filter) {
                        return Err(CodecError::InvalidTopic);
                    }
                    len += check_str(filter)?;
                }
                len
            }
            Packet::UnsubAck(u) => {
                check_pkid(u.pkid)?;
                if u.properties.is_none() {
                    if !u.reason_codes.is_empty() {
                        return Err(CodecError::VersionMismatch(
                            "reason codes in an MQTT 3.1.1 UNSUBACK",
                        ));
                    }
                    2
                } else {
                    if u.reason_codes.is_empty() {
                        return Err(CodecError::EmptyPayload);
                    }
                    for &code in u.reason_codes {
                        check_reason_code(11, code)?;
                    }
                    2 + check_properties(u.properties, PropertyContext::UnsubAck)?
                        + u.reason_codes.len()
                }
            }
            Packet::PingReq | Packet::PingResp => 0,
            Packet::Disconnect(d) => {
                if d.properties.is_none() {
                    if d.reason_code != 0 {
                        return Err(CodecError::VersionMismatch(
                            "reason code on an MQTT 3.1.1 DISCONNECT",
                        ));
                    }
                    0
                } else {
                    check_reason_code(14, d.reason_code)?;
                    check_properties(d.properties, PropertyContext::Disconnect)?;
                    tail_len(self.tail(), d.properties)
                }
            }
            Packet::Auth(a) => {
                if a.properties.is_none() {
                    return Err(CodecError::VersionMismatch(
                        "AUTH without properties: AUTH only exists in MQTT 5",
                    ));
                }
                check_reason_code(15, a.reason_code)?;
                check_properties(a.properties, PropertyContext::Auth)?;
                tail_len(self.tail(), a.properties)
            }
        })
    }

    /// Total encoded size, after validation.
    pub fn encoded_len(&self) -> Result<usize, CodecError> {
        frame_len(self.remaining_length()?)
    }

    /// Append the encoded packet to `out`: MQTT 5 form when it carries
    /// properties (`Some`, even empty), 3.1.1 form otherwise. On error
    /// nothing is appended.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<usize, CodecError> {
        let remaining = self.remaining_length()?;
        // One allocation for the whole packet when `out` has no room yet,
        // rather than a growth step per field.
        out.reserve(frame_len(remaining)?);
        let start = out.len();
        out.push(self.first_byte());
        properties::put_varint(out, remaining);
        match self {
            Packet::Connect(c) => {
                put_binary(out, b"MQTT");
                out.push(if c.properties.is_some() { 5 } else { 4 });
                let mut flags = 0u8;
                if c.clean_session {
                    flags |= 0b10;
                }
                if let Some(w) = &c.will {
                    flags |= 0b100 | ((w.qos as u8) << 3);
                    if w.retain {
                        flags |= 0b0010_0000;
                    }
                }
                if c.password.is_some() {
                    flags |= 0b0100_0000;
                }
                if c.username.is_some() {
                    flags |= 0b1000_0000;
                }
                out.push(flags);
                out.extend_from_slice(&c.keep_alive.to_be_bytes());
                put_properties(out, c.properties);
                put_binary(out, c.client_id.as_bytes());
                if let Some(w) = &c.will {
                    put_properties(out, w.properties);
                    put_binary(out, w.topic.as_bytes());
                    put_binary(out, w.payload);
                }
                if let Some(u) = c.username {
                    put_binary(out, u.as_bytes());
                }
                if let Some(p) = c.password {
                    put_binary(out, p);
                }
            }
            Packet::ConnAck(a) => {
                out.push(a.session_present as u8);
                out.push(a.reason_code);
                put_properties(out, a.properties);
            }
            Packet::Publish(p) => {
                put_binary(out, p.topic.as_bytes());
                if p.qos != QoS::AtMostOnce {
                    out.extend_from_slice(&p.pkid.to_be_bytes());
                }
                put_properties(out, p.properties);
                out.extend_from_slice(p.payload);
            }
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
                out.extend_from_slice(&a.pkid.to_be_bytes());
                put_tail(out, self.tail(), a.reason_code, a.properties);
            }
            Packet::Subscribe(s) => {
                out.extend_from_slice(&s.pkid.to_be_bytes());
                put_properties(out, s.properties);
                for (filter, options) in &s.filters {
                    put_binary(out, filter.as_bytes());
                    out.push(options.to_byte());
                }
            }
            Packet::SubAck(s) => {
                out.extend_from_slice(&s.pkid.to_be_bytes());
                put_properties(out, s.properties);
                out.extend_from_slice(s.return_codes);
            }
            Packet::Unsubscribe(u) => {
                out.extend_from_slice(&u.pkid.to_be_bytes());
                put_properties(out, u.properties);
                for filter in &u.filters {
                    put_binary(out, filter.as_bytes());
                }
            }
            Packet::UnsubAck(u) => {
                out.extend_from_slice(&u.pkid.to_be_bytes());
                put_properties(out, u.properties);
                out.extend_from_slice(u.reason_codes);
            }
            Packet::PingReq | Packet::PingResp => {}
            Packet::Disconnect(d) => put_tail(out, self.tail(), d.reason_code, d.properties),
            Packet::Auth(a) => put_tail(out, self.tail(), a.reason_code, a.properties),
        }
        Ok(out.len() - start)
    }
}

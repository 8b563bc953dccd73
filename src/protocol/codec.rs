//! Every MQTT 3.1.1 control packet: encoding into a caller's buffer and strict,
//! allocation-bounded decoding from a byte slice.
//!
//! Decoding borrows strings and payloads from the input so the receive hot path
//! copies nothing; encoding appends to a caller-owned `Vec<u8>` whose capacity is
//! reused from packet to packet.

use std::fmt;

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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastWill<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: QoS,
    pub retain: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect<'a> {
    pub client_id: &'a str,
    pub clean_session: bool,
    pub keep_alive: u16,
    pub will: Option<LastWill<'a>>,
    pub username: Option<&'a str>,
    pub password: Option<&'a [u8]>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnAck {
    pub session_present: bool,
    pub code: ConnectReturnCode,
}

/// A PUBLISH. `pkid` is 0 for QoS 0 (no packet identifier on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Publish<'a> {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    pub topic: &'a str,
    pub pkid: u16,
    pub payload: &'a [u8],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe<'a> {
    pub pkid: u16,
    pub filters: Vec<(&'a str, QoS)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubAck<'a> {
    pub pkid: u16,
    /// One per requested filter: 0, 1, 2 or `SUBACK_FAILURE`.
    pub return_codes: &'a [u8],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsubscribe<'a> {
    pub pkid: u16,
    pub filters: Vec<&'a str>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    Connect(Connect<'a>),
    ConnAck(ConnAck),
    Publish(Publish<'a>),
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    Subscribe(Subscribe<'a>),
    SubAck(SubAck<'a>),
    Unsubscribe(Unsubscribe<'a>),
    UnsubAck(u16),
    PingReq,
    PingResp,
    Disconnect,
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
    /// Packet type 0 or 15.
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
    /// SUBACK return code other than 0, 1, 2 or 0x80.
    InvalidSubackCode(u8),
    /// SUBSCRIBE, UNSUBSCRIBE or SUBACK without a single entry.
    EmptyPayload,
    /// A topic name containing a wildcard or an invalid topic filter.
    InvalidTopic,
    /// A string or binary field longer than 65535 bytes (encoding only).
    FieldTooLong,
    /// The packet would need a remaining length above 268,435,455 (encoding only).
    PacketTooLongToEncode,
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
/// for 0, 15 and anything else.
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
        _ => "reserved",
    }
}

/// Parse the fixed header, enforcing `max_packet_size` before any payload is
/// looked at, so a peer announcing a huge packet costs nothing.
/// `Ok(Err(n))` means at least `n` more bytes are needed.
pub fn parse_fixed_header(
    buf: &[u8],
    max_packet_size: usize,
) -> Result<Result<FixedHeader, usize>, CodecError> {
    let Some(&byte1) = buf.first() else {
        return Ok(Err(2));
    };
    let packet_type = byte1 >> 4;
    if packet_type == 0 || packet_type == 15 {
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

/// Decode one packet from the front of `buf`.
pub fn decode(buf: &[u8], max_packet_size: usize) -> Result<Decoded<'_>, CodecError> {
    let header = match parse_fixed_header(buf, max_packet_size)? {
        Ok(h) => h,
        Err(needed) => return Ok(Decoded::Incomplete(needed)),
    };
    let frame_len = header.frame_len();
    if buf.len() < frame_len {
        return Ok(Decoded::Incomplete(frame_len - buf.len()));
    }
    let body = &buf[header.header_len..frame_len];
    let packet = decode_body(header.byte1, body)?;
    Ok(Decoded::Packet(packet, frame_len))
}

/// Decode the variable header and payload of a packet whose fixed header is known.
pub fn decode_body(byte1: u8, body: &[u8]) -> Result<Packet<'_>, CodecError> {
    let packet_type = byte1 >> 4;
    let flags = byte1 & 0x0f;
    let expect_flags = |want: u8| {
        if flags == want {
            Ok(())
        } else {
            Err(CodecError::InvalidFlags { packet_type, flags })
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
            let code =
                ConnectReturnCode::from_u8(code).ok_or(CodecError::InvalidConnackCode(code))?;
            let session_present = ack_flags & 1 == 1;
            if session_present && code != ConnectReturnCode::Accepted {
                return Err(CodecError::InvalidConnackFlags(ack_flags));
            }
            Packet::ConnAck(ConnAck {
                session_present,
                code,
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
            if !crate::protocol::topic::valid_topic_name(topic) {
                return Err(CodecError::InvalidTopic);
            }
            let pkid = if qos == QoS::AtMostOnce { 0 } else { r.pkid()? };
            let payload = r.rest();
            return Ok(Packet::Publish(Publish {
                dup,
                qos,
                retain: flags & 1 != 0,
                topic,
                pkid,
                payload,
            }));
        }
        4 => {
            expect_flags(0)?;
            Packet::PubAck(r.pkid()?)
        }
        5 => {
            expect_flags(0)?;
            Packet::PubRec(r.pkid()?)
        }
        6 => {
            expect_flags(0b0010)?;
            Packet::PubRel(r.pkid()?)
        }
        7 => {
            expect_flags(0)?;
            Packet::PubComp(r.pkid()?)
        }
        8 => {
            expect_flags(0b0010)?;
            let pkid = r.pkid()?;
            let mut filters = Vec::new();
            while !r.is_empty() {
                let filter = r.string()?;
                if !crate::protocol::topic::valid_topic_filter(filter) {
                    return Err(CodecError::InvalidTopic);
                }
                let options = r.u8()?;
                if options & 0xfc != 0 {
                    return Err(CodecError::InvalidQoS(options));
                }
                let qos = QoS::from_u8(options).ok_or(CodecError::InvalidQoS(options))?;
                filters.push((filter, qos));
            }
            if filters.is_empty() {
                return Err(CodecError::EmptyPayload);
            }
            return Ok(Packet::Subscribe(Subscribe { pkid, filters }));
        }
        9 => {
            expect_flags(0)?;
            let pkid = r.pkid()?;
            let return_codes = r.rest();
            if return_codes.is_empty() {
                return Err(CodecError::EmptyPayload);
            }
            if let Some(&bad) = return_codes.iter().find(|&&c| c > 2 && c != SUBACK_FAILURE) {
                return Err(CodecError::InvalidSubackCode(bad));
            }
            return Ok(Packet::SubAck(SubAck { pkid, return_codes }));
        }
        10 => {
            expect_flags(0b0010)?;
            let pkid = r.pkid()?;
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
            return Ok(Packet::Unsubscribe(Unsubscribe { pkid, filters }));
        }
        11 => {
            expect_flags(0)?;
            Packet::UnsubAck(r.pkid()?)
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
            Packet::Disconnect
        }
        _ => return Err(CodecError::ReservedPacketType(packet_type)),
    };
    if !r.is_empty() {
        return Err(CodecError::TrailingBytes);
    }
    Ok(packet)
}

fn decode_connect<'a>(r: &mut Reader<'a>) -> Result<Connect<'a>, CodecError> {
    if r.binary()? != b"MQTT" {
        return Err(CodecError::InvalidProtocolName);
    }
    let level = r.u8()?;
    if level != 4 {
        return Err(CodecError::InvalidProtocolLevel(level));
    }
    let flags = r.u8()?;
    let will_flag = flags & 0b0000_0100 != 0;
    let will_qos_bits = (flags >> 3) & 3;
    let will_retain = flags & 0b0010_0000 != 0;
    let has_password = flags & 0b0100_0000 != 0;
    let has_username = flags & 0b1000_0000 != 0;
    let invalid = flags & 1 != 0
        || (!will_flag && (will_qos_bits != 0 || will_retain))
        || will_qos_bits == 3
        || (has_password && !has_username);
    if invalid {
        return Err(CodecError::InvalidConnectFlags(flags));
    }
    let keep_alive = r.u16()?;
    let client_id = r.string()?;
    let will = if will_flag {
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
    fn rest(&mut self) -> &'a [u8] {
        let rest = &self.buf[self.pos.min(self.buf.len())..];
        self.pos = self.buf.len();
        rest
    }
}

/// Append the remaining-length varint for `len`.
fn put_remaining_length(out: &mut Vec<u8>, mut len: usize) -> Result<(), CodecError> {
    if len > MAX_REMAINING_LENGTH {
        return Err(CodecError::PacketTooLongToEncode);
    }
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            return Ok(());
        }
    }
}

fn put_binary(out: &mut Vec<u8>, bytes: &[u8]) {
    // Lengths are checked by `encoded_len` before anything is written.
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
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

impl Packet<'_> {
    /// The MQTT control packet type (1..=14).
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
            Packet::Disconnect => 14,
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

    /// Validate the packet and return its remaining length.
    fn remaining_length(&self) -> Result<usize, CodecError> {
        Ok(match self {
            Packet::Connect(c) => {
                let mut len = 10 + check_str(c.client_id)?;
                if let Some(w) = &c.will {
                    if !crate::protocol::topic::valid_topic_name(w.topic) {
                        return Err(CodecError::InvalidTopic);
                    }
                    len += check_str(w.topic)? + field_len(w.payload)?;
                }
                if let Some(u) = c.username {
                    len += check_str(u)?;
                } else if c.password.is_some() {
                    return Err(CodecError::InvalidConnectFlags(0b0100_0000));
                }
                if let Some(p) = c.password {
                    len += field_len(p)?;
                }
                len
            }
            Packet::ConnAck(a) => {
                if a.session_present && a.code != ConnectReturnCode::Accepted {
                    return Err(CodecError::InvalidConnackFlags(1));
                }
                2
            }
            Packet::Publish(p) => {
                if !crate::protocol::topic::valid_topic_name(p.topic) {
                    return Err(CodecError::InvalidTopic);
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
                check_str(p.topic)? + id_len + p.payload.len()
            }
            Packet::PubAck(id)
            | Packet::PubRec(id)
            | Packet::PubRel(id)
            | Packet::PubComp(id)
            | Packet::UnsubAck(id) => {
                check_pkid(*id)?;
                2
            }
            Packet::Subscribe(s) => {
                check_pkid(s.pkid)?;
                if s.filters.is_empty() {
                    return Err(CodecError::EmptyPayload);
                }
                let mut len = 2;
                for (filter, _) in &s.filters {
                    if !crate::protocol::topic::valid_topic_filter(filter) {
                        return Err(CodecError::InvalidTopic);
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
                if let Some(&bad) = s
                    .return_codes
                    .iter()
                    .find(|&&c| c > 2 && c != SUBACK_FAILURE)
                {
                    return Err(CodecError::InvalidSubackCode(bad));
                }
                2 + s.return_codes.len()
            }
            Packet::Unsubscribe(u) => {
                check_pkid(u.pkid)?;
                if u.filters.is_empty() {
                    return Err(CodecError::EmptyPayload);
                }
                let mut len = 2;
                for filter in &u.filters {
                    if !crate::protocol::topic::valid_topic_filter(filter) {
                        return Err(CodecError::InvalidTopic);
                    }
                    len += check_str(filter)?;
                }
                len
            }
            Packet::PingReq | Packet::PingResp | Packet::Disconnect => 0,
        })
    }

    /// Total encoded size, after validation.
    pub fn encoded_len(&self) -> Result<usize, CodecError> {
        let remaining = self.remaining_length()?;
        if remaining > MAX_REMAINING_LENGTH {
            return Err(CodecError::PacketTooLongToEncode);
        }
        let varint_len = match remaining {
            0..=127 => 1,
            128..=16_383 => 2,
            16_384..=2_097_151 => 3,
            _ => 4,
        };
        Ok(1 + varint_len + remaining)
    }

    /// Append the encoded packet to `out`. On error nothing is appended.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<usize, CodecError> {
        let remaining = self.remaining_length()?;
        let start = out.len();
        out.push(self.first_byte());
        put_remaining_length(out, remaining).inspect_err(|_| out.truncate(start))?;
        match self {
            Packet::Connect(c) => {
                put_binary(out, b"MQTT");
                out.push(4);
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
                put_binary(out, c.client_id.as_bytes());
                if let Some(w) = &c.will {
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
                out.push(a.code as u8);
            }
            Packet::Publish(p) => {
                put_binary(out, p.topic.as_bytes());
                if p.qos != QoS::AtMostOnce {
                    out.extend_from_slice(&p.pkid.to_be_bytes());
                }
                out.extend_from_slice(p.payload);
            }
            Packet::PubAck(id)
            | Packet::PubRec(id)
            | Packet::PubRel(id)
            | Packet::PubComp(id)
            | Packet::UnsubAck(id) => out.extend_from_slice(&id.to_be_bytes()),
            Packet::Subscribe(s) => {
                out.extend_from_slice(&s.pkid.to_be_bytes());
                for (filter, qos) in &s.filters {
                    put_binary(out, filter.as_bytes());
                    out.push(*qos as u8);
                }
            }
            Packet::SubAck(s) => {
                out.extend_from_slice(&s.pkid.to_be_bytes());
                out.extend_from_slice(s.return_codes);
            }
            Packet::Unsubscribe(u) => {
                out.extend_from_slice(&u.pkid.to_be_bytes());
                for filter in &u.filters {
                    put_binary(out, filter.as_bytes());
                }
            }
            Packet::PingReq | Packet::PingResp | Packet::Disconnect => {}
        }
        Ok(out.len() - start)
    }
}

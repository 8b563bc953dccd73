//! MQTT 5.0 properties (section 2.2.2): identifiers, types, the packets each
//! may appear in, a validated zero-copy view of a received property section
//! ([`Properties`]) and an owned, encoded list to build one ([`PropertiesBuf`]).
//!
//! A property section on the wire is a Variable Byte Integer length followed by
//! that many bytes of properties; [`Properties`] wraps those bytes (without the
//! length) once [`Properties::parse`] has checked them completely, so reading
//! them afterwards never fails and never allocates.

use std::fmt;

use crate::protocol::codec::{CodecError, MAX_REMAINING_LENGTH};

// ------------------------------------------------------------ identifiers

pub const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
pub const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
pub const CONTENT_TYPE: u8 = 0x03;
pub const RESPONSE_TOPIC: u8 = 0x08;
pub const CORRELATION_DATA: u8 = 0x09;
pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
pub const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
pub const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
pub const SERVER_KEEP_ALIVE: u8 = 0x13;
pub const AUTHENTICATION_METHOD: u8 = 0x15;
pub const AUTHENTICATION_DATA: u8 = 0x16;
pub const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
pub const WILL_DELAY_INTERVAL: u8 = 0x18;
pub const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
pub const RESPONSE_INFORMATION: u8 = 0x1A;
pub const SERVER_REFERENCE: u8 = 0x1C;
pub const REASON_STRING: u8 = 0x1F;
pub const RECEIVE_MAXIMUM: u8 = 0x21;
pub const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
pub const TOPIC_ALIAS: u8 = 0x23;
pub const MAXIMUM_QOS: u8 = 0x24;
pub const RETAIN_AVAILABLE: u8 = 0x25;
pub const USER_PROPERTY: u8 = 0x26;
pub const MAXIMUM_PACKET_SIZE: u8 = 0x27;
pub const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
pub const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
pub const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

/// The largest value of a Variable Byte Integer (and of a Subscription Identifier).
pub const MAX_VARIABLE_BYTE_INTEGER: u32 = MAX_REMAINING_LENGTH as u32;

/// How a property's value is encoded (MQTT 5.0 section 1.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PropertyType {
    Byte,
    TwoByte,
    FourByte,
    VarInt,
    String,
    Binary,
    StringPair,
}

/// The value type of property `id`, `None` for an identifier MQTT 5.0 does not define.
pub fn property_type(id: u8) -> Option<PropertyType> {
    use PropertyType::*;
    Some(match id {
        PAYLOAD_FORMAT_INDICATOR
        | REQUEST_PROBLEM_INFORMATION
        | REQUEST_RESPONSE_INFORMATION
        | MAXIMUM_QOS
        | RETAIN_AVAILABLE
        | WILDCARD_SUBSCRIPTION_AVAILABLE
        | SUBSCRIPTION_IDENTIFIER_AVAILABLE
        | SHARED_SUBSCRIPTION_AVAILABLE => Byte,
        SERVER_KEEP_ALIVE | RECEIVE_MAXIMUM | TOPIC_ALIAS_MAXIMUM | TOPIC_ALIAS => TwoByte,
        MESSAGE_EXPIRY_INTERVAL
        | SESSION_EXPIRY_INTERVAL
        | WILL_DELAY_INTERVAL
        | MAXIMUM_PACKET_SIZE => FourByte,
        SUBSCRIPTION_IDENTIFIER => VarInt,
        CONTENT_TYPE
        | RESPONSE_TOPIC
        | ASSIGNED_CLIENT_IDENTIFIER
        | AUTHENTICATION_METHOD
        | RESPONSE_INFORMATION
        | SERVER_REFERENCE
        | REASON_STRING => String,
        CORRELATION_DATA | AUTHENTICATION_DATA => Binary,
        USER_PROPERTY => StringPair,
        _ => return None,
    })
}

/// The MQTT 5.0 name of property `id` ("Topic Alias"), "unknown" otherwise.
pub fn property_name(id: u8) -> &'static str {
    match id {
        PAYLOAD_FORMAT_INDICATOR => "Payload Format Indicator",
        MESSAGE_EXPIRY_INTERVAL => "Message Expiry Interval",
        CONTENT_TYPE => "Content Type",
        RESPONSE_TOPIC => "Response Topic",
        CORRELATION_DATA => "Correlation Data",
        SUBSCRIPTION_IDENTIFIER => "Subscription Identifier",
        SESSION_EXPIRY_INTERVAL => "Session Expiry Interval",
        ASSIGNED_CLIENT_IDENTIFIER => "Assigned Client Identifier",
        SERVER_KEEP_ALIVE => "Server Keep Alive",
        AUTHENTICATION_METHOD => "Authentication Method",
        AUTHENTICATION_DATA => "Authentication Data",
        REQUEST_PROBLEM_INFORMATION => "Request Problem Information",
        WILL_DELAY_INTERVAL => "Will Delay Interval",
        REQUEST_RESPONSE_INFORMATION => "Request Response Information",
        RESPONSE_INFORMATION => "Response Information",
        SERVER_REFERENCE => "Server Reference",
        REASON_STRING => "Reason String",
        RECEIVE_MAXIMUM => "Receive Maximum",
        TOPIC_ALIAS_MAXIMUM => "Topic Alias Maximum",
        TOPIC_ALIAS => "Topic Alias",
        MAXIMUM_QOS => "Maximum QoS",
        RETAIN_AVAILABLE => "Retain Available",
        USER_PROPERTY => "User Property",
        MAXIMUM_PACKET_SIZE => "Maximum Packet Size",
        WILDCARD_SUBSCRIPTION_AVAILABLE => "Wildcard Subscription Available",
        SUBSCRIPTION_IDENTIFIER_AVAILABLE => "Subscription Identifier Available",
        SHARED_SUBSCRIPTION_AVAILABLE => "Shared Subscription Available",
        _ => "unknown",
    }
}

/// Where a property section appears: a packet type, or the will properties
/// inside CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PropertyContext {
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
}

impl PropertyContext {
    /// "CONNECT", "will properties", ...
    pub fn name(self) -> &'static str {
        match self {
            PropertyContext::Connect => "CONNECT",
            PropertyContext::ConnAck => "CONNACK",
            PropertyContext::Publish => "PUBLISH",
            PropertyContext::Will => "will properties",
            PropertyContext::PubAck => "PUBACK",
            PropertyContext::PubRec => "PUBREC",
            PropertyContext::PubRel => "PUBREL",
            PropertyContext::PubComp => "PUBCOMP",
            PropertyContext::Subscribe => "SUBSCRIBE",
            PropertyContext::SubAck => "SUBACK",
            PropertyContext::Unsubscribe => "UNSUBSCRIBE",
            PropertyContext::UnsubAck => "UNSUBACK",
            PropertyContext::Disconnect => "DISCONNECT",
            PropertyContext::Auth => "AUTH",
        }
    }
}

/// Whether property `id` may appear in `ctx` (MQTT 5.0 section 2.2.2.2).
/// `false` for an unknown identifier.
pub fn allowed(id: u8, ctx: PropertyContext) -> bool {
    use PropertyContext::*;
    match id {
        PAYLOAD_FORMAT_INDICATOR
        | MESSAGE_EXPIRY_INTERVAL
        | CONTENT_TYPE
        | RESPONSE_TOPIC
        | CORRELATION_DATA => matches!(ctx, Publish | Will),
        SUBSCRIPTION_IDENTIFIER => matches!(ctx, Publish | Subscribe),
        SESSION_EXPIRY_INTERVAL => matches!(ctx, Connect | ConnAck | Disconnect),
        ASSIGNED_CLIENT_IDENTIFIER
        | SERVER_KEEP_ALIVE
        | RESPONSE_INFORMATION
        | MAXIMUM_QOS
        | RETAIN_AVAILABLE
        | WILDCARD_SUBSCRIPTION_AVAILABLE
        | SUBSCRIPTION_IDENTIFIER_AVAILABLE
        | SHARED_SUBSCRIPTION_AVAILABLE => ctx == ConnAck,
        AUTHENTICATION_METHOD | AUTHENTICATION_DATA => matches!(ctx, Connect | ConnAck | Auth),
        REQUEST_PROBLEM_INFORMATION | REQUEST_RESPONSE_INFORMATION => ctx == Connect,
        WILL_DELAY_INTERVAL => ctx == Will,
        SERVER_REFERENCE => matches!(ctx, ConnAck | Disconnect),
        REASON_STRING => matches!(
            ctx,
            ConnAck | PubAck | PubRec | PubRel | PubComp | SubAck | UnsubAck | Disconnect | Auth
        ),
        RECEIVE_MAXIMUM | TOPIC_ALIAS_MAXIMUM | MAXIMUM_PACKET_SIZE => {
            matches!(ctx, Connect | ConnAck)
        }
        TOPIC_ALIAS => ctx == Publish,
        USER_PROPERTY => true,
        _ => false,
    }
}

/// Whether property `id` may appear more than once in `ctx`: User Property
/// anywhere, Subscription Identifier in PUBLISH only.
pub fn repeatable(id: u8, ctx: PropertyContext) -> bool {
    id == USER_PROPERTY || (id == SUBSCRIPTION_IDENTIFIER && ctx == PropertyContext::Publish)
}

// --------------------------------------------------------------- property

/// One decoded property, borrowing its strings and binary data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Property<'a> {
    PayloadFormatIndicator(u8),
    MessageExpiryInterval(u32),
    ContentType(&'a str),
    ResponseTopic(&'a str),
    CorrelationData(&'a [u8]),
    SubscriptionIdentifier(u32),
    SessionExpiryInterval(u32),
    AssignedClientIdentifier(&'a str),
    ServerKeepAlive(u16),
    AuthenticationMethod(&'a str),
    AuthenticationData(&'a [u8]),
    RequestProblemInformation(u8),
    WillDelayInterval(u32),
    RequestResponseInformation(u8),
    ResponseInformation(&'a str),
    ServerReference(&'a str),
    ReasonString(&'a str),
    ReceiveMaximum(u16),
    TopicAliasMaximum(u16),
    TopicAlias(u16),
    MaximumQoS(u8),
    RetainAvailable(u8),
    UserProperty(&'a str, &'a str),
    MaximumPacketSize(u32),
    WildcardSubscriptionAvailable(u8),
    SubscriptionIdentifierAvailable(u8),
    SharedSubscriptionAvailable(u8),
}

/// A property value independent of its identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Value<'a> {
    Int(u32),
    Str(&'a str),
    Bin(&'a [u8]),
    Pair(&'a str, &'a str),
}

impl<'a> Property<'a> {
    /// The property identifier (one of the constants of this module).
    pub fn id(&self) -> u8 {
        use Property::*;
        match self {
            PayloadFormatIndicator(_) => PAYLOAD_FORMAT_INDICATOR,
            MessageExpiryInterval(_) => MESSAGE_EXPIRY_INTERVAL,
            ContentType(_) => CONTENT_TYPE,
            ResponseTopic(_) => RESPONSE_TOPIC,
            CorrelationData(_) => CORRELATION_DATA,
            SubscriptionIdentifier(_) => SUBSCRIPTION_IDENTIFIER,
            SessionExpiryInterval(_) => SESSION_EXPIRY_INTERVAL,
            AssignedClientIdentifier(_) => ASSIGNED_CLIENT_IDENTIFIER,
            ServerKeepAlive(_) => SERVER_KEEP_ALIVE,
            AuthenticationMethod(_) => AUTHENTICATION_METHOD,
            AuthenticationData(_) => AUTHENTICATION_DATA,
            RequestProblemInformation(_) => REQUEST_PROBLEM_INFORMATION,
            WillDelayInterval(_) => WILL_DELAY_INTERVAL,
            RequestResponseInformation(_) => REQUEST_RESPONSE_INFORMATION,
            ResponseInformation(_) => RESPONSE_INFORMATION,
            ServerReference(_) => SERVER_REFERENCE,
            ReasonString(_) => REASON_STRING,
            ReceiveMaximum(_) => RECEIVE_MAXIMUM,
            TopicAliasMaximum(_) => TOPIC_ALIAS_MAXIMUM,
            TopicAlias(_) => TOPIC_ALIAS,
            MaximumQoS(_) => MAXIMUM_QOS,
            RetainAvailable(_) => RETAIN_AVAILABLE,
            UserProperty(..) => USER_PROPERTY,
            MaximumPacketSize(_) => MAXIMUM_PACKET_SIZE,
            WildcardSubscriptionAvailable(_) => WILDCARD_SUBSCRIPTION_AVAILABLE,
            SubscriptionIdentifierAvailable(_) => SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            SharedSubscriptionAvailable(_) => SHARED_SUBSCRIPTION_AVAILABLE,
        }
    }

    /// The value of an integer-typed property (Byte, Two Byte, Four Byte or
    /// Variable Byte Integer), `None` for the others.
    pub fn as_u32(&self) -> Option<u32> {
        match self.value() {
            Value::Int(v) => Some(v),
            _ => None,
        }
    }

    /// The value of a string-typed property (not User Property).
    pub fn as_str(&self) -> Option<&'a str> {
        match self.value() {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value of a binary-typed property.
    pub fn as_bin(&self) -> Option<&'a [u8]> {
        match self.value() {
            Value::Bin(b) => Some(b),
            _ => None,
        }
    }

    fn value(&self) -> Value<'a> {
        use Property::*;
        match *self {
            PayloadFormatIndicator(v)
            | RequestProblemInformation(v)
            | RequestResponseInformation(v)
            | MaximumQoS(v)
            | RetainAvailable(v)
            | WildcardSubscriptionAvailable(v)
            | SubscriptionIdentifierAvailable(v)
            | SharedSubscriptionAvailable(v) => Value::Int(v.into()),
            ServerKeepAlive(v) | ReceiveMaximum(v) | TopicAliasMaximum(v) | TopicAlias(v) => {
                Value::Int(v.into())
            }
            MessageExpiryInterval(v)
            | SubscriptionIdentifier(v)
            | SessionExpiryInterval(v)
            | WillDelayInterval(v)
            | MaximumPacketSize(v) => Value::Int(v),
            ContentType(s)
            | ResponseTopic(s)
            | AssignedClientIdentifier(s)
            | AuthenticationMethod(s)
            | ResponseInformation(s)
            | ServerReference(s)
            | ReasonString(s) => Value::Str(s),
            CorrelationData(b) | AuthenticationData(b) => Value::Bin(b),
            UserProperty(k, v) => Value::Pair(k, v),
        }
    }

    /// Build property `id` from a value of its type. The integer must fit the
    /// type (checked by the caller).
    fn from_value(id: u8, value: Value<'a>) -> Option<Property<'a>> {
        use Property::*;
        Some(match (id, value) {
            (PAYLOAD_FORMAT_INDICATOR, Value::Int(v)) => PayloadFormatIndicator(v as u8),
            (MESSAGE_EXPIRY_INTERVAL, Value::Int(v)) => MessageExpiryInterval(v),
            (CONTENT_TYPE, Value::Str(s)) => ContentType(s),
            (RESPONSE_TOPIC, Value::Str(s)) => ResponseTopic(s),
            (CORRELATION_DATA, Value::Bin(b)) => CorrelationData(b),
            (SUBSCRIPTION_IDENTIFIER, Value::Int(v)) => SubscriptionIdentifier(v),
            (SESSION_EXPIRY_INTERVAL, Value::Int(v)) => SessionExpiryInterval(v),
            (ASSIGNED_CLIENT_IDENTIFIER, Value::Str(s)) => AssignedClientIdentifier(s),
            (SERVER_KEEP_ALIVE, Value::Int(v)) => ServerKeepAlive(v as u16),
            (AUTHENTICATION_METHOD, Value::Str(s)) => AuthenticationMethod(s),
            (AUTHENTICATION_DATA, Value::Bin(b)) => AuthenticationData(b),
            (REQUEST_PROBLEM_INFORMATION, Value::Int(v)) => RequestProblemInformation(v as u8),
            (WILL_DELAY_INTERVAL, Value::Int(v)) => WillDelayInterval(v),
            (REQUEST_RESPONSE_INFORMATION, Value::Int(v)) => RequestResponseInformation(v as u8),
            (RESPONSE_INFORMATION, Value::Str(s)) => ResponseInformation(s),
            (SERVER_REFERENCE, Value::Str(s)) => ServerReference(s),
            (REASON_STRING, Value::Str(s)) => ReasonString(s),
            (RECEIVE_MAXIMUM, Value::Int(v)) => ReceiveMaximum(v as u16),
            (TOPIC_ALIAS_MAXIMUM, Value::Int(v)) => TopicAliasMaximum(v as u16),
            (TOPIC_ALIAS, Value::Int(v)) => TopicAlias(v as u16),
            (MAXIMUM_QOS, Value::Int(v)) => MaximumQoS(v as u8),
            (RETAIN_AVAILABLE, Value::Int(v)) => RetainAvailable(v as u8),
            (USER_PROPERTY, Value::Pair(k, v)) => UserProperty(k, v),
            (MAXIMUM_PACKET_SIZE, Value::Int(v)) => MaximumPacketSize(v),
            (WILDCARD_SUBSCRIPTION_AVAILABLE, Value::Int(v)) => {
                WildcardSubscriptionAvailable(v as u8)
            }
            (SUBSCRIPTION_IDENTIFIER_AVAILABLE, Value::Int(v)) => {
                SubscriptionIdentifierAvailable(v as u8)
            }
            (SHARED_SUBSCRIPTION_AVAILABLE, Value::Int(v)) => SharedSubscriptionAvailable(v as u8),
            _ => return None,
        })
    }

    /// The value rules of MQTT 5.0 beyond the encoding: the byte-valued
    /// properties are 0 or 1 (Maximum QoS included), and Receive Maximum,
    /// Maximum Packet Size, Topic Alias and Subscription Identifier are not 0.
    fn check_value(&self) -> Result<(), CodecError> {
        use Property::*;
        let ok = match *self {
            PayloadFormatIndicator(v)
            | RequestProblemInformation(v)
            | RequestResponseInformation(v)
            | MaximumQoS(v)
            | RetainAvailable(v)
            | WildcardSubscriptionAvailable(v)
            | SubscriptionIdentifierAvailable(v)
            | SharedSubscriptionAvailable(v) => v <= 1,
            ReceiveMaximum(v) | TopicAlias(v) => v != 0,
            MaximumPacketSize(v) => v != 0,
            SubscriptionIdentifier(v) => (1..=MAX_VARIABLE_BYTE_INTEGER).contains(&v),
            _ => true,
        };
        if ok {
            Ok(())
        } else {
            Err(CodecError::InvalidPropertyValue(self.id()))
        }
    }
}

// ------------------------------------------------------------ wire format

/// Read a Variable Byte Integer at `*pos`: at most 4 bytes (a 4th byte with
/// the continuation bit is `MalformedVarInt`); non-minimal encodings are accepted.
pub(crate) fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u32, CodecError> {
    let mut value = 0u32;
    for i in 0..4 {
        let b = *buf.get(*pos).ok_or(CodecError::Truncated)?;
        *pos += 1;
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(CodecError::MalformedVarInt)
}

/// Bytes taken by the Variable Byte Integer encoding of `value`.
pub(crate) fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Append the minimal Variable Byte Integer encoding of `value` (at most
/// `MAX_REMAINING_LENGTH`, checked by the caller).
pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            return;
        }
    }
}

fn take<'a>(buf: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], CodecError> {
    let end = pos.checked_add(n).ok_or(CodecError::Truncated)?;
    let bytes = buf.get(*pos..end).ok_or(CodecError::Truncated)?;
    *pos = end;
    Ok(bytes)
}

fn read_binary<'a>(buf: &'a [u8], pos: &mut usize) -> Result<&'a [u8], CodecError> {
    let len = take(buf, pos, 2)?;
    let len = u16::from_be_bytes([len[0], len[1]]) as usize;
    take(buf, pos, len)
}

fn read_string<'a>(buf: &'a [u8], pos: &mut usize) -> Result<&'a str, CodecError> {
    let bytes = read_binary(buf, pos)?;
    let s = std::str::from_utf8(bytes).map_err(|_| CodecError::InvalidUtf8)?;
    if bytes.contains(&0) {
        return Err(CodecError::NulInString);
    }
    Ok(s)
}

/// Read one property at `*pos`: its identifier and a well-formed value of
/// the identifier's type (value rules are not checked here).
fn read_property<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Property<'a>, CodecError> {
    // The identifier is a Variable Byte Integer in the spec, but every
    // defined one is a single byte: a continuation bit makes it unknown.
    let id = *buf.get(*pos).ok_or(CodecError::Truncated)?;
    *pos += 1;
    let ty = property_type(id).ok_or(CodecError::UnknownProperty(id))?;
    let value = match ty {
        PropertyType::Byte => Value::Int(take(buf, pos, 1)?[0].into()),
        PropertyType::TwoByte => {
            let b = take(buf, pos, 2)?;
            Value::Int(u16::from_be_bytes([b[0], b[1]]).into())
        }
        PropertyType::FourByte => {
            let b = take(buf, pos, 4)?;
            Value::Int(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        }
        PropertyType::VarInt => Value::Int(read_varint(buf, pos)?),
        PropertyType::String => Value::Str(read_string(buf, pos)?),
        PropertyType::Binary => Value::Bin(read_binary(buf, pos)?),
        PropertyType::StringPair => Value::Pair(read_string(buf, pos)?, read_string(buf, pos)?),
    };
    // Every (id, type) pair built above is one `from_value` knows.
    Property::from_value(id, value).ok_or(CodecError::UnknownProperty(id))
}

// ------------------------------------------------------------- Properties

/// A validated property section: the bytes after the property length.
/// Copy, borrowing, never allocating. Obtained from [`Properties::parse`] (or
/// the decoder, which calls it), [`Properties::EMPTY`], or
/// [`PropertiesBuf::as_properties`].
///
/// Equality compares the bytes, so the same properties in another order (or
/// a Subscription Identifier encoded non-minimally) are different.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Properties<'a> {
    bytes: &'a [u8],
}

impl<'a> Properties<'a> {
    /// No properties (a property length of 0).
    pub const EMPTY: Properties<'static> = Properties { bytes: &[] };

    /// Validate `bytes` as the property section of `ctx`:
    /// * a value running past the end: `Truncated` (a Variable Byte Integer
    ///   longer than 4 bytes: `MalformedVarInt`);
    /// * an identifier MQTT 5.0 does not define: `UnknownProperty`;
    /// * a property the packet may not carry: `PropertyNotAllowed`;
    /// * strings: `InvalidUtf8`, `NulInString`;
    /// * a property other than User Property (and Subscription Identifier in
    ///   PUBLISH) present twice: `DuplicateProperty`;
    /// * a value outside its range: `InvalidPropertyValue`.
    ///
    /// The first three and the string errors make a malformed packet, the
    /// last two a protocol error (see `CodecError::is_protocol_error`).
    pub fn parse(bytes: &'a [u8], ctx: PropertyContext) -> Result<Properties<'a>, CodecError> {
        // Every defined identifier is below 64.
        let mut seen = 0u64;
        let mut pos = 0;
        while pos < bytes.len() {
            let id = bytes[pos];
            if property_type(id).is_none() {
                return Err(CodecError::UnknownProperty(id));
            }
            if !allowed(id, ctx) {
                return Err(CodecError::PropertyNotAllowed { id, context: ctx });
            }
            let property = read_property(bytes, &mut pos)?;
            property.check_value()?;
            let bit = 1u64 << id;
            if seen & bit != 0 && !repeatable(id, ctx) {
                return Err(CodecError::DuplicateProperty(id));
            }
            seen |= bit;
        }
        Ok(Properties { bytes })
    }

    /// The encoded properties (without the property length).
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Bytes taken on the wire, the property length included.
    pub fn encoded_len(&self) -> usize {
        varint_len(self.bytes.len()) + self.bytes.len()
    }

    /// The properties in wire order.
    pub fn iter(&self) -> PropertiesIter<'a> {
        PropertiesIter {
            bytes: self.bytes,
            pos: 0,
        }
    }

    /// The first property `id`.
    pub fn get(&self, id: u8) -> Option<Property<'a>> {
        self.iter().find(|p| p.id() == id)
    }

    /// The value of the first property `id`, for an integer-typed `id`.
    pub fn u32_of(&self, id: u8) -> Option<u32> {
        self.get(id)?.as_u32()
    }

    /// The value of the first property `id`, for a string-typed `id`.
    pub fn str_of(&self, id: u8) -> Option<&'a str> {
        self.get(id)?.as_str()
    }

    /// The value of the first property `id`, for a binary-typed `id`.
    pub fn bin_of(&self, id: u8) -> Option<&'a [u8]> {
        self.get(id)?.as_bin()
    }

    /// How many times property `id` is present.
    pub fn count(&self, id: u8) -> usize {
        self.iter().filter(|p| p.id() == id).count()
    }

    /// The value of the `index`th (from 0) property `id`, for an
    /// integer-typed `id` (Subscription Identifiers of a PUBLISH).
    pub fn int_at(&self, id: u8, index: usize) -> Option<u32> {
        self.iter().filter(|p| p.id() == id).nth(index)?.as_u32()
    }

    /// The `index`th (from 0) User Property.
    pub fn user_at(&self, index: usize) -> Option<(&'a str, &'a str)> {
        self.iter()
            .filter_map(|p| match p {
                Property::UserProperty(k, v) => Some((k, v)),
                _ => None,
            })
            .nth(index)
    }
}

impl fmt::Debug for Properties<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for Properties<'a> {
    type Item = Property<'a>;
    type IntoIter = PropertiesIter<'a>;
    fn into_iter(self) -> PropertiesIter<'a> {
        self.iter()
    }
}

/// Iterator over validated properties (see [`Properties::iter`]).
#[derive(Clone, Debug)]
pub struct PropertiesIter<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for PropertiesIter<'a> {
    type Item = Property<'a>;
    fn next(&mut self) -> Option<Property<'a>> {
        if self.pos >= self.bytes.len() {
            return None;
        }
        // Validated bytes never fail; should they, the iteration just ends.
        match read_property(self.bytes, &mut self.pos) {
            Ok(p) => Some(p),
            Err(_) => {
                self.pos = self.bytes.len();
                None
            }
        }
    }
}

// ---------------------------------------------------------- PropertiesBuf

/// An owned, encoded property list, built one property at a time.
///
/// `push` checks each value (encoding and range); whether the properties suit
/// a packet (allowed there, not repeated) is only known at send time: sending
/// code validates with `Properties::parse(buf.as_bytes(), ctx)`, and the
/// encoder checks again.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PropertiesBuf {
    bytes: Vec<u8>,
}

impl PropertiesBuf {
    pub const fn new() -> PropertiesBuf {
        PropertiesBuf { bytes: Vec::new() }
    }

    /// Append `p` after checking its value: strings without U+0000 and at
    /// most 65535 bytes (`NulInString`, `FieldTooLong`), binary data at most
    /// 65535 bytes, byte-valued flags 0 or 1, Maximum QoS 0 or 1, Receive
    /// Maximum, Maximum Packet Size, Topic Alias and Subscription Identifier
    /// not 0, Subscription Identifier at most 268,435,455
    /// (`InvalidPropertyValue`). On error nothing is appended.
    pub fn push(&mut self, p: Property<'_>) -> Result<(), CodecError> {
        p.check_value()?;
        let value = p.value();
        let added = 1 + match value {
            Value::Int(v) => match property_type(p.id()) {
                Some(PropertyType::Byte) => 1,
                Some(PropertyType::TwoByte) => 2,
                Some(PropertyType::FourByte) => 4,
                _ => varint_len(v as usize),
            },
            Value::Str(s) => str_len(s)?,
            Value::Bin(b) => bin_len(b)?,
            Value::Pair(k, v) => str_len(k)? + str_len(v)?,
        };
        if self.bytes.len() + added > MAX_REMAINING_LENGTH {
            return Err(CodecError::PacketTooLongToEncode);
        }
        self.bytes.reserve(added);
        self.bytes.push(p.id());
        match value {
            Value::Int(v) => match property_type(p.id()) {
                Some(PropertyType::Byte) => self.bytes.push(v as u8),
                Some(PropertyType::TwoByte) => {
                    self.bytes.extend_from_slice(&(v as u16).to_be_bytes())
                }
                Some(PropertyType::FourByte) => self.bytes.extend_from_slice(&v.to_be_bytes()),
                _ => put_varint(&mut self.bytes, v as usize),
            },
            Value::Str(s) => put_bin(&mut self.bytes, s.as_bytes()),
            Value::Bin(b) => put_bin(&mut self.bytes, b),
            Value::Pair(k, v) => {
                put_bin(&mut self.bytes, k.as_bytes());
                put_bin(&mut self.bytes, v.as_bytes());
            }
        }
        Ok(())
    }

    /// Append integer property `id` (Byte, Two Byte, Four Byte or Variable
    /// Byte Integer typed). `UnknownProperty` for an undefined id,
    /// `WrongPropertyType` for another type, `InvalidPropertyValue` when
    /// `value` does not fit the type or the property's range.
    pub fn push_int(&mut self, id: u8, value: u32) -> Result<(), CodecError> {
        let max = match property_type(id).ok_or(CodecError::UnknownProperty(id))? {
            PropertyType::Byte => u8::MAX.into(),
            PropertyType::TwoByte => u16::MAX.into(),
            PropertyType::FourByte => u32::MAX,
            PropertyType::VarInt => MAX_VARIABLE_BYTE_INTEGER,
            _ => return Err(CodecError::WrongPropertyType(id)),
        };
        if value > max {
            return Err(CodecError::InvalidPropertyValue(id));
        }
        let p =
            Property::from_value(id, Value::Int(value)).ok_or(CodecError::UnknownProperty(id))?;
        self.push(p)
    }

    /// Append string property `id` (not User Property: see `push_user`).
    pub fn push_str(&mut self, id: u8, value: &str) -> Result<(), CodecError> {
        match property_type(id).ok_or(CodecError::UnknownProperty(id))? {
            PropertyType::String => {}
            _ => return Err(CodecError::WrongPropertyType(id)),
        }
        let p =
            Property::from_value(id, Value::Str(value)).ok_or(CodecError::UnknownProperty(id))?;
        self.push(p)
    }

    /// Append binary property `id`.
    pub fn push_bin(&mut self, id: u8, value: &[u8]) -> Result<(), CodecError> {
        match property_type(id).ok_or(CodecError::UnknownProperty(id))? {
            PropertyType::Binary => {}
            _ => return Err(CodecError::WrongPropertyType(id)),
        }
        let p =
            Property::from_value(id, Value::Bin(value)).ok_or(CodecError::UnknownProperty(id))?;
        self.push(p)
    }

    /// Append a User Property.
    pub fn push_user(&mut self, key: &str, value: &str) -> Result<(), CodecError> {
        self.push(Property::UserProperty(key, value))
    }

    /// A list holding `props` (validated properties, e.g. of a received packet).
    pub fn from_properties(props: Properties<'_>) -> PropertiesBuf {
        PropertiesBuf {
            bytes: props.as_bytes().to_vec(),
        }
    }

    /// Append every property of `props` (already validated value by value).
    pub fn extend(&mut self, props: Properties<'_>) {
        self.bytes.extend_from_slice(props.as_bytes());
    }

    /// Replace the list by `props`, reusing the memory.
    pub fn set(&mut self, props: Properties<'_>) {
        self.bytes.clear();
        self.extend(props);
    }

    /// A view of the list, validated value by value but not for a packet:
    /// sending code checks it with `Properties::parse(self.as_bytes(), ctx)`.
    pub fn as_properties(&self) -> Properties<'_> {
        Properties { bytes: &self.bytes }
    }

    /// The encoded properties (without the property length).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
    }

    /// Encoded length in bytes (without the property length).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl fmt::Debug for PropertiesBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.as_properties(), f)
    }
}

fn str_len(s: &str) -> Result<usize, CodecError> {
    if s.as_bytes().contains(&0) {
        return Err(CodecError::NulInString);
    }
    bin_len(s.as_bytes())
}

fn bin_len(b: &[u8]) -> Result<usize, CodecError> {
    if b.len() > u16::MAX as usize {
        Err(CodecError::FieldTooLong)
    } else {
        Ok(2 + b.len())
    }
}

fn put_bin(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_defined_id_has_a_type_a_name_and_round_trips() {
        let mut defined = 0;
        for id in 0..=255u8 {
            let Some(ty) = property_type(id) else {
                assert_eq!(property_name(id), "unknown");
                continue;
            };
            defined += 1;
            assert_ne!(property_name(id), "unknown", "{id:#x}");
            let mut buf = PropertiesBuf::new();
            match ty {
                PropertyType::Byte => buf.push_int(id, 1).unwrap(),
                PropertyType::TwoByte => buf.push_int(id, 0x1234).unwrap(),
                PropertyType::FourByte => buf.push_int(id, 0x1234_5678).unwrap(),
                PropertyType::VarInt => buf.push_int(id, 300).unwrap(),
                PropertyType::String => buf.push_str(id, "s").unwrap(),
                PropertyType::Binary => buf.push_bin(id, b"\x00b").unwrap(),
                PropertyType::StringPair => buf.push_user("k", "v").unwrap(),
            }
            let p = buf.as_properties().get(id).unwrap();
            assert_eq!(p.id(), id);
            let mut again = PropertiesBuf::new();
            again.push(p).unwrap();
            assert_eq!(again, buf);
        }
        assert_eq!(defined, 27);
    }

    #[test]
    fn varints_stop_at_four_bytes() {
        let mut pos = 0;
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0x7f], &mut pos),
            Ok(268_435_455)
        );
        assert_eq!(pos, 4);
        let mut pos = 0;
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0x01], &mut pos),
            Err(CodecError::MalformedVarInt)
        );
        let mut pos = 0;
        assert_eq!(
            read_varint(&[0x80, 0x80], &mut pos),
            Err(CodecError::Truncated)
        );
        let mut pos = 0;
        // Non-minimal encodings are accepted.
        assert_eq!(read_varint(&[0x81, 0x00], &mut pos), Ok(1));
    }
}

//! MQTT 5.0 duties the client carries out beside the QoS engine: the limits a
//! server announces in CONNACK, topic aliases both ways, and what reason codes
//! mean for the application and for automatic reconnection.

use std::collections::HashMap;

use crate::Error;
use crate::protocol::codec::QoS;
use crate::protocol::properties::{self as prop, Properties};

/// What the server announced in its CONNACK (MQTT 5.0 section 3.2.2.3), with
/// the specification's defaults for what it left out. A 3.1.1 connection has
/// the defaults: no limit beyond the protocol's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// QoS 1/2 PUBLISHes the server accepts unacknowledged at once.
    pub receive_maximum: u16,
    /// The largest packet the server accepts; `None`: no limit.
    pub maximum_packet_size: Option<u32>,
    pub maximum_qos: QoS,
    pub retain_available: bool,
    /// Topic aliases the server accepts from us (0: none).
    pub topic_alias_maximum: u16,
    /// The keepalive the server imposes instead of ours.
    pub server_keep_alive: Option<u16>,
    pub wildcard_subscriptions: bool,
    pub subscription_identifiers: bool,
    pub shared_subscriptions: bool,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits::DEFAULT
    }
}

impl ServerLimits {
    /// What a 3.1.1 connection, or a CONNACK that says nothing, means.
    pub const DEFAULT: ServerLimits = ServerLimits {
        receive_maximum: u16::MAX,
        maximum_packet_size: None,
        maximum_qos: QoS::ExactlyOnce,
        retain_available: true,
        topic_alias_maximum: 0,
        server_keep_alive: None,
        wildcard_subscriptions: true,
        subscription_identifiers: true,
        shared_subscriptions: true,
    };

    /// The limits of a CONNACK's properties (already validated by the codec:
    /// flags are 0/1, Maximum QoS 0/1, Receive Maximum and Maximum Packet Size
    /// non-zero).
    pub fn from_connack(props: Properties<'_>) -> ServerLimits {
        let defaults = ServerLimits::default();
        let flag = |id, default| props.u32_of(id).map_or(default, |v| v == 1);
        ServerLimits {
            receive_maximum: props
                .u32_of(prop::RECEIVE_MAXIMUM)
                .map_or(defaults.receive_maximum, |v| v as u16),
            maximum_packet_size: props.u32_of(prop::MAXIMUM_PACKET_SIZE),
            maximum_qos: props
                .u32_of(prop::MAXIMUM_QOS)
                .and_then(|q| QoS::from_u8(q as u8))
                .unwrap_or(defaults.maximum_qos),
            retain_available: flag(prop::RETAIN_AVAILABLE, true),
            topic_alias_maximum: props
                .u32_of(prop::TOPIC_ALIAS_MAXIMUM)
                .map_or(0, |v| v as u16),
            server_keep_alive: props.u32_of(prop::SERVER_KEEP_ALIVE).map(|v| v as u16),
            wildcard_subscriptions: flag(prop::WILDCARD_SUBSCRIPTION_AVAILABLE, true),
            subscription_identifiers: flag(prop::SUBSCRIPTION_IDENTIFIER_AVAILABLE, true),
            shared_subscriptions: flag(prop::SHARED_SUBSCRIPTION_AVAILABLE, true),
        }
    }
}

/// Why an incoming topic alias was refused: the connection ends with
/// DISCONNECT 0x94 (Topic Alias invalid) or 0x82 (Protocol Error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AliasError {
    /// 0 or above the Topic Alias Maximum we announced.
    OutOfRange,
    /// An empty topic with an alias never set on this connection.
    Unknown,
}

impl AliasError {
    pub fn reason_code(self) -> u8 {
        match self {
            AliasError::OutOfRange => 0x94,
            AliasError::Unknown => 0x82,
        }
    }

    pub fn error(self) -> Error {
        match self {
            AliasError::OutOfRange => Error::TopicAliasInvalid,
            AliasError::Unknown => Error::ProtocolViolation,
        }
    }
}

/// The server's topic aliases for one connection: alias -> topic. The strings
/// keep their capacity across reconnections, so steady traffic that reuses
/// aliases allocates nothing.
#[derive(Debug, Default)]
pub struct IncomingAliases {
    /// Index `alias - 1`; an empty string is an alias not set.
    topics: Vec<String>,
    /// The Topic Alias Maximum we announced for this connection.
    max: u16,
}

impl IncomingAliases {
    /// A new connection announced `max`: every alias is forgotten.
    pub fn reset(&mut self, max: u16) {
        self.max = max;
        for topic in &mut self.topics {
            topic.clear();
        }
    }

    /// A PUBLISH carried `alias` with `topic`: a non-empty topic (re)sets the
    /// alias; an empty one uses it. Returns the full topic.
    pub fn resolve<'a>(&'a mut self, alias: u16, topic: &'a str) -> Result<&'a str, AliasError> {
        if alias == 0 || alias > self.max {
            return Err(AliasError::OutOfRange);
        }
        let index = usize::from(alias - 1);
        if self.topics.len() <= index {
            self.topics.resize_with(index + 1, String::new);
        }
        let slot = &mut self.topics[index];
        if topic.is_empty() {
            if slot.is_empty() {
                return Err(AliasError::Unknown);
            }
            return Ok(slot);
        }
        slot.clear();
        slot.push_str(topic);
        Ok(topic)
    }

    /// The topic `alias` stands for, if set.
    pub fn get(&self, alias: u16) -> Option<&str> {
        let topic = self.topics.get(usize::from(alias).checked_sub(1)?)?;
        (!topic.is_empty()).then_some(topic.as_str())
    }
}

/// Our topic aliases for one connection: assigned to topics in the order they
/// are first published, up to the smaller of our own limit and the server's
/// Topic Alias Maximum; topics beyond it are sent in full. Forgotten on every
/// new connection, as aliases do not outlive one (MQTT 5.0 section 3.3.2.3.4).
#[derive(Debug, Default)]
pub struct OutgoingAliases {
    /// Allocated at the first alias: most connections never use one, and an
    /// empty map inline would cost every idle client its 48 bytes.
    #[allow(clippy::box_collection)]
    by_topic: Option<Box<HashMap<String, u16>>>,
    max: u16,
}

/// How one PUBLISH names its topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AliasUse {
    /// No alias: the full topic.
    None,
    /// The full topic, and the alias it sets from now on.
    Set(u16),
    /// An empty topic and the alias set earlier on this connection.
    Reuse(u16),
}

impl OutgoingAliases {
    pub fn reset(&mut self, max: u16) {
        self.max = max;
        if let Some(by_topic) = self.by_topic.as_mut() {
            by_topic.clear();
        }
    }

    /// Whether any alias may be assigned on this connection.
    pub fn is_active(&self) -> bool {
        self.max > 0
    }

    pub fn for_topic(&mut self, topic: &str) -> AliasUse {
        if self.max == 0 {
            return AliasUse::None;
        }
        let by_topic = self.by_topic.get_or_insert_with(Default::default);
        if let Some(&alias) = by_topic.get(topic) {
            return AliasUse::Reuse(alias);
        }
        let used = by_topic.len();
        if used >= usize::from(self.max) {
            return AliasUse::None;
        }
        let alias = used as u16 + 1;
        by_topic.insert(topic.to_owned(), alias);
        AliasUse::Set(alias)
    }
}

/// The error for a refused v5 CONNACK: the 3.1.1 refusals keep their codes,
/// every other reason is `RefusedByBroker` (the reason code is in the data).
pub fn connack_error(reason_code: u8) -> Option<Error> {
    Some(match reason_code {
        0x00 => return None,
        0x84 => Error::RefusedProtocolVersion,
        0x85 => Error::RefusedIdentifier,
        0x86 => Error::RefusedBadCredentials,
        0x87 => Error::RefusedNotAuthorized,
        0x88 | 0x89 => Error::RefusedServerUnavailable,
        _ => Error::RefusedByBroker,
    })
}

/// What automatic reconnection does after a server refused us (CONNACK) or
/// sent us away (DISCONNECT) with `reason_code`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterRefusal {
    /// Retry the same server, with backoff.
    Retry,
    /// Retrying cannot help: not authorized, banned, bad authentication
    /// method, a server that moved without saying where.
    Stop,
    /// Use another server (0x9C) or server moved (0x9D) with a Server
    /// Reference: retry there.
    Redirect { host: String, port: Option<u16> },
}

pub fn after_refusal(reason_code: u8, props: Properties<'_>) -> AfterRefusal {
    match reason_code {
        // Not authorized, banned, bad authentication method, protocol version.
        0x87 | 0x8A | 0x8C | 0x84 => AfterRefusal::Stop,
        0x9C | 0x9D => match props
            .str_of(prop::SERVER_REFERENCE)
            .and_then(parse_reference)
        {
            Some((host, port)) => AfterRefusal::Redirect { host, port },
            None => AfterRefusal::Stop,
        },
        _ => AfterRefusal::Retry,
    }
}

/// The first server of a Server Reference: `host`, `host:port`, `[v6]` or
/// `[v6]:port`, several separated by spaces (the specification leaves the
/// format open; this is the common use).
pub fn parse_reference(reference: &str) -> Option<(String, Option<u16>)> {
    let first = reference.split_ascii_whitespace().next()?;
    let (host, port) = if let Some(rest) = first.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?.parse().ok()?)),
        }
    } else {
        match first.rsplit_once(':') {
            // More than one colon without brackets: a bare IPv6 address.
            Some((host, _)) if host.contains(':') => (first, None),
            Some((host, port)) => (host, Some(port.parse().ok()?)),
            None => (first, None),
        }
    };
    (!host.is_empty() && host.len() <= 255).then(|| (host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incoming_aliases_set_reuse_and_refuse() {
        let mut aliases = IncomingAliases::default();
        aliases.reset(2);
        assert_eq!(aliases.resolve(1, "a/b"), Ok("a/b"));
        assert_eq!(aliases.resolve(1, ""), Ok("a/b"));
        assert_eq!(aliases.resolve(2, ""), Err(AliasError::Unknown));
        assert_eq!(aliases.resolve(3, "c"), Err(AliasError::OutOfRange));
        assert_eq!(aliases.resolve(0, "c"), Err(AliasError::OutOfRange));
        assert_eq!(aliases.resolve(1, "x"), Ok("x"));
        assert_eq!(aliases.get(1), Some("x"));
        aliases.reset(2);
        assert_eq!(aliases.resolve(1, ""), Err(AliasError::Unknown));
        aliases.reset(0);
        assert_eq!(aliases.resolve(1, "a"), Err(AliasError::OutOfRange));
    }

    #[test]
    fn outgoing_aliases_are_assigned_up_to_the_maximum_and_reset() {
        let mut aliases = OutgoingAliases::default();
        aliases.reset(2);
        assert_eq!(aliases.for_topic("a"), AliasUse::Set(1));
        assert_eq!(aliases.for_topic("a"), AliasUse::Reuse(1));
        assert_eq!(aliases.for_topic("b"), AliasUse::Set(2));
        assert_eq!(aliases.for_topic("c"), AliasUse::None);
        assert_eq!(aliases.for_topic("b"), AliasUse::Reuse(2));
        aliases.reset(2);
        assert_eq!(aliases.for_topic("b"), AliasUse::Set(1));
        aliases.reset(0);
        assert_eq!(aliases.for_topic("b"), AliasUse::None);
    }

    #[test]
    fn server_references() {
        let r = |s| parse_reference(s);
        assert_eq!(r("b.example"), Some(("b.example".into(), None)));
        assert_eq!(
            r("b.example:1884 c:1"),
            Some(("b.example".into(), Some(1884)))
        );
        assert_eq!(r("[::1]:1885"), Some(("::1".into(), Some(1885))));
        assert_eq!(r("[::1]"), Some(("::1".into(), None)));
        assert_eq!(r("::1"), Some(("::1".into(), None)));
        assert_eq!(r("host:notaport"), None);
        assert_eq!(r(""), None);
        assert_eq!(r("[::1"), None);
    }

    #[test]
    fn refusals_that_stop_or_redirect() {
        assert_eq!(after_refusal(0x87, Properties::EMPTY), AfterRefusal::Stop);
        assert_eq!(after_refusal(0x8A, Properties::EMPTY), AfterRefusal::Stop);
        assert_eq!(after_refusal(0x8C, Properties::EMPTY), AfterRefusal::Stop);
        assert_eq!(after_refusal(0x89, Properties::EMPTY), AfterRefusal::Retry);
        assert_eq!(after_refusal(0x9C, Properties::EMPTY), AfterRefusal::Stop);
        assert_eq!(connack_error(0x86), Some(Error::RefusedBadCredentials));
        assert_eq!(connack_error(0x97), Some(Error::RefusedByBroker));
        assert_eq!(connack_error(0), None);
    }
}

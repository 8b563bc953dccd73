//! The one error type of the crate; its discriminants are the C `mqtt_error` codes.

use std::ffi::CStr;
use std::fmt;

/// Every way a call or a connection can fail. The numeric values are the C
/// error codes (`MQTT_ERR_*`) and never change once released.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Error {
    /// A required pointer was NULL or an argument is out of range.
    InvalidArgument = -1,
    /// A string argument is not valid UTF-8 or contains U+0000.
    InvalidUtf8 = -2,
    /// A topic name with wildcards or empty, or an invalid topic filter.
    InvalidTopic = -3,
    /// A QoS outside 0..=2.
    InvalidQos = -4,
    /// A payload or packet larger than the configured maximum.
    PayloadTooLarge = -5,
    /// Memory could not be allocated.
    NoMemory = -6,
    /// The operation needs a connection and there is none.
    NotConnected = -7,
    /// `connect` while already connected or connecting.
    AlreadyConnected = -8,
    /// The outgoing queue is at its count or byte limit, or no packet id is free.
    QueueFull = -9,
    /// The host name could not be resolved.
    Dns = -10,
    /// The TCP connection could not be established.
    ConnectFailed = -11,
    /// No CONNACK (or TCP connection) within the connect timeout.
    Timeout = -12,
    /// The peer closed the connection.
    ConnectionLost = -13,
    /// A socket error.
    Io = -14,
    /// The peer sent bytes that are not a valid MQTT 3.1.1 packet.
    MalformedPacket = -15,
    /// The peer sent a valid packet that is not allowed at this point.
    ProtocolViolation = -16,
    /// The peer announced a packet larger than the maximum incoming packet size.
    PacketTooLarge = -17,
    /// Nothing arrived from the peer within the keepalive window.
    KeepaliveTimeout = -18,
    /// The peer started more concurrent incoming QoS 2 flows than allowed.
    TooManyIncoming = -19,
    /// CONNACK 1: the broker does not support MQTT 3.1.1.
    RefusedProtocolVersion = -21,
    /// CONNACK 2: the client identifier was rejected.
    RefusedIdentifier = -22,
    /// CONNACK 3: the broker is unavailable.
    RefusedServerUnavailable = -23,
    /// CONNACK 4: bad user name or password.
    RefusedBadCredentials = -24,
    /// CONNACK 5: not authorized.
    RefusedNotAuthorized = -25,
    /// An outgoing QoS 2 message the broker had acknowledged (PUBREC) when it
    /// came back without the session: it may or may not have been delivered,
    /// and MQTT forbids publishing it again. Reported on its PUBCOMP callback.
    SessionLost = -26,
    /// A loop is already running for this client (`loop_start` twice, or
    /// `mqtt_client_loop` while the loop thread runs).
    LoopRunning = -30,
    /// `loop_stop` without a running loop thread.
    LoopNotRunning = -31,
    /// The call is not allowed from inside a callback of the same client.
    InCallback = -32,
    /// An internal error (a caught panic). The client should be freed.
    Internal = -33,
    /// TLS: the CA file or PEM could not be read or holds no valid certificate
    /// (or, without a CA, the system trust store is empty).
    TlsCa = -40,
    /// TLS: the client certificate file or PEM could not be read or parsed, or
    /// a key was given without a certificate.
    TlsCert = -41,
    /// TLS: the private key file or PEM could not be read or parsed, does not
    /// match the certificate, or a certificate was given without a key.
    TlsKey = -42,
    /// TLS: the broker's certificate is not trusted (unknown issuer, expired,
    /// bad signature, ...).
    TlsNotTrusted = -43,
    /// TLS: the broker's certificate is not valid for the server name.
    TlsHostname = -44,
    /// TLS: the handshake failed for another reason (alert from the broker,
    /// e.g. a refused or missing client certificate; no common protocol; not
    /// a TLS listener), or a TLS failure after it.
    TlsHandshake = -45,
    /// MQTT 5.0: a property unknown, of the wrong type or value, not allowed on
    /// the packet it is sent with, or a single-valued one given twice.
    InvalidProperty = -50,
    /// An MQTT 5.0 feature used on a client speaking MQTT 3.1.1.
    ProtocolVersion = -51,
    /// The property asked for is not in the list.
    NotFound = -52,
    /// MQTT 5.0: the broker refused with a reason code (>= 0x80): on a
    /// PUBACK/PUBCOMP callback for a refused message, or from connect for a
    /// CONNACK refusal without a 3.1.1 equivalent. The reason code is in the data.
    RefusedByBroker = -53,
    /// MQTT 5.0: the broker ended the connection with a DISCONNECT (its reason
    /// code and properties are in the DISCONNECT callback's data).
    ServerDisconnect = -54,
    /// MQTT 5.0: the broker does not support what was asked (a publish above
    /// its Maximum QoS, or retained while it has no retain).
    NotSupported = -55,
    /// MQTT 5.0: the broker used a topic alias of 0 or above our Topic Alias Maximum.
    TopicAliasInvalid = -56,
    /// The proxy (HTTP CONNECT or SOCKS5) refused the tunnel or answered
    /// something that is not its protocol.
    Proxy = -60,
    /// The durable store failed to write or sync (disk full, I/O error), or
    /// could not be opened or read: the publish was not accepted.
    Store = -70,
    /// Another live client (in this process or another) holds this client
    /// id's store.
    StoreLocked = -71,
}

impl Error {
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The `mqtt_strerror` text, NUL-terminated for C.
    pub fn message_c(self) -> &'static CStr {
        match self {
            Error::InvalidArgument => c"invalid argument",
            Error::InvalidUtf8 => c"string is not valid UTF-8 or contains U+0000",
            Error::InvalidTopic => c"invalid topic name or topic filter",
            Error::InvalidQos => c"QoS must be 0, 1 or 2",
            Error::PayloadTooLarge => c"payload larger than the maximum packet size",
            Error::NoMemory => c"out of memory",
            Error::NotConnected => c"not connected",
            Error::AlreadyConnected => c"already connected or connecting",
            Error::QueueFull => c"outgoing queue is full",
            Error::Dns => c"host name could not be resolved",
            Error::ConnectFailed => c"TCP connection could not be established",
            Error::Timeout => c"timed out",
            Error::ConnectionLost => c"connection closed by the peer",
            Error::Io => c"socket error",
            Error::MalformedPacket => c"malformed packet received",
            Error::ProtocolViolation => c"protocol violation by the peer",
            Error::PacketTooLarge => c"incoming packet exceeds the maximum packet size",
            Error::KeepaliveTimeout => c"keepalive timeout: the connection is dead",
            Error::TooManyIncoming => c"too many concurrent incoming QoS 2 messages",
            Error::RefusedProtocolVersion => c"connection refused: unacceptable protocol version",
            Error::RefusedIdentifier => c"connection refused: identifier rejected",
            Error::RefusedServerUnavailable => c"connection refused: server unavailable",
            Error::RefusedBadCredentials => c"connection refused: bad user name or password",
            Error::RefusedNotAuthorized => c"connection refused: not authorized",
            Error::SessionLost => {
                c"QoS 2 message acknowledged, then the broker lost the session: delivery unknown"
            }
            Error::LoopRunning => c"a loop is already running for this client",
            Error::LoopNotRunning => c"the loop thread is not running",
            Error::InCallback => c"not allowed from inside a callback",
            Error::Internal => c"internal error",
            Error::TlsCa => c"TLS: invalid or unreadable CA certificates",
            Error::TlsCert => c"TLS: invalid or unreadable client certificate",
            Error::TlsKey => c"TLS: invalid, unreadable or mismatched private key",
            Error::TlsNotTrusted => c"TLS: the broker's certificate is not trusted",
            Error::TlsHostname => c"TLS: the broker's certificate does not match the server name",
            Error::TlsHandshake => c"TLS handshake or protocol failure",
            Error::InvalidProperty => c"invalid MQTT 5 property for this packet",
            Error::ProtocolVersion => c"an MQTT 5 feature on a client speaking MQTT 3.1.1",
            Error::NotFound => c"property not found",
            Error::RefusedByBroker => c"refused by the broker (see the reason code)",
            Error::ServerDisconnect => c"the broker closed the connection with DISCONNECT",
            Error::NotSupported => c"not supported by the broker (maximum QoS or retain)",
            Error::TopicAliasInvalid => c"the broker used an invalid topic alias",
            Error::Proxy => c"the proxy refused the connection or answered garbage",
            Error::Store => c"the durable store failed (write, sync, open or read)",
            Error::StoreLocked => c"the store is locked by another live client",
        }
    }

    pub fn message(self) -> &'static str {
        // Every message is an ASCII literal.
        self.message_c().to_str().unwrap_or("error")
    }

    pub const ALL: [Error; 45] = [
        Error::InvalidArgument,
        Error::InvalidUtf8,
        Error::InvalidTopic,
        Error::InvalidQos,
        Error::PayloadTooLarge,
        Error::NoMemory,
        Error::NotConnected,
        Error::AlreadyConnected,
        Error::QueueFull,
        Error::Dns,
        Error::ConnectFailed,
        Error::Timeout,
        Error::ConnectionLost,
        Error::Io,
        Error::MalformedPacket,
        Error::ProtocolViolation,
        Error::PacketTooLarge,
        Error::KeepaliveTimeout,
        Error::TooManyIncoming,
        Error::RefusedProtocolVersion,
        Error::RefusedIdentifier,
        Error::RefusedServerUnavailable,
        Error::RefusedBadCredentials,
        Error::RefusedNotAuthorized,
        Error::SessionLost,
        Error::LoopRunning,
        Error::LoopNotRunning,
        Error::InCallback,
        Error::Internal,
        Error::TlsCa,
        Error::TlsCert,
        Error::TlsKey,
        Error::TlsNotTrusted,
        Error::TlsHostname,
        Error::TlsHandshake,
        Error::InvalidProperty,
        Error::ProtocolVersion,
        Error::NotFound,
        Error::RefusedByBroker,
        Error::ServerDisconnect,
        Error::NotSupported,
        Error::TopicAliasInvalid,
        Error::Proxy,
        Error::Store,
        Error::StoreLocked,
    ];

    pub fn from_code(code: i32) -> Option<Error> {
        Error::ALL.iter().copied().find(|e| e.code() == code)
    }

    /// The error for a refused CONNACK return code (1..=5).
    pub fn from_connack(code: crate::protocol::codec::ConnectReturnCode) -> Option<Error> {
        use crate::protocol::codec::ConnectReturnCode as C;
        match code {
            C::Accepted => None,
            C::UnacceptableProtocolVersion => Some(Error::RefusedProtocolVersion),
            C::IdentifierRejected => Some(Error::RefusedIdentifier),
            C::ServerUnavailable => Some(Error::RefusedServerUnavailable),
            C::BadUserNameOrPassword => Some(Error::RefusedBadCredentials),
            C::NotAuthorized => Some(Error::RefusedNotAuthorized),
        }
    }

    /// Map a decoding failure to the reason reported to the user.
    pub fn from_codec(e: crate::protocol::codec::CodecError) -> Error {
        use crate::protocol::codec::CodecError as C;
        match e {
            C::PacketTooLarge { .. } => Error::PacketTooLarge,
            e if e.is_protocol_error() => Error::ProtocolViolation,
            _ => Error::MalformedPacket,
        }
    }
}

impl Error {
    /// The MQTT 5 DISCONNECT reason code with which the client closes a
    /// connection for this error, if it is the server's fault.
    pub fn disconnect_reason(self) -> Option<u8> {
        Some(match self {
            Error::MalformedPacket => 0x81,
            Error::ProtocolViolation => 0x82,
            Error::TooManyIncoming => 0x93,
            Error::TopicAliasInvalid => 0x94,
            Error::PacketTooLarge => 0x95,
            _ => return None,
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

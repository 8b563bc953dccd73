//! The C types of mqtt.h. Layouts are part of the ABI: add fields only at the end.

use std::ffi::{c_char, c_int, c_void};

use super::properties::mqtt_properties;
use crate::Error;
use crate::dispatch::Command;

/// An MQTT client. Opaque: create with `mqtt_client_new`, free with
/// `mqtt_client_free`.
// A handle is the client's `Arc<Core>` pointer itself (`Arc::into_raw`): no
// heap block of its own per client.
pub struct mqtt_client {
    _opaque: [u8; 0],
}

/// What a callback is registered for. Values are the MQTT packet types.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mqtt_command {
    /// A CONNACK arrived (on every connection and reconnection).
    MQTT_CONNACK = 2,
    /// An application message arrived (`message` is NULL for a first QoS 2 arrival).
    MQTT_PUBLISH = 3,
    /// An outgoing QoS 1 message was acknowledged (`mid`).
    MQTT_PUBACK = 4,
    /// An outgoing QoS 2 message was received by the broker (`mid`).
    MQTT_PUBREC = 5,
    /// An incoming QoS 2 message is released: `message` is delivered here.
    MQTT_PUBREL = 6,
    /// An outgoing QoS 2 message completed (`mid`). `error` is
    /// MQTT_ERR_SESSION_LOST instead of MQTT_OK when the broker had
    /// acknowledged it (PUBREC) and then came back without the session.
    MQTT_PUBCOMP = 7,
    /// A SUBSCRIBE was answered (`mid`, `granted_qos`).
    MQTT_SUBACK = 9,
    /// An UNSUBSCRIBE was answered (`mid`).
    MQTT_UNSUBACK = 11,
    /// A PINGRESP arrived.
    MQTT_PINGRESP = 13,
    /// The connection ended; `error` says why (MQTT_OK after mqtt_client_disconnect).
    MQTT_DISCONNECT = 14,
    /// MQTT 5 enhanced authentication: the broker sent AUTH (`reason_code`
    /// 0x18 continue, or 0x00 when a re-authentication succeeded;
    /// `properties` carry the Authentication Method and Data). Answer with
    /// mqtt_client_auth. During the connection's own authentication it runs
    /// before CONNACK (a blocking mqtt_client_connect runs it in the caller's
    /// thread).
    MQTT_AUTH = 15,
}

pub(crate) fn command_to_c(command: Command) -> mqtt_command {
    match command {
        Command::ConnAck => mqtt_command::MQTT_CONNACK,
        Command::Publish => mqtt_command::MQTT_PUBLISH,
        Command::PubAck => mqtt_command::MQTT_PUBACK,
        Command::PubRec => mqtt_command::MQTT_PUBREC,
        Command::PubRel => mqtt_command::MQTT_PUBREL,
        Command::PubComp => mqtt_command::MQTT_PUBCOMP,
        Command::SubAck => mqtt_command::MQTT_SUBACK,
        Command::UnsubAck => mqtt_command::MQTT_UNSUBACK,
        Command::PingResp => mqtt_command::MQTT_PINGRESP,
        Command::Disconnect => mqtt_command::MQTT_DISCONNECT,
        Command::Auth => mqtt_command::MQTT_AUTH,
    }
}

/// Result codes. Functions return `int`: `>= 0` is success (a message id where
/// the function makes one), `< 0` one of these. `mqtt_strerror` describes each.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mqtt_error {
    MQTT_OK = 0,
    /// A required pointer was NULL or an argument is out of range.
    MQTT_ERR_INVALID_ARGUMENT = -1,
    /// A string is not valid UTF-8 or contains U+0000.
    MQTT_ERR_INVALID_UTF8 = -2,
    /// A publish topic with wildcards or empty, or an invalid topic filter.
    MQTT_ERR_INVALID_TOPIC = -3,
    /// A QoS outside 0..2.
    MQTT_ERR_INVALID_QOS = -4,
    /// A payload larger than the maximum packet size.
    MQTT_ERR_PAYLOAD_TOO_LARGE = -5,
    /// Out of memory.
    MQTT_ERR_NO_MEMORY = -6,
    /// The operation needs a connection and there is none.
    MQTT_ERR_NOT_CONNECTED = -7,
    /// Already connected or connecting.
    MQTT_ERR_ALREADY_CONNECTED = -8,
    /// The outgoing queue is full (count or bytes), or no message id is free.
    MQTT_ERR_QUEUE_FULL = -9,
    /// The host name could not be resolved.
    MQTT_ERR_DNS = -10,
    /// The TCP connection could not be established.
    MQTT_ERR_CONNECT_FAILED = -11,
    /// No TCP connection or CONNACK within the connect timeout.
    MQTT_ERR_TIMEOUT = -12,
    /// The broker closed the connection.
    MQTT_ERR_CONNECTION_LOST = -13,
    /// A socket error.
    MQTT_ERR_IO = -14,
    /// The broker sent bytes that are not a valid MQTT 3.1.1 packet.
    MQTT_ERR_MALFORMED_PACKET = -15,
    /// The broker sent a valid packet not allowed at that point.
    MQTT_ERR_PROTOCOL_VIOLATION = -16,
    /// The broker announced a packet larger than the maximum packet size.
    MQTT_ERR_PACKET_TOO_LARGE = -17,
    /// Nothing arrived within the keepalive window: the link is dead.
    MQTT_ERR_KEEPALIVE_TIMEOUT = -18,
    /// The broker started more concurrent incoming QoS 2 messages than allowed.
    MQTT_ERR_TOO_MANY_INCOMING = -19,
    /// CONNACK 1: unacceptable protocol version.
    MQTT_ERR_REFUSED_PROTOCOL_VERSION = -21,
    /// CONNACK 2: identifier rejected.
    MQTT_ERR_REFUSED_IDENTIFIER = -22,
    /// CONNACK 3: server unavailable.
    MQTT_ERR_REFUSED_SERVER_UNAVAILABLE = -23,
    /// CONNACK 4: bad user name or password.
    MQTT_ERR_REFUSED_BAD_CREDENTIALS = -24,
    /// CONNACK 5: not authorized.
    MQTT_ERR_REFUSED_NOT_AUTHORIZED = -25,
    /// On a PUBCOMP callback: the broker acknowledged this QoS 2 message
    /// (PUBREC), then came back without the session. It may or may not have
    /// been delivered; MQTT forbids publishing it again, so the client does
    /// not. Publish it anew if a duplicate is better than a loss.
    MQTT_ERR_SESSION_LOST = -26,
    /// A loop already runs this client (loop_start twice, or mqtt_client_loop
    /// while the loop thread or another thread runs it).
    MQTT_ERR_LOOP_RUNNING = -30,
    /// mqtt_client_loop_stop without a running loop thread.
    MQTT_ERR_LOOP_NOT_RUNNING = -31,
    /// Not allowed from inside one of this client's callbacks.
    MQTT_ERR_IN_CALLBACK = -32,
    /// Internal error (a bug); the client should be freed.
    MQTT_ERR_INTERNAL = -33,
    /// TLS: bad or unreadable CA file/PEM, or (no CA given) an empty system
    /// trust store.
    MQTT_ERR_TLS_CA = -40,
    /// TLS: bad or unreadable client certificate, or a key without certificate.
    MQTT_ERR_TLS_CERT = -41,
    /// TLS: bad or unreadable private key, a key not matching the certificate,
    /// or a certificate without key.
    MQTT_ERR_TLS_KEY = -42,
    /// TLS: the broker's certificate is not trusted (unknown issuer, expired...).
    MQTT_ERR_TLS_NOT_TRUSTED = -43,
    /// TLS: the broker's certificate does not match the server name.
    MQTT_ERR_TLS_HOSTNAME = -44,
    /// TLS: other handshake failure (alert from the broker, e.g. client
    /// certificate refused or missing; no common version; not a TLS port), or
    /// a TLS failure later on the connection.
    MQTT_ERR_TLS_HANDSHAKE = -45,
    /// MQTT 5: a property unknown, of the wrong type or value, not allowed on
    /// the packet it is sent with, or a single-valued one given twice.
    MQTT_ERR_INVALID_PROPERTY = -50,
    /// An MQTT 5 function or option on a client speaking MQTT 3.1.1.
    MQTT_ERR_PROTOCOL_VERSION = -51,
    /// mqtt_properties_get_*: the property is not in the list.
    MQTT_ERR_NOT_FOUND = -52,
    /// MQTT 5: the broker refused with a reason code >= 0x80 (in the data's
    /// `reason_code`): on the PUBACK/PUBCOMP callback of a refused message, or
    /// a CONNACK refusal without a 3.1.1 equivalent.
    MQTT_ERR_REFUSED_BY_BROKER = -53,
    /// MQTT 5: the broker ended the connection with a DISCONNECT; its reason
    /// code and properties (reason string, server reference) are in the
    /// DISCONNECT callback's data.
    MQTT_ERR_SERVER_DISCONNECT = -54,
    /// MQTT 5: the broker does not support it: a publish above its Maximum
    /// QoS, or retained while it announced Retain Available 0. Nothing was sent.
    MQTT_ERR_NOT_SUPPORTED = -55,
    /// MQTT 5: the broker used a topic alias of 0 or above the Topic Alias
    /// Maximum we announced (the connection ends with DISCONNECT 0x94).
    MQTT_ERR_TOPIC_ALIAS_INVALID = -56,
    /// The HTTP or SOCKS5 proxy refused the tunnel to the broker (an HTTP
    /// status other than 2xx, a SOCKS5 reply other than 0, failed proxy
    /// authentication) or answered something that is not its protocol.
    MQTT_ERR_PROXY = -60,
    /// The durable store (mqtt_client_set_persistence or mqtt_client_set_store)
    /// failed to write or sync (disk full, I/O error, a store callback
    /// returning non-zero), or could not be opened or loaded. From publish:
    /// the message was not accepted and nothing changed.
    MQTT_ERR_STORE = -70,
    /// Another live client, in this process or another, holds this client
    /// id's store (a lock held by a process that died does not count).
    MQTT_ERR_STORE_LOCKED = -71,
}

pub(crate) const MQTT_OK: c_int = mqtt_error::MQTT_OK as c_int;
pub(crate) const MQTT_ERR_INVALID_ARGUMENT: c_int = Error::InvalidArgument as c_int;
pub(crate) const MQTT_ERR_INTERNAL: c_int = Error::Internal as c_int;

/// An application message, as handed to callbacks. Valid only during the callback.
#[repr(C)]
pub struct mqtt_message {
    /// NUL-terminated UTF-8.
    pub topic: *const c_char,
    /// May be NULL when `payload_len` is 0; not NUL-terminated.
    pub payload: *const u8,
    pub payload_len: usize,
    /// 0, 1 or 2.
    pub qos: u8,
    pub retain: bool,
    pub dup: bool,
    pub mid: u16,
    /// MQTT 5: the message's properties (user properties, correlation data,
    /// response topic, message expiry, subscription identifiers, ...); NULL
    /// under MQTT 3.1.1. Read with mqtt_properties_get_*. `topic` is always
    /// the full topic: topic aliases are resolved.
    pub properties: *const mqtt_properties,
}

/// What a callback receives (the seed's `data` dictionary). Valid only during
/// the callback; copy what you need to keep.
#[repr(C)]
pub struct mqtt_data {
    pub command: mqtt_command,
    /// PUBLISH with QoS 0/1, or the PUBREL completing a QoS 2 message; else NULL.
    pub message: *const mqtt_message,
    /// Packet id of PUBLISH (QoS > 0), PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK.
    pub mid: u16,
    /// CONNACK return code.
    pub return_code: u8,
    /// CONNACK: the broker kept a session for this client.
    pub session_present: bool,
    /// SUBACK: one per requested filter, 0x80 = refused.
    pub granted_qos: *const u8,
    pub granted_qos_len: usize,
    /// DISCONNECT: MQTT_OK or the mqtt_error that ended the connection.
    /// PUBCOMP: MQTT_OK, or MQTT_ERR_SESSION_LOST (see MQTT_PUBCOMP).
    /// MQTT 5 PUBACK/PUBCOMP: MQTT_ERR_REFUSED_BY_BROKER when the broker
    /// refused the message (reason code >= 0x80; a refused QoS 2 message gets
    /// its PUBCOMP callback right after its PUBREC callback, and no PUBREL is
    /// sent). MQTT 5 DISCONNECT: MQTT_ERR_SERVER_DISCONNECT when the broker
    /// sent DISCONNECT.
    pub error: c_int,
    /// MQTT 5 reason code of CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP and
    /// DISCONNECT (the broker's; or, when the client closed the connection
    /// for a protocol error of the broker, the one it sent: 0x81 malformed,
    /// 0x82 protocol error, 0x93 receive maximum exceeded, 0x94 topic alias
    /// invalid, 0x95 packet too large). Under 3.1.1: CONNACK's return code,
    /// else 0.
    pub reason_code: u8,
    /// SUBACK: the same codes as `granted_qos` (3.1.1 and 5); MQTT 5 UNSUBACK:
    /// one reason code per filter, >= 0x80 refused. NULL/0 otherwise.
    pub reason_codes: *const u8,
    pub reason_codes_len: usize,
    /// MQTT 5: the packet's properties (CONNACK: assigned client identifier,
    /// server limits...; acks and DISCONNECT: reason string, user
    /// properties; DISCONNECT: server reference). NULL under 3.1.1 and for
    /// events that are not packets.
    pub properties: *const mqtt_properties,
    /// CONNACK (accepted or refused): which broker answered, as an index into
    /// the list given to mqtt_client_set_servers (0 = its first entry).
    /// -1 when the client has no server list (it connected to the host given
    /// to connect), and for every other event. Appended after `properties`
    /// so that programs built against older headers keep their layout; read
    /// it only with a header that declares it.
    pub server_index: c_int,
}

/// The MQTT version a client speaks (mqtt_client_set_protocol).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mqtt_protocol_version {
    /// MQTT 3.1.1, the default.
    MQTT_PROTOCOL_V311 = 4,
    /// MQTT 5.0.
    MQTT_PROTOCOL_V5 = 5,
}

/// One filter of an MQTT 5 subscribe request (mqtt_client_subscribe_v5).
#[repr(C)]
pub struct mqtt_subscription_v5 {
    /// NUL-terminated UTF-8 topic filter; `$share/<group>/<filter>` for a
    /// shared subscription.
    pub topic: *const c_char,
    /// Maximum QoS, 0..2.
    pub qos: c_int,
    /// Do not receive this client's own messages (not on a shared subscription).
    pub no_local: bool,
    /// Keep the retain flag as published (else retained messages forwarded
    /// live arrive with retain 0).
    pub retain_as_published: bool,
    /// Retained messages at subscribe time: 0 send them, 1 only for a new
    /// subscription, 2 never.
    pub retain_handling: c_int,
}

/// One filter of a subscribe request.
#[repr(C)]
pub struct mqtt_subscription {
    /// NUL-terminated UTF-8 topic filter.
    pub topic: *const c_char,
    /// Maximum QoS, 0..2.
    pub qos: c_int,
}

pub(crate) type CallbackFn = unsafe extern "C" fn(*mut mqtt_client, *const mqtt_data, *mut c_void);
pub(crate) type ConditionFn = unsafe extern "C" fn(*const mqtt_data, *mut c_void) -> bool;

/// A callback: runs on the thread that runs the client (the loop thread, or
/// the caller of mqtt_client_loop / mqtt_client_connect), one at a time, in
/// packet order. It may call any function of this client except connect,
/// reconnect, loop, loop_stop (MQTT_ERR_IN_CALLBACK); those that send take
/// effect right after it returns.
pub type mqtt_callback = Option<
    unsafe extern "C" fn(client: *mut mqtt_client, data: *const mqtt_data, user_data: *mut c_void),
>;

/// A condition: returns true when the packet is for its callback.
pub type mqtt_condition =
    Option<unsafe extern "C" fn(data: *const mqtt_data, user_data: *mut c_void) -> bool>;

/// Severity of a log message (`mqtt_client_set_log`): a client set to a level
/// receives the messages of that level and of the more severe ones.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mqtt_log_level {
    /// Protocol errors (which packet, why), giving up reconnecting.
    MQTT_LOG_ERROR = 1,
    /// Connection lost (with the reason), failed connection attempts.
    MQTT_LOG_WARN = 2,
    /// Connecting to host:port, connected (session present), disconnected,
    /// reconnection scheduled in N ms.
    MQTT_LOG_INFO = 3,
    /// Every packet sent and received (type, message id).
    MQTT_LOG_DEBUG = 4,
}

/// A log callback (`mqtt_client_set_log`): `level` is an mqtt_log_level,
/// `message` a NUL-terminated UTF-8 line without trailing newline, valid only
/// during the call (copy it to keep it). Runs on the thread that runs the
/// client, possibly while the library holds internal locks: it must not call
/// any function on the same client (and should return quickly).
pub type mqtt_log_callback = Option<
    unsafe extern "C" fn(
        client: *mut mqtt_client,
        level: c_int,
        message: *const c_char,
        user_data: *mut c_void,
    ),
>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_c_code() {
        use mqtt_error::*;
        let c_codes = [
            MQTT_ERR_INVALID_ARGUMENT,
            MQTT_ERR_INVALID_UTF8,
            MQTT_ERR_INVALID_TOPIC,
            MQTT_ERR_INVALID_QOS,
            MQTT_ERR_PAYLOAD_TOO_LARGE,
            MQTT_ERR_NO_MEMORY,
            MQTT_ERR_NOT_CONNECTED,
            MQTT_ERR_ALREADY_CONNECTED,
            MQTT_ERR_QUEUE_FULL,
            MQTT_ERR_DNS,
            MQTT_ERR_CONNECT_FAILED,
            MQTT_ERR_TIMEOUT,
            MQTT_ERR_CONNECTION_LOST,
            MQTT_ERR_IO,
            MQTT_ERR_MALFORMED_PACKET,
            MQTT_ERR_PROTOCOL_VIOLATION,
            MQTT_ERR_PACKET_TOO_LARGE,
            MQTT_ERR_KEEPALIVE_TIMEOUT,
            MQTT_ERR_TOO_MANY_INCOMING,
            MQTT_ERR_REFUSED_PROTOCOL_VERSION,
            MQTT_ERR_REFUSED_IDENTIFIER,
            MQTT_ERR_REFUSED_SERVER_UNAVAILABLE,
            MQTT_ERR_REFUSED_BAD_CREDENTIALS,
            MQTT_ERR_REFUSED_NOT_AUTHORIZED,
            MQTT_ERR_SESSION_LOST,
            MQTT_ERR_LOOP_RUNNING,
            MQTT_ERR_LOOP_NOT_RUNNING,
            MQTT_ERR_IN_CALLBACK,
            MQTT_ERR_INTERNAL,
            MQTT_ERR_TLS_CA,
            MQTT_ERR_TLS_CERT,
            MQTT_ERR_TLS_KEY,
            MQTT_ERR_TLS_NOT_TRUSTED,
            MQTT_ERR_TLS_HOSTNAME,
            MQTT_ERR_TLS_HANDSHAKE,
            MQTT_ERR_INVALID_PROPERTY,
            MQTT_ERR_PROTOCOL_VERSION,
            MQTT_ERR_NOT_FOUND,
            MQTT_ERR_REFUSED_BY_BROKER,
            MQTT_ERR_SERVER_DISCONNECT,
            MQTT_ERR_NOT_SUPPORTED,
            MQTT_ERR_TOPIC_ALIAS_INVALID,
            MQTT_ERR_PROXY,
            MQTT_ERR_STORE,
            MQTT_ERR_STORE_LOCKED,
        ];
        assert_eq!(c_codes.len(), Error::ALL.len());
        for (c, e) in c_codes.iter().zip(Error::ALL) {
            assert_eq!(*c as i32, e.code(), "{e:?}");
        }
    }
}

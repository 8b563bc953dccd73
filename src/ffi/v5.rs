//! The MQTT 5.0 calls of a client: protocol choice, properties on every packet
//! the application sends, subscription options, and a DISCONNECT with a reason.

use std::ffi::{c_char, c_int, c_void};

use super::{
    MQTT_ERR_INTERNAL, bytes_arg, client_arg, code, filters_arg, mid_or_code, mqtt_client,
    mqtt_properties, mqtt_subscription_v5, qos_arg, str_arg,
};
use crate::Error;
use crate::protocol::codec::{ProtocolVersion, SubscribeOptions};
use crate::protocol::properties::Properties;

/// # Safety
/// `props` is NULL or a valid `mqtt_properties`.
unsafe fn props_arg<'a>(props: *const mqtt_properties) -> Properties<'a> {
    // SAFETY: per the caller's contract.
    unsafe { props.as_ref() }.map_or(Properties::EMPTY, |p| p.view())
}

/// Speak `version` (MQTT_PROTOCOL_V311 = 4, the default, or MQTT_PROTOCOL_V5 =
/// 5) from the next connection. Set it right after mqtt_client_new: before
/// connecting, publishing or subscribing.
///
/// Under MQTT 5 the seed's `clean_session` is the Clean Start flag. A client
/// with `clean_session` false that sets no Session Expiry Interval (connect
/// properties) sends 0xFFFFFFFF, so that its session outlives the connection
/// as in 3.1.1 (MQTT 5's own default, 0, would end it with the connection);
/// with `clean_session` true the session ends with the connection unless a
/// Session Expiry Interval says otherwise. The client also announces, unless
/// the connect properties set them, Receive Maximum = the
/// mqtt_client_set_max_incoming_qos2 limit and Maximum Packet Size = the
/// mqtt_client_set_max_packet_size limit, and enforces both.
///
/// Returns MQTT_OK (also for the version already in use),
/// MQTT_ERR_INVALID_ARGUMENT (NULL, another version, or messages or requests
/// made under the other version still pending) or MQTT_ERR_ALREADY_CONNECTED
/// (a switch while connected or connecting). Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_set_protocol(
    client: *mut mqtt_client,
    version: c_int,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        code(unsafe { client_arg(client) }.and_then(|c| {
            let version = match version {
                4 => ProtocolVersion::V311,
                5 => ProtocolVersion::V5,
                _ => return Err(Error::InvalidArgument),
            };
            c.set_protocol(version)
        }))
    })
}

/// MQTT 5: the properties of every CONNECT from the next connection on
/// (copied; NULL or an empty list clears them): Session Expiry Interval,
/// Receive Maximum, Maximum Packet Size, Topic Alias Maximum (the aliases the
/// broker may use towards us; incoming aliases are resolved, callbacks always
/// see the full topic), Request Problem/Response Information, user
/// properties, Authentication Method and Data (enhanced authentication: see
/// MQTT_AUTH and mqtt_client_auth).
///
/// Returns MQTT_OK, MQTT_ERR_INVALID_ARGUMENT (NULL client),
/// MQTT_ERR_PROTOCOL_VERSION (a non-empty list on a 3.1.1 client) or
/// MQTT_ERR_INVALID_PROPERTY (not a CONNECT property, a duplicate, or
/// Authentication Data without a Method); on error nothing changed.
/// Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_set_connect_properties(
    client: *mut mqtt_client,
    props: *const mqtt_properties,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        code(
            unsafe { client_arg(client) }
                .and_then(|c| c.set_connect_properties(Some(unsafe { props_arg(props) }))),
        )
    })
}

/// MQTT 5: the properties of the will (mqtt_client_set_will) from the next
/// connection on (copied; NULL or empty clears them): Will Delay Interval,
/// Message Expiry Interval, Payload Format Indicator, Content Type, Response
/// Topic, Correlation Data, user properties.
///
/// Returns MQTT_OK, MQTT_ERR_INVALID_ARGUMENT, MQTT_ERR_PROTOCOL_VERSION or
/// MQTT_ERR_INVALID_PROPERTY, as mqtt_client_set_connect_properties.
/// Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_set_will_properties(
    client: *mut mqtt_client,
    props: *const mqtt_properties,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        code(
            unsafe { client_arg(client) }
                .and_then(|c| c.set_will_properties(Some(unsafe { props_arg(props) }))),
        )
    })
}

/// MQTT 5: give outgoing topics aliases, at most `max` per connection (and at
/// most the broker's Topic Alias Maximum): the first PUBLISH on a topic
/// carries it with its alias, later ones only the 2-byte alias. Aliases are
/// assigned in order of first use and forgotten on every reconnection. 0 (the
/// default) sends none. From the next connection.
///
/// Returns MQTT_OK, MQTT_ERR_INVALID_ARGUMENT or MQTT_ERR_PROTOCOL_VERSION
/// (`max` > 0 on a 3.1.1 client). Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_set_topic_alias_max(
    client: *mut mqtt_client,
    max: u16,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        code(unsafe { client_arg(client) }.and_then(|c| c.set_topic_alias_max(max)))
    })
}

/// mqtt_client_publish with MQTT 5 properties (`props` nullable, copied):
/// Payload Format Indicator, Message Expiry Interval, Content Type, Response
/// Topic, Correlation Data, user properties. The client assigns topic aliases
/// itself (mqtt_client_set_topic_alias_max).
///
/// Honours what the broker announced in its CONNACK: a message above its
/// Maximum QoS, or retained while it has no retain, is refused with
/// MQTT_ERR_NOT_SUPPORTED; one larger than its Maximum Packet Size with
/// MQTT_ERR_PACKET_TOO_LARGE; no more messages are in flight than its Receive
/// Maximum (the rest wait in the queue). Nothing is sent on a refusal.
///
/// Returns the message id, or mqtt_client_publish's errors, or
/// MQTT_ERR_PROTOCOL_VERSION (properties on a 3.1.1 client),
/// MQTT_ERR_INVALID_PROPERTY (not a PUBLISH property, a duplicate, a Topic
/// Alias or a Subscription Identifier), MQTT_ERR_NOT_SUPPORTED,
/// MQTT_ERR_PACKET_TOO_LARGE. On error nothing changed. Thread-safe, also
/// from callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_publish_v5(
    client: *mut mqtt_client,
    topic: *const c_char,
    payload: *const c_void,
    payload_len: usize,
    qos: c_int,
    retain: bool,
    props: *const mqtt_properties,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let result = unsafe { client_arg(client) }.and_then(|c| {
            // SAFETY: per this function's contract.
            let topic = unsafe { str_arg(topic) }?;
            // SAFETY: per this function's contract.
            let payload = unsafe { bytes_arg(payload, payload_len) }?;
            // SAFETY: per this function's contract.
            let props = unsafe { props_arg(props) };
            c.publish_with(topic, payload, qos_arg(qos)?, retain, props)
        });
        mid_or_code(result)
    })
}

/// Subscribe with MQTT 5 options (see mqtt_subscription_v5) and properties
/// (`props` nullable, copied): a Subscription Identifier (then delivered with
/// every matching message: mqtt_properties_count/get_int_at on the message's
/// properties) and user properties. `$share/<group>/<filter>` makes a shared
/// subscription (no_local is not allowed there). The subscriptions are
/// restored with their options and identifier when the broker loses the
/// session (mqtt_client_set_resubscribe).
///
/// Returns the SUBSCRIBE's message id, or MQTT_ERR_INVALID_ARGUMENT (NULL,
/// count 0, retain_handling outside 0..2, no_local on a shared
/// subscription), MQTT_ERR_INVALID_UTF8, MQTT_ERR_INVALID_TOPIC,
/// MQTT_ERR_INVALID_QOS, MQTT_ERR_PROTOCOL_VERSION (properties or options
/// beyond the QoS on a 3.1.1 client), MQTT_ERR_INVALID_PROPERTY,
/// MQTT_ERR_QUEUE_FULL, MQTT_ERR_PAYLOAD_TOO_LARGE, MQTT_ERR_PACKET_TOO_LARGE
/// (above the broker's Maximum Packet Size; nothing is sent). SUBACK data
/// carries one reason code per filter in `reason_codes`. Thread-safe, also
/// from callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_subscribe_v5(
    client: *mut mqtt_client,
    subscriptions: *const mqtt_subscription_v5,
    count: usize,
    props: *const mqtt_properties,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let result = unsafe { client_arg(client) }.and_then(|c| {
            if subscriptions.is_null() || count == 0 || count > u16::MAX as usize {
                return Err(Error::InvalidArgument);
            }
            // SAFETY: the caller promises `count` entries.
            let entries = unsafe { std::slice::from_raw_parts(subscriptions, count) };
            let mut filters = Vec::with_capacity(count);
            for entry in entries {
                // SAFETY: each topic is a NUL-terminated string or NULL.
                let topic = unsafe { str_arg(entry.topic) }?;
                let retain_handling = u8::try_from(entry.retain_handling)
                    .ok()
                    .filter(|&h| h <= 2)
                    .ok_or(Error::InvalidArgument)?;
                let options = SubscribeOptions {
                    qos: qos_arg(entry.qos)?,
                    no_local: entry.no_local,
                    retain_as_published: entry.retain_as_published,
                    retain_handling,
                };
                filters.push((topic, options));
            }
            // SAFETY: per this function's contract.
            c.subscribe_with(&filters, unsafe { props_arg(props) })
        });
        mid_or_code(result)
    })
}

/// mqtt_client_unsubscribe with MQTT 5 properties (`props` nullable, copied:
/// user properties). UNSUBACK data carries one reason code per filter in
/// `reason_codes`. Returns the UNSUBSCRIBE's message id, or
/// mqtt_client_unsubscribe's errors, MQTT_ERR_PROTOCOL_VERSION,
/// MQTT_ERR_INVALID_PROPERTY or MQTT_ERR_PACKET_TOO_LARGE (above the broker's
/// Maximum Packet Size; nothing is sent). Thread-safe, also from callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_unsubscribe_v5(
    client: *mut mqtt_client,
    topics: *const *const c_char,
    count: usize,
    props: *const mqtt_properties,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let result = unsafe { client_arg(client) }.and_then(|c| {
            // SAFETY: per this function's contract.
            let filters = unsafe { filters_arg(topics, count) }?;
            // SAFETY: per this function's contract.
            c.unsubscribe_with(&filters, unsafe { props_arg(props) })
        });
        mid_or_code(result)
    })
}

/// mqtt_client_disconnect with an MQTT 5 reason code (0x00 normal; 0x04
/// disconnect with will: the broker publishes the will anyway; any other code
/// DISCONNECT may carry) and properties (`props` nullable, copied: Session
/// Expiry Interval, Reason String, user properties).
///
/// Returns mqtt_client_disconnect's results, or MQTT_ERR_PROTOCOL_VERSION (a
/// reason code or properties on a 3.1.1 client), MQTT_ERR_INVALID_ARGUMENT (a
/// reason code DISCONNECT may not carry) or MQTT_ERR_INVALID_PROPERTY (not a
/// DISCONNECT property, or a non-zero Session Expiry Interval when the
/// CONNECT's was 0); on those errors nothing changed. Thread-safe, also from
/// callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_disconnect_v5(
    client: *mut mqtt_client,
    reason_code: c_int,
    props: *const mqtt_properties,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        code(unsafe { client_arg(client) }.and_then(|c| {
            let reason_code = u8::try_from(reason_code).map_err(|_| Error::InvalidArgument)?;
            // SAFETY: per this function's contract.
            let props = unsafe { props_arg(props) };
            // The DISCONNECT callback may run inside this call and free the handle.
            c.clone().disconnect_with(reason_code, props)
        }))
    })
}

/// MQTT 5 enhanced authentication (a CONNECT with the Authentication Method
/// connect property): send AUTH with `reason_code` 0x18 (continue: the answer
/// to the broker's AUTH, from the MQTT_AUTH callback, also before CONNACK) or
/// 0x19 (re-authenticate, once connected). `props` (nullable, copied) carries
/// the Authentication Data, a Reason String, user properties; the
/// connection's Authentication Method is added when it is missing. The
/// outcome arrives as MQTT_AUTH (0x18: another step; 0x00: re-authentication
/// succeeded), CONNACK, or a DISCONNECT callback (a refusal).
///
/// Returns MQTT_OK, MQTT_ERR_INVALID_ARGUMENT (NULL; a reason code other than
/// 0x18/0x19, 0x19 before CONNACK, or a connection without an Authentication
/// Method), MQTT_ERR_PROTOCOL_VERSION (a 3.1.1 client),
/// MQTT_ERR_INVALID_PROPERTY (not an AUTH property, or another method),
/// MQTT_ERR_PACKET_TOO_LARGE (above the broker's Maximum Packet Size even
/// without the Reason String and user properties, which are left out when
/// they alone make it too large) or MQTT_ERR_NOT_CONNECTED. Thread-safe, also
/// from callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_auth(
    client: *mut mqtt_client,
    reason_code: c_int,
    props: *const mqtt_properties,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        code(unsafe { client_arg(client) }.and_then(|c| {
            let reason_code = u8::try_from(reason_code).map_err(|_| Error::InvalidArgument)?;
            // SAFETY: per this function's contract.
            c.auth(reason_code, unsafe { props_arg(props) })
        }))
    })
}

//! MQTT 5.0 property lists for C: the opaque `mqtt_properties`, built by the
//! application for a packet it sends, or handed (read-only) to a callback.

use std::ffi::{c_char, c_int, c_void};

use super::{MQTT_ERR_INTERNAL, MQTT_OK, bytes_arg, str_arg};
use crate::Error;
use crate::protocol::properties::{Properties, PropertiesBuf, PropertyType, property_type};

/// Property identifiers: the MQTT 5.0 specification's numbers (section 2.2.2.2).
/// The comment gives the value's type: byte, 2-byte or 4-byte integer, variable
/// byte integer (varint), UTF-8 string, binary data, or a string pair.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mqtt_property_id {
    /// byte, 0 (unspecified bytes) or 1 (UTF-8): PUBLISH, will.
    MQTT_PROP_PAYLOAD_FORMAT_INDICATOR = 0x01,
    /// 4-byte, seconds: PUBLISH, will.
    MQTT_PROP_MESSAGE_EXPIRY_INTERVAL = 0x02,
    /// string: PUBLISH, will.
    MQTT_PROP_CONTENT_TYPE = 0x03,
    /// string, a topic name: PUBLISH, will.
    MQTT_PROP_RESPONSE_TOPIC = 0x08,
    /// binary: PUBLISH, will.
    MQTT_PROP_CORRELATION_DATA = 0x09,
    /// varint 1..268435455: SUBSCRIBE; repeated on the PUBLISH the server sends.
    MQTT_PROP_SUBSCRIPTION_IDENTIFIER = 0x0B,
    /// 4-byte, seconds: CONNECT, CONNACK, DISCONNECT.
    MQTT_PROP_SESSION_EXPIRY_INTERVAL = 0x11,
    /// string: CONNACK.
    MQTT_PROP_ASSIGNED_CLIENT_IDENTIFIER = 0x12,
    /// 2-byte, seconds: CONNACK.
    MQTT_PROP_SERVER_KEEP_ALIVE = 0x13,
    /// string: CONNECT, CONNACK, AUTH.
    MQTT_PROP_AUTHENTICATION_METHOD = 0x15,
    /// binary: CONNECT, CONNACK, AUTH.
    MQTT_PROP_AUTHENTICATION_DATA = 0x16,
    /// byte, 0 or 1: CONNECT.
    MQTT_PROP_REQUEST_PROBLEM_INFORMATION = 0x17,
    /// 4-byte, seconds: will.
    MQTT_PROP_WILL_DELAY_INTERVAL = 0x18,
    /// byte, 0 or 1: CONNECT.
    MQTT_PROP_REQUEST_RESPONSE_INFORMATION = 0x19,
    /// string: CONNACK.
    MQTT_PROP_RESPONSE_INFORMATION = 0x1A,
    /// string: CONNACK, DISCONNECT.
    MQTT_PROP_SERVER_REFERENCE = 0x1C,
    /// string: CONNACK, the acks, SUBACK, UNSUBACK, DISCONNECT, AUTH.
    MQTT_PROP_REASON_STRING = 0x1F,
    /// 2-byte, not 0: CONNECT, CONNACK.
    MQTT_PROP_RECEIVE_MAXIMUM = 0x21,
    /// 2-byte: CONNECT, CONNACK.
    MQTT_PROP_TOPIC_ALIAS_MAXIMUM = 0x22,
    /// 2-byte, not 0: PUBLISH (the client assigns its own: see
    /// mqtt_client_set_topic_alias_max).
    MQTT_PROP_TOPIC_ALIAS = 0x23,
    /// byte, 0 or 1: CONNACK.
    MQTT_PROP_MAXIMUM_QOS = 0x24,
    /// byte, 0 or 1: CONNACK.
    MQTT_PROP_RETAIN_AVAILABLE = 0x25,
    /// string pair, repeatable: every packet with properties.
    MQTT_PROP_USER_PROPERTY = 0x26,
    /// 4-byte, not 0: CONNECT, CONNACK.
    MQTT_PROP_MAXIMUM_PACKET_SIZE = 0x27,
    /// byte, 0 or 1: CONNACK.
    MQTT_PROP_WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28,
    /// byte, 0 or 1: CONNACK.
    MQTT_PROP_SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29,
    /// byte, 0 or 1: CONNACK.
    MQTT_PROP_SHARED_SUBSCRIPTION_AVAILABLE = 0x2A,
}

/// An MQTT 5.0 property list. Opaque. One the application creates with
/// `mqtt_properties_new` is its own: it frees it with `mqtt_properties_free`,
/// and the functions that send it copy it. One a callback receives belongs to
/// the library and is valid only during that callback (copy it with
/// `mqtt_properties_copy` to keep it).
///
/// A list is not thread-safe: use one from one thread at a time. Reading a
/// callback's list from that callback is always safe.
pub struct mqtt_properties {
    list: List,
}

enum List {
    Owned(PropertiesBuf),
    /// Bytes of a received packet, valid while the callback runs.
    Borrowed(Properties<'static>),
}

impl mqtt_properties {
    pub(crate) fn view(&self) -> Properties<'_> {
        match &self.list {
            List::Owned(buf) => buf.as_properties(),
            List::Borrowed(props) => *props,
        }
    }

    /// A read-only list over a received packet's properties, for one callback.
    ///
    /// # Safety
    /// The result must not outlive `props`' bytes: it is handed to C only for
    /// the duration of a callback that runs while they are alive.
    pub(crate) unsafe fn borrowing(props: Properties<'_>) -> mqtt_properties {
        // SAFETY: only the lifetime changes; the caller keeps the bytes alive
        // for as long as the result is reachable.
        let props: Properties<'static> = unsafe { std::mem::transmute(props) };
        mqtt_properties {
            list: List::Borrowed(props),
        }
    }

    fn owned_mut(&mut self) -> crate::Result<&mut PropertiesBuf> {
        match &mut self.list {
            List::Owned(buf) => Ok(buf),
            List::Borrowed(_) => Err(Error::InvalidArgument),
        }
    }
}

/// # Safety
/// `p` is NULL or a valid `mqtt_properties`.
unsafe fn list_mut<'a>(p: *mut mqtt_properties) -> crate::Result<&'a mut PropertiesBuf> {
    // A callback's list reaches C through a `*const` made from a shared
    // reference (its const cast away by the caller): look at it through a
    // shared reference, and make a `&mut` only of a list the caller owns.
    // SAFETY: per the caller's contract.
    let list = unsafe { p.as_ref() }.ok_or(Error::InvalidArgument)?;
    if matches!(list.list, List::Borrowed(_)) {
        return Err(Error::InvalidArgument);
    }
    // SAFETY: an owned list, made by Box::into_raw in mqtt_properties_new/copy.
    unsafe { &mut *p }.owned_mut()
}

/// # Safety
/// `p` is NULL or a valid `mqtt_properties`.
unsafe fn list<'a>(p: *const mqtt_properties) -> crate::Result<Properties<'a>> {
    // SAFETY: per the caller's contract.
    let p = unsafe { p.as_ref() }.ok_or(Error::InvalidArgument)?;
    Ok(p.view())
}

fn id_arg(id: c_int, wanted: &[PropertyType]) -> crate::Result<u8> {
    let id = u8::try_from(id).map_err(|_| Error::InvalidProperty)?;
    match property_type(id) {
        Some(t) if wanted.contains(&t) => Ok(id),
        _ => Err(Error::InvalidProperty),
    }
}

const INTEGER_TYPES: &[PropertyType] = &[
    PropertyType::Byte,
    PropertyType::TwoByte,
    PropertyType::FourByte,
    PropertyType::VarInt,
];

fn status(result: crate::Result<()>) -> c_int {
    match result {
        Ok(()) => MQTT_OK,
        Err(e) => e.code(),
    }
}

/// A new, empty property list, owned by the caller (free it with
/// mqtt_properties_free). NULL when out of memory.
#[unsafe(no_mangle)]
pub extern "C" fn mqtt_properties_new() -> *mut mqtt_properties {
    ffi_guard!(std::ptr::null_mut(), {
        Box::into_raw(Box::new(mqtt_properties {
            list: List::Owned(PropertiesBuf::default()),
        }))
    })
}

/// A copy of `p`, owned by the caller: the way to keep the properties a
/// callback received. NULL when `p` is NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_properties_copy(p: *const mqtt_properties) -> *mut mqtt_properties {
    ffi_guard!(std::ptr::null_mut(), {
        // SAFETY: per this function's contract.
        let Ok(view) = (unsafe { list(p) }) else {
            return std::ptr::null_mut();
        };
        Box::into_raw(Box::new(mqtt_properties {
            list: List::Owned(PropertiesBuf::from_properties(view)),
        }))
    })
}

/// Free a list made by mqtt_properties_new or mqtt_properties_copy. NULL is a
/// no-op. Never pass a list a callback received.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_properties_free(p: *mut mqtt_properties) {
    ffi_guard!((), {
        if !p.is_null() {
            // SAFETY: made by Box::into_raw in mqtt_properties_new/copy.
            drop(unsafe { Box::from_raw(p) });
        }
    })
}

/// Remove every property, keeping the memory for reuse.
/// Returns MQTT_OK or MQTT_ERR_INVALID_ARGUMENT (NULL, or a callback's list).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_properties_clear(p: *mut mqtt_properties) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        status(unsafe { list_mut(p) }.map(|buf| buf.clear()))
    })
}

/// Append an integer property: `id` is a byte, 2-byte, 4-byte or varint
/// property and `value` must fit it (and its rules: 0/1 flags, Maximum QoS 0
/// or 1, no 0 where the specification forbids it).
///
/// Whether the property may go on a packet is checked by the call that sends
/// the list (MQTT_ERR_INVALID_PROPERTY there). Returns MQTT_OK,
/// MQTT_ERR_INVALID_ARGUMENT (NULL, or a callback's list) or
/// MQTT_ERR_INVALID_PROPERTY (unknown id, not an integer property, value out
/// of range); on error the list is unchanged.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_properties_add_int(
    p: *mut mqtt_properties,
    id: c_int,
    value: u32,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let result = unsafe { list_mut(p) }.and_then(|buf| {
            let id = id_arg(id, INTEGER_TYPES)?;
            buf.push_int(id, value).map_err(|_| Error::InvalidProperty)
        });
        status(result)
    })
}

/// Append a string property (NUL-terminated UTF-8, copied).
/// Returns MQTT_OK, MQTT_ERR_INVALID_ARGUMENT (NULL), MQTT_ERR_INVALID_UTF8,
/// or MQTT_ERR_INVALID_PROPERTY (unknown id, not a string property, longer
/// than 65535 bytes); on error the list is unchanged.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_properties_add_string(
    p: *mut mqtt_properties,
    id: c_int,
    value: *const c_char,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let result = unsafe { list_mut(p) }.and_then(|buf| {
            let id = id_arg(id, &[PropertyType::String])?;
            // SAFETY: per this function's contract.
            let value = unsafe { str_arg(value) }?;
            buf.push_str(id, value).map_err(|_| Error::InvalidProperty)
        });
        status(result)
    })
}

/// Append a binary property (`len` bytes at `data`, copied; `data` may be NULL
/// when `len` is 0). Returns MQTT_OK, MQTT_ERR_INVALID_ARGUMENT (NULL), or
/// MQTT_ERR_INVALID_PROPERTY (unknown id, not a binary property, longer than
/// 65535 bytes); on error the list is unchanged.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_properties_add_binary(
    p: *mut mqtt_properties,
    id: c_int,
    data: *const c_void,
    len: usize,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let result = unsafe { list_mut(p) }.and_then(|buf| {
            let id = id_arg(id, &[PropertyType::Binary])?;
            // SAFETY: per this function's contract.
            let data = unsafe { bytes_arg(data, len) }?;
            buf.push_bin(id, data).map_err(|_| Error::InvalidProperty)
        });
        status(result)
    })
}

/// Append a user property (a key and a value, NUL-terminated UTF-8, copied).
/// Repeatable; order is kept on the wire. Returns MQTT_OK,
/// MQTT_ERR_INVALID_ARGUMENT (NULL), MQTT_ERR_INVALID_UTF8 or
/// MQTT_ERR_INVALID_PROPERTY (longer than 65535 bytes); on error the list is
/// unchanged.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_properties_add_user(
    p: *mut mqtt_properties,
    key: *const c_char,
    value: *const c_char,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let result = unsafe { list_mut(p) }.and_then(|buf| {
            // SAFETY: per this function's contract.
            let key = unsafe { str_arg(key) }?;
            // SAFETY: per this function's contract.
            let value = unsafe { str_arg(value) }?;
            buf.push_user(key, value)
                .map_err(|_| Error::InvalidProperty)
        });
        status(result)
    })
}

/// Read the first integer property `id` into `*out`.
/// Returns MQTT_OK, MQTT_ERR_NOT_FOUND (absent; `*out` untouched),
/// MQTT_ERR_INVALID_ARGUMENT (NULL) or MQTT_ERR_INVALID_PROPERTY (unknown id
/// or not an integer property).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_properties_get_int(
    p: *const mqtt_properties,
    id: c_int,
    out: *mut u32,
) -> c_int {
    // SAFETY: per this function's contract.
    unsafe { mqtt_properties_get_int_at(p, id, 0, out) }
}

/// Read the string property `id`: `*s` points to its bytes (UTF-8, NOT
/// NUL-terminated: use `*len`), valid as long as the list (a callback's: during
/// the callback). `len` may be NULL. Returns MQTT_OK, MQTT_ERR_NOT_FOUND,
/// MQTT_ERR_INVALID_ARGUMENT (NULL `p` or `s`) or MQTT_ERR_INVALID_PROPERTY
/// (unknown id or not a string property).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_properties_get_string(
    p: *const mqtt_properties,
    id: c_int,
    s: *mut *const c_char,
    len: *mut usize,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        let result = (|| {
            // SAFETY: per this function's contract.
            let props = unsafe { list(p) }?;
            let id = id_arg(id, &[PropertyType::String])?;
            if s.is_null() {
                return Err(Error::InvalidArgument);
            }
            let value = props.str_of(id).ok_or(Error::NotFound)?;
            // SAFETY: `s` is non-NULL, `len` NULL or writable, per the contract.
            unsafe {
                *s = value.as_ptr().cast();
                if let Some(len) = len.as_mut() {
                    *len = value.len();
                }
            }
            Ok(())
        })();
        status(result)
    })
}

/// Read the binary property `id`: `*data` points to its `*len` bytes, valid as
/// long as the list (a callback's: during the callback). Returns MQTT_OK,
/// MQTT_ERR_NOT_FOUND, MQTT_ERR_INVALID_ARGUMENT (NULL `p`, `data` or `len`) or
/// MQTT_ERR_INVALID_PROPERTY (unknown id or not a binary property).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_properties_get_binary(
    p: *const mqtt_properties,
    id: c_int,
    data: *mut *const u8,
    len: *mut usize,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        let result = (|| {
            // SAFETY: per this function's contract.
            let props = unsafe { list(p) }?;
            let id = id_arg(id, &[PropertyType::Binary])?;
            if data.is_null() || len.is_null() {
                return Err(Error::InvalidArgument);
            }
            let value = props.bin_of(id).ok_or(Error::NotFound)?;
            // SAFETY: both non-NULL, per the contract.
            unsafe {
                *data = value.as_ptr();
                *len = value.len();
            }
            Ok(())
        })();
        status(result)
    })
}

/// How many times property `id` occurs (repeatable ones: user property,
/// subscription identifier on a received PUBLISH; else 0 or 1). 0 for NULL or
/// an unknown id.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_properties_count(p: *const mqtt_properties, id: c_int) -> usize {
    ffi_guard!(0, {
        // SAFETY: per this function's contract.
        let Ok(props) = (unsafe { list(p) }) else {
            return 0;
        };
        u8::try_from(id).map_or(0, |id| props.count(id))
    })
}

/// Read occurrence `index` (from 0) of the integer property `id` into `*out`:
/// e.g. every subscription identifier of a received message. Returns MQTT_OK,
/// MQTT_ERR_NOT_FOUND (fewer occurrences; `*out` untouched),
/// MQTT_ERR_INVALID_ARGUMENT (NULL) or MQTT_ERR_INVALID_PROPERTY (unknown id or
/// not an integer property).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_properties_get_int_at(
    p: *const mqtt_properties,
    id: c_int,
    index: usize,
    out: *mut u32,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        let result = (|| {
            // SAFETY: per this function's contract.
            let props = unsafe { list(p) }?;
            let id = id_arg(id, INTEGER_TYPES)?;
            if out.is_null() {
                return Err(Error::InvalidArgument);
            }
            let value = props.int_at(id, index).ok_or(Error::NotFound)?;
            // SAFETY: non-NULL, per the contract.
            unsafe { *out = value };
            Ok(())
        })();
        status(result)
    })
}

/// Read user property `index` (from 0, in wire order): key and value point to
/// UTF-8 bytes (NOT NUL-terminated: use the lengths), valid as long as the
/// list. Any of the four out-pointers may be NULL. Returns MQTT_OK,
/// MQTT_ERR_NOT_FOUND or MQTT_ERR_INVALID_ARGUMENT (NULL `p`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_properties_get_user_at(
    p: *const mqtt_properties,
    index: usize,
    key: *mut *const c_char,
    key_len: *mut usize,
    value: *mut *const c_char,
    value_len: *mut usize,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        let result = (|| {
            // SAFETY: per this function's contract.
            let props = unsafe { list(p) }?;
            let (k, v) = props.user_at(index).ok_or(Error::NotFound)?;
            // SAFETY: each out-pointer is NULL or writable, per the contract.
            unsafe {
                if let Some(key) = key.as_mut() {
                    *key = k.as_ptr().cast();
                }
                if let Some(key_len) = key_len.as_mut() {
                    *key_len = k.len();
                }
                if let Some(value) = value.as_mut() {
                    *value = v.as_ptr().cast();
                }
                if let Some(value_len) = value_len.as_mut() {
                    *value_len = v.len();
                }
            }
            Ok(())
        })();
        status(result)
    })
}

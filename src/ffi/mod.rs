//! The C boundary: argument checks, error codes, panic containment, opaque
//! handles and callback trampolines. No protocol logic lives here.
#![allow(non_camel_case_types)]
// Each function's documentation (which becomes mqtt.h) states what its pointer
// arguments must be; a Rust-style "# Safety" section would only repeat it.
#![allow(clippy::missing_safety_doc)]

mod types;

use std::ffi::{CStr, c_char, c_int, c_void};
use std::mem::ManuallyDrop;
use std::sync::Arc;
use std::time::Duration;

use crate::Error;
use crate::client::Client;
use crate::dispatch::{Command, Data, Handler, Raw, RawTarget, Test};
use crate::protocol::codec::QoS;
use crate::reactor::Core;
pub use types::*;

/// Run an exported function's body; a panic becomes `$on_panic` instead of
/// unwinding into C (which would be undefined behaviour).
macro_rules! ffi_guard {
    ($on_panic:expr, $body:block) => {
        match ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| $body)) {
            Ok(value) => value,
            Err(_) => $on_panic,
        }
    };
}

mod properties;
mod reactor;
mod servers;
mod store;
mod v5;
pub use properties::*;
pub use reactor::*;
pub use servers::*;
pub use store::*;
pub use v5::*;

#[cfg(feature = "tls")]
mod tls;
#[cfg(feature = "tls")]
pub use tls::*;

fn code(result: crate::Result<()>) -> c_int {
    match result {
        Ok(()) => MQTT_OK,
        Err(e) => e.code(),
    }
}

fn mid_or_code(result: crate::Result<u16>) -> c_int {
    match result {
        Ok(mid) => c_int::from(mid),
        Err(e) => e.code(),
    }
}

/// # Safety
/// `ptr` is NULL or a valid NUL-terminated string that outlives `'a`.
unsafe fn str_arg<'a>(ptr: *const c_char) -> crate::Result<&'a str> {
    if ptr.is_null() {
        return Err(Error::InvalidArgument);
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract (documented in mqtt.h).
    let c = unsafe { CStr::from_ptr(ptr) };
    c.to_str().map_err(|_| Error::InvalidUtf8)
}

/// `str_arg` for an optional string: NULL is `None`.
///
/// # Safety
/// As for `str_arg` when not NULL.
pub(crate) unsafe fn opt_str_arg<'a>(ptr: *const c_char) -> crate::Result<Option<&'a str>> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: per this function's contract.
    unsafe { str_arg(ptr) }.map(Some)
}

/// # Safety
/// `ptr` is NULL only when `len` is 0, else valid for `len` bytes.
unsafe fn bytes_arg<'a>(ptr: *const c_void, len: usize) -> crate::Result<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() || len > isize::MAX as usize {
        return Err(Error::InvalidArgument);
    }
    // SAFETY: the caller promises `len` readable bytes at `ptr`.
    Ok(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}

/// # Safety
/// `topics` is NULL or points to `count` entries, each NULL or a valid
/// NUL-terminated string that outlives `'a`.
unsafe fn filters_arg<'a>(
    topics: *const *const c_char,
    count: usize,
) -> crate::Result<Vec<&'a str>> {
    if topics.is_null() || count == 0 || count > u16::MAX as usize {
        return Err(Error::InvalidArgument);
    }
    // SAFETY: the caller promises `count` entries.
    let entries = unsafe { std::slice::from_raw_parts(topics, count) };
    // SAFETY: each entry is a NUL-terminated string or NULL.
    entries
        .iter()
        .map(|&entry| unsafe { str_arg(entry) })
        .collect()
}

fn qos_arg(qos: c_int) -> crate::Result<QoS> {
    u8::try_from(qos)
        .ok()
        .and_then(QoS::from_u8)
        .ok_or(Error::InvalidQos)
}

/// # Safety
/// `client` is NULL or a handle from `mqtt_client_new` not yet freed.
unsafe fn client_arg(client: *mut mqtt_client) -> crate::Result<ClientRef> {
    if client.is_null() {
        return Err(Error::InvalidArgument);
    }
    // SAFETY: a live handle (the pointer of `Arc::into_raw`) per the caller's
    // contract; `ClientRef` never drops the reference the handle owns.
    Ok(ClientRef(ManuallyDrop::new(Client {
        core: unsafe { Arc::from_raw(client.cast::<Core>()) },
    })))
}

/// The client of a live handle, borrowed for one call: not `Clone` (a copy
/// would not own a reference); `(*c).clone()` is a real, counted clone.
struct ClientRef(ManuallyDrop<Client>);

impl std::ops::Deref for ClientRef {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.0
    }
}

/// The handle of a new client: it owns one reference to the core.
fn into_handle(client: Client) -> *mut mqtt_client {
    Arc::into_raw(client.core).cast_mut().cast::<mqtt_client>()
}

/// A pointer that is only handed back to C, never dereferenced by us: the
/// client handle (callbacks stop before it is freed) or the user's data (its
/// thread safety is the caller's promise, as documented in mqtt.h).
struct PassBack<T>(*mut T);

impl<T> Clone for PassBack<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for PassBack<T> {}

impl<T> PassBack<T> {
    // Closures must capture the wrapper, not its raw field.
    fn get(self) -> *mut T {
        self.0
    }
}
// SAFETY: never dereferenced on our side; see the type's documentation.
unsafe impl<T> Send for PassBack<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for PassBack<T> {}

/// Present `data` to C for the duration of `f`.
fn with_c_data<R>(data: &Data<'_>, f: impl FnOnce(&mqtt_data) -> R) -> R {
    // SAFETY: the lists borrow `data`, which outlives `f`; C sees them only
    // during the callback, as the header says.
    let message_props = data
        .message
        .and_then(|m| m.properties)
        .map(|p| unsafe { mqtt_properties::borrowing(p) });
    // SAFETY: as above.
    let packet_props = data
        .properties
        .map(|p| unsafe { mqtt_properties::borrowing(p) });
    let message = data.message.map(|m| mqtt_message {
        topic: m.topic_c.as_ptr(),
        payload: if m.payload.is_empty() {
            std::ptr::null()
        } else {
            m.payload.as_ptr()
        },
        payload_len: m.payload.len(),
        qos: m.qos as u8,
        retain: m.retain,
        dup: m.dup,
        mid: m.mid,
        properties: message_props
            .as_ref()
            .map_or(std::ptr::null(), |p| p as *const mqtt_properties),
    });
    let c = mqtt_data {
        command: command_to_c(data.command),
        message: message
            .as_ref()
            .map_or(std::ptr::null(), |m| m as *const mqtt_message),
        mid: data.mid,
        return_code: data.return_code,
        session_present: data.session_present,
        granted_qos: if data.granted_qos.is_empty() {
            std::ptr::null()
        } else {
            data.granted_qos.as_ptr()
        },
        granted_qos_len: data.granted_qos.len(),
        error: data.error.map_or(MQTT_OK, Error::code),
        reason_code: data.reason_code,
        reason_codes: if data.reason_codes.is_empty() {
            std::ptr::null()
        } else {
            data.reason_codes.as_ptr()
        },
        reason_codes_len: data.reason_codes.len(),
        properties: packet_props
            .as_ref()
            .map_or(std::ptr::null(), |p| p as *const mqtt_properties),
        server_index: data
            .server_index
            .and_then(|i| c_int::try_from(i).ok())
            .unwrap_or(-1),
    };
    f(&c)
}

/// C callbacks and conditions are held inline by the dispatcher (no
/// allocation): the words are the C function pointer and its user data, and
/// the handle a callback gets is the core's address (`into_handle`).
impl RawTarget for Arc<Core> {
    unsafe fn run_raw(&self, data: &Data<'_>, words: [*mut (); 2]) {
        // SAFETY: `c_handler` stored a `CallbackFn` in the first word.
        let function = unsafe { std::mem::transmute::<*mut (), CallbackFn>(words[0]) };
        let handle = Arc::as_ptr(self).cast_mut().cast::<mqtt_client>();
        with_c_data(data, |c| {
            // SAFETY: a C function pointer given to us for this purpose; `c` lives
            // for the call, as the header promises.
            unsafe { function(handle, c, words[1].cast::<c_void>()) }
        })
    }

    unsafe fn test_raw(data: &Data<'_>, words: [*mut (); 2]) -> bool {
        // SAFETY: `c_test` stored a `ConditionFn` in the first word.
        let function = unsafe { std::mem::transmute::<*mut (), ConditionFn>(words[0]) };
        // SAFETY: as for callbacks.
        with_c_data(data, |c| unsafe { function(c, words[1].cast::<c_void>()) })
    }
}

/// A C callback held inline by the dispatcher (see `RawTarget`).
pub(crate) fn c_handler(function: CallbackFn, user_data: *mut c_void) -> Handler<Arc<Core>> {
    // SAFETY: `run_raw` gets back the words it expects; running it from any
    // thread is the promise mqtt.h asks of callbacks and their user data.
    Handler::Raw(unsafe { Raw::new([function as *mut (), user_data.cast()]) })
}

/// A C condition held inline, as `c_handler`.
fn c_test(function: ConditionFn, user_data: *mut c_void) -> Test {
    // SAFETY: as in `c_handler`, for `test_raw`.
    Test::Raw(unsafe { Raw::new([function as *mut (), user_data.cast()]) })
}

/// Create a client.
///
/// `client_id`: NUL-terminated UTF-8, at most 65535 bytes; may be "" only with
/// `clean_session` (the broker then assigns one). Copied.
/// `clean_session`: when false, the broker keeps subscriptions and queued
/// messages across connections.
///
/// Returns a new handle, or NULL when an argument is invalid or resources are
/// exhausted. Free it with `mqtt_client_free`. Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_new(
    client_id: *const c_char,
    clean_session: bool,
) -> *mut mqtt_client {
    ffi_guard!(std::ptr::null_mut(), {
        // SAFETY: per this function's contract.
        let Ok(id) = (unsafe { str_arg(client_id) }) else {
            return std::ptr::null_mut();
        };
        match Client::new(id, clean_session) {
            Ok(client) => into_handle(client),
            Err(_) => std::ptr::null_mut(),
        }
    })
}

/// Stop the loop thread (if any), close the connection (writing what is still
/// queued, e.g. a DISCONNECT, without waiting), and free the client. A client
/// added to a reactor is removed from it (the reactor's thread closes the
/// connection at its next turn). NULL is a no-op.
///
/// Threading: callable from any thread, also while the loop (or the reactor)
/// runs; from another thread it waits for this client's callback in progress,
/// if any. From inside one of this client's callbacks the handle is released
/// at once and the client's removal takes effect when the callback returns
/// (its own loop thread then ends). No callback of the client runs after this
/// call returned. The handle must not be used after this call, by any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_free(client: *mut mqtt_client) {
    ffi_guard!((), {
        if client.is_null() {
            return;
        }
        // SAFETY: a handle from mqtt_client_new, freed only once (caller's contract).
        let owned = Client {
            core: unsafe { Arc::from_raw(client.cast::<Core>()) },
        };
        owned.close();
    })
}

/// Register a callback for `command` (one of `mqtt_command`), the seed's `on`.
///
/// With a `condition`, the callback is specific: for each incoming packet, the
/// specific callback with the highest `priority` whose condition returns true
/// runs (ties: the earliest registered), and only that one. Without a
/// condition it is the generic callback of that command, which runs only when
/// no condition returned true; registering another generic replaces it.
/// `user_data` is passed to both `function` and `condition`.
///
/// Returns MQTT_OK, or MQTT_ERR_INVALID_ARGUMENT (NULL client or function, or
/// an unknown command). Thread-safe; may be called from inside a callback
/// (takes effect from the next packet).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_on(
    client: *mut mqtt_client,
    command: c_int,
    function: mqtt_callback,
    condition: mqtt_condition,
    priority: c_int,
    user_data: *mut c_void,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let Ok(c) = (unsafe { client_arg(client) }) else {
            return MQTT_ERR_INVALID_ARGUMENT;
        };
        let (Some(function), Some(command)) = (function, Command::from_i32(command)) else {
            return MQTT_ERR_INVALID_ARGUMENT;
        };
        let condition = condition.map(|f| c_test(f, user_data));
        c.on_handler(command, c_handler(function, user_data), condition, priority);
        MQTT_OK
    })
}

/// Connect to a broker: resolve `host`, open TCP, send CONNECT and wait for
/// CONNACK (at most the connect timeout, default 10 s).
///
/// `host`: name or IP literal (copied). `keepalive`: seconds, 0 disables.
/// `port`: usually 1883. With a server list (mqtt_client_set_servers) `host`
/// and `port` are ignored (NULL and 0 are accepted) and the list is walked
/// instead.
///
/// Returns MQTT_OK once the broker accepted, or: MQTT_ERR_INVALID_ARGUMENT,
/// MQTT_ERR_INVALID_UTF8, MQTT_ERR_ALREADY_CONNECTED (connected, or an
/// attempt is under way), MQTT_ERR_DNS, MQTT_ERR_CONNECT_FAILED,
/// MQTT_ERR_TIMEOUT, MQTT_ERR_CONNECTION_LOST, MQTT_ERR_IO,
/// MQTT_ERR_MALFORMED_PACKET, MQTT_ERR_PROTOCOL_VIOLATION,
/// MQTT_ERR_PACKET_TOO_LARGE (the broker's answer), MQTT_ERR_REFUSED_* (one
/// per CONNACK return code 1..5), MQTT_ERR_TLS_* (with TLS set),
/// MQTT_ERR_PROXY (with a proxy set: it refused or answered garbage),
/// MQTT_ERR_NOT_CONNECTED (another thread's `mqtt_client_disconnect` gave the
/// attempt up), MQTT_ERR_IN_CALLBACK. After MQTT_ERR_TIMEOUT the attempt is
/// over: it never connects later.
///
/// Threading: blocks the caller. With a loop thread running, that thread does
/// the work and runs the CONNACK callback; otherwise the caller's thread does.
/// Not allowed from inside a callback (use automatic reconnection instead).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_connect(
    client: *mut mqtt_client,
    host: *const c_char,
    keepalive: u16,
    port: u16,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let result = unsafe { client_arg(client) }.and_then(|c| {
            // NULL: none (accepted with a server list, see mqtt_client_set_servers).
            // SAFETY: per this function's contract.
            let host = if host.is_null() {
                ""
            } else {
                unsafe { str_arg(host) }?
            };
            // Callbacks run inside this call and may free the handle: keep our own.
            let c = c.clone();
            c.connect(host, keepalive, port).map(|_| ())
        });
        code(result)
    })
}

/// Connect again with the host, port and options of the last
/// `mqtt_client_connect`, after an accidental disconnection. The session's
/// unacknowledged QoS 1/2 messages are resent.
///
/// With a server list (mqtt_client_set_servers) it walks the list, from the
/// entry that answered last.
///
/// Returns what `mqtt_client_connect` returns; MQTT_ERR_NOT_CONNECTED when
/// `mqtt_client_connect` was never called and no server list is set. Same
/// threading as connect.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_reconnect(client: *mut mqtt_client) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        // Callbacks run inside this call and may free the handle: keep our own.
        code(unsafe { client_arg(client) }.and_then(|c| c.clone().reconnect().map(|_| ())))
    })
}

/// Subscribe to `count` topic filters (each with its maximum QoS) in one
/// SUBSCRIBE. Strings are copied.
///
/// Returns the SUBSCRIBE's message id (1..65535; SUBACK data carries it and one
/// granted QoS per filter), or MQTT_ERR_INVALID_ARGUMENT (NULL, count 0),
/// MQTT_ERR_INVALID_UTF8, MQTT_ERR_INVALID_TOPIC (invalid filter),
/// MQTT_ERR_INVALID_QOS, MQTT_ERR_QUEUE_FULL, MQTT_ERR_PAYLOAD_TOO_LARGE (the
/// SUBSCRIBE would exceed the maximum packet size). While disconnected the
/// request is kept and sent on the next connection. Thread-safe, also from
/// callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_subscribe(
    client: *mut mqtt_client,
    topics: *const mqtt_subscription,
    count: usize,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let result = unsafe { client_arg(client) }.and_then(|c| {
            if topics.is_null() || count == 0 || count > u16::MAX as usize {
                return Err(Error::InvalidArgument);
            }
            // SAFETY: the caller promises `count` entries.
            let entries = unsafe { std::slice::from_raw_parts(topics, count) };
            let mut filters = Vec::with_capacity(count);
            for entry in entries {
                // SAFETY: each topic is a NUL-terminated string or NULL.
                let topic = unsafe { str_arg(entry.topic) }?;
                filters.push((topic, qos_arg(entry.qos)?));
            }
            c.subscribe(&filters)
        });
        mid_or_code(result)
    })
}

/// Unsubscribe from `count` topic filters in one UNSUBSCRIBE.
///
/// Returns the UNSUBSCRIBE's message id (UNSUBACK data carries it), or
/// MQTT_ERR_INVALID_ARGUMENT, MQTT_ERR_INVALID_UTF8, MQTT_ERR_INVALID_TOPIC,
/// MQTT_ERR_QUEUE_FULL, MQTT_ERR_PAYLOAD_TOO_LARGE. Thread-safe, also from
/// callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_unsubscribe(
    client: *mut mqtt_client,
    topics: *const *const c_char,
    count: usize,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let result = unsafe { client_arg(client) }.and_then(|c| {
            // SAFETY: per this function's contract.
            c.unsubscribe(&unsafe { filters_arg(topics, count) }?)
        });
        mid_or_code(result)
    })
}

/// Publish `payload_len` bytes at `payload` on `topic` (no wildcards). Both
/// are copied; `payload` may be NULL when `payload_len` is 0.
///
/// QoS 1/2 messages are kept until acknowledged, across connection losses
/// (published again, DUP=1, if the broker comes back without the session; a
/// QoS 2 message it had already acknowledged with PUBREC then gets its PUBCOMP
/// callback with MQTT_ERR_SESSION_LOST instead); when the in-flight window is
/// full or the client is offline they wait in a bounded queue. QoS 0 while offline is refused with MQTT_ERR_NOT_CONNECTED
/// unless `mqtt_client_set_offline_qos0(client, true)`. A QoS 0 message
/// while connected goes to the connection's buffer, bounded by
/// mqtt_client_set_unsent_limit (a burst beyond it gets MQTT_ERR_QUEUE_FULL,
/// or waits if that option says so).
///
/// Returns the message id (1..65535, QoS 0 included; PUBACK/PUBCOMP data
/// carries it), or MQTT_ERR_INVALID_ARGUMENT, MQTT_ERR_INVALID_UTF8,
/// MQTT_ERR_INVALID_TOPIC, MQTT_ERR_INVALID_QOS, MQTT_ERR_PAYLOAD_TOO_LARGE,
/// MQTT_ERR_QUEUE_FULL, MQTT_ERR_NOT_CONNECTED. On error nothing changed.
/// Thread-safe, also from callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_publish(
    client: *mut mqtt_client,
    topic: *const c_char,
    payload: *const c_void,
    payload_len: usize,
    qos: c_int,
    retain: bool,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let result = unsafe { client_arg(client) }.and_then(|c| {
            // SAFETY: per this function's contract.
            let topic = unsafe { str_arg(topic) }?;
            // SAFETY: per this function's contract.
            let payload = unsafe { bytes_arg(payload, payload_len) }?;
            c.publish(topic, payload, qos_arg(qos)?, retain)
        });
        mid_or_code(result)
    })
}

/// Send DISCONNECT and close the connection once it is written; the
/// DISCONNECT callback then runs with error MQTT_OK. Stops automatic
/// reconnection. Unacknowledged QoS 1/2 messages stay in the session.
/// During a connection attempt (connect_async, an automatic reconnection, a
/// blocking connect on another thread) the attempt is given up instead: the
/// DISCONNECT callback runs with MQTT_OK (a waiting connect returns
/// MQTT_ERR_NOT_CONNECTED).
///
/// Returns MQTT_OK, MQTT_ERR_INVALID_ARGUMENT or MQTT_ERR_NOT_CONNECTED
/// (neither connected nor connecting; a pending automatic reconnection is
/// still cancelled).
/// Thread-safe, also from callbacks. Without a loop thread the DISCONNECT is
/// written before this returns; for a client added to a reactor, the reactor
/// writes it (its thread, or the next `mqtt_reactor_run`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_disconnect(client: *mut mqtt_client) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        // The DISCONNECT callback may run inside this call and free the handle.
        code(unsafe { client_arg(client) }.and_then(|c| c.clone().disconnect()))
    })
}

/// Start a thread that runs the client (reads, writes, timers, callbacks)
/// until `mqtt_client_loop_stop` or `mqtt_client_free`.
///
/// `on_message` (nullable) receives every application message once, whatever
/// its QoS: it is registered as the generic PUBREL callback and as a specific
/// PUBLISH callback at priority -1 with the condition "message != NULL". A
/// later loop_start with another `on_message` replaces it (with its
/// `user_data`); NULL keeps the current one.
///
/// Returns MQTT_OK, MQTT_ERR_INVALID_ARGUMENT, MQTT_ERR_LOOP_RUNNING (the loop
/// runs already, or the client was added to a reactor), MQTT_ERR_IN_CALLBACK
/// or MQTT_ERR_NO_MEMORY (thread creation failed).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_loop_start(
    client: *mut mqtt_client,
    on_message: mqtt_callback,
    user_data: *mut c_void,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let result = unsafe { client_arg(client) }
            .and_then(|c| c.loop_start_with(on_message.map(|f| c_handler(f, user_data))));
        code(result)
    })
}

/// Stop the loop thread and wait for it to end. The connection stays open;
/// `mqtt_client_loop` may drive it afterwards.
///
/// Returns MQTT_OK, MQTT_ERR_INVALID_ARGUMENT, MQTT_ERR_LOOP_NOT_RUNNING,
/// MQTT_ERR_LOOP_RUNNING (the client was added to a reactor: its reactor runs
/// it) or MQTT_ERR_IN_CALLBACK (the loop thread cannot wait for itself).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_loop_stop(client: *mut mqtt_client) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        code(unsafe { client_arg(client) }.and_then(|c| c.loop_stop()))
    })
}

/// Run one turn of the client in the calling thread: wait up to `timeout_ms`
/// (negative: until the next event or protocol deadline) for the socket, then
/// read, run callbacks, handle keepalive and reconnection timers, and write.
///
/// Returns MQTT_OK; the error that ended an established connection during
/// this turn (the DISCONNECT callback got it too; failed connection attempts
/// are reported to the DISCONNECT callback only); MQTT_ERR_INVALID_ARGUMENT;
/// MQTT_ERR_LOOP_RUNNING (a loop thread or another thread is running the
/// client, or it was added to a reactor); MQTT_ERR_IN_CALLBACK.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_loop(client: *mut mqtt_client, timeout_ms: c_int) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let result = unsafe { client_arg(client) }.and_then(|c| {
            // Keep the client alive even if a callback frees the handle.
            let c = c.clone();
            let timeout = u64::try_from(timeout_ms)
                .map(Duration::from_millis)
                .unwrap_or(Duration::MAX);
            c.run_once(timeout)
        });
        code(result)
    })
}

/// A static, human-readable description of `code` (any value; unknown codes
/// get "unknown error"). Never NULL; do not free. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn mqtt_strerror(code: c_int) -> *const c_char {
    if code == MQTT_OK {
        return c"success".as_ptr();
    }
    Error::from_code(code).map_or(c"unknown error".as_ptr(), |e| e.message_c().as_ptr())
}

/// Whether `topic` (a topic name) matches `filter` (a topic filter with `+`
/// and `#` wildcards), per MQTT 3.1.1 section 4.7, including the rule that a
/// leading wildcard does not match topics starting with `$`. A shared
/// subscription's filter `$share/<name>/<filter>` matches what `<filter>`
/// matches (so a condition can test a message against the subscription it
/// came from). False when either is NULL, not UTF-8, or invalid (a shared
/// filter with an empty or wildcard share name, or nothing after it).
/// Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_topic_matches(filter: *const c_char, topic: *const c_char) -> bool {
    ffi_guard!(false, {
        // SAFETY: per this function's contract.
        match unsafe { (str_arg(filter), str_arg(topic)) } {
            (Ok(f), Ok(t)) => crate::protocol::topic::matches(f, t),
            _ => false,
        }
    })
}

const VERSION: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => panic!("version string"),
    };

/// The library's version, "MAJOR.MINOR.PATCH" (compare with MQTT_VERSION_STRING
/// to detect a header/library mismatch). Static; do not free. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn mqtt_version() -> *const c_char {
    VERSION.as_ptr()
}

/// Set the user name and (nullable) password sent in CONNECT, from the next
/// connection attempt on (also automatic reconnections: a callback may refresh
/// a short-lived token). `username` NULL clears both. Copied.
///
/// Returns MQTT_OK, MQTT_ERR_INVALID_ARGUMENT (NULL client, password without
/// user name, over 65535 bytes) or MQTT_ERR_INVALID_UTF8. Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_set_credentials(
    client: *mut mqtt_client,
    username: *const c_char,
    password: *const c_char,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let result = unsafe { client_arg(client) }.and_then(|c| {
            // SAFETY: per this function's contract.
            let username = unsafe { opt_str_arg(username) }?;
            let password = if password.is_null() {
                None
            } else {
                // SAFETY: per this function's contract; passwords are binary in MQTT.
                Some(unsafe { CStr::from_ptr(password) }.to_bytes())
            };
            c.set_credentials(username, password)
        });
        code(result)
    })
}

/// Set the last will, published by the broker if the connection ends without
/// DISCONNECT. `topic` NULL clears it. Copied; applies from the next
/// connection attempt.
///
/// Returns MQTT_OK, MQTT_ERR_INVALID_ARGUMENT, MQTT_ERR_INVALID_UTF8,
/// MQTT_ERR_INVALID_TOPIC, MQTT_ERR_INVALID_QOS, MQTT_ERR_PAYLOAD_TOO_LARGE
/// (over 65535 bytes). Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_set_will(
    client: *mut mqtt_client,
    topic: *const c_char,
    payload: *const c_void,
    payload_len: usize,
    qos: c_int,
    retain: bool,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let result = unsafe { client_arg(client) }.and_then(|c| {
            if topic.is_null() {
                return c.set_will(None);
            }
            // SAFETY: per this function's contract.
            let topic = unsafe { str_arg(topic) }?;
            // SAFETY: per this function's contract.
            let payload = unsafe { bytes_arg(payload, payload_len) }?;
            c.set_will(Some((topic, payload, qos_arg(qos)?, retain)))
        });
        code(result)
    })
}

/// Bound each connection attempt (TCP connect, the proxy, TLS and WebSocket
/// handshakes that apply, CONNACK) to `timeout_ms` (default 10000). Returns
/// MQTT_OK or MQTT_ERR_INVALID_ARGUMENT (0). Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_set_connect_timeout(
    client: *mut mqtt_client,
    timeout_ms: u32,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let result = unsafe { client_arg(client) }
            .and_then(|c| c.set_connect_timeout(Duration::from_millis(timeout_ms.into())));
        code(result)
    })
}

/// Automatic reconnection after a lost connection (on by default, 500 ms to
/// 30000 ms). The n-th retry waits a random time in [max(c/2, min_ms), c]
/// with c = min(min_ms * 2^(n+1), max_ms): doubling, never outside
/// [min_ms, max_ms], jittered even on the first retry; the sequence restarts
/// after a successful CONNACK. Refusals that retrying cannot
/// fix (bad credentials, not authorized, identifier rejected, protocol
/// version) stop it. `min_ms` 0 turns it off.
///
/// Each retry to a host name resolves it again, on a short-lived thread, so a
/// broker whose address changed is found; if that resolution fails or outlasts
/// the connect timeout, the addresses that worked before are tried. An IP
/// literal is never resolved (no thread).
///
/// Returns MQTT_OK or MQTT_ERR_INVALID_ARGUMENT (max_ms < min_ms). Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_set_reconnect(
    client: *mut mqtt_client,
    min_ms: u32,
    max_ms: u32,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let result = unsafe { client_arg(client) }.and_then(|c| {
            let delays = (min_ms > 0).then(|| {
                (
                    Duration::from_millis(min_ms.into()),
                    Duration::from_millis(max_ms.into()),
                )
            });
            c.set_reconnect(delays)
        });
        code(result)
    })
}

/// Bound the bytes waiting in the connection's buffer for the socket
/// (default 256 KiB): a QoS 0 publish while
/// connected that would go beyond `max_bytes` waits up to `wait_ms` for the
/// socket to take them (default 0: it does not wait), then returns
/// MQTT_ERR_QUEUE_FULL, and the message was not accepted. QoS 1/2 messages
/// are bounded by the in-flight window and the queue instead. A publish
/// never waits inside a callback; without a loop thread, a waiting publish
/// runs the client itself (writes, reads, and so callbacks, on its thread).
///
/// A `max_bytes` above 4 GiB - 1 is kept as 4 GiB - 1.
///
/// Returns MQTT_OK or MQTT_ERR_INVALID_ARGUMENT (NULL or `max_bytes` 0).
/// Thread-safe; applies from the next publish.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_set_unsent_limit(
    client: *mut mqtt_client,
    max_bytes: usize,
    wait_ms: u32,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        code(
            unsafe { client_arg(client) }
                .and_then(|c| c.set_unsent_limit(max_bytes, Duration::from_millis(wait_ms.into()))),
        )
    })
}

/// Bound the outgoing queue: messages waiting while offline or while the
/// in-flight window is full (defaults: 10000 messages, 64 MiB of topic and
/// payload). A publish beyond either limit returns MQTT_ERR_QUEUE_FULL. A
/// limit above 2^32 - 1 is kept as 2^32 - 1.
///
/// Returns MQTT_OK or MQTT_ERR_INVALID_ARGUMENT (a zero limit). Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_set_queue_limits(
    client: *mut mqtt_client,
    max_messages: usize,
    max_bytes: usize,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let result =
            unsafe { client_arg(client) }.and_then(|c| c.set_queue_limits(max_messages, max_bytes));
        code(result)
    })
}

/// The number of outgoing QoS 1/2 messages awaiting acknowledgement at once
/// (default 20, 1..65535). Keep it at or below the broker's limit for this
/// client (mosquitto: max_inflight_messages, default 20): beyond it mosquitto
/// 2.0 may acknowledge QoS 1 messages it then drops, and MQTT 3.1.1 gives the
/// client no way to learn that limit. Returns MQTT_OK or MQTT_ERR_INVALID_ARGUMENT.
/// Thread-safe; takes effect at once (a raised window lets queued messages go
/// out, oldest first).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_set_max_inflight(
    client: *mut mqtt_client,
    max_inflight: u32,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let result =
            unsafe { client_arg(client) }.and_then(|c| c.set_max_inflight(max_inflight as usize));
        code(result)
    })
}

/// The number of incoming QoS 2 messages held at once between their PUBLISH
/// and PUBREL (default 1000). A broker starting one more closes the connection
/// with MQTT_ERR_TOO_MANY_INCOMING. Packet ids being 16-bit, no more than 65535
/// can be held at once: a larger `max_held` means 65535. Returns MQTT_OK or
/// MQTT_ERR_INVALID_ARGUMENT (0).
/// Thread-safe; takes effect at once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_set_max_incoming_qos2(
    client: *mut mqtt_client,
    max_held: u32,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let result =
            unsafe { client_arg(client) }.and_then(|c| c.set_max_incoming_qos2(max_held as usize));
        code(result)
    })
}

/// The largest packet accepted from the broker, and the largest PUBLISH sent
/// (default 4 MiB). A larger incoming packet closes the connection with
/// MQTT_ERR_PACKET_TOO_LARGE before any buffer grows to its size.
/// Returns MQTT_OK or MQTT_ERR_INVALID_ARGUMENT (below 16 or above 268435460).
/// Thread-safe; takes effect at once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_set_max_packet_size(
    client: *mut mqtt_client,
    bytes: usize,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        code(unsafe { client_arg(client) }.and_then(|c| c.set_max_packet_size(bytes)))
    })
}

/// Queue QoS 0 messages published while offline (`true`) instead of refusing
/// them with MQTT_ERR_NOT_CONNECTED (`false`, the default).
/// Returns MQTT_OK or MQTT_ERR_INVALID_ARGUMENT. Thread-safe; applies to the
/// publishes that follow.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_set_offline_qos0(
    client: *mut mqtt_client,
    queue: bool,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        code(unsafe { client_arg(client) }.map(|c| c.set_queue_qos0_offline(queue)))
    })
}

/// After a reconnection where the broker kept no session, subscribe again to
/// every filter subscribed before (`true`, the default).
/// Returns MQTT_OK or MQTT_ERR_INVALID_ARGUMENT. Thread-safe; applies from the
/// next reconnection.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_set_resubscribe(
    client: *mut mqtt_client,
    resubscribe: bool,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        code(unsafe { client_arg(client) }.map(|c| c.set_resubscribe(resubscribe)))
    })
}

/// Whether the client is connected (CONNACK accepted, not yet closed).
/// False for NULL. Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_is_connected(client: *mut mqtt_client) -> bool {
    ffi_guard!(false, {
        // SAFETY: per this function's contract.
        unsafe { client_arg(client) }.is_ok_and(|c| c.is_connected())
    })
}

/// Start connecting and return at once (the non-blocking `mqtt_client_connect`).
/// The TCP connect and the CONNECT/CONNACK exchange proceed as the client runs
/// (loop thread, `mqtt_client_loop`, or an external event loop). The outcome
/// arrives as a callback: CONNACK on success; DISCONNECT with the error on each
/// failure (MQTT_ERR_TIMEOUT, MQTT_ERR_CONNECT_FAILED, MQTT_ERR_DNS,
/// MQTT_ERR_REFUSED_*, MQTT_ERR_PROXY), after which automatic reconnection keeps trying unless
/// it is off or the refusal is final.
///
/// An IP literal `host` needs no name resolution; a host name is resolved on a
/// short-lived thread, so the caller's loop never blocks (pass an IP literal
/// for a strictly thread-free client). With a server list
/// (mqtt_client_set_servers) `host` and `port` are ignored (NULL and 0 are
/// accepted) and the list is walked instead.
///
/// `mqtt_client_disconnect` before the outcome gives the attempt up (the
/// DISCONNECT callback then reports MQTT_OK, and a resolution still running
/// is ignored when it ends).
///
/// Returns MQTT_OK (started), MQTT_ERR_INVALID_ARGUMENT, MQTT_ERR_INVALID_UTF8,
/// MQTT_ERR_ALREADY_CONNECTED (connected, or an attempt is under way) or
/// MQTT_ERR_NO_MEMORY. Thread-safe, also from callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_connect_async(
    client: *mut mqtt_client,
    host: *const c_char,
    keepalive: u16,
    port: u16,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let result = unsafe { client_arg(client) }.and_then(|c| {
            // NULL: none (accepted with a server list, see mqtt_client_set_servers).
            // SAFETY: per this function's contract.
            let host = if host.is_null() {
                ""
            } else {
                unsafe { str_arg(host) }?
            };
            c.connect_async(host, keepalive, port)
        });
        code(result)
    })
}

/// Route every connection the client makes through a proxy: `connect`,
/// `connect_uri`, their async twins and each automatic reconnection, from the
/// next connection attempt on (a connection already up is not affected).
///
/// `uri`: `http://[user:pass@]host:port` (HTTP CONNECT, with Basic
/// credentials if given) or `socks5://[user:pass@]host:port` (RFC 1928, the
/// broker's host name sent unresolved, RFC 1929 credentials if given); the
/// user info is percent-decoded and split at its first `:`. NULL removes the
/// proxy (connect directly). The string is copied.
///
/// A proxy that refuses (an HTTP status other than 2xx, a SOCKS5 reply other
/// than 0, wrong credentials) or answers garbage ends the connection attempt
/// with MQTT_ERR_PROXY: returned by a blocking connect, carried by the
/// DISCONNECT callback's data for an asynchronous or automatic one.
///
/// Returns MQTT_OK, or: MQTT_ERR_INVALID_ARGUMENT (NULL client; a malformed
/// URI: another scheme, no port, a port above 65535, an empty host, bad
/// percent-encoding, SOCKS5 credentials over 255 bytes; nothing is changed),
/// MQTT_ERR_INVALID_UTF8. Thread-safe, also from callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_set_proxy(
    client: *mut mqtt_client,
    uri: *const c_char,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let result = unsafe { client_arg(client) }.and_then(|c| {
            // SAFETY: per this function's contract.
            let uri = unsafe { opt_str_arg(uri) }?;
            c.set_proxy(uri)
        });
        code(result)
    })
}

/// Connect to the broker a URI names, like `mqtt_client_connect` (blocking
/// until CONNACK, at most the connect timeout).
///
/// `uri` (copied): `mqtt://host[:port]` (TCP, default port 1883),
/// `mqtts://host[:port]` (TLS, 8883), `ws://host[:port][/path]` (MQTT over
/// WebSocket, 80), `wss://host[:port][/path]` (WebSocket over TLS, 443). The
/// path of a ws/wss URI is the HTTP path of the upgrade (default `/mqtt`);
/// IPv6 literals go in brackets (`ws://[::1]:8080/mqtt`). TLS uses the
/// options of `mqtt_client_set_tls`, or the system's trusted roots when none
/// were set; `mqtt://` and `ws://` never use TLS. A proxy set with
/// `mqtt_client_set_proxy` is used. `keepalive`: seconds, 0 disables.
/// `mqtt_client_reconnect` and automatic reconnection go to the same URI.
///
/// Returns MQTT_OK once the broker accepted, or what `mqtt_client_connect`
/// returns, and: MQTT_ERR_INVALID_ARGUMENT for a malformed URI (another
/// scheme, a port above 65535, an unclosed bracket, an empty host, user info,
/// a path on mqtt/mqtts; nothing is changed or sent), MQTT_ERR_PROXY (the
/// proxy refused or answered garbage), MQTT_ERR_PROTOCOL_VIOLATION (the
/// WebSocket upgrade was answered with a status other than 101 or a wrong
/// Sec-WebSocket-Accept, or the server broke RFC 6455), MQTT_ERR_NOT_SUPPORTED
/// (mqtts/wss in a build without TLS), MQTT_ERR_TLS_CA (mqtts/wss without
/// `mqtt_client_set_tls` where the system has no trusted roots).
///
/// Threading: as `mqtt_client_connect` (blocks; not from a callback). The
/// system's roots (mqtts/wss without `mqtt_client_set_tls`) are loaded once
/// per client, in the first such call, on the caller's thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_connect_uri(
    client: *mut mqtt_client,
    uri: *const c_char,
    keepalive: u16,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let result = unsafe { client_arg(client) }.and_then(|c| {
            // SAFETY: per this function's contract.
            let uri = unsafe { str_arg(uri) }?;
            // Callbacks run inside this call and may free the handle: keep our own.
            let c = c.clone();
            c.connect_uri(uri, keepalive).map(|_| ())
        });
        code(result)
    })
}

/// Start connecting to the broker a URI names and return at once (the
/// non-blocking `mqtt_client_connect_uri`; URI forms as there). The outcome
/// arrives as a callback, as for `mqtt_client_connect_async`: CONNACK on
/// success, DISCONNECT with the error on each failure (also MQTT_ERR_PROXY
/// and MQTT_ERR_PROTOCOL_VIOLATION for the proxy and WebSocket failures of
/// `mqtt_client_connect_uri`).
///
/// Returns MQTT_OK (started), MQTT_ERR_INVALID_ARGUMENT (NULL, or a malformed
/// URI: nothing is changed or sent), MQTT_ERR_INVALID_UTF8,
/// MQTT_ERR_ALREADY_CONNECTED, MQTT_ERR_NOT_SUPPORTED (mqtts/wss without TLS
/// support), MQTT_ERR_TLS_CA (as for `mqtt_client_connect_uri`) or
/// MQTT_ERR_NO_MEMORY. Thread-safe, also from callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_connect_uri_async(
    client: *mut mqtt_client,
    uri: *const c_char,
    keepalive: u16,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let result = unsafe { client_arg(client) }.and_then(|c| {
            // SAFETY: per this function's contract.
            let uri = unsafe { str_arg(uri) }?;
            c.connect_uri_async(uri, keepalive)
        });
        code(result)
    })
}

/// For an external event loop: a file descriptor to watch for readability
/// (POLLIN / EPOLLIN). It becomes readable whenever the client has work — its
/// socket is readable or writable, or a call on any thread queued a packet or
/// a command since this function was first called — and stays the same for
/// the client's life (it is not the TCP socket; do not read, write or close
/// it). When it is readable, or when `mqtt_client_next_timeout_ms` has
/// passed, call `mqtt_client_loop(client, 0)`. For a client added to a
/// reactor, the reactor's descriptor (see `mqtt_reactor_socket`).
///
/// Returns the descriptor (>= 0), MQTT_ERR_INVALID_ARGUMENT or MQTT_ERR_IO (no
/// event loop could be created). Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_socket(client: *mut mqtt_client) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        match unsafe { client_arg(client) }.and_then(|c| c.event_fd()) {
            Ok(fd) => fd,
            Err(e) => e.code(),
        }
    })
}

/// For an external event loop: milliseconds until the client must run again
/// even if its descriptor stays quiet — the exact next protocol deadline
/// (keepalive ping, ping response, connect timeout, reconnection backoff),
/// rounded up; 0 when work is already waiting; -1 when nothing is due.
///
/// Returns that value, or MQTT_ERR_INVALID_ARGUMENT, or MQTT_ERR_LOOP_RUNNING
/// (another thread runs the client, or it was added to a reactor: ask
/// `mqtt_reactor_next_timeout_ms`). Call it after each `mqtt_client_loop`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_next_timeout_ms(client: *mut mqtt_client) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        match unsafe { client_arg(client) }.and_then(|c| c.next_timeout()) {
            Ok(None) => -1,
            Ok(Some(d)) => {
                let ms = d.as_nanos().div_ceil(1_000_000);
                c_int::try_from(ms).unwrap_or(c_int::MAX)
            }
            Err(e) => e.code(),
        }
    })
}

/// Whether queued bytes wait for the socket to become writable (informational:
/// the descriptor of `mqtt_client_socket` already reports writability).
/// False for NULL or while another thread runs the client.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_want_write(client: *mut mqtt_client) -> bool {
    ffi_guard!(false, {
        // SAFETY: per this function's contract.
        unsafe { client_arg(client) }
            .and_then(|c| c.wants_write())
            .unwrap_or(false)
    })
}

/// Send the client's diagnostic messages to `callback`, those of `level` (an
/// mqtt_log_level: MQTT_LOG_ERROR .. MQTT_LOG_DEBUG) and more severe. Logging is
/// off by default; a NULL `callback` (or `level` 0) turns it off again. When it
/// is off, or a message's level is filtered out, the message is not even
/// formatted (no allocation).
///
/// INFO: connecting to address:port, connected (session present), disconnected,
/// reconnecting in N ms. WARN: connection lost (reason), failed attempts. ERROR:
/// protocol errors (which packet, why), giving up reconnecting. DEBUG: each
/// packet sent and received (type, message id).
///
/// The callback runs on the thread that runs the client (as callbacks do), gets
/// `user_data` untouched, and must not call functions on this client. `message`
/// is valid only during the call. Never called after mqtt_client_free.
///
/// Returns MQTT_OK or MQTT_ERR_INVALID_ARGUMENT (NULL client, level outside
/// 0..4). Thread-safe; takes effect at once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_set_log(
    client: *mut mqtt_client,
    callback: mqtt_log_callback,
    level: c_int,
    user_data: *mut c_void,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let Ok(c) = (unsafe { client_arg(client) }) else {
            return MQTT_ERR_INVALID_ARGUMENT;
        };
        if !(0..=4).contains(&level) {
            return MQTT_ERR_INVALID_ARGUMENT;
        }
        let (Some(function), Some(level)) = (callback, crate::log::Level::from_i32(level)) else {
            c.set_log(None, crate::log::Level::Error);
            return MQTT_OK;
        };
        let handle = PassBack(client);
        let ud = PassBack(user_data);
        let log: crate::log::LogFn = Arc::new(move |level, message: &str| {
            // Messages never contain NUL (topics cannot); keep the part before one.
            let mut bytes = Vec::with_capacity(message.len() + 1);
            bytes.extend(message.bytes().take_while(|&b| b != 0));
            let Ok(line) = std::ffi::CString::new(bytes) else {
                return;
            };
            // SAFETY: a C function pointer given to us for this purpose; `line` lives
            // for the call, as the header promises.
            unsafe { function(handle.get(), level as c_int, line.as_ptr(), ud.get()) }
        });
        c.set_log(Some(log), level);
        MQTT_OK
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The panic boundary: a panic inside an exported function, here raised by a
    /// (Rust) log callback while `mqtt_client_connect` runs the client on the
    /// caller's thread, comes out as MQTT_ERR_INTERNAL instead of unwinding into C,
    /// and the handle can still be freed. It needs `panic = "unwind"`, which the
    /// release profile keeps (tests/abi.rs checks that, since `cargo test` builds
    /// with unwinding whatever the profile says); run it with the release profile's
    /// optimisation and LTO too: `cargo test --release --lib panic_boundary`.
    #[test]
    fn panic_boundary_turns_a_panic_into_mqtt_err_internal() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("local_addr").port();
        // SAFETY: a valid NUL-terminated client id.
        let client = unsafe { mqtt_client_new(c"panic-boundary".as_ptr(), true) };
        assert!(!client.is_null());
        let panicking: crate::log::LogFn = Arc::new(|_, message: &str| {
            if message.starts_with("connecting to") {
                panic!("test: a panic inside mqtt_client_connect");
            }
        });
        // SAFETY: a live handle from mqtt_client_new.
        unsafe { client_arg(client) }
            .unwrap()
            .set_log(Some(panicking), crate::log::Level::Info);
        // SAFETY: a live handle and a valid NUL-terminated host.
        let rc = unsafe { mqtt_client_connect(client, c"127.0.0.1".as_ptr(), 60, port) };
        assert_eq!(rc, MQTT_ERR_INTERNAL);
        // SAFETY: the handle, freed once.
        unsafe { mqtt_client_free(client) };
    }
}

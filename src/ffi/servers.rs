//! Failover across brokers: the server list.

use std::ffi::{CStr, c_char, c_int};

use super::{MQTT_ERR_INTERNAL, client_arg, code, mqtt_client};
use crate::Error;

/// Connect to one of several brokers instead of the host given to connect:
/// each connection attempt walks `uris` (`count` entries) from the entry that
/// answered last (the first entry for a new list), trying each entry once.
///
/// Entries: `mqtt://host:port` (TCP) or `mqtts://host:port` (TLS with the
/// options of mqtt_client_set_tls; without them, the system trust store and
/// the entry's host as server name). The port defaults to 1883 (mqtt) and
/// 8883 (mqtts); an IPv6 literal goes in brackets (`mqtt://[::1]:1883`).
/// ws:// and wss:// are not accepted here.
///
/// With a list, mqtt_client_connect, mqtt_client_connect_async and
/// mqtt_client_reconnect ignore their host and port (NULL and 0 are
/// accepted), and so does automatic reconnection:
/// - each entry gets the whole connect timeout (a blocking connect waits at
///   most the timeout times `count`); a host name is resolved when its
///   entry's turn comes, on a short-lived thread (the loop never blocks on
///   DNS), and again at each later walk;
/// - an entry that fails (refused TCP, DNS, TLS, timeout, a CONNACK refusal)
///   hands over to the next one at once; only when every entry failed does
///   the attempt fail: a blocking connect returns the last entry's error,
///   connect_async reports it once per round in the DISCONNECT callback (as
///   it reports each failure without a list), and automatic reconnection
///   waits its backoff delay (with its jitter) once per such round, not per
///   entry;
/// - the CONNACK callback's `mqtt_data.server_index` is the index in `uris`
///   of the entry that answered, and the next walk starts from it.
///
/// `count` 0 (or `uris` NULL with `count` 0) clears the list: connect uses its
/// host and port again.
///
/// Returns MQTT_OK, or MQTT_ERR_INVALID_ARGUMENT (and nothing changes):
/// `client` NULL, `uris` NULL with `count` > 0, a NULL entry, an entry that is
/// not valid UTF-8 or not a valid mqtt/mqtts URI (no scheme, another scheme,
/// empty host, bad port, a path, user info), or an mqtts entry in a library
/// built without TLS.
///
/// Ownership: the strings are copied; neither the array nor the strings need
/// outlive the call. Threading: thread-safe, also from callbacks; set it
/// before connect. A call while connected or connecting takes effect from the
/// next connection attempt (the new list starts at its first entry).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_set_servers(
    client: *mut mqtt_client,
    uris: *const *const c_char,
    count: usize,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let result = unsafe { client_arg(client) }.and_then(|c| {
            if count == 0 {
                return c.set_servers(&[]);
            }
            if uris.is_null() || count > isize::MAX as usize / size_of::<*const c_char>() {
                return Err(Error::InvalidArgument);
            }
            // SAFETY: `count` readable pointers at `uris`, per the contract.
            let pointers = unsafe { std::slice::from_raw_parts(uris, count) };
            let mut entries = Vec::with_capacity(count);
            for &pointer in pointers {
                if pointer.is_null() {
                    return Err(Error::InvalidArgument);
                }
                // SAFETY: a NUL-terminated string per the contract.
                let text = unsafe { CStr::from_ptr(pointer) }.to_str();
                entries.push(text.map_err(|_| Error::InvalidArgument)?);
            }
            c.set_servers(&entries)
        });
        code(result)
    })
}

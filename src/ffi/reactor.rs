//! Many clients on one reactor: one poll, one thread (or none) for all of them.

use std::ffi::{c_int, c_uint, c_void};
use std::time::Duration;

use super::{
    MQTT_ERR_INTERNAL, MQTT_ERR_INVALID_ARGUMENT, c_handler, client_arg, code, mqtt_callback,
    mqtt_client,
};
use crate::Error;
use crate::reactor::Reactor;

/// A reactor: drives any number of clients on one event loop. Opaque: create
/// with `mqtt_reactor_new`, free with `mqtt_reactor_free`.
pub struct mqtt_reactor {
    reactor: Reactor,
}

/// # Safety
/// `reactor` is NULL or a handle from `mqtt_reactor_new` not yet freed.
unsafe fn reactor_arg<'a>(reactor: *const mqtt_reactor) -> crate::Result<&'a Reactor> {
    // SAFETY: a live handle per the caller's contract.
    unsafe { reactor.as_ref() }
        .map(|r| &r.reactor)
        .ok_or(Error::InvalidArgument)
}

/// Create a reactor: one event loop (one epoll instance) for many clients.
/// It starts no thread: call `mqtt_reactor_start` for one, or drive it with
/// `mqtt_reactor_run` from your own thread or event loop.
///
/// Returns a new handle, or NULL when resources are exhausted. Free it with
/// `mqtt_reactor_free`. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn mqtt_reactor_new() -> *mut mqtt_reactor {
    ffi_guard!(std::ptr::null_mut(), {
        match Reactor::new() {
            Ok(reactor) => Box::into_raw(Box::new(mqtt_reactor { reactor })),
            Err(_) => std::ptr::null_mut(),
        }
    })
}

/// Free the reactor. With clients still attached, it stops the thread (if
/// any), closes their connections without callbacks (no DISCONNECT callback)
/// and detaches them: they stay valid, are disconnected, and must still be
/// freed with `mqtt_client_free` by their owner (they may also connect again,
/// each then on its own). Returns promptly; no callback of its clients runs
/// after it returned. NULL is a no-op.
///
/// Threading: from any thread but its own. From inside a callback of one of
/// its clients it takes effect when the turn running that callback ends: no
/// further client is served, and the clients are detached then. The handle
/// must not be used after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_reactor_free(reactor: *mut mqtt_reactor) {
    ffi_guard!((), {
        if reactor.is_null() {
            return;
        }
        // SAFETY: a handle from mqtt_reactor_new, freed only once (caller's contract).
        drop(unsafe { Box::from_raw(reactor) });
    })
}

/// Let `reactor` drive `client` from now on: its socket, timers, reconnection
/// and callbacks. Works before or after the client connected (an open
/// connection moves along). `on_message` (nullable) is registered as by
/// `mqtt_client_loop_start`: it receives every application message once,
/// whatever its QoS, with `user_data`. Every other function of the client
/// keeps its contract; its own `mqtt_client_loop_start`, `mqtt_client_loop`
/// and `mqtt_client_loop_stop` return MQTT_ERR_LOOP_RUNNING from then on, and
/// `mqtt_client_socket` returns the reactor's descriptor.
/// `mqtt_client_free` removes the client from the reactor.
///
/// Returns MQTT_OK; MQTT_ERR_INVALID_ARGUMENT (NULL reactor or client);
/// MQTT_ERR_LOOP_RUNNING (the client already belongs to a reactor, this one
/// included, or its own loop is running: stop it first). Nothing changes on
/// error. Thread-safe; a client belongs to one reactor.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_reactor_add(
    reactor: *mut mqtt_reactor,
    client: *mut mqtt_client,
    on_message: mqtt_callback,
    user_data: *mut c_void,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let (Ok(r), Ok(c)) = (unsafe { reactor_arg(reactor) }, unsafe {
            client_arg(client)
        }) else {
            return MQTT_ERR_INVALID_ARGUMENT;
        };
        code(c.add_to_reactor_with(r, on_message.map(|f| c_handler(f, user_data))))
    })
}

/// Start one thread that runs the reactor (all its clients' reads, writes,
/// timers and callbacks) until `mqtt_reactor_stop` or `mqtt_reactor_free`.
///
/// Returns MQTT_OK, MQTT_ERR_INVALID_ARGUMENT, MQTT_ERR_LOOP_RUNNING (already
/// started), MQTT_ERR_IN_CALLBACK (from a callback of one of its clients) or
/// MQTT_ERR_NO_MEMORY (thread creation failed). Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_reactor_start(reactor: *mut mqtt_reactor) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        code(unsafe { reactor_arg(reactor) }.and_then(Reactor::start))
    })
}

/// Stop the reactor's thread; when this returns, the thread has ended. The
/// clients' connections stay open; `mqtt_reactor_run` may drive them
/// afterwards, or `mqtt_reactor_start` again.
///
/// Returns MQTT_OK, MQTT_ERR_INVALID_ARGUMENT, MQTT_ERR_LOOP_NOT_RUNNING or
/// MQTT_ERR_IN_CALLBACK (the thread cannot wait for itself). Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_reactor_stop(reactor: *mut mqtt_reactor) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        code(unsafe { reactor_arg(reactor) }.and_then(Reactor::stop))
    })
}

/// Run one turn of the reactor in the calling thread: wait up to `timeout_ms`
/// (negative: until the next event or deadline of any client) for its
/// descriptor, then serve every client with something to do (reads,
/// callbacks, keepalive and reconnection timers, writes). A turn costs in
/// proportion to the clients that are ready or due, not to all clients.
/// Connection ends are reported to each client's DISCONNECT callback.
///
/// Returns MQTT_OK, MQTT_ERR_INVALID_ARGUMENT, MQTT_ERR_LOOP_RUNNING (its
/// thread or another thread runs it), MQTT_ERR_IN_CALLBACK (from a callback
/// of one of its clients) or MQTT_ERR_IO (polling failed).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_reactor_run(reactor: *mut mqtt_reactor, timeout_ms: c_int) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let result = unsafe { reactor_arg(reactor) }.and_then(|r| {
            let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
            r.run(timeout)
        });
        code(result)
    })
}

/// For an external event loop: one file descriptor to watch for readability
/// (POLLIN / EPOLLIN) for all the reactor's clients. It becomes readable
/// whenever any client has work — a socket is readable or writable, or a call
/// on any thread queued a packet or a command — and stays the same for the
/// reactor's life (do not read, write or close it). When it is readable, or
/// when `mqtt_reactor_next_timeout_ms` has passed, call
/// `mqtt_reactor_run(reactor, 0)`.
///
/// Returns the descriptor (>= 0) or MQTT_ERR_INVALID_ARGUMENT. Thread-safe.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_reactor_socket(reactor: *const mqtt_reactor) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        match unsafe { reactor_arg(reactor) } {
            Ok(r) => r.event_fd(),
            Err(e) => e.code(),
        }
    })
}

/// Set how many of the reactor's clients may be connecting at once (TCP
/// connect, TLS handshake and CONNECT until its CONNACK or failure). Clients
/// beyond it wait, in the order they asked, and start as others finish; their
/// connect timeout starts when they start. `limit` 0 means no limit. The
/// default, 64, keeps thousands of clients started together from
/// overflowing the broker's listen backlog (mosquitto's is 100), whose
/// dropped connection attempts the kernel retries only after 1, 3, 7 seconds.
/// Raise it for a remote broker with a long round trip. Takes effect from the
/// reactor's next turn.
///
/// Returns MQTT_OK or MQTT_ERR_INVALID_ARGUMENT (NULL). Thread-safe, and
/// allowed from callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_reactor_set_connect_limit(
    reactor: *mut mqtt_reactor,
    limit: c_uint,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        code(unsafe { reactor_arg(reactor) }.map(|r| r.set_connect_limit(limit as usize)))
    })
}

/// For an external event loop: milliseconds until the reactor must run again
/// even if its descriptor stays quiet — the earliest protocol deadline of its
/// clients (keepalive ping, ping response, connect timeout, reconnection
/// backoff), rounded up; 0 when work is already waiting; -1 when nothing is
/// due.
///
/// Returns that value, MQTT_ERR_INVALID_ARGUMENT, or MQTT_ERR_LOOP_RUNNING
/// (its thread or another thread runs it). Call it after each
/// `mqtt_reactor_run`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_reactor_next_timeout_ms(reactor: *const mqtt_reactor) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        match unsafe { reactor_arg(reactor) }.and_then(Reactor::next_timeout) {
            Ok(None) => -1,
            Ok(Some(d)) => {
                let ms = d.as_nanos().div_ceil(1_000_000);
                c_int::try_from(ms).unwrap_or(c_int::MAX)
            }
            Err(e) => e.code(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::MQTT_OK;

    #[test]
    fn null_and_misuse_are_refused() {
        // SAFETY: NULL is allowed everywhere; the handle is live until freed.
        unsafe {
            assert_eq!(
                mqtt_reactor_start(std::ptr::null_mut()),
                MQTT_ERR_INVALID_ARGUMENT
            );
            assert_eq!(
                mqtt_reactor_socket(std::ptr::null()),
                MQTT_ERR_INVALID_ARGUMENT
            );
            assert_eq!(
                mqtt_reactor_add(
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    None,
                    std::ptr::null_mut()
                ),
                MQTT_ERR_INVALID_ARGUMENT
            );
            mqtt_reactor_free(std::ptr::null_mut());
            let r = mqtt_reactor_new();
            assert!(!r.is_null());
            assert!(mqtt_reactor_socket(r) >= 0);
            assert_eq!(
                mqtt_reactor_next_timeout_ms(r),
                -1,
                "no client: nothing due"
            );
            assert_eq!(mqtt_reactor_run(r, 0), MQTT_OK);
            assert_eq!(mqtt_reactor_stop(r), Error::LoopNotRunning.code());
            assert_eq!(mqtt_reactor_start(r), MQTT_OK);
            assert_eq!(mqtt_reactor_start(r), Error::LoopRunning.code());
            assert_eq!(mqtt_reactor_run(r, 0), Error::LoopRunning.code());
            assert_eq!(mqtt_reactor_next_timeout_ms(r), Error::LoopRunning.code());
            assert_eq!(mqtt_reactor_stop(r), MQTT_OK);
            mqtt_reactor_free(r);
        }
    }
}

//! Durable sessions: the built-in store and stores written in C.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::os::unix::ffi::OsStrExt;

use super::{MQTT_ERR_INTERNAL, client_arg, code, mqtt_client};
use crate::Error;
use crate::store::{Store, SyncMode};

/// When the durable store's records reach stable storage
/// (mqtt_client_set_persistence).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mqtt_sync_mode {
    /// Each record is written to the operating system before the call that
    /// makes it returns, never synced: survives a crash or kill of the
    /// process, not a power loss or kernel crash (whatever the page cache
    /// held is lost then).
    MQTT_SYNC_NONE = 0,
    /// Group commit: at most one fdatasync per loop turn, always before the
    /// packets of that turn reach the socket, so the broker never holds a
    /// message (nor a PUBREC, PUBREL or PUBCOMP) the store does not. Messages
    /// waiting in the queue are synced when the first of them is sent, by
    /// one fdatasync for all written until then. Survives a
    /// process crash, and a power loss for everything the broker has seen;
    /// a message accepted by publish but not yet sent may be lost by a power
    /// loss (it never reached the broker either).
    MQTT_SYNC_BATCH = 1,
    /// publish returns a mid only once its record is on stable storage
    /// (fdatasync); so are held incoming QoS 2 messages before PUBREC and
    /// their delivery before PUBCOMP. Survives a process crash and a power
    /// loss at any point. The slowest: one fdatasync per message.
    MQTT_SYNC_EVERY = 2,
}

/// Called by a store's `load_all` once per record; `key` and `value` need
/// only stay valid during the call (the library copies them).
pub type mqtt_store_record_fn = unsafe extern "C" fn(
    record_ctx: *mut c_void,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
);

/// A durable store written by the application (flash, NVS, a database), for
/// mqtt_client_set_store: a map from byte-string keys to byte-string values.
/// The library decides what to store; keys are at most 65536 bytes, values
/// about the size of a PUBLISH packet. Every function returns 0 on success
/// and anything else on failure, and gets the `ctx` given to
/// mqtt_client_set_store.
///
/// Threading: the functions of one client are never called concurrently;
/// they run on the thread calling publish (put) or running the client's loop
/// (everything else), with a library lock held: they must not call this
/// client's functions. They must not block for long: the client's loop waits.
#[repr(C)]
pub struct mqtt_store_ops {
    /// sizeof(mqtt_store_ops) as the application was compiled: lets the
    /// struct grow (new fields at the end) without breaking older programs.
    pub struct_size: usize,
    /// Insert or replace `key`'s value. After it returns, a crash of the
    /// process must not lose it (a power loss may, until the next `sync`).
    /// A failure makes the publish that needed it return MQTT_ERR_STORE.
    pub put: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            key: *const u8,
            key_len: usize,
            value: *const u8,
            value_len: usize,
        ) -> c_int,
    >,
    /// Remove `key`; an absent key is success.
    pub remove:
        Option<unsafe extern "C" fn(ctx: *mut c_void, key: *const u8, key_len: usize) -> c_int>,
    /// Call `record(record_ctx, ...)` once for every stored record, in any
    /// order, then return. Called once, by mqtt_client_set_store.
    pub load_all: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            record: mqtt_store_record_fn,
            record_ctx: *mut c_void,
        ) -> c_int,
    >,
    /// Make everything put or removed so far survive a power loss. Called at
    /// most once per loop turn, before that turn's packets are written (as
    /// MQTT_SYNC_BATCH); a failure ends the connection without sending them.
    pub sync: Option<unsafe extern "C" fn(ctx: *mut c_void) -> c_int>,
}

/// The functions of a C store, checked non-NULL.
struct CStore {
    put: unsafe extern "C" fn(*mut c_void, *const u8, usize, *const u8, usize) -> c_int,
    remove: unsafe extern "C" fn(*mut c_void, *const u8, usize) -> c_int,
    load_all: unsafe extern "C" fn(*mut c_void, mqtt_store_record_fn, *mut c_void) -> c_int,
    sync: unsafe extern "C" fn(*mut c_void) -> c_int,
    ctx: *mut c_void,
}

// SAFETY: the application promises (mqtt.h) that its store functions may be
// called from the client's threads, one at a time: the session's lock
// serializes them.
unsafe impl Send for CStore {}

fn status(rc: c_int) -> crate::Result<()> {
    if rc == 0 { Ok(()) } else { Err(Error::Store) }
}

struct LoadState<'a> {
    each: &'a mut dyn FnMut(&[u8], &[u8]),
    panicked: bool,
}

unsafe extern "C" fn record_trampoline(
    record_ctx: *mut c_void,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
) {
    // SAFETY: `record_ctx` is the LoadState passed to load_all below, alive
    // for its duration.
    let state = unsafe { &mut *record_ctx.cast::<LoadState<'_>>() };
    // SAFETY: the store passes `len` readable bytes (NULL only with 0).
    let (Ok(key), Ok(value)) = (unsafe { super::bytes_arg(key.cast(), key_len) }, unsafe {
        super::bytes_arg(value.cast(), value_len)
    }) else {
        return;
    };
    let each = &mut state.each;
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| each(key, value))).is_err() {
        state.panicked = true;
    }
}

impl Store for CStore {
    fn put(&mut self, key: &[u8], value: &[u8]) -> crate::Result<()> {
        // SAFETY: the application's function, with its ctx and valid slices.
        status(unsafe {
            (self.put)(
                self.ctx,
                key.as_ptr(),
                key.len(),
                value.as_ptr(),
                value.len(),
            )
        })
    }

    fn remove(&mut self, key: &[u8]) -> crate::Result<()> {
        // SAFETY: as above.
        status(unsafe { (self.remove)(self.ctx, key.as_ptr(), key.len()) })
    }

    fn load_all(&mut self, each: &mut dyn FnMut(&[u8], &[u8])) -> crate::Result<()> {
        let mut state = LoadState {
            each,
            panicked: false,
        };
        // SAFETY: the trampoline reads `state` only during this call.
        let rc = unsafe {
            (self.load_all)(
                self.ctx,
                record_trampoline,
                (&mut state as *mut LoadState<'_>).cast(),
            )
        };
        if state.panicked {
            return Err(Error::Internal);
        }
        status(rc)
    }

    fn sync(&mut self) -> crate::Result<()> {
        // SAFETY: as above.
        status(unsafe { (self.sync)(self.ctx) })
    }
}

/// Keep this client's session (see below) in a built-in durable store, so
/// that nothing accepted is lost when the process dies: one append-only log
/// per client id in `directory` (created if missing; files `<id>.log` and
/// `<id>.lock`, the id with bytes other than letters, digits, `_` and `-`
/// written as `%XX`). NULL `directory`: memory only (the default; what the
/// session holds stays in memory). `sync` is an mqtt_sync_mode, which also
/// says which crashes the store survives.
///
/// Stored: outgoing QoS 1/2 messages from the moment publish returns their
/// mid until PUBACK/PUBCOMP (queued or in flight), which of them are past
/// PUBREC, incoming QoS 2 messages held between PUBREC and their delivery,
/// the subscriptions acknowledged (for resubscribing), and the packet-id
/// allocator's position (after the newest stored message). An incoming QoS
/// 2 message counts as delivered when its callback has returned; the store
/// records that before PUBCOMP is sent, so no later life delivers it again,
/// with one exception: a process killed after the callback returned and
/// before that record was written (one write with the built-in store, a
/// transaction with SQLite) gets the message again in its next life, as the
/// first one delivered. A callback whose effect must happen once records the
/// message's id with its effect and skips an id it has seen.
///
/// With `clean_session` false (mqtt_client_new), the records of a previous
/// process become this client's session now: register the PUBACK/PUBCOMP
/// callbacks before connecting, as they run for that process's messages too.
/// After the CONNACK every stored message not past PUBREC is sent again
/// (DUP=1, same mid), PUBREL flows are completed, and the broker's
/// redelivery of a held QoS 2 message is not delivered a second time. With
/// `clean_session` true a previous process's records are ignored and removed
/// at the first accepted CONNACK (until then, a crash keeps them).
///
/// A torn or corrupt end of the log (a write cut by a power loss) is dropped
/// with a log line (mqtt_client_set_log, MQTT_LOG_WARN); every complete record
/// before it loads. The log is compacted when most of it is dead records.
///
/// Returns MQTT_OK, or:
/// - MQTT_ERR_INVALID_ARGUMENT: `client` NULL, `sync` not an mqtt_sync_mode,
///   an empty `directory`, an empty client id, or messages or requests
///   already in the session (publish before this call: set it first);
/// - MQTT_ERR_ALREADY_CONNECTED: connected, or waiting for the CONNACK (set it
///   before connect);
/// - MQTT_ERR_STORE_LOCKED: another live client (in this process or another)
///   has this client id's store open; a lock left by a dead process does not
///   count;
/// - MQTT_ERR_STORE: the directory or log cannot be created, read or
///   written, or the file is not a libmqtt log.
///
/// On error nothing changes.
///
/// Later, a publish whose record cannot be written or synced (disk full, I/O
/// error) returns MQTT_ERR_STORE and accepts nothing; a failed sync in
/// MQTT_SYNC_BATCH mode ends the connection (DISCONNECT callback with
/// MQTT_ERR_STORE) before the packets that needed it are written.
///
/// Thread-safe. The store stays open, and locked, until mqtt_client_free or
/// the next call to this function or mqtt_client_set_store. `directory` is
/// copied.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_set_persistence(
    client: *mut mqtt_client,
    directory: *const c_char,
    sync: c_int,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let result = unsafe { client_arg(client) }.and_then(|c| {
            let mode = SyncMode::from_i32(sync).ok_or(Error::InvalidArgument)?;
            if directory.is_null() {
                return c.set_persistence(None, mode);
            }
            // SAFETY: a NUL-terminated string per the contract.
            let bytes = unsafe { CStr::from_ptr(directory) }.to_bytes();
            if bytes.is_empty() {
                return Err(Error::InvalidArgument);
            }
            let path = std::path::Path::new(std::ffi::OsStr::from_bytes(bytes));
            c.set_persistence(Some(path), mode)
        });
        code(result)
    })
}

/// Keep this client's session in a store of the application's (`ops`, with
/// `ctx` passed back to each function): the same records, loading and
/// behaviour as mqtt_client_set_persistence, with the store's `sync` called
/// as MQTT_SYNC_BATCH does. NULL `ops`: memory only. `ops->load_all` is
/// called before this returns, to load a previous process's records.
///
/// Returns MQTT_OK, or:
/// - MQTT_ERR_INVALID_ARGUMENT: `client` NULL, `ops->struct_size` smaller
///   than the four functions need, a function NULL, or messages or requests
///   already in the session;
/// - MQTT_ERR_ALREADY_CONNECTED: connected, or waiting for the CONNACK;
/// - MQTT_ERR_STORE: `load_all` failed.
///
/// On error nothing changes (`load_all` may have been called).
///
/// Ownership: `*ops` is copied; `ctx` is the application's and must stay
/// valid until mqtt_client_free returns or another store replaces this one.
/// The library never frees it. Thread-safe; see mqtt_store_ops for the
/// threads the functions run on.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mqtt_client_set_store(
    client: *mut mqtt_client,
    ops: *const mqtt_store_ops,
    ctx: *mut c_void,
) -> c_int {
    ffi_guard!(MQTT_ERR_INTERNAL, {
        // SAFETY: per this function's contract.
        let result = unsafe { client_arg(client) }.and_then(|c| {
            if ops.is_null() {
                return c.set_store(None);
            }
            // SAFETY: `ops` points to at least `struct_size` readable bytes;
            // the size is read first and the rest only when it is large enough.
            let size = unsafe { std::ptr::read_unaligned(ops.cast::<usize>()) };
            if size < std::mem::size_of::<mqtt_store_ops>() {
                return Err(Error::InvalidArgument);
            }
            // SAFETY: as above, the whole struct is readable.
            let ops = unsafe { &*ops };
            let (Some(put), Some(remove), Some(load_all), Some(sync)) =
                (ops.put, ops.remove, ops.load_all, ops.sync)
            else {
                return Err(Error::InvalidArgument);
            };
            c.set_store(Some(Box::new(CStore {
                put,
                remove,
                load_all,
                sync,
                ctx,
            })))
        });
        code(result)
    })
}

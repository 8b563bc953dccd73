//! The safe Rust API: a cloneable handle to one MQTT client.
//!
//! The session (protocol state) sits behind a mutex held only for short,
//! non-blocking steps, never while a callback runs; the reactor (socket, poll,
//! buffers) belongs to whichever thread runs the loop. API calls change the
//! session and wake the reactor, which writes everything queued in one syscall.

use std::cell::RefCell;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::dispatch::{Callback, Command, Condition, Data, Dispatcher};
use crate::protocol::codec::{ProtocolVersion, QoS, SubscribeOptions};
use crate::protocol::properties::{self as prop, Properties, PropertiesBuf, PropertyContext};
use crate::protocol::session::{ConnectionState, Session, SessionConfig, Will};
use crate::reactor::{Reactor, ReactorCommand};
use crate::{Error, Result};

/// Options the reactor reads when it (re)connects.
#[derive(Clone)]
pub(crate) struct Options {
    pub host: Option<String>,
    pub port: u16,
    pub connect_timeout: Duration,
    /// `None` disables automatic reconnection.
    pub reconnect: Option<(Duration, Duration)>,
    pub max_packet_size: usize,
    /// `None`: the system resolver (getaddrinfo).
    pub resolver: Option<Resolver>,
    /// `None`: plain TCP.
    #[cfg(feature = "tls")]
    pub tls: Option<Arc<crate::tls::TlsSetup>>,
    /// How long a QoS 0 publish waits for room under the unsent-bytes limit
    /// before it returns `QueueFull` (zero: it never waits).
    pub publish_wait: Duration,
}

/// Turns a host name and port into addresses to try in order, in place of the
/// system resolver. Called on a short-lived thread, never on the loop's.
pub type Resolver = Arc<dyn Fn(&str, u16) -> std::io::Result<Vec<SocketAddr>> + Send + Sync>;

/// The outcome of the connection attempt a `connect` call waits for.
#[derive(Default)]
pub(crate) struct ConnectWait {
    next_attempt: u64,
    pub in_progress: Option<u64>,
    pub finished: Option<(u64, Result<bool>)>,
}

pub(crate) struct Inner {
    pub session: Mutex<Session>,
    pub dispatcher: Dispatcher<Client>,
    pub reactor: Mutex<Reactor>,
    pub waker: mio::Waker,
    /// The poll instance's epoll descriptor, constant for the client's life.
    event_fd: std::os::fd::RawFd,
    /// Work was queued for the reactor since its last turn began.
    wake_pending: AtomicBool,
    /// A turn is blocked in (or about to enter) its poll: queued work must
    /// write the waker. Otherwise the next turn finds `wake_pending` and does
    /// the work before it sleeps, which saves the caller's loop a syscall and a
    /// turn per publish.
    sleeping: AtomicBool,
    /// `event_fd` was handed out: an external loop may be asleep on it, so
    /// every wake writes the waker.
    external_poller: AtomicBool,
    /// Bit 0: a connection attempt is under way (name resolution, TCP, TLS,
    /// CONNECT awaiting its CONNACK), requested or automatic. Bits 1..: the
    /// intent, bumped by every connect request and every disconnect; commands
    /// carry the intent they were issued under, and the reactor drops those a
    /// later request overtook (a resolution finishing after disconnect, say).
    /// One word, so that a disconnect learns atomically whether the attempt
    /// it supersedes had been claimed.
    attempt_state: AtomicU64,
    pub commands: Mutex<Vec<ReactorCommand>>,
    pub connect_wait: Mutex<ConnectWait>,
    pub connect_done: Condvar,
    pub options: Mutex<Options>,
    /// The loop thread and its own stop flag: a flag per thread, so that a
    /// loop_start racing a loop_stop cannot un-stop the thread being joined.
    loop_thread: Mutex<Option<(JoinHandle<()>, Arc<AtomicBool>)>>,
    /// Held by loop_start, loop_stop and close for their whole run (joins
    /// included), so that a new loop thread never starts while the old one is
    /// still alive: the two would fight over the reactor. Never taken from a
    /// callback (those calls refuse or return early there).
    loop_lifecycle: Mutex<()>,
    /// The message callback of the latest `loop_start` that gave one.
    loop_on_message: Mutex<Option<Callback<Client>>>,
    /// Set once the owner released the client: no further callback may run.
    pub closed: AtomicBool,
    /// Diagnostic logging (off by default).
    pub(crate) logger: crate::log::Logger,
    /// Signalled (with the session lock) when written bytes made room, or
    /// the connection ended, while `publish_waiters` is not zero.
    pub(crate) drained: Condvar,
    pub(crate) publish_waiters: AtomicU64,
}

thread_local! {
    /// Clients whose callbacks are running on this thread (nested clients allowed).
    static IN_CALLBACK: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in user code never happens under our locks; a poisoned lock still
    // holds consistent data, so keep going rather than propagate the poison.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A handle to one MQTT client. Cloning gives another handle to the same client.
///
/// The loop thread holds a handle of its own: call [`Client::close`] (or
/// [`Client::loop_stop`]) to end it; dropping the other handles does not.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl Client {
    /// A new, disconnected client. Under MQTT 3.1.1 an empty `client_id`
    /// needs `clean_session` (checked by connect: MQTT 5 lets the server
    /// assign one).
    pub fn new(client_id: &str, clean_session: bool) -> Result<Client> {
        if client_id.len() > u16::MAX as usize || client_id.contains('\0') {
            return Err(Error::InvalidArgument);
        }
        let config = SessionConfig {
            client_id: client_id.to_owned(),
            clean_session,
            ..SessionConfig::default()
        };
        let max_packet_size = config.max_packet_size;
        let (reactor, waker) = Reactor::new().map_err(|_| Error::Io)?;
        let event_fd = reactor.event_fd();
        Ok(Client {
            inner: Arc::new(Inner {
                session: Mutex::new(Session::new(config)),
                dispatcher: Dispatcher::default(),
                reactor: Mutex::new(reactor),
                waker,
                event_fd,
                wake_pending: AtomicBool::new(false),
                sleeping: AtomicBool::new(false),
                external_poller: AtomicBool::new(false),
                attempt_state: AtomicU64::new(0),
                commands: Mutex::new(Vec::new()),
                connect_wait: Mutex::new(ConnectWait::default()),
                connect_done: Condvar::new(),
                options: Mutex::new(Options {
                    host: None,
                    port: 1883,
                    connect_timeout: Duration::from_secs(10),
                    reconnect: Some((Duration::from_millis(500), Duration::from_secs(30))),
                    max_packet_size,
                    resolver: None,
                    #[cfg(feature = "tls")]
                    tls: None,
                    publish_wait: Duration::ZERO,
                }),
                loop_thread: Mutex::new(None),
                loop_lifecycle: Mutex::new(()),
                loop_on_message: Mutex::new(None),
                closed: AtomicBool::new(false),
                logger: crate::log::Logger::default(),
                drained: Condvar::new(),
                publish_waiters: AtomicU64::new(0),
            }),
        })
    }

    /// Register a callback (the seed's `on`): specific with a condition, generic without.
    pub fn on(
        &self,
        command: Command,
        callback: Callback<Client>,
        condition: Option<Condition>,
        priority: i32,
    ) {
        self.inner
            .dispatcher
            .on(command, callback, condition, priority);
    }

    /// Whether the calling thread is inside one of this client's callbacks.
    pub fn in_callback(&self) -> bool {
        let me = Arc::as_ptr(&self.inner) as usize;
        IN_CALLBACK.with(|c| c.borrow().contains(&me))
    }

    pub(crate) fn enter_callback(&self) -> CallbackGuard {
        let me = Arc::as_ptr(&self.inner) as usize;
        IN_CALLBACK.with(|c| c.borrow_mut().push(me));
        CallbackGuard(me)
    }

    /// Tell the reactor there is work (bytes to write or a command).
    ///
    /// SeqCst pairs with [`Client::prepare_sleep`]: either the reactor sees
    /// `wake_pending` before it sleeps, or this call sees `sleeping` and writes
    /// the waker. Inside a callback the turn running it is awake, so the flag
    /// alone makes the next turn do the work before sleeping.
    pub(crate) fn wake(&self) {
        let inner = &self.inner;
        if self.in_callback() {
            inner.wake_pending.store(true, Ordering::SeqCst);
            return;
        }
        if !inner.wake_pending.swap(true, Ordering::SeqCst)
            && (inner.sleeping.load(Ordering::SeqCst)
                || inner.external_poller.load(Ordering::SeqCst))
        {
            let _ = inner.waker.wake();
        }
    }

    /// Take the pending-work flag: the caller is about to do that work.
    pub(crate) fn clear_wake(&self) -> bool {
        self.inner.wake_pending.swap(false, Ordering::SeqCst)
    }

    pub(crate) fn wake_is_pending(&self) -> bool {
        self.inner.wake_pending.load(Ordering::SeqCst)
    }

    /// The reactor is about to poll: from now on wakes write the waker.
    /// Returns false when work arrived meanwhile and the poll must not block.
    pub(crate) fn prepare_sleep(&self) -> bool {
        self.inner.sleeping.store(true, Ordering::SeqCst);
        !self.inner.wake_pending.load(Ordering::SeqCst)
    }

    pub(crate) fn end_sleep(&self) {
        self.inner.sleeping.store(false, Ordering::SeqCst);
    }

    pub(crate) fn session(&self) -> MutexGuard<'_, Session> {
        lock(&self.inner.session)
    }

    /// Connect to `host:port`, send CONNECT and wait for CONNACK (bounded by the
    /// connect timeout). Returns the CONNACK's session-present flag.
    pub fn connect(&self, host: &str, keepalive: u16, port: u16) -> Result<bool> {
        if host.is_empty() || host.len() > 255 {
            return Err(Error::InvalidArgument);
        }
        if self.in_callback() {
            return Err(Error::InCallback);
        }
        if self.connection_active() {
            return Err(Error::AlreadyConnected);
        }
        self.check_client_id()?;
        self.set_target(host, keepalive, port);
        self.connect_and_wait()
    }

    /// A zero-byte client id needs a clean session under 3.1.1 [MQTT-3.1.3-7].
    fn check_client_id(&self) -> Result<()> {
        let session = self.session();
        let config = session.config();
        if config.client_id.is_empty() && !config.clean_session && !config.is_v5() {
            return Err(Error::InvalidArgument);
        }
        Ok(())
    }

    /// Resolve host names with `resolver` instead of the system's (`None`
    /// restores it): service discovery, a fixed table on a device without
    /// DNS. Used by `connect`, `reconnect`, `connect_async` and each automatic
    /// reconnection; IP literals are not resolved.
    pub fn set_resolver(&self, resolver: Option<Resolver>) {
        lock(&self.inner.options).resolver = resolver;
    }

    /// The host to connect to when it must be resolved (not an IP literal).
    pub(crate) fn host_name(&self) -> Option<String> {
        lock(&self.inner.options)
            .host
            .clone()
            .filter(|host| host.parse::<std::net::IpAddr>().is_err())
    }

    /// Where `connect`, `connect_async` and later reconnections go.
    fn set_target(&self, host: &str, keepalive: u16, port: u16) {
        {
            let mut options = lock(&self.inner.options);
            options.host = Some(host.to_owned());
            options.port = port;
        }
        self.session().config_mut().keep_alive = keepalive;
    }

    /// Start connecting and return at once; the CONNACK callback reports success,
    /// the DISCONNECT callback each failure (automatic reconnection then keeps
    /// trying where that can help). An IP literal needs no name resolution; a
    /// host name is resolved on a short-lived thread so the loop never blocks.
    pub fn connect_async(&self, host: &str, keepalive: u16, port: u16) -> Result<()> {
        if host.is_empty() || host.len() > 255 {
            return Err(Error::InvalidArgument);
        }
        if lock(&self.inner.connect_wait).in_progress.is_some() {
            return Err(Error::AlreadyConnected);
        }
        self.check_client_id()?;
        let intent = self.claim_attempt()?;
        self.set_target(host, keepalive, port);
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            let addrs = vec![SocketAddr::new(ip, port)];
            lock(&self.inner.commands).push(ReactorCommand::Connect {
                attempt: None,
                addrs,
                intent,
            });
            self.wake();
            return Ok(());
        }
        self.resolve_in_background(move |result| match result {
            Ok(addrs) => ReactorCommand::Connect {
                attempt: None,
                addrs,
                intent,
            },
            Err(error) => ReactorCommand::Failed { error, intent },
        })
        .inspect_err(|_| self.set_attempt_in_progress(false))
    }

    /// Resolve the host on a short-lived thread, so that no loop blocks on
    /// DNS, and hand the reactor `command(outcome)`.
    pub(crate) fn resolve_in_background(
        &self,
        command: impl FnOnce(Result<Vec<SocketAddr>>) -> ReactorCommand + Send + 'static,
    ) -> Result<()> {
        let client = self.clone();
        std::thread::Builder::new()
            .name("mqtt-resolve".into())
            .spawn(move || {
                let command = command(client.resolve());
                lock(&client.inner.commands).push(command);
                client.wake();
            })
            .map(drop)
            .map_err(|_| Error::NoMemory)
    }

    /// A file descriptor that becomes readable whenever the client has work
    /// (socket ready, a command from another thread): for external event loops.
    pub fn event_fd(&self) -> std::os::fd::RawFd {
        self.inner.external_poller.store(true, Ordering::SeqCst);
        if self.wake_is_pending() {
            // Queued before anyone could sleep on the descriptor: announce it now.
            let _ = self.inner.waker.wake();
        }
        self.inner.event_fd
    }

    /// Time until the client must run again even without events, for external
    /// event loops. `Err(LoopRunning)` while another thread runs the client.
    pub fn next_timeout(&self) -> Result<Option<Duration>> {
        Ok(self.idle_reactor()?.next_timeout(self))
    }

    /// Whether queued bytes wait for the socket to become writable.
    pub fn wants_write(&self) -> Result<bool> {
        Ok(self.idle_reactor()?.wants_write(self))
    }

    /// The reactor, for a query from the thread that drives it.
    fn idle_reactor(&self) -> Result<MutexGuard<'_, Reactor>> {
        // The loop thread may not have taken the reactor yet: ask the flag too.
        if self.loop_running() {
            return Err(Error::LoopRunning);
        }
        self.inner
            .reactor
            .try_lock()
            .map_err(|_| Error::LoopRunning)
    }

    /// Connect again to the host of the last `connect`, with the same options.
    pub fn reconnect(&self) -> Result<bool> {
        if self.in_callback() {
            return Err(Error::InCallback);
        }
        if lock(&self.inner.options).host.is_none() {
            return Err(Error::NotConnected);
        }
        if self.connection_active() {
            return Err(Error::AlreadyConnected);
        }
        self.connect_and_wait()
    }

    /// Connected or connecting; a connection being closed by `disconnect` does not
    /// count (the next attempt finishes closing it first).
    fn connection_active(&self) -> bool {
        self.attempt_in_progress()
            || matches!(
                self.session().state(),
                ConnectionState::AwaitingConnAck | ConnectionState::Connected
            )
    }

    /// Mark a requested attempt as under way and return its intent;
    /// `AlreadyConnected` when one is already (two racing calls cannot both
    /// start one).
    fn claim_attempt(&self) -> Result<u64> {
        if self.connection_active() {
            return Err(Error::AlreadyConnected);
        }
        let state = &self.inner.attempt_state;
        let mut current = state.load(Ordering::SeqCst);
        loop {
            if current & 1 == 1 {
                return Err(Error::AlreadyConnected);
            }
            let claimed = (current + 2) | 1;
            match state.compare_exchange(current, claimed, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return Ok(claimed >> 1),
                Err(seen) => current = seen,
            }
        }
    }

    /// A new intent superseding every command issued so far; also whether an
    /// attempt was under way at that instant.
    fn new_intent(&self) -> (u64, bool) {
        let before = self.inner.attempt_state.fetch_add(2, Ordering::SeqCst);
        ((before + 2) >> 1, before & 1 == 1)
    }

    pub(crate) fn current_intent(&self) -> u64 {
        self.inner.attempt_state.load(Ordering::SeqCst) >> 1
    }

    pub(crate) fn attempt_in_progress(&self) -> bool {
        self.inner.attempt_state.load(Ordering::SeqCst) & 1 == 1
    }

    pub(crate) fn set_attempt_in_progress(&self, on: bool) {
        if on {
            self.inner.attempt_state.fetch_or(1, Ordering::SeqCst);
        } else {
            self.inner.attempt_state.fetch_and(!1, Ordering::SeqCst);
        }
    }

    /// Clear the attempt bit; whether it was set.
    pub(crate) fn take_attempt_in_progress(&self) -> bool {
        self.inner.attempt_state.fetch_and(!1, Ordering::SeqCst) & 1 == 1
    }

    pub(crate) fn resolve(&self) -> Result<Vec<SocketAddr>> {
        let (host, port, resolver) = {
            let options = lock(&self.inner.options);
            (
                options.host.clone().ok_or(Error::NotConnected)?,
                options.port,
                options.resolver.clone(),
            )
        };
        let addrs: Vec<SocketAddr> = match resolver {
            Some(resolve) => resolve(&host, port).map_err(|_| Error::Dns)?,
            None => (host.as_str(), port)
                .to_socket_addrs()
                .map_err(|_| Error::Dns)?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(Error::Dns);
        }
        Ok(addrs)
    }

    fn connect_and_wait(&self) -> Result<bool> {
        let addrs = self.resolve()?;
        let timeout = lock(&self.inner.options).connect_timeout;
        let (attempt, intent) = {
            let mut wait = lock(&self.inner.connect_wait);
            if wait.in_progress.is_some() {
                return Err(Error::AlreadyConnected);
            }
            let intent = self.claim_attempt()?;
            wait.next_attempt += 1;
            let attempt = wait.next_attempt;
            wait.in_progress = Some(attempt);
            (attempt, intent)
        };
        lock(&self.inner.commands).push(ReactorCommand::Connect {
            attempt: Some(attempt),
            addrs,
            intent,
        });
        self.wake();
        // The reactor bounds the attempt by the connect timeout; this margin only
        // guards against a loop thread that was stopped meanwhile.
        let give_up = Instant::now() + timeout + Duration::from_secs(2);
        loop {
            if let Some(result) = self.take_connect_result(attempt) {
                return result;
            }
            let now = Instant::now();
            let closed = self.is_closed();
            if now >= give_up || closed {
                let mut wait = lock(&self.inner.connect_wait);
                if wait.in_progress == Some(attempt) {
                    wait.in_progress = None;
                    // The attempt must not go on after this call reported it
                    // failed: supersede it (clearing its bit in the same step,
                    // so a new connect may start at once), and have the
                    // reactor drop it.
                    let before = self
                        .inner
                        .attempt_state
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| Some((s + 2) & !1))
                        .unwrap_or_default();
                    let intent = (before + 2) >> 1;
                    lock(&self.inner.commands).push(ReactorCommand::StopReconnecting { intent });
                    self.wake();
                }
                return Err(if closed {
                    Error::NotConnected
                } else {
                    Error::Timeout
                });
            }
            if let Ok(mut reactor) = self.inner.reactor.try_lock() {
                let step = (give_up - now).min(Duration::from_millis(100));
                reactor.turn(self, Some(step));
            } else {
                let wait = lock(&self.inner.connect_wait);
                let step = (give_up - now).min(Duration::from_millis(50));
                let _unused = self
                    .inner
                    .connect_done
                    .wait_timeout(wait, step)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    fn take_connect_result(&self, attempt: u64) -> Option<Result<bool>> {
        let mut wait = lock(&self.inner.connect_wait);
        match wait.finished {
            Some((id, result)) if id == attempt => {
                wait.finished = None;
                Some(result)
            }
            _ => None,
        }
    }

    /// Subscribe to one or more filters. Returns the SUBSCRIBE's packet id.
    pub fn subscribe(&self, filters: &[(&str, QoS)]) -> Result<u16> {
        let mid = self.session().subscribe(Instant::now(), filters)?;
        self.wake();
        Ok(mid)
    }

    /// Unsubscribe from one or more filters. Returns the UNSUBSCRIBE's packet id.
    pub fn unsubscribe(&self, filters: &[&str]) -> Result<u16> {
        let mid = self.session().unsubscribe(Instant::now(), filters)?;
        self.wake();
        Ok(mid)
    }

    /// Publish a message. Returns its message id (QoS 0 included).
    pub fn publish(&self, topic: &str, payload: &[u8], qos: QoS, retain: bool) -> Result<u16> {
        self.publish_with(topic, payload, qos, retain, Properties::EMPTY)
    }

    /// `publish` with MQTT 5 properties (see `Session::publish_with`).
    pub fn publish_with(
        &self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        props: Properties<'_>,
    ) -> Result<u16> {
        let mut session = self.session();
        let mut result = session.publish_with(Instant::now(), topic, payload, qos, retain, props);
        if result == Err(Error::QueueFull) && qos == QoS::AtMostOnce {
            let wait = lock(&self.inner.options).publish_wait;
            let deadline = Instant::now() + wait;
            while result == Err(Error::QueueFull)
                && !self.in_callback()
                && session.state() == crate::protocol::session::ConnectionState::Connected
            {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    break;
                };
                session = self.wait_for_room(session, left);
                result = session.publish_with(Instant::now(), topic, payload, qos, retain, props);
            }
        }
        drop(session);
        let mid = result?;
        self.wake();
        Ok(mid)
    }

    /// Block for up to `left` until the connection's buffer drains. Without a
    /// thread running the client, this one writes: it runs turns itself.
    fn wait_for_room<'a>(
        &'a self,
        session: MutexGuard<'a, Session>,
        left: Duration,
    ) -> MutexGuard<'a, Session> {
        if !self.loop_running() {
            let before = session.unsent_len();
            drop(session);
            if let Ok(mut reactor) = self.inner.reactor.try_lock() {
                // Write what the socket takes now; sleep (until it is
                // writable again, at most 50 ms) only if it took nothing.
                reactor.turn(self, Some(Duration::ZERO));
                if self.session().unsent_len() >= before {
                    reactor.turn(self, Some(left.min(Duration::from_millis(50))));
                }
                return self.session();
            }
            // Another thread runs `mqtt_client_loop`: it signals like the
            // loop thread does.
            let session = self.session();
            return self.wait_drained(session, left);
        }
        self.wait_drained(session, left)
    }

    fn wait_drained<'a>(
        &'a self,
        session: MutexGuard<'a, Session>,
        left: Duration,
    ) -> MutexGuard<'a, Session> {
        let inner = &self.inner;
        inner.publish_waiters.fetch_add(1, Ordering::SeqCst);
        // The reactor must write (it may be asleep with nothing else to do).
        self.wake();
        let (session, _) = inner
            .drained
            .wait_timeout(session, left)
            .unwrap_or_else(|e| e.into_inner());
        inner.publish_waiters.fetch_sub(1, Ordering::SeqCst);
        session
    }

    /// Bytes in the connection's buffer not yet taken by the socket.
    pub fn unsent_bytes(&self) -> usize {
        self.session().unsent_len()
    }

    /// Bound the bytes waiting in the connection's buffer for the socket: a
    /// QoS 0 publish beyond `max_bytes` waits up to `wait` for room (never
    /// from a callback), then returns `QueueFull`.
    pub fn set_unsent_limit(&self, max_bytes: usize, wait: Duration) -> Result<()> {
        if max_bytes == 0 {
            return Err(Error::InvalidArgument);
        }
        self.session().config_mut().max_unsent_bytes = max_bytes;
        lock(&self.inner.options).publish_wait = wait;
        Ok(())
    }

    /// `subscribe` with MQTT 5 options and properties.
    pub fn subscribe_with(
        &self,
        filters: &[(&str, SubscribeOptions)],
        props: Properties<'_>,
    ) -> Result<u16> {
        let mid = self
            .session()
            .subscribe_with(Instant::now(), filters, props)?;
        self.wake();
        Ok(mid)
    }

    /// `unsubscribe` with MQTT 5 properties.
    pub fn unsubscribe_with(&self, filters: &[&str], props: Properties<'_>) -> Result<u16> {
        let mid = self
            .session()
            .unsubscribe_with(Instant::now(), filters, props)?;
        self.wake();
        Ok(mid)
    }

    /// Speak MQTT 3.1.1 (the default) or 5.0 from the next connection.
    /// `AlreadyConnected` while connected or connecting; `InvalidArgument`
    /// once messages or requests made under the other version are pending.
    pub fn set_protocol(&self, version: ProtocolVersion) -> Result<()> {
        let mut session = self.session();
        if session.config().protocol == version {
            return Ok(());
        }
        if session.state() != crate::protocol::session::ConnectionState::Disconnected
            || self.attempt_in_progress()
        {
            return Err(Error::AlreadyConnected);
        }
        if session.inflight_len() + session.queued_len() + session.pending_requests_len() > 0 {
            return Err(Error::InvalidArgument);
        }
        session.config_mut().protocol = version;
        Ok(())
    }

    /// MQTT 5 CONNECT properties for the next connections (`None` clears
    /// them). `ProtocolVersion` on a 3.1.1 client (unless clearing);
    /// `InvalidProperty` for one CONNECT may not carry, a duplicate, or
    /// Authentication Data without an Authentication Method.
    pub fn set_connect_properties(&self, props: Option<Properties<'_>>) -> Result<()> {
        self.set_v5_properties(props, PropertyContext::Connect, |config| {
            &mut config.connect_properties
        })
    }

    /// MQTT 5 will properties (will delay, message expiry, content type, ...)
    /// for the next connections (`None` clears them).
    pub fn set_will_properties(&self, props: Option<Properties<'_>>) -> Result<()> {
        self.set_v5_properties(props, PropertyContext::Will, |config| {
            &mut config.will_properties
        })
    }

    fn set_v5_properties(
        &self,
        props: Option<Properties<'_>>,
        ctx: PropertyContext,
        field: impl FnOnce(&mut crate::protocol::session::SessionConfig) -> &mut PropertiesBuf,
    ) -> Result<()> {
        let mut session = self.session();
        let config = session.config_mut();
        let props = props.unwrap_or_default();
        if props.is_empty() {
            field(config).clear();
            return Ok(());
        }
        if !config.is_v5() {
            return Err(Error::ProtocolVersion);
        }
        let props = Properties::parse(props.as_bytes(), ctx).map_err(|_| Error::InvalidProperty)?;
        // Authentication Data without a Method is a protocol error [MQTT-3.1.2.11.10].
        if props.get(prop::AUTHENTICATION_DATA).is_some()
            && props.get(prop::AUTHENTICATION_METHOD).is_none()
        {
            return Err(Error::InvalidProperty);
        }
        field(config).set(props);
        Ok(())
    }

    /// MQTT 5 enhanced authentication: answer the server's AUTH (0x18) or
    /// start a re-authentication (0x19); see `Session::auth`.
    pub fn auth(&self, reason_code: u8, props: Properties<'_>) -> Result<()> {
        self.session().auth(reason_code, props)?;
        self.wake();
        Ok(())
    }

    /// MQTT 5: assign topic aliases to at most `max` outgoing topics per
    /// connection (also bounded by the server's Topic Alias Maximum); 0 (the
    /// default) sends none. From the next connection.
    pub fn set_topic_alias_max(&self, max: u16) -> Result<()> {
        let mut session = self.session();
        if max > 0 && !session.config().is_v5() {
            return Err(Error::ProtocolVersion);
        }
        session.config_mut().topic_alias_max = max;
        Ok(())
    }

    /// Send DISCONNECT and close the connection once it is written. Automatic
    /// reconnection stops until the next `connect`.
    pub fn disconnect(&self) -> Result<()> {
        self.disconnect_with(0, Properties::EMPTY)
    }

    /// `disconnect` with an MQTT 5 reason code (0x04: publish the will
    /// anyway) and properties (see `Session::disconnect_with`).
    pub fn disconnect_with(&self, reason_code: u8, props: Properties<'_>) -> Result<()> {
        // Argument errors change nothing, not even the intent.
        self.session().check_disconnect(reason_code, props)?;
        let (intent, attempting) = self.new_intent();
        // The session stays locked until the command is queued: a loop thread
        // taking the command at once must find the DISCONNECT already queued,
        // or it would send one itself and this call would report NotConnected.
        let mut session = self.session();
        let sent = session.disconnect_with(Instant::now(), reason_code, props);
        // When not connected, the command still cancels a pending automatic
        // reconnection, which is what the caller asked for, and gives up an
        // attempt under way, which counts as success.
        lock(&self.inner.commands).push(ReactorCommand::StopReconnecting { intent });
        drop(session);
        if sent.is_err() && !attempting {
            return sent;
        }
        self.wake();
        if !self.in_callback() && !self.loop_running() {
            // Nobody else will write the DISCONNECT: do it now.
            if let Ok(mut reactor) = self.inner.reactor.try_lock() {
                reactor.turn(self, Some(Duration::ZERO));
            }
        }
        Ok(())
    }

    /// Run the reactor on a new thread until `loop_stop`. `on_message`, when
    /// given, receives every application message once (QoS 0, 1 and 2).
    pub fn loop_start(&self, on_message: Option<Callback<Client>>) -> Result<()> {
        if self.in_callback() {
            return Err(Error::InCallback);
        }
        let _lifecycle = lock(&self.inner.loop_lifecycle);
        let mut thread = lock(&self.inner.loop_thread);
        if thread.is_some() {
            return Err(Error::LoopRunning);
        }
        if let Some(on_message) = on_message {
            // One registration forwarding to the latest `on_message`, so that a
            // later loop_start replaces it rather than sharing messages with it.
            let first = lock(&self.inner.loop_on_message)
                .replace(on_message)
                .is_none();
            let forward: Callback<Client> = Arc::new(|client: &Client, data: &Data<'_>| {
                let on_message = lock(&client.inner.loop_on_message).clone();
                if let Some(on_message) = on_message {
                    on_message(client, data);
                }
            });
            // The generic PUBREL slot has one occupant: taking it again is harmless.
            self.on(Command::PubRel, forward.clone(), None, 0);
            if first {
                let has_message: Condition = Arc::new(|data: &Data<'_>| data.message.is_some());
                self.on(Command::Publish, forward, Some(has_message), -1);
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let client = self.clone();
        let stop_seen = stop.clone();
        let handle = std::thread::Builder::new()
            .name("mqtt-loop".into())
            .spawn(move || {
                let mut reactor = lock(&client.inner.reactor);
                while !stop_seen.load(Ordering::Acquire)
                    && !client.inner.closed.load(Ordering::Acquire)
                {
                    reactor.turn(&client, None);
                }
                if !client.is_closed() {
                    // Carry out what was asked just before the stop (a DISCONNECT, say).
                    reactor.turn(&client, Some(Duration::ZERO));
                }
            })
            .map_err(|_| Error::NoMemory)?;
        *thread = Some((handle, stop));
        Ok(())
    }

    pub fn loop_running(&self) -> bool {
        lock(&self.inner.loop_thread).is_some()
    }

    /// Stop the loop thread and wait for it. The connection stays open.
    pub fn loop_stop(&self) -> Result<()> {
        if self.in_callback() {
            return Err(Error::InCallback);
        }
        let _lifecycle = lock(&self.inner.loop_lifecycle);
        let taken = lock(&self.inner.loop_thread).take();
        let Some((handle, stop)) = taken else {
            return Err(Error::LoopNotRunning);
        };
        stop.store(true, Ordering::Release);
        let _ = self.inner.waker.wake();
        let _ = handle.join();
        Ok(())
    }

    /// One reactor turn in the calling thread, waiting at most `timeout` for events.
    /// Returns the error that ended the connection during this turn, if any.
    pub fn run_once(&self, timeout: Duration) -> Result<()> {
        if self.in_callback() {
            return Err(Error::InCallback);
        }
        if self.loop_running() {
            return Err(Error::LoopRunning);
        }
        let Ok(mut reactor) = self.inner.reactor.try_lock() else {
            return Err(Error::LoopRunning);
        };
        match reactor.turn(self, Some(timeout)) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Stop the loop, close the connection and make sure no callback runs again.
    /// From inside a callback the loop thread finishes after that callback returns.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let _ = self.inner.waker.wake();
        if self.in_callback() {
            // Joining the loop thread from itself would deadlock; it exits on its own.
            return;
        }
        let _lifecycle = lock(&self.inner.loop_lifecycle);
        let taken = lock(&self.inner.loop_thread).take();
        if let Some((handle, _)) = taken {
            let _ = handle.join();
        }
        lock(&self.inner.reactor).shutdown(self);
        // Unlock the store now: a handle kept elsewhere must not hold it.
        self.session().detach_store();
    }

    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    pub fn set_credentials(&self, username: Option<&str>, password: Option<&[u8]>) -> Result<()> {
        if username.is_none() && password.is_some() {
            return Err(Error::InvalidArgument);
        }
        for field in [username.map(str::as_bytes), password]
            .into_iter()
            .flatten()
        {
            if field.len() > u16::MAX as usize {
                return Err(Error::InvalidArgument);
            }
        }
        if username.is_some_and(|u| u.contains('\0')) {
            return Err(Error::InvalidUtf8);
        }
        let mut session = self.session();
        let config = session.config_mut();
        config.username = username.map(str::to_owned);
        config.password = password.map(<[u8]>::to_vec);
        Ok(())
    }

    /// Use TLS from the next connection attempt on (`None`: plain TCP again).
    /// Everything is read and parsed here, so a bad CA, certificate or key is
    /// reported now (`TlsCa`, `TlsCert`, `TlsKey`, or `InvalidArgument` for a
    /// bad server name or ALPN protocol); handshake failures come from
    /// `connect` and the DISCONNECT callback.
    #[cfg(feature = "tls")]
    pub fn set_tls(&self, options: Option<&crate::tls::TlsOptions<'_>>) -> Result<()> {
        let setup = match options {
            None => None,
            Some(options) => Some(Arc::new(crate::tls::TlsSetup::new(options)?)),
        };
        lock(&self.inner.options).tls = setup;
        Ok(())
    }

    /// Set (or with `None` clear) the last will.
    pub fn set_will(&self, will: Option<(&str, &[u8], QoS, bool)>) -> Result<()> {
        let will = match will {
            None => None,
            Some((topic, payload, qos, retain)) => {
                if !crate::protocol::topic::valid_topic_name(topic) {
                    return Err(Error::InvalidTopic);
                }
                if payload.len() > u16::MAX as usize {
                    return Err(Error::PayloadTooLarge);
                }
                Some(Will {
                    topic: topic.to_owned(),
                    payload: payload.to_vec(),
                    qos,
                    retain,
                })
            }
        };
        self.session().config_mut().will = will;
        Ok(())
    }

    pub fn set_connect_timeout(&self, timeout: Duration) -> Result<()> {
        if timeout.is_zero() {
            return Err(Error::InvalidArgument);
        }
        lock(&self.inner.options).connect_timeout = timeout;
        self.session().config_mut().connect_timeout = timeout;
        Ok(())
    }

    /// Automatic reconnection delays; `None` turns it off.
    pub fn set_reconnect(&self, delays: Option<(Duration, Duration)>) -> Result<()> {
        if let Some((min, max)) = delays
            && (min.is_zero() || max < min)
        {
            return Err(Error::InvalidArgument);
        }
        lock(&self.inner.options).reconnect = delays;
        Ok(())
    }

    /// Limits of the outgoing queue (messages waiting while offline or while the
    /// in-flight window is full).
    pub fn set_queue_limits(&self, max_messages: usize, max_bytes: usize) -> Result<()> {
        if max_messages == 0 || max_bytes == 0 {
            return Err(Error::InvalidArgument);
        }
        let mut session = self.session();
        let config = session.config_mut();
        config.max_queued_messages = max_messages;
        config.max_queued_bytes = max_bytes;
        Ok(())
    }

    pub fn set_max_inflight(&self, max_inflight: usize) -> Result<()> {
        if max_inflight == 0 || max_inflight > u16::MAX as usize {
            return Err(Error::InvalidArgument);
        }
        self.session().set_max_inflight(max_inflight);
        self.wake();
        Ok(())
    }

    /// Incoming QoS 2 messages held at once between their PUBLISH and PUBREL
    /// (default 1000). A broker starting one more flow is closed with
    /// `TooManyIncoming`.
    pub fn set_max_incoming_qos2(&self, max: usize) -> Result<()> {
        if max == 0 {
            return Err(Error::InvalidArgument);
        }
        self.session().config_mut().max_incoming_qos2 = max;
        Ok(())
    }

    /// Largest packet accepted from the broker and sent to it.
    pub fn set_max_packet_size(&self, bytes: usize) -> Result<()> {
        if !(16..=crate::protocol::codec::MAX_REMAINING_LENGTH + 5).contains(&bytes) {
            return Err(Error::InvalidArgument);
        }
        lock(&self.inner.options).max_packet_size = bytes;
        self.session().config_mut().max_packet_size = bytes;
        Ok(())
    }

    /// Whether QoS 0 messages published while offline are queued (default: refused
    /// with `NotConnected`).
    pub fn set_queue_qos0_offline(&self, queue: bool) {
        self.session().config_mut().queue_qos0_offline = queue;
    }

    pub fn set_resubscribe(&self, resubscribe: bool) {
        self.session().config_mut().resubscribe = resubscribe;
    }

    /// Keep the session in the built-in durable store: one log for this
    /// client id in `directory` (created if missing), locked while the client
    /// lives; `None` keeps it in memory only. Before connect, with an empty
    /// session; see `Session::set_store` for what is loaded. Errors:
    /// `InvalidArgument` (an empty client id, or messages already accepted),
    /// `AlreadyConnected`, `StoreLocked`, `Store`.
    pub fn set_persistence(
        &self,
        directory: Option<&std::path::Path>,
        sync: crate::store::SyncMode,
    ) -> Result<()> {
        let Some(directory) = directory else {
            return self.session().set_store(None);
        };
        let client_id = {
            let session = self.session();
            session.check_store_change(true)?;
            session.config().client_id.clone()
        };
        if client_id.is_empty() {
            return Err(Error::InvalidArgument);
        }
        let durable = sync != crate::store::SyncMode::None;
        let (store, report) = crate::store::LogStore::open(directory, &client_id, durable)?;
        if let Some((offset, len, why)) = report.dropped {
            crate::log::log!(
                self,
                crate::log::Level::Warn,
                "store {}: dropped {len} bytes at offset {offset} ({why}); {} records before it loaded",
                store.log_path().display(),
                report.records
            );
        }
        self.session().set_store(Some((Box::new(store), sync)))
    }

    /// Keep the session in an application's store (see `crate::store::Store`),
    /// synced once per loop turn before that turn's packets are written (as
    /// `SyncMode::Batch`). `None`: memory only. Errors as `set_persistence`.
    pub fn set_store(&self, store: Option<Box<dyn crate::store::Store>>) -> Result<()> {
        self.session()
            .set_store(store.map(|s| (s, crate::store::SyncMode::Batch)))
    }

    /// Deliver diagnostic messages up to `level` to `callback` (on the thread that
    /// runs the client); `None` turns logging off (the default).
    pub fn set_log(&self, callback: Option<crate::log::LogFn>, level: crate::log::Level) {
        self.inner.logger.set(callback, level as u8);
    }

    pub fn is_connected(&self) -> bool {
        self.session().state() == ConnectionState::Connected
    }

    /// Outgoing messages waiting for a connection or for room in the in-flight
    /// window (bounded by `set_queue_limits`).
    pub fn queued_len(&self) -> usize {
        self.session().queued_len()
    }

    /// Topic + payload bytes of the waiting messages, as counted against the
    /// byte limit of `set_queue_limits`.
    pub fn queued_bytes(&self) -> usize {
        self.session().queued_bytes()
    }

    /// Outgoing QoS 1/2 messages sent and not yet completed (PUBACK / PUBCOMP).
    pub fn inflight_len(&self) -> usize {
        self.session().inflight_len()
    }
}

pub(crate) struct CallbackGuard(usize);

impl Drop for CallbackGuard {
    fn drop(&mut self) {
        IN_CALLBACK.with(|c| {
            let mut c = c.borrow_mut();
            if let Some(i) = c.iter().rposition(|&p| p == self.0) {
                c.remove(i);
            }
        });
    }
}

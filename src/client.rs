//! The safe Rust API: a cloneable handle to one MQTT client.
//!
//! The handle validates arguments, changes the session (behind a mutex held
//! only for short, non-blocking steps, never while a callback runs) and
//! queues commands; the reactor driving the client (`reactor/`: its own
//! private one, or one shared with other clients) does all socket work and
//! runs the callbacks.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::dispatch::{Callback, Command, Condition, Data, Handler, Test};
use crate::net::uri::{BrokerUri, ProxyUri};
use crate::protocol::codec::{ProtocolVersion, QoS, SubscribeOptions};
use crate::protocol::properties::{self as prop, Properties, PropertiesBuf, PropertyContext};
use crate::protocol::session::{ConnectionState, Session, SessionConfig, Will, saturate};
pub use crate::reactor::Resolver;
use crate::reactor::core::{Server, ServerList};
use crate::reactor::{Addrs, Core, Reactor, ReactorCommand, Shared, lock};
use crate::{Error, Result};

/// A handle to one MQTT client. Cloning gives another handle to the same client.
///
/// A running loop (its own, or a reactor's) keeps the client's connection
/// open: call [`Client::close`] to end it; dropping the handles does not.
#[derive(Clone)]
#[repr(transparent)]
pub struct Client {
    pub(crate) core: Arc<Core>,
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
            client_id: client_id.into(),
            clean_session,
            ..SessionConfig::default()
        };
        Ok(Client {
            core: Arc::new(Core::new(config)),
        })
    }

    /// The handle a callback receives: the reactor knows only the core.
    fn from_core(core: &Arc<Core>) -> &Client {
        // SAFETY: `Client` is a `repr(transparent)` wrapper of `Arc<Core>`.
        unsafe { &*(core as *const Arc<Core>).cast::<Client>() }
    }

    /// Register a callback (the seed's `on`): specific with a condition, generic without.
    pub fn on(
        &self,
        command: Command,
        callback: Callback<Client>,
        condition: Option<Condition>,
        priority: i32,
    ) {
        self.on_fn(
            command,
            move |client: &Client, data: &Data<'_>| callback(client, data),
            condition,
            priority,
        );
    }

    /// `on` for a callback not yet shared: it is stored in one allocation
    /// (a client of thousands on a reactor pays for each).
    pub fn on_fn<F>(
        &self,
        command: Command,
        callback: F,
        condition: Option<Condition>,
        priority: i32,
    ) where
        F: Fn(&Client, &Data<'_>) + Send + Sync + 'static,
    {
        let forward: Callback<Arc<Core>> = Arc::new(move |core: &Arc<Core>, data: &Data<'_>| {
            callback(Client::from_core(core), data)
        });
        self.core
            .dispatcher
            .on(command, forward, condition, priority);
    }

    /// `on` for a callback the dispatcher may hold inline (a C function and
    /// its user data): it receives the core, which is what a C handle points to.
    pub(crate) fn on_handler(
        &self,
        command: Command,
        handler: Handler<Arc<Core>>,
        condition: Option<Test>,
        priority: i32,
    ) {
        self.core
            .dispatcher
            .on_handler(command, handler, condition, priority);
    }

    /// Whether the calling thread is inside one of this client's callbacks.
    pub fn in_callback(&self) -> bool {
        self.core.in_callback()
    }

    /// Tell the reactor there is work (bytes to write or a command).
    pub(crate) fn wake(&self) {
        self.core.wake();
    }

    pub(crate) fn session(&self) -> MutexGuard<'_, Session> {
        self.core.session()
    }

    /// The reactor driving this client; a private one is made on first need.
    fn driver(&self) -> Result<Arc<Shared>> {
        let mut link = lock(&self.core.link);
        if let Some(reactor) = &*link {
            return Ok(reactor.clone());
        }
        let reactor = Shared::private_for(&self.core).map_err(|_| Error::Io)?;
        *link = Some(reactor.clone());
        Ok(reactor)
    }

    /// The client's own reactor, for its own loop calls; `LoopRunning` once
    /// it was added to a shared one.
    fn own_driver(&self) -> Result<Arc<Shared>> {
        let reactor = self.driver()?;
        if !reactor.private {
            return Err(Error::LoopRunning);
        }
        Ok(reactor)
    }

    /// Connect to `host:port`, send CONNECT and wait for CONNACK (bounded by the
    /// connect timeout). Returns the CONNACK's session-present flag.
    ///
    /// With a server list (`set_servers`) `host` and `port` are ignored (an
    /// empty host is accepted): the list is walked from the entry that
    /// answered last, each entry once, each bounded by the connect timeout.
    pub fn connect(&self, host: &str, keepalive: u16, port: u16) -> Result<bool> {
        self.check_host(host)?;
        if self.in_callback() {
            return Err(Error::InCallback);
        }
        if self.connection_active() {
            return Err(Error::AlreadyConnected);
        }
        self.check_client_id()?;
        self.set_target(host, keepalive, port, None);
        self.connect_and_wait()
    }

    /// The server list, if one is set.
    fn servers(&self) -> Option<Arc<ServerList>> {
        lock(&self.core.options).rare().servers.clone()
    }

    /// `host` must name a broker, unless a server list says where to go.
    fn check_host(&self, host: &str) -> Result<()> {
        if host.len() > 255 || (host.is_empty() && self.servers().is_none()) {
            return Err(Error::InvalidArgument);
        }
        Ok(())
    }

    /// Connect to these brokers instead of the host given to `connect`:
    /// `mqtt://host:port` (TCP) or `mqtts://host:port` (TLS with the
    /// options of `set_tls`; the system trust store when none were set).
    /// Each connection attempt (`connect`, `connect_async`, `reconnect`,
    /// automatic reconnection) walks the list from the entry that answered
    /// last (the first, for a new list), each entry once; automatic
    /// reconnection waits its backoff delay after a round in which every
    /// entry failed, not after each entry. The CONNACK data's
    /// `server_index` says which entry answered.
    ///
    /// An empty slice clears the list. `InvalidArgument` (and nothing
    /// changes) for a URI that does not parse, a ws/wss URI, or an mqtts
    /// URI without the `tls` feature. Takes effect from the next
    /// connection attempt.
    pub fn set_servers(&self, uris: &[&str]) -> Result<()> {
        use crate::net::uri::{BrokerUri, Scheme};
        let mut entries = Vec::with_capacity(uris.len());
        for uri in uris {
            let parsed = BrokerUri::parse(uri)?;
            let tls = match parsed.scheme {
                Scheme::Mqtt => false,
                Scheme::Mqtts if cfg!(feature = "tls") => true,
                _ => return Err(Error::InvalidArgument),
            };
            let host = parsed.host.bare();
            if host.len() > 255 {
                return Err(Error::InvalidArgument);
            }
            entries.push(Server {
                host,
                port: parsed.port,
                tls,
            });
        }
        let servers = (!entries.is_empty()).then(|| {
            Arc::new(ServerList {
                entries,
                last_good: std::sync::atomic::AtomicUsize::new(0),
            })
        });
        if let Some(routes) = lock(&self.core.options).rare_to_set(servers.is_none()) {
            routes.servers = servers;
        }
        Ok(())
    }

    /// [`connect`](Self::connect) to the broker a URI names: `mqtt://` (TCP),
    /// `mqtts://` (TLS), `ws://` (WebSocket), `wss://` (WebSocket over TLS);
    /// default ports 1883, 8883, 80, 443; the path of a ws/wss URI is the
    /// HTTP path (default `/mqtt`); IPv6 literals in brackets. TLS uses the
    /// options of [`set_tls`](Self::set_tls), or the system's trusted roots
    /// when none were set. A malformed URI is `InvalidArgument` and changes
    /// nothing. Later reconnections go to the same URI.
    pub fn connect_uri(&self, uri: &str, keepalive: u16) -> Result<bool> {
        let uri = Self::parse_broker_uri(uri)?;
        if self.in_callback() {
            return Err(Error::InCallback);
        }
        if self.connection_active() {
            return Err(Error::AlreadyConnected);
        }
        self.check_client_id()?;
        self.load_default_tls(&uri)?;
        self.set_target(&uri.host.bare(), keepalive, uri.port, Some(&uri));
        self.connect_and_wait()
    }

    /// [`connect_async`](Self::connect_async) to the broker a URI names (see
    /// [`connect_uri`](Self::connect_uri)).
    pub fn connect_uri_async(&self, uri: &str, keepalive: u16) -> Result<()> {
        let uri = Self::parse_broker_uri(uri)?;
        self.load_default_tls(&uri)?;
        self.start_connect_async(&uri.host.bare(), keepalive, uri.port, Some(&uri))
    }

    /// mqtts/wss without `set_tls`: load the system's trusted roots now, on
    /// the caller's thread (once per client), rather than on the loop's.
    fn load_default_tls(&self, uri: &BrokerUri) -> Result<()> {
        #[cfg(feature = "tls")]
        if uri.scheme.is_tls() {
            let loaded = {
                let options = lock(&self.core.options);
                options.rare().tls.is_some() || options.rare().default_tls.is_some()
            };
            if !loaded {
                let tls = crate::tls::TlsSetup::new(&crate::tls::TlsOptions::default())?;
                lock(&self.core.options).rare_mut().default_tls = Some(Arc::new(tls));
            }
        }
        let _ = uri;
        Ok(())
    }

    fn parse_broker_uri(uri: &str) -> Result<BrokerUri> {
        let uri = BrokerUri::parse(uri)?;
        if uri.host.bare().len() > 255 {
            return Err(Error::InvalidArgument);
        }
        #[cfg(not(feature = "tls"))]
        if uri.scheme.is_tls() {
            return Err(Error::NotSupported);
        }
        Ok(uri)
    }

    /// Make every later connection (`connect`, `connect_uri`, their async
    /// twins, automatic reconnection) go through a proxy:
    /// `http://[user:pass@]host:port` (HTTP CONNECT, Basic credentials) or
    /// `socks5://[user:pass@]host:port` (the broker's name is sent
    /// unresolved); user info is percent-decoded. `None` connects directly.
    /// A malformed URI is `InvalidArgument` and changes nothing. A proxy that
    /// refuses or answers garbage ends the attempt with `Error::Proxy`.
    pub fn set_proxy(&self, uri: Option<&str>) -> Result<()> {
        let proxy = uri.map(ProxyUri::parse).transpose()?;
        if let Some(routes) = lock(&self.core.options).rare_to_set(proxy.is_none()) {
            routes.proxy = proxy;
        }
        Ok(())
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
        if let Some(routes) = lock(&self.core.options).rare_to_set(resolver.is_none()) {
            routes.resolver = resolver;
        }
    }

    /// Where `connect`, `connect_async` and later reconnections go (`uri`:
    /// the scheme and path of `connect_uri`).
    fn set_target(&self, host: &str, keepalive: u16, port: u16, uri: Option<&BrokerUri>) {
        {
            let mut options = lock(&self.core.options);
            // With a server list the host is not used (and may be empty).
            if !host.is_empty() {
                options.set_host(host);
                options.port = port;
            }
            if let Some(routes) = options.rare_to_set(uri.is_none()) {
                routes.scheme = uri.map(|uri| uri.scheme);
                routes.ws_path = uri.map(|uri| uri.path.clone()).unwrap_or_default();
            }
        }
        self.session().config_mut().keep_alive = keepalive;
    }

    /// Start connecting and return at once; the CONNACK callback reports success,
    /// the DISCONNECT callback each failure (automatic reconnection then keeps
    /// trying where that can help). An IP literal needs no name resolution; a
    /// host name is resolved on a short-lived thread so the loop never blocks.
    ///
    /// With a server list (`set_servers`) `host` and `port` are ignored, as
    /// for `connect`.
    pub fn connect_async(&self, host: &str, keepalive: u16, port: u16) -> Result<()> {
        self.check_host(host)?;
        self.start_connect_async(host, keepalive, port, None)
    }

    fn start_connect_async(
        &self,
        host: &str,
        keepalive: u16,
        port: u16,
        uri: Option<&BrokerUri>,
    ) -> Result<()> {
        if self
            .core
            .waits_if_any()
            .is_some_and(|waits| lock(&waits.connect).in_progress.is_some())
        {
            return Err(Error::AlreadyConnected);
        }
        self.check_client_id()?;
        self.driver()?;
        let intent = self.claim_attempt()?;
        self.set_target(host, keepalive, port, uri);
        if self.servers().is_some() {
            // The reactor walks the list (and resolves its names).
            self.core.push_command(ReactorCommand::Connect {
                attempt: None,
                addrs: Vec::new().into(),
                intent,
            });
            return Ok(());
        }
        // The proxy's address when one is set.
        let dial = lock(&self.core.options).dial_target();
        if let Some(Ok(ip)) = dial.as_ref().map(|(h, _)| h.parse::<std::net::IpAddr>()) {
            let addrs = Addrs::One(SocketAddr::new(ip, dial.map_or(port, |(_, p)| p)));
            self.core.push_command(ReactorCommand::Connect {
                attempt: None,
                addrs,
                intent,
            });
            return Ok(());
        }
        self.core
            .resolve_in_background(move |result| match result {
                Ok(addrs) => ReactorCommand::Connect {
                    attempt: None,
                    addrs: addrs.into(),
                    intent,
                },
                Err(error) => ReactorCommand::Failed { error, intent },
            })
            .inspect_err(|_| self.core.set_attempt_in_progress(false))
    }

    /// A file descriptor that becomes readable whenever the client has work
    /// (socket ready, a command from another thread): for external event
    /// loops. Once the client was added to a reactor, that reactor's.
    pub fn event_fd(&self) -> Result<std::os::fd::RawFd> {
        Ok(self.driver()?.event_fd())
    }

    /// Time until the client must run again even without events, for external
    /// event loops. `Err(LoopRunning)` while another thread runs the client,
    /// or once it was added to a reactor.
    pub fn next_timeout(&self) -> Result<Option<Duration>> {
        self.own_driver()?.next_timeout()
    }

    /// Whether queued bytes wait for the socket to become writable.
    pub fn wants_write(&self) -> Result<bool> {
        self.own_driver()?.wants_write(&self.core)
    }

    /// Connect again to the host of the last `connect`, with the same options
    /// (with a server list: walk it, from the entry that answered last).
    pub fn reconnect(&self) -> Result<bool> {
        if self.in_callback() {
            return Err(Error::InCallback);
        }
        let target_known = {
            let options = lock(&self.core.options);
            options.host().is_some() || options.rare().servers.is_some()
        };
        if !target_known {
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
        self.core.attempt_in_progress()
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
        self.core.claim_attempt()
    }

    fn connect_and_wait(&self) -> Result<bool> {
        let servers = self.servers().map_or(0, |list| list.entries.len());
        // With a server list the reactor resolves each entry's name.
        let addrs = match servers {
            0 => self.core.resolve()?,
            _ => Vec::new(),
        };
        let reactor = self.driver()?;
        // Each entry of a server list gets the whole connect timeout.
        let timeout = self
            .session()
            .config()
            .connect_timeout()
            .saturating_mul(u32::try_from(servers.max(1)).unwrap_or(u32::MAX));
        let (attempt, intent) = {
            let mut wait = lock(&self.core.waits().connect);
            if wait.in_progress.is_some() {
                return Err(Error::AlreadyConnected);
            }
            let intent = self.claim_attempt()?;
            // Compared for equality only: wrapping (never to 0, "none") is harmless.
            wait.next_attempt = wait.next_attempt.wrapping_add(1).max(1);
            let attempt = wait.next_attempt;
            wait.in_progress = NonZeroU32::new(attempt);
            (attempt, intent)
        };
        self.core.push_command(ReactorCommand::Connect {
            attempt: Some(attempt),
            addrs: addrs.into(),
            intent,
        });
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
                let mut wait = lock(&self.core.waits().connect);
                if wait.in_progress.map(NonZeroU32::get) == Some(attempt) {
                    wait.in_progress = None;
                    // The attempt must not go on after this call reported it
                    // failed: supersede it (clearing its bit in the same step,
                    // so a new connect may start at once), and have the
                    // reactor drop it.
                    let intent = self.core.supersede_attempt();
                    self.core
                        .push_command(ReactorCommand::StopReconnecting { intent });
                }
                return Err(if closed {
                    Error::NotConnected
                } else {
                    Error::Timeout
                });
            }
            let step = (give_up - now).min(Duration::from_millis(100));
            if reactor.thread_running() || !reactor.try_turn(step) {
                let waits = self.core.waits();
                let wait = lock(&waits.connect);
                let step = (give_up - now).min(Duration::from_millis(50));
                let _unused = waits
                    .connect_done
                    .wait_timeout(wait, step)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    fn take_connect_result(&self, attempt: u32) -> Option<Result<bool>> {
        let mut wait = lock(&self.core.waits().connect);
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
            let wait = lock(&self.core.options).publish_wait();
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
        if !self.loop_running()
            && let Some(reactor) = self.core.reactor()
        {
            let before = session.unsent_len();
            drop(session);
            // Write what the socket takes now; sleep (until it is
            // writable again, at most 50 ms) only if it took nothing.
            if reactor.try_turn(Duration::ZERO) {
                if self.session().unsent_len() >= before {
                    reactor.try_turn(left.min(Duration::from_millis(50)));
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
        let waits = self.core.waits();
        waits.publish_waiters.fetch_add(1, Ordering::SeqCst);
        // The reactor must write (it may be asleep with nothing else to do).
        self.wake();
        let (session, _) = waits
            .drained
            .wait_timeout(session, left)
            .unwrap_or_else(|e| e.into_inner());
        waits.publish_waiters.fetch_sub(1, Ordering::SeqCst);
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
        let max_bytes = saturate(max_bytes);
        self.session()
            .config_mut()
            .update_limits(|limits| limits.max_unsent_bytes = max_bytes);
        lock(&self.core.options).set_publish_wait(wait);
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
            || self.core.attempt_in_progress()
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
        self.set_v5_properties(props, PropertyContext::Connect, |extras| {
            &mut extras.connect_properties
        })
    }

    /// MQTT 5 will properties (will delay, message expiry, content type, ...)
    /// for the next connections (`None` clears them).
    pub fn set_will_properties(&self, props: Option<Properties<'_>>) -> Result<()> {
        self.set_v5_properties(props, PropertyContext::Will, |extras| {
            &mut extras.will_properties
        })
    }

    fn set_v5_properties(
        &self,
        props: Option<Properties<'_>>,
        ctx: PropertyContext,
        field: impl FnOnce(&mut crate::protocol::session::ConfigExtras) -> &mut PropertiesBuf,
    ) -> Result<()> {
        let mut session = self.session();
        let config = session.config_mut();
        let props = props.unwrap_or_default();
        if props.is_empty() {
            if let Some(extras) = config.extras_to_set(true) {
                field(extras).clear();
            }
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
        field(config.extras_mut()).set(props);
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
        session
            .config_mut()
            .update_limits(|limits| limits.topic_alias_max = max);
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
        let (intent, attempting) = self.core.new_intent();
        // The session stays locked until the command is queued: a loop thread
        // taking the command at once must find the DISCONNECT already queued,
        // or it would send one itself and this call would report NotConnected.
        let mut session = self.session();
        let sent = session.disconnect_with(Instant::now(), reason_code, props);
        // When not connected, the command still cancels a pending automatic
        // reconnection, which is what the caller asked for, and gives up an
        // attempt under way, which counts as success.
        self.core
            .commands
            .push(ReactorCommand::StopReconnecting { intent });
        drop(session);
        if sent.is_err() && !attempting {
            return sent;
        }
        self.wake();
        if !self.in_callback()
            && !self.loop_running()
            && let Some(reactor) = self.core.reactor()
        {
            // Nobody else will write the DISCONNECT: do it now.
            reactor.try_turn(Duration::ZERO);
        }
        Ok(())
    }

    /// Run the client's own reactor on a new thread until `loop_stop`.
    /// `on_message`, when given, receives every application message once
    /// (QoS 0, 1 and 2). `LoopRunning` once the client was added to a reactor.
    pub fn loop_start(&self, on_message: Option<Callback<Client>>) -> Result<()> {
        self.loop_start_with(on_message.map(native_on_message))
    }

    /// `loop_start` with the message callback as the dispatcher holds it
    /// (a C one inline).
    pub(crate) fn loop_start_with(&self, on_message: Option<Handler<Arc<Core>>>) -> Result<()> {
        if self.in_callback() {
            return Err(Error::InCallback);
        }
        let reactor = self.own_driver()?;
        if reactor.thread_running() {
            return Err(Error::LoopRunning);
        }
        self.install_on_message(on_message);
        reactor.start()
    }

    /// Register `on_message` to see every application message once, in
    /// one slot of the callback table: a later one replaces it rather than
    /// sharing messages with it.
    fn install_on_message(&self, on_message: Option<Handler<Arc<Core>>>) {
        let Some(on_message) = on_message else {
            return;
        };
        // The same condition for every client, and the mark of the slot.
        static HAS_MESSAGE: OnceLock<Condition> = OnceLock::new();
        let has_message =
            HAS_MESSAGE.get_or_init(|| Arc::new(|data: &Data<'_>| data.message.is_some()));
        let dispatcher = &self.core.dispatcher;
        // The generic PUBREL slot has one occupant: taking it again is harmless.
        dispatcher.on_handler(Command::PubRel, on_message.clone(), None, 0);
        dispatcher.replace_specific(Command::Publish, on_message, has_message, -1);
    }

    /// Whether a thread (the client's own loop thread, or a reactor's), or a
    /// reactor the client was added to, drives the client.
    pub fn loop_running(&self) -> bool {
        self.core
            .reactor()
            .is_some_and(|reactor| !reactor.private || reactor.thread_running())
    }

    /// Stop the loop thread and wait for it. The connection stays open.
    /// `LoopRunning` once the client was added to a reactor.
    pub fn loop_stop(&self) -> Result<()> {
        if self.in_callback() {
            return Err(Error::InCallback);
        }
        match self.core.reactor() {
            Some(reactor) if reactor.private => reactor.stop(),
            Some(_) => Err(Error::LoopRunning),
            None => Err(Error::LoopNotRunning),
        }
    }

    /// One turn of the client's own reactor in the calling thread, waiting
    /// at most `timeout` for events. Returns the error that ended the
    /// connection during this turn, if any.
    pub fn run_once(&self, timeout: Duration) -> Result<()> {
        if self.in_callback() {
            return Err(Error::InCallback);
        }
        match self.own_driver()?.run(Some(timeout))? {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Let `reactor` drive this client from now on, connected or not (its
    /// connection moves along). `on_message` as for `loop_start`. From then
    /// on `loop_start`, `run_once` and `loop_stop` answer `LoopRunning`.
    /// `LoopRunning` too when the client's own loop runs, or it belongs to
    /// a reactor already; `InvalidArgument` once it was closed.
    pub fn add_to_reactor(
        &self,
        reactor: &Reactor,
        on_message: Option<Callback<Client>>,
    ) -> Result<()> {
        self.add_to_reactor_with(reactor, on_message.map(native_on_message))
    }

    /// `add_to_reactor` with the message callback as the dispatcher holds it.
    pub(crate) fn add_to_reactor_with(
        &self,
        reactor: &Reactor,
        on_message: Option<Handler<Arc<Core>>>,
    ) -> Result<()> {
        if self.is_closed() {
            return Err(Error::InvalidArgument);
        }
        let shared = &reactor.shared;
        let mut link = lock(&self.core.link);
        let connection = match link.as_ref() {
            Some(current) if !current.private => return Err(Error::LoopRunning),
            Some(own) => {
                if own.thread_running() || own.in_turn() {
                    return Err(Error::LoopRunning);
                }
                shared.check_open()?;
                own.take_for_move(&self.core)?
            }
            None => {
                shared.check_open()?;
                None
            }
        };
        self.install_on_message(on_message);
        *link = Some(shared.clone());
        shared.adopt(&self.core, connection);
        Ok(())
    }

    /// Stop the loop, close the connection and make sure no callback runs
    /// again. From another thread it waits for a callback in progress; from
    /// inside one of this client's callbacks it takes effect when that
    /// callback returns.
    pub fn close(&self) {
        let core = &self.core;
        core.closed.store(true, Ordering::Release);
        let Some(reactor) = core.reactor() else {
            // Unlock the store now: a handle kept elsewhere must not hold it.
            core.session().detach_store();
            return;
        };
        if self.in_callback() {
            // The turn running this callback removes the client afterwards.
            reactor.intake.force_wake();
            return;
        }
        core.wait_for_callbacks();
        if reactor.private {
            let _ = reactor.stop();
            reactor.release(core, true);
        } else {
            reactor.release(core, false);
        }
    }

    pub fn is_closed(&self) -> bool {
        self.core.is_closed()
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
        let clearing = username.is_none() && password.is_none();
        if let Some(extras) = session.config_mut().extras_to_set(clearing) {
            extras.username = username.map(str::to_owned);
            extras.password = password.map(<[u8]>::to_vec);
        }
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
        if let Some(routes) = lock(&self.core.options).rare_to_set(setup.is_none()) {
            routes.tls = setup;
        }
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
        let mut session = self.session();
        if let Some(extras) = session.config_mut().extras_to_set(will.is_none()) {
            extras.will = will;
        }
        Ok(())
    }

    pub fn set_connect_timeout(&self, timeout: Duration) -> Result<()> {
        if timeout.is_zero() {
            return Err(Error::InvalidArgument);
        }
        self.session().config_mut().set_connect_timeout(timeout);
        Ok(())
    }

    /// Automatic reconnection delays; `None` turns it off.
    pub fn set_reconnect(&self, delays: Option<(Duration, Duration)>) -> Result<()> {
        if let Some((min, max)) = delays
            && (min.is_zero() || max < min)
        {
            return Err(Error::InvalidArgument);
        }
        lock(&self.core.options).set_reconnect(delays);
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
        config.update_limits(|limits| {
            limits.max_queued_messages = saturate(max_messages);
            limits.max_queued_bytes = saturate(max_bytes);
        });
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
        // Packet ids are 16-bit: no more than 65535 can be held at once anyway.
        let max = u16::try_from(max).unwrap_or(u16::MAX);
        self.session()
            .config_mut()
            .update_limits(|limits| limits.max_incoming_qos2 = max);
        Ok(())
    }

    /// Largest packet accepted from the broker and sent to it.
    pub fn set_max_packet_size(&self, bytes: usize) -> Result<()> {
        if !(16..=crate::protocol::codec::MAX_REMAINING_LENGTH + 5).contains(&bytes) {
            return Err(Error::InvalidArgument);
        }
        let bytes = saturate(bytes);
        self.session()
            .config_mut()
            .update_limits(|limits| limits.max_packet_size = bytes);
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
                &*self.core,
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
        self.core.logger.set(callback, level as u8);
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

/// A Rust message callback as the dispatcher holds it.
fn native_on_message(on_message: Callback<Client>) -> Handler<Arc<Core>> {
    Handler::Native(Arc::new(move |core: &Arc<Core>, data: &Data<'_>| {
        on_message(Client::from_core(core), data)
    }))
}

//! One client's connection as the reactor drives it, independent of how
//! many share the loop: the state machine (resolving, TCP connecting, TLS
//! handshake, CONNECT sent, up, closing, backing off before a reconnection),
//! reads into the reactor's buffer, writes the session's output, and the
//! deadlines it needs. Incoming packets go on to `inbound.rs`.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::commands::ReactorCommand;
use super::core::{Core, Server, ServerList, lock};
use super::transport::{Transport, io_error};
use crate::Error;
use crate::dispatch::{Command, Data};
use crate::log::{Level, log};
use crate::net::Progress;
use crate::net::proxy::{ProxyError, ProxyHandshake};
use crate::net::uri::{BrokerUri, Host, Scheme};
use crate::net::websocket::{Upgrade, WsError, WsStream};
use crate::protocol::codec::{self, ProtocolVersion};
use crate::protocol::properties::Properties;
use crate::protocol::session::ConnectionState;
use crate::protocol::stamp::Stamp;
use crate::protocol::v5::AfterRefusal;

/// Reads per turn before timers and writes get their chance under a flood.
const READS_PER_TURN: usize = 16;
const READ_CHUNK: usize = 64 * 1024;
/// Unwritten bytes (mostly acks of incoming messages) beyond which reading
/// pauses until the socket drains: a peer that floods us but does not read
/// cannot make us buffer without limit.
const MAX_UNWRITTEN: usize = 1024 * 1024;

/// Where a connection registers its socket: the reactor's poll, under the
/// token of the connection's slot.
#[derive(Clone, Copy)]
pub(crate) struct Io<'a> {
    pub registry: &'a Registry,
    pub token: Token,
    pub gate: &'a ConnectGate,
}

/// How many of a reactor's clients may be connecting at once (TCP, TLS and
/// CONNECT until CONNACK or failure). Thousands of clients started together
/// would otherwise overflow the broker's listen backlog (mosquitto's is 100):
/// the dropped SYNs are retried by the kernel after 1, 3, 7 s, so connecting
/// all of them took seconds instead of a fraction of one. The others wait in
/// the reactor's queue, their connect timeout not yet running.
pub(crate) struct ConnectGate {
    pub connecting: Cell<usize>,
    pub limit: Cell<usize>,
}

impl ConnectGate {
    pub const DEFAULT_LIMIT: usize = 64;

    pub fn new() -> ConnectGate {
        ConnectGate {
            connecting: Cell::new(0),
            limit: Cell::new(Self::DEFAULT_LIMIT),
        }
    }

    pub fn has_room(&self) -> bool {
        self.connecting.get() < self.limit.get()
    }

    /// A client starts connecting (room checked, or given by the reactor).
    pub fn enter(&self) {
        self.connecting.set(self.connecting.get() + 1);
    }

    /// A client's attempt is over, or it left the reactor.
    pub fn leave(&self) {
        self.connecting.set(self.connecting.get() - 1);
    }
}

/// Buffers the reactor lends to the connection it is reading, so that an
/// idle connection holds none.
#[derive(Default)]
pub(crate) struct Scratch {
    pub read_buf: Vec<u8>,
    /// The topic of the message being delivered, NUL-terminated for C.
    pub topic_buf: Vec<u8>,
}

/// Plain TCP, or TLS: after `connect`, when the core has a TLS
/// configuration; after `connect_uri`, when the scheme says so (mqtts, wss:
/// the configured TLS options, else the system's trusted roots); for an entry
/// of the server list (`server`), when it is `mqtts` (the client's TLS
/// options, else the system trust store). Nothing is sent yet: a proxy
/// handshake runs on the TCP stream before the TLS one starts.
fn transport_for(
    core: &Arc<Core>,
    stream: TcpStream,
    server: Option<&Server>,
) -> Result<Transport, Error> {
    #[allow(unused_mut)]
    let mut options = lock(&core.options);
    let tls_wanted = match server {
        Some(server) => server.tls,
        None => options.rare().scheme.is_some_and(Scheme::is_tls),
    };
    #[cfg(feature = "tls")]
    {
        let (tls, host) = match server {
            Some(server) if server.tls => {
                (Some(options.tls_or_system_roots()?), server.host.clone())
            }
            Some(_) => (None, String::new()),
            None => {
                let tls = match options.rare().scheme {
                    None => options.rare().tls.clone(),
                    Some(_) if !tls_wanted => None,
                    Some(_) => Some(options.tls_or_system_roots()?),
                };
                // The name TLS verifies; without TLS none is needed.
                let host = match tls {
                    Some(_) => options.host().unwrap_or_default().to_owned(),
                    None => String::new(),
                };
                (tls, host)
            }
        };
        drop(options);
        if let Some(tls) = tls {
            return Ok(Transport::Tls(Box::new(tls.connect(&host, stream)?)));
        }
    }
    if tls_wanted {
        return Err(Error::NotSupported);
    }
    Ok(Transport::Plain(stream))
}

/// The handshakes to run after TCP connects besides TLS, in this order.
/// One box, only while one is to run: most connections have neither.
struct Handshakes {
    proxy: Option<ProxyHandshake>,
    upgrade: Option<Upgrade>,
}

/// The handshakes to run after TCP connects, besides TLS: the proxy's (if a
/// proxy is set) and the WebSocket upgrade (ws, wss). For an entry of the
/// server list (`server`), the proxy's target is that entry, and there is no
/// upgrade (entries are mqtt or mqtts).
fn setup_for(core: &Arc<Core>, server: Option<&Server>) -> Result<Option<Box<Handshakes>>, Error> {
    let options = lock(&core.options);
    let (host, port) = match server {
        Some(server) => (server.host.as_str(), server.port),
        None => (options.host().unwrap_or_default(), options.port),
    };
    let target = match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => Host::V4(a),
        Ok(IpAddr::V6(a)) => Host::V6(a),
        Err(_) => Host::Name(host.to_owned()),
    };
    let routes = options.rare();
    let proxy = match &routes.proxy {
        Some(proxy) => Some(ProxyHandshake::new(proxy, &target, port)?),
        None => None,
    };
    let upgrade = match routes.scheme {
        Some(scheme) if scheme.is_websocket() && server.is_none() => {
            Some(Upgrade::for_uri(&BrokerUri {
                scheme,
                host: target,
                port,
                path: routes.ws_path.clone(),
            })?)
        }
        _ => None,
    };
    Ok((proxy.is_some() || upgrade.is_some()).then(|| Box::new(Handshakes { proxy, upgrade })))
}

/// A failed handshake: the error the attempt ends with, and why, for the log.
struct Failure {
    error: Error,
    why: String,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure {
            error,
            why: error.to_string(),
        }
    }
}

impl From<ProxyError> for Failure {
    fn from(e: ProxyError) -> Failure {
        Failure {
            why: format!("proxy: {e}"),
            error: e.into(),
        }
    }
}

impl From<WsError> for Failure {
    fn from(e: WsError) -> Failure {
        Failure {
            why: format!("WebSocket: {e}"),
            error: e.into(),
        }
    }
}

/// What a step of the connection setup came to.
enum Setup {
    /// Waiting for the socket.
    Blocked,
    /// The WebSocket upgrade is done; these bytes came after the response.
    Upgraded(Vec<u8>),
    /// Every handshake is done: MQTT may start.
    Ready,
}

/// Run the proxy handshake over the raw TCP stream as far as the socket
/// allows: true once the tunnel is open.
fn drive_proxy(
    proxy: &mut ProxyHandshake,
    tcp: &mut TcpStream,
    readable: &mut bool,
    writable: &mut bool,
) -> Result<bool, Failure> {
    let mut buf = [0u8; 512];
    loop {
        while !proxy.output().is_empty() {
            match tcp.write(proxy.output()) {
                Ok(0) => return Err(proxy.closed().into()),
                Ok(n) => proxy.written(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    *writable = false;
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(proxy.closed().into()),
            }
        }
        match tcp.read(&mut buf) {
            Ok(0) => return Err(proxy.closed().into()),
            Ok(n) => match proxy.input(&buf[..n])? {
                Progress::Continue => {}
                // The broker (or TLS server) speaks only when spoken to:
                // bytes after the proxy's reply are the proxy's garbage.
                Progress::Done(surplus) if !surplus.is_empty() => {
                    return Err(ProxyError::Garbage("bytes after the reply").into());
                }
                Progress::Done(_) => return Ok(true),
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *readable = false;
                return Ok(false);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(proxy.closed().into()),
        }
    }
}

/// Run the WebSocket upgrade over the transport (TCP or TLS) as far as the
/// socket allows: the bytes after the server's response once it is done.
fn drive_upgrade(
    upgrade: &mut Upgrade,
    transport: &mut Transport,
    readable: &mut bool,
    writable: &mut bool,
) -> Result<Option<Vec<u8>>, Failure> {
    let mut buf = [0u8; 1024];
    loop {
        while !upgrade.output().is_empty() || transport.has_buffered_output() {
            match transport.write(upgrade.output()) {
                Ok(0) if upgrade.output().is_empty() => break,
                Ok(0) => return Err(Error::ConnectionLost.into()),
                Ok(n) => upgrade.written(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    *writable = false;
                    return Ok(None);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(&e, Error::ConnectionLost).into()),
            }
        }
        match transport.read(&mut buf) {
            Ok(0) => return Err(Error::ConnectionLost.into()),
            Ok(n) => {
                if let Progress::Done(surplus) = upgrade.input(&buf[..n])? {
                    return Ok(Some(surplus));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *readable = false;
                return Ok(None);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(&e, Error::ConnectionLost).into()),
        }
    }
}

/// A random draw for reconnection delays: one process-wide sequence
/// (splitmix64 over a counter, from a seed of the clock and the process id),
/// so that every client draws differently without keeping a generator of its
/// own. Quality beyond spreading a fleet's reconnections is not needed.
fn jitter() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        clock ^ (u64::from(std::process::id()) << 32)
    });
    let mut z = seed.wrapping_add(COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A walk through the server list: each entry once, from the one that
/// answered last.
struct Round {
    list: Arc<ServerList>,
    start: u32,
    /// Entries tried so far in this round (the current one included).
    tried: u32,
}

impl Round {
    /// The entry being tried.
    fn current(&self) -> Option<&Server> {
        let n = self.list.entries.len();
        let index = (self.start as usize + self.tried.checked_sub(1)? as usize) % n;
        self.list.entries.get(index)
    }
}

/// Hand the new connection to the session (it queues CONNECT), with what is
/// left of the connect timeout as the CONNACK deadline. Returns the protocol
/// the connection speaks.
fn open_session(core: &Arc<Core>, connect_deadline: Option<Instant>) -> ProtocolVersion {
    let now = Instant::now();
    let mut session = core.session();
    session.connection_opened(now);
    if let Some(deadline) = connect_deadline {
        session.bound_connack_deadline(deadline.max(now + Duration::from_millis(1)));
    }
    session.config().protocol
}

pub(super) struct Socket {
    transport: Transport,
    /// The TCP connection is up (the handshakes below may still run).
    connected: bool,
    /// The proxy handshake, until the tunnel is open, and the WebSocket
    /// upgrade (after TLS), until the server accepted it.
    setup: Option<Box<Handshakes>>,
    /// TLS handshake to run (after the proxy's) or in progress.
    handshaking: bool,
    /// Every handshake finished and CONNECT handed to the session.
    established: bool,
    /// CONNACK accepted on this connection.
    accepted: bool,
    /// Edge-triggered readiness not yet used up.
    readable: bool,
    /// The peer's FIN or an error was reported: read until read() says so,
    /// since no further edge will come.
    read_closed: bool,
    writable: bool,
}

impl Socket {
    /// Run the pending handshakes in order, as far as the socket allows.
    fn setup_step(&mut self) -> Result<Setup, Failure> {
        if let Some(setup) = self.setup.as_deref_mut()
            && let Some(proxy) = setup.proxy.as_mut()
        {
            let tcp = self.transport.tcp_mut();
            if !drive_proxy(proxy, tcp, &mut self.readable, &mut self.writable)? {
                return Ok(Setup::Blocked);
            }
            setup.proxy = None;
        }
        if self.handshaking {
            #[cfg(feature = "tls")]
            if let Transport::Tls(tls) = &mut self.transport {
                use crate::tls::Handshake;
                match tls.handshake(&mut self.readable, &mut self.writable) {
                    Handshake::Blocked => return Ok(Setup::Blocked),
                    Handshake::Done => {}
                    Handshake::Failed(error) => return Err(error.into()),
                }
            }
            self.handshaking = false;
        }
        let upgrade = self.setup.as_deref_mut().and_then(|s| s.upgrade.as_mut());
        if let Some(upgrade) = upgrade {
            let Some(surplus) = drive_upgrade(
                upgrade,
                &mut self.transport,
                &mut self.readable,
                &mut self.writable,
            )?
            else {
                return Ok(Setup::Blocked);
            };
            self.setup = None;
            return Ok(Setup::Upgraded(surplus));
        }
        self.setup = None;
        Ok(Setup::Ready)
    }
}

pub(crate) struct Connection {
    pub(super) conn: Option<Socket>,
    /// The unread start of a partial packet, kept between reads. Boxed:
    /// one word for the idle clients of thousands that never had one; the
    /// buffer, once made, is reused until the connection drops.
    #[allow(clippy::box_collection)]
    partial: Option<Box<Vec<u8>>>,
    /// During a read: the unhandled bytes of the reactor's read buffer.
    /// (u32: a frame is at most 256 MiB.)
    pub(super) read_start: u32,
    pub(super) read_end: u32,
    /// Bumped whenever a socket is dropped: what was read from it is void
    /// (compared within one read only: no read sees 256 sockets dropped).
    epoch: u8,
    /// The attempt under way or the backoff before the next (`None` once
    /// connected: see `Dial`).
    dial: Option<Box<Dial>>,
    /// Automatic reconnection is armed (after a successful connect, until
    /// `disconnect` or a refusal that retrying cannot fix).
    pub(super) keep_reconnecting: bool,
    /// What the current connection speaks (decoding depends on it).
    pub(super) protocol: ProtocolVersion,
    /// The DISCONNECT reason code we sent when closing for a protocol error,
    /// for the DISCONNECT callback.
    pub(super) sent_reason: u8,
    /// The last refusal or server DISCONNECT said retrying cannot help.
    pub(super) stop_after_refusal: bool,
    /// Counted in the reactor's `ConnectGate` (see `Engine::settle_gate`).
    pub(super) holds_permit: bool,
    /// Its place in the reactor's queue for room to connect (`Waiting`).
    pub(super) waiting: Waiting,
}

/// Where a connection stands in the reactor's queue for room under the
/// connect limit: three flags in one byte.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(super) struct Waiting(u8);

impl Waiting {
    /// Waiting for room to connect.
    pub const PARKED: u8 = 1;
    /// Given room while parked: start the attempt on the next run.
    pub const RESUME: u8 = 2;
    /// In the reactor's waiting room (not twice).
    pub const IN_ROOM: u8 = 4;

    pub fn get(self, flag: u8) -> bool {
        self.0 & flag != 0
    }

    /// Set `flag` to `on`; what it was.
    pub fn replace(&mut self, flag: u8, on: bool) -> bool {
        let was = self.get(flag);
        if on {
            self.0 |= flag;
        } else {
            self.0 &= !flag;
        }
        was
    }

    /// Clear `flag`; whether it was set.
    pub fn take(&mut self, flag: u8) -> bool {
        self.replace(flag, false)
    }
}

/// A number for a name resolution started, so that a late answer to an
/// earlier one is recognised: process-wide (a connection holds none), never
/// 0 ("none"), even after wrapping.
fn next_resolve_generation() -> u32 {
    static LAST: AtomicU32 = AtomicU32::new(0);
    loop {
        let generation = LAST.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        if generation != 0 {
            return generation;
        }
    }
}

/// What a connection attempt, and the backoff before the next one, keeps.
/// Boxed and dropped once the CONNACK accepted the connection: thousands of
/// idle connected clients on a reactor hold none of it.
#[derive(Default)]
pub(super) struct Dial {
    /// The addresses this attempt walks (see `Core::known_addrs` for those
    /// of an attempt that has no fresh ones).
    addrs: Addrs,
    pub(super) next_addr: u32,
    /// The `connect` call waiting for the current attempt, if any (attempt
    /// ids start at 1).
    attempt: Option<NonZeroU32>,
    /// The current attempt comes from `connect_async`.
    async_attempt: bool,
    connect_deadline: Option<Stamp>,
    reconnect_at: Option<Stamp>,
    /// The automatic reconnection waiting for its name resolution, if any
    /// (generations start at 1).
    resolving: Option<NonZeroU32>,
    failed_attempts: u32,
    /// With a server list: the walk the current attempt belongs to.
    round: Option<Round>,
    /// With a server list: the index of the entry of the current attempt
    /// (the CONNACK data's `server_index`).
    pub(super) server_index: Option<u32>,
}

/// What a connection without a `Dial` reads.
static NO_DIAL: Dial = Dial {
    addrs: Addrs::NONE,
    next_addr: 0,
    attempt: None,
    async_attempt: false,
    connect_deadline: None,
    reconnect_at: None,
    resolving: None,
    failed_attempts: 0,
    round: None,
    server_index: None,
};

/// The addresses an attempt walks. A single one (an IP literal, or a name
/// with one address) is kept inline.
pub(crate) enum Addrs {
    One(SocketAddr),
    List(Vec<SocketAddr>),
}

impl Addrs {
    pub(crate) const NONE: Addrs = Addrs::List(Vec::new());

    fn get(&self, i: usize) -> Option<SocketAddr> {
        match self {
            Addrs::One(addr) => (i == 0).then_some(*addr),
            Addrs::List(list) => list.get(i).copied(),
        }
    }

    fn is_empty(&self) -> bool {
        matches!(self, Addrs::List(list) if list.is_empty())
    }
}

impl Default for Addrs {
    fn default() -> Addrs {
        Addrs::NONE
    }
}

impl From<Vec<SocketAddr>> for Addrs {
    fn from(list: Vec<SocketAddr>) -> Addrs {
        match list[..] {
            [one] => Addrs::One(one),
            _ => Addrs::List(list),
        }
    }
}

impl Connection {
    pub fn new() -> Connection {
        Connection {
            conn: None,
            partial: None,
            read_start: 0,
            read_end: 0,
            epoch: 0,
            dial: None,
            keep_reconnecting: false,
            protocol: ProtocolVersion::V311,
            sent_reason: 0,
            stop_after_refusal: false,
            holds_permit: false,
            waiting: Waiting::default(),
        }
    }

    /// The current attempt's state (all unset when there is none).
    pub(super) fn dial_ref(&self) -> &Dial {
        self.dial.as_deref().unwrap_or(&NO_DIAL)
    }

    /// The same to change, allocated at first need.
    fn dial(&mut self) -> &mut Dial {
        self.dial.get_or_insert_with(Box::default)
    }

    /// The same to clear: a connection without one has nothing to clear.
    fn dial_if_any(&mut self) -> Option<&mut Dial> {
        self.dial.as_deref_mut()
    }

    #[cfg(test)]
    pub(super) fn has_dial(&self) -> bool {
        self.dial.is_some()
    }

    /// Take the socket's readiness from a poll event.
    pub fn on_event(&mut self, event: &mio::event::Event) {
        if let Some(conn) = self.conn.as_mut() {
            conn.readable |= event.is_readable() || event.is_read_closed() || event.is_error();
            conn.read_closed |= event.is_read_closed() || event.is_error();
            conn.writable |= event.is_writable() || event.is_error();
        }
    }

    /// Register the socket (if any) with another poll: the client moved
    /// from its private reactor to a shared one. Readiness is assumed, so
    /// nothing that arrived meanwhile waits for an edge that will not come.
    pub fn register(&mut self, io: Io<'_>) {
        if let Some(conn) = self.conn.as_mut() {
            let _ = io.registry.register(
                conn.transport.tcp_mut(),
                io.token,
                Interest::READABLE | Interest::WRITABLE,
            );
            conn.readable = true;
            conn.writable = true;
        }
    }

    pub fn deregister(&mut self, io: Io<'_>) {
        if let Some(conn) = self.conn.as_mut() {
            let _ = io.registry.deregister(conn.transport.tcp_mut());
        }
    }

    /// Commands from API calls, then everything else that is due.
    pub fn work(&mut self, core: &Arc<Core>, io: Io<'_>, scratch: &mut Scratch) -> Option<Error> {
        let commands = core.commands.take();
        let current = core.current_intent();
        for command in commands {
            match command {
                // Overtaken by a later connect or disconnect: dropped, and a
                // blocking connect waiting for it is told so.
                ReactorCommand::Connect {
                    attempt, intent, ..
                } if intent != current => {
                    if let Some(attempt) = attempt {
                        finish_attempt(core, attempt, Err(Error::NotConnected));
                    }
                }
                ReactorCommand::Failed { intent, .. }
                | ReactorCommand::StopReconnecting { intent }
                    if intent != current => {}
                ReactorCommand::Connect {
                    attempt,
                    addrs,
                    intent,
                } => {
                    if !self.holds_permit
                        && self.conn.is_none()
                        && self.dial.is_none()
                        && !io.gate.has_room()
                    {
                        // No room under the connect limit: wait for it with
                        // the request itself queued again, not an attempt's
                        // state. A fleet connecting at once would otherwise
                        // leave a `Dial` per client as holes in the heap.
                        core.commands.push(ReactorCommand::Connect {
                            attempt,
                            addrs,
                            intent,
                        });
                        core.set_attempt_in_progress(true);
                        self.waiting.replace(Waiting::PARKED, true);
                        continue;
                    }
                    // Admitted or not, this attempt starts below, once.
                    self.waiting.take(Waiting::RESUME);
                    if self.conn.is_some() {
                        // Finish a requested disconnect: write the DISCONNECT, report it.
                        let _ = self.flush(core);
                        let reason = (core.session().state() != ConnectionState::Disconnecting)
                            .then_some(Error::ConnectionLost);
                        self.close(core, io, reason);
                    }
                    // A new attempt: the backoff starts over.
                    self.dial = Some(Box::new(Dial {
                        addrs,
                        attempt: attempt.and_then(NonZeroU32::new),
                        async_attempt: attempt.is_none(),
                        ..Dial::default()
                    }));
                    self.arm_connect_deadline(core, Instant::now());
                    // Closing a preempted automatic attempt above cleared it.
                    core.set_attempt_in_progress(true);
                    if !self.begin_round(core, io) {
                        self.start_connect(core, io);
                    }
                }
                ReactorCommand::Failed { error, .. } => {
                    self.dial().async_attempt = true;
                    self.attempt_failed(core, io, error);
                }
                ReactorCommand::Resolved { generation, result } => {
                    if self.dial_ref().resolving == NonZeroU32::new(generation) {
                        self.dial().resolving = None;
                        self.connect_resolved(core, io, result);
                    }
                }
                ReactorCommand::StopReconnecting { .. } => {
                    self.keep_reconnecting = false;
                    if let Some(dial) = self.dial_if_any() {
                        dial.reconnect_at = None;
                    }
                    self.abandon_attempt(core, io);
                    // The attempt that disconnect() meant to give up was
                    // accepted meanwhile: close that connection instead.
                    let mut session = core.session();
                    if session.state() == ConnectionState::Connected {
                        let _ = session.disconnect(Instant::now());
                    }
                }
            }
        }
        self.advance(core, io, scratch)
    }

    /// Everything after the wait: connect progress, reads, timers, writes.
    fn advance(&mut self, core: &Arc<Core>, io: Io<'_>, scratch: &mut Scratch) -> Option<Error> {
        if self.waiting.take(Waiting::RESUME) && core.attempt_in_progress() {
            self.arm_connect_deadline(core, Instant::now());
            self.start_connect(core, io);
        }
        if self
            .conn
            .as_ref()
            .is_some_and(|c| !c.connected && c.writable)
        {
            self.finish_connect(core, io);
        }
        if self
            .conn
            .as_ref()
            .is_some_and(|c| c.connected && !c.established && (c.readable || c.writable))
        {
            self.drive_setup(core, io);
        }
        if self
            .conn
            .as_ref()
            .is_some_and(|c| c.established && c.readable)
            && let Err(e) = self.read(core, io, scratch)
        {
            return Some(self.close(core, io, Some(e)));
        }
        if core.is_closed() {
            return None;
        }
        let now = Instant::now();
        if self.conn.as_ref().is_some_and(|c| c.established) {
            let timed_out = core.session().handle_timeout(now);
            if let Err(e) = timed_out {
                return Some(self.close(core, io, Some(e)));
            }
        }
        if let Some(deadline) = self.dial_ref().connect_deadline
            && now >= deadline.instant()
        {
            if self.dial().resolving.take().is_some() {
                // The resolver hangs: the addresses that worked before may still.
                self.connect_resolved(core, io, Err(Error::Timeout));
            } else {
                return Some(self.close(core, io, Some(Error::Timeout)));
            }
        }
        if let Some(at) = self.dial_ref().reconnect_at
            && now >= at.instant()
        {
            self.dial().reconnect_at = None;
            self.arm_connect_deadline(core, now);
            self.dial().next_addr = 0;
            core.set_attempt_in_progress(true);
            if !self.begin_round(core, io) && !self.resolve_again(core) {
                self.start_connect(core, io);
            }
        }
        if let Err(e) = self.flush(core) {
            return Some(self.close(core, io, Some(e)));
        }
        let requested_close = self
            .conn
            .as_ref()
            .is_some_and(|c| c.established && !c.transport.has_buffered_output())
            && core.session().state() == ConnectionState::Disconnecting
            && core.session().unsent_len() == 0;
        if requested_close {
            self.close(core, io, None);
        }
        None
    }

    fn start_connect(&mut self, core: &Arc<Core>, io: Io<'_>) {
        if !self.holds_permit {
            if !io.gate.has_room() || self.waiting.get(Waiting::PARKED) {
                // The reactor resumes it in turn (`Waiting::RESUME`); its
                // timeout starts then.
                self.waiting.replace(Waiting::PARKED, true);
                self.dial().connect_deadline = None;
                return;
            }
            io.gate.enter();
            self.holds_permit = true;
        }
        if self.dial_ref().addrs.is_empty() && self.dial_ref().round.is_none() {
            // A reconnection to an IP literal, or one whose resolution could
            // not start: the addresses a connection was made to before.
            self.dial().addrs = core.known_addrs();
        }
        while let Some(addr) = self
            .dial_ref()
            .addrs
            .get(self.dial_ref().next_addr as usize)
        {
            self.dial().next_addr += 1;
            log!(core, Level::Info, "connecting to {addr}");
            crate::log::connection_started(core);
            let Ok(mut stream) = TcpStream::connect(addr) else {
                continue;
            };
            if io
                .registry
                .register(
                    &mut stream,
                    io.token,
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                continue;
            }
            let entry = self.dial_ref().round.as_ref().and_then(Round::current);
            let (transport, setup) = match transport_for(core, stream, entry)
                .and_then(|t| Ok((t, setup_for(core, entry)?)))
            {
                Ok(ready) => ready,
                Err(e) => {
                    self.attempt_failed(core, io, e);
                    return;
                }
            };
            self.conn = Some(Socket {
                handshaking: !transport.is_plain(),
                transport,
                connected: false,
                setup,
                established: false,
                accepted: false,
                readable: false,
                read_closed: false,
                writable: false,
            });
            return;
        }
        self.attempt_failed(core, io, Error::ConnectFailed);
    }

    /// With a server list, start walking it from the entry that answered
    /// last; false without one (the caller connects to the host of the last
    /// `connect`).
    fn begin_round(&mut self, core: &Arc<Core>, io: Io<'_>) -> bool {
        let list = lock(&core.options)
            .rare()
            .servers
            .clone()
            .filter(|list| !list.entries.is_empty());
        let Some(list) = list else {
            let dial = self.dial();
            dial.round = None;
            dial.server_index = None;
            return false;
        };
        // A list is far shorter than 2^32 entries (each is a URI the caller made).
        let start = (list.last_good.load(Ordering::SeqCst) % list.entries.len()) as u32;
        self.dial().round = Some(Round {
            list,
            start,
            tried: 0,
        });
        if !self.next_server(core, io) {
            // Cannot happen with a non-empty list; fail the attempt anyway.
            self.attempt_failed(core, io, Error::ConnectFailed);
        }
        true
    }

    /// Start connecting to the next entry of the round; false once every
    /// entry was tried. Each entry gets the whole connect timeout.
    fn next_server(&mut self, core: &Arc<Core>, io: Io<'_>) -> bool {
        let Some(round) = self.dial().round.as_mut() else {
            return false;
        };
        let n = round.list.entries.len();
        if round.tried as usize >= n {
            return false;
        }
        let index = (round.start as usize + round.tried as usize) % n;
        round.tried += 1;
        let server = round.list.entries[index].clone();
        let dial = self.dial();
        dial.addrs = Addrs::NONE;
        dial.server_index = u32::try_from(index).ok();
        dial.next_addr = 0;
        dial.resolving = None;
        self.arm_connect_deadline(core, Instant::now());
        log!(
            core,
            Level::Info,
            "trying server {index}: {}:{}",
            server.host,
            server.port
        );
        // Through a proxy, TCP goes to the proxy (the entry is its target).
        let proxy = lock(&core.options).proxy_addr();
        let (dial_host, dial_port) = proxy.unwrap_or((server.host, server.port));
        if let Ok(ip) = dial_host.parse::<IpAddr>() {
            self.dial().addrs = Addrs::One(SocketAddr::new(ip, dial_port));
            self.start_connect(core, io);
            return true;
        }
        let generation = next_resolve_generation();
        let spawned = core
            .resolve_target_in_background(Some((dial_host, dial_port)), move |result| {
                ReactorCommand::Resolved { generation, result }
            });
        match spawned {
            Ok(()) => self.dial().resolving = NonZeroU32::new(generation),
            Err(e) => self.attempt_failed(core, io, e),
        }
        true
    }

    fn finish_connect(&mut self, core: &Arc<Core>, io: Io<'_>) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        conn.writable = false;
        let failed = matches!(conn.transport.tcp().take_error(), Ok(Some(_)) | Err(_));
        match conn.transport.tcp().peer_addr() {
            Ok(_) if !failed => {
                let _ = conn.transport.tcp().set_nodelay(true);
                // CONNECT waits for the proxy, TLS and WebSocket handshakes
                // that apply (drive_setup, run next).
                conn.connected = true;
                conn.writable = true;
            }
            Err(e) if !failed && e.kind() == io::ErrorKind::NotConnected => {
                // Spurious wake-up: the handshake is still in progress.
            }
            _ => {
                if let Some(conn) = self.conn.take() {
                    self.drop_connection(core, io, conn);
                }
                // Try the next address of the same name before giving up.
                self.start_connect(core, io);
            }
        }
    }

    /// Advance the handshakes between TCP and MQTT (proxy, TLS, WebSocket
    /// upgrade); once done, the connection is established and CONNECT queued.
    /// A failure ends the attempt with its error (`Proxy` for a proxy's
    /// refusal or garbage, a protocol violation for a bad upgrade).
    fn drive_setup(&mut self, core: &Arc<Core>, io: Io<'_>) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        match conn.setup_step() {
            Ok(Setup::Blocked) => return,
            Ok(Setup::Upgraded(surplus)) => {
                let max_frame = core.session().config().limits().max_packet_size as usize;
                let Some(mut conn) = self.conn.take() else {
                    return;
                };
                conn.transport = match conn.transport {
                    Transport::Plain(tcp) => {
                        Transport::Ws(Box::new(WsStream::upgraded(tcp, &surplus, max_frame)))
                    }
                    #[cfg(feature = "tls")]
                    Transport::Tls(tls) => {
                        Transport::Wss(Box::new(WsStream::upgraded(*tls, &surplus, max_frame)))
                    }
                    upgraded => upgraded,
                };
                // Frames may have come with the response: read them.
                conn.readable = true;
                self.conn = Some(conn);
            }
            Ok(Setup::Ready) => {}
            Err(failure) => {
                log!(
                    core,
                    Level::Warn,
                    "connection setup failed: {}",
                    failure.why
                );
                self.close(core, io, Some(failure.error));
                return;
            }
        }
        if let Some(conn) = self.conn.as_mut() {
            conn.established = true;
            self.protocol =
                open_session(core, self.dial_ref().connect_deadline.map(Stamp::instant));
            self.sent_reason = 0;
        }
    }

    /// Start resolving the host name again for an automatic reconnection, so
    /// that a broker whose address changed (DNS failover, a new cloud
    /// instance) is found. False for an IP literal, or if no thread can run
    /// the resolver: connect to the known addresses then.
    fn resolve_again(&mut self, core: &Arc<Core>) -> bool {
        if core.host_name().is_none() {
            return false;
        }
        let generation = next_resolve_generation();
        let spawned = core
            .resolve_in_background(move |result| ReactorCommand::Resolved { generation, result });
        if spawned.is_err() {
            return false;
        }
        self.dial().resolving = NonZeroU32::new(generation);
        true
    }

    /// Whether the attempt has addresses to fall back on when resolving
    /// failed: its own, else (outside a server list) the last ones the
    /// client's host resolved to.
    fn has_known_addrs(&mut self, core: &Core) -> bool {
        if self.dial_ref().addrs.is_empty() && self.dial_ref().round.is_none() {
            self.dial().addrs = core.known_addrs();
        }
        !self.dial_ref().addrs.is_empty()
    }

    /// Connect with the addresses a resolution gave, or, when it failed, with
    /// the ones that were known before.
    fn connect_resolved(
        &mut self,
        core: &Arc<Core>,
        io: Io<'_>,
        result: Result<Vec<SocketAddr>, Error>,
    ) {
        match result {
            Ok(addrs) => self.dial().addrs = addrs.into(),
            Err(e) if self.has_known_addrs(core) => log!(
                core,
                Level::Warn,
                "resolving the host again failed ({e}): trying its last known addresses"
            ),
            Err(e) => {
                self.attempt_failed(core, io, e);
                return;
            }
        }
        self.dial().next_addr = 0;
        self.arm_connect_deadline(core, Instant::now());
        self.start_connect(core, io);
    }

    /// `disconnect` during a connection attempt: give the attempt up. The
    /// caller of a blocking `connect` gets NotConnected; otherwise the
    /// DISCONNECT callback reports a requested disconnect (MQTT_OK).
    fn abandon_attempt(&mut self, core: &Arc<Core>, io: Io<'_>) {
        if let Some(dial) = self.dial_if_any() {
            dial.resolving = None;
            dial.round = None;
        }
        let flagged = core.take_attempt_in_progress();
        let connecting = self.conn.as_ref().is_some_and(|c| !c.accepted);
        if !flagged && !connecting && self.dial_ref().attempt.is_none() {
            return;
        }
        if let Some(conn) = self.conn.take_if(|c| !c.accepted) {
            self.drop_connection(core, io, conn);
        }
        let dial = self.dial();
        dial.connect_deadline = None;
        dial.async_attempt = false;
        let attempt = dial.attempt.take();
        log!(core, Level::Info, "connection attempt abandoned");
        match attempt.map(NonZeroU32::get) {
            Some(attempt) => finish_attempt(core, attempt, Err(Error::NotConnected)),
            None if flagged || connecting => self.report_disconnect(core, None),
            None => {}
        }
    }

    /// The current attempt failed before a connection was accepted.
    pub(super) fn attempt_failed(&mut self, core: &Arc<Core>, io: Io<'_>, error: Error) {
        // Said by this attempt's refusal (if at all): taken whichever way the
        // failure goes, so that it cannot stop a later, unrelated attempt.
        let refusal_says_stop = std::mem::take(&mut self.stop_after_refusal);
        self.dial().resolving = None;
        if self.dial_ref().round.is_some() && !core.is_closed() {
            // A server list: the next entry of this round, if any is left.
            // The failure is reported, and the backoff applied, only once
            // the whole round failed.
            log!(
                core,
                Level::Warn,
                "server {} failed: {error}",
                self.dial_ref().server_index.unwrap_or_default()
            );
            if self.next_server(core, io) {
                return;
            }
            self.dial().round = None;
        }
        core.set_attempt_in_progress(false);
        log!(core, Level::Warn, "connection attempt failed: {error}");
        self.dial().connect_deadline = None;
        if let Some(attempt) = self.dial().attempt.take() {
            finish_attempt(core, attempt.get(), Err(error));
            return;
        }
        let was_async = std::mem::take(&mut self.dial().async_attempt);
        if was_async {
            // Nobody waits for an asynchronous connect: it retries like a lost
            // connection would, and every failure is reported.
            self.keep_reconnecting = lock(&core.options).reconnect().is_some();
        } else if !self.keep_reconnecting {
            return;
        }
        if is_final_refusal(error) || refusal_says_stop || !self.keep_reconnecting {
            log!(core, Level::Error, "giving up reconnecting: {error}");
            self.keep_reconnecting = false;
            self.report_disconnect(core, Some(error));
            return;
        }
        if was_async {
            self.report_disconnect(core, Some(error));
            self.dial().async_attempt = true;
        }
        self.schedule_reconnect(core);
    }

    fn schedule_reconnect(&mut self, core: &Arc<Core>) {
        let Some((min, max)) = lock(&core.options).reconnect() else {
            self.keep_reconnecting = false;
            return;
        };
        // The n-th delay is drawn from [max(c/2, min), c] with c = min(min * 2^(n+1), max):
        // never below min or above max, and spread even on the first retry, so a
        // fleet dropped by a broker restart does not come back in lockstep.
        let ceiling = min
            .saturating_mul(2u32 << self.dial_ref().failed_attempts.min(16))
            .min(max);
        let floor = (ceiling / 2).max(min).min(ceiling);
        let span = (ceiling - floor).as_nanos() as u64;
        let jitter_ns = if span == 0 { 0 } else { jitter() % (span + 1) };
        let delay = floor + Duration::from_nanos(jitter_ns);
        let dial = self.dial();
        dial.failed_attempts = dial.failed_attempts.saturating_add(1);
        dial.reconnect_at = Some(Stamp::new(Instant::now() + delay));
        log!(
            core,
            Level::Info,
            "reconnecting in {} ms",
            delay.as_millis()
        );
    }

    /// Read what the socket holds and handle each complete packet. The read
    /// buffer is the reactor's, lent for the call; the unread start of a
    /// partial packet stays with the connection until the next read.
    fn read(&mut self, core: &Arc<Core>, io: Io<'_>, scratch: &mut Scratch) -> Result<(), Error> {
        let mut buf = std::mem::take(&mut scratch.read_buf);
        let carried = self.partial.as_ref().map_or(0, |partial| partial.len());
        if buf.len() < READ_CHUNK.max(carried) {
            buf.resize(READ_CHUNK.max(carried), 0);
        }
        if let Some(partial) = self.partial.as_deref_mut() {
            buf[..carried].copy_from_slice(partial);
            partial.clear();
        }
        self.read_start = 0;
        self.read_end = carried as u32;
        let epoch = self.epoch;
        let result = self.read_into(core, io, &mut buf, &mut scratch.topic_buf);
        let unread = &buf[self.read_start as usize..self.read_end as usize];
        if self.epoch == epoch && self.conn.is_some() && !unread.is_empty() {
            self.partial
                .get_or_insert_with(Box::default)
                .extend_from_slice(unread);
        }
        self.read_start = 0;
        self.read_end = 0;
        scratch.read_buf = buf;
        result
    }

    fn read_into(
        &mut self,
        core: &Arc<Core>,
        io: Io<'_>,
        buf: &mut Vec<u8>,
        topic_buf: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let max_packet_size = core.session().config().limits().max_packet_size as usize;
        for _ in 0..READS_PER_TURN {
            if self.write_backlogged(core) {
                // Resumes once a writable event lets the flush drain the backlog.
                return Ok(());
            }
            if self.read_end as usize == buf.len() {
                self.make_room(buf, max_packet_size);
            }
            let Some(conn) = self.conn.as_mut() else {
                return Ok(());
            };
            let space = buf.len() - self.read_end as usize;
            match conn.transport.read(&mut buf[self.read_end as usize..]) {
                Ok(0) => return Err(Error::ConnectionLost),
                Ok(n) => {
                    // The socket holds no more (`Transport::drained`: a short
                    // read, all of it handed out): the next edge reports new
                    // bytes (epoll(7)), so skip the read that would only say
                    // EAGAIN. Not after a FIN, which gives no further edge.
                    let drained = conn.transport.drained(n < space) && !conn.read_closed;
                    if drained {
                        conn.readable = false;
                    }
                    self.read_end += n as u32;
                    self.process_buffer(core, io, max_packet_size, buf, topic_buf)?;
                    if drained || core.is_closed() || self.conn.is_none() {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.readable = false;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(Error::ConnectionLost);
                }
                Err(e) => return Err(io_error(&e, Error::Io)),
            }
        }
        Ok(())
    }

    /// Make space to read into: move unread bytes to the front, and grow the
    /// buffer only as far as the packet being assembled needs (bounded by the
    /// maximum packet size, already checked from its fixed header).
    fn make_room(&mut self, buf: &mut Vec<u8>, max_packet_size: usize) {
        if self.read_start > 0 {
            buf.copy_within(self.read_start as usize..self.read_end as usize, 0);
            self.read_end -= self.read_start;
            self.read_start = 0;
        }
        let needed = match codec::parse_fixed_header_as(
            &buf[..self.read_end as usize],
            max_packet_size,
            self.protocol,
        ) {
            Ok(Ok(header)) => header.frame_len(),
            _ => 0,
        };
        // Grow only for a frame larger than the buffer: the unread tail of a
        // partial packet fits after compaction, so steady traffic never reallocates.
        let target = needed.max(READ_CHUNK);
        if buf.len() < target {
            buf.resize(target, 0);
        }
    }

    /// The server broke the protocol: under MQTT 5 tell it why with a
    /// DISCONNECT before the connection closes. Returns `error`.
    pub(super) fn protocol_error(&mut self, core: &Arc<Core>, error: Error) -> Error {
        let Some(reason_code) = error.disconnect_reason() else {
            return error;
        };
        if core.session().refuse_server(reason_code) {
            let _ = self.flush(core);
        }
        if self.protocol == ProtocolVersion::V5 {
            self.sent_reason = reason_code;
        }
        error
    }

    /// What a refusal or a server DISCONNECT means for automatic reconnection.
    pub(super) fn follow_refusal(&mut self, core: &Arc<Core>, after: AfterRefusal) {
        match after {
            AfterRefusal::Retry => {}
            AfterRefusal::Stop => self.stop_after_refusal = true,
            AfterRefusal::Redirect { host, port } => {
                log!(core, Level::Warn, "the broker redirects to {host}");
                let mut options = lock(&core.options);
                let port = port.unwrap_or(options.port);
                let dial = self.dial();
                if options.rare().proxy.is_none() {
                    dial.addrs = host
                        .parse::<std::net::IpAddr>()
                        .map_or(Addrs::NONE, |ip| Addrs::One(SocketAddr::new(ip, port)));
                }
                dial.next_addr = 0;
                dial.failed_attempts = 0;
                options.set_host(&host);
                options.port = port;
            }
        }
    }

    pub(super) fn connect_accepted(&mut self, core: &Arc<Core>, session_present: bool) {
        log!(
            core,
            Level::Info,
            "connected (session present: {session_present})"
        );
        // Connected: the attempt's state is done with (and the backoff
        // starts over after a loss).
        let dial = self.dial.take().unwrap_or_default();
        core.set_attempt_in_progress(false);
        if let Some(round) = dial.round
            && let Some(index) = dial.server_index
        {
            // The next walk starts here (unless the list was replaced since).
            round.list.last_good.store(index as usize, Ordering::SeqCst);
        }
        if let Some(conn) = self.conn.as_mut() {
            conn.accepted = true;
        }
        self.keep_reconnecting = lock(&core.options).reconnect().is_some();
        if let Some(attempt) = dial.attempt {
            finish_attempt(core, attempt.get(), Ok(session_present));
        }
    }

    fn flush(&mut self, core: &Arc<Core>) -> Result<(), Error> {
        let Some(conn) = self.conn.as_mut().filter(|c| c.established && c.writable) else {
            return Ok(());
        };
        let mut session = core.session();
        loop {
            let pending = session.pending_transmit();
            if pending.is_empty() && !conn.transport.has_buffered_output() {
                return Ok(());
            }
            match conn.transport.write_packets(pending) {
                // TLS: the records still buffered are written out.
                Ok(0) if pending.is_empty() => return Ok(()),
                Ok(0) => return Err(Error::ConnectionLost),
                Ok(n) => {
                    crate::log::sent(core, pending, n, self.protocol);
                    session.consume_transmit(Instant::now(), n);
                    if let Some(waits) = core.waits_if_any()
                        && waits.publish_waiters.load(Ordering::SeqCst) > 0
                    {
                        waits.drained.notify_all();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.writable = false;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    return Err(Error::ConnectionLost);
                }
                Err(e) => return Err(io_error(&e, Error::Io)),
            }
        }
    }

    pub(super) fn drop_connection(&mut self, core: &Arc<Core>, io: Io<'_>, mut conn: Socket) {
        let _ = io.registry.deregister(conn.transport.tcp_mut());
        let _ = conn.transport.tcp().shutdown(Shutdown::Both);
        self.read_start = 0;
        self.read_end = 0;
        self.partial = None;
        self.epoch = self.epoch.wrapping_add(1);
        if conn.established {
            core.session().connection_lost(Instant::now());
            // A publish waiting for room learns that there is no connection.
            if let Some(waits) = core.waits_if_any() {
                waits.drained.notify_all();
            }
        }
    }

    /// End the current connection (`reason` is `None` for a requested disconnect),
    /// report it, and arm a reconnection where that is the policy.
    fn close(&mut self, core: &Arc<Core>, io: Io<'_>, reason: Option<Error>) -> Error {
        self.close_with(core, io, reason, 0, None)
    }

    /// `close`, reporting an MQTT 5 reason code and properties in the
    /// DISCONNECT callback's data (0: the one we sent for a protocol error, if
    /// any).
    pub(super) fn close_with(
        &mut self,
        core: &Arc<Core>,
        io: Io<'_>,
        reason: Option<Error>,
        reason_code: u8,
        properties: Option<Properties<'_>>,
    ) -> Error {
        let error = reason.unwrap_or(Error::NotConnected);
        // Whichever way it closes, this connection's attempt is over (a failed
        // one's next entry or retry arms its own).
        if let Some(dial) = self.dial_if_any() {
            dial.connect_deadline = None;
        }
        let Some(mut conn) = self.conn.take() else {
            return error;
        };
        let accepted = conn.accepted;
        if reason.is_none() {
            // Let the DISCONNECT reach the broker before the socket goes away.
            conn.transport.close_notify();
            let _ = conn.transport.tcp().shutdown(Shutdown::Write);
            let mut sink = [0u8; 512];
            let mut stream = conn.transport.tcp();
            while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
        }
        self.drop_connection(core, io, conn);
        if !accepted {
            self.attempt_failed(core, io, error);
            return error;
        }
        match reason {
            None => log!(core, Level::Info, "disconnected"),
            Some(e) => log!(core, Level::Warn, "connection lost: {e}"),
        }
        match reason {
            None => self.keep_reconnecting = false,
            Some(_) if self.keep_reconnecting => self.schedule_reconnect(core),
            Some(_) => {}
        }
        let mut data = Data::new(Command::Disconnect);
        data.error = reason;
        data.reason_code = match reason_code {
            0 => std::mem::take(&mut self.sent_reason),
            code => code,
        };
        data.properties = properties;
        core.run_callbacks(&data);
        error
    }

    fn report_disconnect(&mut self, core: &Arc<Core>, reason: Option<Error>) {
        let mut data = Data::new(Command::Disconnect);
        data.error = reason;
        data.reason_code = std::mem::take(&mut self.sent_reason);
        core.run_callbacks(&data);
    }

    #[cfg(test)]
    pub(super) fn set_reconnect_at(&mut self, at: Instant) {
        self.dial().reconnect_at = Some(Stamp::new(at));
    }

    /// An attempt starting at `now` (or the next entry of its round) gets
    /// the whole connect timeout.
    fn arm_connect_deadline(&mut self, core: &Core, now: Instant) {
        let timeout = core.session().config().connect_timeout();
        self.dial().connect_deadline = Some(Stamp::new(now + timeout));
    }

    /// The next deadline the reactor must act on (`None`: nothing is due
    /// until an event arrives).
    pub fn next_deadline(&self, core: &Core) -> Option<Instant> {
        [
            core.session().poll_timeout(),
            self.dial_ref().connect_deadline.map(Stamp::instant),
            self.dial_ref().reconnect_at.map(Stamp::instant),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Readiness left unused (reads per turn are bounded): the connection
    /// must run again without waiting for an event.
    pub fn has_unread(&self, core: &Core) -> bool {
        self.conn.as_ref().is_some_and(|c| c.readable) && !self.write_backlogged(core)
    }

    fn write_backlogged(&self, core: &Core) -> bool {
        core.session().unsent_len() >= MAX_UNWRITTEN
    }

    /// Whether bytes wait for the socket to become writable.
    pub fn wants_write(&self, core: &Core) -> bool {
        self.conn
            .as_ref()
            .is_some_and(|c| c.established && !c.writable)
            && (self
                .conn
                .as_ref()
                .is_some_and(|c| c.transport.has_buffered_output())
                || core.session().unsent_len() != 0)
    }

    /// Close without callbacks: the core is being freed.
    pub fn shutdown(&mut self, core: &Arc<Core>, io: Io<'_>) {
        if let Some(mut conn) = self.conn.take() {
            let _ = self.flush_final(core, &mut conn);
            self.drop_connection(core, io, conn);
        }
        self.dial = None;
        self.keep_reconnecting = false;
    }

    fn flush_final(&self, core: &Arc<Core>, conn: &mut Socket) -> io::Result<()> {
        if !conn.established {
            return Ok(());
        }
        let mut session = core.session();
        let n = conn.transport.write_packets(session.pending_transmit())?;
        session.consume_transmit(Instant::now(), n);
        Ok(())
    }
}

fn is_final_refusal(error: Error) -> bool {
    matches!(
        error,
        Error::RefusedProtocolVersion
            | Error::RefusedIdentifier
            | Error::RefusedBadCredentials
            | Error::RefusedNotAuthorized
    )
}

pub(super) fn finish_attempt(core: &Arc<Core>, attempt: u32, result: Result<bool, Error>) {
    let waits = core.waits();
    let mut wait = lock(&waits.connect);
    if wait.in_progress.map(NonZeroU32::get) == Some(attempt) {
        wait.in_progress = None;
        wait.finished = Some((attempt, result));
        waits.connect_done.notify_all();
    }
}

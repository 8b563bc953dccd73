//! What a client's handles and the reactor driving it share: the session,
//! the callbacks, the options, the commands only the reactor can carry out,
//! and the link to that reactor. The handle (`client.rs`) validates and
//! enqueues; the reactor (`connection.rs`) acts. Neither holds a lock while a
//! callback runs.

use std::cell::RefCell;
use std::net::{SocketAddr, ToSocketAddrs};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::Shared;
use super::commands::{CommandQueue, ReactorCommand};
use super::connection::Addrs;
use crate::dispatch::{Data, Dispatcher};
use crate::log::{LogTarget, Logger};
use crate::protocol::session::{Session, SessionConfig, whole_millis};
use crate::protocol::short_str::ShortStr;
use crate::{Error, Result};

use once_cell::race::OnceBox;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in user code never happens under our locks; a poisoned lock still
    // holds consistent data, so keep going rather than propagate the poison.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Options the reactor reads when it (re)connects. Durations are whole
/// milliseconds (rounded up) and sizes 32-bit: thousands of idle clients
/// share a reactor, and each holds its options.
#[derive(Clone)]
pub(crate) struct Options {
    host: Option<ShortStr>,
    pub port: u16,
    /// `None` until one of the options in it is set (see `RareOptions`).
    rare: Option<Box<RareOptions>>,
}

fn duration(ms: u32) -> Duration {
    Duration::from_millis(ms.into())
}

/// The options most clients never set: a client holds one word for them
/// until one is (thousands of idle clients share a reactor).
#[derive(Clone)]
pub(crate) struct RareOptions {
    /// First and longest delay; a first delay of 0 (never set: a delay
    /// rounds up to at least 1 ms) disables automatic reconnection.
    reconnect_ms: (u32, u32),
    /// How long a QoS 0 publish waits for room under the unsent-bytes limit
    /// before it returns `QueueFull` (zero: it never waits).
    publish_wait_ms: u32,
    /// `None`: the system resolver (getaddrinfo).
    pub resolver: Option<Resolver>,
    /// `None`: plain TCP.
    #[cfg(feature = "tls")]
    pub tls: Option<Arc<crate::tls::TlsSetup>>,
    /// mqtts/wss (or an mqtts server-list entry) without `tls`: verification
    /// against the system's roots, loaded once (see `tls_or_system_roots`).
    #[cfg(feature = "tls")]
    pub default_tls: Option<Arc<crate::tls::TlsSetup>>,
    /// `set_servers`: when set, every connection attempt walks this list and
    /// `host`/`port` are not used.
    pub servers: Option<Arc<ServerList>>,
    /// Every connection goes through this proxy (`set_proxy`).
    pub proxy: Option<crate::net::uri::ProxyUri>,
    /// How the broker is reached: `None` after `connect` (MQTT over TCP, TLS
    /// when configured), the URI's scheme after `connect_uri`.
    pub scheme: Option<crate::net::uri::Scheme>,
    /// The HTTP path of a ws/wss URI.
    pub ws_path: String,
}

/// What the options of a client without `RareOptions` read.
static NO_RARE_OPTIONS: RareOptions = RareOptions {
    reconnect_ms: (500, 30_000),
    publish_wait_ms: 0,
    resolver: None,
    #[cfg(feature = "tls")]
    tls: None,
    #[cfg(feature = "tls")]
    default_tls: None,
    servers: None,
    proxy: None,
    scheme: None,
    ws_path: String::new(),
};

impl Options {
    pub fn host(&self) -> Option<&str> {
        self.host.as_ref().map(ShortStr::as_str)
    }

    pub fn set_host(&mut self, host: &str) {
        self.host = Some(ShortStr::new(host));
    }

    /// The reconnection delays (first, most); `None`: no automatic reconnection.
    pub fn reconnect(&self) -> Option<(Duration, Duration)> {
        let (min, max) = self.rare().reconnect_ms;
        (min > 0).then(|| (duration(min), duration(max)))
    }

    pub fn set_reconnect(&mut self, delays: Option<(Duration, Duration)>) {
        let ms = delays.map_or((0, 0), |(min, max)| (whole_millis(min), whole_millis(max)));
        // Setting what is already there (the defaults, say) allocates nothing.
        if self.rare().reconnect_ms != ms {
            self.rare_mut().reconnect_ms = ms;
        }
    }

    pub fn publish_wait(&self) -> Duration {
        duration(self.rare().publish_wait_ms)
    }

    pub fn set_publish_wait(&mut self, wait: Duration) {
        let ms = whole_millis(wait);
        if self.rare().publish_wait_ms != ms {
            self.rare_mut().publish_wait_ms = ms;
        }
    }

    /// The rarely set options (all unset when there are none).
    pub fn rare(&self) -> &RareOptions {
        self.rare.as_deref().unwrap_or(&NO_RARE_OPTIONS)
    }

    /// The rarely set options, allocated at first need.
    pub fn rare_mut(&mut self) -> &mut RareOptions {
        self.rare
            .get_or_insert_with(|| Box::new(NO_RARE_OPTIONS.clone()))
    }

    /// `rare_mut`, except that clearing an option nobody set allocates
    /// nothing (`set_target` clears the scheme at every `connect`).
    pub fn rare_to_set(&mut self, clearing: bool) -> Option<&mut RareOptions> {
        if clearing && self.rare.is_none() {
            return None;
        }
        Some(self.rare_mut())
    }

    /// The address the TCP connection goes to: the proxy's if there is one,
    /// else the broker's.
    pub fn dial_target(&self) -> Option<(String, u16)> {
        self.proxy_addr()
            .or_else(|| self.host().map(|host| (host.to_owned(), self.port)))
    }

    /// The proxy's host and port, when every connection goes through one.
    pub fn proxy_addr(&self) -> Option<(String, u16)> {
        self.rare()
            .proxy
            .as_ref()
            .map(|proxy| (proxy.host.bare(), proxy.port))
    }

    /// The TLS setup of a connection that must use TLS: the client's
    /// options, else the system's trusted roots, loaded on first need and
    /// kept for the client's later connections.
    #[cfg(feature = "tls")]
    pub fn tls_or_system_roots(&mut self) -> Result<Arc<crate::tls::TlsSetup>> {
        let routes = self.rare();
        if let Some(tls) = routes.tls.clone().or_else(|| routes.default_tls.clone()) {
            return Ok(tls);
        }
        let tls = Arc::new(crate::tls::TlsSetup::new(
            &crate::tls::TlsOptions::default(),
        )?);
        self.rare_mut().default_tls = Some(tls.clone());
        Ok(tls)
    }
}

/// One entry of a server list (`mqtt://host:port` or `mqtts://host:port`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Server {
    /// A name to resolve or an IP literal (without brackets).
    pub host: String,
    pub port: u16,
    /// `mqtts`: TLS with the client's TLS options.
    pub tls: bool,
}

/// The servers a client walks when it connects, and the one that answered
/// last (where the next walk starts). A new list starts at its first entry.
#[derive(Debug)]
pub(crate) struct ServerList {
    pub entries: Vec<Server>,
    pub last_good: AtomicUsize,
}

/// Turns a host name and port into addresses to try in order, in place of the
/// system resolver. Called on a short-lived thread, never on the loop's.
pub type Resolver = Arc<dyn Fn(&str, u16) -> std::io::Result<Vec<SocketAddr>> + Send + Sync>;

/// The addresses names resolved to last, for reconnections whose resolution
/// fails (a DNS outage while the broker is up). Process-wide rather than per
/// client: a fleet of clients of one broker keeps one list, and an idle
/// client holds nothing for it. Keyed by name, port and resolver (a client's
/// own resolver may answer differently); bounded, the name remembered first going
/// first.
struct KnownAddrs;

type KnownKey = (String, u16, usize);

static KNOWN_ADDRS: Mutex<Vec<(KnownKey, Vec<SocketAddr>)>> = Mutex::new(Vec::new());

/// Distinct names remembered at once (gateways talk to a handful).
const KNOWN_NAMES: usize = 64;

impl KnownAddrs {
    fn key(core: &Core, host: String, port: u16) -> KnownKey {
        let resolver = lock(&core.options)
            .rare()
            .resolver
            .as_ref()
            .map_or(0, |r| Arc::as_ptr(r).cast::<()>() as usize);
        (host, port, resolver)
    }

    fn remember(key: KnownKey, addrs: &[SocketAddr]) {
        let mut known = lock(&KNOWN_ADDRS);
        match known.iter().position(|(k, _)| *k == key) {
            // Unchanged (every client of a fleet resolving one name): no copy.
            Some(i) if known[i].1 == addrs => {}
            Some(i) => known[i].1 = addrs.to_vec(),
            None => {
                if known.len() == KNOWN_NAMES {
                    known.remove(0);
                }
                known.push((key, addrs.to_vec()));
            }
        }
    }

    fn recall(key: &KnownKey) -> Option<Vec<SocketAddr>> {
        let known = lock(&KNOWN_ADDRS);
        known.iter().find(|(k, _)| k == key).map(|(_, a)| a.clone())
    }
}

/// The outcome of the connection attempt a `connect` call waits for.
#[derive(Default)]
pub(crate) struct ConnectWait {
    pub next_attempt: u32,
    pub in_progress: Option<NonZeroU32>,
    pub finished: Option<(u32, Result<bool>)>,
}

/// What a blocking `connect` and a QoS 0 publish waiting for room wait on.
/// Boxed in `Core` and made at first need: the thousands of clients of a
/// reactor that connect asynchronously and never wait hold one word.
#[derive(Default)]
pub(crate) struct Waits {
    pub connect: Mutex<ConnectWait>,
    pub connect_done: Condvar,
    /// Signalled (with the session lock) when written bytes made room, or
    /// the connection ended, while `publish_waiters` is not zero.
    pub drained: Condvar,
    pub publish_waiters: AtomicU32,
}

/// `Core::slot` of a client no reactor holds.
pub(crate) const NO_SLOT: u32 = u32::MAX;

pub(crate) struct Core {
    pub session: Mutex<Session>,
    /// Callbacks receive the core; `client.rs` presents it as a `Client`.
    pub dispatcher: Dispatcher<Arc<Core>>,
    /// Bit 0: a connection attempt is under way (name resolution, TCP, TLS,
    /// CONNECT awaiting its CONNACK), requested or automatic. Bits 1..: the
    /// intent, bumped by every connect request and every disconnect; commands
    /// carry the intent they were issued under, and the reactor drops those a
    /// later request overtook (a resolution finishing after disconnect, say).
    /// One word, so that a disconnect learns atomically whether the attempt
    /// it supersedes had been claimed.
    attempt_state: AtomicU64,
    pub commands: CommandQueue,
    /// What only calls that block use (see `Waits`), made at first need.
    waits: OnceBox<Waits>,
    pub options: Mutex<Options>,
    /// Set once the owner released the client: no further callback may run.
    pub closed: AtomicBool,
    /// Held while one of this client's callbacks runs, so that a free from
    /// another thread can wait for it.
    pub callback_gate: Mutex<()>,
    pub logger: Logger,
    /// The reactor driving this client: its own private one (made on first
    /// need), or a shared one it was added to; `None` before either.
    pub link: Mutex<Option<Arc<Shared>>>,
    /// On the reactor's ready list and not yet taken by a turn.
    pub queued: AtomicBool,
    /// Index of the reactor slot holding this client, or `NO_SLOT`.
    pub slot: AtomicU32,
}

thread_local! {
    /// Clients whose callbacks are running on this thread (nested clients allowed).
    static IN_CALLBACK: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

impl Core {
    pub fn new(config: SessionConfig) -> Core {
        let options = Options {
            host: None,
            port: 1883,
            rare: None,
        };
        Core {
            session: Mutex::new(Session::new(config)),
            dispatcher: Dispatcher::default(),
            attempt_state: AtomicU64::new(0),
            commands: CommandQueue::default(),
            waits: OnceBox::new(),
            options: Mutex::new(options),
            closed: AtomicBool::new(false),
            callback_gate: Mutex::new(()),
            logger: Logger::default(),
            link: Mutex::new(None),
            queued: AtomicBool::new(false),
            slot: AtomicU32::new(NO_SLOT),
        }
    }

    pub fn session(&self) -> MutexGuard<'_, Session> {
        lock(&self.session)
    }

    /// The client's waits, made at first need.
    pub fn waits(&self) -> &Waits {
        self.waits.get_or_init(Box::default)
    }

    /// The client's waits if anything ever waited: nobody waits on a
    /// client without them.
    pub fn waits_if_any(&self) -> Option<&Waits> {
        self.waits.get()
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn id(&self) -> usize {
        self as *const Core as usize
    }

    /// Whether the calling thread is inside one of this client's callbacks.
    pub fn in_callback(&self) -> bool {
        let me = self.id();
        IN_CALLBACK.with(|c| c.borrow().contains(&me))
    }

    /// The reactor driving this client, if any.
    pub fn reactor(&self) -> Option<Arc<Shared>> {
        lock(&self.link).clone()
    }

    /// Tell the reactor there is work for this client (bytes to write or a
    /// command): put it on the ready list once and wake the reactor.
    ///
    /// SeqCst pairs with the reactor clearing `queued` before it looks at the
    /// session: either this call sees the flag still set (and the coming
    /// turn sees the change), or it queues the client again.
    pub fn wake(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::SeqCst) {
            return;
        }
        let link = lock(&self.link);
        match &*link {
            // Its one slot runs on every turn: no ready list needed.
            Some(reactor) if reactor.private => reactor.intake.wake(),
            Some(reactor) => reactor.intake.notify(self.clone()),
            // Attaching to a reactor queues the client anyway.
            None => self.queued.store(false, Ordering::SeqCst),
        }
    }

    /// Run this client's callbacks for `data`, unless it was freed; a free
    /// from another thread waits for them through `callback_gate`.
    pub fn run_callbacks(self: &Arc<Self>, data: &Data<'_>) {
        if self.is_closed() {
            return;
        }
        // A client's callbacks do not nest (the calls that would run them
        // refuse inside a callback), but stay safe if they ever did.
        let _gate = (!self.in_callback()).then(|| lock(&self.callback_gate));
        if self.is_closed() {
            return;
        }
        let _guard = self.enter_callback();
        self.dispatcher.dispatch(self, data);
    }

    /// Wait until no callback of this client runs on another thread.
    pub fn wait_for_callbacks(&self) {
        if !self.in_callback() {
            drop(lock(&self.callback_gate));
        }
    }

    fn enter_callback(&self) -> CallbackGuard {
        let me = self.id();
        IN_CALLBACK.with(|c| c.borrow_mut().push(me));
        CallbackGuard(me)
    }

    // --- connection attempts ---

    pub fn current_intent(&self) -> u64 {
        self.attempt_state.load(Ordering::SeqCst) >> 1
    }

    pub fn attempt_in_progress(&self) -> bool {
        self.attempt_state.load(Ordering::SeqCst) & 1 == 1
    }

    pub fn set_attempt_in_progress(&self, on: bool) {
        if on {
            self.attempt_state.fetch_or(1, Ordering::SeqCst);
        } else {
            self.attempt_state.fetch_and(!1, Ordering::SeqCst);
        }
    }

    /// Clear the attempt bit; whether it was set.
    pub fn take_attempt_in_progress(&self) -> bool {
        self.attempt_state.fetch_and(!1, Ordering::SeqCst) & 1 == 1
    }

    /// Mark a requested attempt as under way and return its intent;
    /// `AlreadyConnected` when one is already (two racing calls cannot both
    /// start one).
    pub fn claim_attempt(&self) -> Result<u64> {
        let state = &self.attempt_state;
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
    pub fn new_intent(&self) -> (u64, bool) {
        let before = self.attempt_state.fetch_add(2, Ordering::SeqCst);
        ((before + 2) >> 1, before & 1 == 1)
    }

    /// A new intent that also clears the attempt bit in the same step, so a
    /// new connect may start at once; returns it.
    pub fn supersede_attempt(&self) -> u64 {
        let before = self
            .attempt_state
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| Some((s + 2) & !1))
            .unwrap_or_default();
        (before + 2) >> 1
    }

    // --- names ---

    /// The name to resolve for a connection (the proxy's when one is set),
    /// unless it is an IP literal.
    pub fn host_name(&self) -> Option<String> {
        lock(&self.options)
            .dial_target()
            .map(|(host, _)| host)
            .filter(|host| host.parse::<std::net::IpAddr>().is_err())
    }

    /// The addresses to connect to: the proxy's when one is set, else the
    /// broker's.
    pub fn resolve(&self) -> Result<Vec<SocketAddr>> {
        let (host, port) = {
            let options = lock(&self.options);
            options.dial_target().ok_or(Error::NotConnected)?
        };
        let addrs = self.resolve_name(&host, port)?;
        if host.parse::<std::net::IpAddr>().is_err() {
            KnownAddrs::remember(KnownAddrs::key(self, host, port), &addrs);
        }
        Ok(addrs)
    }

    /// Where a connection goes when no resolution gives fresh addresses: an
    /// IP literal's own, else those the name resolved to last (`NONE` if it
    /// never did).
    pub fn known_addrs(&self) -> Addrs {
        let Some((host, port)) = lock(&self.options).dial_target() else {
            return Addrs::NONE;
        };
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return Addrs::One(SocketAddr::new(ip, port));
        }
        KnownAddrs::recall(&KnownAddrs::key(self, host, port)).map_or(Addrs::NONE, Addrs::from)
    }

    /// Resolve `host` with the client's resolver (the system's by default).
    pub fn resolve_name(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>> {
        let resolver = lock(&self.options).rare().resolver.clone();
        let addrs: Vec<SocketAddr> = match resolver {
            Some(resolve) => resolve(host, port).map_err(|_| Error::Dns)?,
            None => (host, port)
                .to_socket_addrs()
                .map_err(|_| Error::Dns)?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(Error::Dns);
        }
        Ok(addrs)
    }

    /// Resolve the host on a short-lived thread, so that no loop blocks on
    /// DNS, and hand the reactor `command(outcome)`.
    pub fn resolve_in_background(
        self: &Arc<Self>,
        command: impl FnOnce(Result<Vec<SocketAddr>>) -> ReactorCommand + Send + 'static,
    ) -> Result<()> {
        self.resolve_target_in_background(None, command)
    }

    /// `resolve_in_background` for `target` (host and port) instead of the
    /// host of the last `connect`: an entry of the server list.
    pub fn resolve_target_in_background(
        self: &Arc<Self>,
        target: Option<(String, u16)>,
        command: impl FnOnce(Result<Vec<SocketAddr>>) -> ReactorCommand + Send + 'static,
    ) -> Result<()> {
        let core = self.clone();
        std::thread::Builder::new()
            .name("mqtt-resolve".into())
            .spawn(move || {
                let addrs = match target {
                    Some((host, port)) => core.resolve_name(&host, port),
                    None => core.resolve(),
                };
                let command = command(addrs);
                core.push_command(command);
            })
            .map(drop)
            .map_err(|_| Error::NoMemory)
    }

    pub fn push_command(self: &Arc<Self>, command: ReactorCommand) {
        self.commands.push(command);
        self.wake();
    }
}

impl LogTarget for Core {
    fn logger(&self) -> &Logger {
        &self.logger
    }

    fn log_closed(&self) -> bool {
        self.is_closed()
    }
}

struct CallbackGuard(usize);

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

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        lock(&Core::new(SessionConfig::default()).options).clone()
    }

    #[test]
    fn a_client_that_never_waits_holds_no_waits() {
        let core = Core::new(SessionConfig::default());
        assert!(core.waits_if_any().is_none());
        let waits = core.waits() as *const Waits;
        assert_eq!(core.waits_if_any().map(|w| w as *const Waits), Some(waits));
    }

    #[test]
    fn durations_round_up_to_whole_milliseconds_so_a_short_delay_stays_on() {
        let mut o = options();
        o.set_reconnect(Some((
            Duration::from_micros(300),
            Duration::from_micros(1500),
        )));
        assert_eq!(
            o.reconnect(),
            Some((Duration::from_millis(1), Duration::from_millis(2)))
        );
        o.set_reconnect(None);
        assert_eq!(o.reconnect(), None);
        o.set_publish_wait(Duration::ZERO);
        assert_eq!(o.publish_wait(), Duration::ZERO);
    }

    #[test]
    fn setting_an_option_to_what_it_holds_allocates_nothing() {
        let mut o = options();
        let defaults = o.reconnect();
        o.set_reconnect(defaults);
        o.set_publish_wait(Duration::ZERO);
        assert!(o.rare.is_none());
        o.set_publish_wait(Duration::from_millis(5));
        assert!(o.rare.is_some());
        assert_eq!(o.publish_wait(), Duration::from_millis(5));
        assert_eq!(o.reconnect(), defaults);
    }

    #[test]
    fn host_names_are_kept_whole_inline_or_not() {
        let mut o = options();
        assert_eq!(o.host(), None);
        for host in [
            "",
            "127.0.0.1",
            "exactly-22-bytes-long!",
            "a.much.longer.broker.example.com",
            "ünïcödé.example",
        ] {
            o.set_host(host);
            assert_eq!(o.host(), Some(host));
        }
    }
}

//! A TCP proxy between the client under test and an upstream (usually a [`super::Broker`])
//! that misbehaves on command.
//!
//! Threads: one acceptor, one random-cut timer, and per connection a reader and a
//! writer per direction (the writer applies the delay, so the delay is pure latency,
//! not a throughput cap). Every setting can be changed while traffic flows; settings
//! that concern a connection's life (`cut_after_bytes`) apply to connections
//! accepted afterwards, the others (blackhole, delay) to bytes read afterwards.

use super::loopback;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Client -> upstream is `Up`, upstream -> client is `Down`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
    Both,
}

/// A snapshot of the proxy counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// TCP connections accepted from clients (refused ones included).
    pub accepted: u64,
    /// Connections closed at once because of `refuse(true)`.
    pub refused: u64,
    /// Connections closed because the upstream could not be reached.
    pub upstream_failures: u64,
    /// Connections currently open (both sides).
    pub active: u64,
    /// Connections cut by the proxy (cut_all, random cuts, cut_after_bytes).
    pub cuts: u64,
    /// Bytes forwarded client -> upstream.
    pub bytes_up: u64,
    /// Bytes forwarded upstream -> client.
    pub bytes_down: u64,
    /// Bytes swallowed by a blackhole, client -> upstream.
    pub dropped_up: u64,
    /// Bytes swallowed by a blackhole, upstream -> client.
    pub dropped_down: u64,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    refused: AtomicU64,
    upstream_failures: AtomicU64,
    active: AtomicU64,
    cuts: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    dropped_up: AtomicU64,
    dropped_down: AtomicU64,
}

/// Random-cut timer settings; `generation` changes on every update.
struct CutTimer {
    range_ms: Option<(u64, u64)>,
    generation: u64,
    stop: bool,
}

/// One proxied connection: both sockets, so that anyone can cut it.
struct Conn {
    client: TcpStream,
    upstream: TcpStream,
    cut: AtomicBool,
}

impl Conn {
    /// Close both sides now (FIN to both peers, wakes every pump thread). The
    /// first cut is counted in `cuts`, if given, before anyone can see the FIN.
    fn cut(&self, cuts: Option<&AtomicU64>) -> bool {
        let first = !self.cut.swap(true, Ordering::SeqCst);
        if let (true, Some(cuts)) = (first, cuts) {
            cuts.fetch_add(1, Ordering::SeqCst);
        }
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.upstream.shutdown(Shutdown::Both);
        first
    }
}

struct Shared {
    upstream: SocketAddr,
    seed: u64,
    stop: AtomicBool,
    refuse: AtomicBool,
    blackhole_up: AtomicBool,
    blackhole_down: AtomicBool,
    delay_us: AtomicU64,
    /// `u64::MAX` = never.
    cut_after_bytes: AtomicU64,
    counters: Counters,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    timer: Mutex<CutTimer>,
    timer_cv: Condvar,
    /// `MQTT_CAPTURE_DIR` and the file name prefix (`<test>-<port>`), if capturing.
    capture: Option<(PathBuf, String)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn cut_all(&self) -> usize {
        let conns: Vec<Arc<Conn>> = lock(&self.conns).values().cloned().collect();
        let mut n = 0;
        for c in conns {
            if c.cut(Some(&self.counters.cuts)) {
                n += 1;
            }
        }
        n
    }

    fn spawn(&self, name: String, f: impl FnOnce() + Send + 'static) {
        let handle = thread::Builder::new()
            .name(name)
            .spawn(f)
            .expect("spawn a proxy thread");
        let mut threads = lock(&self.threads);
        threads.retain(|h| !h.is_finished());
        threads.push(handle);
    }
}

/// xorshift64*: tiny, deterministic, good enough for picking cut intervals.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        XorShift(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-ish in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        let (lo, hi) = (lo.min(hi), lo.max(hi));
        lo + self.next() % (hi - lo + 1)
    }
}

/// A fault-injecting TCP proxy on a free loopback port. Dropping it closes the
/// listener and every connection, and joins all its threads.
pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
    cutter: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Proxy to `127.0.0.1:upstream_port`. The random-cut seed comes from
    /// `MQTT_TEST_SEED` if set, else from the clock; it is printed to stderr.
    pub fn start(upstream_port: u16) -> FaultProxy {
        let seed = std::env::var("MQTT_TEST_SEED")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
                    ^ (u64::from(std::process::id()) << 32)
            });
        FaultProxy::start_seeded(loopback(upstream_port), seed)
    }

    /// Proxy to `upstream` with a fixed random-cut seed.
    pub fn start_seeded(upstream: SocketAddr, seed: u64) -> FaultProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        eprintln!("FaultProxy :{port} -> {upstream}: seed {seed} (MQTT_TEST_SEED={seed} replays)");
        let shared = Arc::new(Shared {
            upstream,
            seed,
            stop: AtomicBool::new(false),
            refuse: AtomicBool::new(false),
            blackhole_up: AtomicBool::new(false),
            blackhole_down: AtomicBool::new(false),
            delay_us: AtomicU64::new(0),
            cut_after_bytes: AtomicU64::new(u64::MAX),
            counters: Counters::default(),
            conns: Mutex::new(HashMap::new()),
            threads: Mutex::new(Vec::new()),
            timer: Mutex::new(CutTimer {
                range_ms: None,
                generation: 0,
                stop: false,
            }),
            timer_cv: Condvar::new(),
            capture: capture_prefix(port),
        });
        let acceptor = {
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("proxy-{port}-accept"))
                .spawn(move || accept_loop(listener, shared))
                .expect("spawn the proxy acceptor")
        };
        let cutter = {
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("proxy-{port}-cutter"))
                .spawn(move || random_cut_loop(shared, seed))
                .expect("spawn the proxy cutter")
        };
        FaultProxy {
            port,
            shared,
            acceptor: Some(acceptor),
            cutter: Some(cutter),
        }
    }

    /// Where clients connect.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    pub fn seed(&self) -> u64 {
        self.shared.seed
    }

    /// Close every current connection now (FIN to both the client and the upstream).
    /// Returns how many were cut.
    pub fn cut_all(&self) -> usize {
        self.shared.cut_all()
    }

    /// Close each connection accepted from now on once `n` bytes have been forwarded
    /// client -> upstream (exactly `n`: the rest of the chunk is dropped; `0` cuts at
    /// the first byte). `None` turns it off. Accepts `5` as well as `Some(5)`.
    pub fn cut_after_bytes(&self, n: impl Into<Option<usize>>) {
        let v = n.into().map_or(u64::MAX, |n| n as u64);
        self.shared.cut_after_bytes.store(v, Ordering::SeqCst);
    }

    /// Cut all active connections at random intervals drawn from `min_ms..=max_ms`
    /// (seeded xorshift, see [`seed`](Self::seed)); `None` stops it.
    pub fn set_random_cuts(&self, range_ms: Option<(u64, u64)>) {
        let mut t = lock(&self.shared.timer);
        t.range_ms = range_ms;
        t.generation += 1;
        self.shared.timer_cv.notify_all();
    }

    /// Keep connections open but silently drop the bytes read in `direction`
    /// (`false` restores forwarding; `Both` sets both).
    pub fn blackhole(&self, direction: Direction, on: bool) {
        if matches!(direction, Direction::Up | Direction::Both) {
            self.shared.blackhole_up.store(on, Ordering::SeqCst);
        }
        if matches!(direction, Direction::Down | Direction::Both) {
            self.shared.blackhole_down.store(on, Ordering::SeqCst);
        }
    }

    /// Forward every chunk read from now on `delay` later (both directions,
    /// order preserved). `Duration::ZERO` turns it off.
    pub fn set_delay(&self, delay: Duration) {
        let us = delay.as_micros().min(u64::MAX as u128) as u64;
        self.shared.delay_us.store(us, Ordering::SeqCst);
    }

    /// While on, new connections are accepted and immediately closed.
    pub fn refuse(&self, on: bool) {
        self.shared.refuse.store(on, Ordering::SeqCst);
    }

    pub fn stats(&self) -> ProxyStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::SeqCst);
        ProxyStats {
            accepted: get(&c.accepted),
            refused: get(&c.refused),
            upstream_failures: get(&c.upstream_failures),
            active: get(&c.active),
            cuts: get(&c.cuts),
            bytes_up: get(&c.bytes_up),
            bytes_down: get(&c.bytes_down),
            dropped_up: get(&c.dropped_up),
            dropped_down: get(&c.dropped_down),
        }
    }

    /// Connections accepted so far (refused ones included).
    pub fn connections(&self) -> u64 {
        self.shared.counters.accepted.load(Ordering::SeqCst)
    }

    /// Connections currently open.
    pub fn active(&self) -> u64 {
        self.shared.counters.active.load(Ordering::SeqCst)
    }

    pub fn bytes_up(&self) -> u64 {
        self.shared.counters.bytes_up.load(Ordering::SeqCst)
    }

    pub fn bytes_down(&self) -> u64 {
        self.shared.counters.bytes_down.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor: it sees `stop` and drops the listener.
        let _ = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(1));
        {
            let mut t = lock(&self.shared.timer);
            t.stop = true;
            self.shared.timer_cv.notify_all();
        }
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
        if let Some(h) = self.cutter.take() {
            let _ = h.join();
        }
        // No new connection can appear now; cut the rest and join their threads.
        self.shared.cut_all();
        // Joining a connection's setup thread can register its pump threads: repeat.
        loop {
            let threads = std::mem::take(&mut *lock(&self.shared.threads));
            if threads.is_empty() {
                break;
            }
            for h in threads {
                let _ = h.join();
            }
            self.shared.cut_all();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut next_id = 0u64;
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(_) if shared.stop.load(Ordering::SeqCst) => return shutdown_listener(&listener),
            Err(_) => {
                // EMFILE, ECONNABORTED...: back off a little rather than spin.
                thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        if shared.stop.load(Ordering::SeqCst) {
            return shutdown_listener(&listener);
        }
        shared.counters.accepted.fetch_add(1, Ordering::SeqCst);
        if shared.refuse.load(Ordering::SeqCst) {
            shared.counters.refused.fetch_add(1, Ordering::SeqCst);
            let _ = stream.shutdown(Shutdown::Both);
            continue;
        }
        next_id += 1;
        let id = next_id;
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let shared2 = shared.clone();
        shared.spawn(format!("proxy-{port}-conn{id}"), move || {
            open_connection(id, stream, shared2)
        });
    }
}

/// Stop listening now. Unlike close(), shutdown() acts on the socket itself, so it
/// also works while a concurrent fork+exec (another test spawning mosquitto) briefly
/// holds a copy of the descriptor; same reason the cuts use shutdown().
pub(crate) fn shutdown_listener(listener: &TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: shutdown(2) on a descriptor we own.
    unsafe {
        libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR);
    }
}

/// With `MQTT_CAPTURE_DIR` set, every connection writes the bytes forwarded each
/// way to `<dir>/<test>-<port>-<conn>-{up,down}.bin` (the test is the creating
/// thread's name, which libtest sets to the test's; else `pid<pid>`).
fn capture_prefix(port: u16) -> Option<(PathBuf, String)> {
    let dir = PathBuf::from(std::env::var_os("MQTT_CAPTURE_DIR")?);
    let _ = std::fs::create_dir_all(&dir);
    let tag = match thread::current().name() {
        Some(name) if name != "main" => name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
        _ => format!("pid{}", std::process::id()),
    };
    Some((dir, format!("{tag}-{port}")))
}

/// Connect upstream, register the connection, start the four pumps.
fn open_connection(id: u64, client: TcpStream, shared: Arc<Shared>) {
    let upstream = match TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(_) => {
            shared
                .counters
                .upstream_failures
                .fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let clones = (|| {
        Ok::<_, io::Error>([
            client.try_clone()?,
            client.try_clone()?,
            upstream.try_clone()?,
            upstream.try_clone()?,
        ])
    })();
    let Ok([client_r, client_w, upstream_r, upstream_w]) = clones else {
        return;
    };
    let conn = Arc::new(Conn {
        client,
        upstream,
        cut: AtomicBool::new(false),
    });
    {
        let mut conns = lock(&shared.conns);
        // Drop may have run cut_all() while we were connecting.
        if shared.stop.load(Ordering::SeqCst) {
            conn.cut(None);
            return;
        }
        conns.insert(id, conn.clone());
        shared.counters.active.fetch_add(1, Ordering::SeqCst);
    }
    let cut_after = shared.cut_after_bytes.load(Ordering::SeqCst);
    // Pumps left running; the last one out unregisters the connection.
    let remaining = Arc::new(AtomicU64::new(2));
    for (dir, src, dst) in [
        (Direction::Up, client_r, upstream_w),
        (Direction::Down, upstream_r, client_w),
    ] {
        let (tx, rx) = mpsc::channel::<Msg>();
        let limit = if dir == Direction::Up {
            cut_after
        } else {
            u64::MAX
        };
        let (s, c) = (shared.clone(), conn.clone());
        shared.spawn(format!("proxy-conn{id}-{dir:?}-read"), move || {
            read_pump(dir, src, tx, limit, &s, &c)
        });
        let capture = shared.capture.as_ref().and_then(|(path, prefix)| {
            let side = if dir == Direction::Up { "up" } else { "down" };
            File::create(path.join(format!("{prefix}-{id}-{side}.bin"))).ok()
        });
        let (s, c, remaining) = (shared.clone(), conn.clone(), remaining.clone());
        shared.spawn(format!("proxy-conn{id}-{dir:?}-write"), move || {
            write_pump(dir, dst, rx, capture, &s, &c);
            if remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
                c.cut(None);
                if lock(&s.conns).remove(&id).is_some() {
                    s.counters.active.fetch_sub(1, Ordering::SeqCst);
                }
            }
        });
    }
}

enum Msg {
    /// Bytes to forward, not before the given instant.
    Data(Instant, Vec<u8>),
    /// Source EOF: forward a FIN (half-close) after the queued data.
    Eof,
    /// Forward the queued data, then cut the whole connection.
    Cut,
}

fn read_pump(
    dir: Direction,
    mut src: TcpStream,
    tx: mpsc::Sender<Msg>,
    limit: u64,
    shared: &Shared,
    conn: &Conn,
) {
    let (blackhole, dropped) = match dir {
        Direction::Up => (&shared.blackhole_up, &shared.counters.dropped_up),
        _ => (&shared.blackhole_down, &shared.counters.dropped_down),
    };
    let mut forwarded = 0u64;
    if limit == 0 {
        // Cut at the first byte, before forwarding anything.
        let mut one = [0u8; 1];
        match src.read(&mut one) {
            Ok(1) => {
                let _ = tx.send(Msg::Cut);
            }
            _ => {
                let _ = tx.send(Msg::Eof);
            }
        }
        return;
    }
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => {
                let _ = tx.send(Msg::Eof);
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                // Reset or cut: take the whole connection down.
                conn.cut(None);
                let _ = tx.send(Msg::Eof);
                return;
            }
        };
        if conn.cut.load(Ordering::SeqCst) {
            return;
        }
        if blackhole.load(Ordering::SeqCst) {
            dropped.fetch_add(n as u64, Ordering::SeqCst);
            continue;
        }
        let take = (n as u64).min(limit - forwarded) as usize;
        forwarded += take as u64;
        let at = Instant::now() + Duration::from_micros(shared.delay_us.load(Ordering::SeqCst));
        if take > 0 && tx.send(Msg::Data(at, buf[..take].to_vec())).is_err() {
            return;
        }
        if forwarded >= limit {
            let _ = tx.send(Msg::Cut);
            return;
        }
    }
}

fn write_pump(
    dir: Direction,
    mut dst: TcpStream,
    rx: mpsc::Receiver<Msg>,
    mut capture: Option<File>,
    shared: &Shared,
    conn: &Conn,
) {
    let bytes = match dir {
        Direction::Up => &shared.counters.bytes_up,
        _ => &shared.counters.bytes_down,
    };
    for msg in rx {
        match msg {
            Msg::Data(at, data) => {
                // Sleep in small steps so a cut (or Drop) is never held up by a delay.
                loop {
                    if conn.cut.load(Ordering::SeqCst) {
                        return;
                    }
                    let now = Instant::now();
                    if now >= at {
                        break;
                    }
                    thread::sleep((at - now).min(Duration::from_millis(10)));
                }
                // Count first, so that a test seeing the bytes also sees the count.
                bytes.fetch_add(data.len() as u64, Ordering::SeqCst);
                if dst.write_all(&data).is_err() {
                    bytes.fetch_sub(data.len() as u64, Ordering::SeqCst);
                    conn.cut(None);
                    return;
                }
                if let Some(f) = capture.as_mut() {
                    let _ = f.write_all(&data);
                }
            }
            Msg::Eof => {
                let _ = dst.shutdown(Shutdown::Write);
                return;
            }
            Msg::Cut => {
                conn.cut(Some(&shared.counters.cuts));
                return;
            }
        }
    }
}

fn random_cut_loop(shared: Arc<Shared>, seed: u64) {
    let mut rng = XorShift::new(seed);
    let mut t = lock(&shared.timer);
    loop {
        if t.stop {
            return;
        }
        let Some((lo, hi)) = t.range_ms else {
            t = shared.timer_cv.wait(t).unwrap_or_else(|e| e.into_inner());
            continue;
        };
        let generation = t.generation;
        let deadline = Instant::now() + Duration::from_millis(rng.range(lo, hi));
        // Wait out the interval unless the settings change meanwhile.
        loop {
            let now = Instant::now();
            if t.stop || t.generation != generation || now >= deadline {
                break;
            }
            t = shared
                .timer_cv
                .wait_timeout(t, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        // Cut under the timer lock: once set_random_cuts(None) returns, no cut follows.
        if !t.stop && t.generation == generation {
            shared.cut_all();
        }
    }
}

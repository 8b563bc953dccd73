//! The brokers of the interop matrix (`tests/interop.rs`), mosquitto included,
//! behind one type.
//!
//! [`Kind`] names a broker implementation; [`AnyBroker::start`] runs a private
//! one on a free loopback port (plus a WebSocket port, [`AnyBroker::ws_port`],
//! where the broker has one: aedes, amqtt, rumqttd and ejabberd, each serving
//! MQTT over WebSocket on path `/mqtt`), waits until it has bound its
//! listeners and accepts connections (no fixed sleeps), and kills it on drop,
//! printing its log if the test is failing. `kill` / `restart` keep the ports.
//! [`AnyBroker::credentials`] says what a client must log in with.
//!
//! Where the brokers come from: `scripts/interop-deps.sh` installs rumqttd
//! (crates.io), aedes (npm) and amqtt (PyPI) into [`interop_dir`] and ejabberd
//! from Debian. A missing broker is a test
//! failure that says how to install it; `MQTT_SKIP_INTEROP=1` leaves the
//! non-mosquitto brokers out on purpose (see [`skip_requested`]).

use super::broker::spawn_child;
use super::{HOST, free_port, loopback, unique_temp_dir};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// A broker implementation of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Mosquitto,
    Rumqttd,
    Aedes,
    Amqtt,
    Ejabberd,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Mosquitto,
        Kind::Rumqttd,
        Kind::Aedes,
        Kind::Amqtt,
        Kind::Ejabberd,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Mosquitto => "mosquitto",
            Kind::Rumqttd => "rumqttd",
            Kind::Aedes => "aedes",
            Kind::Amqtt => "amqtt",
            Kind::Ejabberd => "ejabberd",
        }
    }

    /// Seconds a start or restart may take (ejabberd boots an Erlang VM and
    /// Mnesia; amqtt imports a Python stack).
    fn ready_timeout(self) -> Duration {
        match self {
            Kind::Ejabberd | Kind::Amqtt => Duration::from_secs(40),
            _ => Duration::from_secs(20),
        }
    }
}

/// `MQTT_SKIP_INTEROP=1`: leave the brokers other than mosquitto out (the
/// tests say so on stderr). Without it a missing broker fails its tests.
pub fn skip_requested() -> bool {
    std::env::var_os("MQTT_SKIP_INTEROP").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Where `scripts/interop-deps.sh` installs the brokers: `$MQTT_INTEROP_DIR`,
/// else `${XDG_CACHE_HOME:-~/.cache}/libmqtt-interop` (the script's default).
pub fn interop_dir() -> PathBuf {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("MQTT_INTEROP_DIR").unwrap_or_else(|| {
        var("XDG_CACHE_HOME")
            .or_else(|| var("HOME").map(|h| h.join(".cache")))
            .unwrap_or_else(|| PathBuf::from("/tmp"))
            .join("libmqtt-interop")
    })
}

fn mosquitto_bin() -> String {
    std::env::var("MOSQUITTO").unwrap_or_else(|_| {
        if Path::new("/usr/sbin/mosquitto").exists() {
            "/usr/sbin/mosquitto".into()
        } else {
            "mosquitto".into()
        }
    })
}

/// The directory holding Debian's `ejabberd-<version>/` (ERL_LIBS for `erl`).
fn ejabberd_lib() -> Option<(PathBuf, String)> {
    for arch_dir in fs::read_dir("/usr/lib").ok()?.flatten() {
        let Ok(entries) = fs::read_dir(arch_dir.path()) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(version) = name.strip_prefix("ejabberd-") {
                if e.path().join("ebin/mod_mqtt.beam").exists() {
                    return Some((arch_dir.path(), version.to_owned()));
                }
            }
        }
    }
    None
}

fn not_installed(kind: Kind, what: &Path) -> String {
    format!(
        "{} is not installed ({} is missing): run scripts/interop-deps.sh \
         (scripts/test.sh runs it unless MQTT_NO_INSTALL=1), \
         or set MQTT_SKIP_INTEROP=1 to leave the interop matrix out",
        kind.name(),
        what.display()
    )
}

/// The version the matrix runs, as the README's compatibility table shows it.
pub fn version(kind: Kind) -> String {
    let read = |p: PathBuf| {
        fs::read_to_string(p)
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "?".into())
    };
    match kind {
        Kind::Mosquitto => Command::new(mosquitto_bin())
            .arg("-h")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .and_then(|l| l.split_whitespace().last().map(str::to_owned))
            })
            .unwrap_or_else(|| "?".into()),
        Kind::Rumqttd => read(interop_dir().join("rumqttd/VERSION")),
        Kind::Aedes => read(interop_dir().join("aedes/VERSION")),
        Kind::Amqtt => read(interop_dir().join("amqtt/VERSION")),
        Kind::Ejabberd => ejabberd_lib().map_or_else(|| "?".into(), |(_, v)| v),
    }
}

enum Launch {
    PortInUse,
    Exited(String),
    NotReady,
    Spawn(io::Error),
}

/// A running (or killed) private broker of any [`Kind`].
pub struct AnyBroker {
    kind: Kind,
    port: u16,
    ws_port: Option<u16>,
    dir: PathBuf,
    /// stdout and stderr of every run, appended.
    out_path: PathBuf,
    /// A log file the broker writes itself (mosquitto, ejabberd).
    log_path: Option<PathBuf>,
    child: Mutex<Option<Child>>,
    log_shown: AtomicBool,
    /// amqtt only: clients log in from a password file instead of anonymously.
    authenticated: bool,
}

/// The password of every user of an authenticated broker.
pub const PASSWORD: &str = "interop";

/// amqtt's password file entry for user `interop`, password [`PASSWORD`]
/// (argon2id, made with amqtt's own hasher: pwdlib's `Argon2Hasher().hash`).
const AMQTT_USER: &str = "interop:$argon2id$v=19$m=65536,t=3,p=4$1N2rhStKsmrQW6i2vrxWmw$gUtSYEvj7ewNJAWAIF5SRBxjMryMyGDhLY/zG2Ro0yo";

impl AnyBroker {
    /// amqtt with a password file (`allow_anonymous` off): its clients then
    /// count as authenticated, which changes how it keeps their sessions.
    pub fn start_authenticated(kind: Kind) -> AnyBroker {
        assert_eq!(kind, Kind::Amqtt, "only amqtt has an authenticated variant");
        Self::start_with(kind, true)
    }

    /// Whether clients log in with a password (see [`credentials`](Self::credentials)).
    pub fn authenticated(&self) -> bool {
        self.authenticated
    }

    /// The user name and password a client with `client_id` must send, if any.
    /// ejabberd's mod_mqtt authenticates every client against ejabberd's
    /// accounts (here: anonymous login, any password, a user name required:
    /// without one it answers CONNACK 5).
    pub fn credentials(&self, client_id: &str) -> Option<(String, String)> {
        if self.authenticated {
            return Some(("interop".into(), PASSWORD.into()));
        }
        match self.kind {
            Kind::Ejabberd => {
                let user = if client_id.is_empty() {
                    "empty-id"
                } else {
                    client_id
                };
                Some((user.into(), PASSWORD.into()))
            }
            _ => None,
        }
    }

    /// Start a `kind` broker and wait until it accepts connections. Panics with
    /// the broker's output if it cannot start, or if it is not installed.
    pub fn start(kind: Kind) -> AnyBroker {
        Self::start_with(kind, false)
    }

    fn start_with(kind: Kind, authenticated: bool) -> AnyBroker {
        let dir = unique_temp_dir(&format!("mqtt-{}", kind.name()));
        let mut broker = AnyBroker {
            kind,
            port: 0,
            ws_port: None,
            out_path: dir.join("broker.out"),
            log_path: match kind {
                Kind::Mosquitto => Some(dir.join("mosquitto.log")),
                Kind::Ejabberd => Some(dir.join("ejabberd.log")),
                _ => None,
            },
            dir,
            child: Mutex::new(None),
            log_shown: AtomicBool::new(false),
            authenticated,
        };
        let deadline = Instant::now() + kind.ready_timeout();
        loop {
            broker.port = free_port();
            broker.ws_port = match kind {
                Kind::Mosquitto => None, // Debian's mosquitto has no WebSocket support
                _ => Some(loop {
                    let p = free_port();
                    if p != broker.port {
                        break p;
                    }
                }),
            };
            broker.write_config();
            match broker.launch(deadline) {
                Ok(child) => {
                    *broker.lock_child() = Some(child);
                    return broker;
                }
                Err(Launch::PortInUse) if Instant::now() < deadline => continue,
                Err(e) => panic!("{}", broker.launch_failure(e)),
            }
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn host(&self) -> &'static str {
        HOST
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The MQTT-over-WebSocket listener (path `/mqtt`), where the broker has one.
    pub fn ws_port(&self) -> Option<u16> {
        self.ws_port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// SIGKILL and reap: no goodbye on any connection. No-op when not running.
    pub fn kill(&self) {
        if let Some(mut child) = self.lock_child().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL if it is still there after its ready timeout.
    pub fn stop(&self) {
        let Some(mut child) = self.lock_child().take() else {
            return;
        };
        // SAFETY: kill(2) on our own child, not reaped yet.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + self.kind.ready_timeout();
        let mut pause = Duration::from_millis(1);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                Ok(None) => {
                    thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
            }
        }
    }

    /// Start again on the same ports with the same configuration (stopping it
    /// first if it runs); waits until it accepts connections.
    pub fn restart(&self) {
        self.stop();
        let deadline = Instant::now() + self.kind.ready_timeout();
        loop {
            match self.launch(deadline) {
                Ok(child) => {
                    *self.lock_child() = Some(child);
                    return;
                }
                // A port lingers in TIME_WAIT or a client took it as its source port.
                Err(Launch::PortInUse) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("{}", self.launch_failure(e)),
            }
        }
    }

    /// Everything the broker printed or logged so far, all runs.
    pub fn log(&self) -> String {
        let mut log = String::new();
        if let Some(p) = &self.log_path {
            log.push_str(&read_from(p, 0));
            log.push_str("--- stdout/stderr ---\n");
        }
        log.push_str(&read_from(&self.out_path, 0));
        log
    }

    fn lock_child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write_config(&self) {
        let port = self.port;
        let ws = self.ws_port.unwrap_or(0);
        let (name, text) = match self.kind {
            Kind::Mosquitto => {
                let mut c = String::new();
                // SAFETY: geteuid has no preconditions.
                if unsafe { libc::geteuid() } == 0 {
                    c.push_str("user root\n");
                }
                c.push_str(&format!(
                    "listener {port} {HOST}\nallow_anonymous true\nset_tcp_nodelay true\n\
                     persistence false\nlog_dest file {}\nlog_type all\nconnection_messages true\n\
                     log_timestamp true\nlog_timestamp_format %H:%M:%S\n",
                    self.log_path.as_ref().unwrap().display()
                ));
                ("mosquitto.conf", c)
            }
            Kind::Rumqttd => (
                "rumqttd.toml",
                // The console and prometheus listeners of the sample config are
                // left out: they would need free ports too.
                format!(
                    "id = 0\n\
                     [router]\nid = 0\nmax_connections = 1000\nmax_outgoing_packet_count = 200\n\
                     max_segment_size = 10485760\nmax_segment_count = 10\n\
                     [v4.1]\nname = \"v4-1\"\nlisten = \"{HOST}:{port}\"\nnext_connection_delay_ms = 1\n\
                     [v4.1.connections]\nconnection_timeout_ms = 5000\nmax_payload_size = 1048576\n\
                     max_inflight_count = 100\ndynamic_filters = true\n\
                     [ws.1]\nname = \"ws-1\"\nlisten = \"{HOST}:{ws}\"\nnext_connection_delay_ms = 1\n\
                     [ws.1.connections]\nconnection_timeout_ms = 5000\nmax_client_id_len = 256\n\
                     throttle_delay_ms = 0\nmax_payload_size = 1048576\nmax_inflight_count = 100\n\
                     max_inflight_size = 1024\n"
                ),
            ),
            Kind::Aedes => return, // command-line arguments only
            Kind::Amqtt => {
                let auth = if self.authenticated {
                    let passwd = self.dir.join("passwd");
                    fs::write(&passwd, format!("{AMQTT_USER}\n")).expect("write amqtt's passwd");
                    format!(
                        "  amqtt.plugins.authentication.FileAuthPlugin:\n    password_file: {}\n",
                        passwd.display()
                    )
                } else {
                    "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n"
                        .to_owned()
                };
                (
                    "amqtt.yaml",
                    format!(
                        "listeners:\n  default:\n    type: tcp\n    bind: {HOST}:{port}\n\
                         \x20 ws:\n    type: ws\n    bind: {HOST}:{ws}\n\
                         plugins:\n{auth}"
                    ),
                )
            }
            Kind::Ejabberd => (
                "ejabberd.yml",
                format!(
                    "hosts:\n  - localhost\nloglevel: info\n\
                     auth_method: anonymous\nanonymous_protocol: login_anon\n\
                     allow_multiple_connections: true\n\
                     listen:\n  -\n    port: {port}\n    ip: \"{HOST}\"\n    module: mod_mqtt\n\
                     \x20 -\n    port: {ws}\n    ip: \"{HOST}\"\n    module: ejabberd_http\n\
                     \x20   request_handlers:\n      /mqtt: mod_mqtt\n\
                     modules:\n  mod_mqtt: {{}}\n"
                ),
            ),
        };
        fs::write(self.dir.join(name), text).expect("write the broker config");
    }

    fn command(&self) -> Result<Command, String> {
        let dir = &self.dir;
        let idir = interop_dir();
        let cmd = match self.kind {
            Kind::Mosquitto => {
                let mut c = Command::new(mosquitto_bin());
                c.arg("-c").arg(dir.join("mosquitto.conf"));
                c
            }
            Kind::Rumqttd => {
                let bin = idir.join("rumqttd/bin/rumqttd");
                if !bin.exists() {
                    return Err(not_installed(self.kind, &bin));
                }
                let mut c = Command::new(bin);
                // -v: info, which logs each listener once it is bound.
                c.args(["--quiet", "-v", "-c"])
                    .arg(dir.join("rumqttd.toml"))
                    .env("NO_COLOR", "1");
                c
            }
            Kind::Aedes => {
                let modules = idir.join("aedes/node_modules");
                if !modules.join("aedes").exists() {
                    return Err(not_installed(self.kind, &modules.join("aedes")));
                }
                let script =
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/aedes-server.mjs");
                let mut c = Command::new("node");
                c.arg(script)
                    .arg(modules)
                    .arg(self.port.to_string())
                    .arg(self.ws_port.unwrap_or(0).to_string());
                c
            }
            Kind::Amqtt => {
                let bin = idir.join("amqtt/bin/amqtt");
                if !bin.exists() {
                    return Err(not_installed(self.kind, &bin));
                }
                let mut c = Command::new(bin);
                c.arg("-c").arg(dir.join("amqtt.yaml"));
                c
            }
            Kind::Ejabberd => {
                let Some((libs, _)) = ejabberd_lib() else {
                    return Err(not_installed(
                        self.kind,
                        Path::new("/usr/lib/<arch>/ejabberd-*/ebin/mod_mqtt.beam"),
                    ));
                };
                // erl directly rather than ejabberdctl: no su to the ejabberd user
                // (who cannot write our temp dir), no epmd, no node name.
                let spool = dir.join("spool");
                let _ = fs::create_dir_all(&spool);
                let mut c = Command::new("erl");
                c.env("ERL_LIBS", libs)
                    .env("EJABBERD_CONFIG_PATH", dir.join("ejabberd.yml"))
                    .env("EJABBERD_LOG_PATH", self.log_path.as_ref().unwrap())
                    .env("ERL_CRASH_DUMP_BYTES", "0")
                    .args(["-noinput", "-noshell", "-mnesia", "dir"])
                    .arg(format!("\"{}\"", spool.display()))
                    .args(["-s", "ejabberd"]);
                c
            }
        };
        Ok(cmd)
    }

    /// What the broker prints once a listener is bound (so that the port we
    /// probe is ours, not someone else's who took it first).
    fn ready_marker(&self) -> Option<String> {
        let port = self.port;
        match self.kind {
            Kind::Mosquitto => Some(" running".into()),
            Kind::Rumqttd => Some(format!("\"{HOST}:{port}\"")),
            Kind::Aedes => Some(format!("running on {port}")),
            Kind::Amqtt => Some(format!("bind to {HOST}:{port}")),
            Kind::Ejabberd => Some(format!("Start accepting TCP connections at {HOST}:{port}")),
        }
    }

    fn launch(&self, deadline: Instant) -> Result<Child, Launch> {
        let mut cmd = self.command().map_err(Launch::Exited)?;
        let log_offset = self
            .log_path
            .as_ref()
            .and_then(|p| fs::metadata(p).ok())
            .map_or(0, |m| m.len());
        let out_offset = fs::metadata(&self.out_path).map_or(0, |m| m.len());
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.out_path)
            .map_err(Launch::Spawn)?;
        let err = out.try_clone().map_err(Launch::Spawn)?;
        cmd.current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let mut child = spawn_child(cmd).map_err(Launch::Spawn)?;
        let new_output = || {
            let mut text = self
                .log_path
                .as_ref()
                .map(|p| read_from(p, log_offset))
                .unwrap_or_default();
            text.push_str(&read_from(&self.out_path, out_offset));
            text
        };
        let in_use = |text: &str| {
            let t = text.to_ascii_lowercase();
            t.contains("address already in use") || t.contains("eaddrinuse")
        };
        let ports: Vec<u16> = std::iter::once(self.port).chain(self.ws_port).collect();
        let mut pause = Duration::from_millis(5);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let text = new_output();
                return Err(if in_use(&text) {
                    Launch::PortInUse
                } else {
                    Launch::Exited(format!("{} exited with {status}", self.kind.name()))
                });
            }
            let text = new_output();
            if in_use(&text) {
                // ejabberd logs a listener it could not open and runs on without it.
                let _ = child.kill();
                let _ = child.wait();
                return Err(Launch::PortInUse);
            }
            let marked = self.ready_marker().is_none_or(|m| text.contains(&m));
            if marked
                && ports.iter().all(|&p| {
                    TcpStream::connect_timeout(&loopback(p), Duration::from_millis(200)).is_ok()
                })
            {
                return Ok(child);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Launch::NotReady);
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    fn launch_failure(&self, e: Launch) -> String {
        self.log_shown.store(true, Ordering::SeqCst);
        let why = match e {
            Launch::PortInUse => format!("port {} stayed in use", self.port),
            Launch::Exited(s) => s,
            Launch::NotReady => format!(
                "not accepting on {}:{} (ws {:?}) after {:?}",
                HOST,
                self.port,
                self.ws_port,
                self.kind.ready_timeout()
            ),
            Launch::Spawn(e) => format!("cannot spawn it: {e}"),
        };
        format!(
            "{} failed to start: {why}\n--- output ---\n{}",
            self.kind.name(),
            self.log()
        )
    }
}

impl Drop for AnyBroker {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() && !self.log_shown.load(Ordering::SeqCst) {
            let log = self.log();
            let start = log.len().saturating_sub(32 * 1024);
            let start = (start..log.len())
                .find(|&i| log.is_char_boundary(i))
                .unwrap_or(log.len());
            eprintln!(
                "--- {} log (port {}, {}) ---\n{}--- end of {} log ---",
                self.kind.name(),
                self.port,
                self.dir.display(),
                &log[start..],
                self.kind.name()
            );
        }
        if std::env::var_os("MQTT_TEST_KEEP_DIRS").is_some_and(|v| !v.is_empty() && v != "0") {
            eprintln!("keeping broker dir {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn read_from(path: &Path, offset: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut text = Vec::new();
    if let Ok(mut f) = File::open(path) {
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = f.read_to_end(&mut text);
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

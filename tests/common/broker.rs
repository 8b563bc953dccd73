//! A private mosquitto per test.
//!
//! Each `Broker` owns a temp dir (config, password file, log, persistence DB) and a
//! mosquitto process listening on `127.0.0.1:<port>`. Brokers are cheap (~10 ms to
//! start): give each test its own rather than sharing one through a static.
//!
//! Environment overrides: `MOSQUITTO` (broker binary), `MOSQUITTO_PASSWD`, and
//! `MQTT_TEST_KEEP_DIRS=1` to keep the temp dirs for inspection.

use super::{HOST, free_port, loopback, unique_temp_dir};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// How long a start, restart or stop may take before the harness gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

fn mosquitto_bin() -> String {
    std::env::var("MOSQUITTO").unwrap_or_else(|_| {
        if Path::new("/usr/sbin/mosquitto").exists() {
            "/usr/sbin/mosquitto".into()
        } else {
            "mosquitto".into()
        }
    })
}

fn mosquitto_passwd_bin() -> String {
    std::env::var("MOSQUITTO_PASSWD").unwrap_or_else(|_| "mosquitto_passwd".into())
}

fn keep_dirs() -> bool {
    std::env::var_os("MQTT_TEST_KEEP_DIRS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Configures a [`Broker`]; finish with [`BrokerBuilder::start`].
#[derive(Clone, Debug, Default)]
pub struct BrokerBuilder {
    users: Vec<(String, String)>,
    allow_anonymous: Option<bool>,
    persistence: bool,
    debug_log: bool,
    extra: String,
    tls_listener: Option<String>,
    many_clients: bool,
}

impl BrokerBuilder {
    /// Add a user to the password file (created with `mosquitto_passwd -b -c`).
    /// Turns `allow_anonymous` off unless [`allow_anonymous`](Self::allow_anonymous)
    /// says otherwise. Call several times for several users.
    pub fn password(mut self, user: &str, pass: &str) -> Self {
        self.users.push((user.into(), pass.into()));
        self
    }

    /// Override `allow_anonymous` (default: true, or false once a password is set).
    pub fn allow_anonymous(mut self, allow: bool) -> Self {
        self.allow_anonymous = Some(allow);
        self
    }

    /// Persist sessions and messages to the temp dir (`autosave_on_changes true`,
    /// `autosave_interval 1`). mosquitto saves only after changes it counts, and
    /// in-flight steps do not count: a SIGKILL at a random moment rolls its QoS
    /// state back behind what it already sent. To kill without losing anything,
    /// freeze the clients' traffic, force a save (SIGUSR1) and wait for it, as
    /// `tests/reconnect.rs` does before each `kill()`.
    pub fn persistence(mut self, on: bool) -> Self {
        self.persistence = on;
        self
    }

    /// Log every packet (`log_type all`). Off by default: it slows heavy tests down.
    pub fn debug_log(mut self, on: bool) -> Self {
        self.debug_log = on;
        self
    }

    /// Raw mosquitto.conf lines appended after the generated ones. Can be called
    /// several times; each call adds a line break.
    pub fn extra_config(mut self, config: &str) -> Self {
        self.extra.push_str(config);
        self.extra.push('\n');
        self
    }

    /// Thousands of connections: `max_connections -1` on the listener, and the
    /// open-files limit of the test process (which mosquitto inherits, and
    /// which the test's own sockets need too) raised to its hard limit.
    pub fn many_clients(mut self) -> Self {
        self.many_clients = true;
        self
    }

    /// A second listener on `127.0.0.1:<tls_port>` (a free port picked at start,
    /// see [`Broker::tls_port`]) followed by `settings`: mosquitto.conf lines
    /// for that listener, e.g. `cafile`, `certfile`, `keyfile`,
    /// `require_certificate true`.
    pub fn tls_listener(mut self, settings: &str) -> Self {
        self.tls_listener = Some(settings.to_owned());
        self
    }

    /// Start mosquitto and wait (at most 10 s) until it accepts TCP connections.
    /// Panics, with the broker log, if it cannot be started.
    pub fn start(self) -> Broker {
        if self.many_clients {
            super::raise_nofile_limit();
        }
        let dir = unique_temp_dir("mqtt-broker");
        let broker = Broker {
            port: 0,
            tls_port: 0,
            conf_path: dir.join("mosquitto.conf"),
            log_path: dir.join("mosquitto.log"),
            out_path: dir.join("mosquitto.out"),
            dir,
            child: Mutex::new(None),
            log_shown: AtomicBool::new(false),
        };
        // `broker` is dropped (dir removed) if anything below panics.
        let passwd_path = broker.dir.join("passwd");
        for (i, (user, pass)) in self.users.iter().enumerate() {
            let mut cmd = Command::new(mosquitto_passwd_bin());
            cmd.arg("-b");
            if i == 0 {
                cmd.arg("-c");
            }
            let out = cmd
                .arg(&passwd_path)
                .arg(user)
                .arg(pass)
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", mosquitto_passwd_bin()));
            assert!(
                out.status.success(),
                "mosquitto_passwd failed for user {user:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let anonymous = self.allow_anonymous.unwrap_or(self.users.is_empty());

        let mut broker = broker;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let port = free_port();
            if self.tls_listener.is_some() {
                broker.tls_port = loop {
                    let p = free_port();
                    if p != port {
                        break p;
                    }
                };
            }
            let conf = self.config(&broker, port, anonymous, &passwd_path);
            fs::write(&broker.conf_path, conf).expect("write mosquitto.conf");
            broker.port = port;
            match broker.launch(deadline) {
                Ok(child) => {
                    *broker.lock_child() = Some(child);
                    return broker;
                }
                // Someone took the port between free_port() and mosquitto's bind: retry.
                Err(Launch::PortInUse) if Instant::now() < deadline => continue,
                Err(e) => panic!("{}", broker.launch_failure(e)),
            }
        }
    }

    fn config(&self, broker: &Broker, port: u16, anonymous: bool, passwd: &Path) -> String {
        let mut c = String::from("# generated by tests/common/broker.rs\n");
        // As root, mosquitto 2 drops privileges to user `mosquitto`, which cannot
        // write into our temp dir; `user root` keeps it as is (ignored when not root).
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            c.push_str("user root\n");
        }
        c.push_str(&format!("listener {port} {HOST}\n"));
        if self.many_clients {
            c.push_str("max_connections -1\n");
        }
        c.push_str(&format!("allow_anonymous {anonymous}\n"));
        if !self.users.is_empty() {
            c.push_str(&format!("password_file {}\n", passwd.display()));
        }
        c.push_str("set_tcp_nodelay true\n");
        c.push_str(&format!("log_dest file {}\n", broker.log_path.display()));
        if self.debug_log {
            c.push_str("log_type all\n");
        } else {
            c.push_str("log_type error\nlog_type warning\nlog_type notice\nlog_type information\n");
            c.push_str("log_type subscribe\nlog_type unsubscribe\n");
        }
        c.push_str("connection_messages true\n");
        c.push_str("log_timestamp true\nlog_timestamp_format %H:%M:%S\n");
        if self.persistence {
            // persistence_location must end with a slash.
            c.push_str("persistence true\n");
            c.push_str(&format!("persistence_location {}/\n", broker.dir.display()));
            c.push_str("persistence_file mosquitto.db\n");
            c.push_str("autosave_on_changes true\nautosave_interval 1\n");
        } else {
            c.push_str("persistence false\n");
        }
        if let Some(settings) = &self.tls_listener {
            c.push_str(&format!("listener {} {HOST}\n", broker.tls_port));
            c.push_str(settings);
            c.push('\n');
        }
        c.push_str(&self.extra);
        c
    }
}

enum Launch {
    PortInUse,
    Exited(String),
    NotReady,
    Spawn(io::Error),
}

/// A running (or stopped/killed) private mosquitto. Dropping it kills the process
/// and removes its temp dir; if the thread is panicking, the log is printed first.
///
/// All methods take `&self`, so a `Broker` can be shared with helper threads
/// (e.g. `std::thread::scope`) that kill or restart it.
pub struct Broker {
    port: u16,
    /// The port of the listener added by `BrokerBuilder::tls_listener` (0: none).
    tls_port: u16,
    dir: PathBuf,
    conf_path: PathBuf,
    log_path: PathBuf,
    out_path: PathBuf,
    child: Mutex<Option<Child>>,
    /// The log already went into a panic message: don't print it again on drop.
    log_shown: AtomicBool,
}

impl Broker {
    /// An anonymous, non-persistent broker.
    pub fn start() -> Broker {
        BrokerBuilder::default().start()
    }

    pub fn builder() -> BrokerBuilder {
        BrokerBuilder::default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the [`BrokerBuilder::tls_listener`] listener; panics without one.
    pub fn tls_port(&self) -> u16 {
        assert_ne!(self.tls_port, 0, "the broker has no TLS listener");
        self.tls_port
    }

    /// Always "127.0.0.1".
    pub fn host(&self) -> &'static str {
        HOST
    }

    pub fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    /// The broker's temp dir (config, log, passwd, mosquitto.db).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process id, if the broker is running.
    pub fn pid(&self) -> Option<u32> {
        self.lock_child().as_ref().map(Child::id)
    }

    /// Whether the process is alive (reaps it if it died on its own).
    pub fn is_running(&self) -> bool {
        let mut guard = self.lock_child();
        match guard.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(_) => {
                *guard = None;
                false
            }
            None => false,
        }
    }

    /// SIGKILL the broker and reap it: no goodbye on any connection, no final save.
    /// No-op if it is not running.
    pub fn kill(&self) {
        if let Some(mut child) = self.lock_child().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM the broker and wait (at most 10 s, then SIGKILL) for it to exit.
    /// mosquitto saves its database on the way out. No-op if it is not running.
    pub fn stop(&self) {
        let Some(mut child) = self.lock_child().take() else {
            return;
        };
        // SAFETY: plain kill(2) on our own child, which is not reaped yet.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut pause = Duration::from_millis(1);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => {
                    eprintln!("mosquitto ignored SIGTERM for 10 s; killing it");
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

    /// Start mosquitto again on the same port with the same config (and the same
    /// persistence DB), `stop()`ping it first if it is still running. Waits until it
    /// accepts connections; panics with the log if that takes more than 10 s.
    pub fn restart(&self) {
        self.stop();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.launch(deadline) {
                Ok(child) => {
                    *self.lock_child() = Some(child);
                    return;
                }
                // The port is ours by convention only; wait for whoever holds it.
                Err(Launch::PortInUse) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("{}", self.launch_failure(e)),
            }
        }
    }

    /// The broker log so far (all runs), plus anything mosquitto printed on
    /// stdout/stderr (config errors before the log file is opened).
    pub fn log(&self) -> String {
        let mut log = fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let out = fs::read(&self.out_path).unwrap_or_default();
        if !out.is_empty() {
            log.push_str("--- mosquitto stdout/stderr ---\n");
            log.push_str(&String::from_utf8_lossy(&out));
        }
        log
    }

    fn lock_child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spawn mosquitto with the current config file and wait until it is ready.
    fn launch(&self, deadline: Instant) -> Result<Child, Launch> {
        let log_offset = fs::metadata(&self.log_path).map(|m| m.len()).unwrap_or(0);
        let out_offset = fs::metadata(&self.out_path).map(|m| m.len()).unwrap_or(0);
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.out_path)
            .map_err(Launch::Spawn)?;
        let err = out.try_clone().map_err(Launch::Spawn)?;
        let mut cmd = Command::new(mosquitto_bin());
        cmd.arg("-c")
            .arg(&self.conf_path)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let mut child = spawn_child(cmd).map_err(Launch::Spawn)?;

        let new_output = || {
            let mut text = read_from(&self.log_path, log_offset);
            text.push_str(&read_from(&self.out_path, out_offset));
            text
        };
        let mut pause = Duration::from_millis(1);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let text = new_output();
                return Err(if text.contains("Address already in use") {
                    Launch::PortInUse
                } else {
                    Launch::Exited(format!("mosquitto exited with {status}"))
                });
            }
            // "running" is logged once every listener is bound, which rules out
            // probing someone else's socket that took our port.
            if new_output().contains(" running")
                && TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok()
            {
                return Ok(child);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Launch::NotReady);
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    fn launch_failure(&self, e: Launch) -> String {
        self.log_shown.store(true, Ordering::SeqCst);
        let why = match e {
            Launch::PortInUse => format!("port {} stayed in use for 10 s", self.port),
            Launch::Exited(s) => s,
            Launch::NotReady => format!("not accepting on port {} after 10 s", self.port),
            Launch::Spawn(e) => format!("cannot spawn {}: {e}", mosquitto_bin()),
        };
        format!(
            "mosquitto failed to start: {why}\n--- config ---\n{}--- log ---\n{}",
            fs::read_to_string(&self.conf_path).unwrap_or_default(),
            self.log()
        )
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() && !self.log_shown.load(Ordering::SeqCst) {
            let log = self.log();
            let tail_start = log.len().saturating_sub(64 * 1024);
            let tail_start = (tail_start..log.len())
                .find(|&i| log.is_char_boundary(i))
                .unwrap_or(log.len());
            eprintln!(
                "--- mosquitto log (port {}, {}) ---\n{}--- end of mosquitto log ---",
                self.port,
                self.dir.display(),
                &log[tail_start..]
            );
        }
        if keep_dirs() {
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

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawn through one long-lived thread, with PR_SET_PDEATHSIG=SIGKILL so that no
/// mosquitto outlives the test process (Ctrl-C, a timeout kill, a static never
/// dropped). The death signal fires when the *thread* that forked exits, hence the
/// dedicated thread: a broker restarted from a short-lived helper thread survives it.
fn spawn_child(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("mosquitto-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawn the mosquitto-spawner thread");
        tx
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("mosquitto-spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("mosquitto-spawner thread is gone"))?
}

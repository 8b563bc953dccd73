//! Real proxies for the network-path tests: tinyproxy (HTTP CONNECT) and
//! microsocks (SOCKS5), each a private process on a free loopback port, killed
//! on drop. Both come from Debian (`scripts/test.sh` installs them);
//! `TINYPROXY` and `MICROSOCKS` override the binaries.
#![allow(dead_code)]

use super::common::{HOST, free_port, loopback, unique_temp_dir};
use std::fs;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A name for 127.0.0.1 that a proxy resolves itself (SOCKS5 address type 3):
/// `localhost` when it resolves there first (microsocks tries the first
/// address only, and the test servers listen on 127.0.0.1 alone), otherwise
/// the dotted quad, which still travels as a name.
pub fn loopback_name() -> &'static str {
    use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs};
    let first = ("localhost", 1)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next());
    match first {
        Some(a) if a.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST) => "localhost",
        _ => HOST,
    }
}

/// A running proxy process.
pub struct RealProxy {
    child: Child,
    port: u16,
    dir: PathBuf,
    name: &'static str,
}

impl RealProxy {
    /// tinyproxy allowing CONNECT to any port, with `BasicAuth user pass` if given.
    pub fn tinyproxy(basic_auth: Option<(&str, &str)>) -> RealProxy {
        RealProxy::tinyproxy_at(None, basic_auth)
    }

    /// tinyproxy on `port` (e.g. that of a proxy that was stopped), or on a free one.
    pub fn tinyproxy_at(port: Option<u16>, basic_auth: Option<(&str, &str)>) -> RealProxy {
        let bin = std::env::var("TINYPROXY").unwrap_or_else(|_| "tinyproxy".into());
        RealProxy::start("tinyproxy", port, |dir, port| {
            // No ConnectPort line: CONNECT is allowed to every port.
            let mut conf = format!(
                "Port {port}\nListen {HOST}\nTimeout 30\nMaxClients 50\nLogLevel Info\nAllow {HOST}\n"
            );
            if let Some((user, pass)) = basic_auth {
                conf.push_str(&format!("BasicAuth {user} {pass}\n"));
            }
            let path = dir.join("tinyproxy.conf");
            fs::write(&path, conf).expect("write tinyproxy.conf");
            let mut cmd = Command::new(&bin);
            cmd.arg("-d").arg("-c").arg(path);
            cmd
        })
    }

    /// microsocks, requiring `user`/`pass` (RFC 1929) if given.
    pub fn microsocks(credentials: Option<(&str, &str)>) -> RealProxy {
        RealProxy::microsocks_at(None, credentials)
    }

    /// microsocks on `port` (e.g. that of a proxy that was stopped), or on a free one.
    pub fn microsocks_at(port: Option<u16>, credentials: Option<(&str, &str)>) -> RealProxy {
        let bin = std::env::var("MICROSOCKS").unwrap_or_else(|_| "microsocks".into());
        RealProxy::start("microsocks", port, |_, port| {
            let mut cmd = Command::new(&bin);
            cmd.arg("-i").arg(HOST).arg("-p").arg(port.to_string());
            if let Some((user, pass)) = credentials {
                cmd.arg("-u").arg(user).arg("-P").arg(pass);
            }
            cmd
        })
    }

    /// Start on `port`, or on a free port; retry (on another free port, or
    /// on the same given one) if it could not listen.
    fn start(
        name: &'static str,
        at: Option<u16>,
        command: impl Fn(&PathBuf, u16) -> Command,
    ) -> RealProxy {
        let dir = unique_temp_dir(&format!("mqtt-{name}"));
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = at.unwrap_or_else(free_port);
            let log = dir.join(format!("{name}-{port}.log"));
            let out = fs::File::create(&log).expect("create proxy log");
            let err = out.try_clone().expect("clone log handle");
            let child = command(&dir, port)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot run {name}: {e} (scripts/test.sh installs it: apt-get install {name})")
                });
            let mut proxy = RealProxy {
                child,
                port,
                dir: dir.clone(),
                name,
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if TcpStream::connect(loopback(port)).is_ok() {
                    return proxy;
                }
                if let Ok(Some(_)) = proxy.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            last_log = fs::read_to_string(&log).unwrap_or_default();
            // Drop kills it and would remove the dir we retry in: take it out.
            proxy.dir = PathBuf::new();
        }
        let _ = fs::remove_dir_all(&dir);
        panic!("{name} did not start; last log:\n{last_log}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `scheme://[user:pass@]127.0.0.1:port`, user info percent-encoded.
    pub fn uri(&self, scheme: &str, credentials: Option<(&str, &str)>) -> String {
        match credentials {
            Some((u, p)) => format!(
                "{scheme}://{}:{}@{HOST}:{}",
                encode(u),
                encode(p),
                self.port
            ),
            None => format!("{scheme}://{HOST}:{}", self.port),
        }
    }
}

/// Percent-encode everything but RFC 3986 unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Drop for RealProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.dir.as_os_str().is_empty() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// An MQTT broker with a WebSocket listener: aedes behind the `ws` package
/// (`ws_broker/`, versions pinned in its package-lock.json), on a port Node
/// picks, killed on drop. Installs the npm packages on first use if
/// `node_modules` is missing; `NODE` overrides the node binary.
pub struct WsBroker {
    child: Child,
    port: u16,
    log: PathBuf,
}

fn ws_broker_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/netpaths_support/ws_broker")
}

fn ensure_node_modules() {
    static INSTALLED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    INSTALLED.get_or_init(|| {
        let dir = ws_broker_dir();
        if dir.join("node_modules/aedes/package.json").exists()
            && dir.join("node_modules/ws/package.json").exists()
        {
            return;
        }
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run npm (Node.js 20 and npm are needed): {e}"));
        assert!(
            out.status.success(),
            "npm ci in {} failed:\n{}{}",
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

impl WsBroker {
    /// Start with the WebSocket endpoint at `path` (other paths are refused
    /// with HTTP 400); waits (at most 20 s) for it to listen.
    pub fn start(path: &str) -> WsBroker {
        WsBroker::start_with(path, None, "127.0.0.1", 0)
    }

    /// Start with TLS (wss): `tls` is the server certificate and key PEM files.
    pub fn start_tls(path: &str, cert: &std::path::Path, key: &std::path::Path) -> WsBroker {
        WsBroker::start_with(path, Some((cert, key)), "127.0.0.1", 0)
    }

    /// Start listening on `host` (an IP address), on `port` (0: any free
    /// one), e.g. again on the port of a broker that was stopped.
    pub fn start_at(host: &str, port: u16, path: &str) -> WsBroker {
        WsBroker::start_with(path, None, host, port)
    }

    /// `start_tls` on 127.0.0.1:`port` (0: any free one).
    pub fn start_tls_at(
        port: u16,
        path: &str,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> WsBroker {
        WsBroker::start_with(path, Some((cert, key)), "127.0.0.1", port)
    }

    fn start_with(
        path: &str,
        tls: Option<(&std::path::Path, &std::path::Path)>,
        host: &str,
        port: u16,
    ) -> WsBroker {
        use std::io::{BufRead, BufReader};
        ensure_node_modules();
        let log = unique_temp_dir("mqtt-ws-broker").join("stderr.log");
        let node = std::env::var("NODE").unwrap_or_else(|_| "node".into());
        let mut child = Command::new(node)
            .arg(ws_broker_dir().join("ws_broker.mjs"))
            .arg(port.to_string())
            .arg(path)
            .env("WS_BROKER_HOST", host)
            .args(
                tls.map(|(c, k)| [c.as_os_str(), k.as_os_str()])
                    .into_iter()
                    .flatten(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log).expect("create ws broker log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run node: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        let port = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse::<u16>().ok());
        match port {
            Some(port) => WsBroker { child, port, log },
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the WebSocket broker did not start ({line:?}):\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for WsBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = self.log.parent() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

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
        let bin = std::env::var("TINYPROXY").unwrap_or_else(|_| "tinyproxy".into());
        RealProxy::start("tinyproxy", |dir, port| {
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
        let bin = std::env::var("MICROSOCKS").unwrap_or_else(|_| "microsocks".into());
        RealProxy::start("microsocks", |_, port| {
            let mut cmd = Command::new(&bin);
            cmd.arg("-i").arg(HOST).arg("-p").arg(port.to_string());
            if let Some((user, pass)) = credentials {
                cmd.arg("-u").arg(user).arg("-P").arg(pass);
            }
            cmd
        })
    }

    /// Start on a free port; retry on another if the port was taken meanwhile.
    fn start(name: &'static str, command: impl Fn(&PathBuf, u16) -> Command) -> RealProxy {
        let dir = unique_temp_dir(&format!("mqtt-{name}"));
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_port();
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

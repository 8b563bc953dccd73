//! Shared integration-test harness.
//!
//! * [`Broker`]: a private mosquitto on a free loopback port.
//! * [`ScriptedPeer`] / [`PeerConn`]: play the broker (or a raw client) packet by packet.
//! * [`FaultProxy`]: a TCP proxy that cuts, delays or blackholes traffic on demand.
//! * [`library`]: the cdylib and staticlib cargo built, for tests that link them.
//! * [`events`]: records a client's callbacks as owned [`Event`]s and waits for them.
//!
//! Every integration test file only uses part of this module, hence the `allow`s.
#![allow(dead_code, unused_imports)]

pub mod broker;
pub mod events;
pub mod library;
pub mod peer;
#[cfg(feature = "tls")]
pub mod pki;
pub mod proxy;

pub use broker::{Broker, BrokerBuilder};
pub use events::Event;
pub use peer::{OwnedPacket, PeerConn, PeerError, ScriptedPeer};
pub use proxy::{Direction, FaultProxy, ProxyStats};

use mqtt::protocol::codec::{Connect, Packet};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Every harness socket lives on this address.
pub const HOST: &str = "127.0.0.1";

/// A generous default timeout for "this should happen" waits.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A loopback port that was free a moment ago (bind to port 0, read it, release it).
/// Racy by nature: whoever binds it next must be ready to retry. Prefer keeping the
/// listener (as `ScriptedPeer` and `FaultProxy` do) whenever the harness owns the socket.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Raise this process's soft limit of open files to its hard limit (children
/// such as the broker inherit it); returns the new soft limit.
pub fn raise_nofile_limit() -> libc::rlim_t {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
    }
    limit.rlim_cur
}

/// Poll `condition` with short, growing sleeps until it holds (`true`) or `timeout`
/// passes (`false`). The condition is always evaluated at least once, and once more
/// at the deadline.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if condition() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// A fresh, empty directory under `std::env::temp_dir()`; the caller removes it.
pub fn unique_temp_dir(prefix: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("{prefix}-{}-{n}-{nanos:08x}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return dir,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("cannot create {}: {e}", dir.display()),
        }
    }
}

/// A CONNECT with a clean session, keep-alive 60 s, no will and no credentials.
/// Adjust with struct update syntax: `Connect { username: Some("u"), ..connect_packet("id") }`.
pub fn connect_packet(client_id: &str) -> Connect<'_> {
    Connect {
        client_id,
        clean_session: true,
        keep_alive: 60,
        will: None,
        username: None,
        password: None,
        properties: None,
    }
}

/// Encode one packet with the crate codec (panics on a codec error).
pub fn encode(packet: &Packet<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    packet
        .encode(&mut out)
        .unwrap_or_else(|e| panic!("cannot encode {packet:?}: {e}"));
    out
}

/// `mqtt_tls_options` with every field NULL, 0 or false, to fill in with `..`.
#[cfg(feature = "tls")]
pub fn no_tls_options() -> mqtt::ffi::mqtt_tls_options {
    mqtt::ffi::mqtt_tls_options {
        ca_file: std::ptr::null(),
        ca_pem: std::ptr::null(),
        ca_pem_len: 0,
        cert_file: std::ptr::null(),
        cert_pem: std::ptr::null(),
        cert_pem_len: 0,
        key_file: std::ptr::null(),
        key_pem: std::ptr::null(),
        key_pem_len: 0,
        server_name: std::ptr::null(),
        alpn: std::ptr::null(),
        insecure_skip_verify: false,
    }
}

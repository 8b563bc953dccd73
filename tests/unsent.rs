//! The bound on bytes waiting in the connection's buffer: a QoS 0 burst faster
//! than the network gets `QueueFull` instead of growing memory, or waits for
//! room when asked to, with a loop thread and in the caller's own loop.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use std::net::TcpListener;
use std::os::fd::AsRawFd;

use common::{PeerConn, TIMEOUT};
use mqtt::{Client, Error, QoS};

const LIMIT: usize = 64 * 1024;
const PAYLOAD: usize = 16 * 1024;

fn set_small_buffer(fd: i32, option: libc::c_int) {
    let small: libc::c_int = 4096;
    // SAFETY: a valid socket and a c_int option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&small as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

/// The client's socket to `port` (this process's descriptors, found by peer
/// address): the test shrinks its send buffer, which the kernel would
/// otherwise grow for a while after the peer stopped reading.
fn client_socket_to(port: u16) -> i32 {
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        // SAFETY: sockaddr_in-sized storage and its length, for getpeername.
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: as above; a descriptor that is not a socket just fails.
        let rc = unsafe {
            libc::getpeername(fd, (&mut addr as *mut libc::sockaddr_in).cast(), &mut len)
        };
        if rc == 0
            && addr.sin_family == libc::AF_INET as libc::sa_family_t
            && u16::from_be(addr.sin_port) == port
        {
            return fd;
        }
    }
    panic!("no socket to port {port}");
}

/// A client connected to a peer that does not read after the handshake. Both
/// socket buffers are small, so the kernel soon stops taking bytes.
fn stalled(loop_thread: bool, wait: Duration) -> (Client, PeerConn) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    set_small_buffer(listener.as_raw_fd(), libc::SO_RCVBUF);
    let client = Client::new("unsent", true).unwrap();
    client.set_reconnect(None).unwrap();
    client.set_unsent_limit(LIMIT, wait).unwrap();
    let port = listener.local_addr().unwrap().port();
    let connecting = {
        let client = client.clone();
        std::thread::spawn(move || client.connect("127.0.0.1", 30, port))
    };
    let mut conn = PeerConn::from_stream(listener.accept().unwrap().0);
    conn.handshake(false, TIMEOUT);
    connecting.join().unwrap().unwrap();
    set_small_buffer(client_socket_to(port), libc::SO_SNDBUF);
    if loop_thread {
        client.loop_start(None).unwrap();
    }
    (client, conn)
}

/// Publish until the buffer is full: the socket and the peer's receive buffer
/// fill first, then the client's own buffer up to the limit.
fn fill(client: &Client) -> usize {
    let payload = vec![7u8; PAYLOAD];
    for accepted in 0.. {
        match client.publish("unsent/t", &payload, QoS::AtMostOnce, false) {
            Ok(_) => assert!(accepted < 100_000, "never pushed back"),
            Err(Error::QueueFull) => return accepted,
            Err(e) => panic!("{e:?}"),
        }
    }
    unreachable!()
}

/// `fill`, until the socket takes nothing more: the kernel grows its buffers
/// for a while after the first push-back. Returns the publishes accepted.
fn stall(client: &Client) -> usize {
    let deadline = Instant::now() + TIMEOUT;
    let mut accepted = 0;
    loop {
        accepted += fill(client);
        let unsent = client.unsent_bytes();
        std::thread::sleep(Duration::from_millis(200));
        if client.unsent_bytes() == unsent {
            return accepted;
        }
        assert!(Instant::now() < deadline, "the socket kept taking bytes");
    }
}

fn drain_in_background(conn: PeerConn, after: Duration) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        std::thread::sleep(after);
        let mut stream = conn.stream();
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut total = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    })
}

#[test]
fn a_qos0_burst_is_refused_beyond_the_limit_and_memory_stays_bounded() {
    let (client, conn) = stalled(true, Duration::ZERO);
    // After a bare `fill` the loop thread may still hand bytes to the socket,
    // so the buffer is read only once it stopped moving.
    let accepted = stall(&client);
    let unsent = client.unsent_bytes();
    assert!(unsent <= LIMIT, "{unsent} bytes waiting, limit {LIMIT}");
    assert!(
        unsent + PAYLOAD + 64 > LIMIT,
        "refused with room left: {unsent}"
    );
    // QoS 1/2 are bounded by the window and the queue, not by this limit.
    assert!(
        client
            .publish("unsent/t", b"q1", QoS::AtLeastOnce, false)
            .is_ok()
    );
    assert!(accepted > 0);
    client.close();
    drop(conn);
}

#[test]
fn a_waiting_publish_goes_through_once_the_socket_drains() {
    let (client, conn) = stalled(true, Duration::from_secs(10));
    client.set_unsent_limit(LIMIT, Duration::ZERO).unwrap();
    fill(&client);
    client
        .set_unsent_limit(LIMIT, Duration::from_secs(10))
        .unwrap();
    let reader = drain_in_background(conn, Duration::from_millis(200));
    let started = Instant::now();
    client
        .publish("unsent/t", &[1u8; PAYLOAD], QoS::AtMostOnce, false)
        .expect("room once the peer reads");
    assert!(started.elapsed() < Duration::from_secs(10));
    client.close();
    assert!(reader.join().unwrap() > 0);
}

#[test]
fn a_waiting_publish_gives_up_after_its_wait() {
    let (client, conn) = stalled(true, Duration::ZERO);
    stall(&client);
    let wait = Duration::from_millis(300);
    client.set_unsent_limit(LIMIT, wait).unwrap();
    let started = Instant::now();
    assert_eq!(
        client.publish("unsent/t", &[1u8; PAYLOAD], QoS::AtMostOnce, false),
        Err(Error::QueueFull)
    );
    let waited = started.elapsed();
    assert!(waited >= wait, "returned after {waited:?}");
    assert!(waited < wait + TIMEOUT, "{waited:?}");
    client.close();
    drop(conn);
}

/// No loop thread: the waiting publish writes by itself.
#[test]
fn a_waiting_publish_runs_the_client_when_no_thread_does() {
    let (client, conn) = stalled(false, Duration::ZERO);
    // Without a loop, the first publishes fill the buffer at once.
    fill(&client);
    client
        .set_unsent_limit(LIMIT, Duration::from_secs(10))
        .unwrap();
    let reader = drain_in_background(conn, Duration::from_millis(200));
    for _ in 0..20 {
        client
            .publish("unsent/t", &[1u8; PAYLOAD], QoS::AtMostOnce, false)
            .expect("the publish itself wrote the buffer out");
    }
    client.close();
    // At least what the limit held plus the 20 that followed reached the peer.
    assert!(reader.join().unwrap() >= (LIMIT + 20 * PAYLOAD) as u64 / 2);
}

//! The WebSocket layer allocates nothing per message once its buffers have
//! grown: framing and unframing MQTT packets with the sans-IO reader and
//! writer, and a `WsStream` exchanging packets (pings answered on the way)
//! with a scripted server on a socket pair, under a counting allocator.
//!
//! Only the current thread's allocations are counted, so the server thread
//! and the test harness do not disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use mqtt::net::websocket::{Event, FrameReader, FrameWriter, WsStream, apply_mask};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: forwards to the system allocator; only counts on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations<R>(f: impl FnOnce() -> R) -> (R, usize) {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    let r = f();
    COUNTING.with(|on| on.set(false));
    (r, ALLOCATIONS.with(|n| n.get()))
}

/// A QoS 1 PUBLISH of `len` payload bytes.
fn publish(len: usize) -> Vec<u8> {
    let rl = 2 + 3 + 2 + len;
    let mut p = vec![0x32];
    let mut n = rl;
    loop {
        let b = (n % 128) as u8;
        n /= 128;
        p.push(if n > 0 { b | 0x80 } else { b });
        if n == 0 {
            break;
        }
    }
    p.extend_from_slice(&[0, 3, b'a', b'/', b'b', 0, 1]);
    p.extend(std::iter::repeat_n(0x42, len));
    p
}

/// Server frame (unmasked) of a client frame: what a server would echo.
fn unmask_to_server_frame(client: &[u8], out: &mut Vec<u8>) {
    let (len, off) = match client[1] & 0x7f {
        126 => (usize::from(u16::from_be_bytes([client[2], client[3]])), 4),
        127 => (
            u64::from_be_bytes(client[2..10].try_into().unwrap()) as usize,
            10,
        ),
        n => (usize::from(n), 2),
    };
    let key: [u8; 4] = client[off..off + 4].try_into().unwrap();
    out.push(client[0]);
    out.extend_from_slice(&client[1..off]);
    out[1] &= 0x7f;
    let start = out.len();
    out.extend_from_slice(&client[off + 4..off + 4 + len]);
    apply_mask(key, &mut out[start..]);
}

#[test]
fn sans_io_framing_allocates_nothing_per_message() {
    let packets: Vec<Vec<u8>> = [2, 100, 200, 5_000, 70_000]
        .iter()
        .map(|&n| publish(n))
        .collect();
    let mut writer = FrameWriter::new();
    let mut reader = FrameReader::new(1 << 20);
    let mut wire = Vec::new();
    let mut echoed = Vec::new();
    let mut mqtt = Vec::new();
    let mut round = |wire: &mut Vec<u8>, echoed: &mut Vec<u8>, mqtt: &mut Vec<u8>| {
        for p in &packets {
            wire.clear();
            echoed.clear();
            mqtt.clear();
            writer.binary(p, wire).unwrap();
            unmask_to_server_frame(wire, echoed);
            // A ping in front, and the frame in 3 reads.
            let mut pos = 0;
            for cut in [1, echoed.len() / 2, echoed.len()] {
                while pos < cut {
                    let (used, ev) = reader.read(&echoed[pos..cut], mqtt).unwrap();
                    assert_eq!(ev, None);
                    pos += used;
                }
            }
            assert_eq!(mqtt, p);
        }
        // A ping and the pong answering it.
        let (used, ev) = reader.read(&[0x89, 3, b'a', b'b', b'c'], mqtt).unwrap();
        assert_eq!((used, ev), (5, Some(Event::Ping)));
        wire.clear();
        writer.pong(reader.control_payload(), wire).unwrap();
    };
    // Warm up: the buffers grow to the largest packet.
    round(&mut wire, &mut echoed, &mut mqtt);
    let ((), n) = allocations(|| {
        for _ in 0..100 {
            round(&mut wire, &mut echoed, &mut mqtt);
        }
    });
    assert_eq!(n, 0, "allocations in 100 rounds of 5 packets and a ping");
}

#[test]
fn ws_stream_allocates_nothing_per_message() {
    const ROUNDS: usize = 300;
    let (client, mut server) = UnixStream::pair().unwrap();
    let packet = publish(300);
    let puback = [0x40u8, 2, 0, 1];
    // The server: for each client frame, answer a ping every 10 rounds, then
    // a PUBACK split over two frames.
    let srv = std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        for i in 0..ROUNDS + 10 {
            let mut hdr = [0u8; 4];
            server.read_exact(&mut hdr).unwrap();
            let len = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
            server.read_exact(&mut buf[..4 + len]).unwrap();
            if i % 10 == 0 {
                server.write_all(&[0x89, 2, b'h', b'i']).unwrap();
                let mut pong = [0u8; 8];
                server.read_exact(&mut pong).unwrap();
                assert_eq!(pong[0], 0x8a);
            }
            server
                .write_all(&[0x02, 1, puback[0], 0x80, 3, puback[1], puback[2], puback[3]])
                .unwrap();
        }
    });
    let mut ws = WsStream::upgraded(client, &[], 1 << 16);
    let mut got = [0u8; 4];
    let mut exchange = |ws: &mut WsStream<UnixStream>| {
        ws.write_all(&packet).unwrap();
        ws.flush().unwrap();
        ws.read_exact(&mut got).unwrap();
        assert_eq!(got, puback);
    };
    for _ in 0..10 {
        exchange(&mut ws);
    }
    let ((), n) = allocations(|| {
        for _ in 0..ROUNDS {
            exchange(&mut ws);
        }
    });
    srv.join().unwrap();
    assert_eq!(
        n, 0,
        "allocations in {ROUNDS} PUBLISH/PUBACK exchanges with pings"
    );
}

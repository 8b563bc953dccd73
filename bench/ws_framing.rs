//! What the WebSocket layer costs per MQTT packet, before it is wired into the
//! reactor: framing (header, fresh masking key, masked copy) plus unframing
//! (header parse, copy into the MQTT read buffer), against the anchor of the
//! two plain copies a TCP connection's buffers make of the same bytes.
//!
//! `cargo run --release --example ws_framing` prints ns per packet and the
//! ratio to the anchor for a few packet sizes. No sockets: the network costs
//! (syscalls, a 2-14 byte header per frame on the wire) come on top of both.

use mqtt::net::websocket::{FrameReader, FrameWriter};
use std::hint::black_box;
use std::time::Instant;

/// A server frame (unmasked) carrying `payload`.
fn server_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x82];
    match payload.len() {
        n if n <= 125 => f.push(n as u8),
        n if n <= 0xffff => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// A QoS 0 PUBLISH to "t" of `size` bytes in all (a real packet: the reader
/// follows MQTT fixed headers to know where packets end).
fn publish(size: usize) -> Vec<u8> {
    let mut header_len = 2;
    while size - header_len > (1 << (7 * (header_len - 1))) - 1 {
        header_len += 1;
    }
    let mut p = vec![0x30];
    let mut n = size - header_len;
    loop {
        let b = (n % 128) as u8;
        n /= 128;
        p.push(if n > 0 { b | 0x80 } else { b });
        if n == 0 {
            break;
        }
    }
    p.extend_from_slice(&[0, 1, b't']);
    p.extend((p.len()..size).map(|i| (i * 31) as u8));
    assert_eq!(p.len(), size);
    p
}

fn ns_per(iterations: usize, mut f: impl FnMut()) -> f64 {
    // Warm up, then best of 5 runs.
    for _ in 0..iterations / 10 + 1 {
        f();
    }
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iterations {
                f();
            }
            t.elapsed().as_nanos() as f64 / iterations as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    println!(
        "{:>8} {:>12} {:>12} {:>8} {:>12}",
        "bytes", "plain ns", "ws ns", "ratio", "of it write"
    );
    for size in [16usize, 100, 1_000, 16_384, 262_144] {
        let packet = publish(size);
        let frame = server_frame(&packet);
        let iterations = (200_000_000 / size).clamp(2_000, 2_000_000);
        let mut out = Vec::with_capacity(size + 14);
        let mut mqtt = Vec::with_capacity(size);

        let plain = ns_per(iterations, || {
            out.clear();
            out.extend_from_slice(black_box(&packet));
            mqtt.clear();
            mqtt.extend_from_slice(black_box(&out));
            black_box(&mqtt);
        });

        let mut writer = FrameWriter::new();
        let mut reader = FrameReader::new(1 << 20);
        let ws = ns_per(iterations, || {
            out.clear();
            writer
                .binary(black_box(&packet), &mut out)
                .expect("random source");
            mqtt.clear();
            let (used, event) = reader
                .read(black_box(&frame), &mut mqtt)
                .expect("valid frame");
            assert!(used == frame.len() && event.is_none());
            black_box(&mqtt);
            black_box(&out);
        });
        let write_only = ns_per(iterations, || {
            out.clear();
            writer
                .binary(black_box(&packet), &mut out)
                .expect("random source");
            black_box(&out);
        });
        println!(
            "{size:>8} {plain:>12.1} {ws:>12.1} {:>8.2} {write_only:>12.1}",
            ws / plain
        );
    }
}

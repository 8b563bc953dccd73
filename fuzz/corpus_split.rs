//! Turns the captures of `MQTT_CAPTURE_DIR` (see `tests/common/proxy.rs`) into
//! fuzz seed candidates, for `fuzz/capture_corpus.sh`:
//!
//! ```text
//! cargo run --example corpus_split -- <capture dir> <decode out> <session out>
//! ```
//!
//! * `decode`: each captured stream cut to its first few KB on a packet
//!   boundary, and single packets split with the codec (one per packet kind,
//!   flags and size class, to keep the set small);
//! * `session`: inputs in the format of `fuzz/fuzz_targets/session.rs` that
//!   replay a connection's broker -> client packets as raw bytes (action 2),
//!   after the API calls the client's own packets stand for (publish,
//!   subscribe, unsubscribe, disconnect), flushing the output after each step;
//!   one input per connection and one per proxy chaining its connections
//!   (connection lost, reopened).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::{env, fs, process};

use mqtt::protocol::codec::{Decoded, Packet, decode};

/// Longest stream kept for `decode`, and longest `session` input.
const MAX_STREAM: usize = 4096;
const MAX_SESSION: usize = 4096;
/// The session target's largest `max_packet_size`: bigger packets are left out.
const SESSION_MAX_PACKET: usize = 255;

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn save(dir: &Path, kind: &str, data: &[u8], seen: &mut HashSet<u64>) {
    let h = fnv(data);
    if !data.is_empty() && seen.insert(h) {
        let path = dir.join(format!("{kind}-{h:016x}"));
        fs::write(&path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

/// The complete packets at the start of `stream`, as byte ranges.
fn frames(stream: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = stream;
    while let Ok(Decoded::Packet(_, used)) = decode(rest, usize::MAX) {
        out.push(&rest[..used]);
        rest = &rest[used..];
    }
    out
}

fn packet(frame: &[u8]) -> Packet<'_> {
    match decode(frame, usize::MAX) {
        Ok(Decoded::Packet(p, _)) => p,
        other => unreachable!("{other:?}"),
    }
}

/// Session target actions (the byte is taken modulo 16).
const OPEN: u8 = 0;
const LOSE: u8 = 1;
const RECEIVE: u8 = 2;
const PUBLISH: u8 = 6;
const SUBSCRIBE: u8 = 8;
const UNSUBSCRIBE: u8 = 9;
const WRITE_ALL: [u8; 2] = [10, 0];
const DISCONNECT: u8 = 14;

/// The config bytes: the CONNECT's clean session and keep alive (capped), the
/// largest limits otherwise.
fn session_config(up: &[&[u8]]) -> Vec<u8> {
    let (clean, keep_alive) = match up.first().map(|f| packet(f)) {
        Some(Packet::Connect(c)) => (c.clean_session, c.keep_alive.min(3) as u8),
        _ => (true, 0),
    };
    // clean, keep_alive, connect_timeout, max_inflight, max_queued_messages,
    // max_queued_bytes, queue_qos0_offline, max_incoming_qos2,
    // max_packet_size, resubscribe.
    vec![clean as u8, keep_alive, 9, 5, 11, 255, 0, 5, 239, 1]
}

/// The API call a client packet stands for, if any.
fn api_call(frame: &[u8], out: &mut Vec<u8>) {
    match packet(frame) {
        Packet::Publish(p) if !p.dup => {
            let len = p.payload.len().min(39) as u8;
            let fill = p.payload.first().copied().unwrap_or(0);
            out.extend([PUBLISH, 0, p.qos as u8, p.retain as u8, len, fill]);
        }
        Packet::Subscribe(s) => {
            let n = s.filters.len().clamp(1, 3);
            out.extend([SUBSCRIBE, n as u8 - 1]);
            for (i, (_, options)) in s.filters.iter().take(n).enumerate() {
                out.extend([i as u8, options.qos as u8]);
            }
        }
        Packet::Unsubscribe(u) => {
            let n = u.filters.len().clamp(1, 3);
            out.extend([UNSUBSCRIBE, n as u8 - 1]);
            out.extend((0..n as u8).collect::<Vec<_>>());
        }
        Packet::Disconnect(_) => out.push(DISCONNECT),
        _ => return,
    }
    out.extend(WRITE_ALL);
}

/// The packet id of a request (client packet) or of an ack (broker packet).
fn request_id(p: &Packet<'_>) -> Option<u16> {
    match p {
        Packet::Publish(p) if p.pkid != 0 => Some(p.pkid),
        Packet::Subscribe(s) => Some(s.pkid),
        Packet::Unsubscribe(u) => Some(u.pkid),
        _ => None,
    }
}

fn ack_id(p: &Packet<'_>) -> Option<u16> {
    match p {
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubComp(a) => Some(a.pkid),
        Packet::UnsubAck(u) => Some(u.pkid),
        Packet::SubAck(s) => Some(s.pkid),
        _ => None,
    }
}

/// One connection's replay: open, then the broker's packets in order, each
/// preceded by the client requests up to the one it acknowledges.
fn replay(up: &[&[u8]], down: &[&[u8]], out: &mut Vec<u8>, limit: usize) {
    out.push(OPEN);
    out.extend(WRITE_ALL);
    let mut next_up = 1.min(up.len()); // the CONNECT is the open
    for frame in down {
        if out.len() >= limit {
            return;
        }
        if frame.len() > SESSION_MAX_PACKET {
            continue;
        }
        if let Some(id) = ack_id(&packet(frame)) {
            if let Some(k) = up[next_up..]
                .iter()
                .position(|f| request_id(&packet(f)) == Some(id))
            {
                for f in &up[next_up..=next_up + k] {
                    api_call(f, out);
                }
                next_up += k + 1;
            }
        }
        for chunk in frame.chunks(47) {
            out.extend([RECEIVE, chunk.len() as u8]);
            out.extend_from_slice(chunk);
        }
        out.extend(WRITE_ALL);
    }
    for f in &up[next_up..] {
        if out.len() >= limit {
            return;
        }
        api_call(f, out);
    }
}

fn main() {
    let args: Vec<PathBuf> = env::args_os().skip(1).map(PathBuf::from).collect();
    let [captures, decode_out, session_out] = &args[..] else {
        eprintln!("usage: corpus_split <capture dir> <decode out> <session out>");
        process::exit(2);
    };
    fs::create_dir_all(decode_out).expect("create the decode dir");
    fs::create_dir_all(session_out).expect("create the session dir");

    // ("<test>-<port>", conn) -> (up, down), connections in order per proxy.
    let mut conns: BTreeMap<(String, u64), (Vec<u8>, Vec<u8>)> = BTreeMap::new();
    for entry in fs::read_dir(captures).expect("read the capture dir") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let (conn, up) = match (name.strip_suffix("-up.bin"), name.strip_suffix("-down.bin")) {
            (Some(c), _) => (c.to_owned(), true),
            (_, Some(c)) => (c.to_owned(), false),
            _ => continue,
        };
        let Some((proxy, Ok(id))) = conn.rsplit_once('-').map(|(p, id)| (p, id.parse())) else {
            continue;
        };
        let conn = (proxy.to_owned(), id);
        let data = fs::read(&path).expect("read a capture");
        let slot = conns.entry(conn).or_default();
        *(if up { &mut slot.0 } else { &mut slot.1 }) = data;
    }

    let (mut decode_seen, mut session_seen) = (HashSet::new(), HashSet::new());
    let mut kinds = HashSet::new();
    let mut proxies: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for ((proxy, _), (up, down)) in &conns {
        let (up, down) = (frames(up), frames(down));
        for stream in [&up, &down] {
            // Whole stream, up to MAX_STREAM on a packet boundary.
            let mut cut = Vec::new();
            for f in stream.iter().take_while(|f| f.len() <= MAX_STREAM) {
                if cut.len() + f.len() > MAX_STREAM {
                    break;
                }
                cut.extend_from_slice(f);
            }
            save(decode_out, "stream", &cut, &mut decode_seen);
            // Single packets: one per first byte and size class.
            for f in stream {
                let class = usize::BITS - f.len().leading_zeros();
                if kinds.insert((f[0], class)) {
                    save(decode_out, "packet", f, &mut decode_seen);
                }
            }
        }
        let mut input = session_config(&up);
        replay(&up, &down, &mut input, MAX_SESSION);
        save(session_out, "conn", &input, &mut session_seen);

        let chained = proxies
            .entry(proxy.clone())
            .or_insert_with(|| session_config(&up));
        if chained.len() < MAX_SESSION {
            if chained.len() > 10 {
                chained.push(LOSE);
            }
            replay(&up, &down, chained, MAX_SESSION);
        }
    }
    for input in proxies.values() {
        save(session_out, "chain", input, &mut session_seen);
    }
    println!(
        "{} connections: {} decode and {} session candidates",
        conns.len(),
        decode_seen.len(),
        session_seen.len()
    );
}

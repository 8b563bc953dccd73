//! A malicious broker: a scripted peer completes the handshake, then sends
//! hostile bytes. For each case the client must close the connection itself,
//! report the specific reason through the DISCONNECT callback, keep memory
//! bounded, and stay usable afterwards (it connects again and publishes).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::events::{Event, drain, expect, recorded_client};
use common::{HOST, OwnedPacket, PeerConn, ScriptedPeer, TIMEOUT, encode};
use mqtt::protocol::codec::{Packet, Publish, QoS, SubAck};
use mqtt::{Client, Command, Data, Error};

// ---------------------------------------------------------------------------
// Memory accounting: the largest single allocation, and the resident set.

/// Forwards to the system allocator, remembering the largest request, so a
/// test can prove that an announced 256 MB packet was never allocated.
struct Counting;

static LARGEST_ALLOCATION: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST_ALLOCATION.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST_ALLOCATION.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST_ALLOCATION.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MB: usize = 1024 * 1024;

/// The tests of this file run one at a time: those that measure memory must
/// not see another test's allocations (a failing test's backtrace alone parses
/// tens of MB of debug info), and the machine may be small.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Resident set size of this process, from /proc/self/statm.
fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .expect("statm resident field");
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(4096) as usize
}

// ---------------------------------------------------------------------------
// The scenario every test shares.

/// A client (loop thread running, reconnection off) connected to a scripted
/// broker that completed the handshake.
struct Hostile {
    _serial: MutexGuard<'static, ()>,
    client: Client,
    events: Receiver<Event>,
    peer: ScriptedPeer,
    conn: PeerConn,
}

/// Connect `client` to `peer` from another thread while the peer answers the
/// handshake; returns the broker side of the connection.
fn handshake(client: &Client, peer: &ScriptedPeer) -> PeerConn {
    let connecting = {
        let client = client.clone();
        let port = peer.port();
        thread::spawn(move || client.connect(HOST, 30, port))
    };
    let mut conn = peer.accept(TIMEOUT);
    conn.handshake(false, TIMEOUT);
    assert_eq!(connecting.join().unwrap(), Ok(false), "connect");
    conn
}

fn hostile(id: &str, configure: impl FnOnce(&Client)) -> Hostile {
    let serial = serial();
    let peer = ScriptedPeer::bind();
    let (client, events) = recorded_client(id, true);
    client.set_reconnect(None).unwrap();
    configure(&client);
    client.loop_start(None).unwrap();
    let conn = handshake(&client, &peer);
    expect(&events, "CONNACK", |e| e.command == Command::ConnAck);
    Hostile {
        _serial: serial,
        client,
        events,
        peer,
        conn,
    }
}

impl Hostile {
    /// The client closes the connection and reports `error` (and nothing is
    /// delivered meanwhile); then it still works: it connects again to the
    /// same peer and a QoS 1 publish completes. Returns the packets the
    /// client sent between the hostile bytes and the close.
    fn assert_closed_with(self, error: Error) -> Vec<OwnedPacket> {
        let Hostile {
            _serial,
            client,
            events,
            peer,
            mut conn,
        } = self;
        let before_close = conn.expect_closed(TIMEOUT);
        let bye = expect(&events, "DISCONNECT", |e| {
            assert!(
                e.topic.is_none(),
                "a message was delivered from hostile bytes: {e:?}"
            );
            e.command == Command::Disconnect
        });
        assert_eq!(bye.error, Some(error), "DISCONNECT reason");
        assert!(!client.is_connected());
        assert!(client.loop_running());

        // Still alive: connect again and complete a QoS 1 publish.
        let mut conn = handshake(&client, &peer);
        expect(&events, "CONNACK", |e| e.command == Command::ConnAck);
        let mid = client
            .publish("after/hostile", b"still alive", QoS::AtLeastOnce, false)
            .unwrap();
        // A request still pending is sent again first, with its id.
        let publish = loop {
            let p = conn.expect_packet(TIMEOUT);
            match p.packet_type() {
                3 => break p,
                8 | 10 => {}
                _ => panic!("unexpected {p:?} after reconnecting"),
            }
        };
        assert_eq!(publish.publish().pkid, mid);
        assert_eq!(publish.publish().payload, b"still alive");
        conn.send_packet(&Packet::puback(mid));
        expect(&events, "PUBACK", |e| {
            e.command == Command::PubAck && e.mid == mid
        });
        client.close();
        before_close
    }
}

/// Send `bytes` after the handshake and expect the client to close with `error`.
fn hostile_bytes(id: &str, bytes: &[u8], error: Error) {
    let mut h = hostile(id, |_| {});
    h.conn.send(bytes);
    let sent = h.assert_closed_with(error);
    assert!(
        sent.is_empty(),
        "the client answered hostile bytes: {sent:?}"
    );
}

/// A PUBLISH built by hand: `byte1`, then a topic with a length prefix, then
/// `rest` (packet id and payload), with a correct remaining length.
fn raw_publish(byte1: u8, topic: &[u8], rest: &[u8]) -> Vec<u8> {
    let remaining = 2 + topic.len() + rest.len();
    assert!(remaining < 128);
    let mut out = vec![byte1, remaining as u8];
    out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    out.extend_from_slice(topic);
    out.extend_from_slice(rest);
    out
}

// ---------------------------------------------------------------------------
// Malformed fixed headers.

#[test]
fn remaining_length_with_a_fifth_byte_is_malformed() {
    // Four continuation bytes: a fifth length byte would follow.
    hostile_bytes(
        "rl-5th-byte",
        &[0x30, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00],
        Error::MalformedPacket,
    );
}

#[test]
fn reserved_packet_type_0_is_malformed() {
    hostile_bytes("type-0", &[0x00, 0x00], Error::MalformedPacket);
}

#[test]
fn reserved_packet_type_15_is_malformed() {
    hostile_bytes("type-15", &[0xf0, 0x00], Error::MalformedPacket);
}

#[test]
fn puback_with_flags_0010_is_malformed() {
    hostile_bytes(
        "puback-flags",
        &[0x42, 0x02, 0x00, 0x01],
        Error::MalformedPacket,
    );
}

#[test]
fn pubrel_with_flags_0000_is_malformed() {
    hostile_bytes(
        "pubrel-flags",
        &[0x60, 0x02, 0x00, 0x01],
        Error::MalformedPacket,
    );
}

#[test]
fn puback_with_trailing_bytes_is_malformed() {
    hostile_bytes(
        "puback-trailing",
        &[0x40, 0x03, 0x00, 0x01, 0x00],
        Error::MalformedPacket,
    );
}

// ---------------------------------------------------------------------------
// Packets the broker may not send (now).

#[test]
fn a_second_connack_is_a_protocol_violation() {
    hostile_bytes(
        "connack-twice",
        &[0x20, 0x02, 0x00, 0x00],
        Error::ProtocolViolation,
    );
}

#[test]
fn a_client_only_packet_from_the_broker_is_a_protocol_violation() {
    // PINGREQ: only a client sends it.
    hostile_bytes(
        "pingreq-from-broker",
        &[0xc0, 0x00],
        Error::ProtocolViolation,
    );
}

#[test]
fn a_publish_before_connack_fails_the_connect() {
    let _serial = serial();
    let peer = ScriptedPeer::bind();
    let (client, events) = recorded_client("publish-before-connack", true);
    client.set_reconnect(None).unwrap();
    client.loop_start(None).unwrap();
    let connecting = {
        let client = client.clone();
        let port = peer.port();
        thread::spawn(move || client.connect(HOST, 30, port))
    };
    let mut conn = peer.accept(TIMEOUT);
    conn.expect_type(1, TIMEOUT);
    conn.send(&raw_publish(0x30, b"early", b"x"));
    // The client may already have closed: this CONNACK comes too late anyway.
    let _ = conn.try_send(&[0x20, 0x02, 0x00, 0x00]);
    assert_eq!(connecting.join().unwrap(), Err(Error::ProtocolViolation));
    conn.expect_closed(TIMEOUT);
    assert!(!client.is_connected());
    assert!(
        drain(&events).iter().all(|e| e.topic.is_none()),
        "a message was delivered before CONNACK"
    );
    client.close();
}

// ---------------------------------------------------------------------------
// Invalid PUBLISH packets.

#[test]
fn publish_with_an_invalid_utf8_topic_is_malformed() {
    hostile_bytes(
        "topic-utf8",
        &raw_publish(0x30, b"a/\xc3\x28", b"payload"),
        Error::MalformedPacket,
    );
}

#[test]
fn publish_with_u0000_in_the_topic_is_malformed() {
    hostile_bytes(
        "topic-nul",
        &raw_publish(0x30, b"a/\0/b", b"payload"),
        Error::MalformedPacket,
    );
}

#[test]
fn publish_with_a_wildcard_topic_is_malformed() {
    hostile_bytes(
        "topic-plus",
        &raw_publish(0x30, b"a/+", b"payload"),
        Error::MalformedPacket,
    );
    hostile_bytes(
        "topic-hash",
        &raw_publish(0x30, b"a/#", b"payload"),
        Error::MalformedPacket,
    );
}

#[test]
fn publish_with_qos_3_is_malformed() {
    hostile_bytes(
        "qos-3",
        &raw_publish(0x36, b"a", &[0x00, 0x01, b'x']),
        Error::MalformedPacket,
    );
}

#[test]
fn publish_with_packet_id_0_is_malformed() {
    for (id, byte1) in [("pkid-0-qos1", 0x32), ("pkid-0-qos2", 0x34)] {
        hostile_bytes(
            id,
            &raw_publish(byte1, b"a", &[0x00, 0x00, b'x']),
            Error::MalformedPacket,
        );
    }
}

#[test]
fn publish_whose_topic_length_overruns_the_packet_is_malformed() {
    // Topic length 200 in a 7-byte remaining length.
    hostile_bytes(
        "topic-overrun",
        &[0x30, 0x07, 0x00, 0xc8, b'a', b'b', b'c', b'd', b'e'],
        Error::MalformedPacket,
    );
}

// ---------------------------------------------------------------------------
// SUBACK not matching its SUBSCRIBE.

fn suback_with_codes(id: &str, codes: &[u8]) {
    let mut h = hostile(id, |_| {});
    let mid = h
        .client
        .subscribe(&[("one/filter", QoS::AtLeastOnce)])
        .unwrap();
    let subscribe = h.conn.expect_type(8, TIMEOUT);
    assert_eq!(subscribe.subscribe().pkid, mid);
    h.conn.send_packet(&Packet::SubAck(SubAck {
        pkid: mid,
        return_codes: codes,
        properties: None,
    }));
    let sent = h.assert_closed_with(Error::ProtocolViolation);
    assert!(sent.is_empty(), "{sent:?}");
}

#[test]
fn suback_with_more_codes_than_filters_is_a_protocol_violation() {
    suback_with_codes("suback-more", &[1, 1]);
}

#[test]
fn suback_with_fewer_codes_than_filters_is_a_protocol_violation() {
    let mut h = hostile("suback-fewer", |_| {});
    let mid = h
        .client
        .subscribe(&[("a", QoS::AtLeastOnce), ("b", QoS::AtMostOnce)])
        .unwrap();
    h.conn.expect_type(8, TIMEOUT);
    h.conn.send_packet(&Packet::SubAck(SubAck {
        pkid: mid,
        return_codes: &[1],
        properties: None,
    }));
    h.assert_closed_with(Error::ProtocolViolation);
}

#[test]
fn suback_with_an_invalid_return_code_is_malformed() {
    let mut h = hostile("suback-code", |_| {});
    let mid = h.client.subscribe(&[("a", QoS::AtLeastOnce)]).unwrap();
    h.conn.expect_type(8, TIMEOUT);
    let mut bytes = vec![0x90, 0x03];
    bytes.extend_from_slice(&mid.to_be_bytes());
    bytes.push(0x03);
    h.conn.send(&bytes);
    h.assert_closed_with(Error::MalformedPacket);
}

// ---------------------------------------------------------------------------
// Size limits and memory.

#[test]
fn a_256_mb_announcement_is_refused_at_once_without_allocating_it() {
    let mut h = hostile("huge-announce", |_| {});
    let rss_before = rss_bytes();
    LARGEST_ALLOCATION.store(0, Ordering::Relaxed);
    // Remaining length 268,435,455 (the varint maximum, 256 MB - 1): only the
    // header is sent, so only an eager allocation or a wait could follow.
    h.conn.send(&[0x30, 0xff, 0xff, 0xff, 0x7f]);
    let sent = h.assert_closed_with(Error::PacketTooLarge);
    assert!(sent.is_empty(), "{sent:?}");
    let largest = LARGEST_ALLOCATION.load(Ordering::Relaxed);
    let growth = rss_bytes().saturating_sub(rss_before);
    assert!(
        largest < 16 * MB,
        "an allocation of {largest} bytes was made"
    );
    assert!(growth < 16 * MB, "RSS grew by {growth} bytes");
}

#[test]
fn a_packet_above_the_configured_maximum_is_refused_from_its_header() {
    let mut h = hostile("small-max", |c| c.set_max_packet_size(64).unwrap());
    // A 100-byte PUBLISH announced; its body never comes. A client that
    // waited for the body would never close.
    h.conn.send(&[0x30, 100]);
    h.assert_closed_with(Error::PacketTooLarge);
}

#[test]
fn a_packet_at_the_configured_maximum_is_accepted() {
    let mut h = hostile("at-max", |c| c.set_max_packet_size(64).unwrap());
    let payload = [7u8; 64 - 2 - 2 - 3];
    let bytes = encode(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "max",
        pkid: 0,
        payload: &payload,
        properties: None,
    }));
    assert_eq!(bytes.len(), 64);
    h.conn.send(&bytes);
    let got = expect(&h.events, "message", |e| e.topic.is_some());
    assert_eq!(got.payload, payload);
    assert!(h.client.is_connected());
    h.conn.send(&[0x30, 63]);
    h.assert_closed_with(Error::PacketTooLarge);
}

// ---------------------------------------------------------------------------
// Slow and fast peers.

#[test]
fn a_slow_sender_does_not_block_the_client() {
    let mut h = hostile("slow-sender", |_| {});
    let trickled = encode(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "slow/topic",
        pkid: 77,
        payload: b"trickled in five-byte steps",
        properties: None,
    }));
    let mut mids = Vec::new();
    let mut subscribe_mid = None;
    for (i, chunk) in trickled.chunks(5).enumerate() {
        h.conn.send(chunk);
        let last = (i + 1) * 5 >= trickled.len();
        if last {
            break;
        }
        // While the packet is incomplete, everything else keeps working:
        // the API answers at once and what it queues reaches the broker
        // before the rest of the packet is even sent.
        let started = Instant::now();
        let mid = h
            .client
            .publish(&format!("out/{i}"), b"meanwhile", QoS::AtLeastOnce, false)
            .unwrap();
        assert!(h.client.is_connected());
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "publish blocked for {:?}",
            started.elapsed()
        );
        let out = h.conn.expect_type(3, TIMEOUT);
        assert_eq!(out.publish().pkid, mid);
        mids.push(mid);
        if i == 2 {
            let mid = h.client.subscribe(&[("in/#", QoS::AtLeastOnce)]).unwrap();
            assert_eq!(h.conn.expect_type(8, TIMEOUT).subscribe().pkid, mid);
            subscribe_mid = Some(mid);
        }
        assert!(
            drain(&h.events).iter().all(|e| e.topic.is_none()),
            "a partial packet was delivered"
        );
        thread::sleep(Duration::from_millis(200));
    }
    // The packet completed: delivered once, acknowledged.
    let got = expect(&h.events, "trickled message", |e| e.topic.is_some());
    assert_eq!(got.topic.as_deref(), Some("slow/topic"));
    assert_eq!(got.payload, b"trickled in five-byte steps");
    assert_eq!(h.conn.expect_type(4, TIMEOUT).pkid(), Some(77));
    // The acks that had to wait behind the partial packet arrive now.
    for &mid in &mids {
        h.conn.send_packet(&Packet::puback(mid));
        expect(&h.events, "PUBACK", |e| {
            e.command == Command::PubAck && e.mid == mid
        });
    }
    let subscribe_mid = subscribe_mid.expect("subscribed during the trickle");
    h.conn.send_packet(&Packet::SubAck(SubAck {
        pkid: subscribe_mid,
        return_codes: &[1],
        properties: None,
    }));
    expect(&h.events, "SUBACK", |e| {
        e.command == Command::SubAck && e.mid == subscribe_mid
    });
    assert!(h.client.is_connected());
    assert_eq!(h.client.inflight_len(), 0);
    h.client.close();
}

/// Bytes the kernel may hold between a writer and a reader on loopback: the
/// reader's maximum receive buffer plus the writer's maximum send buffer.
fn kernel_buffer_bound() -> usize {
    let max_of = |path: &str| -> usize {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.split_whitespace().last()?.parse().ok())
            .unwrap_or(64 * MB)
    };
    max_of("/proc/sys/net/ipv4/tcp_rmem") + max_of("/proc/sys/net/ipv4/tcp_wmem")
}

#[test]
fn a_publish_flood_is_throttled_by_tcp_not_buffered() {
    const PAYLOAD: usize = 1000;
    const FLOOD: Duration = Duration::from_secs(3);
    let delivered = Arc::new(AtomicUsize::new(0));
    let mut h = {
        let delivered = delivered.clone();
        hostile("flood", move |c| {
            // Specific, so the recorder (generic) does not keep the messages.
            c.on(
                Command::Publish,
                Arc::new(move |_: &Client, data: &Data<'_>| {
                    assert_eq!(data.message.map(|m| m.payload.len()), Some(PAYLOAD));
                    thread::sleep(Duration::from_millis(2));
                    delivered.fetch_add(1, Ordering::Relaxed);
                }),
                Some(Arc::new(|_: &Data<'_>| true)),
                10,
            );
        })
    };
    let packet = encode(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: "flood",
        pkid: 0,
        payload: &[0x5a; PAYLOAD],
        properties: None,
    }));
    let frame = packet.len();
    let block: Vec<u8> = packet.repeat(256);

    let rss_before = rss_bytes();
    LARGEST_ALLOCATION.store(0, Ordering::Relaxed);
    let mut stream = h.conn.stream();
    stream
        .set_write_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let (mut written, mut offset, mut stalls) = (0usize, 0usize, 0usize);
    let end = Instant::now() + FLOOD;
    while Instant::now() < end {
        match stream.write(&block[offset..]) {
            Ok(n) => {
                written += n;
                offset = (offset + n) % block.len();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                stalls += 1;
            }
            Err(e) => panic!("flood write failed after {written} bytes: {e}"),
        }
    }
    let delivered_bytes = delivered.load(Ordering::Relaxed) * frame;
    let rss_growth = rss_bytes().saturating_sub(rss_before);
    let largest = LARGEST_ALLOCATION.load(Ordering::Relaxed);
    let in_transit = written.saturating_sub(delivered_bytes);
    eprintln!(
        "flood: {written} bytes written, {delivered_bytes} delivered, {in_transit} in transit, \
         {stalls} stalled writes, RSS +{rss_growth}, largest allocation {largest}"
    );
    assert!(delivered_bytes > 0, "nothing delivered during the flood");
    assert!(
        stalls > 0,
        "the peer's writes never blocked: no backpressure"
    );
    // What was written and not delivered sits in kernel buffers (bounded by
    // their maxima) and the client's 64 KiB read buffer, nowhere else.
    let bound = kernel_buffer_bound() + 2 * MB;
    assert!(
        in_transit < bound,
        "{in_transit} bytes written beyond what was delivered (bound {bound})"
    );
    assert!(rss_growth < 16 * MB, "RSS grew by {rss_growth} bytes");
    assert!(largest < MB, "an allocation of {largest} bytes was made");
    assert!(h.client.is_connected());
    // close() stops the delivery at once (no callback after it returns).
    let stopped = Instant::now();
    h.client.close();
    assert!(
        stopped.elapsed() < TIMEOUT,
        "close took {:?}",
        stopped.elapsed()
    );
    let after_close = delivered.load(Ordering::Relaxed);
    thread::sleep(Duration::from_millis(50));
    assert_eq!(delivered.load(Ordering::Relaxed), after_close);
    h.conn.expect_closed(TIMEOUT);
}

// ---------------------------------------------------------------------------
// Incoming QoS 2 flows.

fn qos2_publish(pkid: u16, dup: bool) -> Vec<u8> {
    encode(&Packet::Publish(Publish {
        dup,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: "qos2/in",
        pkid,
        payload: &pkid.to_be_bytes(),
        properties: None,
    }))
}

#[test]
fn more_concurrent_incoming_qos2_flows_than_allowed_is_too_many_incoming() {
    assert_eq!(
        Client::new("x", true).unwrap().set_max_incoming_qos2(0),
        Err(Error::InvalidArgument)
    );
    let mut h = hostile("qos2-flows", |c| c.set_max_incoming_qos2(3).unwrap());
    for id in [1, 2, 3] {
        h.conn.send(&qos2_publish(id, false));
        assert_eq!(h.conn.expect_type(5, TIMEOUT).pkid(), Some(id));
    }
    // A retransmission of a held flow is not a new one.
    h.conn.send(&qos2_publish(2, true));
    assert_eq!(h.conn.expect_type(5, TIMEOUT).pkid(), Some(2));
    // Releasing one makes room for another.
    h.conn.send_packet(&Packet::pubrel(1));
    assert_eq!(h.conn.expect_type(7, TIMEOUT).pkid(), Some(1));
    let released = expect(&h.events, "PUBREL", |e| e.command == Command::PubRel);
    assert_eq!(released.payload, 1u16.to_be_bytes());
    h.conn.send(&qos2_publish(4, false));
    assert_eq!(h.conn.expect_type(5, TIMEOUT).pkid(), Some(4));
    assert!(h.client.is_connected());
    // Flows 2, 3 and 4 are held: a fourth concurrent one is refused.
    h.conn.send(&qos2_publish(5, false));
    let sent = h.assert_closed_with(Error::TooManyIncoming);
    assert!(sent.is_empty(), "flow 5 was acknowledged: {sent:?}");
}

// ---------------------------------------------------------------------------
// A broker that never answers.

#[test]
fn a_missing_connack_times_out_within_the_connect_timeout() {
    const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
    let _serial = serial();
    for loop_thread in [true, false] {
        let peer = ScriptedPeer::bind();
        let (client, _events) = recorded_client("no-connack", true);
        client.set_reconnect(None).unwrap();
        client.set_connect_timeout(CONNECT_TIMEOUT).unwrap();
        if loop_thread {
            client.loop_start(None).unwrap();
        }
        let connecting = {
            let client = client.clone();
            let port = peer.port();
            thread::spawn(move || {
                let started = Instant::now();
                (client.connect(HOST, 30, port), started.elapsed())
            })
        };
        let mut conn = peer.accept(TIMEOUT);
        conn.expect_type(1, TIMEOUT);
        // Silence: the client gives up and closes the socket itself.
        conn.expect_closed(TIMEOUT);
        let (result, elapsed) = connecting.join().unwrap();
        assert_eq!(result, Err(Error::Timeout), "loop thread: {loop_thread}");
        assert!(
            elapsed >= CONNECT_TIMEOUT - Duration::from_millis(20),
            "gave up after {elapsed:?}"
        );
        // Generous slack for a loaded machine, but well below the 2 s safety
        // margin of `connect` that would also return Timeout.
        assert!(
            elapsed < CONNECT_TIMEOUT + Duration::from_millis(1500),
            "gave up only after {elapsed:?}"
        );
        assert!(!client.is_connected());
        // No automatic retry.
        peer.expect_no_connection(Duration::from_millis(100));
        // And the client is still usable.
        let mut conn = handshake(&client, &peer);
        if !loop_thread {
            client.loop_start(None).unwrap();
        }
        let mid = client
            .publish("after/timeout", b"x", QoS::AtLeastOnce, false)
            .unwrap();
        assert_eq!(conn.expect_type(3, TIMEOUT).pkid(), Some(mid));
        client.close();
    }
}

// ---------------------------------------------------------------------------
// A broker that keeps sending while the client disconnects.

#[test]
fn nothing_is_sent_after_disconnect_even_while_packets_keep_arriving() {
    let mut h = hostile("disconnect-mid-stream", |c| {
        c.on(
            Command::Publish,
            Arc::new(|client: &Client, data: &Data<'_>| {
                if data.message.is_some_and(|m| m.payload == b"stop") {
                    client.disconnect().unwrap();
                }
            }),
            Some(Arc::new(|data: &Data<'_>| data.message.is_some())),
            10,
        );
    });
    // Both in one write: the second is processed after the callback of the
    // first asked to disconnect.
    let mut bytes = Vec::new();
    for (pkid, payload) in [(1u16, &b"stop"[..]), (2, b"more"), (3, b"more")] {
        bytes.extend(encode(&Packet::Publish(Publish {
            dup: false,
            qos: if pkid == 3 {
                QoS::ExactlyOnce
            } else {
                QoS::AtLeastOnce
            },
            retain: false,
            topic: "mid/stream",
            pkid,
            payload,
            properties: None,
        })));
    }
    bytes.extend(encode(&Packet::pubrel(9)));
    h.conn.send(&bytes);
    let sent = h.conn.expect_closed(TIMEOUT);
    let types: Vec<&str> = sent.iter().map(|p| p.name()).collect();
    assert_eq!(
        sent.last().map(|p| p.packet_type()),
        Some(14),
        "DISCONNECT must be the last packet: {types:?}"
    );
    assert_eq!(sent[0].packet_type(), 4, "{types:?}");
    assert_eq!(sent[0].pkid(), Some(1));
    let bye = expect(&h.events, "DISCONNECT", |e| {
        e.command == Command::Disconnect
    });
    assert_eq!(bye.error, None);
    h.client.close();
}

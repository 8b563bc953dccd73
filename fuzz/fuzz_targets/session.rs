//! Drive the sans-IO `Session` with an arbitrary sequence of actions, the way
//! the reactor does: incoming bytes (raw, or packets built from fields) go
//! through the codec, API calls (publish of each QoS, subscribe, unsubscribe,
//! disconnect), timeouts with a virtual clock, partial writes, connection loss
//! and reopening. Any error the reactor would close the connection for closes
//! it here too.
//!
//! Invariants checked after every action:
//! * no panic;
//! * `inflight_len() <= max_inflight`, the queue within its count and byte
//!   limits, held incoming QoS 2 messages within `max_incoming_qos2`;
//! * the bytes written so far on this connection plus `pending_transmit()`
//!   always decode as a stream of complete, valid client packets: CONNECT
//!   first and alone until CONNACK, nothing after DISCONNECT;
//! * mids returned by the API are unique among the flows in flight, and every
//!   acknowledgement event matches a flow of the right kind;
//! * an incoming QoS 2 message is delivered (on PUBREL) at most once per
//!   PUBLISH, with the content it was published with.
#![no_main]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mqtt::Error;
use mqtt::protocol::codec::{
    self, Ack, ConnAck, ConnectReturnCode, Decoded, Packet, Publish, QoS, SubAck, Subscribe,
    Unsubscribe,
};
use mqtt::protocol::session::{ConnectionState, Incoming, Session, SessionConfig};

/// Reads the fuzz input as a stream of small numbers; zeros once exhausted.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    /// `0..n`
    fn below(&mut self, n: usize) -> usize {
        self.u8() as usize % n
    }
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }
    fn qos(&mut self) -> QoS {
        QoS::from_u8(self.u8() % 3).unwrap_or(QoS::AtMostOnce)
    }
}

const TOPICS: [&str; 8] = ["a", "a/b", "a/b/c", "b", "$SYS/x", "x/y", "", "a/+"];
const FILTERS: [&str; 8] = ["a", "a/+", "#", "a/#", "+/+", "b", "a/#/b", ""];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Publish(QoS),
    Subscribe,
    Unsubscribe,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Held {
    topic: String,
    payload: Vec<u8>,
}

struct Harness {
    session: Session,
    now: Instant,
    /// Bytes of the current connection received and not yet decoded.
    incoming: Vec<u8>,
    /// Bytes written on the current connection that do not yet form a
    /// complete packet.
    written: Vec<u8>,
    /// Packets written on the current connection.
    written_packets: usize,
    disconnect_written: bool,
    /// The API's mids in flight: publish QoS 1/2, subscribe, unsubscribe.
    flows: HashMap<u16, Flow>,
    /// Incoming QoS 2 messages delivered as held (PUBLISH) and not yet released.
    held: HashMap<u16, Held>,
    /// Ids seen on the wire, to aim acks at.
    known_ids: Vec<u16>,
}

impl Harness {
    fn new(config: SessionConfig) -> Harness {
        Harness {
            session: Session::new(config),
            now: Instant::now(),
            incoming: Vec::new(),
            written: Vec::new(),
            written_packets: 0,
            disconnect_written: false,
            flows: HashMap::new(),
            held: HashMap::new(),
            known_ids: Vec::new(),
        }
    }

    fn connected(&self) -> bool {
        self.session.state() != ConnectionState::Disconnected
    }

    fn open(&mut self) {
        if self.connected() {
            return;
        }
        self.incoming.clear();
        self.written.clear();
        self.written_packets = 0;
        self.disconnect_written = false;
        self.session.connection_opened(self.now);
    }

    fn lose(&mut self) {
        self.session.connection_lost(self.now);
        self.incoming.clear();
        self.written.clear();
    }

    /// The reactor closes the connection on every error it gets back.
    fn check_result<T>(&mut self, result: Result<T, Error>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(_) => {
                self.lose();
                None
            }
        }
    }

    fn remember_id(&mut self, id: u16) {
        if id != 0 && !self.known_ids.contains(&id) {
            if self.known_ids.len() >= 16 {
                self.known_ids.remove(0);
            }
            self.known_ids.push(id);
        }
    }

    fn pick_id(&mut self, input: &mut Input<'_>) -> u16 {
        let choice = input.u8();
        if !self.known_ids.is_empty() && choice < 192 {
            self.known_ids[choice as usize % self.known_ids.len()]
        } else {
            choice as u16 % 8
        }
    }

    // -- API calls, as `Client` makes them --------------------------------

    fn start_flow(&mut self, mid: u16, flow: Flow) {
        if let Some(old) = self.flows.insert(mid, flow) {
            panic!("mid {mid} handed out for {flow:?} while {old:?} is in flight");
        }
    }

    fn publish(&mut self, input: &mut Input<'_>) {
        let topic = TOPICS[input.below(TOPICS.len())];
        let qos = input.qos();
        let retain = input.bool();
        let len = match input.u8() {
            250..=255 => 300,
            n => n as usize % 40,
        };
        let payload = vec![input.u8(); len];
        if let Ok(mid) = self.session.publish(self.now, topic, &payload, qos, retain) {
            assert_ne!(mid, 0);
            if qos != QoS::AtMostOnce {
                self.start_flow(mid, Flow::Publish(qos));
            }
        }
    }

    fn subscribe(&mut self, input: &mut Input<'_>) {
        let n = input.below(3) + 1;
        let filters: Vec<(&str, QoS)> = (0..n)
            .map(|_| (FILTERS[input.below(FILTERS.len())], input.qos()))
            .collect();
        if let Ok(mid) = self.session.subscribe(self.now, &filters) {
            self.start_flow(mid, Flow::Subscribe);
        }
    }

    fn unsubscribe(&mut self, input: &mut Input<'_>) {
        let n = input.below(3) + 1;
        let filters: Vec<&str> = (0..n)
            .map(|_| FILTERS[input.below(FILTERS.len())])
            .collect();
        if let Ok(mid) = self.session.unsubscribe(self.now, &filters) {
            self.start_flow(mid, Flow::Unsubscribe);
        }
    }

    // -- Incoming -------------------------------------------------------------

    /// Bytes from the broker, decoded as the reactor does.
    fn receive(&mut self, bytes: &[u8]) {
        if self.session.state() == ConnectionState::Disconnected {
            return;
        }
        self.incoming.extend_from_slice(bytes);
        let max = self.session.config().max_packet_size;
        let buf = std::mem::take(&mut self.incoming);
        let mut start = 0;
        loop {
            match codec::decode(&buf[start..], max) {
                Ok(Decoded::Packet(packet, used)) => {
                    start += used;
                    if !self.deliver(packet) {
                        return;
                    }
                }
                Ok(Decoded::Incomplete(_)) => break,
                Err(_) => {
                    self.lose();
                    return;
                }
            }
        }
        self.incoming = buf[start..].to_vec();
    }

    /// One packet into the session; false when the connection was closed.
    fn deliver(&mut self, packet: Packet<'_>) -> bool {
        let was_awaiting = self.session.state() == ConnectionState::AwaitingConnAck;
        let qos2 = match &packet {
            Packet::Publish(p) if p.qos == QoS::ExactlyOnce => Some(Held {
                topic: p.topic.to_owned(),
                payload: p.payload.to_vec(),
            }),
            _ => None,
        };
        let result = self.session.handle_packet(self.now, packet);
        let Some(incoming) = self.check_result(result) else {
            return false;
        };
        let Some(incoming) = incoming else {
            return true;
        };
        match incoming {
            Incoming::ConnAck(ack) => {
                assert!(was_awaiting, "CONNACK event outside the handshake");
                if ack.code() != Some(ConnectReturnCode::Accepted) {
                    assert_eq!(self.session.state(), ConnectionState::Disconnected);
                    assert!(self.session.pending_transmit().is_empty());
                    self.lose();
                    return false;
                }
                if !ack.session_present {
                    // The broker forgot the incoming QoS 2 flows.
                    self.held.clear();
                }
                // PUBREC'd QoS 2 messages given up for want of a session end
                // their flows too (never with the session kept).
                for id in self.session.take_unresolved() {
                    assert!(!ack.session_present, "{id} given up with the session kept");
                    self.finish(id, Flow::Publish(QoS::ExactlyOnce));
                }
            }
            Incoming::Publish { mid, message } => match message {
                Some(m) => {
                    assert_eq!(m.mid, mid);
                    assert_ne!(m.qos, QoS::ExactlyOnce, "QoS 2 delivered on PUBLISH");
                }
                None => {
                    // A QoS 2 message is now held until its PUBREL.
                    let content = qos2.expect("held event for a packet that is not QoS 2");
                    if let Some(old) = self.held.insert(mid, content) {
                        panic!("QoS 2 message {mid} held twice (first {old:?})");
                    }
                }
            },
            Incoming::PubRel { mid, message } => {
                if let Some(m) = message {
                    let Some(held) = self.held.remove(&mid) else {
                        panic!("QoS 2 message {mid} delivered without a PUBLISH since its release");
                    };
                    assert_eq!(
                        (m.topic.as_str(), &m.payload[..]),
                        (&held.topic[..], &held.payload[..])
                    );
                    assert_eq!(m.mid, mid);
                    assert_eq!(m.qos, QoS::ExactlyOnce);
                } else {
                    assert!(!self.held.contains_key(&mid), "held message {mid} lost");
                }
            }
            Incoming::PubAck(id) => self.finish(id, Flow::Publish(QoS::AtLeastOnce)),
            Incoming::PubRec(id) => assert_eq!(
                self.flows.get(&id),
                Some(&Flow::Publish(QoS::ExactlyOnce)),
                "PUBREC event for {id}"
            ),
            Incoming::PubComp(id) => self.finish(id, Flow::Publish(QoS::ExactlyOnce)),
            Incoming::SubAck { mid, return_codes } => {
                assert!(!return_codes.is_empty());
                self.finish(mid, Flow::Subscribe);
            }
            Incoming::UnsubAck(id) => self.finish(id, Flow::Unsubscribe),
            Incoming::PingResp => {}
        }
        true
    }

    fn finish(&mut self, id: u16, expected: Flow) {
        let flow = self.flows.remove(&id);
        assert_eq!(
            flow,
            Some(expected),
            "acknowledgement event for {id}, which stands for {flow:?}"
        );
    }

    /// A packet built from fields, sent through the codec when it encodes
    /// (as the broker's bytes would), handed over directly when it does not
    /// (id 0: the session must refuse it on its own).
    fn receive_packet(&mut self, input: &mut Input<'_>) {
        if self.session.state() == ConnectionState::Disconnected {
            return;
        }
        let id = self.pick_id(input);
        let codes_buf: Vec<u8> = (0..input.below(4))
            .map(|_| [0, 1, 2, 0x80][input.below(4)])
            .collect();
        let payload_len = input.below(16);
        let payload = input.bytes(payload_len).to_vec();
        let topic = TOPICS[input.below(6)];
        let packet = match input.below(16) {
            0 => Packet::ConnAck(ConnAck::new(
                input.bool(),
                ConnectReturnCode::from_u8(input.u8() % 8 % 6)
                    .unwrap_or(ConnectReturnCode::Accepted),
            )),
            1..=3 => {
                let qos = input.qos();
                Packet::Publish(Publish {
                    dup: qos != QoS::AtMostOnce && input.bool(),
                    qos,
                    retain: input.bool(),
                    topic,
                    pkid: if qos == QoS::AtMostOnce { 0 } else { id },
                    payload: &payload,
                    properties: None,
                })
            }
            4 | 5 => Packet::puback(id),
            6 => Packet::pubrec(id),
            7 | 8 => Packet::pubrel(id),
            9 => Packet::pubcomp(id),
            10 => Packet::SubAck(SubAck {
                pkid: id,
                return_codes: &codes_buf,
                properties: None,
            }),
            11 => Packet::unsuback(id),
            12 => Packet::PingResp,
            13 => Packet::PingReq,
            14 => Packet::Subscribe(Subscribe {
                pkid: id.max(1),
                filters: vec![("a", QoS::AtMostOnce.into())],
                properties: None,
            }),
            _ => Packet::Unsubscribe(Unsubscribe {
                pkid: id.max(1),
                filters: vec!["a"],
                properties: None,
            }),
        };
        let mut bytes = Vec::new();
        match packet.encode(&mut bytes) {
            Ok(_) => self.receive(&bytes),
            // Only between two packets: it stands for a whole packet.
            Err(_) if self.incoming.is_empty() => {
                self.deliver(packet);
            }
            Err(_) => {}
        }
    }

    // -- Outgoing -------------------------------------------------------------

    /// The reactor wrote `n` bytes of `pending_transmit()`.
    fn write(&mut self, n: usize) {
        if !self.connected() {
            return;
        }
        let pending = self.session.pending_transmit();
        let n = n.min(pending.len());
        self.written.extend_from_slice(&pending[..n]);
        self.session.consume_transmit(self.now, n);
        // Strip the packets completed by these bytes.
        let mut start = 0;
        let mut ids = Vec::new();
        loop {
            match codec::decode(&self.written[start..], usize::MAX) {
                Ok(Decoded::Packet(packet, used)) => {
                    start += used;
                    match packet {
                        Packet::Publish(p) => ids.push(p.pkid),
                        Packet::Subscribe(s) => ids.push(s.pkid),
                        Packet::Unsubscribe(u) => ids.push(u.pkid),
                        Packet::PubRel(Ack { pkid, .. }) => ids.push(pkid),
                        Packet::Disconnect(_) => self.disconnect_written = true,
                        _ => {}
                    }
                    self.written_packets += 1;
                }
                Ok(Decoded::Incomplete(_)) => break,
                Err(e) => panic!("written bytes do not decode: {e}"),
            }
        }
        self.written.drain(..start);
        for id in ids {
            self.remember_id(id);
        }
        // After a requested disconnect, the reactor closes the socket once
        // everything queued is written.
        if self.session.state() == ConnectionState::Disconnecting
            && self.session.pending_transmit().is_empty()
        {
            self.lose();
        }
    }

    fn advance(&mut self, input: &mut Input<'_>) {
        let step = match input.u8() {
            0..=199 => Duration::from_millis(input.u16() as u64),
            200..=249 => Duration::from_secs(input.u8() as u64),
            _ => self
                .session
                .poll_timeout()
                .map(|t| t.saturating_duration_since(self.now))
                .unwrap_or(Duration::ZERO),
        };
        self.now += step;
        if self.session.state() != ConnectionState::Disconnected {
            let result = self.session.handle_timeout(self.now);
            self.check_result(result);
        }
    }

    // -- Invariants -----------------------------------------------------------

    fn check(&self) {
        let s = &self.session;
        let config = s.config();
        assert!(
            s.inflight_len() <= config.max_inflight.max(1),
            "{} in flight, max {}",
            s.inflight_len(),
            config.max_inflight
        );
        assert!(s.queued_len() <= config.max_queued_messages);
        assert!(s.queued_bytes() <= config.max_queued_bytes);
        assert!(s.held_incoming_len() <= config.max_incoming_qos2);
        assert_eq!(s.held_incoming_len(), self.held.len(), "held messages");
        let publishes = self
            .flows
            .values()
            .filter(|f| matches!(f, Flow::Publish(_)))
            .count();
        let requests = self.flows.len() - publishes;
        assert!(
            s.inflight_len() + s.queued_len() >= publishes,
            "{publishes} QoS 1/2 publishes outstanding, {} in flight + {} queued",
            s.inflight_len(),
            s.queued_len()
        );
        assert!(s.inflight_len() <= publishes);
        assert!(s.pending_requests_len() >= requests);

        // The connection's byte stream: complete, valid client packets.
        let pending = s.pending_transmit();
        if s.state() == ConnectionState::Disconnected {
            assert!(pending.is_empty(), "bytes pending without a connection");
            return;
        }
        let mut stream = self.written.clone();
        stream.extend_from_slice(pending);
        let mut rest = &stream[..];
        let mut index = self.written_packets;
        let mut disconnect = self.disconnect_written;
        while !rest.is_empty() {
            let (packet, used) = match codec::decode(rest, usize::MAX) {
                Ok(Decoded::Packet(p, used)) => (p, used),
                other => panic!("pending bytes are not whole packets: {other:?}"),
            };
            assert!(!disconnect, "{packet:?} queued after DISCONNECT");
            assert!(used <= config.max_packet_size || matches!(packet, Packet::Connect(_)));
            match packet {
                Packet::Connect(_) => assert_eq!(index, 0, "CONNECT not first"),
                _ if index == 0 => panic!("{packet:?} before CONNECT"),
                Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                    panic!("server packet {packet:?} from the client")
                }
                Packet::Disconnect(_) => disconnect = true,
                _ => assert_ne!(
                    s.state(),
                    ConnectionState::AwaitingConnAck,
                    "{packet:?} before CONNACK"
                ),
            }
            index += 1;
            rest = &rest[used..];
        }
    }
}

fn config(input: &mut Input<'_>) -> SessionConfig {
    SessionConfig {
        client_id: "fuzz".into(),
        clean_session: input.bool(),
        keep_alive: input.below(4) as u16,
        connect_timeout: Duration::from_secs(1 + input.below(10) as u64),
        max_inflight: 1 + input.below(6),
        max_queued_messages: 1 + input.below(12),
        max_queued_bytes: 1 + input.below(256),
        queue_qos0_offline: input.bool(),
        max_incoming_qos2: 1 + input.below(6),
        max_packet_size: 16 + input.below(240),
        resubscribe: input.bool(),
        ..SessionConfig::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input { data };
    let mut h = Harness::new(config(&mut input));
    h.check();
    while !input.is_empty() {
        match input.below(16) {
            0 => h.open(),
            1 => h.lose(),
            2 => {
                let n = input.below(48);
                let bytes = input.bytes(n).to_vec();
                h.receive(&bytes);
            }
            3..=5 => h.receive_packet(&mut input),
            6 | 7 => h.publish(&mut input),
            8 => h.subscribe(&mut input),
            9 => h.unsubscribe(&mut input),
            10 | 11 => {
                let n = match input.u8() {
                    0..=127 => usize::MAX,
                    n => n as usize % 24,
                };
                h.write(n);
            }
            12 => h.advance(&mut input),
            13 => {
                // Accept the connection as a broker would, with or without session.
                if h.session.state() == ConnectionState::AwaitingConnAck {
                    let present = input.bool();
                    h.receive(&[0x20, 0x02, present as u8, 0x00]);
                }
            }
            14 => {
                let _ = h.session.disconnect(h.now);
            }
            _ => {
                // Raise the window, as `set_max_inflight` may at any time.
                let config = h.session.config_mut();
                config.max_inflight = (config.max_inflight + input.below(3)).min(16);
            }
        }
        h.check();
    }
});

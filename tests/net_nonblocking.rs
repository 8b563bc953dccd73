//! The sans-IO network-path pieces driven the way the reactor will drive them:
//! one non-blocking mio `TcpStream`, edge-triggered readiness, partial writes
//! and reads, every stage fed whatever bytes arrived. Through tinyproxy
//! (HTTP CONNECT) and microsocks (SOCKS5), then the WebSocket upgrade and an
//! MQTT exchange with aedes: CONNECT/CONNACK, SUBSCRIBE/SUBACK, a QoS 1
//! PUBLISH to ourselves, its PUBACK and its delivery.

mod common;
mod netpaths_support;

use common::{TIMEOUT, connect_packet, encode};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use mqtt::net::Progress;
use mqtt::net::proxy::ProxyHandshake;
use mqtt::net::uri::{BrokerUri, ProxyUri};
use mqtt::net::websocket::{Event, FrameReader, FrameWriter, Upgrade};
use mqtt::protocol::codec::{Decoded, Packet, Publish, QoS, decode};
use netpaths_support::{RealProxy, WsBroker};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::Instant;

/// A non-blocking connection and its poll.
struct Conn {
    stream: TcpStream,
    poll: Poll,
    events: Events,
    /// Bytes waiting to be written.
    out: Vec<u8>,
    deadline: Instant,
}

impl Conn {
    fn open(port: u16) -> Conn {
        let poll = Poll::new().unwrap();
        let mut stream = TcpStream::connect(common::loopback(port)).unwrap();
        poll.registry()
            .register(
                &mut stream,
                Token(0),
                Interest::READABLE | Interest::WRITABLE,
            )
            .unwrap();
        Conn {
            stream,
            poll,
            events: Events::with_capacity(4),
            out: Vec::new(),
            deadline: Instant::now() + TIMEOUT * 2,
        }
    }

    /// Run one stage: write `out` as the socket takes it, hand every read to
    /// `on_bytes` (which may queue more output) until it returns `Some`.
    fn stage<T>(&mut self, mut on_bytes: impl FnMut(&[u8], &mut Vec<u8>) -> Option<T>) -> T {
        let mut buf = [0u8; 1500];
        loop {
            // Only a write that hit WouldBlock waits for the poll; output
            // queued by a read below is written on the next turn at once.
            let mut blocked_write = false;
            while !self.out.is_empty() {
                match self.stream.write(&self.out) {
                    Ok(n) => {
                        self.out.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        blocked_write = true;
                        break;
                    }
                    // Not connected yet: wait for writable.
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                        blocked_write = true;
                        break;
                    }
                    Err(e) => panic!("write: {e}"),
                }
            }
            // Edge-triggered: read until WouldBlock before polling again.
            loop {
                match self.stream.read(&mut buf) {
                    Ok(0) => panic!("the peer closed the connection"),
                    Ok(n) => {
                        if let Some(done) = on_bytes(&buf[..n], &mut self.out) {
                            return done;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => break,
                    Err(e) => panic!("read: {e}"),
                }
            }
            if blocked_write || self.out.is_empty() {
                let left = self.deadline.saturating_duration_since(Instant::now());
                assert!(!left.is_zero(), "stage timed out");
                self.poll.poll(&mut self.events, Some(left)).unwrap();
            }
        }
    }
}

/// Proxy handshake, WebSocket upgrade and MQTT, all non-blocking.
fn through(proxy_uri: &str, broker: &WsBroker, client_id: &str) {
    let proxy = ProxyUri::parse(proxy_uri).unwrap();
    // A name: the proxy resolves it (SOCKS5 address type 3).
    let host = netpaths_support::loopback_name();
    let uri = BrokerUri::parse(&format!("ws://{host}:{}/mqtt", broker.port())).unwrap();
    let mut conn = Conn::open(proxy.port);

    // 1. The proxy: bytes after its reply belong to the upgrade.
    let mut hs = ProxyHandshake::new(&proxy, &uri.host, uri.port).unwrap();
    conn.out.extend_from_slice(hs.output());
    hs.written(hs.output().len());
    let surplus = conn.stage(
        |bytes, out| match hs.input(bytes).expect("proxy handshake") {
            Progress::Continue => {
                out.extend_from_slice(hs.output());
                hs.written(hs.output().len());
                None
            }
            Progress::Done(surplus) => Some(surplus),
        },
    );

    // 2. The upgrade: bytes after its head are the first frames.
    let mut upgrade = Upgrade::for_uri(&uri).unwrap();
    conn.out.extend_from_slice(upgrade.output());
    upgrade.written(upgrade.output().len());
    let mut feed = |bytes: &[u8]| match upgrade.input(bytes).expect("upgrade") {
        Progress::Continue => None,
        Progress::Done(frames) => Some(frames),
    };
    let first_frames = match feed(&surplus) {
        Some(f) => f,
        None => conn.stage(|bytes, _| feed(bytes)),
    };

    // 3. MQTT in frames.
    let mut m = Mqtt {
        writer: FrameWriter::new(),
        reader: FrameReader::new(1 << 16),
        inbuf: Vec::new(),
        packets: VecDeque::new(),
    };
    m.send(
        &encode(&Packet::Connect(connect_packet(client_id))),
        &mut conn.out,
    );
    m.receive(&first_frames, &mut conn.out);
    assert_eq!(m.next(&mut conn), (0x20, vec![0, 0]), "CONNACK");

    let topic = format!("nb/{client_id}");
    let mut sub = vec![0x82, (5 + topic.len()) as u8, 0, 1, 0, topic.len() as u8];
    sub.extend_from_slice(topic.as_bytes());
    sub.push(1);
    m.send(&sub, &mut conn.out);
    assert_eq!(m.next(&mut conn), (0x90, vec![0, 1, 1]), "SUBACK");

    // 3000 bytes: more than one TCP segment, a 16-bit frame length.
    let payload = vec![0x3c; 3000];
    let publish = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: &topic,
        pkid: 9,
        payload: &payload,
        properties: None,
    };
    m.send(&encode(&Packet::Publish(publish)), &mut conn.out);
    let (mut puback, mut delivered) = (false, false);
    while !(puback && delivered) {
        let (first, body) = m.next(&mut conn);
        match first >> 4 {
            4 => {
                assert_eq!(body, [0, 9], "PUBACK for our packet id");
                puback = true;
            }
            3 => {
                assert_eq!(first & 0x06, 0x02, "delivered at QoS 1");
                assert_eq!(&body[2..2 + topic.len()], topic.as_bytes());
                assert_eq!(&body[4 + topic.len()..], &payload[..]);
                let id = [body[2 + topic.len()], body[3 + topic.len()]];
                m.send(&[0x40, 2, id[0], id[1]], &mut conn.out);
                delivered = true;
            }
            t => panic!("unexpected packet type {t}"),
        }
    }
}

/// The MQTT side of the connection: frames out, frames in, whole packets.
struct Mqtt {
    writer: FrameWriter,
    reader: FrameReader,
    /// MQTT bytes unframed but not yet a whole packet.
    inbuf: Vec<u8>,
    /// Whole packets received: (first byte, variable header and payload).
    packets: VecDeque<(u8, Vec<u8>)>,
}

impl Mqtt {
    fn send(&mut self, packet: &[u8], out: &mut Vec<u8>) {
        self.writer.binary(packet, out).unwrap();
    }

    /// Unframe `bytes` (answering pings into `out`) and collect whole packets.
    fn receive(&mut self, mut bytes: &[u8], out: &mut Vec<u8>) {
        while !bytes.is_empty() {
            let (used, event) = self
                .reader
                .read(bytes, &mut self.inbuf)
                .expect("valid frames");
            bytes = &bytes[used..];
            match event {
                Some(Event::Ping) => self
                    .writer
                    .pong(self.reader.control_payload(), out)
                    .unwrap(),
                Some(Event::Close(code)) => panic!("closed by the server: {code:?}"),
                None => {}
            }
        }
        while let Ok(Decoded::Packet(_, used)) = decode(&self.inbuf, 1 << 16) {
            // Fixed header: the type byte and the Remaining Length bytes.
            let header = 2 + self.inbuf[1..]
                .iter()
                .take_while(|b| *b & 0x80 != 0)
                .count();
            self.packets
                .push_back((self.inbuf[0], self.inbuf[header..used].to_vec()));
            self.inbuf.drain(..used);
        }
    }

    /// The next whole packet, waiting for the socket as needed.
    fn next(&mut self, conn: &mut Conn) -> (u8, Vec<u8>) {
        if self.packets.is_empty() {
            conn.stage(|bytes, out| {
                self.receive(bytes, out);
                (!self.packets.is_empty()).then_some(())
            });
        }
        self.packets.pop_front().unwrap()
    }
}

#[test]
fn nonblocking_websocket_through_http_connect() {
    let broker = WsBroker::start("/mqtt");
    let proxy = RealProxy::tinyproxy(None);
    through(&proxy.uri("http", None), &broker, "nb-http");
}

#[test]
fn nonblocking_websocket_through_socks5_with_credentials() {
    let broker = WsBroker::start("/mqtt");
    let creds = ("nb", "p@ss");
    let proxy = RealProxy::microsocks(Some(creds));
    through(&proxy.uri("socks5", Some(creds)), &broker, "nb-socks");
}

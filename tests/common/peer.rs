//! Packet-level TCP endpoints for fault tests.
//!
//! [`ScriptedPeer`] listens on a free loopback port and plays the broker by hand;
//! [`PeerConn`] is one connection, from either `ScriptedPeer::accept` (broker side)
//! or [`PeerConn::connect`] (a raw client, e.g. against a real [`super::Broker`]).
//! Everything is blocking std::net with deadlines; the `expect_*` methods panic with
//! a readable message, the `try_*`/`read_packet` variants return errors instead.

use super::{TIMEOUT, encode, loopback};
use mqtt::protocol::codec::{
    self, Ack, ConnAck, Connect, ConnectReturnCode, Decoded, Packet, Properties, ProtocolVersion,
    Publish, QoS, Subscribe, UnsubAck, Unsubscribe,
};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// The peer accepts packets of any size the protocol allows.
const MAX_PACKET: usize = codec::MAX_REMAINING_LENGTH + 5;

/// Wait until `fd` is readable (or has an error/hangup) or `timeout` passes.
pub(crate) fn poll_readable(fd: i32, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    n > 0
}

/// A listener on a free loopback port standing in for the broker.
pub struct ScriptedPeer {
    listener: TcpListener,
    port: u16,
}

impl ScriptedPeer {
    pub fn bind() -> ScriptedPeer {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let port = listener.local_addr().expect("local_addr").port();
        ScriptedPeer { listener, port }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    /// Accept one connection; panics if none arrives within `timeout`.
    pub fn accept(&self, timeout: Duration) -> PeerConn {
        self.try_accept(timeout).unwrap_or_else(|| {
            panic!(
                "ScriptedPeer :{}: no connection within {timeout:?}",
                self.port
            )
        })
    }

    /// Accept one connection, or `None` after `timeout`.
    pub fn try_accept(&self, timeout: Duration) -> Option<PeerConn> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(false).expect("blocking stream");
                    return Some(PeerConn::from_stream(stream));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ECONNABORTED and friends: the client gave up before we accepted.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => panic!("ScriptedPeer :{}: accept failed: {e}", self.port),
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            poll_readable(self.listener.as_raw_fd(), deadline - now);
        }
    }

    /// Assert that nobody connects during `duration` (e.g. no reconnect yet).
    pub fn expect_no_connection(&self, duration: Duration) {
        if let Some(conn) = self.try_accept(duration) {
            panic!(
                "ScriptedPeer :{}: unexpected connection from {}",
                self.port,
                conn.peer_addr()
            );
        }
    }
}

impl Drop for ScriptedPeer {
    fn drop(&mut self) {
        // Refuse connections at once, even if a concurrent fork holds the fd.
        super::proxy::shutdown_listener(&self.listener);
    }
}

/// One MQTT packet, owned: the exact wire bytes, decoded on demand by [`packet`].
///
/// [`packet`]: OwnedPacket::packet
#[derive(Clone, PartialEq, Eq)]
pub struct OwnedPacket {
    bytes: Vec<u8>,
    /// How the bytes are decoded (a CONNECT by its own protocol level).
    version: ProtocolVersion,
}

impl OwnedPacket {
    /// Wrap one complete, valid encoded packet. Panics otherwise.
    pub fn from_bytes(bytes: Vec<u8>) -> OwnedPacket {
        match codec::decode(&bytes, MAX_PACKET) {
            Ok(Decoded::Packet(_, n)) if n == bytes.len() => OwnedPacket {
                bytes,
                version: ProtocolVersion::V311,
            },
            other => panic!("not exactly one valid packet ({other:?}): {bytes:02x?}"),
        }
    }

    pub fn from_packet(packet: &Packet<'_>) -> OwnedPacket {
        let version = match packet.properties() {
            Some(_) => ProtocolVersion::V5,
            None => ProtocolVersion::V311,
        };
        OwnedPacket {
            bytes: encode(packet),
            version,
        }
    }

    /// The protocol the bytes were decoded as.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// The decoded view (borrowing from `self`); match on it freely.
    pub fn packet(&self) -> Packet<'_> {
        match codec::decode_as(&self.bytes, MAX_PACKET, self.version) {
            Ok(Decoded::Packet(p, _)) => p,
            other => unreachable!("OwnedPacket holds a valid packet: {other:?}"),
        }
    }

    /// The exact bytes received.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// 1 (CONNECT) ..= 14 (DISCONNECT).
    pub fn packet_type(&self) -> u8 {
        self.bytes[0] >> 4
    }

    /// The upper-case packet name, for messages: "CONNECT", "PUBLISH", ...
    pub fn name(&self) -> &'static str {
        packet_name(self.packet_type())
    }

    /// The packet identifier, if this kind of packet carries one (QoS 0 PUBLISH: None).
    pub fn pkid(&self) -> Option<u16> {
        match self.packet() {
            Packet::Publish(p) if p.qos != QoS::AtMostOnce => Some(p.pkid),
            Packet::PubAck(Ack { pkid: id, .. })
            | Packet::PubRec(Ack { pkid: id, .. })
            | Packet::PubRel(Ack { pkid: id, .. })
            | Packet::PubComp(Ack { pkid: id, .. })
            | Packet::UnsubAck(UnsubAck { pkid: id, .. }) => Some(id),
            Packet::Subscribe(s) => Some(s.pkid),
            Packet::SubAck(s) => Some(s.pkid),
            Packet::Unsubscribe(u) => Some(u.pkid),
            _ => None,
        }
    }

    pub fn is(&self, packet_type: u8) -> bool {
        self.packet_type() == packet_type
    }

    /// The CONNECT; panics if this is another packet.
    pub fn connect(&self) -> Connect<'_> {
        match self.packet() {
            Packet::Connect(c) => c,
            _ => panic!("expected CONNECT, got {self:?}"),
        }
    }

    /// The CONNACK; panics if this is another packet.
    pub fn connack(&self) -> ConnAck<'_> {
        match self.packet() {
            Packet::ConnAck(a) => a,
            _ => panic!("expected CONNACK, got {self:?}"),
        }
    }

    /// The PUBLISH; panics if this is another packet.
    pub fn publish(&self) -> Publish<'_> {
        match self.packet() {
            Packet::Publish(p) => p,
            _ => panic!("expected PUBLISH, got {self:?}"),
        }
    }

    /// The SUBSCRIBE; panics if this is another packet.
    pub fn subscribe(&self) -> Subscribe<'_> {
        match self.packet() {
            Packet::Subscribe(s) => s,
            _ => panic!("expected SUBSCRIBE, got {self:?}"),
        }
    }

    /// The UNSUBSCRIBE; panics if this is another packet.
    pub fn unsubscribe(&self) -> Unsubscribe<'_> {
        match self.packet() {
            Packet::Unsubscribe(u) => u,
            _ => panic!("expected UNSUBSCRIBE, got {self:?}"),
        }
    }
}

impl fmt::Debug for OwnedPacket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.packet())
    }
}

pub fn packet_name(packet_type: u8) -> &'static str {
    mqtt::protocol::codec::packet_type_name(packet_type)
}

/// Why [`PeerConn::read_packet`] returned no packet.
#[derive(Debug)]
pub enum PeerError {
    /// Nothing complete arrived in time; `buffered` bytes of a partial packet are kept.
    Timeout {
        buffered: usize,
    },
    /// Orderly EOF; `buffered` bytes of an incomplete packet were pending.
    Closed {
        buffered: usize,
    },
    /// The other side reset the connection (RST).
    Reset,
    /// The bytes are not a valid packet of the connection's protocol.
    Codec {
        error: codec::CodecError,
        bytes: Vec<u8>,
    },
    Io(io::Error),
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerError::Timeout { buffered } => {
                write!(
                    f,
                    "timed out ({buffered} bytes of a partial packet buffered)"
                )
            }
            PeerError::Closed { buffered } => {
                write!(f, "connection closed (EOF, {buffered} bytes pending)")
            }
            PeerError::Reset => write!(f, "connection reset"),
            PeerError::Codec { error, bytes } => {
                let head = &bytes[..bytes.len().min(64)];
                write!(f, "malformed packet: {error}; bytes {head:02x?}")
            }
            PeerError::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl std::error::Error for PeerError {}

/// One TCP connection spoken to packet by packet.
pub struct PeerConn {
    stream: TcpStream,
    buf: Vec<u8>,
    peer: SocketAddr,
    /// How incoming packets are decoded: 3.1.1 until [`PeerConn::set_version`]
    /// (or a v5 handshake) says otherwise.
    version: ProtocolVersion,
}

impl PeerConn {
    /// Wrap an established blocking stream (sets TCP_NODELAY).
    pub fn from_stream(stream: TcpStream) -> PeerConn {
        let _ = stream.set_nodelay(true);
        let peer = stream.peer_addr().unwrap_or_else(|_| loopback(0));
        PeerConn {
            stream,
            buf: Vec::new(),
            peer,
            version: ProtocolVersion::V311,
        }
    }

    /// Connect to `127.0.0.1:port` as a raw client (panics on failure).
    pub fn connect(port: u16) -> PeerConn {
        let stream = TcpStream::connect_timeout(&loopback(port), TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
        PeerConn::from_stream(stream)
    }

    /// Raw client: connect, send CONNECT, return the CONNACK (panics on anything else).
    pub fn connect_mqtt(port: u16, connect: &Connect<'_>) -> (PeerConn, ConnAck<'static>) {
        let mut conn = PeerConn::connect(port);
        conn.send_packet(&Packet::Connect(connect.clone()));
        let reply = conn.expect_packet(TIMEOUT);
        let ack = reply.connack();
        // Decoded as MQTT 3.1.1: a CONNACK has no properties to keep.
        assert_eq!(ack.properties, None);
        let ack = ConnAck {
            session_present: ack.session_present,
            reason_code: ack.reason_code,
            properties: None,
        };
        (conn, ack)
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The underlying socket, for anything not covered here.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Read and decode one packet; panics on timeout, EOF, reset or garbage.
    pub fn expect_packet(&mut self, timeout: Duration) -> OwnedPacket {
        self.read_packet(timeout)
            .unwrap_or_else(|e| panic!("{}: expected a packet within {timeout:?}: {e}", self.peer))
    }

    /// Read one packet and assert its type (`packet_type`: 1..=14, see [`packet_name`]).
    pub fn expect_type(&mut self, packet_type: u8, timeout: Duration) -> OwnedPacket {
        let p = self.expect_packet(timeout);
        assert_eq!(
            p.packet_type(),
            packet_type,
            "{}: expected {}, got {p:?}",
            self.peer,
            packet_name(packet_type)
        );
        p
    }

    /// Broker side of a normal handshake: expect CONNECT, answer CONNACK accepted
    /// (with `session_present`), return the CONNECT.
    pub fn handshake(&mut self, session_present: bool, timeout: Duration) -> OwnedPacket {
        let connect = self.expect_type(1, timeout);
        self.send_connack(session_present, ConnectReturnCode::Accepted as u8);
        connect
    }

    /// Decode what arrives from now on as `version` (a CONNECT is always
    /// decoded by its own protocol level).
    pub fn set_version(&mut self, version: ProtocolVersion) {
        self.version = version;
    }

    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// Broker side of an MQTT 5 handshake: expect a protocol level 5 CONNECT,
    /// answer CONNACK success with `props`, and decode what follows as MQTT 5.
    /// Returns the CONNECT.
    pub fn handshake_v5(
        &mut self,
        session_present: bool,
        props: Properties<'_>,
        timeout: Duration,
    ) -> OwnedPacket {
        let connect = self.expect_type(1, timeout);
        assert_eq!(
            connect.connect().version(),
            ProtocolVersion::V5,
            "{}: expected an MQTT 5 CONNECT, got {connect:?}",
            self.peer
        );
        self.set_version(ProtocolVersion::V5);
        self.send_connack_v5(session_present, 0, props);
        connect
    }

    /// An MQTT 5 CONNACK with `reason_code` and `props`.
    pub fn send_connack_v5(
        &mut self,
        session_present: bool,
        reason_code: u8,
        props: Properties<'_>,
    ) {
        self.send_packet(&Packet::ConnAck(ConnAck {
            session_present,
            reason_code,
            properties: Some(props),
        }));
    }

    /// An MQTT 5 DISCONNECT with `reason_code` and `props`.
    pub fn send_disconnect_v5(&mut self, reason_code: u8, props: Properties<'_>) {
        self.send_packet(&Packet::Disconnect(codec::Disconnect {
            reason_code,
            properties: Some(props),
        }));
    }

    /// Read and decode one packet. Bytes after it stay buffered for the next call.
    pub fn read_packet(&mut self, timeout: Duration) -> Result<OwnedPacket, PeerError> {
        let deadline = Instant::now() + timeout;
        loop {
            match codec::decode_as(&self.buf, MAX_PACKET, self.version) {
                Ok(Decoded::Packet(_, n)) => {
                    let bytes = self.buf.drain(..n).collect();
                    return Ok(OwnedPacket {
                        bytes,
                        version: self.version,
                    });
                }
                Ok(Decoded::Incomplete(_)) => {}
                Err(error) => {
                    return Err(PeerError::Codec {
                        error,
                        bytes: std::mem::take(&mut self.buf),
                    });
                }
            }
            match self.fill(deadline) {
                Ok(0) => {
                    return Err(PeerError::Closed {
                        buffered: self.buf.len(),
                    });
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Read whatever arrives until `deadline` (at least one byte, 0 = EOF).
    fn fill(&mut self, deadline: Instant) -> Result<usize, PeerError> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(PeerError::Timeout {
                    buffered: self.buf.len(),
                });
            }
            // A zero read timeout means "block forever"; keep it at least 1 ms.
            let wait = (deadline - now).max(Duration::from_millis(1));
            self.stream
                .set_read_timeout(Some(wait))
                .map_err(PeerError::Io)?;
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                        return Err(PeerError::Reset);
                    }
                    _ => return Err(PeerError::Io(e)),
                },
            }
        }
    }

    /// Assert that the other side closes the connection (EOF or RST) within
    /// `timeout`. Returns the packets that arrived before the close (e.g. a
    /// DISCONNECT) so the test can check them.
    pub fn expect_closed(&mut self, timeout: Duration) -> Vec<OwnedPacket> {
        let deadline = Instant::now() + timeout;
        let mut before = Vec::new();
        loop {
            match self.read_packet(deadline.saturating_duration_since(Instant::now())) {
                Ok(p) => before.push(p),
                Err(PeerError::Closed { .. } | PeerError::Reset) => return before,
                Err(e) => panic!(
                    "{}: expected the connection to close within {timeout:?}: {e}; \
                     packets received meanwhile: {before:?}",
                    self.peer
                ),
            }
        }
    }

    /// Assert that not a single byte arrives, and the connection is not closed,
    /// during `duration`.
    pub fn expect_silence(&mut self, duration: Duration) {
        let had = self.buf.len();
        if let Ok(p) = self.read_packet(Duration::ZERO) {
            panic!(
                "{}: expected silence, but {p:?} was already buffered",
                self.peer
            );
        }
        let deadline = Instant::now() + duration;
        match self.fill(deadline) {
            Err(PeerError::Timeout { .. }) => {}
            Ok(0) => panic!(
                "{}: expected silence, but the connection was closed",
                self.peer
            ),
            Ok(_) => panic!(
                "{}: expected silence, but received {:02x?}",
                self.peer,
                &self.buf[had..]
            ),
            Err(e) => panic!("{}: expected silence: {e}", self.peer),
        }
    }

    /// Write raw bytes (panics on failure; see [`try_send`](Self::try_send)).
    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes)
            .unwrap_or_else(|e| panic!("{}: send {} bytes: {e}", self.peer, bytes.len()));
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Encode with the crate codec and send.
    pub fn send_packet(&mut self, packet: &Packet<'_>) {
        self.send(&encode(packet));
    }

    /// Send a CONNACK byte for byte: any `code` (even invalid ones) and flags.
    pub fn send_connack(&mut self, session_present: bool, code: u8) {
        self.send(&[0x20, 0x02, session_present as u8, code]);
    }

    /// Half-close: send FIN, keep reading.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Orderly close (FIN) and drop.
    pub fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Abortive close: SO_LINGER 0, so the other side gets RST instead of FIN.
    pub fn reset(self) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: valid fd and a correctly sized linger struct.
        unsafe {
            libc::setsockopt(
                self.stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &linger as *const libc::linger as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
        drop(self);
    }
}

/// `client.connect` to `peer`, which answers CONNACK accepted with
/// `session_present`: connect's result, the broker side, and the CONNECT.
pub fn connect_through(
    client: &mqtt::Client,
    peer: &ScriptedPeer,
    session_present: bool,
) -> (Result<bool, mqtt::Error>, PeerConn, OwnedPacket) {
    std::thread::scope(|s| {
        let script = s.spawn(|| {
            let mut conn = peer.accept(TIMEOUT);
            let connect = conn.handshake(session_present, TIMEOUT);
            (conn, connect)
        });
        let result = client.connect(super::HOST, 60, peer.port());
        let (conn, connect) = script.join().unwrap();
        (result, conn, connect)
    })
}

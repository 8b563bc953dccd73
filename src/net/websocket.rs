//! WebSocket client (RFC 6455) for MQTT over `ws://` and `wss://`: the HTTP/1.1
//! upgrade ([`Upgrade`]), the frame reader ([`FrameReader`]) and writer
//! ([`FrameWriter`]), all sans-IO, plus [`WsStream`], a `Read + Write`
//! adapter over any byte stream (blocking or not).
//!
//! Why not tungstenite (0.29, checked against its documentation): it does run
//! over a non-blocking stream (`WouldBlock` surfaces and the call is retried),
//! but it owns the stream and deals in messages: every binary message read is
//! a fresh `Bytes`, every message sent must be an owned `Bytes` (a copy and an
//! allocation per MQTT packet both ways), with a 128 KiB read buffer per
//! connection, and it pulls in http, httparse, rand, sha1, bytes, thiserror,
//! data-encoding and log. MQTT needs a byte stream, not messages: packets are
//! split across frames and frames across reads as the peer likes. The client
//! half of RFC 6455 for binary data is small, so it is written here: data
//! frame payloads go straight into the caller's MQTT read buffer, outgoing
//! bytes are masked into the caller's write buffer (the one copy masking
//! forces anyway), no allocation per message either way, and the frame reader
//! is ours to fuzz (`fuzz/fuzz_targets/ws_frames.rs`).
//!
//! Rules applied (client side): the upgrade asks for subprotocol `mqtt` and
//! requires status 101, `Upgrade: websocket`, `Connection: upgrade` and the
//! right `Sec-WebSocket-Accept`; a subprotocol other than `mqtt` or any
//! extension fails it. Every frame sent is masked with a fresh key from the OS
//! random source (pongs and close included). Frames received must be unmasked,
//! without RSV bits, binary or continuation (a text frame is an error);
//! control frames at most 125 bytes and unfragmented; pings are answered; a
//! close ends the stream, and is an error when it cuts an MQTT packet in two.
//! Every failure is a [`WsError`], `MQTT_ERR_PROTOCOL_VIOLATION` for C.

use super::Progress;
use super::base64_encode;
use super::http::{HeadError, HeadReader};
use super::uri::{BrokerUri, Host};
use crate::error::Error;
use std::fmt;
use std::io::{self, Read, Write};

/// RFC 6455 §1.3: appended to the key before hashing.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The subprotocol MQTT registers (MQTT 3.1.1 §6, MQTT 5.0 §6).
pub const SUBPROTOCOL: &str = "mqtt";

/// Why the WebSocket layer gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WsError {
    /// The upgrade was answered with this status instead of 101.
    Status(u16),
    /// `Sec-WebSocket-Accept` missing or not the hash of our key.
    BadAccept,
    /// A 101 without `Upgrade: websocket` / `Connection: upgrade`, with a
    /// subprotocol other than `mqtt`, or with an extension we did not ask for.
    BadUpgrade(&'static str),
    /// The upgrade response is not HTTP/1.x.
    MalformedResponse,
    /// The upgrade response head exceeds [`super::http::MAX_HEAD`].
    ResponseTooLarge,
    /// A text frame: MQTT travels in binary frames only.
    TextFrame,
    /// RSV1-3 set without a negotiated extension.
    ReservedBits,
    /// Opcode 3-7 or 11-15.
    ReservedOpcode(u8),
    /// A masked frame from the server (RFC 6455 §5.1).
    MaskedFrame,
    /// A frame whose payload exceeds the limit (or 2^63).
    FrameTooLarge,
    /// A control frame fragmented or longer than 125 bytes.
    BadControlFrame,
    /// A continuation frame without a message to continue.
    UnexpectedContinuation,
    /// A new data frame while a fragmented message is unfinished.
    ExpectedContinuation,
    /// A close frame with a 1-byte payload.
    BadClosePayload,
    /// A close frame (code given, if any) in the middle of an MQTT packet.
    CloseMidPacket(Option<u16>),
    /// Bytes after the server's close frame.
    DataAfterClose,
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::Status(s) => write!(f, "WebSocket upgrade answered with status {s}, not 101"),
            WsError::BadAccept => f.write_str("wrong or missing Sec-WebSocket-Accept"),
            WsError::BadUpgrade(what) => write!(f, "bad WebSocket upgrade response: {what}"),
            WsError::MalformedResponse => f.write_str("WebSocket upgrade response is not HTTP/1.x"),
            WsError::ResponseTooLarge => f.write_str("WebSocket upgrade response head too large"),
            WsError::TextFrame => f.write_str("WebSocket text frame (MQTT needs binary frames)"),
            WsError::ReservedBits => f.write_str("WebSocket frame with reserved bits set"),
            WsError::ReservedOpcode(op) => write!(f, "WebSocket frame with reserved opcode {op}"),
            WsError::MaskedFrame => f.write_str("masked WebSocket frame from the server"),
            WsError::FrameTooLarge => f.write_str("WebSocket frame larger than the limit"),
            WsError::BadControlFrame => {
                f.write_str("fragmented or oversize WebSocket control frame")
            }
            WsError::UnexpectedContinuation => {
                f.write_str("WebSocket continuation frame without a message")
            }
            WsError::ExpectedContinuation => {
                f.write_str("new WebSocket message before the last one ended")
            }
            WsError::BadClosePayload => f.write_str("WebSocket close frame with a 1-byte payload"),
            WsError::CloseMidPacket(Some(c)) => {
                write!(f, "WebSocket closed ({c}) in the middle of an MQTT packet")
            }
            WsError::CloseMidPacket(None) => {
                f.write_str("WebSocket closed in the middle of an MQTT packet")
            }
            WsError::DataAfterClose => f.write_str("bytes after the WebSocket close frame"),
        }
    }
}

impl std::error::Error for WsError {}

impl From<WsError> for Error {
    fn from(_: WsError) -> Error {
        Error::ProtocolViolation
    }
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub fn accept_for_key(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    let mut accept = String::with_capacity(28);
    base64_encode(&sha.digest().bytes(), &mut accept);
    accept
}

/// OS randomness; fails only where the OS has none to give.
fn random_bytes(buf: &mut [u8]) -> Result<(), Error> {
    getrandom::getrandom(buf).map_err(|_| Error::Io)
}

/// The client's opening handshake.
pub struct Upgrade {
    out: Vec<u8>,
    head: HeadReader,
    accept: String,
    done: bool,
}

impl fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upgrade")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Upgrade {
    /// The upgrade for a ws/wss URI, with a random key. The `Host` header
    /// carries the port only when it is not the scheme's default.
    pub fn for_uri(uri: &BrokerUri) -> Result<Upgrade, Error> {
        let mut key = [0u8; 16];
        random_bytes(&mut key)?;
        Ok(Upgrade::with_key(
            &host_header(&uri.host, uri.port, uri.scheme.default_port()),
            &uri.path,
            key,
        ))
    }

    /// The upgrade request for `path` on `host_header`, with this key (tests
    /// use fixed keys; real connections [`for_uri`](Self::for_uri)).
    pub fn with_key(host_header: &str, path: &str, key: [u8; 16]) -> Upgrade {
        let mut key_b64 = String::with_capacity(24);
        base64_encode(&key, &mut key_b64);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key_b64}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n"
        );
        Upgrade {
            out: request.into_bytes(),
            head: HeadReader::default(),
            accept: accept_for_key(&key_b64),
            done: false,
        }
    }

    /// Bytes to send now.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// `n` bytes of [`output`](Self::output) were written.
    pub fn written(&mut self, n: usize) {
        self.out.drain(..n.min(self.out.len()));
    }

    /// Feed bytes received. `Done` carries the bytes after the response head:
    /// the first frames, for the [`FrameReader`].
    pub fn input(&mut self, bytes: &[u8]) -> Result<Progress, WsError> {
        if self.done {
            return Err(WsError::MalformedResponse);
        }
        let head = match self.head.feed(bytes) {
            Ok(None) => return Ok(Progress::Continue),
            Ok(Some(head)) => head,
            Err(HeadError::TooLarge) => return Err(WsError::ResponseTooLarge),
            Err(HeadError::Malformed) => return Err(WsError::MalformedResponse),
        };
        self.done = true;
        if head.status != 101 {
            return Err(WsError::Status(head.status));
        }
        if !head
            .header("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
        {
            return Err(WsError::BadUpgrade("no Upgrade: websocket"));
        }
        if !head
            .tokens("connection")
            .any(|t| t.eq_ignore_ascii_case("upgrade"))
        {
            return Err(WsError::BadUpgrade("no Connection: upgrade"));
        }
        if head.header("sec-websocket-accept") != Some(self.accept.as_str()) {
            return Err(WsError::BadAccept);
        }
        if head.tokens("sec-websocket-extensions").next().is_some() {
            return Err(WsError::BadUpgrade("an extension we did not ask for"));
        }
        // RFC 6455 §4.1: a subprotocol we did not offer fails the connection;
        // none at all is allowed (some brokers do not echo it).
        if let Some(p) = head.header("sec-websocket-protocol") {
            if p != SUBPROTOCOL {
                return Err(WsError::BadUpgrade("a subprotocol other than mqtt"));
            }
        }
        Ok(Progress::Done(head.surplus))
    }
}

/// `host` or `host:port` (IPv6 in brackets) for the `Host` header.
pub fn host_header(host: &Host, port: u16, default_port: u16) -> String {
    if port == default_port {
        host.to_string()
    } else {
        host.with_port(port)
    }
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// A control frame the caller must act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Answer with a pong carrying [`FrameReader::control_payload`].
    Ping,
    /// The server closed (status code, if it gave one) at an MQTT packet
    /// boundary: answer with a close frame, then treat as end of stream.
    Close(Option<u16>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadState {
    /// Gathering the frame header into `hdr`.
    Header,
    /// Inside a frame's payload.
    Payload { opcode: u8, remaining: u64 },
    /// After the server's close frame.
    Closed,
}

/// Follows MQTT fixed headers through the byte stream to know whether it
/// stands between two packets, which is all a close frame needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PacketTracker {
    /// At a packet boundary.
    Start,
    /// After the first byte, reading the Remaining Length.
    Length { value: u32, shift: u32 },
    /// Inside a packet's variable header and payload.
    Body(u32),
    /// A Remaining Length over 4 bytes: the MQTT decoder reports it; here it
    /// only means "not at a boundary" from now on.
    Lost,
}

impl PacketTracker {
    fn feed(&mut self, mut bytes: &[u8]) {
        while let Some((&b, rest)) = bytes.split_first() {
            match *self {
                PacketTracker::Start => {
                    *self = PacketTracker::Length { value: 0, shift: 0 };
                    bytes = rest;
                }
                PacketTracker::Length { value, shift } => {
                    let value = value | (u32::from(b & 0x7f) << shift);
                    *self = if b & 0x80 != 0 {
                        if shift >= 21 {
                            PacketTracker::Lost
                        } else {
                            PacketTracker::Length {
                                value,
                                shift: shift + 7,
                            }
                        }
                    } else if value == 0 {
                        PacketTracker::Start
                    } else {
                        PacketTracker::Body(value)
                    };
                    bytes = rest;
                }
                PacketTracker::Body(n) => {
                    let k = (n as usize).min(bytes.len());
                    let left = n - k as u32;
                    *self = if left == 0 {
                        PacketTracker::Start
                    } else {
                        PacketTracker::Body(left)
                    };
                    bytes = &bytes[k..];
                }
                PacketTracker::Lost => return,
            }
        }
    }
}

/// Decodes the server's frames into the MQTT byte stream.
#[derive(Clone, Debug)]
pub struct FrameReader {
    max_payload: u64,
    state: ReadState,
    hdr: [u8; 14],
    hdr_len: usize,
    /// A binary message whose final frame has not arrived yet.
    in_message: bool,
    /// FIN of the data frame being read.
    fin: bool,
    control: [u8; 125],
    control_len: usize,
    mqtt: PacketTracker,
}

impl FrameReader {
    /// A reader that refuses data frames with payloads over `max_payload`
    /// bytes (give it the largest MQTT packet accepted, or more).
    pub fn new(max_payload: usize) -> FrameReader {
        FrameReader {
            max_payload: max_payload as u64,
            state: ReadState::Header,
            hdr: [0; 14],
            hdr_len: 0,
            in_message: false,
            fin: false,
            control: [0; 125],
            control_len: 0,
            mqtt: PacketTracker::Start,
        }
    }

    /// The payload of the last control frame (the ping to echo in the pong).
    pub fn control_payload(&self) -> &[u8] {
        &self.control[..self.control_len]
    }

    /// True after the server's close frame.
    pub fn is_closed(&self) -> bool {
        self.state == ReadState::Closed
    }

    /// Decode from `input`, appending data-frame payload (MQTT bytes) to
    /// `mqtt`. Returns the number of input bytes used: all of them, unless a
    /// control frame needs an answer, in which case the event comes with the
    /// count up to that frame's end (call again with the rest after
    /// answering). After an error the connection must be dropped.
    pub fn read(
        &mut self,
        input: &[u8],
        mqtt: &mut Vec<u8>,
    ) -> Result<(usize, Option<Event>), WsError> {
        let mut pos = 0;
        while pos < input.len() {
            match self.state {
                ReadState::Closed => return Err(WsError::DataAfterClose),
                ReadState::Header => {
                    let need = self.header_len();
                    let take = (need - self.hdr_len).min(input.len() - pos);
                    self.hdr[self.hdr_len..self.hdr_len + take]
                        .copy_from_slice(&input[pos..pos + take]);
                    self.hdr_len += take;
                    pos += take;
                    if self.hdr_len == 2 {
                        self.check_first_two()?;
                    }
                    // The first two bytes may have raised the requirement.
                    if self.hdr_len == self.header_len() {
                        if let Some(event) = self.start_payload(mqtt)? {
                            return Ok((pos, Some(event)));
                        }
                    }
                }
                ReadState::Payload { opcode, remaining } => {
                    let take = remaining.min((input.len() - pos) as u64) as usize;
                    let chunk = &input[pos..pos + take];
                    pos += take;
                    let remaining = remaining - take as u64;
                    if opcode >= OP_CLOSE {
                        self.control[self.control_len..self.control_len + take]
                            .copy_from_slice(chunk);
                        self.control_len += take;
                    } else {
                        mqtt.extend_from_slice(chunk);
                        self.mqtt.feed(chunk);
                    }
                    self.state = ReadState::Payload { opcode, remaining };
                    if remaining == 0 {
                        if let Some(event) = self.end_frame(opcode)? {
                            return Ok((pos, Some(event)));
                        }
                    }
                }
            }
        }
        Ok((pos, None))
    }

    /// Header bytes needed, as far as the bytes so far tell.
    fn header_len(&self) -> usize {
        if self.hdr_len < 2 {
            return 2;
        }
        let ext = match self.hdr[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        // A masked frame is refused at byte 2, so never 4 more for a key.
        2 + ext
    }

    fn check_first_two(&self) -> Result<(), WsError> {
        let (b0, b1) = (self.hdr[0], self.hdr[1]);
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0f;
        if b0 & 0x70 != 0 {
            return Err(WsError::ReservedBits);
        }
        match opcode {
            OP_TEXT => return Err(WsError::TextFrame),
            OP_CONTINUATION if !self.in_message => return Err(WsError::UnexpectedContinuation),
            OP_BINARY if self.in_message => return Err(WsError::ExpectedContinuation),
            OP_CONTINUATION | OP_BINARY => {}
            OP_CLOSE | OP_PING | OP_PONG => {
                if !fin || b1 & 0x7f > 125 {
                    return Err(WsError::BadControlFrame);
                }
            }
            op => return Err(WsError::ReservedOpcode(op)),
        }
        if b1 & 0x80 != 0 {
            return Err(WsError::MaskedFrame);
        }
        Ok(())
    }

    /// The header is complete: check the length and enter the payload.
    fn start_payload(&mut self, mqtt: &mut Vec<u8>) -> Result<Option<Event>, WsError> {
        let len = match self.hdr[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.hdr[2], self.hdr[3]])),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.hdr[2..10]);
                let len = u64::from_be_bytes(b);
                // RFC 6455 §5.2: the most significant bit must be 0.
                if len >> 63 != 0 {
                    return Err(WsError::FrameTooLarge);
                }
                len
            }
            n => u64::from(n),
        };
        let opcode = self.hdr[0] & 0x0f;
        // Control frames are at most 125 bytes whatever the limit (checked at byte 2).
        if opcode < OP_CLOSE && len > self.max_payload {
            return Err(WsError::FrameTooLarge);
        }
        self.hdr_len = 0;
        if opcode < OP_CLOSE {
            self.fin = self.hdr[0] & 0x80 != 0;
            self.in_message = true;
            mqtt.reserve(len.min(1 << 16) as usize);
        } else {
            self.control_len = 0;
        }
        self.state = ReadState::Payload {
            opcode,
            remaining: len,
        };
        if len == 0 {
            self.end_frame(opcode)
        } else {
            Ok(None)
        }
    }

    fn end_frame(&mut self, opcode: u8) -> Result<Option<Event>, WsError> {
        self.state = ReadState::Header;
        match opcode {
            OP_PING => Ok(Some(Event::Ping)),
            OP_PONG => Ok(None),
            OP_CLOSE => {
                let code = match self.control_len {
                    0 => None,
                    1 => return Err(WsError::BadClosePayload),
                    _ => Some(u16::from_be_bytes([self.control[0], self.control[1]])),
                };
                if self.mqtt != PacketTracker::Start {
                    return Err(WsError::CloseMidPacket(code));
                }
                self.state = ReadState::Closed;
                Ok(Some(Event::Close(code)))
            }
            _ => {
                if self.fin {
                    self.in_message = false;
                }
                Ok(None)
            }
        }
    }
}

/// Encodes client frames: masked, with keys from the OS random source.
#[derive(Clone)]
pub struct FrameWriter {
    /// Random bytes for the masking keys, refilled 64 keys at a time (one
    /// system call per 64 frames rather than one per frame).
    pool: [u8; 256],
    used: usize,
}

impl fmt::Debug for FrameWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameWriter").finish_non_exhaustive()
    }
}

impl Default for FrameWriter {
    fn default() -> Self {
        FrameWriter::new()
    }
}

/// Largest frame header a client writes: 2 + 8 (length) + 4 (mask).
pub const MAX_HEADER: usize = 14;

impl FrameWriter {
    pub fn new() -> FrameWriter {
        FrameWriter {
            pool: [0; 256],
            used: 256,
        }
    }

    /// Append `payload` (MQTT bytes) to `out` as one final binary frame.
    pub fn binary(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        self.frame(0x80 | OP_BINARY, payload, out)
    }

    /// Append the pong answering a ping with this payload (at most 125 bytes).
    pub fn pong(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        self.frame(0x80 | OP_PONG, &payload[..payload.len().min(125)], out)
    }

    /// Append a close frame with this status code (1000: normal closure).
    pub fn close(&mut self, code: Option<u16>, out: &mut Vec<u8>) -> Result<(), Error> {
        match code {
            Some(c) => self.frame(0x80 | OP_CLOSE, &c.to_be_bytes(), out),
            None => self.frame(0x80 | OP_CLOSE, &[], out),
        }
    }

    fn mask_key(&mut self) -> Result<[u8; 4], Error> {
        if self.used + 4 > self.pool.len() {
            random_bytes(&mut self.pool)?;
            self.used = 0;
        }
        let mut key = [0u8; 4];
        key.copy_from_slice(&self.pool[self.used..self.used + 4]);
        self.used += 4;
        Ok(key)
    }

    fn frame(&mut self, b0: u8, payload: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
        let key = self.mask_key()?;
        out.reserve(MAX_HEADER + payload.len());
        out.push(b0);
        let len = payload.len();
        if len <= 125 {
            out.push(0x80 | len as u8);
        } else if len <= 0xffff {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&key);
        let start = out.len();
        out.extend_from_slice(payload);
        apply_mask(key, &mut out[start..]);
        Ok(())
    }
}

/// XOR with the 4-byte key repeated: 32 bytes per step with a fixed-size
/// inner loop, which the compiler turns into vector instructions.
pub fn apply_mask(key: [u8; 4], data: &mut [u8]) {
    let mut wide = [0u8; 32];
    for (i, b) in wide.iter_mut().enumerate() {
        *b = key[i % 4];
    }
    let mut chunks = data.chunks_exact_mut(32);
    for c in &mut chunks {
        for (b, k) in c.iter_mut().zip(wide.iter()) {
            *b ^= k;
        }
    }
    // The tail starts at a multiple of 32, so at key offset 0.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// The largest binary frame [`WsStream`] writes for one `write` call.
const MAX_WRITE_FRAME: usize = 1 << 16;

/// MQTT bytes over WebSocket frames over any byte stream `S`: `Read` yields
/// the MQTT bytes, `Write` sends them as binary frames. Pings are answered
/// while reading; the server's close ends the stream (`Ok(0)`) after a close
/// is sent back; a protocol error is an `io::Error` of kind `InvalidData`
/// wrapping the [`WsError`] (see [`ws_error`]).
///
/// Works over non-blocking streams too: `WouldBlock` from `S` comes out of
/// `read`/`write`/`flush` with nothing lost, and a frame accepted by `write`
/// is kept until `flush` (or the next call) has written it.
#[derive(Debug)]
pub struct WsStream<S> {
    inner: S,
    reader: FrameReader,
    writer: FrameWriter,
    /// Bytes read from `inner`, not decoded yet (`rpos..rlen`).
    rbuf: Box<[u8]>,
    rpos: usize,
    rlen: usize,
    /// Decoded MQTT bytes not handed out yet (from `ppos`).
    plain: Vec<u8>,
    ppos: usize,
    /// Frames not fully written to `inner` yet.
    wbuf: Vec<u8>,
    eof: bool,
    /// The last read from `inner` filled less than `rbuf`.
    short_read: bool,
}

/// The [`WsError`] inside an `io::Error` from [`WsStream`], if it is one.
pub fn ws_error(e: &io::Error) -> Option<WsError> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<WsError>())
        .copied()
}

fn invalid(e: WsError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<S: Read + Write> WsStream<S> {
    /// Run the upgrade for `uri` over `inner` (blocking: `inner` must be a
    /// blocking stream), then wrap it. `max_payload` bounds incoming frames.
    pub fn connect(mut inner: S, uri: &BrokerUri, max_payload: usize) -> io::Result<WsStream<S>> {
        let mut upgrade = Upgrade::for_uri(uri).map_err(|e| io::Error::other(e.message()))?;
        let mut buf = [0u8; 1024];
        loop {
            while !upgrade.output().is_empty() {
                let n = inner.write(upgrade.output())?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                upgrade.written(n);
            }
            inner.flush()?;
            let n = inner.read(&mut buf)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            if let Progress::Done(surplus) = upgrade.input(&buf[..n]).map_err(invalid)? {
                return Ok(WsStream::upgraded(inner, &surplus, max_payload));
            }
        }
    }

    /// Wrap a stream whose upgrade is done; `surplus` is what came after the
    /// response head.
    pub fn upgraded(inner: S, surplus: &[u8], max_payload: usize) -> WsStream<S> {
        let mut rbuf = vec![0u8; surplus.len().max(16 * 1024)].into_boxed_slice();
        rbuf[..surplus.len()].copy_from_slice(surplus);
        WsStream {
            inner,
            reader: FrameReader::new(max_payload),
            writer: FrameWriter::new(),
            rbuf,
            rpos: 0,
            rlen: surplus.len(),
            plain: Vec::new(),
            ppos: 0,
            wbuf: Vec::new(),
            eof: false,
            short_read: false,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Everything read from `inner` was handed out and the last read from it
    /// was short: a non-blocking socket held no more, so an edge-triggered
    /// caller may wait for the next readiness event rather than read until
    /// `WouldBlock`. Only for an `inner` without buffers of its own (TCP).
    pub fn is_drained(&self) -> bool {
        self.short_read && self.rpos == self.rlen && self.ppos == self.plain.len()
    }

    /// Frames accepted by `write` that still wait for `inner`.
    pub fn has_pending_output(&self) -> bool {
        !self.wbuf.is_empty()
    }

    /// Send a close frame (code 1000) and flush it; the server answers with
    /// its own close, which `read` reports as end of stream.
    pub fn close(&mut self) -> io::Result<()> {
        self.writer
            .close(Some(1000), &mut self.wbuf)
            .map_err(|e| io::Error::other(e.message()))?;
        self.flush()
    }

    /// Write pending frames until done or `WouldBlock` (kept for later).
    fn push_pending(&mut self) -> io::Result<()> {
        while !self.wbuf.is_empty() {
            match self.inner.write(&self.wbuf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.wbuf.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Like `push_pending`, but `WouldBlock` is not an error: the bytes wait.
    fn push_pending_soft(&mut self) -> io::Result<()> {
        match self.push_pending() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            r => r,
        }
    }
}

impl<S: Read + Write> Read for WsStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.ppos < self.plain.len() {
                let n = buf.len().min(self.plain.len() - self.ppos);
                buf[..n].copy_from_slice(&self.plain[self.ppos..self.ppos + n]);
                self.ppos += n;
                if self.ppos == self.plain.len() {
                    self.plain.clear();
                    self.ppos = 0;
                }
                return Ok(n);
            }
            if self.eof || buf.is_empty() {
                return Ok(0);
            }
            if self.rpos == self.rlen {
                self.push_pending_soft()?;
                let n = self.inner.read(&mut self.rbuf)?;
                if n == 0 {
                    self.eof = true;
                    return Ok(0);
                }
                self.rpos = 0;
                self.rlen = n;
                self.short_read = n < self.rbuf.len();
            }
            let (used, event) = self
                .reader
                .read(&self.rbuf[self.rpos..self.rlen], &mut self.plain)
                .map_err(invalid)?;
            self.rpos += used;
            match event {
                None => {}
                Some(Event::Ping) => {
                    // On the stack: answering a ping allocates nothing.
                    let mut payload = [0u8; 125];
                    let ping = self.reader.control_payload();
                    payload[..ping.len()].copy_from_slice(ping);
                    let payload = &payload[..ping.len()];
                    self.writer
                        .pong(payload, &mut self.wbuf)
                        .map_err(|e| io::Error::other(e.message()))?;
                    self.push_pending_soft()?;
                }
                Some(Event::Close(code)) => {
                    // RFC 6455 §5.5.1: echo the status code.
                    self.writer
                        .close(code, &mut self.wbuf)
                        .map_err(|e| io::Error::other(e.message()))?;
                    self.push_pending_soft()?;
                    self.eof = true;
                }
            }
        }
    }
}

impl<S: Read + Write> Write for WsStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Back-pressure: no new frame while the last ones wait for the socket.
        self.push_pending()?;
        if buf.is_empty() {
            return Ok(0);
        }
        let n = buf.len().min(MAX_WRITE_FRAME);
        self.writer
            .binary(&buf[..n], &mut self.wbuf)
            .map_err(|e| io::Error::other(e.message()))?;
        self.push_pending_soft()?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.push_pending()?;
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    /// A server frame (unmasked), with the shortest length encoding unless
    /// `ext` forces 126 or 127.
    fn frame_ext(b0: u8, payload: &[u8], ext: Option<u8>) -> Vec<u8> {
        let mut f = vec![b0];
        match (ext, payload.len()) {
            (None, n) if n <= 125 => f.push(n as u8),
            (None | Some(126), n) if n <= 0xffff => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            (_, n) => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        frame_ext(b0, payload, None)
    }

    /// Parse client frames, checking each is masked; (first byte, unmasked payload).
    fn parse_client(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            let b0 = bytes[0];
            assert!(bytes[1] & 0x80 != 0, "client frame not masked: {bytes:?}");
            let (len, mut off) = match bytes[1] & 0x7f {
                126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            let key: [u8; 4] = bytes[off..off + 4].try_into().unwrap();
            off += 4;
            let mut payload = bytes[off..off + len].to_vec();
            apply_mask(key, &mut payload);
            frames.push((b0, payload));
            bytes = &bytes[off + len..];
        }
        frames
    }

    /// Feed `input` in chunks of `chunk` bytes; collect MQTT bytes and events.
    fn read_all(
        r: &mut FrameReader,
        input: &[u8],
        chunk: usize,
    ) -> Result<(Vec<u8>, Vec<Event>), WsError> {
        let mut out = Vec::new();
        let mut events = Vec::new();
        for c in input.chunks(chunk) {
            let mut pos = 0;
            while pos < c.len() {
                let (used, ev) = r.read(&c[pos..], &mut out)?;
                assert!(used > 0 || ev.is_some(), "no progress");
                pos += used;
                events.extend(ev);
            }
        }
        Ok((out, events))
    }

    const CONNACK: [u8; 4] = [0x20, 0x02, 0x00, 0x00];

    #[test]
    fn rfc6455_accept_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_for_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    fn upgrade() -> Upgrade {
        // The RFC's sample nonce.
        Upgrade::with_key("broker.example:8080", "/mqtt", *b"the sample nonce")
    }

    const GOOD_101: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";

    #[test]
    fn upgrade_request() {
        let u = upgrade();
        let req = std::str::from_utf8(u.output()).unwrap();
        assert_eq!(
            req,
            "GET /mqtt HTTP/1.1\r\nHost: broker.example:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: mqtt\r\n\r\n"
        );
        let uri = BrokerUri::parse("wss://[::1]/path?q=1").unwrap();
        let u = Upgrade::for_uri(&uri).unwrap();
        let req = std::str::from_utf8(u.output()).unwrap();
        assert!(
            req.starts_with("GET /path?q=1 HTTP/1.1\r\nHost: [::1]\r\n"),
            "{req}"
        );
        let key = req
            .split("Sec-WebSocket-Key: ")
            .nth(1)
            .unwrap()
            .split("\r\n")
            .next()
            .unwrap();
        assert_eq!(key.len(), 24);
        // Random keys differ.
        let again = Upgrade::for_uri(&uri).unwrap();
        assert_ne!(u.output(), again.output());
        assert_eq!(host_header(&Host::Name("h".into()), 80, 80), "h");
        assert_eq!(host_header(&Host::Name("h".into()), 8080, 80), "h:8080");
    }

    #[test]
    fn upgrade_accepted_with_surplus_byte_by_byte() {
        let mut u = upgrade();
        let n = u.output().len();
        u.written(n);
        let mut reply = GOOD_101.as_bytes().to_vec();
        reply.extend_from_slice(&frame(0x82, &CONNACK));
        let head_end = GOOD_101.len();
        for (i, b) in reply.iter().enumerate() {
            match u.input(&[*b]).unwrap() {
                Progress::Continue => assert!(i + 1 < head_end),
                Progress::Done(surplus) => {
                    assert_eq!(i + 1, head_end);
                    assert!(surplus.is_empty());
                    break;
                }
            }
        }
        // In one read, the frame comes out as surplus.
        let mut u = upgrade();
        assert_eq!(
            u.input(&reply).unwrap(),
            Progress::Done(frame(0x82, &CONNACK))
        );
        // Header names and the upgrade tokens are case-insensitive; no subprotocol is fine.
        let lenient = "HTTP/1.1 101 OK\r\nupgrade: WebSocket\r\nconnection: keep-alive, upgrade\r\n\
                       sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert_eq!(
            upgrade().input(lenient.as_bytes()).unwrap(),
            Progress::Done(vec![])
        );
    }

    #[test]
    fn upgrade_failures() {
        let with = |from: &str, to: &str| upgrade().input(GOOD_101.replace(from, to).as_bytes());
        assert_eq!(
            with("101 Switching Protocols", "200 OK"),
            Err(WsError::Status(200))
        );
        assert_eq!(
            with("101 Switching Protocols", "404 Not Found"),
            Err(WsError::Status(404))
        );
        assert_eq!(
            with(
                "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
                "s3pPLMBiTxaQ9kYGzzhZRbK+xOp="
            ),
            Err(WsError::BadAccept)
        );
        assert_eq!(
            with("Sec-WebSocket-Accept", "X-Accept"),
            Err(WsError::BadAccept)
        );
        assert!(matches!(
            with("Upgrade: websocket", "Upgrade: h2c"),
            Err(WsError::BadUpgrade(_))
        ));
        assert!(matches!(
            with("Connection: Upgrade", "Connection: close"),
            Err(WsError::BadUpgrade(_))
        ));
        assert!(matches!(
            with(
                "Sec-WebSocket-Protocol: mqtt",
                "Sec-WebSocket-Protocol: mqttv3.1"
            ),
            Err(WsError::BadUpgrade(_))
        ));
        assert!(matches!(
            with(
                "Sec-WebSocket-Protocol: mqtt",
                "Sec-WebSocket-Extensions: permessage-deflate"
            ),
            Err(WsError::BadUpgrade(_))
        ));
        assert_eq!(
            upgrade().input(b"\x20\x02\x00\x00\r\n\r\n"),
            Err(WsError::MalformedResponse)
        );
        let mut u = upgrade();
        let mut r = Ok(Progress::Continue);
        for _ in 0..10 {
            r = u.input(&[b'a'; 1000]);
            if r.is_err() {
                break;
            }
        }
        assert_eq!(r, Err(WsError::ResponseTooLarge));
        assert_eq!(Error::from(WsError::BadAccept), Error::ProtocolViolation);
    }

    #[test]
    fn one_binary_frame() {
        let mut r = FrameReader::new(1 << 20);
        let (out, ev) = read_all(&mut r, &frame(0x82, &CONNACK), 1 << 10).unwrap();
        assert_eq!((out.as_slice(), ev.as_slice()), (&CONNACK[..], &[][..]));
    }

    /// A PUBLISH split over three frames (binary + 2 continuations) with a
    /// ping in between, then a second packet, delivered in every chunk size.
    #[test]
    fn packets_across_frames_and_frames_across_reads() {
        let mut publish = vec![0x30, 13, 0, 3, b'a', b'/', b'b'];
        publish.extend_from_slice(b"payload!");
        let mut stream = frame(0x02, &publish[..3]);
        stream.extend(frame(0x89, b"hi"));
        stream.extend(frame(0x00, &publish[3..10]));
        stream.extend(frame(0x80, &publish[10..]));
        stream.extend(frame(0x82, &[]));
        stream.extend(frame(0x82, &CONNACK));
        let mut expect = publish.clone();
        expect.extend_from_slice(&CONNACK);
        for chunk in 1..=stream.len() {
            let mut r = FrameReader::new(1024);
            let (out, events) = read_all(&mut r, &stream, chunk).unwrap();
            assert_eq!(out, expect, "chunk {chunk}");
            assert_eq!(events, [Event::Ping], "chunk {chunk}");
        }
    }

    #[test]
    fn extended_lengths() {
        for (len, ext) in [
            (126, None),
            (65535, None),
            (65536, None),
            (10, Some(126)),
            (10, Some(127)),
        ] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut r = FrameReader::new(1 << 20);
            let (out, _) = read_all(&mut r, &frame_ext(0x82, &payload, ext), 4096).unwrap();
            assert_eq!(out, payload, "len {len} ext {ext:?}");
        }
    }

    #[test]
    fn ping_payload_is_kept_for_the_pong() {
        let mut r = FrameReader::new(64);
        let mut out = Vec::new();
        let mut input = frame(0x89, b"abc");
        input.extend(frame(0x82, &CONNACK));
        let (used, ev) = r.read(&input, &mut out).unwrap();
        // Stops right after the ping so the caller can answer it.
        assert_eq!((used, ev), (5, Some(Event::Ping)));
        assert_eq!(r.control_payload(), b"abc");
        assert_eq!(r.read(&input[used..], &mut out).unwrap(), (6, None));
        assert_eq!(out, CONNACK);
        // Pongs from the server are ignored.
        assert_eq!(r.read(&frame(0x8a, b"x"), &mut out).unwrap(), (3, None));
        // The payload limit is for data: a ping is fine even above it.
        let mut r = FrameReader::new(0);
        assert_eq!(
            r.read(&frame(0x89, &[7; 125]), &mut out).unwrap(),
            (127, Some(Event::Ping))
        );
        assert_eq!(r.read(&frame(0x82, &[]), &mut out).unwrap(), (2, None));
        assert_eq!(
            r.read(&frame(0x82, &[1]), &mut out),
            Err(WsError::FrameTooLarge)
        );
    }

    fn first_error(input: &[u8], max: usize) -> WsError {
        let mut r = FrameReader::new(max);
        read_all(&mut r, input, 1).expect_err("accepted")
    }

    #[test]
    fn protocol_errors() {
        assert_eq!(first_error(&frame(0x81, b"{}"), 64), WsError::TextFrame);
        // A text frame as the continuation's start, too.
        assert_eq!(first_error(&frame(0x01, b"{"), 64), WsError::TextFrame);
        assert_eq!(
            first_error(&frame(0xc2, &CONNACK), 64),
            WsError::ReservedBits
        );
        assert_eq!(
            first_error(&frame(0x92, &CONNACK), 64),
            WsError::ReservedBits
        );
        assert_eq!(
            first_error(&frame(0x83, &[]), 64),
            WsError::ReservedOpcode(3)
        );
        assert_eq!(
            first_error(&frame(0x8b, &[]), 64),
            WsError::ReservedOpcode(11)
        );
        assert_eq!(
            first_error(&frame(0x80, &CONNACK), 64),
            WsError::UnexpectedContinuation
        );
        let mut two_starts = frame(0x02, &CONNACK[..2]);
        two_starts.extend(frame(0x82, &CONNACK[2..]));
        assert_eq!(first_error(&two_starts, 64), WsError::ExpectedContinuation);
        // Masked server frame.
        assert_eq!(
            first_error(&[0x82, 0x84, 1, 2, 3, 4, 0, 0, 0, 0], 64),
            WsError::MaskedFrame
        );
        // Control frames: fragmented, or over 125 bytes.
        assert_eq!(
            first_error(&frame(0x09, b"x"), 64),
            WsError::BadControlFrame
        );
        assert_eq!(
            first_error(&frame_ext(0x89, &[0; 10], Some(126)), 64),
            WsError::BadControlFrame
        );
        // Oversize: the limit, and the 64-bit length's top bit.
        assert_eq!(
            first_error(&frame(0x82, &[0; 65]), 64),
            WsError::FrameTooLarge
        );
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(first_error(&huge, usize::MAX), WsError::FrameTooLarge);
        let mut big = vec![0x82, 127];
        big.extend_from_slice(&(1u64 << 40).to_be_bytes());
        assert_eq!(first_error(&big, 1 << 20), WsError::FrameTooLarge);
        assert_eq!(
            first_error(&frame(0x88, &[3]), 64),
            WsError::BadClosePayload
        );
    }

    #[test]
    fn close_at_a_packet_boundary_and_mid_packet() {
        let mut input = frame(0x82, &CONNACK);
        input.extend(frame(0x88, &1000u16.to_be_bytes()));
        let mut r = FrameReader::new(64);
        assert_eq!(
            read_all(&mut r, &input, 3).unwrap(),
            (CONNACK.to_vec(), vec![Event::Close(Some(1000))])
        );
        assert!(r.is_closed());
        assert_eq!(
            r.read(&[0x82], &mut Vec::new()),
            Err(WsError::DataAfterClose)
        );
        // An empty close.
        let mut r = FrameReader::new(64);
        assert_eq!(
            read_all(&mut r, &frame(0x88, &[]), 1).unwrap().1,
            [Event::Close(None)]
        );

        // Half a CONNACK, then close: a protocol error, not a clean end.
        let mut input = frame(0x82, &CONNACK[..3]);
        input.extend(frame(0x88, &1001u16.to_be_bytes()));
        assert_eq!(first_error(&input, 64), WsError::CloseMidPacket(Some(1001)));
        // Only the fixed header's first byte.
        let mut input = frame(0x82, &[0x30]);
        input.extend(frame(0x88, &[]));
        assert_eq!(first_error(&input, 64), WsError::CloseMidPacket(None));
        // A multi-byte Remaining Length cut after its first byte.
        let mut input = frame(0x82, &[0x30, 0x80]);
        input.extend(frame(0x88, &[]));
        assert_eq!(first_error(&input, 64), WsError::CloseMidPacket(None));
        // A 200-byte packet (2-byte Remaining Length) fully delivered: clean.
        let mut packet = vec![0x30, 0xc8, 0x01];
        packet.extend_from_slice(&[0; 200]);
        let mut input = frame(0x82, &packet);
        input.extend(frame(0x88, &[]));
        let mut r = FrameReader::new(1024);
        assert_eq!(
            read_all(&mut r, &input, 7).unwrap(),
            (packet, vec![Event::Close(None)])
        );
    }

    #[test]
    fn writer_masks_every_frame() {
        let mut w = FrameWriter::new();
        let mut out = Vec::new();
        let big: Vec<u8> = (0..70_000u32).map(|i| (i * 7) as u8).collect();
        w.binary(&CONNACK, &mut out).unwrap();
        w.binary(&big[..126], &mut out).unwrap();
        w.binary(&big, &mut out).unwrap();
        w.binary(&[], &mut out).unwrap();
        w.pong(b"ping!", &mut out).unwrap();
        w.close(Some(1000), &mut out).unwrap();
        let frames = parse_client(&out);
        assert_eq!(
            frames,
            [
                (0x82, CONNACK.to_vec()),
                (0x82, big[..126].to_vec()),
                (0x82, big.clone()),
                (0x82, vec![]),
                (0x8a, b"ping!".to_vec()),
                (0x88, vec![0x03, 0xe8]),
            ]
        );
        // The 126-byte frame (after the 10-byte first one) uses the 16-bit
        // length, the 70000-byte one the 64-bit one.
        assert_eq!(out[10..][..4], [0x82, 0x80 | 126, 0, 126]);
        assert_eq!(out[10 + 8 + 126..][..4], [0x82, 0x80 | 127, 0, 0]);
        // Masked bytes on the wire differ from the payload, and keys vary.
        let mut keys = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut f = Vec::new();
            w.binary(&[0; 8], &mut f).unwrap();
            assert_eq!(f[1], 0x88);
            keys.insert([f[2], f[3], f[4], f[5]]);
        }
        assert!(keys.len() > 190, "{} distinct keys of 200", keys.len());
    }

    #[test]
    fn mask_matches_bytewise_definition() {
        let key = [0x12, 0x34, 0x56, 0x78];
        for len in 0..40 {
            let data: Vec<u8> = (0..len).map(|i| i as u8 ^ 0xa5).collect();
            let mut fast = data.clone();
            apply_mask(key, &mut fast);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            assert_eq!(fast, slow, "len {len}");
        }
    }

    /// The adapter against a scripted server on a socket pair: upgrade,
    /// MQTT bytes both ways, a ping answered with a masked pong, a close echoed.
    #[test]
    fn stream_adapter_end_to_end() {
        let (client, mut server) = UnixStream::pair().unwrap();
        let srv = std::thread::spawn(move || {
            let mut req = Vec::new();
            let mut b = [0u8; 1];
            while !req.ends_with(b"\r\n\r\n") {
                server.read_exact(&mut b).unwrap();
                req.push(b[0]);
            }
            let req = String::from_utf8(req).unwrap();
            assert!(
                req.starts_with("GET /mqtt HTTP/1.1\r\nHost: example.org:8080\r\n"),
                "{req}"
            );
            assert!(req.contains("Sec-WebSocket-Protocol: mqtt\r\n"));
            let key = req
                .split("Sec-WebSocket-Key: ")
                .nth(1)
                .unwrap()
                .split("\r\n")
                .next()
                .unwrap();
            let mut reply = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
                accept_for_key(key)
            )
            .into_bytes();
            // CONNACK split over two frames, the first in the same write as the head.
            reply.extend(frame(0x02, &CONNACK[..1]));
            server.write_all(&reply).unwrap();
            // Read the CONNECT the client sends (one frame).
            let mut hdr = [0u8; 2];
            server.read_exact(&mut hdr).unwrap();
            let mut rest = vec![0u8; 4 + (hdr[1] & 0x7f) as usize];
            server.read_exact(&mut rest).unwrap();
            let mut all = hdr.to_vec();
            all.extend(rest);
            let connect = parse_client(&all);
            server.write_all(&frame(0x89, b"are you there")).unwrap();
            server.write_all(&frame(0x80, &CONNACK[1..])).unwrap();
            // Expect the pong.
            let mut pong = [0u8; 2 + 4 + 13];
            server.read_exact(&mut pong).unwrap();
            let pong = parse_client(&pong);
            server
                .write_all(&frame(0x88, &1000u16.to_be_bytes()))
                .unwrap();
            let mut close = [0u8; 2 + 4 + 2];
            server.read_exact(&mut close).unwrap();
            (connect, pong, parse_client(&close))
        });
        let uri = BrokerUri::parse("ws://example.org:8080").unwrap();
        let mut ws = WsStream::connect(client, &uri, 1024).unwrap();
        let connect = [0x10, 0x0c, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 0];
        ws.write_all(&connect).unwrap();
        ws.flush().unwrap();
        let mut got = [0u8; 4];
        ws.read_exact(&mut got).unwrap();
        assert_eq!(got, CONNACK);
        let mut rest = Vec::new();
        ws.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        let (connect_frames, pong, close) = srv.join().unwrap();
        assert_eq!(connect_frames, [(0x82, connect.to_vec())]);
        assert_eq!(pong, [(0x8a, b"are you there".to_vec())]);
        assert_eq!(close, [(0x88, 1000u16.to_be_bytes().to_vec())]);
    }

    #[test]
    fn stream_adapter_reports_protocol_errors() {
        let (client, mut server) = UnixStream::pair().unwrap();
        server.write_all(&frame(0x81, b"text")).unwrap();
        let mut ws = WsStream::upgraded(client, &[], 1024);
        let err = ws.read(&mut [0u8; 16]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(ws_error(&err), Some(WsError::TextFrame));
        // A non-101 answer to the upgrade.
        let (client, mut server) = UnixStream::pair().unwrap();
        server
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        let err = WsStream::connect(client, &BrokerUri::parse("ws://h").unwrap(), 64).unwrap_err();
        assert_eq!(ws_error(&err), Some(WsError::Status(200)));
    }

    #[test]
    fn drained_only_once_everything_read_was_handed_out() {
        let (client, mut server) = UnixStream::pair().unwrap();
        client.set_nonblocking(true).unwrap();
        let mut ws = WsStream::upgraded(client, &[], 1024);
        assert!(!ws.is_drained(), "nothing read yet");
        // Two frames in one short read, taken 3 bytes at a time.
        let mut two = frame(0x82, &CONNACK);
        two.extend(frame(0x82, &CONNACK));
        server.write_all(&two).unwrap();
        let mut got = [0u8; 3];
        let mut total = 0;
        loop {
            total += ws.read(&mut got).unwrap();
            if total == 2 * CONNACK.len() {
                break;
            }
            assert!(
                !ws.is_drained(),
                "decoded bytes still wait ({total} handed out)"
            );
        }
        assert!(ws.is_drained());
        // A ping stops the decoding: the frame after it is not handed out yet.
        let mut ping_then_data = frame(0x89, b"p");
        ping_then_data.extend(frame(0x82, &CONNACK));
        server.write_all(&ping_then_data).unwrap();
        let mut big = [0u8; 64];
        let n = ws.read(&mut big).unwrap();
        assert_eq!(&big[..n], &CONNACK[..]);
        assert!(ws.is_drained());
        // A read that fills the whole buffer is not short.
        let mut full = Vec::new();
        while full.len() < 16 * 1024 {
            full.extend(frame(0x82, &[0x55; 100]));
        }
        server.write_all(&full).unwrap();
        let mut sink = vec![0u8; 64 * 1024];
        let _ = ws.read(&mut sink).unwrap();
        assert!(
            !ws.is_drained(),
            "a full read may have left bytes in the socket"
        );
    }

    #[test]
    fn stream_adapter_over_a_nonblocking_socket() {
        let (client, mut server) = UnixStream::pair().unwrap();
        client.set_nonblocking(true).unwrap();
        let mut ws = WsStream::upgraded(client, &[], 1024);
        // Nothing to read yet: WouldBlock, and nothing lost afterwards.
        let e = ws.read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        // Half a header, then the rest with one payload byte: payload is
        // handed out as it arrives, not at the frame's end.
        let f = frame(0x82, &CONNACK);
        server.write_all(&f[..1]).unwrap();
        assert_eq!(
            ws.read(&mut [0u8; 8]).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        server.write_all(&f[1..3]).unwrap();
        let mut got = [0u8; 8];
        assert_eq!(ws.read(&mut got).unwrap(), 1);
        assert_eq!(got[0], CONNACK[0]);
        assert_eq!(
            ws.read(&mut got).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        server.write_all(&f[3..]).unwrap();
        assert_eq!(ws.read(&mut got).unwrap(), 3);
        assert_eq!(got[..3], CONNACK[1..]);
        // Fill the socket: write accepts a frame, then pushes back.
        let chunk = vec![0x55u8; 60_000];
        let mut accepted = 0;
        loop {
            match ws.write(&chunk) {
                Ok(n) => accepted += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
            assert!(accepted < 100_000_000, "never pushed back");
        }
        // Drain on the server side while flushing: every accepted byte arrives, in frames.
        server.set_nonblocking(false).unwrap();
        let reader = std::thread::spawn(move || {
            let mut total = 0usize;
            let mut wire = Vec::new();
            let mut buf = vec![0u8; 65536];
            loop {
                let n = server.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                wire.extend_from_slice(&buf[..n]);
            }
            for (b0, p) in parse_client(&wire) {
                assert_eq!(b0, 0x82);
                assert!(p.iter().all(|&b| b == 0x55));
                total += p.len();
            }
            total
        });
        // The frames kept back are all still there: a blocking flush sends them.
        ws.get_mut().set_nonblocking(false).unwrap();
        ws.flush().unwrap();
        drop(ws);
        assert_eq!(reader.join().unwrap(), accepted);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// One server frame of a generated stream.
        #[derive(Clone, Debug)]
        enum Piece {
            /// The next `n` bytes of the MQTT stream as a data frame.
            Data(usize),
            Ping(Vec<u8>),
            Pong(Vec<u8>),
        }

        fn piece() -> impl Strategy<Value = Piece> {
            prop_oneof![
                6 => (0usize..300).prop_map(Piece::Data),
                1 => proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Piece::Ping),
                1 => proptest::collection::vec(any::<u8>(), 0..=125).prop_map(Piece::Pong),
            ]
        }

        proptest! {
            /// Any byte stream, cut into messages of any number of frames
            /// (binary + continuations, with pings and pongs between
            /// fragments), delivered in reads of any size, comes out whole,
            /// with one ping event per ping, carrying its payload.
            #[test]
            fn any_framing_any_reads(
                stream in proptest::collection::vec(any::<u8>(), 0..2000),
                pieces in proptest::collection::vec(piece(), 1..40),
                fins in proptest::collection::vec(any::<bool>(), 40),
                reads in proptest::collection::vec(1usize..64, 1..20),
            ) {
                let mut wire = Vec::new();
                let mut pos = 0;
                let mut in_message = false;
                let mut pings = Vec::new();
                for (i, p) in pieces.iter().enumerate() {
                    match p {
                        Piece::Data(n) => {
                            let end = (pos + n).min(stream.len());
                            let fin = fins[i];
                            let op = if in_message { OP_CONTINUATION } else { OP_BINARY };
                            wire.extend(frame(if fin { 0x80 | op } else { op }, &stream[pos..end]));
                            in_message = !fin;
                            pos = end;
                        }
                        Piece::Ping(p) => {
                            wire.extend(frame(0x89, p));
                            pings.push(p.clone());
                        }
                        Piece::Pong(p) => wire.extend(frame(0x8a, p)),
                    }
                }
                // Whatever the pieces did not cover, in one last frame.
                let op = if in_message { OP_CONTINUATION } else { OP_BINARY };
                wire.extend(frame(0x80 | op, &stream[pos..]));

                // The last frame may carry the whole stream.
                let mut r = FrameReader::new(stream.len());
                let mut out = Vec::new();
                let mut seen_pings = Vec::new();
                let mut at = 0;
                let mut k = 0;
                while at < wire.len() {
                    let end = (at + reads[k % reads.len()]).min(wire.len());
                    k += 1;
                    let mut chunk = &wire[at..end];
                    at = end;
                    while !chunk.is_empty() {
                        let (used, ev) = r.read(chunk, &mut out).unwrap();
                        chunk = &chunk[used..];
                        if ev == Some(Event::Ping) {
                            seen_pings.push(r.control_payload().to_vec());
                        }
                    }
                }
                prop_assert_eq!(out, stream);
                prop_assert_eq!(seen_pings, pings);
            }

            /// Whatever the writer frames, a server unmasking it gets back.
            #[test]
            fn writer_round_trip(payloads in proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 0..70_000), 1..4)) {
                let mut w = FrameWriter::new();
                let mut out = Vec::new();
                for p in &payloads {
                    w.binary(p, &mut out).unwrap();
                }
                let frames = parse_client(&out);
                prop_assert_eq!(frames.len(), payloads.len());
                for ((b0, got), want) in frames.into_iter().zip(payloads) {
                    prop_assert_eq!(b0, 0x82);
                    prop_assert_eq!(got, want);
                }
            }
        }
    }
}

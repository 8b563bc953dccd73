//! The mio reactor: one Poll, the TCP stream, a Waker for other threads, and
//! timers taken from the session's next deadline. It turns session outputs into
//! syscalls (all queued packets in one write) and incoming bytes into callbacks.

use std::ffi::CStr;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::Error;
use crate::client::{Client, lock};
use crate::dispatch::{Command, Data, MessageView};
use crate::log::{Level, log};
use crate::protocol::codec::{self, Decoded, Packet, ProtocolVersion};
use crate::protocol::properties::{self as prop, Properties};
use crate::protocol::session::{ConnectionState, Incoming, Message};
use crate::protocol::v5::{self, AfterRefusal};

const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);
/// Reads per turn before timers and writes get their chance under a flood.
const READS_PER_TURN: usize = 16;
const READ_CHUNK: usize = 64 * 1024;
/// Unwritten bytes (mostly acks of incoming messages) beyond which reading
/// pauses until the socket drains: a peer that floods us but does not read
/// cannot make us buffer without limit.
const MAX_UNWRITTEN: usize = 1024 * 1024;

/// Requests from API calls that only the reactor can carry out.
pub(crate) enum ReactorCommand {
    /// `attempt` is the blocking `connect` call waiting for the outcome; `None`
    /// for `connect_async`, whose outcome goes to the CONNACK/DISCONNECT callbacks.
    Connect {
        attempt: Option<u64>,
        addrs: Vec<SocketAddr>,
        intent: u64,
    },
    /// An asynchronous connect failed before the reactor could start it.
    Failed {
        error: Error,
        intent: u64,
    },
    /// The host name, resolved again for automatic reconnection `generation`.
    Resolved {
        generation: u64,
        result: Result<Vec<SocketAddr>, Error>,
    },
    StopReconnecting {
        intent: u64,
    },
}

/// The byte stream under MQTT: plain TCP (the fast path) or TLS over it.
enum Transport {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<crate::tls::TlsStream>),
}

impl Transport {
    fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(stream) => stream,
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => &tls.tcp,
        }
    }

    fn tcp_mut(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(stream) => stream,
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => &mut tls.tcp,
        }
    }

    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.read(buf),
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.read(buf),
        }
    }

    #[inline]
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.write(data),
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.write(data),
        }
    }

    fn is_plain(&self) -> bool {
        matches!(self, Transport::Plain(_))
    }

    /// Bytes already taken from the session that still wait for the socket
    /// (TLS records); never for plain TCP.
    #[inline]
    fn has_buffered_output(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.has_buffered_output(),
        }
    }

    /// Announce a requested close (TLS close_notify), best effort.
    fn close_notify(&mut self) {
        match self {
            Transport::Plain(_) => {}
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.close_notify(),
        }
    }
}

/// The error to report for an I/O error: the TLS error it carries, if any,
/// else `default`.
fn io_error(e: &io::Error, default: Error) -> Error {
    #[cfg(feature = "tls")]
    if let Some(tls) = crate::tls::error_from_io(e) {
        return tls;
    }
    let _ = e;
    default
}

/// Plain TCP, or TLS when the client has a TLS configuration.
fn transport_for(client: &Client, stream: TcpStream) -> Result<Transport, Error> {
    #[cfg(feature = "tls")]
    {
        let options = lock(&client.inner.options);
        if let Some(tls) = options.tls.clone() {
            let host = options.host.clone().unwrap_or_default();
            drop(options);
            return Ok(Transport::Tls(Box::new(tls.connect(&host, stream)?)));
        }
    }
    let _ = client;
    Ok(Transport::Plain(stream))
}

/// Hand the new connection to the session (it queues CONNECT), with what is
/// left of the connect timeout as the CONNACK deadline. Returns the protocol
/// the connection speaks.
fn open_session(client: &Client, connect_deadline: Option<Instant>) -> ProtocolVersion {
    let now = Instant::now();
    let mut session = client.session();
    if let Some(deadline) = connect_deadline {
        session.config_mut().connect_timeout = deadline
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
    }
    session.connection_opened(now);
    session.config().protocol
}

struct Connection {
    transport: Transport,
    /// TCP connected, TLS handshake in progress.
    handshaking: bool,
    /// TCP (and TLS) handshake finished and CONNECT handed to the session.
    established: bool,
    /// CONNACK accepted on this connection.
    accepted: bool,
    /// Edge-triggered readiness not yet used up.
    readable: bool,
    /// The peer's FIN or an error was reported: read until read() says so,
    /// since no further edge will come.
    read_closed: bool,
    writable: bool,
}

pub(crate) struct Reactor {
    poll: Poll,
    events: Events,
    conn: Option<Connection>,
    read_buf: Vec<u8>,
    read_start: usize,
    read_end: usize,
    /// The topic of the message being delivered, NUL-terminated for C.
    topic_buf: Vec<u8>,
    addrs: Vec<SocketAddr>,
    next_addr: usize,
    /// The `connect` call waiting for the current attempt, if any.
    attempt: Option<u64>,
    /// The current attempt comes from `connect_async`.
    async_attempt: bool,
    connect_deadline: Option<Instant>,
    reconnect_at: Option<Instant>,
    /// The automatic reconnection waiting for its name resolution, if any.
    resolving: Option<u64>,
    resolve_generation: u64,
    /// Automatic reconnection is armed (after a successful connect, until
    /// `disconnect` or a refusal that retrying cannot fix).
    keep_reconnecting: bool,
    failed_attempts: u32,
    rng: u64,
    /// What the current connection speaks (decoding depends on it).
    protocol: ProtocolVersion,
    /// The DISCONNECT reason code we sent when closing for a protocol error,
    /// for the DISCONNECT callback.
    sent_reason: u8,
    /// The last refusal or server DISCONNECT said retrying cannot help.
    stop_after_refusal: bool,
}

impl Reactor {
    pub fn new() -> io::Result<(Reactor, Waker)> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        // Distinct per process and per client; quality beyond that is not needed.
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let seed = clock ^ (u64::from(std::process::id()) << 32) ^ (&poll as *const Poll as u64);
        Ok((
            Reactor {
                poll,
                events: Events::with_capacity(16),
                conn: None,
                read_buf: Vec::new(),
                read_start: 0,
                read_end: 0,
                topic_buf: Vec::new(),
                addrs: Vec::new(),
                next_addr: 0,
                attempt: None,
                async_attempt: false,
                connect_deadline: None,
                reconnect_at: None,
                resolving: None,
                resolve_generation: 0,
                keep_reconnecting: false,
                failed_attempts: 0,
                rng: seed | 1,
                protocol: ProtocolVersion::V311,
                sent_reason: 0,
                stop_after_refusal: false,
            },
            waker,
        ))
    }

    pub fn event_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.poll.as_raw_fd()
    }

    /// One turn: wait for IO, a wake or the next deadline (at most `max_wait`;
    /// `None` waits as long as nothing is due), then do all due work.
    /// Returns the error that ended a connection during this turn, if any.
    pub fn turn(&mut self, client: &Client, max_wait: Option<Duration>) -> Option<Error> {
        // Work queued since the last turn (a publish from the caller's loop
        // thread, say) goes out before this turn sleeps.
        if client.clear_wake()
            && let Some(e) = self.work(client)
        {
            return Some(e);
        }
        let mut wait = match (self.next_timeout(client), max_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if wait != Some(Duration::ZERO) && !client.prepare_sleep() {
            wait = Some(Duration::ZERO);
        }
        let polled = self.poll.poll(&mut self.events, wait);
        client.end_sleep();
        if let Err(e) = polled
            && e.kind() != io::ErrorKind::Interrupted
        {
            return Some(Error::Io);
        }
        client.clear_wake();
        for event in self.events.iter() {
            if event.token() == SOCKET
                && let Some(conn) = self.conn.as_mut()
            {
                conn.readable |= event.is_readable() || event.is_read_closed() || event.is_error();
                conn.read_closed |= event.is_read_closed() || event.is_error();
                conn.writable |= event.is_writable() || event.is_error();
            }
        }
        let mut ended = self.work(client);
        // Commands queued by this turn's callbacks (a connect_async, say) are
        // carried out now rather than after the next poll.
        if ended.is_none() && client.clear_wake() {
            ended = self.work(client);
        }
        if client.is_closed() {
            // Freed from a callback: nobody else will write what it queued
            // (a DISCONNECT, say) before the connection goes.
            self.shutdown(client);
        }
        ended
    }

    /// Commands from API calls, then everything else that is due.
    fn work(&mut self, client: &Client) -> Option<Error> {
        let commands = std::mem::take(&mut *lock(&client.inner.commands));
        let current = client.current_intent();
        for command in commands {
            match command {
                // Overtaken by a later connect or disconnect: dropped, and a
                // blocking connect waiting for it is told so.
                ReactorCommand::Connect {
                    attempt, intent, ..
                } if intent != current => {
                    if let Some(attempt) = attempt {
                        finish_attempt(client, attempt, Err(Error::NotConnected));
                    }
                }
                ReactorCommand::Failed { intent, .. }
                | ReactorCommand::StopReconnecting { intent }
                    if intent != current => {}
                ReactorCommand::Connect { attempt, addrs, .. } => {
                    if self.conn.is_some() {
                        // Finish a requested disconnect: write the DISCONNECT, report it.
                        let _ = self.flush(client);
                        let reason = (client.session().state() != ConnectionState::Disconnecting)
                            .then_some(Error::ConnectionLost);
                        self.close(client, reason);
                        self.reconnect_at = None;
                    }
                    self.addrs = addrs;
                    self.next_addr = 0;
                    self.resolving = None;
                    self.attempt = attempt;
                    self.async_attempt = attempt.is_none();
                    self.reconnect_at = None;
                    self.failed_attempts = 0;
                    let timeout = lock(&client.inner.options).connect_timeout;
                    self.connect_deadline = Some(Instant::now() + timeout);
                    // Closing a preempted automatic attempt above cleared it.
                    client.set_attempt_in_progress(true);
                    self.start_connect(client);
                }
                ReactorCommand::Failed { error, .. } => {
                    self.async_attempt = true;
                    self.attempt_failed(client, error);
                }
                ReactorCommand::Resolved { generation, result } => {
                    if self.resolving == Some(generation) {
                        self.resolving = None;
                        self.connect_resolved(client, result);
                    }
                }
                ReactorCommand::StopReconnecting { .. } => {
                    self.keep_reconnecting = false;
                    self.reconnect_at = None;
                    self.abandon_attempt(client);
                    // The attempt that disconnect() meant to give up was
                    // accepted meanwhile: close that connection instead.
                    let mut session = client.session();
                    if session.state() == ConnectionState::Connected {
                        let _ = session.disconnect(Instant::now());
                    }
                }
            }
        }
        self.advance(client)
    }

    /// Everything after the wait: connect progress, reads, timers, writes.
    fn advance(&mut self, client: &Client) -> Option<Error> {
        if self
            .conn
            .as_ref()
            .is_some_and(|c| !c.established && !c.handshaking && c.writable)
        {
            self.finish_connect(client);
        }
        #[cfg(feature = "tls")]
        if self
            .conn
            .as_ref()
            .is_some_and(|c| c.handshaking && (c.readable || c.writable))
        {
            self.drive_handshake(client);
        }
        if self
            .conn
            .as_ref()
            .is_some_and(|c| c.established && c.readable)
            && let Err(e) = self.read(client)
        {
            return Some(self.close(client, Some(e)));
        }
        if client.is_closed() {
            return None;
        }
        let now = Instant::now();
        if self.conn.as_ref().is_some_and(|c| c.established) {
            let timed_out = client.session().handle_timeout(now);
            if let Err(e) = timed_out {
                return Some(self.close(client, Some(e)));
            }
        }
        if let Some(deadline) = self.connect_deadline
            && now >= deadline
        {
            if self.resolving.take().is_some() {
                // The resolver hangs: the addresses that worked before may still.
                self.connect_resolved(client, Err(Error::Timeout));
            } else {
                return Some(self.close(client, Some(Error::Timeout)));
            }
        }
        if let Some(at) = self.reconnect_at
            && now >= at
        {
            self.reconnect_at = None;
            let timeout = lock(&client.inner.options).connect_timeout;
            self.connect_deadline = Some(now + timeout);
            self.next_addr = 0;
            client.set_attempt_in_progress(true);
            if !self.resolve_again(client) {
                self.start_connect(client);
            }
        }
        if let Err(e) = self.flush(client) {
            return Some(self.close(client, Some(e)));
        }
        let requested_close = self
            .conn
            .as_ref()
            .is_some_and(|c| c.established && !c.transport.has_buffered_output())
            && client.session().state() == ConnectionState::Disconnecting
            && client.session().pending_transmit().is_empty();
        if requested_close {
            self.close(client, None);
        }
        None
    }

    fn start_connect(&mut self, client: &Client) {
        while let Some(&addr) = self.addrs.get(self.next_addr) {
            self.next_addr += 1;
            log!(client, Level::Info, "connecting to {addr}");
            crate::log::connection_started(client);
            let Ok(mut stream) = TcpStream::connect(addr) else {
                continue;
            };
            if self
                .poll
                .registry()
                .register(&mut stream, SOCKET, Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                continue;
            }
            let transport = match transport_for(client, stream) {
                Ok(transport) => transport,
                Err(e) => {
                    self.attempt_failed(client, e);
                    return;
                }
            };
            self.conn = Some(Connection {
                transport,
                handshaking: false,
                established: false,
                accepted: false,
                readable: false,
                read_closed: false,
                writable: false,
            });
            return;
        }
        self.attempt_failed(client, Error::ConnectFailed);
    }

    fn finish_connect(&mut self, client: &Client) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        conn.writable = false;
        let failed = matches!(conn.transport.tcp().take_error(), Ok(Some(_)) | Err(_));
        match conn.transport.tcp().peer_addr() {
            Ok(_) if !failed => {
                let _ = conn.transport.tcp().set_nodelay(true);
                conn.writable = true;
                if matches!(conn.transport, Transport::Plain(_)) {
                    conn.established = true;
                    self.protocol = open_session(client, self.connect_deadline);
                    self.sent_reason = 0;
                } else {
                    // CONNECT waits for the TLS handshake (drive_handshake).
                    conn.handshaking = true;
                }
            }
            Err(e) if !failed && e.kind() == io::ErrorKind::NotConnected => {
                // Spurious wake-up: the handshake is still in progress.
            }
            _ => {
                if let Some(conn) = self.conn.take() {
                    self.drop_connection(client, conn);
                }
                // Try the next address of the same name before giving up.
                self.start_connect(client);
            }
        }
    }

    /// Advance the TLS handshake; once done, the connection is established.
    #[cfg(feature = "tls")]
    fn drive_handshake(&mut self, client: &Client) {
        use crate::tls::Handshake;
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let Transport::Tls(tls) = &mut conn.transport else {
            return;
        };
        match tls.handshake(&mut conn.readable, &mut conn.writable) {
            Handshake::Blocked => {}
            Handshake::Done => {
                conn.handshaking = false;
                conn.established = true;
                self.protocol = open_session(client, self.connect_deadline);
                self.sent_reason = 0;
            }
            Handshake::Failed(error) => {
                self.close(client, Some(error));
            }
        }
    }

    /// Start resolving the host name again for an automatic reconnection, so
    /// that a broker whose address changed (DNS failover, a new cloud
    /// instance) is found. False for an IP literal, or if no thread can run
    /// the resolver: connect to the known addresses then.
    fn resolve_again(&mut self, client: &Client) -> bool {
        if client.host_name().is_none() {
            return false;
        }
        self.resolve_generation += 1;
        let generation = self.resolve_generation;
        let spawned = client
            .resolve_in_background(move |result| ReactorCommand::Resolved { generation, result });
        if spawned.is_err() {
            return false;
        }
        self.resolving = Some(generation);
        true
    }

    /// Connect with the addresses a resolution gave, or, when it failed, with
    /// the ones that were known before.
    fn connect_resolved(&mut self, client: &Client, result: Result<Vec<SocketAddr>, Error>) {
        match result {
            Ok(addrs) => self.addrs = addrs,
            Err(e) if !self.addrs.is_empty() => log!(
                client,
                Level::Warn,
                "resolving the host again failed ({e}): trying its last known addresses"
            ),
            Err(e) => {
                self.attempt_failed(client, e);
                return;
            }
        }
        self.next_addr = 0;
        let timeout = lock(&client.inner.options).connect_timeout;
        self.connect_deadline = Some(Instant::now() + timeout);
        self.start_connect(client);
    }

    /// `disconnect` during a connection attempt: give the attempt up. The
    /// caller of a blocking `connect` gets NotConnected; otherwise the
    /// DISCONNECT callback reports a requested disconnect (MQTT_OK).
    fn abandon_attempt(&mut self, client: &Client) {
        self.resolving = None;
        let flagged = client.take_attempt_in_progress();
        let connecting = self.conn.as_ref().is_some_and(|c| !c.accepted);
        if !flagged && !connecting && self.attempt.is_none() {
            return;
        }
        if let Some(conn) = self.conn.take_if(|c| !c.accepted) {
            self.drop_connection(client, conn);
        }
        self.connect_deadline = None;
        self.async_attempt = false;
        log!(client, Level::Info, "connection attempt abandoned");
        match self.attempt.take() {
            Some(attempt) => finish_attempt(client, attempt, Err(Error::NotConnected)),
            None if flagged || connecting => self.report_disconnect(client, None),
            None => {}
        }
    }

    /// The current attempt failed before a connection was accepted.
    fn attempt_failed(&mut self, client: &Client, error: Error) {
        // Said by this attempt's refusal (if at all): taken whichever way the
        // failure goes, so that it cannot stop a later, unrelated attempt.
        let refusal_says_stop = std::mem::take(&mut self.stop_after_refusal);
        self.resolving = None;
        client.set_attempt_in_progress(false);
        log!(client, Level::Warn, "connection attempt failed: {error}");
        self.connect_deadline = None;
        if let Some(attempt) = self.attempt.take() {
            finish_attempt(client, attempt, Err(error));
            return;
        }
        let was_async = std::mem::take(&mut self.async_attempt);
        if was_async {
            // Nobody waits for an asynchronous connect: it retries like a lost
            // connection would, and every failure is reported.
            self.keep_reconnecting = lock(&client.inner.options).reconnect.is_some();
        } else if !self.keep_reconnecting {
            return;
        }
        if is_final_refusal(error) || refusal_says_stop || !self.keep_reconnecting {
            log!(client, Level::Error, "giving up reconnecting: {error}");
            self.keep_reconnecting = false;
            self.report_disconnect(client, Some(error));
            return;
        }
        if was_async {
            self.report_disconnect(client, Some(error));
            self.async_attempt = true;
        }
        self.schedule_reconnect(client);
    }

    fn schedule_reconnect(&mut self, client: &Client) {
        let Some((min, max)) = lock(&client.inner.options).reconnect else {
            self.keep_reconnecting = false;
            return;
        };
        // The n-th delay is drawn from [max(c/2, min), c] with c = min(min * 2^(n+1), max):
        // never below min or above max, and spread even on the first retry, so a
        // fleet dropped by a broker restart does not come back in lockstep.
        let ceiling = min
            .saturating_mul(2u32 << self.failed_attempts.min(16))
            .min(max);
        let floor = (ceiling / 2).max(min).min(ceiling);
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let span = (ceiling - floor).as_nanos() as u64;
        let jitter_ns = if span == 0 { 0 } else { self.rng % (span + 1) };
        let delay = floor + Duration::from_nanos(jitter_ns);
        self.failed_attempts = self.failed_attempts.saturating_add(1);
        self.reconnect_at = Some(Instant::now() + delay);
        log!(
            client,
            Level::Info,
            "reconnecting in {} ms",
            delay.as_millis()
        );
    }

    fn read(&mut self, client: &Client) -> Result<(), Error> {
        let max_packet_size = lock(&client.inner.options).max_packet_size;
        for _ in 0..READS_PER_TURN {
            if self.write_backlogged(client) {
                // Resumes once a writable event lets the flush drain the backlog.
                return Ok(());
            }
            if self.read_end == self.read_buf.len() {
                self.make_room(max_packet_size);
            }
            let Some(conn) = self.conn.as_mut() else {
                return Ok(());
            };
            let space = self.read_buf.len() - self.read_end;
            match conn.transport.read(&mut self.read_buf[self.read_end..]) {
                Ok(0) => return Err(Error::ConnectionLost),
                Ok(n) => {
                    // A short read from a TCP socket took all it held (epoll(7)):
                    // the next edge reports new bytes, so skip the read that
                    // would only say EAGAIN. Not for TLS, whose plaintext comes
                    // in records, nor after a FIN, which gives no further edge.
                    let drained = n < space && conn.transport.is_plain() && !conn.read_closed;
                    if drained {
                        conn.readable = false;
                    }
                    self.read_end += n;
                    self.process(client, max_packet_size)?;
                    if drained || client.is_closed() || self.conn.is_none() {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.readable = false;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(Error::ConnectionLost);
                }
                Err(e) => return Err(io_error(&e, Error::Io)),
            }
        }
        Ok(())
    }

    /// Make space to read into: move unread bytes to the front, and grow the
    /// buffer only as far as the packet being assembled needs (bounded by the
    /// maximum packet size, already checked from its fixed header).
    fn make_room(&mut self, max_packet_size: usize) {
        if self.read_start > 0 {
            self.read_buf.copy_within(self.read_start..self.read_end, 0);
            self.read_end -= self.read_start;
            self.read_start = 0;
        }
        let needed = match codec::parse_fixed_header_as(
            &self.read_buf[..self.read_end],
            max_packet_size,
            self.protocol,
        ) {
            Ok(Ok(header)) => header.frame_len(),
            _ => 0,
        };
        // Grow only for a frame larger than the buffer: the unread tail of a
        // partial packet fits after compaction, so steady traffic never reallocates.
        let target = needed.max(READ_CHUNK);
        if self.read_buf.len() < target {
            self.read_buf.resize(target, 0);
        }
    }

    /// Decode and handle every complete packet in the read buffer.
    fn process(&mut self, client: &Client, max_packet_size: usize) -> Result<(), Error> {
        // Out of `self` while its packets are handled, so that they can borrow
        // it while the reactor changes state; nothing else reads it meanwhile.
        let buf = std::mem::take(&mut self.read_buf);
        let result = self.process_buffer(client, max_packet_size, &buf);
        self.read_buf = buf;
        result
    }

    fn process_buffer(
        &mut self,
        client: &Client,
        max_packet_size: usize,
        buf: &[u8],
    ) -> Result<(), Error> {
        loop {
            let input = &buf[self.read_start..self.read_end];
            let (packet, used) = match codec::decode_as(input, max_packet_size, self.protocol) {
                Ok(Decoded::Packet(packet, used)) => (packet, used),
                Ok(Decoded::Incomplete(_)) => return Ok(()),
                Err(e) => {
                    log!(client, Level::Error, "invalid packet from the broker: {e}");
                    return Err(self.protocol_error(client, Error::from_codec(e)));
                }
            };
            crate::log::received(client, &packet);
            let name = crate::log::packet_name(&packet);
            let details = Details {
                reason_code: packet.reason_code().unwrap_or(0),
                properties: packet.properties(),
                reason_codes: match &packet {
                    Packet::UnsubAck(ack) => ack.reason_codes,
                    _ => &[],
                },
            };
            let handled = client.session().handle_packet(Instant::now(), packet);
            let incoming = match handled {
                Ok(incoming) => incoming,
                Err(e) => {
                    log!(client, Level::Error, "{name} from the broker: {e}");
                    return Err(self.protocol_error(client, e));
                }
            };
            match incoming {
                Some(Incoming::ConnAck(ack)) => {
                    self.read_start += used;
                    let error = if self.protocol == ProtocolVersion::V5 {
                        v5::connack_error(ack.reason_code)
                    } else {
                        ack.code().and_then(Error::from_connack)
                    };
                    let mut data = Data::new(Command::ConnAck);
                    data.return_code = ack.reason_code;
                    data.reason_code = ack.reason_code;
                    data.session_present = ack.session_present;
                    data.properties = ack.properties;
                    if let Some(error) = error {
                        let after = match ack.properties {
                            Some(props) => v5::after_refusal(ack.reason_code, props),
                            None => AfterRefusal::Retry,
                        };
                        run_callbacks(client, &data);
                        if let Some(conn) = self.conn.take() {
                            self.drop_connection(client, conn);
                        }
                        self.follow_refusal(client, after);
                        self.attempt_failed(client, error);
                        return Ok(());
                    }
                    self.connect_accepted(client, ack.session_present);
                    run_callbacks(client, &data);
                    let unresolved = client.session().take_unresolved();
                    for mid in unresolved {
                        if client.is_closed() {
                            break;
                        }
                        log!(
                            client,
                            Level::Warn,
                            "QoS 2 message {mid}: the broker lost its session after PUBREC; delivery unknown"
                        );
                        let mut data = Data::new(Command::PubComp);
                        data.mid = mid;
                        data.error = Some(Error::SessionLost);
                        run_callbacks(client, &data);
                    }
                    if client.is_closed() || self.conn.is_none() {
                        return Ok(());
                    }
                    continue;
                }
                Some(Incoming::Disconnect(disconnect)) => {
                    self.read_start += used;
                    let props = disconnect.properties.unwrap_or_default();
                    log!(
                        client,
                        Level::Warn,
                        "the broker sent DISCONNECT (reason code {:#04x}{})",
                        disconnect.reason_code,
                        props
                            .str_of(prop::REASON_STRING)
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    );
                    let after = v5::after_refusal(disconnect.reason_code, props);
                    self.follow_refusal(client, after);
                    if std::mem::take(&mut self.stop_after_refusal) {
                        self.keep_reconnecting = false;
                    }
                    self.close_with(
                        client,
                        Some(Error::ServerDisconnect),
                        disconnect.reason_code,
                        disconnect.properties,
                    );
                    return Ok(());
                }
                Some(incoming) => {
                    dispatch_incoming(client, &mut self.topic_buf, incoming, &details)
                }
                None => {}
            }
            self.read_start += used;
            if client.is_closed() || self.conn.is_none() {
                return Ok(());
            }
        }
    }

    /// The server broke the protocol: under MQTT 5 tell it why with a
    /// DISCONNECT before the connection closes. Returns `error`.
    fn protocol_error(&mut self, client: &Client, error: Error) -> Error {
        let Some(reason_code) = error.disconnect_reason() else {
            return error;
        };
        if client.session().refuse_server(reason_code) {
            let _ = self.flush(client);
        }
        if self.protocol == ProtocolVersion::V5 {
            self.sent_reason = reason_code;
        }
        error
    }

    /// What a refusal or a server DISCONNECT means for automatic reconnection.
    fn follow_refusal(&mut self, client: &Client, after: AfterRefusal) {
        match after {
            AfterRefusal::Retry => {}
            AfterRefusal::Stop => self.stop_after_refusal = true,
            AfterRefusal::Redirect { host, port } => {
                log!(client, Level::Warn, "the broker redirects to {host}");
                let mut options = lock(&client.inner.options);
                let port = port.unwrap_or(options.port);
                self.addrs = host
                    .parse::<std::net::IpAddr>()
                    .map(|ip| vec![SocketAddr::new(ip, port)])
                    .unwrap_or_default();
                self.next_addr = 0;
                self.failed_attempts = 0;
                options.host = Some(host);
                options.port = port;
            }
        }
    }

    fn connect_accepted(&mut self, client: &Client, session_present: bool) {
        log!(
            client,
            Level::Info,
            "connected (session present: {session_present})"
        );
        self.connect_deadline = None;
        self.failed_attempts = 0;
        self.async_attempt = false;
        client.set_attempt_in_progress(false);
        if let Some(conn) = self.conn.as_mut() {
            conn.accepted = true;
        }
        self.keep_reconnecting = lock(&client.inner.options).reconnect.is_some();
        if let Some(attempt) = self.attempt.take() {
            finish_attempt(client, attempt, Ok(session_present));
        }
    }

    fn flush(&mut self, client: &Client) -> Result<(), Error> {
        let Some(conn) = self.conn.as_mut().filter(|c| c.established && c.writable) else {
            return Ok(());
        };
        let mut session = client.session();
        loop {
            let pending = session.pending_transmit();
            if pending.is_empty() && !conn.transport.has_buffered_output() {
                return Ok(());
            }
            match conn.transport.write(pending) {
                // TLS: the records still buffered are written out.
                Ok(0) if pending.is_empty() => return Ok(()),
                Ok(0) => return Err(Error::ConnectionLost),
                Ok(n) => {
                    crate::log::sent(client, pending, n, self.protocol);
                    session.consume_transmit(Instant::now(), n);
                    if client.inner.publish_waiters.load(Ordering::SeqCst) > 0 {
                        client.inner.drained.notify_all();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.writable = false;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    return Err(Error::ConnectionLost);
                }
                Err(e) => return Err(io_error(&e, Error::Io)),
            }
        }
    }

    fn drop_connection(&mut self, client: &Client, mut conn: Connection) {
        let _ = self.poll.registry().deregister(conn.transport.tcp_mut());
        let _ = conn.transport.tcp().shutdown(Shutdown::Both);
        self.read_start = 0;
        self.read_end = 0;
        if conn.established {
            client.session().connection_lost(Instant::now());
            // A publish waiting for room learns that there is no connection.
            client.inner.drained.notify_all();
        }
    }

    /// End the current connection (`reason` is `None` for a requested disconnect),
    /// report it, and arm a reconnection where that is the policy.
    fn close(&mut self, client: &Client, reason: Option<Error>) -> Error {
        self.close_with(client, reason, 0, None)
    }

    /// `close`, reporting an MQTT 5 reason code and properties in the
    /// DISCONNECT callback's data (0: the one we sent for a protocol error, if
    /// any).
    fn close_with(
        &mut self,
        client: &Client,
        reason: Option<Error>,
        reason_code: u8,
        properties: Option<Properties<'_>>,
    ) -> Error {
        let error = reason.unwrap_or(Error::NotConnected);
        let Some(mut conn) = self.conn.take() else {
            self.connect_deadline = None;
            return error;
        };
        let accepted = conn.accepted;
        if reason.is_none() {
            // Let the DISCONNECT reach the broker before the socket goes away.
            conn.transport.close_notify();
            let _ = conn.transport.tcp().shutdown(Shutdown::Write);
            let mut sink = [0u8; 512];
            let mut stream = conn.transport.tcp();
            while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
        }
        self.drop_connection(client, conn);
        if !accepted {
            self.attempt_failed(client, error);
            return error;
        }
        self.connect_deadline = None;
        match reason {
            None => log!(client, Level::Info, "disconnected"),
            Some(e) => log!(client, Level::Warn, "connection lost: {e}"),
        }
        match reason {
            None => self.keep_reconnecting = false,
            Some(_) if self.keep_reconnecting => self.schedule_reconnect(client),
            Some(_) => {}
        }
        let mut data = Data::new(Command::Disconnect);
        data.error = reason;
        data.reason_code = match reason_code {
            0 => std::mem::take(&mut self.sent_reason),
            code => code,
        };
        data.properties = properties;
        run_callbacks(client, &data);
        error
    }

    fn report_disconnect(&mut self, client: &Client, reason: Option<Error>) {
        let mut data = Data::new(Command::Disconnect);
        data.error = reason;
        data.reason_code = std::mem::take(&mut self.sent_reason);
        run_callbacks(client, &data);
    }

    /// Time until the next deadline the reactor must act on (`None`: nothing is
    /// due until an event arrives); zero when work is already waiting.
    pub fn next_timeout(&self, client: &Client) -> Option<Duration> {
        if client.wake_is_pending()
            || self.conn.as_ref().is_some_and(|c| c.readable) && !self.write_backlogged(client)
        {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        [
            client.session().poll_timeout(),
            self.connect_deadline,
            self.reconnect_at,
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|d| d.saturating_duration_since(now))
    }

    fn write_backlogged(&self, client: &Client) -> bool {
        client.session().pending_transmit().len() >= MAX_UNWRITTEN
    }

    /// Whether bytes wait for the socket to become writable.
    pub fn wants_write(&self, client: &Client) -> bool {
        self.conn
            .as_ref()
            .is_some_and(|c| c.established && !c.writable)
            && (self
                .conn
                .as_ref()
                .is_some_and(|c| c.transport.has_buffered_output())
                || !client.session().pending_transmit().is_empty())
    }

    /// Close without callbacks: the client is being freed.
    pub fn shutdown(&mut self, client: &Client) {
        if let Some(mut conn) = self.conn.take() {
            let _ = self.flush_final(client, &mut conn);
            self.drop_connection(client, conn);
        }
        self.reconnect_at = None;
        self.keep_reconnecting = false;
    }

    fn flush_final(&self, client: &Client, conn: &mut Connection) -> io::Result<()> {
        if !conn.established {
            return Ok(());
        }
        let mut session = client.session();
        let n = conn.transport.write(session.pending_transmit())?;
        session.consume_transmit(Instant::now(), n);
        Ok(())
    }
}

fn is_final_refusal(error: Error) -> bool {
    matches!(
        error,
        Error::RefusedProtocolVersion
            | Error::RefusedIdentifier
            | Error::RefusedBadCredentials
            | Error::RefusedNotAuthorized
    )
}

fn finish_attempt(client: &Client, attempt: u64, result: Result<bool, Error>) {
    let mut wait = lock(&client.inner.connect_wait);
    if wait.in_progress == Some(attempt) {
        wait.in_progress = None;
        wait.finished = Some((attempt, result));
        client.inner.connect_done.notify_all();
    }
}

/// What the packet behind an `Incoming` said beyond it (MQTT 5).
struct Details<'a> {
    reason_code: u8,
    properties: Option<Properties<'a>>,
    /// UNSUBACK's reason codes.
    reason_codes: &'a [u8],
}

fn dispatch_incoming(
    client: &Client,
    topic_buf: &mut Vec<u8>,
    incoming: Incoming<'_>,
    details: &Details<'_>,
) {
    let ack_data = |command: Command, mid: u16| {
        let mut data = Data::new(command);
        data.mid = mid;
        data.reason_code = details.reason_code;
        data.properties = details.properties;
        data
    };
    match incoming {
        Incoming::Publish { mid, message } => {
            dispatch_message(client, topic_buf, Data::new(Command::Publish), mid, message)
        }
        Incoming::PubRel { mid, message } => {
            dispatch_message(
                client,
                topic_buf,
                ack_data(Command::PubRel, mid),
                mid,
                message.as_ref().map(|m| m.as_message()),
            );
            if let Some(message) = message {
                // The callbacks returned: now it counts as delivered (a store
                // records that before PUBCOMP goes).
                let mut session = client.session();
                if session.delivered(mid).is_err() {
                    drop(session);
                    log!(
                        client,
                        Level::Error,
                        "QoS 2 message {mid}: the store failed to record its delivery"
                    );
                    session = client.session();
                }
                session.recycle(message);
            }
        }
        Incoming::PubAck(mid) => {
            let mut data = ack_data(Command::PubAck, mid);
            if details.reason_code >= 0x80 {
                data.error = Some(Error::RefusedByBroker);
            }
            run_callbacks(client, &data);
        }
        Incoming::PubRec(mid) => {
            run_callbacks(client, &ack_data(Command::PubRec, mid));
            // A refused QoS 2 message ends here: its PUBCOMP callback says so.
            if details.reason_code >= 0x80 && !client.is_closed() {
                let mut data = ack_data(Command::PubComp, mid);
                data.error = Some(Error::RefusedByBroker);
                run_callbacks(client, &data);
            }
        }
        Incoming::PubComp(mid) => run_callbacks(client, &ack_data(Command::PubComp, mid)),
        Incoming::UnsubAck(mid) => {
            let mut data = ack_data(Command::UnsubAck, mid);
            data.reason_codes = details.reason_codes;
            run_callbacks(client, &data);
        }
        Incoming::SubAck { mid, return_codes } => {
            let mut data = ack_data(Command::SubAck, mid);
            data.granted_qos = return_codes;
            data.reason_codes = return_codes;
            run_callbacks(client, &data);
        }
        Incoming::PingResp => run_callbacks(client, &Data::new(Command::PingResp)),
        Incoming::Auth(_) => run_callbacks(client, &ack_data(Command::Auth, 0)),
        // Handled by the reactor, which closes the connection.
        Incoming::ConnAck(_) | Incoming::Disconnect(_) => {}
    }
}

fn dispatch_message<'a>(
    client: &Client,
    topic_buf: &'a mut Vec<u8>,
    mut data: Data<'a>,
    mid: u16,
    message: Option<Message<'a>>,
) {
    data.mid = mid;
    let Some(m) = message else {
        run_callbacks(client, &data);
        return;
    };
    topic_buf.clear();
    if m.topic.is_empty() {
        // The PUBLISH used a topic alias the session resolved.
        let alias = m
            .properties
            .and_then(|p| p.u32_of(prop::TOPIC_ALIAS))
            .unwrap_or(0) as u16;
        let session = client.session();
        topic_buf.extend_from_slice(session.incoming_alias_topic(alias).unwrap_or("").as_bytes());
    } else {
        topic_buf.extend_from_slice(m.topic.as_bytes());
    }
    topic_buf.push(0);
    // The codec rejects topics containing U+0000, so this cannot fail.
    let Ok(topic_c) = CStr::from_bytes_with_nul(topic_buf) else {
        return;
    };
    let Ok(topic) = topic_c.to_str() else {
        return;
    };
    data.message = Some(MessageView {
        topic,
        topic_c,
        payload: m.payload,
        qos: m.qos,
        retain: m.retain,
        dup: m.dup,
        mid: m.mid,
        properties: m.properties,
    });
    run_callbacks(client, &data);
}

fn run_callbacks(client: &Client, data: &Data<'_>) {
    if client.inner.closed.load(Ordering::Acquire) {
        return;
    }
    let _guard = client.enter_callback();
    client.inner.dispatcher.dispatch(client, data);
}

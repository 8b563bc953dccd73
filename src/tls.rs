//! TLS (feature `tls`): configuration parsed once, when it is set, and a
//! non-blocking rustls client stream the reactor drives like the plain socket.
//!
//! Everything that can be wrong with a CA, certificate or key is found by
//! [`TlsSetup::new`], so the error reaches the caller of `set_tls`; the
//! reactor only meets handshake and record errors, mapped by [`error_from_tls`].

use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};

use crate::{Error, Result};

/// Where a PEM document comes from.
#[derive(Clone, Copy, Debug)]
pub enum PemSource<'a> {
    /// A file, read when the options are set.
    File(&'a Path),
    /// PEM text in memory.
    Pem(&'a [u8]),
}

/// TLS settings for [`Client::set_tls`](crate::Client::set_tls). Everything is
/// copied and parsed by that call.
#[derive(Clone, Copy, Debug, Default)]
pub struct TlsOptions<'a> {
    /// CA certificates (one or more) that the broker's certificate must chain
    /// to; `None`: the system trust store.
    pub ca: Option<PemSource<'a>>,
    /// Client certificate chain (leaf first), for brokers that require one.
    pub cert: Option<PemSource<'a>>,
    /// The private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PemSource<'a>>,
    /// The name sent as SNI and verified against the certificate; `None`: the
    /// host given to `connect`.
    pub server_name: Option<&'a str>,
    /// ALPN protocols offered, in order of preference.
    pub alpn: &'a [&'a str],
    /// Accept any server certificate (still checking the handshake
    /// signatures). For tests only: it removes all protection against an
    /// active attacker.
    pub insecure_skip_verify: bool,
}

/// A parsed, immutable TLS configuration shared by every connection attempt.
pub(crate) struct TlsSetup {
    config: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSetup")
            .field("server_name", &self.server_name)
            .field("alpn", &self.config.alpn_protocols)
            .finish_non_exhaustive()
    }
}

fn read_pem(source: PemSource<'_>, error: Error) -> Result<Vec<u8>> {
    match source {
        PemSource::File(path) => std::fs::read(path).map_err(|_| error),
        PemSource::Pem(bytes) => Ok(bytes.to_vec()),
    }
}

fn certificates(source: PemSource<'_>, error: Error) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read_pem(source, error)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| error)?;
    if certs.is_empty() {
        return Err(error);
    }
    Ok(certs)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsSetup {
    pub(crate) fn new(options: &TlsOptions<'_>) -> Result<TlsSetup> {
        let server_name = match options.server_name {
            None => None,
            Some(name) => {
                Some(ServerName::try_from(name.to_owned()).map_err(|_| Error::InvalidArgument)?)
            }
        };
        let mut alpn = Vec::with_capacity(options.alpn.len());
        for protocol in options.alpn {
            if protocol.is_empty() || protocol.len() > 255 {
                return Err(Error::InvalidArgument);
            }
            alpn.push(protocol.as_bytes().to_vec());
        }
        let client_auth = match (options.cert, options.key) {
            (None, None) => None,
            (Some(_), None) => return Err(Error::TlsKey),
            (None, Some(_)) => return Err(Error::TlsCert),
            (Some(cert), Some(key)) => {
                let chain = certificates(cert, Error::TlsCert)?;
                let key_pem = read_pem(key, Error::TlsKey)?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| Error::TlsKey)?;
                Some((chain, key))
            }
        };

        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|_| Error::Internal)?;
        let builder = if options.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(
                    provider.signature_verification_algorithms,
                )))
        } else {
            let mut roots = RootCertStore::empty();
            match options.ca {
                Some(ca) => {
                    for cert in certificates(ca, Error::TlsCa)? {
                        roots.add(cert).map_err(|_| Error::TlsCa)?;
                    }
                }
                None => {
                    let native = rustls_native_certs::load_native_certs();
                    roots.add_parsable_certificates(native.certs);
                    if roots.is_empty() {
                        return Err(Error::TlsCa);
                    }
                }
            }
            builder.with_root_certificates(roots)
        };
        let mut config = match client_auth {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => {
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| match e {
                        rustls::Error::InvalidCertificate(_) => Error::TlsCert,
                        _ => Error::TlsKey,
                    })?
            }
        };
        config.alpn_protocols = alpn;
        Ok(TlsSetup {
            config: Arc::new(config),
            server_name,
        })
    }

    /// Wrap a connecting TCP stream; `host` is the name given to `connect`,
    /// used when no server name was set.
    pub(crate) fn connect(&self, host: &str, tcp: TcpStream) -> Result<TlsStream> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => ServerName::try_from(host.to_owned()).map_err(|_| Error::TlsHostname)?,
        };
        let tls = ClientConnection::new(self.config.clone(), name).map_err(|_| Error::Internal)?;
        Ok(TlsStream {
            tcp,
            tls,
            inbuf: Vec::new(),
            in_start: 0,
            in_end: 0,
            socket_short: false,
            packet_left: 0,
        })
    }
}

/// The verifier of `insecure_skip_verify`: any certificate, but the handshake
/// signatures must still be valid for the certificate presented.
#[derive(Debug)]
struct AcceptAnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// The error reported for a failed handshake or a TLS failure later on.
pub(crate) fn error_from_tls(e: &rustls::Error) -> Error {
    match e {
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => Error::TlsHostname,
        rustls::Error::InvalidCertificate(_) => Error::TlsNotTrusted,
        _ => Error::TlsHandshake,
    }
}

/// The TLS error an I/O error of [`TlsStream`] carries, if any.
pub(crate) fn error_from_io(e: &io::Error) -> Option<Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .map(error_from_tls)
}

fn tls_io_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Ciphertext taken from the socket per `recv`: several full records.
/// rustls reading the socket itself asks for at most one record (about
/// 16.4 KiB) and, whenever its buffer ran empty, for 4 KiB, then 8, 12, 16
/// (growing, and reallocating, its buffer each time): a 16-KiB message took 1 to
/// 5 `recvfrom` calls.
const TLS_READ_AHEAD: usize = 64 * 1024;

/// A rustls client connection over a non-blocking TCP stream.
pub(crate) struct TlsStream {
    pub(crate) tcp: TcpStream,
    tls: ClientConnection,
    /// Ciphertext read from the socket, not yet handed to rustls:
    /// `inbuf[in_start..in_end]`. Allocated at the first read after the
    /// handshake.
    inbuf: Vec<u8>,
    in_start: usize,
    in_end: usize,
    /// The last socket read filled less than `inbuf`: the socket was empty
    /// then, so the next edge reports new bytes (epoll(7)).
    socket_short: bool,
    /// Bytes of the MQTT packet being handed to rustls by
    /// [`write_packets`](Self::write_packets) still to come: 0 at a packet
    /// boundary.
    packet_left: usize,
}

/// The most plaintext one TLS record carries.
const MAX_FRAGMENT: usize = 16 * 1024;

/// Length of the MQTT packet at the start of `data` (fixed header
/// included), from its fixed header; `None` if that is incomplete or
/// malformed.
fn frame_len(data: &[u8]) -> Option<usize> {
    use crate::protocol::codec::{ProtocolVersion, parse_fixed_header_as};
    let header = parse_fixed_header_as(data, usize::MAX, ProtocolVersion::V5).ok()?;
    header.ok().map(|h| h.frame_len())
}

/// How many bytes of `data` (whole MQTT packets, of which the first `left`
/// bytes end a packet begun earlier) to hand to rustls in one call, so that
/// its records end where a packet ends: the rest of a packet begun earlier;
/// else as many whole packets as fit in one record; else one packet larger
/// than a record (its last record short). Bytes that do not parse as MQTT
/// go as they are (in one call).
fn record_chunk(data: &[u8], left: usize) -> usize {
    if left > 0 {
        return left.min(data.len());
    }
    let mut end = 0;
    while end < data.len() {
        let Some(len) = frame_len(&data[end..]) else {
            return data.len();
        };
        if end > 0 && end + len > MAX_FRAGMENT {
            break;
        }
        end += len;
        if end >= MAX_FRAGMENT {
            break;
        }
    }
    end.min(data.len())
}

/// Bytes from `data[n..]` to the next packet boundary, the first `left`
/// bytes of `data` ending a packet begun earlier.
fn left_after(data: &[u8], left: usize, n: usize) -> usize {
    let mut boundary = left;
    while boundary < n {
        match frame_len(&data[boundary..]) {
            Some(len) => boundary += len,
            None => return 0,
        }
    }
    boundary - n
}

/// What one handshake step achieved.
pub(crate) enum Handshake {
    /// Finished: application data may flow.
    Done,
    /// Waiting for the socket (readable or writable).
    Blocked,
    Failed(Error),
}

impl TlsStream {
    /// Drive the handshake as far as the socket allows. `readable` and
    /// `writable` are the edge-triggered readiness flags, cleared here on
    /// `WouldBlock`.
    pub(crate) fn handshake(&mut self, readable: &mut bool, writable: &mut bool) -> Handshake {
        loop {
            if !self.tls.is_handshaking() {
                return Handshake::Done;
            }
            let mut progressed = false;
            if *writable && self.tls.wants_write() {
                match self.tls.write_tls(&mut self.tcp) {
                    Ok(_) => progressed = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => *writable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => progressed = true,
                    Err(_) => return Handshake::Failed(Error::TlsHandshake),
                }
            }
            if *readable && self.tls.wants_read() {
                match self.tls.read_tls(&mut self.tcp) {
                    // The peer closed mid-handshake (e.g. not a TLS listener).
                    Ok(0) => return Handshake::Failed(Error::TlsHandshake),
                    Ok(_) => {
                        progressed = true;
                        if let Err(e) = self.tls.process_new_packets() {
                            // Tell the peer why (the alert rustls queued), best effort.
                            let _ = self.tls.write_tls(&mut self.tcp);
                            return Handshake::Failed(error_from_tls(&e));
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => *readable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => progressed = true,
                    Err(_) => return Handshake::Failed(Error::TlsHandshake),
                }
            }
            if !progressed {
                return Handshake::Blocked;
            }
        }
    }

    /// Decrypted bytes into `buf`: `Ok(0)` at the end of the stream (also an
    /// unclean one), `WouldBlock` once the socket is drained, rustls errors as
    /// `InvalidData` carrying the `rustls::Error` (see [`error_from_io`]).
    ///
    /// The socket is read `TLS_READ_AHEAD` bytes at a time into `inbuf`,
    /// and rustls is fed from there (a copy in memory instead of a system
    /// call per record or per 4 KiB).
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            // No plaintext buffered: decrypt more, from the socket if
            // nothing read ahead is left.
            if self.in_start == self.in_end {
                if self.inbuf.is_empty() {
                    self.inbuf = vec![0; TLS_READ_AHEAD];
                }
                let n = self.tcp.read(&mut self.inbuf)?;
                self.in_start = 0;
                self.in_end = n;
                self.socket_short = n < self.inbuf.len();
                if n == 0 {
                    // The end of the stream: rustls tells a close_notify
                    // (Ok(0) above) from an unclean end (UnexpectedEof).
                    self.tls.read_tls(&mut io::empty())?;
                    self.tls.process_new_packets().map_err(tls_io_error)?;
                    continue;
                }
            }
            let mut ahead = &self.inbuf[self.in_start..self.in_end];
            let taken = self.tls.read_tls(&mut ahead)?;
            if taken == 0 {
                // close_notify received: rustls takes nothing more.
                self.in_start = self.in_end;
                return Ok(0);
            }
            self.in_start += taken;
            self.tls.process_new_packets().map_err(tls_io_error)?;
        }
    }

    /// After a read that returned `n` bytes into a buffer of `space`: all
    /// that the socket held has been decrypted and handed out (the last
    /// socket read was short, nothing read ahead is left, and rustls filled
    /// less than the buffer, so it holds no more plaintext). The next edge
    /// then reports new bytes, and the read that would only say `WouldBlock`
    /// can be skipped.
    pub(crate) fn is_drained(&self, short: bool) -> bool {
        short && self.socket_short && self.in_start == self.in_end
    }

    /// Encrypt as much of `data` as rustls buffers (up to its 64 KiB limit)
    /// and write ciphertext until the socket would block. Returns how many
    /// bytes of `data` were taken; `WouldBlock` when none could be.
    pub(crate) fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.flush_tls()?;
        if data.is_empty() {
            return Ok(0);
        }
        let n = self.tls.writer().write(data)?;
        match self.flush_tls() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
            _ if n == 0 => return Err(io::ErrorKind::WouldBlock.into()),
            _ => {}
        }
        Ok(n)
    }

    /// [`write`](Self::write) for the session's outbox (whole MQTT packets):
    /// the plaintext goes to rustls in pieces that end where packets end, so
    /// that no TLS record carries the end of one large packet and the start
    /// of the next. Small packets share records (up to a record's worth) and
    /// a `writev` (up to rustls's 64-KiB buffer); a packet of a record or
    /// more goes out in its own `writev`: a 16-KiB PUBLISH is a full record
    /// and a short one, as OpenSSL's `SSL_write` of the packet makes it.
    /// Batched four 16-KiB records to a `writev`, the same packets cost
    /// mosquitto 4-8 us more CPU per message at QoS 1, and its CPU is what
    /// bounds the rate (README, "The 16-KiB TLS rows").
    pub(crate) fn write_packets(&mut self, data: &[u8]) -> io::Result<usize> {
        self.flush_tls()?;
        let mut taken = 0;
        while taken < data.len() {
            let rest = &data[taken..];
            let chunk = record_chunk(rest, self.packet_left);
            let n = match self.tls.writer().write(&rest[..chunk]) {
                Ok(n) => n,
                Err(_) if taken > 0 => break,
                Err(e) => return Err(e),
            };
            self.packet_left = left_after(rest, self.packet_left, n);
            taken += n;
            if n < chunk || chunk >= MAX_FRAGMENT {
                // rustls's buffer is full; or a packet of a record or more
                // was taken: it goes out on its own.
                break;
            }
        }
        if data.is_empty() {
            return Ok(0);
        }
        match self.flush_tls() {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
            _ if taken == 0 => return Err(io::ErrorKind::WouldBlock.into()),
            _ => {}
        }
        Ok(taken)
    }

    /// Write buffered ciphertext until none is left or the socket would block.
    pub(crate) fn flush_tls(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            if self.tls.write_tls(&mut self.tcp)? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }

    /// Ciphertext waits for the socket.
    pub(crate) fn has_buffered_output(&self) -> bool {
        self.tls.wants_write()
    }

    /// Queue close_notify and try to write it (best effort, never blocks).
    pub(crate) fn close_notify(&mut self) {
        self.tls.send_close_notify();
        let _ = self.flush_tls();
    }
}

/// For [`crate::net::websocket::WsStream`] over TLS (`wss://`).
impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        TlsStream::read(self, buf)
    }
}

impl Write for TlsStream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        TlsStream::write(self, data)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_tls()
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_FRAGMENT, frame_len, left_after, record_chunk};

    /// An MQTT packet of `len` bytes in all (fixed header included).
    fn packet(len: usize) -> Vec<u8> {
        let mut header_len = 2;
        while frame_len(&encode(len - header_len)) != Some(len) {
            header_len += 1;
        }
        let mut p = encode(len - header_len);
        p.resize(len, 0);
        p
    }

    fn encode(remaining: usize) -> Vec<u8> {
        let mut out = vec![0x30];
        let mut rest = remaining;
        loop {
            let byte = (rest & 0x7f) as u8;
            rest >>= 7;
            out.push(if rest > 0 { byte | 0x80 } else { byte });
            if rest == 0 {
                return out;
            }
        }
    }

    #[test]
    fn records_end_with_packets() {
        assert_eq!(frame_len(&[0x30, 0x00]), Some(2));
        assert_eq!(frame_len(&[0x30, 0x80]), None);
        assert_eq!(frame_len(&encode(16404)), Some(1 + 3 + 16404));

        let big = packet(16408);
        let small = packet(64);
        // Two large packets: one each.
        let data = [big.clone(), big.clone()].concat();
        assert_eq!(record_chunk(&data, 0), 16408);
        assert_eq!(left_after(&data, 0, 16408), 0);
        assert_eq!(left_after(&data, 0, 10000), 6408);
        assert_eq!(record_chunk(&data[10000..], 6408), 6408);
        // Small packets share a record, up to a record's worth, and never
        // the one with the start of a large packet.
        let many: Vec<u8> = std::iter::repeat_n(small.clone(), 300).flatten().collect();
        assert_eq!(record_chunk(&many, 0), MAX_FRAGMENT / 64 * 64);
        let mixed = [small.clone(), small, big].concat();
        assert_eq!(record_chunk(&mixed, 0), 128);
        assert_eq!(record_chunk(&mixed[128..], 0), 16408);
        assert_eq!(left_after(&mixed, 0, 100), 28);
        // Not MQTT: all of it.
        assert_eq!(record_chunk(&[0x30, 0xff, 0xff, 0xff, 0xff], 0), 5);
    }
}

//! The byte stream under MQTT: plain TCP (the fast path), TLS over it, or
//! WebSocket frames over either. Bytes in, bytes out; nothing here knows MQTT.

use std::io::{self, Read, Write};

use mio::net::TcpStream;

use crate::Error;
use crate::net::websocket::{WsStream, ws_error};

pub(crate) enum Transport {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<crate::tls::TlsStream>),
    /// `ws://`: WebSocket frames over TCP (after the upgrade).
    Ws(Box<WsStream<TcpStream>>),
    /// `wss://`: WebSocket frames over TLS (after the upgrade).
    #[cfg(feature = "tls")]
    Wss(Box<WsStream<crate::tls::TlsStream>>),
}

impl Transport {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(stream) => stream,
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => &tls.tcp,
            Transport::Ws(ws) => ws.get_ref(),
            #[cfg(feature = "tls")]
            Transport::Wss(ws) => &ws.get_ref().tcp,
        }
    }

    pub fn tcp_mut(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(stream) => stream,
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => &mut tls.tcp,
            Transport::Ws(ws) => ws.get_mut(),
            #[cfg(feature = "tls")]
            Transport::Wss(ws) => &mut ws.get_mut().tcp,
        }
    }

    #[inline]
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.read(buf),
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.read(buf),
            Transport::Ws(ws) => ws.read(buf),
            #[cfg(feature = "tls")]
            Transport::Wss(ws) => ws.read(buf),
        }
    }

    /// Take bytes of `data`; with empty `data`, push out what is buffered
    /// (TLS records, WebSocket frames): `Ok(0)` once done, `WouldBlock` if the
    /// socket is full.
    #[inline]
    pub fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.write(data),
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.write(data),
            Transport::Ws(ws) => ws_write(ws, data),
            #[cfg(feature = "tls")]
            Transport::Wss(ws) => ws_write(ws, data),
        }
    }

    /// [`write`](Self::write) for a stream of whole MQTT packets (the
    /// session's outbox): over TLS, records then end where packets end.
    #[inline]
    pub fn write_packets(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.write_packets(data),
            _ => self.write(data),
        }
    }

    pub fn is_plain(&self) -> bool {
        matches!(self, Transport::Plain(_))
    }

    /// After a read that returned bytes (`short`: fewer than asked): the
    /// socket is known to hold no more, so the next edge will report new
    /// bytes (epoll(7)). TCP: a short read took all it held; WebSocket over
    /// TCP: the same, once the frames it read were all handed out; TLS: a
    /// short read from the socket, all of it decrypted and handed out. Never
    /// for WebSocket over TLS.
    #[inline]
    pub fn drained(&self, short: bool) -> bool {
        match self {
            Transport::Plain(_) => short,
            Transport::Ws(ws) => ws.is_drained(),
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.is_drained(short),
            #[cfg(feature = "tls")]
            Transport::Wss(_) => false,
        }
    }

    /// Bytes already taken from the session that still wait for the socket
    /// (TLS records, WebSocket frames); never for plain TCP.
    #[inline]
    pub fn has_buffered_output(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.has_buffered_output(),
            Transport::Ws(ws) => ws.has_pending_output(),
            #[cfg(feature = "tls")]
            Transport::Wss(ws) => ws.has_pending_output() || ws.get_ref().has_buffered_output(),
        }
    }

    /// Announce a requested close (TLS close_notify, WebSocket close frame),
    /// best effort.
    pub fn close_notify(&mut self) {
        match self {
            Transport::Plain(_) => {}
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.close_notify(),
            Transport::Ws(ws) => {
                let _ = ws.close();
            }
            #[cfg(feature = "tls")]
            Transport::Wss(ws) => {
                let _ = ws.close();
                ws.get_mut().close_notify();
            }
        }
    }
}

fn ws_write<S: Read + Write>(ws: &mut WsStream<S>, data: &[u8]) -> io::Result<usize> {
    if data.is_empty() {
        ws.flush()?;
        return Ok(0);
    }
    ws.write(data)
}

/// The error to report for an I/O error: the TLS or WebSocket error it
/// carries, if any, else `default`.
pub(crate) fn io_error(e: &io::Error, default: Error) -> Error {
    if let Some(ws) = ws_error(e) {
        return ws.into();
    }
    #[cfg(feature = "tls")]
    if let Some(tls) = crate::tls::error_from_io(e) {
        return tls;
    }
    default
}

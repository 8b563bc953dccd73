//! The byte stream under MQTT: plain TCP (the fast path) or TLS over it.
//! Bytes in, bytes out; nothing here knows MQTT.

use std::io::{self, Read, Write};

use mio::net::TcpStream;

use crate::Error;

pub(crate) enum Transport {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<crate::tls::TlsStream>),
}

impl Transport {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(stream) => stream,
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => &tls.tcp,
        }
    }

    pub fn tcp_mut(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(stream) => stream,
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => &mut tls.tcp,
        }
    }

    #[inline]
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.read(buf),
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.read(buf),
        }
    }

    #[inline]
    pub fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(stream) => stream.write(data),
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.write(data),
        }
    }

    pub fn is_plain(&self) -> bool {
        matches!(self, Transport::Plain(_))
    }

    /// Bytes already taken from the session that still wait for the socket
    /// (TLS records); never for plain TCP.
    #[inline]
    pub fn has_buffered_output(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.has_buffered_output(),
        }
    }

    /// Announce a requested close (TLS close_notify), best effort.
    pub fn close_notify(&mut self) {
        match self {
            Transport::Plain(_) => {}
            #[cfg(feature = "tls")]
            Transport::Tls(tls) => tls.close_notify(),
        }
    }
}

/// The error to report for an I/O error: the TLS error it carries, if any,
/// else `default`.
pub(crate) fn io_error(e: &io::Error, default: Error) -> Error {
    #[cfg(feature = "tls")]
    if let Some(tls) = crate::tls::error_from_io(e) {
        return tls;
    }
    let _ = e;
    default
}

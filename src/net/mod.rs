//! Network paths other than a direct TCP (or TLS) connection, as sans-IO pieces
//! the transport layer drives: broker and proxy URIs ([`uri`]), proxy handshakes
//! ([`proxy`]: HTTP CONNECT and SOCKS5) and the WebSocket client ([`websocket`]:
//! RFC 6455 upgrade and framing).
//!
//! None of them does I/O: each takes the bytes that arrived and hands back the
//! bytes to send, so the same code runs under the mio reactor, over TLS, in the
//! blocking tests and in the fuzzer. The reactor drives them between TCP
//! connect and MQTT CONNECT (`reactor/connection.rs`: proxy, then TLS, then the
//! WebSocket upgrade); `Client::set_proxy` and `Client::connect_uri` (and their
//! C twins) select them. Public (hidden) so that the integration tests and
//! fuzz targets reach it.

pub mod http;
pub mod proxy;
pub mod uri;
pub mod websocket;

/// What a handshake (proxy or WebSocket upgrade) made of the bytes it was given.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// More bytes are needed (and the handshake's output may have new ones to send).
    Continue,
    /// The handshake is over; these bytes arrived after the peer's reply and
    /// belong to the next layer.
    Done(Vec<u8>),
}

/// Standard base64 with padding (RFC 4648 §4), for `Sec-WebSocket-Key` and
/// HTTP Basic credentials: the only two places the crate needs it.
pub(crate) fn base64_encode(input: &[u8], out: &mut String) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextets = [n >> 18, n >> 12, n >> 6, n];
        for (i, s) in sextets.iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[(s & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::base64_encode;

    fn b64(input: &[u8]) -> String {
        let mut s = String::new();
        base64_encode(input, &mut s);
        s
    }

    #[test]
    fn base64_rfc4648_vectors() {
        // RFC 4648 §10.
        assert_eq!(b64(b""), "");
        assert_eq!(b64(b"f"), "Zg==");
        assert_eq!(b64(b"fo"), "Zm8=");
        assert_eq!(b64(b"foo"), "Zm9v");
        assert_eq!(b64(b"foob"), "Zm9vYg==");
        assert_eq!(b64(b"fooba"), "Zm9vYmE=");
        assert_eq!(b64(b"foobar"), "Zm9vYmFy");
        assert_eq!(b64(&[0xff, 0xfe, 0xfd]), "//79");
    }
}

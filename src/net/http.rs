//! The one piece of HTTP/1.1 the crate reads: a response head (status line and
//! header fields, up to the empty line), for the CONNECT reply of an HTTP proxy
//! and the WebSocket upgrade reply. Bounded: a head larger than
//! [`MAX_HEAD`] is an error, so a hostile peer cannot make the client buffer
//! without end.

/// The largest response head accepted, empty line included.
pub const MAX_HEAD: usize = 8192;

/// Why a response head was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// No empty line within [`MAX_HEAD`] bytes.
    TooLarge,
    /// Not `HTTP/1.x SSS ...`, a header line without `:`, or bytes that are not text.
    Malformed,
}

/// Accumulates bytes until the head is complete.
#[derive(Debug, Default)]
pub struct HeadReader {
    buf: Vec<u8>,
}

/// A complete response head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// Field names lower-cased, values trimmed, in order of arrival.
    pub headers: Vec<(String, String)>,
    /// Bytes that came after the head: they belong to the next layer.
    pub surplus: Vec<u8>,
}

impl Head {
    /// The value of the first field named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The values of every field named `name`, comma-separated lists split.
    pub fn tokens<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }
}

impl HeadReader {
    /// Feed received bytes; `Some(head)` once the empty line has arrived.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<Head>, HeadError> {
        // Search from just before the new bytes: the terminator may straddle reads.
        let from = self.buf.len().saturating_sub(3);
        self.buf.extend_from_slice(bytes);
        let end = match self.buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            Some(i) => from + i + 4,
            None if self.buf.len() >= MAX_HEAD => return Err(HeadError::TooLarge),
            None => return Ok(None),
        };
        if end > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        let surplus = self.buf[end..].to_vec();
        let text = std::str::from_utf8(&self.buf[..end - 4]).map_err(|_| HeadError::Malformed)?;
        let mut lines = text.split("\r\n");
        let status = parse_status_line(lines.next().unwrap_or(""))?;
        let mut headers = Vec::new();
        for line in lines {
            let (name, value) = line.split_once(':').ok_or(HeadError::Malformed)?;
            // RFC 9112 §5.1: no whitespace in or before the name; no obs-fold.
            if name.is_empty() || name.bytes().any(|b| b <= b' ' || b == 0x7f) {
                return Err(HeadError::Malformed);
            }
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
        self.buf = Vec::new();
        Ok(Some(Head {
            status,
            headers,
            surplus,
        }))
    }
}

fn parse_status_line(line: &str) -> Result<u16, HeadError> {
    let rest = line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))
        .ok_or(HeadError::Malformed)?;
    let code = rest.get(..3).ok_or(HeadError::Malformed)?;
    if !code.bytes().all(|b| b.is_ascii_digit())
        || !matches!(rest.as_bytes().get(3), None | Some(b' '))
    {
        return Err(HeadError::Malformed);
    }
    let status: u16 = code.parse().map_err(|_| HeadError::Malformed)?;
    if !(100..=599).contains(&status) {
        return Err(HeadError::Malformed);
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_in_one_read_with_surplus() {
        let mut r = HeadReader::default();
        let head = r
            .feed(b"HTTP/1.1 200 Connection established\r\nProxy-Agent: x\r\nA:  b , c \r\n\r\n\x20\x02\x00\x00")
            .unwrap()
            .unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.header("proxy-agent"), Some("x"));
        assert_eq!(head.tokens("a").collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(head.surplus, [0x20, 2, 0, 0]);
    }

    #[test]
    fn head_byte_by_byte() {
        let text = b"HTTP/1.0 101\r\nUpgrade: websocket\r\n\r\nXY";
        let mut r = HeadReader::default();
        for (i, b) in text.iter().enumerate() {
            match r.feed(&[*b]).unwrap() {
                None => assert!(i < text.len() - 3, "complete head not seen at {i}"),
                Some(head) => {
                    assert_eq!(i, text.len() - 3);
                    assert_eq!(head.status, 101);
                    assert_eq!(head.header("upgrade"), Some("websocket"));
                    assert!(head.surplus.is_empty());
                    return;
                }
            }
        }
        panic!("never complete");
    }

    #[test]
    fn bad_heads() {
        for bad in [
            &b"HTTP/2 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 099 x\r\n\r\n",
            b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: \xff\r\n\r\n",
            b"\r\n\r\n",
        ] {
            assert_eq!(
                HeadReader::default().feed(bad),
                Err(HeadError::Malformed),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn head_size_is_bounded() {
        let mut r = HeadReader::default();
        assert_eq!(r.feed(b"HTTP/1.1 200 OK\r\n").unwrap(), None);
        let filler = [b'a'; 1024];
        let mut result = Ok(None);
        for _ in 0..9 {
            result = r.feed(&filler);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(HeadError::TooLarge));
        // A complete head just over the limit is refused too.
        let mut big = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        big.resize(MAX_HEAD, b'a');
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(HeadReader::default().feed(&big), Err(HeadError::TooLarge));
    }
}

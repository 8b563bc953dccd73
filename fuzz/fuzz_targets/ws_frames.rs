//! The WebSocket frame reader (`mqtt::net::websocket::FrameReader`) on
//! arbitrary server bytes.
//!
//! Input: byte 0 picks the frame payload limit, byte 1 seeds the read sizes,
//! the rest is the stream. Checked:
//! - no panic, and every `read` call makes progress (uses bytes or reports an
//!   event or an error);
//! - the stream fed in arbitrary pieces decodes exactly as fed whole: same
//!   MQTT bytes, same events, same error (frames split across reads);
//! - on success, the MQTT bytes are the data-frame payloads in order, as an
//!   independent whole-buffer parse finds them;
//! - a close is only reported at an MQTT packet boundary, and nothing is
//!   accepted after it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqtt::net::websocket::{Event, FrameReader, WsError};

type Outcome = (Vec<u8>, Vec<(Event, Vec<u8>)>, Option<WsError>);

fn run(limit: usize, stream: &[u8], mut next_len: impl FnMut() -> usize) -> Outcome {
    let mut reader = FrameReader::new(limit);
    let mut mqtt = Vec::new();
    let mut events = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        let end = (pos + next_len()).min(stream.len());
        let mut piece = &stream[pos..end];
        pos = end;
        while !piece.is_empty() {
            match reader.read(piece, &mut mqtt) {
                Ok((used, event)) => {
                    assert!(used <= piece.len());
                    assert!(used > 0 || event.is_some(), "no progress");
                    piece = &piece[used..];
                    if let Some(e) = event {
                        events.push((e, reader.control_payload().to_vec()));
                        if let Event::Close(_) = e {
                            assert!(reader.is_closed());
                        }
                    }
                }
                Err(e) => return (mqtt, events, Some(e)),
            }
        }
    }
    (mqtt, events, None)
}

/// Data-frame payloads in order (the last one possibly cut short), parsed
/// independently of the reader, for streams the reader accepted.
fn data_payloads(mut s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while s.len() >= 2 {
        let opcode = s[0] & 0x0f;
        let (len, hdr) = match s[1] & 0x7f {
            126 if s.len() >= 4 => (u64::from(u16::from_be_bytes([s[2], s[3]])), 4),
            127 if s.len() >= 10 => (u64::from_be_bytes(s[2..10].try_into().unwrap()), 10),
            126 | 127 => break,
            n => (u64::from(n), 2),
        };
        let body = &s[hdr..];
        let take = (len.min(body.len() as u64)) as usize;
        if opcode < 8 {
            out.extend_from_slice(&body[..take]);
        }
        s = &body[take..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let limit = [0usize, 1, 2, 125, 126, 200, 65535, 65536, 1 << 20][usize::from(data[0]) % 9];
    let stream = &data[2..];
    let whole = run(limit, stream, || usize::MAX);
    let mut state = u32::from(data[1]) | 1;
    let pieces = run(limit, stream, || {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        1 + (state >> 16) as usize % 9
    });
    assert_eq!(whole, pieces, "whole and in pieces disagree");
    let (mqtt, events, error) = whole;
    assert!(mqtt.len() <= stream.len());
    if error.is_none() {
        assert_eq!(mqtt, data_payloads(stream));
    }
    for (i, (event, payload)) in events.iter().enumerate() {
        assert!(payload.len() <= 125);
        if let Event::Close(_) = event {
            assert_eq!(i, events.len() - 1, "an event after the close");
        }
    }
    if let Some(Event::Close(_)) = events.last().map(|e| e.0) {
        // Anything after the close frame is an error, never data.
        assert!(error.is_none() || error == Some(WsError::DataAfterClose));
    }
});

//! The session's outgoing bytes: encoded packets not yet written, in one
//! buffer reused while there is traffic. An idle client, one of thousands on
//! a reactor, holds a word for it and no buffer: its keepalive PINGREQ is
//! written from a constant.

/// A PINGREQ, the same in MQTT 3.1.1 and 5.0.
const PINGREQ: [u8; 2] = [0xC0, 0x00];

#[derive(Debug, Default)]
pub(crate) struct Outbox {
    /// Boxed: one word while there is none.
    #[allow(clippy::box_collection)]
    buffer: Option<Box<Buffer>>,
    /// Bytes of a PINGREQ queued without a buffer and not yet written.
    /// Nonzero only while the buffer has nothing unwritten: anything queued
    /// after it moves it into the buffer first, so order is kept.
    ping_unsent: u8,
}

#[derive(Debug, Default)]
struct Buffer {
    bytes: Vec<u8>,
    /// `bytes[written..]` is not written yet.
    written: usize,
}

impl Outbox {
    /// The buffer to append encoded packets to (allocated at first need).
    pub fn bytes(&mut self) -> &mut Vec<u8> {
        let ping = std::mem::take(&mut self.ping_unsent);
        let buffer = self.buffer.get_or_insert_with(Box::default);
        buffer
            .bytes
            .extend_from_slice(&PINGREQ[PINGREQ.len() - usize::from(ping)..]);
        &mut buffer.bytes
    }

    /// Queue a PINGREQ, without a buffer when nothing else is waiting.
    pub fn push_ping(&mut self) {
        if self.buffer.is_none() && self.ping_unsent == 0 {
            self.ping_unsent = PINGREQ.len() as u8;
        } else {
            self.bytes().extend_from_slice(&PINGREQ);
        }
    }

    /// Everything queued and not yet written, in order.
    pub fn unsent(&self) -> &[u8] {
        if self.ping_unsent > 0 {
            return &PINGREQ[PINGREQ.len() - usize::from(self.ping_unsent)..];
        }
        self.buffer
            .as_ref()
            .map_or(&[], |buffer| &buffer.bytes[buffer.written..])
    }

    pub fn unsent_len(&self) -> usize {
        self.unsent().len()
    }

    /// `n` bytes of `unsent()` were written; returns how many of them
    /// counted (at most `unsent_len()`).
    pub fn consume(&mut self, n: usize) -> usize {
        if self.ping_unsent > 0 {
            let n = n.min(usize::from(self.ping_unsent));
            self.ping_unsent -= n as u8;
            return n;
        }
        let Some(buffer) = self.buffer.as_mut() else {
            return 0;
        };
        let n = n.min(buffer.bytes.len() - buffer.written);
        buffer.written += n;
        if buffer.written == buffer.bytes.len() {
            buffer.bytes.clear();
            buffer.written = 0;
        } else if buffer.written >= 4096 && buffer.written * 2 >= buffer.bytes.len() {
            // Compact only when the written prefix dominates, so partial
            // writes cost amortized O(1) per byte.
            buffer.bytes.drain(..buffer.written);
            buffer.written = 0;
        }
        n
    }

    /// Drop everything unwritten, keeping the buffer for reuse.
    pub fn clear(&mut self) {
        self.ping_unsent = 0;
        if let Some(buffer) = self.buffer.as_mut() {
            buffer.bytes.clear();
            buffer.written = 0;
        }
    }

    /// Give the buffer back if everything in it was written (traffic
    /// allocates one again).
    pub fn release_if_written(&mut self) {
        if self
            .buffer
            .as_ref()
            .is_some_and(|b| b.written == b.bytes.len())
        {
            self.buffer = None;
        }
    }

    /// Heap bytes held for reuse.
    pub fn capacity(&self) -> usize {
        self.buffer
            .as_ref()
            .map_or(0, |b| size_of::<Buffer>() + b.bytes.capacity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ping_without_traffic_needs_no_buffer_and_keeps_its_place_in_order() {
        let mut outbox = Outbox::default();
        outbox.push_ping();
        assert_eq!(outbox.unsent(), PINGREQ);
        assert_eq!(outbox.capacity(), 0);
        // Half written, then a packet is queued: the rest of the ping goes first.
        assert_eq!(outbox.consume(1), 1);
        outbox.bytes().extend_from_slice(&[0xE0, 0x00]);
        assert_eq!(outbox.unsent(), [0x00, 0xE0, 0x00]);
        assert_eq!(outbox.consume(10), 3);
        assert_eq!(outbox.unsent_len(), 0);
        outbox.release_if_written();
        assert_eq!(outbox.capacity(), 0);
    }

    #[test]
    fn a_ping_behind_unwritten_bytes_is_queued_after_them() {
        let mut outbox = Outbox::default();
        outbox.bytes().extend_from_slice(&[0x30, 0x00]);
        outbox.push_ping();
        assert_eq!(outbox.unsent(), [0x30, 0x00, 0xC0, 0x00]);
        outbox.clear();
        assert_eq!(outbox.unsent_len(), 0);
    }
}

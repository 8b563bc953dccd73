//! One binary heap for the deadlines of every client of a reactor (keepalive,
//! CONNACK and connect timeouts, reconnection backoff), with lazy deletion: a
//! slot keeps the deadline it registered last (an earlier one always, a later
//! one only when it is much later); an entry that no longer matches its slot
//! is skipped when it surfaces, without touching the client. A turn thus costs
//! O(expired entries x log n), never a scan of every client.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::protocol::stamp::Stamp;

/// A slot's identity: its index and the generation of its occupant, so that
/// an entry left by a removed client never fires for the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SlotId {
    /// 32 bits: each slot holds a socket (8 bytes in all, for the queues
    /// that hold one per client).
    pub index: u32,
    pub generation: u32,
}

impl SlotId {
    pub fn new(index: usize, generation: u32) -> SlotId {
        SlotId {
            index: index as u32,
            generation,
        }
    }

    pub fn at(self) -> usize {
        self.index as usize
    }
}

/// An entry as the heap keeps it: 16 bytes rather than 32 (one or more per
/// client). Slot indexes fit in 32 bits: each slot holds a socket.
type Entry = (Stamp, u32, u32);

fn entry(at: Instant, slot: SlotId) -> Entry {
    (Stamp::new(at), slot.index, slot.generation)
}

fn unpack((at, index, generation): Entry) -> (Instant, SlotId) {
    let slot = SlotId { index, generation };
    (at.instant(), slot)
}

#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
}

impl Timers {
    pub fn push(&mut self, at: Instant, slot: SlotId) {
        self.heap.push(Reverse(entry(at, slot)));
    }

    /// The earliest entry for which `live` holds, dropping stale ones above it.
    pub fn next(&mut self, mut live: impl FnMut(Instant, SlotId) -> bool) -> Option<Instant> {
        while let Some(&Reverse(e)) = self.heap.peek() {
            let (at, slot) = unpack(e);
            if live(at, slot) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// Take the next entry due at `now`, live or not (the caller checks).
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, SlotId)> {
        match self.heap.peek() {
            Some(&Reverse((at, ..))) if at.instant() <= now => {
                self.heap.pop().map(|Reverse(e)| unpack(e))
            }
            _ => None,
        }
    }

    /// Drop stale entries once they outnumber the live ones, so that a
    /// deadline moved earlier again and again cannot grow the heap without
    /// bound. In place: no allocation.
    pub fn compact(&mut self, slots: usize, mut live: impl FnMut(Instant, SlotId) -> bool) {
        if self.heap.len() > 2 * slots + 64 {
            self.heap.retain(|&Reverse(e)| {
                let (at, slot) = unpack(e);
                live(at, slot)
            });
        }
    }

    pub fn clear(&mut self) {
        self.heap.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stale_entries_are_skipped_and_compacted() {
        let t0 = Instant::now();
        let a = SlotId {
            index: 0,
            generation: 1,
        };
        let b = SlotId {
            index: 1,
            generation: 1,
        };
        let mut timers = Timers::default();
        timers.push(t0 + Duration::from_secs(5), a);
        timers.push(t0 + Duration::from_secs(1), b);
        timers.push(t0 + Duration::from_secs(2), a);
        // b's entry is stale (b moved on): the next live one is a's at 2 s.
        let live = |at: Instant, s: SlotId| s == a || at > t0 + Duration::from_secs(1);
        assert_eq!(timers.next(live), Some(t0 + Duration::from_secs(2)));
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(1)), None);
        let due = timers.pop_due(t0 + Duration::from_secs(3));
        assert_eq!(due, Some((t0 + Duration::from_secs(2), a)));
        for i in 0..200 {
            timers.push(t0 + Duration::from_millis(i), b);
        }
        timers.compact(2, |_, s| s == a);
        assert_eq!(timers.heap.len(), 1);
    }
}

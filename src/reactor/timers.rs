//! One binary heap for the deadlines of every client of a reactor (keepalive,
//! CONNACK and connect timeouts, reconnection backoff). Indexed: each slot has
//! at most one entry and the heap knows where it is, so a deadline moves in
//! place and a removed client takes its entry with it. A turn thus costs
//! O(expired entries x log n), never a scan of every client, and the heap
//! holds one entry per client with a deadline, never a stale one.

use std::time::Instant;

use crate::protocol::stamp::Stamp;

/// An entry: a deadline and the slot index it is for (16 bytes).
type Entry = (Stamp, u32);

/// In `position`: the slot has no entry.
const ABSENT: u32 = u32::MAX;

/// Entries per block of a `Chunked` (16 KiB of heap entries).
const CHUNK: usize = 1024;

/// A growable array in fixed blocks: growing never copies or frees what it
/// holds. A vector doubling for a fleet of clients would leave its old
/// buffer as a free hole in the heap, resident for good (about 50 bytes per
/// client of 10,000 for this heap and its positions).
struct Chunked<T> {
    chunks: Vec<Box<[T; CHUNK]>>,
    len: usize,
    /// What fresh blocks are filled with.
    fill: T,
}

impl<T: Copy> Chunked<T> {
    const fn new(fill: T) -> Chunked<T> {
        Chunked {
            chunks: Vec::new(),
            len: 0,
            fill,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, i: usize) -> Option<T> {
        (i < self.len).then(|| self.chunks[i / CHUNK][i % CHUNK])
    }

    fn value(&self, i: usize) -> T {
        debug_assert!(i < self.len);
        self.chunks[i / CHUNK][i % CHUNK]
    }

    fn at(&mut self, i: usize) -> &mut T {
        debug_assert!(i < self.len);
        &mut self.chunks[i / CHUNK][i % CHUNK]
    }

    fn push(&mut self, value: T) {
        if self.len == self.chunks.len() * CHUNK {
            self.chunks.push(Box::new([self.fill; CHUNK]));
        }
        self.len += 1;
        *self.at(self.len - 1) = value;
    }

    fn pop(&mut self) -> Option<T> {
        let last = self.get(self.len.checked_sub(1)?)?;
        self.len -= 1;
        // One spare block is kept, so that a size going up and down across
        // a block's edge does not allocate each time.
        if self.len + 2 * CHUNK <= self.chunks.len() * CHUNK {
            self.chunks.pop();
        }
        Some(last)
    }

    /// Grow to `len` entries (new ones are `fill`).
    fn grow_to(&mut self, len: usize) {
        while self.len < len {
            self.push(self.fill);
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        let (x, y) = (self.value(a), self.value(b));
        *self.at(a) = y;
        *self.at(b) = x;
    }

    fn clear(&mut self) {
        self.chunks = Vec::new();
        self.len = 0;
    }
}

pub(crate) struct Timers {
    /// A min-heap on the deadline.
    heap: Chunked<Entry>,
    /// Per slot index: where its entry is in `heap`, or `ABSENT`.
    position: Chunked<u32>,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            heap: Chunked::new((Stamp::MIN, 0)),
            position: Chunked::new(ABSENT),
        }
    }
}

impl Timers {
    /// The deadline registered for `slot`, if any.
    pub fn deadline(&self, slot: usize) -> Option<Instant> {
        let at = self.position.get(slot)?;
        (at != ABSENT).then(|| self.heap.value(at as usize).0.instant())
    }

    /// Register `at` as `slot`'s deadline, replacing the one it had.
    pub fn set(&mut self, slot: usize, at: Instant) {
        self.position.grow_to(slot + 1);
        let stamp = Stamp::new(at);
        match *self.position.at(slot) {
            ABSENT => {
                self.heap.push((stamp, slot as u32));
                *self.position.at(slot) = (self.heap.len() - 1) as u32;
                self.sift_up(self.heap.len() - 1);
            }
            i => {
                let i = i as usize;
                let earlier = stamp < self.heap.value(i).0;
                self.heap.at(i).0 = stamp;
                if earlier {
                    self.sift_up(i);
                } else {
                    self.sift_down(i);
                }
            }
        }
    }

    /// Drop `slot`'s deadline, if it has one.
    pub fn cancel(&mut self, slot: usize) {
        let Some(i) = self.position.get(slot) else {
            return;
        };
        if i != ABSENT {
            self.remove_at(i as usize);
        }
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.heap.get(0).map(|e| e.0.instant())
    }

    /// Take the slot whose deadline is earliest, if it has come by `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<usize> {
        let (at, slot) = self.heap.get(0)?;
        if at.instant() > now {
            return None;
        }
        self.remove_at(0);
        Some(slot as usize)
    }

    pub fn clear(&mut self) {
        self.heap.clear();
        self.position.clear();
    }

    fn remove_at(&mut self, i: usize) {
        let last = self.heap.len() - 1;
        self.swap(i, last);
        let (_, slot) = self.heap.pop().expect("an entry at i");
        *self.position.at(slot as usize) = ABSENT;
        if i < self.heap.len() {
            // The entry moved into the hole may belong above or below it.
            self.sift_up(i);
            self.sift_down(i);
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        *self.position.at(self.heap.value(a).1 as usize) = a as u32;
        *self.position.at(self.heap.value(b).1 as usize) = b as u32;
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.heap.value(parent).0 <= self.heap.value(i).0 {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let left = 2 * i + 1;
            if left >= self.heap.len() {
                break;
            }
            let right = left + 1;
            let child =
                if right < self.heap.len() && self.heap.value(right).0 < self.heap.value(left).0 {
                    right
                } else {
                    left
                };
            if self.heap.value(i).0 <= self.heap.value(child).0 {
                break;
            }
            self.swap(i, child);
            i = child;
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A deterministic scramble (no rand dependency).
    fn scrambled(n: u64) -> impl Iterator<Item = u64> {
        (0..n).map(move |i| (i * 7919 + 13) % 1009)
    }

    #[test]
    fn deadlines_come_out_in_order_one_per_slot_whatever_moved_or_went() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut timers = Timers::default();
        let mut model: Vec<Option<u64>> = vec![None; 64];
        for (step, at) in scrambled(600).enumerate() {
            let slot = (at as usize * 31 + step) % 64;
            if step % 5 == 4 {
                timers.cancel(slot);
                model[slot] = None;
            } else {
                timers.set(slot, ms(at));
                model[slot] = Some(at);
            }
            assert_eq!(timers.deadline(slot), model[slot].map(ms));
            assert_eq!(timers.len(), model.iter().flatten().count());
        }
        let mut expected: Vec<(u64, usize)> = model
            .iter()
            .enumerate()
            .filter_map(|(slot, at)| at.map(|at| (at, slot)))
            .collect();
        expected.sort();
        assert_eq!(timers.next(), expected.first().map(|&(at, _)| ms(at)));
        let mut popped = Vec::new();
        while let Some(slot) = timers.pop_due(ms(2000)) {
            popped.push((model[slot].unwrap(), slot));
        }
        let popped_times: Vec<u64> = popped.iter().map(|&(at, _)| at).collect();
        let expected_times: Vec<u64> = expected.iter().map(|&(at, _)| at).collect();
        assert_eq!(popped_times, expected_times);
        assert_eq!(timers.len(), 0);
        assert!((0..64).all(|slot| timers.deadline(slot).is_none()));
    }

    #[test]
    fn thousands_of_slots_span_blocks_and_give_them_back_as_they_leave() {
        let t0 = Instant::now();
        let slots = 3 * CHUNK + 7;
        let mut timers = Timers::default();
        for slot in 0..slots {
            let at = (slot * 7919 % 5003) as u64;
            timers.set(slot, t0 + Duration::from_millis(at));
        }
        for slot in (0..slots).step_by(3) {
            timers.cancel(slot);
        }
        assert_eq!(timers.len(), slots - slots.div_ceil(3));
        let mut last = None;
        let mut popped = 0;
        while let Some(slot) = timers.pop_due(t0 + Duration::from_secs(10)) {
            assert_ne!(slot % 3, 0, "a cancelled slot fired");
            let at = Some((slot * 7919 % 5003) as u64);
            assert!(last <= at, "out of order");
            last = at;
            popped += 1;
        }
        assert_eq!(popped, slots - slots.div_ceil(3));
        assert!(timers.heap.chunks.len() <= 1, "blocks kept after emptying");
        assert_eq!(timers.position.len(), slots);
    }

    #[test]
    fn nothing_is_due_before_its_time_and_a_moved_deadline_keeps_one_entry() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.set(3, t0 + Duration::from_secs(10));
        timers.set(1, t0 + Duration::from_secs(5));
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(4)), None);
        // A connect timeout replaced by a keepalive an hour out: moved, not
        // added beside.
        timers.set(1, t0 + Duration::from_secs(3600));
        assert_eq!(timers.len(), 2);
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(11)), Some(3));
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(11)), None);
        timers.cancel(7);
        timers.cancel(1);
        assert_eq!(timers.next(), None);
    }
}

//! An `Instant` in one word, for the timestamps and deadlines each client
//! keeps (an `Option<Instant>` takes two words, and thousands of idle
//! clients share a reactor).

use std::num::NonZeroU64;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Nanoseconds from a process-wide origin (the first instant stamped; no
/// clock is read), offset by 2^63 so that instants before the origin fit and
/// zero is free for `Option`'s niche. Exact within 292 years of the origin,
/// and clamped beyond (where it only ever stands for "never"); the order is
/// that of the instants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Stamp(NonZeroU64);

const OFFSET: i128 = 1 << 63;

static ORIGIN: OnceLock<Instant> = OnceLock::new();

impl Stamp {
    /// The earliest stamp: a filler for storage that needs a value.
    pub const MIN: Stamp = Stamp(NonZeroU64::MIN);

    pub fn new(at: Instant) -> Stamp {
        let origin = *ORIGIN.get_or_init(|| at);
        let nanos = match at.checked_duration_since(origin) {
            Some(after) => after.as_nanos() as i128,
            None => -(origin.duration_since(at).as_nanos() as i128),
        };
        let biased = (nanos + OFFSET).clamp(1, u64::MAX.into()) as u64;
        Stamp(NonZeroU64::new(biased).unwrap_or(NonZeroU64::MIN))
    }

    pub fn instant(self) -> Instant {
        // Set by the `new` that made this stamp: the clock is not read.
        let origin = *ORIGIN.get_or_init(Instant::now);
        let nanos = i128::from(self.0.get()) - OFFSET;
        let offset = Duration::from_nanos(nanos.unsigned_abs() as u64);
        if nanos >= 0 {
            origin.checked_add(offset).unwrap_or(origin)
        } else {
            origin.checked_sub(offset).unwrap_or(origin)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_the_order() {
        let t0 = Instant::now();
        let earlier = t0.checked_sub(Duration::from_secs(3600)).unwrap_or(t0);
        let later = t0 + Duration::from_nanos(123_456_789_012);
        for t in [t0, earlier, later] {
            assert_eq!(Stamp::new(t).instant(), t);
        }
        assert!(Stamp::new(earlier) <= Stamp::new(t0));
        assert!(Stamp::new(t0) < Stamp::new(later));
        assert_eq!(size_of::<Option<Stamp>>(), 8);
    }
}

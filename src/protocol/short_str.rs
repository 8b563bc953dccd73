//! A string kept inline up to 22 bytes, else on the heap. A client id (MQTT
//! 3.1.1 servers must accept up to 23 bytes) or a broker's host name usually
//! fits: thousands of idle clients on a reactor hold no heap block for them.

use std::fmt;
use std::ops::Deref;

const INLINE: usize = 22;

#[derive(Clone)]
pub struct ShortStr(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl ShortStr {
    pub fn new(s: &str) -> ShortStr {
        let mut bytes = [0; INLINE];
        ShortStr(match bytes.get_mut(..s.len()) {
            Some(inline) => {
                inline.copy_from_slice(s.as_bytes());
                Repr::Inline {
                    len: s.len() as u8,
                    bytes,
                }
            }
            None => Repr::Heap(s.into()),
        })
    }

    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Copied from a `&str` whole: valid UTF-8.
            Repr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Repr::Heap(s) => s,
        }
    }
}

impl Default for ShortStr {
    fn default() -> Self {
        ShortStr::new("")
    }
}

impl Deref for ShortStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for ShortStr {
    fn from(s: &str) -> Self {
        ShortStr::new(s)
    }
}

impl From<String> for ShortStr {
    fn from(s: String) -> Self {
        match s.len() {
            0..=INLINE => ShortStr::new(&s),
            _ => ShortStr(Repr::Heap(s.into_boxed_str())),
        }
    }
}

impl fmt::Debug for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq for ShortStr {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for ShortStr {}

impl PartialEq<str> for ShortStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ShortStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_strings_stay_inline_and_long_ones_round_trip() {
        for s in [
            "",
            "a",
            "sensor-000123",
            &"x".repeat(INLINE),
            &"é".repeat(40),
        ] {
            let short = ShortStr::new(s);
            assert_eq!(short.as_str(), s);
            assert_eq!(ShortStr::from(s.to_owned()), short);
            assert_eq!(
                matches!(short.0, Repr::Inline { .. }),
                s.len() <= INLINE,
                "{s}"
            );
        }
        assert_eq!(size_of::<ShortStr>(), 24);
        assert_eq!(size_of::<Option<ShortStr>>(), 24);
    }
}

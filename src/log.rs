//! Diagnostic logging: a level and a callback per client, silent by default.
//!
//! Every call site goes through `log!`, which checks the level first (one
//! atomic load while no callback was ever set): when logging is off (or the
//! level is filtered out), nothing is formatted and nothing is allocated.
//! Messages are delivered on the thread that runs the client, while the
//! reactor may hold internal locks: the callback must not call back into the
//! library for the same client.

use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use once_cell::race::OnceBox;

use crate::protocol::codec::{self, Packet};

/// What `log!` writes to: a client's state, or a bare `Logger`.
pub(crate) trait LogTarget {
    fn logger(&self) -> &Logger;
    /// The client was released: its callback (and likely its user data)
    /// must not be used any more.
    fn log_closed(&self) -> bool;
}

impl LogTarget for Logger {
    fn logger(&self) -> &Logger {
        self
    }

    fn log_closed(&self) -> bool {
        false
    }
}

impl<T: LogTarget + ?Sized> LogTarget for std::sync::Arc<T> {
    fn logger(&self) -> &Logger {
        (**self).logger()
    }

    fn log_closed(&self) -> bool {
        (**self).log_closed()
    }
}

/// Severity of a log message; a client set to a level gets that level and all
/// lower (more severe) ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

impl Level {
    pub fn from_i32(level: i32) -> Option<Level> {
        match level {
            1 => Some(Level::Error),
            2 => Some(Level::Warn),
            3 => Some(Level::Info),
            4 => Some(Level::Debug),
            _ => None,
        }
    }
}

/// Receives each message that passes the level filter.
pub type LogFn = Arc<dyn Fn(Level, &str) + Send + Sync>;

/// `sent` offset meaning "not at a known packet boundary".
const UNKNOWN: u32 = u32::MAX;

/// Per-client logger state.
pub(crate) struct Logger {
    /// Allocated when a callback is first set: one word for the thousands
    /// of clients that log nothing.
    state: OnceBox<LogState>,
}

struct LogState {
    /// 0 = off, else the highest `Level` delivered.
    level: AtomicU8,
    callback: Mutex<Option<LogFn>>,
    /// Bytes at the start of the outgoing buffer that belong to a packet already
    /// logged (partially written before), or `UNKNOWN`. Reactor thread only.
    /// Starts unknown: a callback set mid-connection logs from the next
    /// packet boundary the writes reach.
    sent_skip: AtomicU32,
}

impl Default for Logger {
    fn default() -> Self {
        Logger {
            state: OnceBox::new(),
        }
    }
}

impl Logger {
    /// Install `callback` with `level`; `None` (or level 0) turns logging off.
    pub fn set(&self, callback: Option<LogFn>, level: u8) {
        if callback.is_none() && self.state.get().is_none() {
            return;
        }
        let state = self.state.get_or_init(|| {
            Box::new(LogState {
                level: AtomicU8::new(0),
                callback: Mutex::new(None),
                sent_skip: AtomicU32::new(UNKNOWN),
            })
        });
        let mut slot = state.callback.lock().unwrap_or_else(|e| e.into_inner());
        let level = if callback.is_some() { level } else { 0 };
        *slot = callback;
        state.level.store(level, Ordering::Release);
    }

    #[inline]
    pub fn enabled(&self, level: Level) -> bool {
        self.state
            .get()
            .is_some_and(|state| level as u8 <= state.level.load(Ordering::Relaxed))
    }

    /// Format and deliver (call only after `enabled`).
    #[cold]
    pub fn emit(&self, level: Level, args: fmt::Arguments<'_>) {
        let Some(callback) = self.state.get().and_then(|state| {
            state
                .callback
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        }) else {
            return;
        };
        if !self.enabled(level) {
            return;
        }
        let message = fmt::format(args);
        callback(level, &message);
    }
}

/// `log!(core, Level::Info, "connecting to {}", addr)`: formats only when the
/// target's logger wants `level`, never for a released client.
macro_rules! log {
    ($target:expr, $level:expr, $($arg:tt)+) => {{
        let target = $target;
        let level: $crate::log::Level = $level;
        let logger = $crate::log::LogTarget::logger(target);
        if logger.enabled(level) && !$crate::log::LogTarget::log_closed(target) {
            logger.emit(level, format_args!($($arg)+));
        }
    }};
}
pub(crate) use log;

/// The MQTT name of a packet.
pub(crate) fn packet_name(packet: &Packet<'_>) -> &'static str {
    codec::packet_type_name(packet.packet_type())
}

/// DEBUG: a packet arrived.
pub(crate) fn received<T: LogTarget + ?Sized>(client: &T, packet: &Packet<'_>) {
    if client.logger().enabled(Level::Debug) {
        describe(client, "received", packet);
    }
}

/// One DEBUG line for a packet sent or received.
fn describe<T: LogTarget + ?Sized>(client: &T, verb: &str, packet: &Packet<'_>) {
    let name = packet_name(packet);
    match packet {
        Packet::Publish(p) => log!(
            client,
            Level::Debug,
            "{verb} PUBLISH (mid {}, qos {}, topic '{}', {} bytes{}{})",
            p.pkid,
            p.qos as u8,
            p.topic,
            p.payload.len(),
            if p.retain { ", retain" } else { "" },
            if p.dup { ", dup" } else { "" }
        ),
        Packet::ConnAck(ack) if ack.properties.is_some() => log!(
            client,
            Level::Debug,
            "{verb} CONNACK (reason code {:#04x}, session present {})",
            ack.reason_code,
            ack.session_present
        ),
        Packet::ConnAck(ack) => log!(
            client,
            Level::Debug,
            "{verb} CONNACK (return code {}, session present {})",
            ack.reason_code,
            ack.session_present
        ),
        Packet::PubAck(ack) | Packet::PubRec(ack) | Packet::PubRel(ack) | Packet::PubComp(ack) => {
            let mid = ack.pkid;
            match ack.reason_code {
                0 => log!(client, Level::Debug, "{verb} {name} (mid {mid})"),
                code => log!(
                    client,
                    Level::Debug,
                    "{verb} {name} (mid {mid}, reason code {code:#04x})"
                ),
            }
        }
        Packet::UnsubAck(ack) => {
            let mid = ack.pkid;
            if ack.reason_codes.is_empty() {
                log!(client, Level::Debug, "{verb} {name} (mid {mid})")
            } else {
                log!(
                    client,
                    Level::Debug,
                    "{verb} {name} (mid {mid}, reason codes {:02x?})",
                    ack.reason_codes
                )
            }
        }
        Packet::Disconnect(codec::Disconnect { reason_code, .. })
        | Packet::Auth(codec::Auth { reason_code, .. })
            if *reason_code != 0 =>
        {
            log!(
                client,
                Level::Debug,
                "{verb} {name} (reason code {reason_code:#04x})"
            )
        }
        Packet::Subscribe(codec::Subscribe { pkid, .. })
        | Packet::Unsubscribe(codec::Unsubscribe { pkid, .. }) => {
            log!(client, Level::Debug, "{verb} {name} (mid {pkid})")
        }
        Packet::SubAck(ack) => log!(
            client,
            Level::Debug,
            "{verb} SUBACK (mid {}, granted {:?})",
            ack.pkid,
            ack.return_codes
        ),
        _ => log!(client, Level::Debug, "{verb} {name}"),
    }
}

/// A new connection starts with an empty outgoing buffer.
pub(crate) fn connection_started<T: LogTarget + ?Sized>(client: &T) {
    if let Some(state) = client.logger().state.get() {
        state.sent_skip.store(0, Ordering::Relaxed);
    }
}

/// DEBUG: the first `written` bytes of `pending` (the outgoing buffer) were written;
/// log each packet starting in them. Called by the reactor after every write.
pub(crate) fn sent<T: LogTarget + ?Sized>(
    client: &T,
    pending: &[u8],
    written: usize,
    version: codec::ProtocolVersion,
) {
    let logger = client.logger();
    // Never given a callback: nothing to track.
    let Some(state) = logger.state.get() else {
        return;
    };
    let skip = state.sent_skip.load(Ordering::Relaxed);
    if !logger.enabled(Level::Debug) || skip == UNKNOWN {
        // Not tracking: the buffer is at a packet boundary again once fully written.
        let next = if written >= pending.len() { 0 } else { UNKNOWN };
        state.sent_skip.store(next, Ordering::Relaxed);
        return;
    }
    let mut pos = skip as usize;
    while pos < written {
        let Ok(Ok(header)) = codec::parse_fixed_header_as(&pending[pos..], usize::MAX, version)
        else {
            state.sent_skip.store(UNKNOWN, Ordering::Relaxed);
            return;
        };
        let body = pending
            .get(pos + header.header_len..pos + header.frame_len())
            .unwrap_or(&[]);
        match codec::decode_body_as(header.byte1, body, version) {
            Ok(packet) => describe(client, "sent", &packet),
            Err(_) => log!(
                client,
                Level::Debug,
                "sent {}",
                codec::packet_type_name(header.packet_type())
            ),
        }
        pos += header.frame_len();
    }
    // What is left of one packet: below 2^29.
    state
        .sent_skip
        .store((pos - written) as u32, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts how often it is formatted.
    struct Counted<'a>(&'a AtomicUsize);

    impl fmt::Display for Counted<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.fetch_add(1, Ordering::Relaxed);
            f.write_str("x")
        }
    }

    type Lines = Arc<Mutex<Vec<(Level, String)>>>;

    fn recorder() -> (LogFn, Lines) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let log: LogFn = Arc::new(move |level, message: &str| {
            sink.lock().unwrap().push((level, message.to_owned()));
        });
        (log, lines)
    }

    #[test]
    fn silent_by_default_and_formats_only_when_enabled() {
        let client = Logger::default();
        let formatted = AtomicUsize::new(0);
        for level in [Level::Error, Level::Warn, Level::Info, Level::Debug] {
            assert!(!client.enabled(level));
            log!(&client, level, "{}", Counted(&formatted));
        }
        assert_eq!(formatted.load(Ordering::Relaxed), 0);
        // Turning off a logger never set allocates nothing.
        client.set(None, 0);
        assert!(client.state.get().is_none());

        let (callback, lines) = recorder();
        client.set(Some(callback), Level::Warn as u8);
        log!(&client, Level::Info, "{}", Counted(&formatted));
        assert_eq!(
            formatted.load(Ordering::Relaxed),
            0,
            "filtered: not formatted"
        );
        log!(&client, Level::Warn, "w {}", Counted(&formatted));
        log!(&client, Level::Error, "e {}", Counted(&formatted));
        assert_eq!(formatted.load(Ordering::Relaxed), 2);
        assert_eq!(
            *lines.lock().unwrap(),
            [
                (Level::Warn, "w x".to_owned()),
                (Level::Error, "e x".to_owned())
            ]
        );

        client.set(None, Level::Debug as u8);
        log!(&client, Level::Error, "{}", Counted(&formatted));
        assert_eq!(formatted.load(Ordering::Relaxed), 2, "off again");
    }

    #[test]
    fn sent_packets_are_logged_across_partial_writes() {
        let client = Logger::default();
        let (callback, lines) = recorder();
        client.set(Some(callback), Level::Debug as u8);
        // PUBLISH QoS 1 "a/b" mid 7 payload "hi", PUBACK mid 9, PINGREQ
        let mut buf = vec![0x32, 9, 0, 3, b'a', b'/', b'b', 0, 7, b'h', b'i'];
        buf.extend_from_slice(&[0x40, 2, 0, 9, 0xc0, 0]);
        connection_started(&client);
        sent(&client, &buf, 5, codec::ProtocolVersion::V311); // PUBLISH starts here
        sent(&client, &buf[5..], 8, codec::ProtocolVersion::V311); // rest of PUBLISH + half the PUBACK
        sent(&client, &buf[13..], 2, codec::ProtocolVersion::V311); // the PUBACK's end
        sent(&client, &buf[15..], 2, codec::ProtocolVersion::V311); // PINGREQ
        let got: Vec<String> = lines.lock().unwrap().iter().map(|l| l.1.clone()).collect();
        assert_eq!(
            got,
            [
                "sent PUBLISH (mid 7, qos 1, topic 'a/b', 2 bytes)",
                "sent PUBACK (mid 9)",
                "sent PINGREQ"
            ]
        );
    }

    #[test]
    fn non_zero_reason_codes_are_logged() {
        use crate::protocol::codec::{
            Ack, Auth, ConnAck, ConnectReturnCode, Disconnect, Properties, UnsubAck,
        };
        let client = Logger::default();
        let (callback, lines) = recorder();
        client.set(Some(callback), Level::Debug as u8);
        let v5 = Some(Properties::EMPTY);
        for packet in [
            Packet::PubAck(Ack {
                pkid: 3,
                reason_code: 0x10,
                properties: v5,
            }),
            Packet::PubRel(Ack {
                pkid: 4,
                reason_code: 0,
                properties: v5,
            }),
            Packet::UnsubAck(UnsubAck {
                pkid: 5,
                reason_codes: &[0x00, 0x11],
                properties: v5,
            }),
            Packet::unsuback(6),
            Packet::ConnAck(ConnAck {
                session_present: false,
                reason_code: 0x87,
                properties: v5,
            }),
            Packet::ConnAck(ConnAck::new(false, ConnectReturnCode::NotAuthorized)),
            Packet::Disconnect(Disconnect {
                reason_code: 0x8e,
                properties: v5,
            }),
            Packet::disconnect(),
            Packet::Auth(Auth {
                reason_code: 0x18,
                properties: v5,
            }),
        ] {
            describe(&client, "received", &packet);
        }
        let got: Vec<String> = lines.lock().unwrap().iter().map(|l| l.1.clone()).collect();
        assert_eq!(
            got,
            [
                "received PUBACK (mid 3, reason code 0x10)",
                "received PUBREL (mid 4)",
                "received UNSUBACK (mid 5, reason codes [00, 11])",
                "received UNSUBACK (mid 6)",
                "received CONNACK (reason code 0x87, session present false)",
                "received CONNACK (return code 5, session present false)",
                "received DISCONNECT (reason code 0x8e)",
                "received DISCONNECT",
                "received AUTH (reason code 0x18)",
            ]
        );
    }
}

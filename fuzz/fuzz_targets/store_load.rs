//! The store loader on arbitrary bytes: the log replay (`parse_log`), then
//! the records it yields as a session's store (MQTT 3.1.1 or 5.0 by the
//! first byte), then a CONNACK with or without the session so that the
//! restored messages, PUBREL flows, held messages and subscriptions are all
//! put to use. Nothing may panic, allocate what a length field asks beyond
//! the input, or yield a record from the bytes after the first damaged one.
//!
//! The same bytes are also given to the session directly as one record per
//! key kind, so that the record formats are fuzzed even when the log framing
//! (CRC-32) rejects the input.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use mqtt::protocol::codec::{ConnAck, Packet, ProtocolVersion};
use mqtt::protocol::session::{Session, SessionConfig};
use mqtt::store::{Records, Store, SyncMode, crc32, parse_log};

/// A store holding records in memory.
struct Memory(Records);

impl Store for Memory {
    fn put(&mut self, key: &[u8], value: &[u8]) -> mqtt::Result<()> {
        self.0.retain(|(k, _)| k != key);
        self.0.push((key.to_vec(), value.to_vec()));
        Ok(())
    }
    fn remove(&mut self, key: &[u8]) -> mqtt::Result<()> {
        self.0.retain(|(k, _)| k != key);
        Ok(())
    }
    fn load_all(&mut self, each: &mut dyn FnMut(&[u8], &[u8])) -> mqtt::Result<()> {
        for (k, v) in &self.0 {
            each(k, v);
        }
        Ok(())
    }
    fn sync(&mut self) -> mqtt::Result<()> {
        Ok(())
    }
}

fn restore(records: Records, v5: bool, session_present: bool) {
    let config = SessionConfig {
        client_id: "fuzz".into(),
        clean_session: false,
        protocol: if v5 {
            ProtocolVersion::V5
        } else {
            ProtocolVersion::V311
        },
        ..SessionConfig::default()
    };
    let mut session = Session::new(config);
    if session
        .set_store(Some((Box::new(Memory(records)), SyncMode::Batch)))
        .is_err()
    {
        return;
    }
    let now = Instant::now();
    session.connection_opened(now);
    let _ = session.pending_transmit().len();
    session.consume_transmit(now, usize::MAX);
    let _ = session.handle_packet(
        now,
        Packet::ConnAck(ConnAck {
            session_present,
            reason_code: 0,
            properties: v5.then_some(Default::default()),
        }),
    );
    let _ = session.pending_transmit().len();
    let _ = session.take_unresolved();
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let v5 = flags & 1 != 0;
    let present = flags & 2 != 0;

    // The log framing, with the magic in front so that the records are read.
    let mut log = b"MQTTLOG\x01".to_vec();
    log.extend_from_slice(rest);
    if let Ok((records, report)) = parse_log(&log) {
        if let Some((offset, len, _)) = report.dropped {
            assert_eq!(offset + len, log.len() as u64);
        }
        assert!(records.len() <= report.replayed);
        restore(records, v5, present);
    }
    // Without the magic: not a log, unless it is a prefix of it.
    let _ = parse_log(rest);

    // The record formats, behind a valid frame.
    if rest.len() >= 3 {
        let (key_len, body) = rest.split_at(1);
        let key_len = usize::from(key_len[0]).min(body.len());
        let (key, value) = body.split_at(key_len);
        let records: Records = [b'o', b'i', b's']
            .iter()
            .map(|&kind| {
                let mut k = vec![kind];
                k.extend_from_slice(key);
                (k, value.to_vec())
            })
            .collect();
        restore(records, v5, present);
    }
    let _ = crc32(&[rest]);
});

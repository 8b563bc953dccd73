//! What survives a crash: the session's durable records and the stores that
//! keep them.
//!
//! A store is a key-value map with four operations (put, remove, load all,
//! sync); the session decides what goes in and when it must be on stable
//! storage. Keys and values are the session's own small formats, below, so
//! that a store implemented in C (flash, NVS, SQLite) needs no knowledge of
//! MQTT. The built-in store, [`LogStore`], is an append-only log.
//!
//! Records (key -> value; integers little-endian unless said):
//! - `'o' mid(be16)` -> `flags(u8) seq(u64) packet`: an outgoing QoS 1/2
//!   message accepted by publish, until PUBACK/PUBCOMP. `flags` bit 0: past
//!   PUBREC (awaiting PUBCOMP; the packet is then left out), bit 1: the packet
//!   is MQTT 5. `seq` orders messages across lives; the packet-id allocator
//!   restarts after the mid of the highest one.
//! - `'i' mid(be16)` -> `flags(u8) packet`: an incoming QoS 2 message held
//!   between its PUBREC and the return of the callback it is delivered to.
//! - `'s' filter` -> `options(u8) has_id(u8) id(u32)`: a subscription the
//!   broker acknowledged, for resubscribing after a session loss.

mod log;

pub use log::{LoadReport, LogStore, Records, crc32, parse_log};

use crate::error::Result;

/// When records reach stable storage (`MQTT_SYNC_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Written to the OS (page cache) before publish returns: survives a crash
    /// of the process, not of the machine.
    None = 0,
    /// One sync per loop turn, before that turn's packets reach the socket:
    /// survives a power loss for everything the broker has seen.
    Batch = 1,
    /// Synced before publish returns its mid.
    Every = 2,
}

impl SyncMode {
    pub fn from_i32(v: i32) -> Option<SyncMode> {
        match v {
            0 => Some(SyncMode::None),
            1 => Some(SyncMode::Batch),
            2 => Some(SyncMode::Every),
            _ => None,
        }
    }
}

/// A durable key-value map. Errors are reported as `Error::Store`.
pub trait Store: Send {
    /// Insert or replace.
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()>;
    /// Remove; an absent key is not an error.
    fn remove(&mut self, key: &[u8]) -> Result<()>;
    /// Every record, once each, in any order.
    fn load_all(&mut self, each: &mut dyn FnMut(&[u8], &[u8])) -> Result<()>;
    /// Everything put or removed so far is on stable storage.
    fn sync(&mut self) -> Result<()>;
}

pub(crate) const FLAG_RELEASED: u8 = 1;
pub(crate) const FLAG_V5: u8 = 2;

pub(crate) fn outgoing_key(mid: u16) -> [u8; 3] {
    let [a, b] = mid.to_be_bytes();
    [b'o', a, b]
}

pub(crate) fn held_key(mid: u16) -> [u8; 3] {
    let [a, b] = mid.to_be_bytes();
    [b'i', a, b]
}

/// A record as read back, borrowed from its key and value.
#[derive(Debug, PartialEq, Eq)]
pub enum Record<'a> {
    Outgoing {
        mid: u16,
        seq: u64,
        v5: bool,
        packet: &'a [u8],
    },
    Released {
        mid: u16,
        seq: u64,
    },
    Held {
        mid: u16,
        v5: bool,
        packet: &'a [u8],
    },
    Subscription {
        filter: &'a str,
        options: u8,
        identifier: Option<u32>,
    },
}

impl<'a> Record<'a> {
    /// `None` for anything this version did not write.
    pub fn parse(key: &'a [u8], value: &'a [u8]) -> Option<Record<'a>> {
        let mid = || match key {
            [_, a, b] => Some(u16::from_be_bytes([*a, *b])).filter(|&m| m != 0),
            _ => None,
        };
        match key.first()? {
            b'o' => {
                let mid = mid()?;
                let (&flags, rest) = value.split_first()?;
                let seq = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
                let packet = &rest[8..];
                if flags & FLAG_RELEASED != 0 {
                    return Some(Record::Released { mid, seq });
                }
                Some(Record::Outgoing {
                    mid,
                    seq,
                    v5: flags & FLAG_V5 != 0,
                    packet,
                })
            }
            b'i' => {
                let mid = mid()?;
                let (&flags, packet) = value.split_first()?;
                Some(Record::Held {
                    mid,
                    v5: flags & FLAG_V5 != 0,
                    packet,
                })
            }
            b's' => {
                let filter = std::str::from_utf8(&key[1..]).ok()?;
                let [options, has_id, a, b, c, d] = value.try_into().ok()?;
                Some(Record::Subscription {
                    filter,
                    options,
                    identifier: (has_id != 0).then(|| u32::from_le_bytes([a, b, c, d])),
                })
            }
            _ => None,
        }
    }
}

/// The session's handle on its store: what to sync when.
pub(crate) struct Durable {
    store: Box<dyn Store>,
    mode: SyncMode,
    /// BATCH: a packet waiting to go out depends on a record not yet synced.
    dirty: bool,
    /// Records written, and how many of them the last sync covered: a queued
    /// message keeps the count of its record's write, and only sending it
    /// makes a sync due, so one sync covers every message queued before it.
    written: u64,
    synced: u64,
    /// Order of outgoing records across lives.
    seq: u64,
    /// Keys of a previous life's records kept until the first CONNACK of a
    /// clean session, which empties them (a crash before it loses nothing).
    pub(crate) stale: std::collections::HashSet<Vec<u8>>,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable")
            .field("mode", &self.mode)
            .field("dirty", &self.dirty)
            .field("seq", &self.seq)
            .finish()
    }
}

impl Durable {
    pub(crate) fn new(store: Box<dyn Store>, mode: SyncMode) -> Durable {
        Durable {
            store,
            mode,
            dirty: false,
            written: 0,
            synced: 0,
            seq: 0,
            stale: Default::default(),
            scratch: Vec::new(),
        }
    }

    pub(crate) fn store_mut(&mut self) -> &mut dyn Store {
        &mut *self.store
    }

    pub(crate) fn see_seq(&mut self, seq: u64) {
        self.seq = self.seq.max(seq);
    }

    /// `urgent`: the record must be stable before anything depending on it
    /// leaves, which EVERY guarantees at once and BATCH before the next
    /// transmit. Other records (a completed flow's removal, a subscription)
    /// are synced by whichever sync comes next: losing them only repeats a
    /// flow or leaves a filter out of a resubscription.
    fn write(&mut self, key: &[u8], value: Option<&[u8]>, urgent: bool) -> Result<()> {
        if !self.stale.is_empty() {
            self.stale.remove(key);
        }
        match value {
            Some(v) => self.store.put(key, v)?,
            None => self.store.remove(key)?,
        }
        self.written += 1;
        // Only what a packet depends on makes the next transmit wait for a
        // sync; the rest rides along with the next one.
        if urgent {
            self.dirty = true;
            if self.mode == SyncMode::Every {
                self.store.sync()?;
                self.dirty = false;
                self.synced = self.written;
            }
        }
        Ok(())
    }

    /// Records loaded from a previous life may still be in the page cache
    /// only (it ended before its sync): BATCH syncs them before the first
    /// packet that may depend on them.
    pub(crate) fn mark_loaded(&mut self) {
        self.dirty = true;
    }

    /// A message stored at write count `written` (`put_outgoing`) is about
    /// to be sent: its record must be stable first.
    pub(crate) fn before_sending(&mut self, written: u64) {
        if written > self.synced {
            self.dirty = true;
        }
    }

    fn put_with_header(
        &mut self,
        key: &[u8],
        header: &[u8],
        body: &[u8],
        urgent: bool,
    ) -> Result<()> {
        let mut value = std::mem::take(&mut self.scratch);
        value.clear();
        value.extend_from_slice(header);
        value.extend_from_slice(body);
        let result = self.write(key, Some(&value), urgent);
        self.scratch = value;
        result
    }

    /// A message accepted by publish (EVERY: synced before this returns).
    /// `sent_now`: its PUBLISH goes out in this turn (BATCH syncs first);
    /// otherwise it is queued and the returned write count goes to
    /// `before_sending` when it leaves the queue.
    pub(crate) fn put_outgoing(
        &mut self,
        mid: u16,
        v5: bool,
        packet: &[u8],
        sent_now: bool,
    ) -> Result<u64> {
        let seq = self.seq + 1;
        let mut header = [0u8; 9];
        header[0] = if v5 { FLAG_V5 } else { 0 };
        header[1..].copy_from_slice(&seq.to_le_bytes());
        let urgent = sent_now || self.mode == SyncMode::Every;
        if let Err(e) = self.put_with_header(&outgoing_key(mid), &header, packet, urgent) {
            // Written but not synced (EVERY): refused, so it must not come
            // back in a later life either.
            let _ = self.store.remove(&outgoing_key(mid));
            return Err(e);
        }
        self.seq = seq;
        Ok(self.written)
    }

    /// Past PUBREC: from now on only PUBREL may be sent for it.
    pub(crate) fn put_released(&mut self, mid: u16) -> Result<()> {
        let seq = self.seq + 1;
        let mut header = [0u8; 9];
        header[0] = FLAG_RELEASED;
        header[1..].copy_from_slice(&seq.to_le_bytes());
        self.put_with_header(&outgoing_key(mid), &header, &[], true)?;
        self.seq = seq;
        Ok(())
    }

    /// A completed outgoing flow. Losing this record only makes a later life
    /// send the message (QoS 1) or the PUBREL (QoS 2) once more, so it is
    /// never synced on its own.
    pub(crate) fn remove_outgoing(&mut self, mid: u16) -> Result<()> {
        self.write(&outgoing_key(mid), None, false)
    }

    pub(crate) fn put_held(&mut self, mid: u16, v5: bool, packet: &[u8]) -> Result<()> {
        self.put_with_header(
            &held_key(mid),
            &[if v5 { FLAG_V5 } else { 0 }],
            packet,
            true,
        )
    }

    /// The held message was delivered (or the broker forgot it): stable
    /// before PUBCOMP, or a later life would take the broker's next message
    /// with this id for a duplicate.
    pub(crate) fn remove_held(&mut self, mid: u16) -> Result<()> {
        self.write(&held_key(mid), None, true)
    }

    pub(crate) fn put_subscription(
        &mut self,
        filter: &str,
        options: u8,
        identifier: Option<u32>,
    ) -> Result<()> {
        let mut key = Vec::with_capacity(1 + filter.len());
        key.push(b's');
        key.extend_from_slice(filter.as_bytes());
        let mut value = [0u8; 6];
        value[0] = options;
        if let Some(id) = identifier {
            value[1] = 1;
            value[2..].copy_from_slice(&id.to_le_bytes());
        }
        self.write(&key, Some(&value), false)
    }

    pub(crate) fn remove_subscription(&mut self, filter: &str) -> Result<()> {
        let mut key = Vec::with_capacity(1 + filter.len());
        key.push(b's');
        key.extend_from_slice(filter.as_bytes());
        self.write(&key, None, false)
    }

    /// Remove what a previous life left (clean session, at CONNACK).
    pub(crate) fn remove_stale(&mut self) -> Result<()> {
        let stale: Vec<Vec<u8>> = self.stale.drain().collect();
        for key in stale {
            self.store.remove(&key)?;
            self.dirty = true;
        }
        Ok(())
    }

    /// BATCH: sync what was written since the last sync (before packets go out).
    pub(crate) fn sync_batch(&mut self) -> Result<()> {
        if self.dirty && self.mode == SyncMode::Batch {
            self.store.sync()?;
            self.dirty = false;
            self.synced = self.written;
        }
        Ok(())
    }
}

/// Load every record of `store` (owned copies).
pub(crate) fn load(store: &mut dyn Store) -> Result<Records> {
    let mut records = Vec::new();
    store.load_all(&mut |k, v| records.push((k.to_vec(), v.to_vec())))?;
    Ok(records)
}

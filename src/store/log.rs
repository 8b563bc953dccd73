//! The built-in store: one append-only log per client id.
//!
//! File `<dir>/<id>.log`: the magic `MQTTLOG\x01`, then records
//! `len(u32) crc(u32) body`, where `body` is `op(u8: 1 put, 2 remove)
//! key_len(u16) key value` and `crc` is the CRC-32 of `len` and `body`.
//! Loading replays the records; the first one that is cut short or fails its
//! checksum ends the log (a write torn by a power loss): it and everything
//! after it are dropped and the file is truncated there. A length field is
//! never trusted beyond the bytes actually in the file.
//!
//! When the live records take less than a quarter of a log above
//! `compact_min` bytes, they are copied to `<id>.log.tmp`, which replaces the
//! log by rename (synced first unless the mode is NONE), so a crash at any
//! point leaves one complete log.
//!
//! The file grows in zero-filled steps of `GROW` bytes ahead of the records,
//! so that appending a record overwrites bytes that exist: `fdatasync` then
//! writes the data alone, without the journal commit (with no journal, the
//! inode write) a size change costs (measured on ext4 here: 0.6 ms instead of
//! 1.7 ms per record + sync under load; 0.14 instead of 0.21 ms on a
//! journal-less ext4). Eight zero bytes where a record header would be end the
//! log when everything after them is zero too; the file is cut back to its
//! records when the store closes.
//!
//! A record is one `pwrite`, a sync one `fdatasync`. `pwritev2(RWF_DSYNC)`,
//! an `O_DSYNC` or `O_DIRECT` descriptor, or 1 MiB steps measure the same
//! (`bench/store_sync.c`): one data write and one cache flush of the device
//! per synced record whichever way, and those two round trips are nearly all
//! of the cost. An `O_DSYNC` descriptor for every write would also sync the
//! removals (two flushes per message).
//!
//! `<dir>/<id>.lock` is held with `flock` while the store is open: a second
//! opener gets `StoreLocked`, and the kernel releases it when the holder dies.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::Store;
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"MQTTLOG\x01";
const OP_PUT: u8 = 1;
const OP_REMOVE: u8 = 2;
/// Largest record body written or read: above any packet the session keeps
/// (256 MiB is MQTT's own limit).
const MAX_BODY: usize = (256 << 20) + 1024;
const DEFAULT_COMPACT_MIN: u64 = 1 << 20;
/// How far ahead of its records the file is zero-filled.
const GROW: u64 = 64 * 1024;

/// CRC-32 (IEEE 802.3, reflected), table-driven.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

fn crc32_update(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = CRC_TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

pub fn crc32(parts: &[&[u8]]) -> u32 {
    !parts.iter().fold(!0u32, |crc, p| crc32_update(crc, p))
}

/// What loading found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Live records loaded.
    pub records: usize,
    /// Complete records read (puts and removes).
    pub replayed: usize,
    /// A torn or corrupt tail: its offset, its length in bytes, and why.
    pub dropped: Option<(u64, u64, &'static str)>,
}

/// Where a live record is: its offset in the file, its whole length, and the
/// range of its value within the data scanned.
#[derive(Clone, Debug)]
struct Slot {
    offset: u64,
    len: u32,
}

struct Scan {
    live: HashMap<Vec<u8>, (Slot, std::ops::Range<usize>)>,
    valid_len: usize,
    report: LoadReport,
}

/// Replay a log image. `Err` only for a file that is not a log at all.
fn scan(data: &[u8]) -> Result<Scan> {
    let mut live: HashMap<Vec<u8>, (Slot, std::ops::Range<usize>)> = HashMap::new();
    let mut report = LoadReport::default();
    if data.len() < MAGIC.len() {
        // A log torn before its header was complete holds nothing.
        if !MAGIC.starts_with(data) {
            return Err(Error::Store);
        }
        if !data.is_empty() {
            report.dropped = Some((0, data.len() as u64, "incomplete header"));
        }
        return Ok(Scan {
            live,
            valid_len: 0,
            report,
        });
    }
    if &data[..MAGIC.len()] != MAGIC {
        return Err(Error::Store);
    }
    let mut pos = MAGIC.len();
    let mut bad = None;
    while pos < data.len() {
        let rest = &data[pos..];
        if rest.iter().take(8).all(|&b| b == 0) {
            // The zero-filled room ahead of the records: the end, if it is
            // all zero (else something was written past the end).
            if rest.iter().any(|&b| b != 0) {
                bad = Some("bytes after the end of the log");
            }
            break;
        }
        if rest.len() < 8 {
            bad = Some("record header cut short");
            break;
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_BODY || len > rest.len() - 8 {
            bad = Some("record cut short or length corrupt");
            break;
        }
        let body = &rest[8..8 + len];
        if crc32(&[&rest[..4], body]) != crc {
            bad = Some("checksum mismatch");
            break;
        }
        let parsed = match body {
            [op @ (OP_PUT | OP_REMOVE), a, b, tail @ ..] => {
                let key_len = u16::from_le_bytes([*a, *b]) as usize;
                (key_len <= tail.len()).then_some((*op, key_len))
            }
            _ => None,
        };
        let Some((op, key_len)) = parsed else {
            bad = Some("unknown record");
            break;
        };
        let key = &body[3..3 + key_len];
        if op == OP_PUT {
            let start = pos + 8 + 3 + key_len;
            let slot = Slot {
                offset: pos as u64,
                len: (8 + len) as u32,
            };
            live.insert(key.to_vec(), (slot, start..pos + 8 + len));
        } else {
            live.remove(key);
        }
        report.replayed += 1;
        pos += 8 + len;
    }
    if let Some(why) = bad {
        report.dropped = Some((pos as u64, (data.len() - pos) as u64, why));
    }
    report.records = live.len();
    Ok(Scan {
        live,
        valid_len: pos,
        report,
    })
}

/// Key-value pairs, in the order they were written.
pub type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// Replay a log image held in memory: the live records, and what was
/// dropped. What `LogStore::open` does to the file, without the file (for
/// tests and the fuzz target).
pub fn parse_log(data: &[u8]) -> Result<(Records, LoadReport)> {
    let scan = scan(data)?;
    let mut records: Vec<(u64, Vec<u8>, Vec<u8>)> = scan
        .live
        .into_iter()
        .map(|(k, (slot, range))| (slot.offset, k, data[range].to_vec()))
        .collect();
    records.sort_unstable_by_key(|r| r.0);
    Ok((
        records.into_iter().map(|(_, k, v)| (k, v)).collect(),
        scan.report,
    ))
}

/// The file stem for a client id: bytes outside `[A-Za-z0-9_-]` as `%XX`, so
/// that any id maps to one plain file name and no two ids to the same one.
fn file_stem(client_id: &str) -> String {
    let mut out = String::with_capacity(client_id.len());
    for b in client_id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub struct LogStore {
    dir: PathBuf,
    stem: String,
    file: File,
    /// Bytes of the log that hold complete records (where the next goes).
    len: u64,
    /// The file's size: zeros from `len` up to it.
    allocated: u64,
    index: HashMap<Vec<u8>, Slot>,
    /// Bytes of the live records.
    live_bytes: u64,
    /// Sync the compacted log and the directory before and after the rename.
    durable: bool,
    compact_min: u64,
    /// The records read at open, handed out by the first `load_all`.
    loaded: Option<Records>,
    buf: Vec<u8>,
    _lock: File,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("path", &self.log_path())
            .field("len", &self.len)
            .field("live", &self.index.len())
            .finish()
    }
}

fn io_err(_: std::io::Error) -> Error {
    Error::Store
}

impl LogStore {
    /// Open (creating the directory and the log if needed) and lock the log
    /// of `client_id` in `dir`, and replay it. `durable`: compaction syncs.
    /// `StoreLocked` when another open store (this process or another live
    /// one) holds it; `Store` for an unusable directory or a file that is not
    /// a log.
    pub fn open(dir: &Path, client_id: &str, durable: bool) -> Result<(LogStore, LoadReport)> {
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let stem = file_stem(client_id);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(format!("{stem}.lock")))
            .map_err(io_err)?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                Error::StoreLocked
            } else {
                Error::Store
            });
        }
        let path = dir.join(format!("{stem}.log"));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(io_err)?;
        let scan = scan(&data)?;
        let mut records: Vec<(u64, Vec<u8>, Vec<u8>)> = Vec::with_capacity(scan.live.len());
        let mut index = HashMap::with_capacity(scan.live.len());
        let mut live_bytes = 0;
        for (key, (slot, range)) in scan.live {
            live_bytes += u64::from(slot.len);
            records.push((slot.offset, key.clone(), data[range].to_vec()));
            index.insert(key, slot);
        }
        records.sort_unstable_by_key(|r| r.0);
        let mut allocated = data.len() as u64;
        drop(data);
        let mut len = scan.valid_len as u64;
        if scan.report.dropped.is_some() {
            file.set_len(len).map_err(io_err)?;
            allocated = len;
        }
        if len == 0 {
            file.set_len(0).map_err(io_err)?;
            file.write_all_at(MAGIC, 0).map_err(io_err)?;
            len = MAGIC.len() as u64;
            allocated = len;
        }
        if durable {
            file.sync_data().map_err(io_err)?;
        }
        let mut store = LogStore {
            dir: dir.to_path_buf(),
            stem,
            file,
            len,
            allocated,
            index,
            live_bytes,
            durable,
            compact_min: DEFAULT_COMPACT_MIN,
            loaded: Some(records.into_iter().map(|(_, k, v)| (k, v)).collect()),
            buf: Vec::new(),
            _lock: lock,
        };
        store.maybe_compact();
        Ok((store, scan.report))
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.stem))
    }

    /// Compact once the log exceeds `bytes` and is mostly dead (default 1 MiB).
    pub fn set_compact_min(&mut self, bytes: u64) {
        self.compact_min = bytes;
    }

    /// The log's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn append(&mut self, op: u8, key: &[u8], value: &[u8]) -> Result<()> {
        self.loaded = None;
        let body_len = 3 + key.len() + value.len();
        if key.len() > u16::MAX as usize || body_len > MAX_BODY {
            return Err(Error::Store);
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.extend_from_slice(&(body_len as u32).to_le_bytes());
        buf.extend_from_slice(&[0; 4]);
        buf.push(op);
        buf.extend_from_slice(&(key.len() as u16).to_le_bytes());
        buf.extend_from_slice(key);
        buf.extend_from_slice(value);
        let crc = crc32(&[&buf[..4], &buf[8..]]);
        buf[4..8].copy_from_slice(&crc.to_le_bytes());
        let written = self.file.write_all_at(&buf, self.len);
        let total = buf.len() as u64;
        self.buf = buf;
        if written.is_err() {
            // A partial record (disk full) must not stay in front of the next.
            let _ = self.file.set_len(self.len);
            self.allocated = self.len;
            return Err(Error::Store);
        }
        if self.len + total > self.allocated {
            self.grow(self.len + total);
        }
        let offset = self.len;
        self.len += total;
        if op == OP_PUT {
            let slot = Slot {
                offset,
                len: total as u32,
            };
            if let Some(old) = self.index.insert(key.to_vec(), slot) {
                self.live_bytes -= u64::from(old.len);
            }
            self.live_bytes += total;
        } else if let Some(old) = self.index.remove(key) {
            self.live_bytes -= u64::from(old.len);
        }
        self.maybe_compact();
        Ok(())
    }

    /// The record just written ends at `end`, past the zero-filled room:
    /// zero-fill the next `GROW` bytes. Failing that (disk full), the file
    /// ends with the record and the next append grows it.
    fn grow(&mut self, end: u64) {
        const ZEROS: [u8; 4096] = [0; 4096];
        self.allocated = end;
        let target = (end + GROW).next_multiple_of(GROW);
        while self.allocated < target {
            let n = (target - self.allocated).min(ZEROS.len() as u64) as usize;
            if self.file.write_all_at(&ZEROS[..n], self.allocated).is_err() {
                let _ = self.file.set_len(self.allocated);
                return;
            }
            self.allocated += n as u64;
        }
    }

    fn maybe_compact(&mut self) {
        if self.len > self.compact_min && self.len > 4 * (self.live_bytes + MAGIC.len() as u64) {
            // On failure (disk full) the log stays as it is, still valid.
            let _ = self.compact();
        }
    }

    fn compact(&mut self) -> Result<()> {
        let tmp_path = self.dir.join(format!("{}.log.tmp", self.stem));
        let result = self.write_compacted(&tmp_path);
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp_path);
        }
        result
    }

    fn write_compacted(&mut self, tmp_path: &Path) -> Result<()> {
        let mut slots: Vec<(&Vec<u8>, &Slot)> = self.index.iter().collect();
        slots.sort_unstable_by_key(|(_, s)| s.offset);
        let tmp = File::create(tmp_path).map_err(io_err)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 16, &tmp);
        out.write_all(MAGIC).map_err(io_err)?;
        let mut new_index = HashMap::with_capacity(slots.len());
        let mut pos = MAGIC.len() as u64;
        let mut record = Vec::new();
        for (key, slot) in slots {
            record.resize(slot.len as usize, 0);
            self.file
                .read_exact_at(&mut record, slot.offset)
                .map_err(io_err)?;
            out.write_all(&record).map_err(io_err)?;
            new_index.insert(
                key.clone(),
                Slot {
                    offset: pos,
                    len: slot.len,
                },
            );
            pos += u64::from(slot.len);
        }
        out.flush().map_err(io_err)?;
        drop(out);
        if self.durable {
            tmp.sync_data().map_err(io_err)?;
        }
        std::fs::rename(tmp_path, self.log_path()).map_err(io_err)?;
        if self.durable {
            // The rename itself must survive a power loss.
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err)?;
        }
        // The descriptor was opened for writing; reopen to read and write.
        drop(tmp);
        self.file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.log_path())
            .map_err(io_err)?;
        self.index = new_index;
        self.len = pos;
        self.allocated = pos;
        Ok(())
    }
}

impl Drop for LogStore {
    fn drop(&mut self) {
        // A closed log ends with its last record (tools and copies see no
        // zero room; reopening would accept it either way).
        if self.allocated > self.len {
            let _ = self.file.set_len(self.len);
        }
    }
}

impl Store for LogStore {
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.append(OP_PUT, key, value)
    }

    fn remove(&mut self, key: &[u8]) -> Result<()> {
        if !self.index.contains_key(key) {
            return Ok(());
        }
        self.append(OP_REMOVE, key, &[])
    }

    fn load_all(&mut self, each: &mut dyn FnMut(&[u8], &[u8])) -> Result<()> {
        if let Some(records) = self.loaded.take() {
            for (k, v) in &records {
                each(k, v);
            }
            return Ok(());
        }
        let mut record = Vec::new();
        let mut slots: Vec<&Slot> = self.index.values().collect();
        slots.sort_unstable_by_key(|s| s.offset);
        for slot in slots {
            record.resize(slot.len as usize, 0);
            self.file
                .read_exact_at(&mut record, slot.offset)
                .map_err(io_err)?;
            let key_len = u16::from_le_bytes([record[9], record[10]]) as usize;
            each(&record[11..11 + key_len], &record[11 + key_len..]);
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.file.sync_data().map_err(io_err)
    }
}

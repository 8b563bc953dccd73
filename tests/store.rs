//! Durable sessions with the built-in store: what a new process finds after
//! the last one died (resend with the same mids and DUP, PUBREL flows, no
//! second delivery of an incoming QoS 2 message, the PUBACK/PUBCOMP callbacks
//! of the previous life), the lock, torn and corrupt logs, a full disk, and
//! clean sessions. The crash loops (real SIGKILLs) are in `store_crash.rs`.
//!
//! A "life" here is a `Client` dropped without disconnecting: the process
//! state is gone, the store's files stay, as after a kill.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::thread;
use std::time::Duration;

use common::events::{Event, expect, message_on, recorded_client};
use common::{Broker, HOST, OwnedPacket, PeerConn, ScriptedPeer, TIMEOUT, unique_temp_dir};
use mqtt::protocol::codec::{Packet, Publish, QoS};
use mqtt::store::{LogStore, Store, SyncMode, parse_log};
use mqtt::{Client, Command, Error};

const ALL_MODES: [SyncMode; 3] = [SyncMode::None, SyncMode::Batch, SyncMode::Every];

fn log_file(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.log"))
}

/// A client of a scripted peer, accepted with `session_present`.
fn connect_to_peer(client: &Client, peer: &ScriptedPeer, session_present: bool) -> PeerConn {
    thread::scope(|s| {
        let script = s.spawn(|| {
            let mut conn = peer.accept(TIMEOUT);
            conn.handshake(session_present, TIMEOUT);
            conn
        });
        assert_eq!(client.connect(HOST, 60, peer.port()), Ok(session_present));
        script.join().unwrap()
    })
}

fn publish_packet(mid: u16, qos: QoS, dup: bool, topic: &str, payload: &[u8]) -> Packet<'static> {
    let topic: &'static str = Box::leak(topic.to_owned().into_boxed_str());
    let payload: &'static [u8] = Box::leak(payload.to_vec().into_boxed_slice());
    Packet::Publish(Publish {
        dup,
        qos,
        retain: false,
        topic,
        pkid: mid,
        payload,
        properties: None,
    })
}

#[test]
fn a_new_life_resends_with_the_same_mids_and_runs_their_puback_callbacks() {
    for mode in ALL_MODES {
        let broker = Broker::start();
        let dir = unique_temp_dir("store-resend");
        // First life: accepted offline (never sent), then the process "dies".
        let mut mids = Vec::new();
        {
            let client = Client::new("resender", false).unwrap();
            client.set_persistence(Some(&dir), mode).unwrap();
            for i in 0..5u8 {
                let qos = if i % 2 == 0 {
                    QoS::AtLeastOnce
                } else {
                    QoS::ExactlyOnce
                };
                mids.push((client.publish("store/resend", &[i], qos, false).unwrap(), i));
            }
        }
        let (sub, sub_rx) = recorded_client("resend-sub", true);
        sub.connect(HOST, 60, broker.port()).unwrap();
        sub.loop_start(None).unwrap();
        sub.subscribe(&[("store/resend", QoS::ExactlyOnce)])
            .unwrap();
        expect(&sub_rx, "SUBACK", |e| e.command == Command::SubAck);

        let (client, rx) = recorded_client("resender", false);
        if std::env::var_os("STORE_DEBUG").is_some() {
            client.set_log(
                Some(std::sync::Arc::new(|_: mqtt::log::Level, line: &str| {
                    eprintln!("{line}")
                })),
                mqtt::log::Level::Debug,
            );
        }
        client.set_persistence(Some(&dir), mode).unwrap();
        assert_eq!(client.queued_len(), 5, "{mode:?}");
        client.connect(HOST, 60, broker.port()).unwrap();
        client.loop_start(None).unwrap();
        // Acks come in any order across QoS 1 and QoS 2.
        let mut waiting: Vec<(Command, u16)> = mids
            .iter()
            .map(|&(mid, i)| {
                (
                    if i % 2 == 0 {
                        Command::PubAck
                    } else {
                        Command::PubComp
                    },
                    mid,
                )
            })
            .collect();
        while !waiting.is_empty() {
            let e = expect(&rx, "ack of a previous life's message", |e| {
                matches!(e.command, Command::PubAck | Command::PubComp)
            });
            assert_eq!(e.error, None);
            let at = waiting.iter().position(|w| *w == (e.command, e.mid));
            waiting.remove(at.unwrap_or_else(|| panic!("unexpected {:?} {}", e.command, e.mid)));
        }
        let mut got: Vec<u8> = (0..5)
            .map(|_| message_on(&sub_rx, "store/resend").payload[0])
            .collect();
        got.sort();
        assert_eq!(got, vec![0, 1, 2, 3, 4], "{mode:?}");
        client.disconnect().unwrap();
        client.close();
        drop(client);
        // Completed: a third life finds nothing.
        let third = Client::new("resender", false).unwrap();
        third.set_persistence(Some(&dir), mode).unwrap();
        assert_eq!(third.queued_len() + third.inflight_len(), 0, "{mode:?}");
    }
}

#[test]
fn resent_messages_carry_dup_and_pubrel_flows_are_completed() {
    let dir = unique_temp_dir("store-pubrel");
    let peer = ScriptedPeer::bind();
    let (q1, q2);
    {
        let client = Client::new("flows", false).unwrap();
        client.set_persistence(Some(&dir), SyncMode::Batch).unwrap();
        let mut conn = connect_to_peer(&client, &peer, false);
        client.loop_start(None).unwrap();
        q1 = client
            .publish("t/1", b"one", QoS::AtLeastOnce, false)
            .unwrap();
        q2 = client
            .publish("t/2", b"two", QoS::ExactlyOnce, false)
            .unwrap();
        let p1 = conn.expect_type(3, TIMEOUT);
        let p2 = conn.expect_type(3, TIMEOUT);
        assert_eq!((p1.pkid(), p2.pkid()), (Some(q1), Some(q2)));
        assert!(!p1.publish().dup);
        conn.send_packet(&Packet::pubrec(q2));
        assert_eq!(conn.expect_type(6, TIMEOUT).pkid(), Some(q2));
        client.close();
    }
    // Second life, session present: the QoS 1 message again (DUP, same mid),
    // and for the QoS 2 one only its PUBREL.
    let (client, rx) = recorded_client("flows", false);
    client.set_persistence(Some(&dir), SyncMode::Batch).unwrap();
    let mut conn = connect_to_peer(&client, &peer, true);
    client.loop_start(None).unwrap();
    let mut seen: Vec<OwnedPacket> = vec![conn.expect_packet(TIMEOUT), conn.expect_packet(TIMEOUT)];
    seen.sort_by_key(|p| p.packet_type());
    assert!(seen[0].is(3), "{}", seen[0].name());
    assert_eq!(seen[0].pkid(), Some(q1));
    assert!(seen[0].publish().dup);
    assert_eq!(seen[0].publish().payload, b"one");
    assert!(seen[1].is(6));
    assert_eq!(seen[1].pkid(), Some(q2));
    conn.expect_silence(Duration::from_millis(200));
    conn.send_packet(&Packet::puback(q1));
    conn.send_packet(&Packet::pubcomp(q2));
    expect(&rx, "PUBACK", |e| {
        e.command == Command::PubAck && e.mid == q1
    });
    expect(&rx, "PUBCOMP", |e| {
        e.command == Command::PubComp && e.mid == q2
    });
}

#[test]
fn an_incoming_qos2_message_is_delivered_once_across_lives() {
    for mode in ALL_MODES {
        let dir = unique_temp_dir("store-incoming");
        let peer = ScriptedPeer::bind();
        {
            let (client, rx) = recorded_client("receiver", false);
            client.set_persistence(Some(&dir), mode).unwrap();
            let mut conn = connect_to_peer(&client, &peer, false);
            client.loop_start(None).unwrap();
            conn.send_packet(&publish_packet(
                7,
                QoS::ExactlyOnce,
                false,
                "in/q2",
                b"once",
            ));
            assert_eq!(conn.expect_type(5, TIMEOUT).pkid(), Some(7));
            // Held, not delivered: the "process" dies before PUBREL.
            expect(&rx, "PUBLISH callback", |e| {
                e.command == Command::Publish && e.mid == 7
            });
            client.close();
        }
        let (client, rx) = recorded_client("receiver", false);
        client.set_persistence(Some(&dir), mode).unwrap();
        let mut conn = connect_to_peer(&client, &peer, true);
        client.loop_start(None).unwrap();
        // The broker resends the PUBLISH (its PUBREC may have been lost):
        // acknowledged again, not delivered.
        conn.send_packet(&publish_packet(7, QoS::ExactlyOnce, true, "in/q2", b"once"));
        assert_eq!(conn.expect_type(5, TIMEOUT).pkid(), Some(7));
        conn.send_packet(&Packet::pubrel(7));
        assert_eq!(conn.expect_type(7, TIMEOUT).pkid(), Some(7));
        let delivered = message_on(&rx, "in/q2");
        assert_eq!(delivered.payload, b"once");
        client.close();
        drop(client);

        // Third life: delivered means gone; a PUBREL repeated by the broker
        // (our PUBCOMP lost) gets PUBCOMP and no delivery.
        let (client, rx) = recorded_client("receiver", false);
        client.set_persistence(Some(&dir), mode).unwrap();
        let mut conn = connect_to_peer(&client, &peer, true);
        client.loop_start(None).unwrap();
        conn.send_packet(&Packet::pubrel(7));
        assert_eq!(conn.expect_type(7, TIMEOUT).pkid(), Some(7));
        let pubrel = expect(&rx, "PUBREL callback", |e| e.command == Command::PubRel);
        assert!(!pubrel.is_message(), "{mode:?}: delivered twice");
    }
}

#[test]
fn the_store_is_locked_while_a_client_or_a_live_process_holds_it() {
    let dir = unique_temp_dir("store-lock");
    let first = Client::new("locked", false).unwrap();
    first.set_persistence(Some(&dir), SyncMode::None).unwrap();
    let second = Client::new("locked", false).unwrap();
    assert_eq!(
        second.set_persistence(Some(&dir), SyncMode::None),
        Err(Error::StoreLocked)
    );
    // Another client id is another store.
    let other = Client::new("not-locked", false).unwrap();
    other.set_persistence(Some(&dir), SyncMode::None).unwrap();
    first.close();
    second.set_persistence(Some(&dir), SyncMode::None).unwrap();
    second.close();

    // A live process holding the lock blocks; once it is killed, it does not.
    let lock = dir.join("locked.lock");
    // The shell takes the lock on fd 9 and becomes `sleep`: one process holds it.
    let mut holder = Process::new("sh")
        .args(["-c", "exec 9>>\"$0\" && flock -n 9 && exec sleep 30"])
        .arg(&lock)
        .spawn()
        .expect("sh and flock(1)");
    let blocked = common::wait_until(TIMEOUT, || {
        LogStore::open(&dir, "locked", false).err() == Some(Error::StoreLocked)
    });
    assert!(blocked, "a live process's lock did not block");
    let third = Client::new("locked", false).unwrap();
    assert_eq!(
        third.set_persistence(Some(&dir), SyncMode::None),
        Err(Error::StoreLocked)
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    third.set_persistence(Some(&dir), SyncMode::None).unwrap();
}

#[test]
fn options_are_checked_before_anything_changes() {
    let dir = unique_temp_dir("store-args");
    let anonymous = Client::new("", true).unwrap();
    assert_eq!(
        anonymous.set_persistence(Some(&dir), SyncMode::None),
        Err(Error::InvalidArgument)
    );
    let client = Client::new("args", false).unwrap();
    client.set_queue_qos0_offline(true);
    client.publish("t", b"x", QoS::AtLeastOnce, false).unwrap();
    // Accepted in memory already: a store now would not hold it.
    assert_eq!(
        client.set_persistence(Some(&dir), SyncMode::None),
        Err(Error::InvalidArgument)
    );
    assert!(!log_file(&dir, "args").exists());
    // Not a log: refused, the file untouched.
    std::fs::write(log_file(&dir, "garbage"), b"hello world, not a log").unwrap();
    let garbage = Client::new("garbage", false).unwrap();
    assert_eq!(
        garbage.set_persistence(Some(&dir), SyncMode::None),
        Err(Error::Store)
    );
    assert_eq!(
        std::fs::read(log_file(&dir, "garbage")).unwrap(),
        b"hello world, not a log"
    );
}

/// A log with `n` puts of distinct keys; returns it and the offset of each
/// record's start.
fn log_with(n: usize) -> (Vec<u8>, Vec<usize>, mqtt::store::Records) {
    let dir = unique_temp_dir("store-torn");
    let (mut store, _) = LogStore::open(&dir, "torn", false).unwrap();
    let mut offsets = Vec::new();
    let mut records = Vec::new();
    for i in 0..n {
        offsets.push(store.len() as usize);
        let key = vec![b'k', i as u8];
        let value = vec![i as u8; 10 + i];
        store.put(&key, &value).unwrap();
        records.push((key, value));
    }
    drop(store);
    (
        std::fs::read(log_file(&dir, "torn")).unwrap(),
        offsets,
        records,
    )
}

/// A process that dies leaves the zero-filled room ahead of its records in
/// the file: that is the log's clean end, not damage.
#[test]
fn the_zero_room_after_the_records_is_a_clean_end() {
    let dir = unique_temp_dir("store-room");
    let (mut store, _) = LogStore::open(&dir, "room", false).unwrap();
    store.put(b"a", b"first").unwrap();
    store.put(b"b", b"second").unwrap();
    let records_end = store.len();
    // A crash: the store is never closed, so the file keeps its room.
    std::mem::forget(store);
    let log = std::fs::read(log_file(&dir, "room")).unwrap();
    assert!(log.len() as u64 > records_end, "no room grown ahead");
    assert!(log[records_end as usize..].iter().all(|&b| b == 0));
    let (loaded, report) = parse_log(&log).unwrap();
    assert_eq!(report.dropped, None);
    assert_eq!(
        loaded,
        vec![
            (b"a".to_vec(), b"first".to_vec()),
            (b"b".to_vec(), b"second".to_vec())
        ]
    );
    // Bytes after that end are damage: reported, dropped.
    let mut damaged = log.clone();
    let last = damaged.len() - 1;
    damaged[last] = 1;
    let (loaded, report) = parse_log(&damaged).unwrap();
    assert_eq!(loaded.len(), 2);
    let (at, _, why) = report.dropped.unwrap();
    assert_eq!((at, why), (records_end, "bytes after the end of the log"));
}

/// Appends go into the room (the file does not grow per record), and a
/// closed store's file ends with its last record.
#[test]
fn appends_fill_the_room_and_a_closed_log_ends_with_its_records() {
    let dir = unique_temp_dir("store-room-close");
    let (mut store, _) = LogStore::open(&dir, "room", false).unwrap();
    store.put(b"first", &[0; 100]).unwrap();
    let path = log_file(&dir, "room");
    let size = std::fs::metadata(&path).unwrap().len();
    for i in 1..100u8 {
        store.put(&[b'k', i], &[i; 100]).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    }
    let end = store.len();
    drop(store);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), end);
    let (store, report) = LogStore::open(&dir, "room", false).unwrap();
    assert_eq!((report.dropped, report.records), (None, 100));
    drop(store);
}

#[test]
fn a_torn_tail_loses_the_last_record_only() {
    let (log, offsets, records) = log_with(4);
    let last = *offsets.last().unwrap();
    for cut in last..log.len() {
        let (loaded, report) = parse_log(&log[..cut]).unwrap();
        assert_eq!(loaded, records[..3], "cut at {cut}");
        if cut > last {
            assert_eq!(
                report.dropped.map(|d| d.0),
                Some(last as u64),
                "cut at {cut}"
            );
        }
    }
    let (loaded, report) = parse_log(&log).unwrap();
    assert_eq!(loaded, records);
    assert_eq!(report.dropped, None);
}

#[test]
fn a_flipped_byte_drops_its_record_and_everything_after() {
    let (log, offsets, records) = log_with(4);
    for (i, &start) in offsets.iter().enumerate() {
        let end = offsets.get(i + 1).copied().unwrap_or(log.len());
        for at in start..end {
            for bit in [0x01u8, 0x80] {
                let mut damaged = log.clone();
                damaged[at] ^= bit;
                let (loaded, report) = parse_log(&damaged).unwrap();
                assert_eq!(loaded, records[..i], "byte {at} ^ {bit:#x}");
                assert_eq!(report.dropped.map(|d| d.0), Some(start as u64));
            }
        }
    }
    // A length field asking for 4 GiB allocates nothing and drops the tail.
    let mut huge = log.clone();
    huge[offsets[1]..offsets[1] + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(parse_log(&huge).unwrap().0, records[..1]);
}

#[test]
fn a_torn_log_is_truncated_on_open_and_appended_to_after_the_last_good_record() {
    let dir = unique_temp_dir("store-reopen");
    let (mut store, _) = LogStore::open(&dir, "reopen", false).unwrap();
    store.put(b"a", b"1").unwrap();
    store.put(b"b", b"2").unwrap();
    drop(store);
    let path = log_file(&dir, "reopen");
    let full = std::fs::read(&path).unwrap();
    std::fs::write(&path, &full[..full.len() - 1]).unwrap();
    let (mut store, report) = LogStore::open(&dir, "reopen", false).unwrap();
    assert_eq!(report.records, 1);
    assert!(report.dropped.is_some());
    store.put(b"c", b"3").unwrap();
    drop(store);
    let (loaded, report) = parse_log(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(report.dropped, None);
    assert_eq!(
        loaded,
        vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"c".to_vec(), b"3".to_vec())
        ]
    );
}

#[test]
fn a_torn_tail_is_reported_in_the_log_and_the_rest_resent() {
    let broker = Broker::start();
    let dir = unique_temp_dir("store-torn-client");
    {
        let client = Client::new("torn-client", false).unwrap();
        client.set_persistence(Some(&dir), SyncMode::None).unwrap();
        for i in 0..3u8 {
            client
                .publish("torn/t", &[i], QoS::AtLeastOnce, false)
                .unwrap();
        }
    }
    let path = log_file(&dir, "torn-client");
    let full = std::fs::read(&path).unwrap();
    std::fs::write(&path, &full[..full.len() - 3]).unwrap();
    let client = Client::new("torn-client", false).unwrap();
    let (tx, logs) = std::sync::mpsc::channel();
    client.set_log(
        Some(std::sync::Arc::new(
            move |_: mqtt::log::Level, line: &str| {
                let _ = tx.send(line.to_owned());
            },
        )),
        mqtt::log::Level::Warn,
    );
    client.set_persistence(Some(&dir), SyncMode::None).unwrap();
    let line = logs.recv_timeout(TIMEOUT).unwrap();
    assert!(
        line.contains("dropped") && line.contains("2 records"),
        "{line}"
    );
    assert_eq!(client.queued_len(), 2);
    let (sub, sub_rx) = recorded_client("torn-sub", true);
    sub.connect(HOST, 60, broker.port()).unwrap();
    sub.loop_start(None).unwrap();
    sub.subscribe(&[("torn/t", QoS::AtLeastOnce)]).unwrap();
    expect(&sub_rx, "SUBACK", |e| e.command == Command::SubAck);
    client.connect(HOST, 60, broker.port()).unwrap();
    client.loop_start(None).unwrap();
    let got: Vec<u8> = (0..2)
        .map(|_| message_on(&sub_rx, "torn/t").payload[0])
        .collect();
    assert_eq!(got, vec![0, 1]);
}

#[test]
fn the_log_is_compacted_when_most_of_it_is_dead() {
    let dir = unique_temp_dir("store-compact");
    let (mut store, _) = LogStore::open(&dir, "compact", false).unwrap();
    store.set_compact_min(4096);
    let mut max_len = 0;
    for i in 0..2000u32 {
        let key = (i % 8).to_le_bytes();
        store.put(&key, &[7u8; 100]).unwrap();
        if i % 2 == 1 {
            store.remove(&((i - 1) % 8).to_le_bytes()).unwrap();
        }
        max_len = max_len.max(store.len());
    }
    // 2000 records of ~120 bytes written; the log never held much more than
    // 4 KiB of them.
    assert!(max_len < 8192, "{max_len}");
    drop(store);
    let (loaded, _) = parse_log(&std::fs::read(log_file(&dir, "compact")).unwrap()).unwrap();
    let mut keys: Vec<u32> = loaded
        .iter()
        .map(|(k, _)| u32::from_le_bytes(k[..4].try_into().unwrap()))
        .collect();
    keys.sort();
    assert_eq!(keys, vec![1, 3, 5, 7]);
}

#[test]
fn a_clean_session_empties_the_store_at_connack() {
    let broker = Broker::start();
    let dir = unique_temp_dir("store-clean");
    {
        let client = Client::new("cleaner", false).unwrap();
        client.set_persistence(Some(&dir), SyncMode::None).unwrap();
        client
            .publish("clean/t", b"old", QoS::AtLeastOnce, false)
            .unwrap();
    }
    let client = Client::new("cleaner", true).unwrap();
    client.set_persistence(Some(&dir), SyncMode::None).unwrap();
    // Not loaded, but kept until the CONNACK.
    assert_eq!(client.queued_len(), 0);
    let before = parse_log(&std::fs::read(log_file(&dir, "cleaner")).unwrap()).unwrap();
    assert_eq!(before.0.len(), 1);
    client.connect(HOST, 60, broker.port()).unwrap();
    let after = parse_log(&std::fs::read(log_file(&dir, "cleaner")).unwrap()).unwrap();
    assert_eq!(after.0.len(), 0);
}

#[test]
fn subscriptions_come_back_after_the_broker_lost_the_session() {
    let broker = Broker::start();
    let dir = unique_temp_dir("store-subs");
    {
        let (client, rx) = recorded_client("subscriber-life", false);
        client.set_persistence(Some(&dir), SyncMode::Every).unwrap();
        client.connect(HOST, 60, broker.port()).unwrap();
        client.loop_start(None).unwrap();
        client.subscribe(&[("subs/+", QoS::AtLeastOnce)]).unwrap();
        expect(&rx, "SUBACK", |e| e.command == Command::SubAck);
        client.close();
    }
    // A new broker knows nothing of the session: the new life resubscribes.
    let fresh = Broker::start();
    drop(broker);
    let (client, rx) = recorded_client("subscriber-life", false);
    client.set_persistence(Some(&dir), SyncMode::Every).unwrap();
    assert_eq!(client.connect(HOST, 60, fresh.port()), Ok(false));
    client.loop_start(None).unwrap();
    let publisher = Client::new("subs-pub", true).unwrap();
    publisher.connect(HOST, 60, fresh.port()).unwrap();
    publisher.loop_start(None).unwrap();
    // The resubscription races the publisher: publish until one arrives.
    let got = common::wait_until(TIMEOUT, || {
        publisher
            .publish("subs/x", b"hi", QoS::AtLeastOnce, false)
            .unwrap();
        rx.recv_timeout(Duration::from_millis(100))
            .into_iter()
            .chain(rx.try_iter())
            .any(|e: Event| e.topic.as_deref() == Some("subs/x"))
    });
    assert!(got, "not resubscribed");
}

/// The child half of the disk-full test: run with a file size limit.
fn disk_full_child(dir: &Path) {
    let client = Client::new("full", false).unwrap();
    client.set_persistence(Some(dir), SyncMode::Batch).unwrap();
    let payload = [0x5au8; 200];
    let mut accepted = Vec::new();
    let error = loop {
        match client.publish("full/t", &payload, QoS::AtLeastOnce, false) {
            Ok(mid) => accepted.push(mid),
            Err(e) => break e,
        }
        assert!(accepted.len() < 10_000, "the limit never hit");
    };
    let queued = client.queued_len();
    // Still full: refused again, and nothing changed.
    assert_eq!(
        client.publish("full/t", &payload, QoS::ExactlyOnce, false),
        Err(Error::Store)
    );
    assert_eq!(client.queued_len(), queued);
    println!(
        "DISKFULL error={:?} accepted={} queued={queued}",
        error,
        accepted.len()
    );
}

#[test]
fn a_full_disk_refuses_the_publish_and_keeps_what_it_accepted() {
    if let Some(dir) = std::env::var_os("STORE_DISKFULL_CHILD") {
        disk_full_child(Path::new(&dir));
        return;
    }
    use std::os::unix::process::CommandExt;
    let dir = unique_temp_dir("store-full");
    let mut child = Process::new(std::env::current_exe().unwrap());
    child
        .args([
            "--exact",
            "a_full_disk_refuses_the_publish_and_keeps_what_it_accepted",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("STORE_DISKFULL_CHILD", &dir);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        child.pre_exec(|| {
            // A write past the limit fails with EFBIG instead of killing.
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 64 * 1024,
                rlim_max: 64 * 1024,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = child.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.find("DISKFULL").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("no report from the child: {stdout}"));
    assert!(line.contains("error=Store"), "{line}");
    let field = |name: &str| -> usize {
        line.split(' ')
            .find_map(|f| f.strip_prefix(name))
            .unwrap()
            .parse()
            .unwrap()
    };
    let accepted = field("accepted=");
    assert_eq!(field("queued="), accepted);
    assert!(accepted > 100, "{line}");
    assert!(std::fs::metadata(log_file(&dir, "full")).unwrap().len() <= 64 * 1024);

    // Every accepted message is in the store, and goes out.
    let broker = Broker::start();
    let (sub, sub_rx) = recorded_client("full-sub", true);
    sub.connect(HOST, 60, broker.port()).unwrap();
    sub.loop_start(None).unwrap();
    sub.subscribe(&[("full/t", QoS::AtLeastOnce)]).unwrap();
    expect(&sub_rx, "SUBACK", |e| e.command == Command::SubAck);
    let client = Client::new("full", false).unwrap();
    client.set_persistence(Some(&dir), SyncMode::Batch).unwrap();
    assert_eq!(client.queued_len(), accepted);
    client.connect(HOST, 60, broker.port()).unwrap();
    client.loop_start(None).unwrap();
    for _ in 0..accepted {
        message_on(&sub_rx, "full/t");
    }
}

/// A store of the application's (`Client::set_store`) whose writes and syncs
/// can be made to fail.
#[derive(Clone, Default)]
struct Flaky {
    records: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<Vec<u8>, Vec<u8>>>>,
    fail_put: std::sync::Arc<std::sync::atomic::AtomicBool>,
    fail_sync: std::sync::Arc<std::sync::atomic::AtomicBool>,
    syncs: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Store for Flaky {
    fn put(&mut self, key: &[u8], value: &[u8]) -> mqtt::Result<()> {
        if self.fail_put.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::Store);
        }
        self.records
            .lock()
            .unwrap()
            .insert(key.to_vec(), value.to_vec());
        Ok(())
    }
    fn remove(&mut self, key: &[u8]) -> mqtt::Result<()> {
        self.records.lock().unwrap().remove(key);
        Ok(())
    }
    fn load_all(&mut self, each: &mut dyn FnMut(&[u8], &[u8])) -> mqtt::Result<()> {
        for (k, v) in self.records.lock().unwrap().iter() {
            each(k, v);
        }
        Ok(())
    }
    fn sync(&mut self) -> mqtt::Result<()> {
        self.syncs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.fail_sync.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::Store);
        }
        Ok(())
    }
}

#[test]
fn a_failed_write_refuses_the_publish_and_a_failed_sync_sends_nothing() {
    use std::sync::atomic::Ordering::SeqCst;
    let store = Flaky::default();
    let peer = ScriptedPeer::bind();
    let (client, rx) = recorded_client("flaky", false);
    client
        .set_reconnect(Some((
            Duration::from_millis(300),
            Duration::from_millis(400),
        )))
        .unwrap();
    client.set_store(Some(Box::new(store.clone()))).unwrap();
    let mut conn = connect_to_peer(&client, &peer, false);
    client.loop_start(None).unwrap();

    // A write that fails: not accepted, nothing queued, nothing sent.
    store.fail_put.store(true, SeqCst);
    assert_eq!(
        client.publish("flaky/t", b"no", QoS::AtLeastOnce, false),
        Err(Error::Store)
    );
    assert_eq!(client.queued_len() + client.inflight_len(), 0);
    store.fail_put.store(false, SeqCst);

    // A sync that fails: the PUBLISH it was for never reaches the broker;
    // the connection ends with MQTT_ERR_STORE.
    store.fail_sync.store(true, SeqCst);
    let mid = client
        .publish("flaky/t", b"yes", QoS::AtLeastOnce, false)
        .unwrap();
    let seen = conn.expect_closed(TIMEOUT);
    // Syncs work again before the automatic reconnection (300 ms or more).
    store.fail_sync.store(false, SeqCst);
    assert!(seen.iter().all(|p| !p.is(3)), "a PUBLISH went out unsynced");
    let e = expect(&rx, "DISCONNECT", |e| e.command == Command::Disconnect);
    assert_eq!(e.error, Some(Error::Store));
    assert!(store.syncs.load(SeqCst) >= 1);

    // The reconnection sends it.
    let mut conn = peer.accept(TIMEOUT);
    conn.handshake(true, TIMEOUT);
    let publish = conn.expect_type(3, TIMEOUT);
    assert_eq!(publish.pkid(), Some(mid));
    assert_eq!(publish.publish().payload, b"yes");
}

// ---- the session's records, sans-IO: what is stored and synced when -------------

/// A store that logs every operation, shared with the test.
#[derive(Clone, Default)]
struct Recorder {
    ops: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    records: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<Vec<u8>, Vec<u8>>>>,
}

impl Recorder {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.ops.lock().unwrap())
    }
}

fn key_name(key: &[u8]) -> String {
    match key {
        [b'o' | b'i', a, b] => format!("{}{}", key[0] as char, u16::from_be_bytes([*a, *b])),
        _ => String::from_utf8_lossy(key).into_owned(),
    }
}

impl Store for Recorder {
    fn put(&mut self, key: &[u8], value: &[u8]) -> mqtt::Result<()> {
        let released = key[0] == b'o' && value[0] & 1 != 0;
        self.ops.lock().unwrap().push(format!(
            "put {}{}",
            key_name(key),
            if released { " released" } else { "" }
        ));
        self.records
            .lock()
            .unwrap()
            .insert(key.to_vec(), value.to_vec());
        Ok(())
    }
    fn remove(&mut self, key: &[u8]) -> mqtt::Result<()> {
        self.ops
            .lock()
            .unwrap()
            .push(format!("remove {}", key_name(key)));
        self.records.lock().unwrap().remove(key);
        Ok(())
    }
    fn load_all(&mut self, each: &mut dyn FnMut(&[u8], &[u8])) -> mqtt::Result<()> {
        for (k, v) in self.records.lock().unwrap().iter() {
            each(k, v);
        }
        Ok(())
    }
    fn sync(&mut self) -> mqtt::Result<()> {
        self.ops.lock().unwrap().push("sync".into());
        Ok(())
    }
}

mod sans_io {
    use super::*;
    use mqtt::protocol::codec::{ConnAck, ConnectReturnCode};
    use mqtt::protocol::session::{Incoming, Session, SessionConfig};
    use std::time::Instant;

    fn session(store: &Recorder, mode: SyncMode) -> (Session, Instant) {
        let mut s = Session::new(SessionConfig {
            client_id: "sans-io".into(),
            clean_session: false,
            ..SessionConfig::default()
        });
        s.set_store(Some((Box::new(store.clone()), mode))).unwrap();
        let now = Instant::now();
        s.connection_opened(now);
        let n = s.pending_transmit().len();
        s.consume_transmit(now, n);
        s.handle_packet(
            now,
            Packet::ConnAck(ConnAck::new(false, ConnectReturnCode::Accepted)),
        )
        .unwrap();
        store.take();
        (s, now)
    }

    /// Hand out and "write" everything pending, as the reactor's flush does.
    fn flush(s: &mut Session, now: Instant) -> usize {
        let n = s.pending_transmit().len();
        s.consume_transmit(now, n);
        n
    }

    #[test]
    fn batch_syncs_once_before_the_turns_packets_and_only_for_what_they_depend_on() {
        let store = Recorder::default();
        let (mut s, now) = session(&store, SyncMode::Batch);
        let a = s.publish(now, "t", b"a", QoS::AtLeastOnce, false).unwrap();
        let b = s.publish(now, "t", b"b", QoS::ExactlyOnce, false).unwrap();
        // Written at once (a process crash loses nothing), not yet synced.
        assert_eq!(store.take(), vec![format!("put o{a}"), format!("put o{b}")]);
        // One sync, before the bytes are handed out.
        assert!(!s.peek_transmit().is_empty());
        assert!(flush(&mut s, now) > 0);
        assert_eq!(store.take(), vec!["sync"]);
        // Nothing written since: no sync.
        s.handle_timeout(now).unwrap();
        flush(&mut s, now);
        assert_eq!(store.take(), Vec::<String>::new());
        // PUBACK removes, and the removal alone waits for no sync.
        s.handle_packet(now, Packet::puback(a)).unwrap();
        assert_eq!(store.take(), vec![format!("remove o{a}")]);
        s.handle_timeout(now + std::time::Duration::from_secs(60))
            .unwrap();
        assert!(flush(&mut s, now) > 0, "PINGREQ");
        assert_eq!(store.take(), Vec::<String>::new());
        // PUBREC marks released, synced before the PUBREL may go.
        s.handle_packet(now, Packet::pubrec(b)).unwrap();
        assert_eq!(store.take(), vec![format!("put o{b} released")]);
        flush(&mut s, now);
        assert_eq!(store.take(), vec!["sync"]);
        s.handle_packet(now, Packet::pubcomp(b)).unwrap();
        assert_eq!(store.take(), vec![format!("remove o{b}")]);
        // QoS 0 is not stored.
        s.publish(now, "t", b"0", QoS::AtMostOnce, false).unwrap();
        assert_eq!(store.take(), Vec::<String>::new());
    }

    #[test]
    fn batch_syncs_a_queued_message_only_when_it_leaves_and_once_for_all_queued_before() {
        let store = Recorder::default();
        let (mut s, now) = session(&store, SyncMode::Batch);
        s.set_max_inflight(1);
        let a = s.publish(now, "t", b"a", QoS::AtLeastOnce, false).unwrap();
        let b = s.publish(now, "t", b"b", QoS::AtLeastOnce, false).unwrap();
        let c = s.publish(now, "t", b"c", QoS::AtLeastOnce, false).unwrap();
        assert_eq!(s.queued_len(), 2);
        store.take();
        // a goes out: one sync, which also covers b and c.
        assert!(flush(&mut s, now) > 0);
        assert_eq!(store.take(), vec!["sync"]);
        // b leaves the queue at a's PUBACK: already stable, no sync.
        s.handle_packet(now, Packet::puback(a)).unwrap();
        let d = s.publish(now, "t", b"d", QoS::AtLeastOnce, false).unwrap();
        assert!(flush(&mut s, now) > 0, "PUBLISH b");
        assert_eq!(
            store.take(),
            vec![format!("remove o{a}"), format!("put o{d}")]
        );
        s.handle_packet(now, Packet::puback(b)).unwrap();
        assert!(flush(&mut s, now) > 0, "PUBLISH c");
        assert_eq!(store.take(), vec![format!("remove o{b}")]);
        // d was written after the last sync: sending it needs one.
        s.handle_packet(now, Packet::puback(c)).unwrap();
        assert!(flush(&mut s, now) > 0, "PUBLISH d");
        assert_eq!(store.take(), vec![format!("remove o{c}"), "sync".into()]);
        assert_eq!(s.queued_len(), 0);
        assert_eq!(s.inflight_len(), 1);
    }

    #[test]
    fn every_syncs_each_accepted_message_before_publish_returns() {
        let store = Recorder::default();
        let (mut s, now) = session(&store, SyncMode::Every);
        let a = s.publish(now, "t", b"a", QoS::AtLeastOnce, false).unwrap();
        assert_eq!(store.take(), vec![format!("put o{a}"), "sync".into()]);
        flush(&mut s, now);
        // A completed flow's removal is not synced on its own.
        s.handle_packet(now, Packet::puback(a)).unwrap();
        flush(&mut s, now);
        assert_eq!(store.take(), vec![format!("remove o{a}")]);
    }

    #[test]
    fn an_incoming_qos2_message_is_stored_before_pubrec_and_removed_before_pubcomp() {
        let store = Recorder::default();
        let (mut s, now) = session(&store, SyncMode::Every);
        let publish = publish_packet(9, QoS::ExactlyOnce, false, "in", b"x");
        assert!(matches!(
            s.handle_packet(now, publish).unwrap(),
            Some(Incoming::Publish {
                mid: 9,
                message: None
            })
        ));
        assert_eq!(store.take(), vec!["put i9", "sync"]);
        assert!(flush(&mut s, now) > 0, "PUBREC");
        // PUBREL: the message, and no PUBCOMP until it was delivered.
        let released = s.handle_packet(now, Packet::pubrel(9)).unwrap();
        assert!(matches!(
            released,
            Some(Incoming::PubRel {
                mid: 9,
                message: Some(_)
            })
        ));
        assert_eq!(s.peek_transmit(), b"");
        assert_eq!(store.take(), Vec::<String>::new());
        s.delivered(9).unwrap();
        assert_eq!(store.take(), vec!["remove i9", "sync"]);
        assert_eq!(s.peek_transmit(), [0x70, 2, 0, 9], "PUBCOMP 9");
    }

    #[test]
    fn the_records_rebuild_the_session_in_a_new_life() {
        let store = Recorder::default();
        let (mut s, now) = session(&store, SyncMode::None);
        let a = s.publish(now, "t", b"a", QoS::AtLeastOnce, false).unwrap();
        let b = s.publish(now, "t", b"b", QoS::ExactlyOnce, false).unwrap();
        let c = s.publish(now, "t", b"c", QoS::ExactlyOnce, false).unwrap();
        flush(&mut s, now);
        s.handle_packet(now, Packet::pubrec(b)).unwrap();
        s.handle_packet(
            now,
            publish_packet(4, QoS::ExactlyOnce, false, "in", b"held"),
        )
        .unwrap();
        drop(s);

        // Next life: a queued again (DUP), b awaits PUBCOMP, c queued, 4 held.
        let mut s = Session::new(SessionConfig {
            client_id: "sans-io".into(),
            clean_session: false,
            ..SessionConfig::default()
        });
        s.set_store(Some((Box::new(store.clone()), SyncMode::None)))
            .unwrap();
        assert_eq!(s.queued_len(), 2);
        assert_eq!(s.inflight_len(), 1);
        assert_eq!(s.held_incoming_len(), 1);
        // New ids continue after the newest message.
        let d = s.publish(now, "t", b"d", QoS::AtLeastOnce, false).unwrap();
        assert!(![a, b, c].contains(&d));
        s.connection_opened(now);
        flush(&mut s, now);
        s.handle_packet(
            now,
            Packet::ConnAck(ConnAck::new(true, ConnectReturnCode::Accepted)),
        )
        .unwrap();
        let out = s.peek_transmit().to_vec();
        // PUBREL b first, then a, c (DUP set), d.
        let mut rest = &out[..];
        let mut seen = Vec::new();
        while let Ok(mqtt::protocol::codec::Decoded::Packet(p, used)) =
            mqtt::protocol::codec::decode(rest, usize::MAX)
        {
            seen.push(match p {
                Packet::PubRel(ack) => format!("PUBREL {}", ack.pkid),
                Packet::Publish(p) => format!("PUBLISH {} dup {}", p.pkid, p.dup),
                other => format!("{other:?}"),
            });
            rest = &rest[used..];
        }
        assert_eq!(
            seen,
            vec![
                format!("PUBREL {b}"),
                format!("PUBLISH {a} dup true"),
                format!("PUBLISH {c} dup true"),
                format!("PUBLISH {d} dup false"),
            ]
        );
        // The held message is delivered once on PUBREL, not on its resend.
        assert!(
            s.handle_packet(
                now,
                publish_packet(4, QoS::ExactlyOnce, true, "in", b"held")
            )
            .unwrap()
            .is_none()
        );
        match s.handle_packet(now, Packet::pubrel(4)).unwrap() {
            Some(Incoming::PubRel {
                message: Some(m), ..
            }) => assert_eq!(m.payload, b"held"),
            other => panic!("{other:?}"),
        }
    }
}

//! Crash loops: a C program (tests/c_store/crash_client.c) publishing or
//! subscribing with a durable store is SIGKILLed at random moments 20 times
//! and started again on the same store, against a real mosquitto.
//!
//! - Publisher, once per store (built-in log in each sync mode, SQLite):
//!   every QoS 1 id that got a mid arrives at least once, every QoS 2 id
//!   exactly once, at a subscriber of our library that never dies.
//! - Subscriber (QoS 2, persistent session): every message delivered to its
//!   callback exactly once across all its lives.
//!
//! The kill moments are random (the seed is printed; `STORE_CRASH_SEED`
//! replays one). Message counts are scaled to keep the suite's time bounded:
//! `STORE_CRASH_SCALE=10` multiplies them by ten.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use common::library::lib_dir;
use common::{Broker, HOST, unique_temp_dir};
use mqtt::protocol::codec::QoS;
use mqtt::{Client, Command as Cmd, Data};

const KILLS: usize = 20;

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn crash_client() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("store_crash");
        std::fs::create_dir_all(&out).unwrap();
        let exe = out.join("crash_client");
        let lib = lib_dir();
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let output = Command::new(cc)
            .args([
                "-std=c99",
                "-Wall",
                "-Wextra",
                "-pedantic",
                "-Werror",
                "-O2",
                "-g",
            ])
            .arg("-DSQLITE_STORE_NO_MAIN")
            .arg("-I")
            .arg(manifest_dir().join("include"))
            .arg("-o")
            .arg(&exe)
            .arg(manifest_dir().join("tests/c_store/crash_client.c"))
            .arg(manifest_dir().join("c_examples/sqlite_store.c"))
            .arg("-L")
            .arg(lib)
            .arg("-lmqtt")
            .arg("-lsqlite3")
            .arg(format!("-Wl,-rpath,{}", lib.display()))
            .output()
            .expect("run the C compiler");
        assert!(
            output.status.success(),
            "crash_client.c does not compile:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        exe
    })
}

fn scale() -> usize {
    std::env::var("STORE_CRASH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// xorshift64*: kill moments only, no crate needed.
struct Rng(u64);

impl Rng {
    fn new(name: &str) -> Rng {
        let seed = std::env::var("STORE_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("{name}: STORE_CRASH_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// A life of the C program; its stdout lines arrive on the receiver.
fn spawn(args: &[&str]) -> (Child, Receiver<String>) {
    let mut child = Command::new(crash_client())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start crash_client");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// SIGKILL a life; true if it was still running (a real crash, not an exit).
fn kill(child: &mut Child) -> bool {
    let exited = child.try_wait().unwrap();
    let running = exited.is_none();
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        exited.is_none_or(|s| s.code().is_some()),
        "crash_client died by itself: {status:?}"
    );
    assert!(
        !running || status.code().is_none(),
        "crash_client exited by itself: {status:?}"
    );
    running
}

fn read_note(dir: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(dir.join("note")).unwrap_or_default();
    // A line cut by the kill has no newline: it is not a note.
    let complete = text.rsplit_once('\n').map_or("", |(head, _)| head);
    complete
        .lines()
        // "s<id>": where a publisher's life started.
        .filter(|l| !l.starts_with('s'))
        .map(|l| l.parse().expect("a note line is an id"))
        .collect()
}

/// Counts of each id received by an in-process subscriber.
fn subscriber(broker: &Broker, topic: &str) -> (Client, Arc<Mutex<HashMap<u64, u32>>>) {
    let got: Arc<Mutex<HashMap<u64, u32>>> = Default::default();
    // mosquitto may have more QoS 2 messages in flight to it than the
    // default limit of 1000, which would end the connection; a persistent
    // session loses nothing if it ends anyway.
    let client = Client::new(&format!("checker-{topic}"), false).unwrap();
    client.set_max_incoming_qos2(65_535).unwrap();
    let (suback_tx, suback) = channel();
    client.on(
        Cmd::SubAck,
        Arc::new(move |_: &Client, _: &Data<'_>| {
            let _ = suback_tx.send(());
        }),
        None,
        0,
    );
    let sink = got.clone();
    client.connect(HOST, 60, broker.port()).unwrap();
    client
        .loop_start(Some(Arc::new(move |_: &Client, data: &Data<'_>| {
            if let Some(m) = data.message {
                let id: u64 = std::str::from_utf8(m.payload).unwrap().parse().unwrap();
                *sink.lock().unwrap().entry(id).or_default() += 1;
                if std::env::var_os("STORE_CRASH_TRACE").is_some() {
                    eprintln!(
                        "checker: id {id} mid {} qos {:?} dup {} cmd {:?}",
                        m.mid, m.qos, m.dup, data.command
                    );
                }
            }
        })))
        .unwrap();
    client.subscribe(&[(topic, QoS::ExactlyOnce)]).unwrap();
    suback.recv_timeout(common::TIMEOUT).unwrap();
    (client, got)
}

fn broker() -> Broker {
    // Nothing queued for a subscriber may be dropped by the broker.
    Broker::builder()
        .extra_config("max_queued_messages 0\nmax_queued_bytes 0\n")
        .debug_log(std::env::var_os("STORE_CRASH_BROKER_LOG").is_some())
        .start()
}

fn publisher_crash_loop(name: &str, store: &str, sync: &str, total: usize, max_delay_ms: u64) {
    let total = total * scale();
    let started = Instant::now();
    let broker = broker();
    let (checker, got) = subscriber(&broker, "crash/pub");
    let dir = unique_temp_dir(&format!("store-crash-{name}"));
    let dir_s = dir.to_str().unwrap().to_owned();
    let port = broker.port().to_string();
    let total_s = total.to_string();
    let args = ["pub", HOST, &port, &dir_s, store, sync, &total_s];
    let mut rng = Rng::new(name);
    let mut mid_stream = 0;
    let mut progress = Vec::new();
    // The kill moments are random below a bound that follows the speed of
    // this run (it varies several-fold with the machine's load), so that the
    // 20 kills spread over the stream rather than all falling after its end.
    let mut bound = max_delay_ms as f64;
    let per_life = total / (KILLS + 4);
    for _ in 0..KILLS {
        let before = read_note(&dir).len();
        let (mut child, lines) = spawn(&args);
        // From before the store is loaded to well into the publishing.
        thread::sleep(Duration::from_millis(rng.below(bound as u64 + 1)));
        let published = lines.try_iter().any(|l| l == "PUBLISHED");
        if kill(&mut child) && !published {
            mid_stream += 1;
        }
        let after = read_note(&dir).len();
        progress.push(after);
        if after - before > per_life {
            bound = (bound * 0.6).max(5.0);
        } else if after - before < per_life / 4 {
            bound = (bound * 1.4).min(1000.0);
        }
    }
    let (mut child, lines) = spawn(&args);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) if l == "PUBLISHED" => break,
            Ok(_) => {}
            Err(e) => panic!("{name}: the last life did not finish publishing: {e:?}"),
        }
    }
    let noted = read_note(&dir);
    let arrived = common::wait_until(Duration::from_secs(60), || {
        let got = got.lock().unwrap();
        noted.iter().all(|id| got.contains_key(id))
    });
    // A moment more for duplicates, if any, to show up.
    thread::sleep(Duration::from_millis(300));
    kill(&mut child);
    checker.close();
    let got = got.lock().unwrap();
    let missing: Vec<u64> = noted
        .iter()
        .copied()
        .filter(|id| !got.contains_key(id))
        .collect();
    assert!(
        arrived && missing.is_empty(),
        "{name}: {} noted ids never arrived, the first: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    let twice: Vec<(u64, u32)> = got
        .iter()
        .filter(|&(id, &n)| id % 2 == 1 && n > 1)
        .map(|(&id, &n)| (id, n))
        .collect();
    assert!(
        twice.is_empty(),
        "{name}: QoS 2 ids delivered more than once: {twice:?}"
    );
    assert!(
        got.keys().all(|&id| id < total as u64),
        "{name}: unknown ids"
    );
    let qos1_dups: u32 = got
        .iter()
        .filter(|&(id, _)| id % 2 == 0)
        .map(|(_, n)| n - 1)
        .sum();
    let mut distinct: Vec<u64> = noted.clone();
    distinct.sort_unstable();
    distinct.dedup();
    eprintln!(
        "{name}: {total} ids, {KILLS} SIGKILLs ({mid_stream} mid-stream; noted after each: {progress:?}), \
         {} noted, {} distinct received, {qos1_dups} QoS 1 duplicates, 0 QoS 2 duplicates, {:.1} s",
        distinct.len(),
        got.len(),
        started.elapsed().as_secs_f64()
    );
    // The kills must land while it publishes, or nothing was tested.
    assert!(
        mid_stream >= KILLS / 2,
        "{name}: only {mid_stream} kills mid-stream"
    );
}

#[test]
fn crash_loop_publisher_sync_none() {
    publisher_crash_loop("log-none", "log", "0", 40_000, 40);
}

#[test]
fn crash_loop_publisher_sync_batch() {
    publisher_crash_loop("log-batch", "log", "1", 40_000, 120);
}

#[test]
fn crash_loop_publisher_sync_every() {
    publisher_crash_loop("log-every", "log", "2", 2_000, 120);
}

#[test]
fn crash_loop_publisher_sqlite() {
    publisher_crash_loop("sqlite", "sqlite", "1", 40_000, 40);
}

#[test]
fn crash_loop_subscriber() {
    subscriber_crash_loop("subscriber", "log");
}

#[test]
fn crash_loop_subscriber_sqlite() {
    subscriber_crash_loop("subscriber-sqlite", "sqlite");
}

fn subscriber_crash_loop(name: &str, store: &str) {
    let total = 3_000 * scale();
    let started = Instant::now();
    let broker = broker();
    let dir = unique_temp_dir(&format!("store-crash-{name}"));
    let dir_s = dir.to_str().unwrap().to_owned();
    let port = broker.port().to_string();
    let args = ["sub", HOST, &port, &dir_s, store, "1", "crash/sub"];
    let mut rng = Rng::new(name);

    // The first life subscribes (a persistent session) before anything is sent.
    let (mut child, lines) = spawn(&args);
    let line = lines.recv_timeout(common::TIMEOUT).expect("SUBSCRIBED");
    assert_eq!(line, "SUBSCRIBED");
    kill(&mut child);

    let publisher = Client::new(&format!("crash-sub-feed-{store}"), true).unwrap();
    publisher.connect(HOST, 60, broker.port()).unwrap();
    publisher.loop_start(None).unwrap();
    let feed = {
        let publisher = publisher.clone();
        thread::spawn(move || {
            for id in 0..total {
                let payload = id.to_string();
                while publisher
                    .publish("crash/sub", payload.as_bytes(), QoS::ExactlyOnce, false)
                    .is_err()
                {
                    thread::sleep(Duration::from_millis(1));
                }
                // Spread over the kills (about 3 s), so that they fall
                // while messages flow.
                thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let mut mid_stream = 0;
    let mut progress = Vec::new();
    for _ in 0..KILLS {
        let (mut child, _lines) = spawn(&args);
        thread::sleep(Duration::from_millis(20 + rng.below(100)));
        let before = progress.last().copied().unwrap_or(0);
        let after = read_note(&dir).len();
        if kill(&mut child) && after < total {
            mid_stream += 1;
        }
        progress.push(after.max(before));
    }
    feed.join().unwrap();
    let (mut child, _lines) = spawn(&args);
    let done = common::wait_until(Duration::from_secs(60), || {
        let mut ids = read_note(&dir);
        ids.sort_unstable();
        ids.dedup();
        ids.len() >= total
    });
    thread::sleep(Duration::from_millis(300));
    kill(&mut child);
    publisher.close();
    let ids = read_note(&dir);
    let mut counts: HashMap<u64, u32> = HashMap::new();
    for id in &ids {
        *counts.entry(*id).or_default() += 1;
    }
    // A delivery counts once its callback has returned and the store has
    // recorded it; a kill between the two (the callback's note written, the
    // store's one write not yet made) hands the message to the next life
    // again, as the first thing it delivers. Such a repeat sits right across
    // a life's start; any other is a second delivery.
    let text = std::fs::read_to_string(dir.join("note")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut window_repeats = 0;
    let twice: Vec<(u64, u32)> = counts
        .iter()
        .filter(|&(&id, &n)| {
            if n < 2 {
                return false;
            }
            let id = id.to_string();
            let at: Vec<usize> = (0..lines.len()).filter(|&i| lines[i] == id).collect();
            let across_a_start = at.windows(2).all(|w| {
                let between = &lines[w[0] + 1..w[1]];
                !between.is_empty() && between.iter().all(|l| l.starts_with('s'))
            });
            if across_a_start {
                window_repeats += n - 1;
            }
            !across_a_start
        })
        .map(|(&i, &n)| (i, n))
        .collect();
    assert!(
        twice.is_empty(),
        "{name}: delivered more than once: {twice:?}"
    );
    assert!(
        window_repeats as usize <= KILLS,
        "{name}: {window_repeats} repeats"
    );
    assert!(done, "{name}: only {} of {total} delivered", counts.len());
    eprintln!(
        "{name}: {total} QoS 2 messages, {KILLS} SIGKILLs ({mid_stream} mid-stream; delivered after each: {progress:?}), \
         each delivered exactly once but {window_repeats} repeated by the next life (killed between the callback's \
         return and the store's record), {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        mid_stream >= KILLS / 2,
        "only {mid_stream} kills mid-stream"
    );
}

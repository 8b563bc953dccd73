//! Load against a real mosquitto: 8 threads publish QoS 1 messages through one
//! client while another thread subscribes and unsubscribes in a loop on the
//! same client, and a second client receives everything on its loop thread.
//!
//! Asserts: no deadlock (every phase bounded), every mid handed out is unique
//! among the flows in flight (publishes and (un)subscribe requests share the id
//! space) and gets exactly one acknowledgement, and the subscriber receives
//! every message, in order per topic.
//!
//! `MQTT_STRESS_SCALE` multiplies the 10,000 messages per thread (a factor,
//! e.g. `0.1` or `10`; default 1). Soak:
//! `MQTT_STRESS_SCALE=20 cargo test --release --test stress -- --nocapture`

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::{Broker, TIMEOUT, wait_until};
use mqtt::{Client, Command, Data, Error, QoS};

const THREADS: usize = 8;
const BASE_PER_THREAD: usize = 10_000;

fn per_thread() -> usize {
    let scale = std::env::var("MQTT_STRESS_SCALE")
        .ok()
        .map(|s| {
            s.trim()
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("MQTT_STRESS_SCALE={s:?} is not a number"))
        })
        .unwrap_or(1.0);
    assert!(scale > 0.0, "MQTT_STRESS_SCALE must be positive");
    ((BASE_PER_THREAD as f64 * scale).round() as usize).max(1)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a mid in flight on the publishing client stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Publish { thread: usize, index: usize },
    Subscribe,
    Unsubscribe,
}

/// The publishing client's flows in flight, by mid. API calls that hand out a
/// mid are made with this lock held, so an acknowledgement (whose callback
/// takes the lock too) always finds its mid registered.
#[derive(Default)]
struct Tracker {
    in_flight: HashMap<u16, Flow>,
    /// Per publishing thread, per message: acknowledged.
    acked: Vec<Vec<bool>>,
    acked_count: usize,
    errors: Vec<String>,
}

impl Tracker {
    fn start(&mut self, mid: u16, flow: Flow) {
        if let Some(old) = self.in_flight.insert(mid, flow) {
            self.errors.push(format!(
                "mid {mid} handed out for {flow:?} while {old:?} is in flight"
            ));
        }
    }

    fn finish(&mut self, mid: u16, command: Command) {
        let flow = self.in_flight.remove(&mid);
        match (command, flow) {
            (Command::PubAck, Some(Flow::Publish { thread, index })) => {
                if std::mem::replace(&mut self.acked[thread][index], true) {
                    self.errors
                        .push(format!("message {thread}:{index} acknowledged twice"));
                }
                self.acked_count += 1;
            }
            (Command::SubAck, Some(Flow::Subscribe))
            | (Command::UnsubAck, Some(Flow::Unsubscribe)) => {}
            (command, flow) => self.errors.push(format!(
                "{command:?} for mid {mid}, which stands for {flow:?}"
            )),
        }
    }
}

/// What the subscriber saw, per publishing thread.
#[derive(Default)]
struct Received {
    seen: Vec<Vec<bool>>,
    /// Next index expected per thread (messages of one topic arrive in order).
    next: Vec<usize>,
    unique: usize,
    duplicates: usize,
    out_of_order: Vec<String>,
}

impl Received {
    fn record(&mut self, topic: &str, payload: &[u8]) {
        let parsed = std::str::from_utf8(payload).ok().and_then(|p| {
            let (t, i) = p.split_once(':')?;
            Some((t.parse::<usize>().ok()?, i.parse::<usize>().ok()?))
        });
        let Some((thread, index)) = parsed else {
            self.out_of_order
                .push(format!("unexpected message on {topic}: {payload:02x?}"));
            return;
        };
        if topic != format!("stress/{thread}") || index >= self.seen[thread].len() {
            self.out_of_order
                .push(format!("unexpected message {thread}:{index} on {topic}"));
            return;
        }
        if std::mem::replace(&mut self.seen[thread][index], true) {
            self.duplicates += 1;
            return;
        }
        self.unique += 1;
        if index != self.next[thread] && self.out_of_order.len() < 10 {
            self.out_of_order.push(format!(
                "thread {thread}: got {index}, expected {}",
                self.next[thread]
            ));
        }
        self.next[thread] = index + 1;
    }
}

/// Retry an API call while the client's queue (or id space) is full.
fn retry_while_full(
    tracker: &Mutex<Tracker>,
    flow: Flow,
    mut call: impl FnMut() -> Result<u16, Error>,
    full: &AtomicUsize,
) {
    loop {
        let mut t = lock(tracker);
        match call() {
            Ok(mid) => {
                t.start(mid, flow);
                return;
            }
            Err(Error::QueueFull) => {
                drop(t);
                full.fetch_add(1, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("{flow:?}: {e:?}"),
        }
    }
}

/// Wait for the churn thread's acknowledgement of `mid` (deadlock detector).
fn expect_ack(acks: &Receiver<(Command, u16)>, command: Command, mid: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match acks.recv_timeout(left) {
            Ok((c, m)) if c == command && m == mid => return,
            Ok(_) => {}
            Err(_) => panic!("no {command:?} for mid {mid} within 60 s"),
        }
    }
}

#[test]
fn eight_publishing_threads_and_a_subscription_churn_lose_nothing() {
    let per_thread = per_thread();
    let total = THREADS * per_thread;
    // Generous: a deadlock shows as a timeout, never as a hang.
    let limit =
        Duration::from_secs(120).mul_f64((per_thread as f64 / BASE_PER_THREAD as f64).max(1.0));
    let started = Instant::now();

    // Unlimited broker-side queue: mosquitto drops QoS 1 messages beyond 1000
    // queued for a slow subscriber by default, which would not be our loss.
    let broker = Broker::builder()
        .extra_config("max_queued_messages 0")
        .start();

    // The subscriber: its loop thread delivers every message.
    let subscriber = Client::new("stress-sub", true).unwrap();
    let received = Arc::new(Mutex::new(Received {
        seen: vec![vec![false; per_thread]; THREADS],
        next: vec![0; THREADS],
        ..Received::default()
    }));
    let (sub_tx, sub_rx) = channel();
    {
        let received = received.clone();
        subscriber
            .loop_start(Some(Arc::new(move |_: &Client, data: &Data<'_>| {
                let m = data.message.expect("on_message without a message");
                lock(&received).record(m.topic, m.payload);
            })))
            .unwrap();
        subscriber.on(
            Command::SubAck,
            Arc::new(move |_: &Client, data: &Data<'_>| {
                let _ = sub_tx.send(data.granted_qos.to_vec());
            }),
            None,
            0,
        );
    }
    subscriber
        .connect(broker.host(), 60, broker.port())
        .unwrap();
    subscriber
        .subscribe(&[("stress/+", QoS::AtLeastOnce)])
        .unwrap();
    assert_eq!(sub_rx.recv_timeout(TIMEOUT), Ok(vec![1]));

    // The publisher: every acknowledgement is checked against the tracker.
    let publisher = Client::new("stress-pub", true).unwrap();
    publisher.set_queue_limits(20_000, 64 << 20).unwrap();
    let tracker = Arc::new(Mutex::new(Tracker {
        acked: vec![vec![false; per_thread]; THREADS],
        ..Tracker::default()
    }));
    let (ack_tx, ack_rx) = channel::<(Command, u16)>();
    for command in [Command::PubAck, Command::SubAck, Command::UnsubAck] {
        let tracker = tracker.clone();
        let ack_tx: Sender<(Command, u16)> = ack_tx.clone();
        publisher.on(
            command,
            Arc::new(move |_: &Client, data: &Data<'_>| {
                lock(&tracker).finish(data.mid, data.command);
                if data.command != Command::PubAck {
                    let _ = ack_tx.send((data.command, data.mid));
                }
            }),
            None,
            0,
        );
    }
    let lost = Arc::new(AtomicBool::new(false));
    {
        let lost = lost.clone();
        publisher.on(
            Command::Disconnect,
            Arc::new(move |_: &Client, data: &Data<'_>| {
                eprintln!("publisher disconnected: {:?}", data.error);
                lost.store(true, Ordering::Relaxed);
            }),
            None,
            0,
        );
    }
    publisher.loop_start(None).unwrap();
    publisher.connect(broker.host(), 60, broker.port()).unwrap();

    let full = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let publishers: Vec<_> = (0..THREADS)
        .map(|thread| {
            let (publisher, tracker, full, finished) = (
                publisher.clone(),
                tracker.clone(),
                full.clone(),
                finished.clone(),
            );
            thread::spawn(move || {
                let topic = format!("stress/{thread}");
                for index in 0..per_thread {
                    let payload = format!("{thread}:{index}");
                    retry_while_full(
                        &tracker,
                        Flow::Publish { thread, index },
                        || publisher.publish(&topic, payload.as_bytes(), QoS::AtLeastOnce, false),
                        &full,
                    );
                }
                finished.fetch_add(1, Ordering::Release);
            })
        })
        .collect();

    // The churn: subscribe / unsubscribe on another topic until the
    // publishers are done, each request waiting for its acknowledgement.
    let churn = {
        let (publisher, tracker, full, finished) = (
            publisher.clone(),
            tracker.clone(),
            full.clone(),
            finished.clone(),
        );
        thread::spawn(move || {
            let mut cycles = 0usize;
            while finished.load(Ordering::Acquire) < THREADS {
                let mut mid = 0;
                retry_while_full(
                    &tracker,
                    Flow::Subscribe,
                    || {
                        mid = publisher.subscribe(&[("churn/+/x", QoS::AtLeastOnce)])?;
                        Ok(mid)
                    },
                    &full,
                );
                expect_ack(&ack_rx, Command::SubAck, mid);
                retry_while_full(
                    &tracker,
                    Flow::Unsubscribe,
                    || {
                        mid = publisher.unsubscribe(&["churn/+/x"])?;
                        Ok(mid)
                    },
                    &full,
                );
                expect_ack(&ack_rx, Command::UnsubAck, mid);
                cycles += 1;
            }
            cycles
        })
    };

    let progress = || {
        format!(
            "{} of {THREADS} threads finished, {} of {total} acknowledged, {} received, \
             {} QueueFull retries, {:?} elapsed",
            finished.load(Ordering::Acquire),
            lock(&tracker).acked_count,
            lock(&received).unique,
            full.load(Ordering::Relaxed),
            started.elapsed()
        )
    };
    assert!(
        wait_until(limit, || finished.load(Ordering::Acquire) == THREADS),
        "publishers stuck (deadlock?): {}",
        progress()
    );
    let published_in = started.elapsed();
    for p in publishers {
        p.join().unwrap();
    }
    assert!(
        wait_until(limit, || lock(&tracker).acked_count == total
            && lock(&received).unique == total),
        "not everything acknowledged and received: {}",
        progress()
    );
    let cycles = churn.join().unwrap();
    assert!(
        !lost.load(Ordering::Relaxed),
        "the publisher lost its connection"
    );

    {
        let t = lock(&tracker);
        assert!(
            t.errors.is_empty(),
            "{} errors: {:?}",
            t.errors.len(),
            &t.errors[..t.errors.len().min(10)]
        );
        assert!(t.in_flight.is_empty(), "still in flight: {:?}", t.in_flight);
        assert!(t.acked.iter().flatten().all(|&a| a));
    }
    {
        let r = lock(&received);
        assert!(r.out_of_order.is_empty(), "{:?}", r.out_of_order);
        assert!(r.seen.iter().flatten().all(|&s| s));
        assert_eq!(r.duplicates, 0, "duplicates without any reconnection");
    }
    assert_eq!(publisher.inflight_len(), 0);
    assert_eq!(publisher.queued_len(), 0);
    assert!(cycles > 0, "the churn thread never completed a cycle");
    eprintln!(
        "stress: {total} messages from {THREADS} threads, published in {published_in:?}, \
         all acknowledged and received in {:?}; {cycles} subscribe/unsubscribe cycles; \
         {} QueueFull retries",
        started.elapsed(),
        full.load(Ordering::Relaxed)
    );
    publisher.disconnect().unwrap();
    subscriber.disconnect().unwrap();
    publisher.close();
    subscriber.close();
}

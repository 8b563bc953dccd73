//! Chaos: a `FaultProxy` cutting every connection at random every few hundred
//! milliseconds between one client and a real mosquitto, while thousands of
//! QoS 1 and QoS 2 messages flow. Persistent sessions; the other client is
//! connected directly. Nothing may be lost, QoS 2 must arrive exactly once and
//! in order, and every connection loss and every reconnection must be reported.
//!
//! The random cuts are seeded; the seed is printed and `MQTT_TEST_SEED=<seed>`
//! replays the same cut intervals. `MQTT_CHAOS_DEBUG=1` logs every packet at
//! the broker (slower; with `MQTT_TEST_KEEP_DIRS=1` the log is kept).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use common::{Broker, FaultProxy, HOST, TIMEOUT};
use mqtt::protocol::codec::QoS;
use mqtt::{Client, Command, Data, Error};

/// Messages per QoS level.
const PER_QOS: usize = 5000;
/// Random cut interval, milliseconds.
const CUTS_MS: (u64, u64) = (200, 500);
/// Each chaos run must finish well under a minute.
const BUDGET: Duration = Duration::from_secs(50);
/// One QoS 1 and one QoS 2 message per PACE: 5,000 of each take about 10 s.
const PACE: Duration = Duration::from_millis(2);
/// Added by the proxy to every chunk, each way.
const LATENCY: Duration = Duration::from_millis(2);
const TOPIC_Q1: &str = "chaos/1";
const TOPIC_Q2: &str = "chaos/2";
const TOPIC_END: &str = "chaos/end";
/// mosquitto's default `max_inflight_messages`.
const MOSQUITTO_MAX_INFLIGHT: usize = 20;

#[derive(Debug)]
enum Ev {
    /// An application message: its QoS and its sequence number (the payload).
    Message {
        qos: QoS,
        topic: String,
        seq: usize,
    },
    /// PUBACK or PUBCOMP for one of our messages.
    Outcome(u16),
    ConnAck(bool),
    Disconnect(Option<Error>),
}

fn on(client: &Client, command: Command, tx: &Sender<Ev>, map: fn(&Data<'_>) -> Option<Ev>) {
    let tx = tx.clone();
    client.on(
        command,
        Arc::new(move |_: &Client, data: &Data<'_>| {
            if let Some(ev) = map(data) {
                let _ = tx.send(ev);
            }
        }),
        None,
        0,
    );
}

fn message(data: &Data<'_>) -> Option<Ev> {
    // QoS 2 messages come with the PUBREL; the PUBLISH that starts them has none.
    let m = data.message?;
    let seq = std::str::from_utf8(m.payload).ok()?.parse().ok()?;
    Some(Ev::Message {
        qos: m.qos,
        topic: m.topic.to_owned(),
        seq,
    })
}

/// A persistent-session client whose events go to a channel.
fn chaos_client(id: &str) -> (Client, Receiver<Ev>) {
    let client = Client::new(id, false).unwrap();
    let (tx, rx) = channel();
    on(&client, Command::Publish, &tx, message);
    on(&client, Command::PubRel, &tx, message);
    on(&client, Command::PubAck, &tx, |d| Some(Ev::Outcome(d.mid)));
    on(&client, Command::PubComp, &tx, |d| Some(Ev::Outcome(d.mid)));
    on(&client, Command::ConnAck, &tx, |d| {
        Some(Ev::ConnAck(d.session_present))
    });
    on(&client, Command::Disconnect, &tx, |d| {
        Some(Ev::Disconnect(d.error))
    });
    client
        .set_reconnect(Some((
            Duration::from_millis(10),
            Duration::from_millis(200),
        )))
        .unwrap();
    client.set_queue_limits(4 * PER_QOS, 64 << 20).unwrap();
    // mosquitto 2.0 counts open incoming QoS 2 flows against its
    // `max_inflight_messages` (20); beyond it, it PUBACKs a QoS 1 message it
    // drops ("quota exceeded" does not fit in a 3.1.1 PUBACK) and disconnects.
    // A 3.1.1 client cannot learn that limit: the window must not exceed it.
    client.set_max_inflight(MOSQUITTO_MAX_INFLIGHT).unwrap();
    (client, rx)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behind {
    Publisher,
    Subscriber,
}

/// What the subscriber saw, per QoS level.
#[derive(Default)]
struct Received {
    seqs: Vec<usize>,
    seen: Vec<bool>,
    unique: usize,
}

impl Received {
    fn add(&mut self, seq: usize) {
        if self.seen.is_empty() {
            self.seen = vec![false; PER_QOS];
        }
        self.seqs.push(seq);
        if seq < PER_QOS && !self.seen[seq] {
            self.seen[seq] = true;
            self.unique += 1;
        }
    }

    fn lost(&self) -> usize {
        PER_QOS - self.unique
    }

    fn duplicated(&self) -> usize {
        self.seqs.len() - self.unique
    }
}

/// Connection history of the client behind the proxy.
#[derive(Default)]
struct Links {
    connacks: usize,
    sessions_lost: usize,
    disconnects: usize,
    silent_disconnects: usize,
    reasons: HashMap<Option<Error>, usize>,
}

impl Links {
    /// Returns the event back if it is not about the connection.
    fn note(&mut self, ev: Ev) -> Option<Ev> {
        match ev {
            Ev::ConnAck(present) => {
                self.connacks += 1;
                // The very first CONNACK has no session yet.
                if !present && self.connacks > 1 {
                    self.sessions_lost += 1;
                }
                None
            }
            Ev::Disconnect(error) => {
                self.disconnects += 1;
                *self.reasons.entry(error).or_default() += 1;
                if error.is_none() {
                    self.silent_disconnects += 1;
                }
                None
            }
            other => Some(other),
        }
    }
}

fn run_chaos(behind: Behind) {
    let label = match behind {
        Behind::Publisher => "publisher behind the proxy",
        Behind::Subscriber => "subscriber behind the proxy",
    };
    // Unlimited per-client queue: the default (1000) would make mosquitto
    // itself drop messages for the subscriber while it is cut off.
    let broker = Broker::builder()
        .extra_config("max_queued_messages 0")
        .debug_log(std::env::var_os("MQTT_CHAOS_DEBUG").is_some())
        .start();
    let proxy = FaultProxy::start(broker.port());
    let tag = match behind {
        Behind::Publisher => "p",
        Behind::Subscriber => "s",
    };
    let (sub, sub_rx) = chaos_client(&format!("chaos-{tag}-sub"));
    let (publisher, pub_rx) = chaos_client(&format!("chaos-{tag}-pub"));
    let port = |who: Behind| {
        if who == behind {
            proxy.port()
        } else {
            broker.port()
        }
    };
    for (client, who) in [(&sub, Behind::Subscriber), (&publisher, Behind::Publisher)] {
        assert!(!client.connect(HOST, 30, port(who)).unwrap());
        client.loop_start(None).unwrap();
    }
    let mut sub_links = Links::default();
    let mut pub_links = Links::default();
    sub.subscribe(&[("chaos/#", QoS::ExactlyOnce)]).unwrap();
    // The SUBACK is not recorded; a message the subscriber sends itself right
    // after the SUBSCRIBE (same connection, so processed after it) comes back
    // once the subscription is in place.
    sub.publish(TOPIC_END, b"0", QoS::AtLeastOnce, false)
        .unwrap();
    loop {
        let ev = sub_rx
            .recv_timeout(TIMEOUT)
            .expect("subscription not ready");
        if let Some(Ev::Message { topic, .. }) = sub_links.note(ev) {
            if topic == TOPIC_END {
                break;
            }
        }
    }

    // Latency keeps flows open on the link (at every stage) when a cut lands.
    proxy.set_delay(LATENCY);
    proxy.set_random_cuts(Some(CUTS_MS));
    let started = Instant::now();
    let mut q1 = Received::default();
    let mut q2 = Received::default();
    let mut outcomes: HashMap<u16, usize> = HashMap::new();
    let mut published: Option<Vec<(u16, usize, usize)>> = None;
    let mut end_marker = None;
    let mut marker = None;
    let mut deadline = started + BUDGET;
    std::thread::scope(|s| {
        // A steady stream (one QoS 1 and one QoS 2 message every PACE) rather
        // than one burst, so that the transfer spans many cuts.
        let publishing = s.spawn(|| {
            let mut mids = Vec::with_capacity(2 * PER_QOS);
            for seq in 0..PER_QOS {
                let payload = seq.to_string();
                for (i, (topic, qos)) in
                    [(TOPIC_Q1, QoS::AtLeastOnce), (TOPIC_Q2, QoS::ExactlyOnce)]
                        .into_iter()
                        .enumerate()
                {
                    let mid = publisher
                        .publish(topic, payload.as_bytes(), qos, false)
                        .unwrap();
                    mids.push((mid, i, seq));
                }
                let due = started + PACE * (seq as u32 + 1);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            mids
        });
        let mut publishing = Some(publishing);
        loop {
            while let Ok(ev) = sub_rx.recv_timeout(Duration::from_millis(20)) {
                match sub_links.note(ev) {
                    Some(Ev::Message { qos, topic, seq }) => match topic.as_str() {
                        TOPIC_Q1 => {
                            assert_eq!(qos, QoS::AtLeastOnce);
                            q1.add(seq)
                        }
                        TOPIC_Q2 => {
                            assert_eq!(qos, QoS::ExactlyOnce);
                            q2.add(seq)
                        }
                        TOPIC_END if seq == 1 => end_marker = Some(Instant::now()),
                        _ => {}
                    },
                    // The PUBACK of the subscriber's own probe.
                    Some(Ev::Outcome(_)) => {}
                    Some(other) => panic!("unexpected subscriber event {other:?}"),
                    None => {}
                }
            }
            while let Ok(ev) = pub_rx.try_recv() {
                match pub_links.note(ev) {
                    Some(Ev::Outcome(mid)) => *outcomes.entry(mid).or_default() += 1,
                    Some(other) => panic!("unexpected publisher event {other:?}"),
                    None => {}
                }
            }
            if publishing.as_ref().is_some_and(|h| h.is_finished()) {
                published = publishing.take().map(|h| h.join().unwrap());
            }
            if end_marker.is_some() || Instant::now() >= deadline {
                break;
            }
            let complete = published
                .as_ref()
                .is_some_and(|mids| mids.iter().all(|(mid, _, _)| outcomes.contains_key(mid)))
                && q1.lost() == 0
                && q2.lost() == 0;
            if complete && marker.is_none() {
                // Everything is through: stop the chaos and send a last message
                // behind any late duplicate still on its way (QoS 2: delivered
                // on PUBREL, after any QoS 1 or 2 message routed before it).
                proxy.set_random_cuts(None);
                marker = Some(
                    publisher
                        .publish(TOPIC_END, b"1", QoS::ExactlyOnce, false)
                        .unwrap(),
                );
                deadline = Instant::now() + TIMEOUT;
            }
        }
        if let Some(h) = publishing {
            published = Some(h.join().unwrap());
        }
    });
    proxy.set_random_cuts(None);
    let elapsed = started.elapsed();
    let stats = proxy.stats();
    let proxied = match behind {
        Behind::Publisher => &pub_links,
        Behind::Subscriber => &sub_links,
    };
    let published = published.unwrap_or_default();
    let mut finished = 0;
    let mut repeated = 0;
    let mut mid_of = HashMap::new();
    for &(mid, i, seq) in &published {
        mid_of.insert((i, seq), mid);
        match outcomes.remove(&mid) {
            Some(1) => finished += 1,
            Some(_) => repeated += 1,
            None => {}
        }
    }
    if let Some(m) = marker {
        outcomes.remove(&m);
    }
    let stray = outcomes.len();
    eprintln!(
        "chaos, {label}: {elapsed:.2?}; {} proxy cuts, {} TCP connections, {} CONNACKs / {} \
         DISCONNECTs at the proxied client ({} sessions lost, reasons {:?}); \
         QoS 1: sent {PER_QOS}, received {}, duplicated {}, lost {}; \
         QoS 2: sent {PER_QOS}, received {}, duplicated {}, lost {}; \
         final outcomes {finished}/{} (repeated {repeated}, stray {stray}); {} bytes up, {} down",
        stats.cuts,
        stats.accepted,
        proxied.connacks,
        proxied.disconnects,
        proxied.sessions_lost,
        proxied.reasons,
        q1.seqs.len(),
        q1.duplicated(),
        q1.lost(),
        q2.seqs.len(),
        q2.duplicated(),
        q2.lost(),
        2 * PER_QOS,
        stats.bytes_up,
        stats.bytes_down,
    );
    for (i, r) in [&q1, &q2].into_iter().enumerate() {
        let lost: Vec<(usize, Option<&u16>)> = (0..PER_QOS)
            .filter(|&s| r.seen.get(s) != Some(&true))
            .map(|s| (s, mid_of.get(&(i, s))))
            .take(20)
            .collect();
        if !lost.is_empty() {
            eprintln!("QoS {} lost (seq, mid): {lost:?}", i + 1);
        }
    }

    assert_eq!(published.len(), 2 * PER_QOS, "the publisher did not finish");
    assert!(
        end_marker.is_some(),
        "not everything arrived within {BUDGET:?}: {} final outcomes missing, \
         QoS 1 lost {}, QoS 2 lost {}",
        2 * PER_QOS - finished - repeated,
        q1.lost(),
        q2.lost()
    );
    assert!(stats.cuts >= 10, "too little chaos: {} cuts", stats.cuts);
    // Every message reached exactly one final outcome, carrying its mid.
    assert_eq!((finished, repeated, stray), (2 * PER_QOS, 0, 0));
    assert_eq!(q1.lost(), 0, "QoS 1 lost");
    assert_eq!(q2.lost(), 0, "QoS 2 lost");
    assert_eq!(q2.duplicated(), 0, "QoS 2 duplicated");
    assert!(
        q2.seqs.windows(2).all(|w| w[0] < w[1]),
        "QoS 2 out of order"
    );
    // The broker kept the session through every cut ...
    assert_eq!(proxied.sessions_lost, 0);
    // ... and every loss and every reconnection was reported: the client is
    // connected at the end, so one CONNACK more than DISCONNECTs.
    assert!(
        proxied.connacks > 10,
        "hardly reconnected: {}",
        proxied.connacks
    );
    assert_eq!(proxied.connacks, proxied.disconnects + 1);
    assert_eq!(
        proxied.silent_disconnects, 0,
        "a loss reported without its reason"
    );
    let direct = match behind {
        Behind::Publisher => &sub_links,
        Behind::Subscriber => &pub_links,
    };
    assert_eq!((direct.connacks, direct.disconnects), (1, 0));
    publisher.close();
    sub.close();
}

#[test]
fn chaos_publisher_behind_a_cutting_proxy() {
    run_chaos(Behind::Publisher);
}

#[test]
fn chaos_subscriber_behind_a_cutting_proxy() {
    run_chaos(Behind::Subscriber);
}

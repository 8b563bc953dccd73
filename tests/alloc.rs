//! Steady-state traffic allocates nothing: a counting global allocator watches
//! a client that publishes to itself at each QoS through a real mosquitto
//! (publish, flush, receive, deliver, acknowledge), after a warm-up; under
//! MQTT 3.1.1, then under MQTT 5 with a user property on every message and
//! topic aliases on.
//!
//! One test function only: the counter is process-wide. Without the reuse of
//! flow buffers this counts one allocation per QoS 1 and three per QoS 2 message.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::Broker;
use mqtt::protocol::codec::ProtocolVersion;
use mqtt::protocol::properties::{Properties, PropertiesBuf};
use mqtt::{Client, Command, Data, QoS};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const WARM_UP: usize = 500;
const MEASURED: usize = 2000;
const WINDOW: usize = 20;

/// Publish `count` messages keeping at most `WINDOW` unacknowledged (QoS 0:
/// unreceived), waiting by polling atomics so the waiting itself allocates nothing.
fn pump(
    client: &Client,
    qos: QoS,
    props: Properties<'_>,
    received: &AtomicUsize,
    acked: &AtomicUsize,
    count: usize,
) {
    let payload = [0x5au8; 64];
    let start_received = received.load(Ordering::SeqCst);
    let start_acked = acked.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sent = 0;
    while received.load(Ordering::SeqCst) - start_received < count
        || (qos != QoS::AtMostOnce && acked.load(Ordering::SeqCst) - start_acked < count)
    {
        assert!(Instant::now() < deadline, "traffic stalled at {qos:?}");
        let done = if qos == QoS::AtMostOnce {
            received.load(Ordering::SeqCst) - start_received
        } else {
            acked.load(Ordering::SeqCst) - start_acked
        };
        if sent < count && sent - done < WINDOW {
            client
                .publish_with("alloc/t", &payload, qos, false, props)
                .unwrap();
            sent += 1;
        } else {
            std::thread::yield_now();
        }
    }
}

#[test]
fn steady_state_publish_and_receive_allocate_nothing() {
    let broker = Broker::start();
    let v311 = measure(&broker, ProtocolVersion::V311);
    let v5 = measure(&broker, ProtocolVersion::V5);
    eprintln!(
        "allocations during {MEASURED} messages published and received: \
         3.1.1 {v311:?}, 5.0 {v5:?}"
    );
    // Zero per message. The only allocations left are one-offs: a buffer pool
    // growing to a new peak of concurrent flows that the warm-up happened not
    // to reach (timing under load decides the peak). Each slot costs at most
    // four buffers (outgoing packet, held topic, payload and, under MQTT 5,
    // properties), so anything above 4 x WINDOW over MEASURED messages means
    // allocation per message.
    for (version, report) in [("3.1.1", v311), ("5.0", v5)] {
        for (qos, allocations) in report {
            assert!(
                allocations <= 4 * WINDOW,
                "{version} {qos:?}: {allocations} allocations for {MEASURED} messages in steady state"
            );
        }
    }
}

fn measure(broker: &Broker, version: ProtocolVersion) -> Vec<(QoS, usize)> {
    let client = Client::new("alloc-counter", true).unwrap();
    let mut props = PropertiesBuf::new();
    if version == ProtocolVersion::V5 {
        client.set_protocol(version).unwrap();
        client.set_topic_alias_max(10).unwrap();
        props.push_user("sensor", "alloc").unwrap();
    }
    let props = props.as_properties();
    let received = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(AtomicUsize::new(0));
    {
        let received = received.clone();
        client
            .loop_start(Some(Arc::new(move |_: &Client, data: &Data<'_>| {
                assert_eq!(data.message.map(|m| m.payload.len()), Some(64));
                let user = data
                    .message
                    .and_then(|m| m.properties)
                    .and_then(|p| p.user_at(0));
                if version == ProtocolVersion::V5 {
                    assert_eq!(user, Some(("sensor", "alloc")));
                }
                received.fetch_add(1, Ordering::SeqCst);
            })))
            .unwrap();
        for command in [Command::PubAck, Command::PubComp] {
            let acked = acked.clone();
            client.on(
                command,
                Arc::new(move |_: &Client, _: &Data<'_>| {
                    acked.fetch_add(1, Ordering::SeqCst);
                }),
                None,
                0,
            );
        }
    }
    client.connect(broker.host(), 60, broker.port()).unwrap();
    client.subscribe(&[("alloc/#", QoS::ExactlyOnce)]).unwrap();

    let mut report = Vec::new();
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        // Warm up until a whole round allocates nothing: buffer pools fill up
        // to the peak number of concurrent flows the broker's timing produces.
        let mut rounds = 0;
        loop {
            ALLOCATIONS.store(0, Ordering::SeqCst);
            COUNTING.store(true, Ordering::SeqCst);
            pump(&client, qos, props, &received, &acked, WARM_UP);
            COUNTING.store(false, Ordering::SeqCst);
            rounds += 1;
            if ALLOCATIONS.load(Ordering::SeqCst) == 0 || rounds == 10 {
                break;
            }
        }
        ALLOCATIONS.store(0, Ordering::SeqCst);
        COUNTING.store(true, Ordering::SeqCst);
        pump(&client, qos, props, &received, &acked, MEASURED);
        COUNTING.store(false, Ordering::SeqCst);
        report.push((qos, ALLOCATIONS.load(Ordering::SeqCst)));
    }
    client.close();
    report
}

//! Decoding MQTT 5 packets allocates nothing for their properties: a PUBLISH
//! with user properties, an ack with a reason string, and reading the
//! properties back, all under a counting allocator.
//!
//! Only the current thread's allocations are counted, so the test harness
//! running alongside does not disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use mqtt::protocol::codec::{
    Ack, Decoded, Packet, PropertiesBuf, Property, ProtocolVersion, Publish, QoS, decode_as,
};
use mqtt::protocol::properties as props;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the thread-locals may be gone while a thread exits.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: forwards to the system allocator; only counts on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations<R>(f: impl FnOnce() -> R) -> (R, usize) {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    let r = f();
    COUNTING.with(|on| on.set(false));
    (r, ALLOCATIONS.with(|n| n.get()))
}

#[test]
fn decoding_v5_properties_allocates_nothing() {
    let mut properties = PropertiesBuf::new();
    for p in [
        Property::UserProperty("trace-id", "4bf92f3577b34da6"),
        Property::UserProperty("tenant", "acme"),
        Property::ContentType("application/json"),
        Property::SubscriptionIdentifier(7),
        Property::CorrelationData(b"\x00\x01\x02"),
    ] {
        properties.push(p).unwrap();
    }
    let mut stream = Vec::new();
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "sensors/1",
        pkid: 1,
        payload: b"{}",
        properties: Some(properties.as_properties()),
    })
    .encode(&mut stream)
    .unwrap();
    let mut reason = PropertiesBuf::new();
    reason.push(Property::ReasonString("quota")).unwrap();
    Packet::PubAck(Ack {
        pkid: 1,
        reason_code: 0x97,
        properties: Some(reason.as_properties()),
    })
    .encode(&mut stream)
    .unwrap();

    // Warm up anything lazily initialised on first use.
    let _ = decode_as(&stream, usize::MAX, ProtocolVersion::V5);

    let (summary, allocated) = allocations(|| {
        let mut rest = &stream[..];
        let mut users = 0;
        let mut bytes = 0;
        let mut reason_code = 0;
        while let Ok(Decoded::Packet(packet, used)) =
            decode_as(rest, usize::MAX, ProtocolVersion::V5)
        {
            let p = packet.properties().unwrap();
            for property in p.iter() {
                if let Property::UserProperty(k, v) = property {
                    users += 1;
                    bytes += k.len() + v.len();
                }
            }
            bytes += p.str_of(props::CONTENT_TYPE).map_or(0, str::len);
            bytes += p.str_of(props::REASON_STRING).map_or(0, str::len);
            bytes += p.user_at(1).map_or(0, |(k, _)| k.len());
            reason_code = reason_code.max(packet.reason_code().unwrap_or(0));
            rest = &rest[used..];
        }
        (users, bytes, reason_code, rest.len())
    });
    assert_eq!(summary, (2, 8 + 16 + 6 + 4 + 16 + 5 + 6, 0x97, 0));
    assert_eq!(allocated, 0, "decoding and reading properties allocated");
}

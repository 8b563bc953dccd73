//! Threads and callbacks: many publishers at once, API calls from inside
//! callbacks, and closing a client while its loop runs. Bounded in time.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Broker, TIMEOUT, wait_until};
use mqtt::{Client, Command, Data, QoS};

#[test]
fn threads_publishing_qos1_while_the_loop_delivers_lose_nothing() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 500;
    let broker = Broker::start();
    let client = Client::new("many-threads", true).unwrap();
    let received = Arc::new(Mutex::new(HashSet::new()));
    let acked = Arc::new(AtomicUsize::new(0));
    {
        let received = received.clone();
        client
            .loop_start(Some(Arc::new(move |_: &Client, data: &Data<'_>| {
                let m = data.message.unwrap();
                received.lock().unwrap().insert(m.payload.to_vec());
            })))
            .unwrap();
        let acked = acked.clone();
        client.on(
            Command::PubAck,
            Arc::new(move |_: &Client, _: &Data<'_>| {
                acked.fetch_add(1, Ordering::Relaxed);
            }),
            None,
            0,
        );
    }
    client.connect(broker.host(), 30, broker.port()).unwrap();
    client
        .set_queue_limits(THREADS * PER_THREAD, 1 << 24)
        .unwrap();
    client.subscribe(&[("load/#", QoS::AtLeastOnce)]).unwrap();
    let publishers: Vec<_> = (0..THREADS)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                let mut mids = HashSet::new();
                for i in 0..PER_THREAD {
                    let payload = format!("{t}:{i}");
                    let mid = client
                        .publish(
                            &format!("load/{t}"),
                            payload.as_bytes(),
                            QoS::AtLeastOnce,
                            false,
                        )
                        .unwrap();
                    assert!(mids.insert(mid), "mid {mid} handed out twice");
                }
            })
        })
        .collect();
    for p in publishers {
        p.join().unwrap();
    }
    let total = THREADS * PER_THREAD;
    assert!(
        wait_until(Duration::from_secs(20), || received.lock().unwrap().len()
            == total
            && acked.load(Ordering::Relaxed) == total),
        "received {} of {total}, {} acked",
        received.lock().unwrap().len(),
        acked.load(Ordering::Relaxed)
    );
    client.close();
}

#[test]
fn a_callback_may_publish_subscribe_and_disconnect() {
    let broker = Broker::start();
    let client = Client::new("reentrant", true).unwrap();
    let (tx, rx) = channel();
    // On the first message: subscribe to more, publish to it from the callback.
    client.on(
        Command::Publish,
        Arc::new(|c: &Client, data: &Data<'_>| {
            c.subscribe(&[("step/two", QoS::AtLeastOnce)]).unwrap();
            c.publish("step/two", b"from a callback", QoS::AtLeastOnce, false)
                .unwrap();
            let _ = data;
        }),
        Some(Arc::new(|data: &Data<'_>| {
            data.message.is_some_and(|m| m.topic == "step/one")
        })),
        0,
    );
    // On the second: disconnect from the callback.
    let tx2 = tx.clone();
    client.on(
        Command::Publish,
        Arc::new(move |c: &Client, _: &Data<'_>| {
            tx2.send("two").unwrap();
            c.disconnect().unwrap();
        }),
        Some(Arc::new(|data: &Data<'_>| {
            data.message.is_some_and(|m| m.topic == "step/two")
        })),
        0,
    );
    client.on(
        Command::Disconnect,
        Arc::new(move |_: &Client, data: &Data<'_>| {
            assert_eq!(data.error, None);
            tx.send("disconnected").unwrap();
        }),
        None,
        0,
    );
    client.connect(broker.host(), 30, broker.port()).unwrap();
    client.loop_start(None).unwrap();
    client.subscribe(&[("step/one", QoS::AtLeastOnce)]).unwrap();
    client
        .publish("step/one", b"go", QoS::AtLeastOnce, false)
        .unwrap();
    assert_eq!(rx.recv_timeout(TIMEOUT), Ok("two"));
    assert_eq!(rx.recv_timeout(TIMEOUT), Ok("disconnected"));
    assert!(!client.is_connected());
    client.close();
}

#[test]
fn closing_while_the_loop_delivers_stops_callbacks_at_once() {
    let broker = Broker::start();
    let client = Client::new("closer", true).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    {
        let calls = calls.clone();
        client
            .loop_start(Some(Arc::new(move |c: &Client, _: &Data<'_>| {
                calls.fetch_add(1, Ordering::SeqCst);
                // Keep traffic flowing so the loop is busy when close() comes.
                let _ = c.publish("busy/t", b"again", QoS::AtMostOnce, false);
            })))
            .unwrap();
    }
    client.connect(broker.host(), 30, broker.port()).unwrap();
    client.subscribe(&[("busy/#", QoS::AtMostOnce)]).unwrap();
    client
        .publish("busy/t", b"start", QoS::AtLeastOnce, false)
        .unwrap();
    assert!(wait_until(TIMEOUT, || calls.load(Ordering::SeqCst) > 100));
    client.close();
    let after_close = calls.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        after_close,
        "callback after close"
    );
    assert!(!client.loop_running());
}

/// Counts PUBACKs into a channel.
fn acks_to_channel(client: &Client) -> std::sync::mpsc::Receiver<u16> {
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    client.on(
        Command::PubAck,
        Arc::new(move |_: &Client, data: &Data<'_>| {
            let _ = tx.lock().unwrap().send(data.mid);
        }),
        None,
        0,
    );
    rx
}

#[test]
fn a_publish_between_turns_of_the_callers_loop_leaves_before_the_next_turn_sleeps() {
    // No waker is written for it (nobody sleeps yet); the next turn must send it
    // before blocking, or each round trip would wait out the long poll timeout.
    let broker = Broker::start();
    let client = Client::new("callers-loop", true).unwrap();
    let acks = acks_to_channel(&client);
    client.connect(broker.host(), 60, broker.port()).unwrap();
    let started = std::time::Instant::now();
    for i in 0..200 {
        let mid = client
            .publish("callers/loop", b"x", QoS::AtLeastOnce, false)
            .unwrap();
        let mut turns = 0;
        while acks.try_recv().ok() != Some(mid) {
            client.run_once(Duration::from_secs(30)).unwrap();
            turns += 1;
            assert!(turns <= 10, "message {i}: no PUBACK after {turns} turns");
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "message {i} after {:?}: a turn slept with a publish queued",
                started.elapsed()
            );
        }
    }
    client.close();
}

#[test]
fn a_publish_from_another_thread_always_wakes_a_sleeping_loop() {
    // The publisher races the loop thread going back to sleep right after each
    // PUBACK callback: a lost wake-up shows as a 30-second stall.
    let broker = Broker::start();
    let client = Client::new("wake-race", true).unwrap();
    let acks = acks_to_channel(&client);
    client.connect(broker.host(), 60, broker.port()).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let looper = {
        let (client, stop) = (client.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                client.run_once(Duration::from_secs(30)).unwrap();
            }
        })
    };
    for i in 0..2000 {
        let mid = client
            .publish("wake/race", b"x", QoS::AtLeastOnce, false)
            .unwrap();
        assert_eq!(
            acks.recv_timeout(Duration::from_secs(5)),
            Ok(mid),
            "message {i}: PUBACK not seen within 5 s"
        );
    }
    stop.store(true, Ordering::SeqCst);
    client
        .publish("wake/race", b"stop", QoS::AtMostOnce, false)
        .unwrap();
    looper.join().unwrap();
    client.close();
}

#[test]
fn connect_async_from_a_disconnect_callback_connects_again() {
    let broker = Broker::start();
    let (client, events) = common::events::recorded_client("async-from-callback", true);
    client.set_reconnect(None).unwrap();
    let port = broker.port();
    let (disconnected_tx, disconnected) = channel();
    let disconnected_tx = Mutex::new(disconnected_tx);
    // Replaces the recorder's DISCONNECT callback.
    client.on(
        Command::Disconnect,
        Arc::new(move |c: &Client, data: &Data<'_>| {
            let _ = disconnected_tx.lock().unwrap().send(data.error);
            c.connect_async(common::HOST, 30, port).unwrap();
        }),
        None,
        0,
    );
    client.connect(broker.host(), 30, port).unwrap();
    client.loop_start(None).unwrap();
    common::events::expect_connack(&events);
    client.disconnect().unwrap();
    assert_eq!(disconnected.recv_timeout(TIMEOUT), Ok(None));
    // Queued inside the callback: carried out without another thread's help.
    common::events::expect_connack(&events);
    assert!(client.is_connected());
    client.close();
}

#[test]
fn freeing_a_client_inside_its_callback_still_sends_the_disconnect_it_queued() {
    let peer = common::ScriptedPeer::bind();
    let client = Client::new("free-in-callback", true).unwrap();
    client.on(
        Command::Publish,
        Arc::new(|c: &Client, _: &Data<'_>| {
            c.disconnect().unwrap();
            c.close();
        }),
        None,
        0,
    );
    let (connected, mut conn, _) = common::peer::connect_through(&client, &peer, false);
    connected.unwrap();
    client.loop_start(None).unwrap();
    conn.send_packet(&mqtt::protocol::codec::Packet::Publish(
        mqtt::protocol::codec::Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "bye",
            pkid: 0,
            payload: b"",
            properties: None,
        },
    ));
    let disconnect = conn.expect_packet(TIMEOUT);
    assert_eq!(disconnect.name(), "DISCONNECT");
    conn.expect_closed(TIMEOUT);
}

#[test]
fn raising_the_inflight_window_sends_queued_messages_at_once() {
    let peer = common::ScriptedPeer::bind();
    let client = Client::new("raise-window", true).unwrap();
    client.set_max_inflight(1).unwrap();
    let (connected, mut conn, _) = common::peer::connect_through(&client, &peer, false);
    connected.unwrap();
    client.loop_start(None).unwrap();
    let mids: Vec<u16> = (0..3)
        .map(|i| {
            client
                .publish("window", format!("{i}").as_bytes(), QoS::AtLeastOnce, false)
                .unwrap()
        })
        .collect();
    assert_eq!(conn.expect_packet(TIMEOUT).pkid(), Some(mids[0]));
    conn.expect_silence(Duration::from_millis(200));
    // No acknowledgement comes: only the larger window lets the others go.
    client.set_max_inflight(10).unwrap();
    assert_eq!(conn.expect_packet(TIMEOUT).pkid(), Some(mids[1]));
    assert_eq!(conn.expect_packet(TIMEOUT).pkid(), Some(mids[2]));
    client.close();
}

#[test]
fn a_second_loop_start_message_callback_replaces_the_first_for_every_qos() {
    let broker = Broker::start();
    let client = Client::new("two-loop-starts", true).unwrap();
    let (first_tx, first) = channel::<u8>();
    let (second_tx, second) = channel::<u8>();
    let first_tx = Mutex::new(first_tx);
    client
        .loop_start(Some(Arc::new(move |_: &Client, d: &Data<'_>| {
            let _ = first_tx.lock().unwrap().send(d.message.unwrap().payload[0]);
        })))
        .unwrap();
    client.loop_stop().unwrap();
    let second_tx = Mutex::new(second_tx);
    client
        .loop_start(Some(Arc::new(move |_: &Client, d: &Data<'_>| {
            let _ = second_tx
                .lock()
                .unwrap()
                .send(d.message.unwrap().payload[0]);
        })))
        .unwrap();
    client.connect(broker.host(), 30, broker.port()).unwrap();
    client
        .subscribe(&[("replace/#", QoS::ExactlyOnce)])
        .unwrap();
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        // The subscription may still be on its way: retry QoS 0 until it lands.
        let payload = [qos as u8];
        assert!(wait_until(TIMEOUT, || {
            client.publish("replace/t", &payload, qos, false).unwrap();
            second.recv_timeout(Duration::from_millis(200)) == Ok(qos as u8)
        }));
    }
    assert_eq!(
        first.try_recv().ok(),
        None,
        "the first on_message still got messages"
    );
    client.close();
}

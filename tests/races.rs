//! Races between API calls made on different threads at the same moment:
//! loop_start against loop_stop, connect against disconnect, disconnect or
//! close during a connection attempt. Each was a bug found by a review; the
//! racing ones run many iterations so that a regression shows.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::events::{ALL_COMMANDS, Event, drain, expect_disconnect, record};
use common::{Broker, HOST, ScriptedPeer, TIMEOUT, wait_until};
use mqtt::{Client, Command, Data, Error};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A resolver that answers (`addr`, or an error) only once `release` fires,
/// and counts its calls.
fn gated_resolver(
    answer: Option<SocketAddr>,
) -> (
    mqtt::Resolver,
    std::sync::mpsc::Sender<()>,
    Arc<AtomicUsize>,
) {
    let (release_tx, release) = channel::<()>();
    let release = Mutex::new(release);
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let resolver: mqtt::Resolver = Arc::new(move |_: &str, _: u16| {
        counter.fetch_add(1, Ordering::SeqCst);
        let _ = release.lock().unwrap().recv_timeout(TIMEOUT);
        answer
            .map(|a| vec![a])
            .ok_or_else(|| std::io::Error::other("no such name"))
    });
    (resolver, release_tx, calls)
}

fn commands(events: &[Event]) -> Vec<(Command, Option<Error>)> {
    events.iter().map(|e| (e.command, e.error)).collect()
}

#[test]
fn loop_stop_racing_loop_start_neither_hangs_nor_leaves_a_thread_running_unseen() {
    for i in 0..3000 {
        let client = Client::new("", true).unwrap();
        client.loop_start(None).unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let (stopper_client, stopper_barrier) = (client.clone(), barrier.clone());
        let (stopped_tx, stopped) = channel();
        let stopper = thread::spawn(move || {
            stopper_barrier.wait();
            let _ = stopped_tx.send(stopper_client.loop_stop());
        });
        barrier.wait();
        let started = client.loop_start(None);
        assert!(
            stopped.recv_timeout(ms(2000)).is_ok(),
            "iteration {i}: loop_stop hangs (loop_start gave {started:?})"
        );
        stopper.join().unwrap();
        // Whatever the order, one more loop_stop must find the state it reports.
        match client.loop_stop() {
            Ok(()) | Err(Error::LoopNotRunning) => {}
            other => panic!("iteration {i}: loop_stop gave {other:?}"),
        }
        assert!(!client.loop_running());
        client.close();
    }
}

#[test]
fn disconnect_while_connect_async_resolves_the_name_gives_the_attempt_up() {
    let peer = ScriptedPeer::bind();
    let (resolver, release, calls) = gated_resolver(Some(peer.addr()));
    let client = Client::new("give-up-resolving", true).unwrap();
    let events = record(&client, &ALL_COMMANDS);
    client.set_resolver(Some(resolver));
    client.loop_start(None).unwrap();
    client.connect_async("broker.invalid", 30, 1883).unwrap();
    assert!(wait_until(TIMEOUT, || calls.load(Ordering::SeqCst) == 1));
    assert_eq!(client.disconnect(), Ok(()));
    assert_eq!(expect_disconnect(&events).error, None);
    // The resolution finishes after the disconnect: it must not connect.
    release.send(()).unwrap();
    peer.expect_no_connection(ms(500));
    assert!(!client.is_connected());
    assert_eq!(commands(&drain(&events)), vec![]);
    client.close();
}

#[test]
fn disconnect_while_a_failing_resolution_runs_does_not_start_retrying() {
    let (resolver, release, calls) = gated_resolver(None);
    let client = Client::new("give-up-failing", true).unwrap();
    let events = record(&client, &ALL_COMMANDS);
    client.set_reconnect(Some((ms(10), ms(20)))).unwrap();
    client.set_resolver(Some(resolver));
    client.loop_start(None).unwrap();
    client.connect_async("broker.invalid", 30, 1883).unwrap();
    assert!(wait_until(TIMEOUT, || calls.load(Ordering::SeqCst) == 1));
    assert_eq!(client.disconnect(), Ok(()));
    assert_eq!(expect_disconnect(&events).error, None);
    release.send(()).unwrap();
    // With 10-20 ms between retries, a retry loop would have called it again.
    thread::sleep(ms(300));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "resolution retried after disconnect"
    );
    assert_eq!(commands(&drain(&events)), vec![]);
    client.close();
}

#[test]
fn a_refused_disconnect_leaves_nothing_behind_for_the_next_connect() {
    let broker = Broker::start();
    for threaded in [false, true] {
        let client = Client::new("refused-disconnect", true).unwrap();
        let events = record(&client, &ALL_COMMANDS);
        if threaded {
            client.loop_start(None).unwrap();
        }
        assert_eq!(client.disconnect(), Err(Error::NotConnected));
        assert_eq!(client.connect(broker.host(), 30, broker.port()), Ok(false));
        // A disconnect queued before the connect must neither end this
        // connection nor report anything.
        if !threaded {
            client.run_once(Duration::ZERO).unwrap();
        }
        let mut seen = Vec::new();
        assert!(wait_until(TIMEOUT, || {
            seen.extend(commands(&drain(&events)));
            seen.contains(&(Command::ConnAck, None))
        }));
        assert_eq!(seen, vec![(Command::ConnAck, None)], "threaded={threaded}");
        assert!(client.is_connected(), "threaded={threaded}");
        client.close();
    }
}

#[test]
fn a_disconnect_that_succeeds_while_connect_runs_leaves_the_client_disconnected() {
    let broker = Broker::start();
    let port = broker.port();
    for i in 0..300 {
        let client = Client::new(&format!("connect-vs-disconnect-{i}"), true).unwrap();
        client.loop_start(None).unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let (connecting, connect_barrier) = (client.clone(), barrier.clone());
        let connector = thread::spawn(move || {
            connect_barrier.wait();
            connecting.connect(HOST, 30, port)
        });
        barrier.wait();
        for _ in 0..(i % 50) * 20 {
            std::hint::spin_loop();
        }
        let disconnected = client.disconnect();
        let connected = connector.join().unwrap();
        if disconnected.is_ok() {
            assert!(
                wait_until(TIMEOUT, || !client.is_connected()),
                "iteration {i}: disconnect() gave Ok, connect() gave {connected:?}, and the client stays connected"
            );
        } else {
            assert_eq!(disconnected, Err(Error::NotConnected));
            assert_eq!(connected, Ok(false), "iteration {i}");
        }
        client.close();
    }
}

#[test]
fn close_during_a_blocking_connect_ends_it_at_once() {
    for threaded in [false, true] {
        let peer = ScriptedPeer::bind();
        let client = Client::new("close-during-connect", true).unwrap();
        client.set_connect_timeout(Duration::from_secs(10)).unwrap();
        if threaded {
            client.loop_start(None).unwrap();
        }
        let connecting = client.clone();
        let port = peer.port();
        let connector = thread::spawn(move || {
            let started = Instant::now();
            (connecting.connect(HOST, 30, port), started.elapsed())
        });
        // The CONNECT arrives and is never answered.
        let mut conn = peer.accept(TIMEOUT);
        conn.expect_type(1, TIMEOUT);
        client.close();
        let (result, took) = connector.join().unwrap();
        assert_eq!(result, Err(Error::NotConnected), "threaded={threaded}");
        assert!(
            took < Duration::from_secs(3),
            "threaded={threaded}: took {took:?}"
        );
    }
}

#[test]
fn a_blocking_connect_that_timed_out_does_not_connect_later() {
    // The loop thread is held in a slow DISCONNECT callback, so the connect
    // gives up (connect timeout + 2 s) before its request was even looked at.
    let broker = Broker::start();
    let peer = ScriptedPeer::bind();
    let client = Client::new("timed-out-connect", true).unwrap();
    let (in_callback_tx, in_callback) = channel::<()>();
    let in_callback_tx = Mutex::new(in_callback_tx);
    let (release_tx, release) = channel::<()>();
    let release = Mutex::new(release);
    client.on(
        Command::Disconnect,
        Arc::new(move |_: &Client, _: &Data<'_>| {
            let _ = in_callback_tx.lock().unwrap().send(());
            let _ = release
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(10));
        }),
        None,
        0,
    );
    client.set_connect_timeout(ms(500)).unwrap();
    client.loop_start(None).unwrap();
    client.connect(broker.host(), 30, broker.port()).unwrap();
    client.disconnect().unwrap();
    in_callback.recv_timeout(TIMEOUT).unwrap();
    assert_eq!(client.connect(HOST, 30, peer.port()), Err(Error::Timeout));
    release_tx.send(()).unwrap();
    peer.expect_no_connection(ms(500));
    assert!(!client.is_connected());
    client.close();
}

/// disconnect() from the application's thread while the loop thread is busy
/// (a stream of incoming messages keeps it turning). The loop thread used to
/// take disconnect's command before disconnect itself queued the DISCONNECT:
/// it sent one on its own, and disconnect() then reported NotConnected for a
/// disconnect that happened.
#[test]
fn disconnect_while_the_loop_thread_is_busy_succeeds() {
    let broker = Broker::start();
    let feeder = Client::new("busy-feeder", true).unwrap();
    feeder.connect(broker.host(), 30, broker.port()).unwrap();
    feeder.loop_start(None).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeding = {
        let (feeder, stop) = (feeder.clone(), stop.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = feeder.publish("busy/stream", b"x", mqtt::QoS::AtMostOnce, false);
                thread::sleep(Duration::from_micros(50));
            }
        })
    };
    let client = Client::new("busy-listener", true).unwrap();
    client.set_reconnect(None).unwrap();
    let (arrived_tx, arrived) = channel::<()>();
    let arrived_tx = Mutex::new(arrived_tx);
    let on_message: mqtt::dispatch::Callback<Client> = Arc::new(move |_: &Client, _: &Data<'_>| {
        let _ = arrived_tx.lock().unwrap().send(());
    });
    for i in 0..150 {
        client.connect(broker.host(), 30, broker.port()).unwrap();
        client
            .subscribe(&[("busy/stream", mqtt::QoS::AtMostOnce)])
            .unwrap();
        client.loop_start(Some(on_message.clone())).unwrap();
        while arrived.try_recv().is_ok() {}
        // The loop thread is busy delivering the stream.
        arrived
            .recv_timeout(TIMEOUT)
            .expect("a message of the stream");
        assert_eq!(client.disconnect(), Ok(()), "iteration {i}");
        client.loop_stop().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    feeding.join().unwrap();
    feeder.close();
    client.close();
}

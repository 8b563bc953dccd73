//! Many clients on one reactor (issue 15), against a real mosquitto: two
//! thousand connections on one thread (or on none: the test's own loop), a
//! broker restart they all come back from, clients added, freed and added
//! again while messages flow, a client freed from its own callback, and a
//! reactor freed with clients attached.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::{Broker, HOST, wait_until};
use mqtt::dispatch::Callback;
use mqtt::{Client, Command, Data, Error, QoS, Reactor};

/// Clients in the fleet tests: 2,000, or `MQTT_TEST_FLEET` (the README's
/// restart figure for 10,000: `MQTT_TEST_FLEET=10000 cargo test --release
/// --test reactor come_back -- --nocapture`).
fn fleet_size() -> usize {
    std::env::var("MQTT_TEST_FLEET")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000)
}
const LONG: Duration = Duration::from_secs(60);

/// These tests count the process's threads: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Threads of this process.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Threads of this process running a loop (named `mqtt-loop`).
fn loop_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim_end() == "mqtt-loop")
        .count()
}

/// What a fleet's clients saw, counted per client where it matters.
#[derive(Default)]
struct Seen {
    connacks: AtomicUsize,
    resumed: AtomicUsize,
    subacks: AtomicUsize,
    clean_ends: AtomicUsize,
    lost: AtomicUsize,
    /// Messages whose payload named another client.
    misdelivered: AtomicUsize,
    /// QoS 1 resent by the broker with DUP set after a connection loss (its
    /// PUBACK may not have reached the broker): counted apart, not as new.
    redelivered: AtomicUsize,
    /// Messages per client, less DUP resends of a round already seen (a
    /// duplicate without DUP still counts, and fails the tests' counts).
    per_client: Vec<AtomicUsize>,
    /// Rounds each client has seen (bit r), a payload being `i` or `i#r`.
    rounds_per_client: Vec<AtomicUsize>,
    connacks_per_client: Vec<AtomicUsize>,
    /// When each client's latest CONNACK arrived.
    connack_at: Vec<Mutex<Option<Instant>>>,
}

impl Seen {
    fn new(n: usize) -> Arc<Seen> {
        Arc::new(Seen {
            per_client: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            rounds_per_client: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            connacks_per_client: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            connack_at: (0..n).map(|_| Mutex::new(None)).collect(),
            ..Seen::default()
        })
    }

    fn received(&self) -> usize {
        self.per_client
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .sum()
    }

    fn all_connected_times(&self, times: usize) -> bool {
        self.connacks_per_client
            .iter()
            .all(|c| c.load(Ordering::SeqCst) >= times)
    }
}

fn topic(tag: &str, i: usize) -> String {
    format!("fleet/{tag}/{i}")
}

/// `n` clients added to `reactor` before they connect (asynchronously).
fn fleet(
    reactor: &Reactor,
    broker: &Broker,
    tag: &str,
    n: usize,
    clean: bool,
    seen: &Arc<Seen>,
) -> Vec<Client> {
    (0..n)
        .map(|i| {
            let client = Client::new(&format!("{tag}-{i}"), clean).unwrap();
            client
                .set_reconnect(Some((Duration::from_millis(250), Duration::from_secs(4))))
                .unwrap();
            let s = seen.clone();
            client.on(
                Command::ConnAck,
                Arc::new(move |_: &Client, d: &Data<'_>| {
                    if d.session_present {
                        s.resumed.fetch_add(1, Ordering::SeqCst);
                    }
                    *s.connack_at[i].lock().unwrap() = Some(Instant::now());
                    s.connacks_per_client[i].fetch_add(1, Ordering::SeqCst);
                    s.connacks.fetch_add(1, Ordering::SeqCst);
                }),
                None,
                0,
            );
            let s = seen.clone();
            client.on(
                Command::SubAck,
                Arc::new(move |_: &Client, _: &Data<'_>| {
                    s.subacks.fetch_add(1, Ordering::SeqCst);
                }),
                None,
                0,
            );
            let s = seen.clone();
            client.on(
                Command::Disconnect,
                Arc::new(move |_: &Client, d: &Data<'_>| {
                    let counter = if d.error.is_none() {
                        &s.clean_ends
                    } else {
                        &s.lost
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                }),
                None,
                0,
            );
            let s = seen.clone();
            let on_message = Arc::new(move |_: &Client, d: &Data<'_>| {
                let m = d.message.unwrap();
                let payload = std::str::from_utf8(m.payload).unwrap_or("");
                let (client, round) = payload.split_once('#').unwrap_or((payload, "1"));
                if client != i.to_string() {
                    s.misdelivered.fetch_add(1, Ordering::SeqCst);
                }
                let bit = 1 << round.parse::<usize>().unwrap_or(0);
                let seen_before = s.rounds_per_client[i].fetch_or(bit, Ordering::SeqCst) & bit != 0;
                if seen_before && m.dup {
                    s.redelivered.fetch_add(1, Ordering::SeqCst);
                } else {
                    s.per_client[i].fetch_add(1, Ordering::SeqCst);
                }
            });
            client.add_to_reactor(reactor, Some(on_message)).unwrap();
            client.connect_async(HOST, 60, broker.port()).unwrap();
            client
        })
        .collect()
}

/// A publisher on the same reactor, with room for a message per client.
fn publisher(reactor: &Reactor, broker: &Broker, tag: &str) -> (Client, Arc<AtomicUsize>) {
    let client = Client::new(&format!("{tag}-pub"), true).unwrap();
    client.set_max_inflight(200).unwrap();
    let connacks = Arc::new(AtomicUsize::new(0));
    let seen = connacks.clone();
    client.on(
        Command::ConnAck,
        Arc::new(move |_: &Client, _: &Data<'_>| {
            seen.fetch_add(1, Ordering::SeqCst);
        }),
        None,
        0,
    );
    client.add_to_reactor(reactor, None).unwrap();
    client.connect_async(HOST, 60, broker.port()).unwrap();
    (client, connacks)
}

/// Run `reactor` in this thread, as an external event loop would: poll its
/// descriptor until readable or its next deadline, then one turn.
fn drive_until(reactor: &Reactor, timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let fd = reactor.event_fd();
    while !done() {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let next = reactor.next_timeout().unwrap().unwrap_or(deadline - now);
        let wait = next.min(deadline - now).min(Duration::from_millis(100));
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, wait.as_micros().div_ceil(1000) as libc::c_int) };
        reactor.run(Some(Duration::ZERO)).unwrap();
    }
    true
}

/// Wait for `done`, with the reactor on its thread (`external` false) or
/// driven here.
fn wait(reactor: &Reactor, external: bool, timeout: Duration, done: impl FnMut() -> bool) -> bool {
    if external {
        drive_until(reactor, timeout, done)
    } else {
        wait_until(timeout, done)
    }
}

/// The 2,000-client round: connect, subscribe each to its own topic, one
/// QoS 1 message per client, all disconnect cleanly.
fn one_message_each(external: bool) {
    let fleet_n = fleet_size();
    let _serial = serial();
    let broker = Broker::builder().many_clients().start();
    let tag = if external { "ext" } else { "thr" };
    assert_eq!(loop_threads(), 0);
    let reactor = Reactor::new().unwrap();
    if !external {
        reactor.start().unwrap();
    }
    let reactor_threads = usize::from(!external);
    // A new thread names itself once it runs.
    assert!(wait_until(LONG, || loop_threads() == reactor_threads));
    // Other tests' threads may still be ending (they wait for `serial`), but
    // none start: from here the count can only fall unless we add threads.
    let threads_then = threads();

    let seen = Seen::new(fleet_n);
    let started = Instant::now();
    let clients = fleet(&reactor, &broker, tag, fleet_n, true, &seen);
    let (publisher, publisher_up) = publisher(&reactor, &broker, tag);
    assert!(
        wait(&reactor, external, LONG, || seen
            .connacks
            .load(Ordering::SeqCst)
            == fleet_n
            && publisher_up.load(Ordering::SeqCst) == 1),
        "connected: {} of {fleet_n}",
        seen.connacks.load(Ordering::SeqCst)
    );
    eprintln!(
        "{fleet_n} clients connected in {:?} ({})",
        started.elapsed(),
        if external {
            "test thread"
        } else {
            "reactor thread"
        }
    );
    for (i, client) in clients.iter().enumerate() {
        client
            .subscribe(&[(&topic(tag, i), QoS::AtLeastOnce)])
            .unwrap();
    }
    assert!(
        wait(&reactor, external, LONG, || seen
            .subacks
            .load(Ordering::SeqCst)
            == fleet_n),
        "subscribed: {}",
        seen.subacks.load(Ordering::SeqCst)
    );
    for i in 0..fleet_n {
        publisher
            .publish(
                &topic(tag, i),
                i.to_string().as_bytes(),
                QoS::AtLeastOnce,
                false,
            )
            .unwrap();
    }
    assert!(
        wait(&reactor, external, LONG, || seen.received() == fleet_n),
        "received: {}",
        seen.received()
    );
    assert_eq!(seen.misdelivered.load(Ordering::SeqCst), 0);
    for (i, count) in seen.per_client.iter().enumerate() {
        assert_eq!(count.load(Ordering::SeqCst), 1, "client {i}");
    }
    // Two thousand and one connections, and still no thread beyond the reactor's.
    assert!(threads() <= threads_then, "{} > {threads_then}", threads());
    assert_eq!(loop_threads(), reactor_threads);

    for client in &clients {
        client.disconnect().unwrap();
    }
    assert!(
        wait(&reactor, external, LONG, || seen
            .clean_ends
            .load(Ordering::SeqCst)
            == fleet_n),
        "clean ends: {}",
        seen.clean_ends.load(Ordering::SeqCst)
    );
    assert_eq!(seen.lost.load(Ordering::SeqCst), 0);
    assert!(clients.iter().all(|c| !c.is_connected()));
    for client in clients.iter().chain([&publisher]) {
        client.close();
    }
    drop(reactor);
    assert_eq!(loop_threads(), 0);
}

#[test]
fn two_thousand_clients_on_one_reactor_thread() {
    one_message_each(false);
}

#[test]
fn two_thousand_clients_on_the_callers_loop_and_no_thread() {
    one_message_each(true);
}

/// Persistent sessions survive a broker restart: every client comes back by
/// itself, jittered, with its session, and a second round arrives.
#[test]
fn two_thousand_persistent_clients_come_back_after_a_broker_restart() {
    let fleet_n = fleet_size();
    let _serial = serial();
    let broker = Broker::builder().many_clients().persistence(true).start();
    let tag = "restart";
    let reactor = Reactor::new().unwrap();
    reactor.start().unwrap();
    let seen = Seen::new(fleet_n);
    let clients = fleet(&reactor, &broker, tag, fleet_n, false, &seen);
    let (publisher, publisher_up) = publisher(&reactor, &broker, tag);
    assert!(wait_until(LONG, || seen.all_connected_times(1)
        && publisher_up.load(Ordering::SeqCst) == 1));
    for (i, client) in clients.iter().enumerate() {
        client
            .subscribe(&[(&topic(tag, i), QoS::AtLeastOnce)])
            .unwrap();
    }
    assert!(wait_until(LONG, || seen.subacks.load(Ordering::SeqCst) == fleet_n));
    for i in 0..fleet_n {
        publisher
            .publish(
                &topic(tag, i),
                i.to_string().as_bytes(),
                QoS::AtLeastOnce,
                false,
            )
            .unwrap();
    }
    assert!(wait_until(LONG, || seen.received() == fleet_n));

    let stopped = Instant::now();
    broker.restart();
    let back = Instant::now();
    assert!(
        wait_until(LONG, || seen.all_connected_times(2)
            && publisher_up.load(Ordering::SeqCst) == 2),
        "reconnected: {} of {fleet_n}",
        seen.connacks_per_client
            .iter()
            .filter(|c| c.load(Ordering::SeqCst) >= 2)
            .count()
    );
    let mut times: Vec<Instant> = seen
        .connack_at
        .iter()
        .map(|t| t.lock().unwrap().unwrap())
        .collect();
    times.sort();
    let since = |t: Instant| t.saturating_duration_since(back);
    eprintln!(
        "broker restart took {:?}; {fleet_n} clients back {:?} (first), {:?} (median), {:?} (last) after it listened again",
        back - stopped,
        since(times[0]),
        since(times[fleet_n / 2]),
        since(times[fleet_n - 1]),
    );
    // Jitter: the reconnections do not come in one burst.
    assert!(
        times[fleet_n - 1] - times[0] >= Duration::from_millis(100),
        "reconnections within {:?}",
        times[fleet_n - 1] - times[0]
    );
    assert_eq!(seen.lost.load(Ordering::SeqCst), fleet_n, "one loss each");
    // The broker kept the sessions (persistence): resumed, not resubscribed.
    assert_eq!(seen.resumed.load(Ordering::SeqCst), fleet_n);

    for i in 0..fleet_n {
        publisher
            .publish(
                &topic(tag, i),
                format!("{i}#2").as_bytes(),
                QoS::AtLeastOnce,
                false,
            )
            .unwrap();
    }
    assert!(
        wait_until(LONG, || seen.received() == 2 * fleet_n),
        "second round: {} of {fleet_n}",
        seen.received() - fleet_n
    );
    assert_eq!(seen.misdelivered.load(Ordering::SeqCst), 0);
    eprintln!(
        "first-round messages resent with DUP after the restart: {}",
        seen.redelivered.load(Ordering::SeqCst)
    );
    assert!(
        seen.per_client
            .iter()
            .all(|c| c.load(Ordering::SeqCst) == 2)
    );
    for client in clients.iter().chain([&publisher]) {
        client.close();
    }
}

/// Counts a churned client's callbacks, and those that came after its
/// close returned.
#[derive(Default)]
struct Churned {
    connacks: AtomicUsize,
    messages: AtomicUsize,
    closed: AtomicBool,
    after_close: AtomicUsize,
}

fn churned(churn: &Arc<Churned>) -> Callback<Client> {
    let c = churn.clone();
    Arc::new(move |_: &Client, d: &Data<'_>| {
        if c.closed.load(Ordering::SeqCst) {
            c.after_close.fetch_add(1, Ordering::SeqCst);
        }
        match d.command {
            Command::ConnAck => c.connacks.fetch_add(1, Ordering::SeqCst),
            _ => c.messages.fetch_add(1, Ordering::SeqCst),
        };
    })
}

/// Clients join and leave a running reactor while messages flow to the
/// others, which lose none; one is added after it connected on its own; no
/// callback runs after a close returned; a client closed from its own
/// callback gets no further one while the reactor goes on.
#[test]
fn clients_come_and_go_while_messages_flow() {
    let _serial = serial();
    let broker = Broker::start();
    let all = "churn/all";
    let reactor = Reactor::new().unwrap();
    reactor.start().unwrap();

    let stable_seen = Seen::new(10);
    let stable: Vec<Client> = fleet(&reactor, &broker, "stable", 10, true, &stable_seen);
    assert!(wait_until(LONG, || stable_seen
        .connacks
        .load(Ordering::SeqCst)
        == 10));
    for client in &stable {
        client.subscribe(&[(all, QoS::AtLeastOnce)]).unwrap();
    }
    assert!(wait_until(LONG, || stable_seen
        .subacks
        .load(Ordering::SeqCst)
        == 10));

    // The publisher runs its own loop thread, publishing until told to stop.
    let publisher = Client::new("churn-pub", true).unwrap();
    publisher.connect(HOST, 60, broker.port()).unwrap();
    publisher.loop_start(None).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicUsize::new(0));
    let feeder = {
        let (publisher, stop, published) = (publisher.clone(), stop.clone(), published.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                // Every stable client's payload check expects its own index;
                // these go to "churn/all", counted but not checked.
                match publisher.publish(all, b"x", QoS::AtLeastOnce, false) {
                    Ok(_) => published.fetch_add(1, Ordering::SeqCst),
                    Err(Error::QueueFull) => 0,
                    Err(e) => panic!("publish: {e}"),
                };
                thread::sleep(Duration::from_millis(2));
            }
        })
    };

    let mut churns = Vec::new();
    for round in 0..30 {
        // Ids come back: a freed client's id is added again by the next ones.
        let client = Client::new(&format!("churn-{}", round % 3), true).unwrap();
        let churn = Arc::new(Churned::default());
        client.on(Command::ConnAck, churned(&churn), None, 0);
        if round % 2 == 0 {
            client
                .add_to_reactor(&reactor, Some(churned(&churn)))
                .unwrap();
            client.connect_async(HOST, 60, broker.port()).unwrap();
        } else {
            // Connected on its own first: the connection moves to the reactor.
            client.connect(HOST, 60, broker.port()).unwrap();
            client
                .add_to_reactor(&reactor, Some(churned(&churn)))
                .unwrap();
            churn.connacks.fetch_add(1, Ordering::SeqCst);
        }
        assert_eq!(client.loop_start(None), Err(Error::LoopRunning));
        assert_eq!(client.run_once(Duration::ZERO), Err(Error::LoopRunning));
        assert_eq!(
            client.add_to_reactor(&reactor, None),
            Err(Error::LoopRunning)
        );
        assert_eq!(client.event_fd().unwrap(), reactor.event_fd());
        assert!(wait_until(LONG, || churn.connacks.load(Ordering::SeqCst) >= 1));
        client.subscribe(&[(all, QoS::AtLeastOnce)]).unwrap();
        assert!(
            wait_until(LONG, || churn.messages.load(Ordering::SeqCst) >= 2),
            "round {round}: messages {}",
            churn.messages.load(Ordering::SeqCst)
        );
        client.close();
        churn.closed.store(true, Ordering::SeqCst);
        churns.push(churn);
    }

    // Freed from its own callback, on the reactor's thread.
    let quitter = Client::new("churn-quitter", true).unwrap();
    let quitter_seen = Arc::new(AtomicUsize::new(0));
    let quitter_connected = Arc::new(AtomicBool::new(false));
    {
        let up = quitter_connected.clone();
        quitter.on(
            Command::ConnAck,
            Arc::new(move |_: &Client, _: &Data<'_>| up.store(true, Ordering::SeqCst)),
            None,
            0,
        );
    }
    let count = quitter_seen.clone();
    let on_message = Arc::new(move |c: &Client, _: &Data<'_>| {
        count.fetch_add(1, Ordering::SeqCst);
        c.close();
    });
    quitter.add_to_reactor(&reactor, Some(on_message)).unwrap();
    quitter.connect_async(HOST, 60, broker.port()).unwrap();
    assert!(wait_until(LONG, || quitter_connected.load(Ordering::SeqCst)));
    quitter.subscribe(&[(all, QoS::AtLeastOnce)]).unwrap();
    assert!(wait_until(LONG, || quitter_seen.load(Ordering::SeqCst) >= 1));
    // Its socket goes once that callback returned.
    assert!(wait_until(LONG, || broker
        .log()
        .contains("Client churn-quitter closed its connection")));
    let received_then = stable_seen.received();
    assert!(wait_until(LONG, || stable_seen.received() >= received_then + 10 * 20));

    stop.store(true, Ordering::SeqCst);
    feeder.join().unwrap();
    let total = published.load(Ordering::SeqCst);
    // The stable clients got every message, the churn notwithstanding.
    assert!(
        wait_until(LONG, || stable_seen.received() == 10 * total),
        "stable clients: {} of {}",
        stable_seen.received(),
        10 * total
    );
    assert_eq!(quitter_seen.load(Ordering::SeqCst), 1);
    for churn in &churns {
        assert_eq!(churn.after_close.load(Ordering::SeqCst), 0);
    }
    for client in stable.iter().chain([&publisher, &quitter]) {
        client.close();
    }
}

/// Freeing a reactor with clients attached stops its thread, closes their
/// connections without callbacks and leaves the clients usable.
#[test]
fn a_reactor_freed_with_clients_attached_detaches_them() {
    let _serial = serial();
    let broker = Broker::start();
    let reactor = Reactor::new().unwrap();
    reactor.start().unwrap();
    let seen = Seen::new(20);
    let clients = fleet(&reactor, &broker, "freed", 20, true, &seen);
    assert!(wait_until(LONG, || seen.connacks.load(Ordering::SeqCst) == 20));
    for (i, client) in clients.iter().enumerate() {
        client
            .subscribe(&[(&topic("freed", i), QoS::AtLeastOnce)])
            .unwrap();
    }
    assert!(wait_until(LONG, || seen.subacks.load(Ordering::SeqCst) == 20));

    let freeing = Instant::now();
    drop(reactor);
    assert!(
        freeing.elapsed() < Duration::from_secs(1),
        "{:?}",
        freeing.elapsed()
    );
    assert_eq!(loop_threads(), 0);
    assert!(clients.iter().all(|c| !c.is_connected()));
    // The broker sees every connection go.
    assert!(wait_until(LONG, || {
        let log = broker.log();
        (0..20).all(|i| log.contains(&format!("Client freed-{i} closed its connection")))
    }));
    assert_eq!(
        seen.lost.load(Ordering::SeqCst),
        0,
        "no DISCONNECT callback"
    );
    assert_eq!(seen.clean_ends.load(Ordering::SeqCst), 0);

    // Detached, not dead: each connects again on its own.
    let again = &clients[0];
    again.connect(HOST, 60, broker.port()).unwrap();
    assert!(again.is_connected());
    assert_eq!(seen.connacks.load(Ordering::SeqCst), 21);
    again.loop_start(None).unwrap();
    let subacks = seen.subacks.load(Ordering::SeqCst);
    again
        .subscribe(&[(&topic("freed", 0), QoS::AtLeastOnce)])
        .unwrap();
    assert!(wait_until(LONG, || seen.subacks.load(Ordering::SeqCst) > subacks));
    let publisher = Client::new("freed-pub", true).unwrap();
    publisher.connect(HOST, 60, broker.port()).unwrap();
    for i in 0..20 {
        publisher
            .publish(
                &topic("freed", i),
                i.to_string().as_bytes(),
                QoS::AtLeastOnce,
                false,
            )
            .unwrap();
    }
    publisher.loop_start(None).unwrap();
    assert!(wait_until(LONG, || seen.per_client[0]
        .load(Ordering::SeqCst)
        == 1));
    // Only the reconnected client hears anything; the detached ones are silent.
    assert_eq!(seen.received(), 1);
    for client in clients.iter().chain([&publisher]) {
        client.close();
    }
}

/// Freed from inside a callback of one of its clients: the clients are
/// detached when that turn ends, the thread ends, and no callback runs after.
#[test]
fn a_reactor_freed_from_a_callback_detaches_its_clients_when_the_turn_ends() {
    let _serial = serial();
    let broker = Broker::start();
    let holder = Arc::new(Mutex::new(Some(Reactor::new().unwrap())));
    let seen = Seen::new(5);
    let clients = {
        let reactor = holder.lock().unwrap();
        let reactor = reactor.as_ref().unwrap();
        reactor.start().unwrap();
        fleet(reactor, &broker, "cbfree", 5, true, &seen)
    };
    assert!(wait_until(LONG, || seen.connacks.load(Ordering::SeqCst) == 5));
    for (i, client) in clients.iter().enumerate() {
        client
            .subscribe(&[(&topic("cbfree", i), QoS::AtLeastOnce)])
            .unwrap();
    }
    assert!(wait_until(LONG, || seen.subacks.load(Ordering::SeqCst) == 5));
    let freed = Arc::new(AtomicBool::new(false));
    let (reactor, done) = (holder.clone(), freed.clone());
    let has_message: mqtt::dispatch::Condition = Arc::new(|d: &Data<'_>| d.message.is_some());
    clients[0].on(
        Command::Publish,
        Arc::new(move |_: &Client, _: &Data<'_>| {
            drop(reactor.lock().unwrap().take());
            done.store(true, Ordering::SeqCst);
        }),
        Some(has_message),
        10,
    );
    let publisher = Client::new("cbfree-pub", true).unwrap();
    publisher.connect(HOST, 60, broker.port()).unwrap();
    publisher.loop_start(None).unwrap();
    publisher
        .publish(&topic("cbfree", 0), b"0", QoS::AtLeastOnce, false)
        .unwrap();
    assert!(wait_until(LONG, || freed.load(Ordering::SeqCst)));
    assert!(
        wait_until(LONG, || loop_threads() == 1),
        "only the publisher's"
    );
    assert!(wait_until(LONG, || clients
        .iter()
        .all(|c| !c.is_connected())));
    assert!(wait_until(LONG, || {
        let log = broker.log();
        (0..5).all(|i| log.contains(&format!("Client cbfree-{i} closed its connection")))
    }));
    for i in 1..5 {
        publisher
            .publish(
                &topic("cbfree", i),
                i.to_string().as_bytes(),
                QoS::AtLeastOnce,
                false,
            )
            .unwrap();
    }
    // The publisher's own round trip shows the broker handled them.
    let subacks = Arc::new(AtomicUsize::new(0));
    let count = subacks.clone();
    publisher.on(
        Command::SubAck,
        Arc::new(move |_: &Client, _: &Data<'_>| {
            count.fetch_add(1, Ordering::SeqCst);
        }),
        None,
        0,
    );
    publisher
        .subscribe(&[("cbfree/none", QoS::AtMostOnce)])
        .unwrap();
    assert!(wait_until(LONG, || subacks.load(Ordering::SeqCst) == 1));
    assert_eq!(seen.received(), 0);
    assert_eq!(
        seen.lost.load(Ordering::SeqCst),
        0,
        "no DISCONNECT callback"
    );
    assert_eq!(seen.clean_ends.load(Ordering::SeqCst), 0);
    for client in clients.iter().chain([&publisher]) {
        client.close();
    }
}

/// Every client's keepalive runs off the reactor's one timer heap: 300 idle
/// clients with a 1 s keepalive each get their PINGRESP, on one thread.
#[test]
fn the_timer_heap_drives_every_clients_keepalive() {
    let _serial = serial();
    let broker = Broker::builder().many_clients().start();
    let reactor = Reactor::new().unwrap();
    reactor.start().unwrap();
    let n = 300;
    let connacks = Arc::new(AtomicUsize::new(0));
    let pinged: Arc<Vec<AtomicUsize>> = Arc::new((0..n).map(|_| AtomicUsize::new(0)).collect());
    let clients: Vec<Client> = (0..n)
        .map(|i| {
            let client = Client::new(&format!("ka-{i}"), true).unwrap();
            let up = connacks.clone();
            client.on(
                Command::ConnAck,
                Arc::new(move |_: &Client, _: &Data<'_>| {
                    up.fetch_add(1, Ordering::SeqCst);
                }),
                None,
                0,
            );
            let pings = pinged.clone();
            client.on(
                Command::PingResp,
                Arc::new(move |_: &Client, _: &Data<'_>| {
                    pings[i].fetch_add(1, Ordering::SeqCst);
                }),
                None,
                0,
            );
            client.add_to_reactor(&reactor, None).unwrap();
            client.connect_async(HOST, 1, broker.port()).unwrap();
            client
        })
        .collect();
    assert!(wait_until(LONG, || connacks.load(Ordering::SeqCst) == n));
    assert!(
        wait_until(LONG, || pinged
            .iter()
            .all(|p| p.load(Ordering::SeqCst) >= 2)),
        "pinged twice: {} of {n}",
        pinged
            .iter()
            .filter(|p| p.load(Ordering::SeqCst) >= 2)
            .count()
    );
    assert!(clients.iter().all(Client::is_connected));
    for client in &clients {
        client.close();
    }
}

/// At most `set_connect_limit` clients connect at once; the others wait in
/// order and start as the ones before them finish (here: get their CONNACK),
/// so that a fleet started together never floods the broker's listen backlog.
#[test]
fn clients_beyond_the_connect_limit_wait_their_turn() {
    let _serial = serial();
    let peer = common::peer::ScriptedPeer::bind();
    let reactor = Reactor::new().unwrap();
    reactor.set_connect_limit(2);
    reactor.start().unwrap();
    let connected = Arc::new(AtomicUsize::new(0));
    let clients: Vec<Client> = (0..5)
        .map(|i| {
            let client = Client::new(&format!("gate-{i}"), true).unwrap();
            let up = connected.clone();
            client.on(
                Command::ConnAck,
                Arc::new(move |_: &Client, _: &Data<'_>| {
                    up.fetch_add(1, Ordering::SeqCst);
                }),
                None,
                0,
            );
            client.add_to_reactor(&reactor, None).unwrap();
            client.connect_async(HOST, 60, peer.port()).unwrap();
            client
        })
        .collect();
    let connect_of = |conn: &mut common::peer::PeerConn| {
        let packet = conn.expect_type(1, LONG);
        packet.connect().client_id.to_owned()
    };
    let mut first = peer.accept(LONG);
    let mut second = peer.accept(LONG);
    let mut ids = vec![connect_of(&mut first), connect_of(&mut second)];
    // Nobody else while two are connecting.
    peer.expect_no_connection(Duration::from_millis(300));
    first.send_connack(false, 0);
    let mut third = peer.accept(LONG);
    ids.push(connect_of(&mut third));
    peer.expect_no_connection(Duration::from_millis(300));
    second.send_connack(false, 0);
    third.send_connack(false, 0);
    let mut rest: Vec<_> = (0..2).map(|_| peer.accept(LONG)).collect();
    for conn in &mut rest {
        ids.push(connect_of(conn));
        conn.send_connack(false, 0);
    }
    assert!(wait_until(LONG, || connected.load(Ordering::SeqCst) == 5));
    // In the order they asked.
    let expected: Vec<String> = (0..5).map(|i| format!("gate-{i}")).collect();
    assert_eq!(ids, expected);
    for client in &clients {
        client.close();
    }
}

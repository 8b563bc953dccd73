//! The event loop: one mio `Poll` driving any number of clients, on a
//! thread of its own (`start`) or in the caller's (`run`).
//!
//! Files, in the order a PUBLISH travels: `transport.rs` (bytes off the
//! socket) -> `connection.rs` (one client's connection state machine, reads
//! and writes) -> `inbound.rs` (decode, `protocol::session`, callbacks via
//! `dispatch`). Around them: `commands.rs` (how API calls on other threads
//! reach the loop), `timers.rs` (every client's deadlines in one heap) and
//! `core.rs` (what a client's handles share with the loop).
//!
//! A client that was never added to a reactor gets a private one with a
//! single slot when it first needs one: the single-client API is the
//! one-client case of this machinery.

mod commands;
mod connection;
pub(crate) mod core;
mod inbound;
mod timers;
mod transport;

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};

pub(crate) use self::commands::ReactorCommand;
use self::commands::{Arrival, Intake, TurnGuard};
pub(crate) use self::connection::Addrs;
use self::connection::{ConnectGate, Connection, Io, Scratch, Waiting};
pub use self::core::Resolver;
pub(crate) use self::core::{Core, NO_SLOT, lock};
use self::timers::Timers;
use crate::{Error, Result};

/// The waker's token; a client's socket uses its slot index.
const WAKER: Token = Token(usize::MAX);

/// A reactor as its users and its clients share it.
pub(crate) struct Shared {
    pub(crate) intake: Intake,
    engine: Mutex<Engine>,
    event_fd: RawFd,
    /// The loop thread and its own stop flag: a flag per thread, so that a
    /// start racing a stop cannot un-stop the thread being joined.
    thread: Mutex<Option<(JoinHandle<()>, Arc<AtomicBool>)>>,
    /// Held by start, stop and free for their whole run (joins included),
    /// so that a new thread never starts while the old one is still alive.
    lifecycle: Mutex<()>,
    /// Made by a client for itself: that client's own loop calls drive it.
    pub(crate) private: bool,
    /// Freed: its clients were detached, no turn runs again.
    freed: AtomicBool,
    /// Clients that may be connecting at once (`ConnectGate`), as set by
    /// `set_connect_limit`; each turn takes it from here.
    connect_limit: AtomicUsize,
}

/// How much later a client's next deadline must be than the one it has in the
/// timer heap for a new entry to replace it (see `run_marked`).
const REGISTER_LATER: Duration = Duration::from_secs(1);

/// The capacity an emptied list of clients keeps at least: the waiting room
/// (see `admit_waiting`) and the per-turn lists (see `keep_room`).
const ROOM_KEPT: usize = 1024;

/// An emptied per-turn list (arrivals, ready clients, slots to run) keeps
/// its capacity unless that is above `ROOM_KEPT` and four times what the
/// turn used: a fleet connecting at once leaves no lists of its size behind,
/// while a steady load keeps its lists and allocates nothing per turn.
fn keep_room<T>(list: &mut Vec<T>, used: usize) {
    if list.capacity() > ROOM_KEPT && list.capacity() / 4 > used {
        *list = Vec::new();
    }
}

/// A slot's identity: its index and the generation of its occupant, so that
/// a reference left by a removed client never reaches the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct SlotId {
    /// 32 bits: each slot holds a socket (8 bytes in all, for the queues
    /// that hold one per client).
    index: u32,
    generation: u32,
}

impl SlotId {
    fn new(index: usize, generation: u32) -> SlotId {
        SlotId {
            index: index as u32,
            generation,
        }
    }

    fn at(self) -> usize {
        self.index as usize
    }
}

struct Slot {
    /// Weak: a client whose handles are all gone is dropped from its slot.
    core: Weak<Core>,
    /// Inline, not boxed: one heap block less per client.
    connection: Connection,
}

/// 80 bytes per client in a release build, its connection inline.
struct Entry {
    generation: u32,
    /// The turn stamp when its slot was last queued to run (0: never; see
    /// `next_stamp`).
    mark: u32,
    slot: Option<Slot>,
}

struct Engine {
    poll: Poll,
    events: Events,
    slots: Vec<Entry>,
    free: Vec<usize>,
    live: usize,
    timers: Timers,
    scratch: Scratch,
    /// Slots to run in this turn, each once (see `Slot::mark`).
    marked: Vec<usize>,
    /// The ready list taken from the intake (its allocation is reused).
    ready: Vec<Arc<Core>>,
    arrivals: Vec<Arc<Core>>,
    /// Slots with readiness left unused: run again without waiting.
    carry: Vec<usize>,
    stamp: u32,
    /// Slots the last turn ran (a turn's cost grows with this, not with `live`).
    ran: usize,
    /// Clients connecting now, and the limit on them.
    gate: ConnectGate,
    /// Clients waiting for room under that limit, in arrival order.
    waiting_room: VecDeque<SlotId>,
}

impl Shared {
    pub(crate) fn new(private: bool) -> std::io::Result<Arc<Shared>> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let event_fd = poll.as_raw_fd();
        Ok(Arc::new(Shared {
            intake: Intake::new(waker),
            engine: Mutex::new(Engine {
                poll,
                events: Events::with_capacity(if private { 16 } else { 1024 }),
                slots: Vec::new(),
                free: Vec::new(),
                live: 0,
                timers: Timers::default(),
                scratch: Scratch::default(),
                marked: Vec::new(),
                ready: Vec::new(),
                arrivals: Vec::new(),
                carry: Vec::new(),
                stamp: 0,
                ran: 0,
                gate: ConnectGate::new(),
                waiting_room: VecDeque::new(),
            }),
            event_fd,
            thread: Mutex::new(None),
            lifecycle: Mutex::new(()),
            private,
            freed: AtomicBool::new(false),
            connect_limit: AtomicUsize::new(ConnectGate::DEFAULT_LIMIT),
        }))
    }

    /// A private reactor holding `core` in its only slot.
    pub(crate) fn private_for(core: &Arc<Core>) -> std::io::Result<Arc<Shared>> {
        let shared = Shared::new(true)?;
        lock(&shared.engine).insert(core.clone(), None);
        Ok(shared)
    }

    /// Whether the calling thread runs a turn of this reactor (a callback).
    pub(crate) fn in_turn(&self) -> bool {
        self.intake.in_turn()
    }

    pub(crate) fn thread_running(&self) -> bool {
        lock(&self.thread).is_some()
    }

    /// Take `core` (driven by its private reactor `self`) out with its
    /// connection, to move it to another reactor. `LoopRunning` while this
    /// reactor runs.
    pub(crate) fn take_for_move(&self, core: &Arc<Core>) -> Result<Option<Box<Connection>>> {
        if self.thread_running() {
            return Err(Error::LoopRunning);
        }
        let Ok(mut engine) = self.engine.try_lock() else {
            return Err(Error::LoopRunning);
        };
        Ok(engine.take(core))
    }

    /// `InvalidArgument` once freed.
    pub(crate) fn check_open(&self) -> Result<()> {
        match self.freed.load(Ordering::Acquire) {
            true => Err(Error::InvalidArgument),
            false => Ok(()),
        }
    }

    /// Start driving `core` (not driven by another reactor: the caller
    /// checked, holding `link`, which it sets to this reactor).
    pub(crate) fn adopt(&self, core: &Arc<Core>, connection: Option<Box<Connection>>) {
        // Its first turn runs it whatever it queued meanwhile (`insert`):
        // a wake before then need not put it on the ready list as well.
        core.queued.store(true, Ordering::SeqCst);
        self.intake.arrive(Arrival {
            core: core.clone(),
            connection,
        });
    }

    /// Run the reactor on a new thread until `stop`.
    pub(crate) fn start(self: &Arc<Self>) -> Result<()> {
        if self.in_turn() {
            return Err(Error::InCallback);
        }
        let _lifecycle = lock(&self.lifecycle);
        let mut thread = lock(&self.thread);
        if thread.is_some() {
            return Err(Error::LoopRunning);
        }
        if self.freed.load(Ordering::Acquire) {
            return Err(Error::InvalidArgument);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let shared = self.clone();
        let stop_seen = stop.clone();
        let handle = std::thread::Builder::new()
            .name("mqtt-loop".into())
            .spawn(move || shared.thread_main(&stop_seen))
            .map_err(|_| Error::NoMemory)?;
        *thread = Some((handle, stop));
        Ok(())
    }

    fn thread_main(&self, stop: &AtomicBool) {
        let mut engine = lock(&self.engine);
        while !stop.load(Ordering::Acquire) && !self.freed.load(Ordering::Acquire) {
            engine.turn(self, None);
            if self.private && engine.live == 0 {
                // Its client was freed from a callback: nothing left to drive.
                return;
            }
        }
        if !self.freed.load(Ordering::Acquire) {
            // Carry out what was asked just before the stop (a DISCONNECT, say).
            engine.turn(self, Some(Duration::ZERO));
        }
    }

    /// Stop the loop thread and wait for it.
    pub(crate) fn stop(&self) -> Result<()> {
        if self.in_turn() {
            return Err(Error::InCallback);
        }
        let _lifecycle = lock(&self.lifecycle);
        let taken = lock(&self.thread).take();
        let Some((handle, stop)) = taken else {
            return Err(Error::LoopNotRunning);
        };
        stop.store(true, Ordering::Release);
        self.intake.force_wake();
        let _ = handle.join();
        Ok(())
    }

    /// One turn in the calling thread, waiting at most `timeout`. Returns the
    /// error that ended a connection during it (the first, for many clients).
    pub(crate) fn run(&self, timeout: Option<Duration>) -> Result<Option<Error>> {
        if self.in_turn() {
            return Err(Error::InCallback);
        }
        if self.thread_running() || self.freed.load(Ordering::Acquire) {
            return Err(Error::LoopRunning);
        }
        let Ok(mut engine) = self.engine.try_lock() else {
            return Err(Error::LoopRunning);
        };
        Ok(engine.turn(self, timeout))
    }

    /// A turn if nobody else runs the reactor right now (`connect` waiting
    /// for its CONNACK, `disconnect` writing its DISCONNECT); false if busy.
    pub(crate) fn try_turn(&self, timeout: Duration) -> bool {
        if self.freed.load(Ordering::Acquire) {
            return false;
        }
        match self.engine.try_lock() {
            Ok(mut engine) => {
                engine.turn(self, Some(timeout));
                true
            }
            Err(_) => false,
        }
    }

    pub(crate) fn event_fd(&self) -> RawFd {
        self.intake.set_external_poller();
        self.event_fd
    }

    /// Time until the reactor must run again even without events (`None`:
    /// nothing is due); `LoopRunning` while another thread runs it.
    pub(crate) fn next_timeout(&self) -> Result<Option<Duration>> {
        // The thread may not have taken the engine yet: ask the flag too.
        if self.thread_running() {
            return Err(Error::LoopRunning);
        }
        let Ok(mut engine) = self.engine.try_lock() else {
            return Err(Error::LoopRunning);
        };
        Ok(engine.next_wait(self))
    }

    /// Whether `core`'s queued bytes wait for its socket to become writable.
    pub(crate) fn wants_write(&self, core: &Arc<Core>) -> Result<bool> {
        if self.thread_running() {
            return Err(Error::LoopRunning);
        }
        let Ok(engine) = self.engine.try_lock() else {
            return Err(Error::LoopRunning);
        };
        Ok(engine
            .slot_of(core)
            .is_some_and(|slot| slot.connection.wants_write(core)))
    }

    /// Remove `core` (freed) now if nobody runs the reactor, else at the
    /// next turn. Its callbacks no longer run either way (it is closed).
    pub(crate) fn release(&self, core: &Arc<Core>, wait: bool) {
        let engine = if wait {
            Some(lock(&self.engine))
        } else {
            self.engine.try_lock().ok()
        };
        match engine {
            Some(mut engine) => {
                // Not yet taken in by a turn: dropping its arrival closes the
                // connection it brought.
                lock(&self.intake.arrivals).retain(|a| !Arc::ptr_eq(a, core));
                lock(&self.intake.moves).retain(|a| !Arc::ptr_eq(&a.core, core));
                match engine.index_of(core) {
                    Some(index) => engine.remove(index),
                    None => unlink(core),
                }
            }
            None => {
                core.wake();
                self.intake.force_wake();
            }
        }
    }

    /// Free: stop the thread, close every client's connection without
    /// callbacks and detach the clients. From a turn of this reactor (a
    /// callback), the turn stops after that client and the thread detaches
    /// them as it ends.
    pub(crate) fn free(self: &Arc<Self>) {
        self.freed.store(true, Ordering::Release);
        if self.in_turn() {
            return;
        }
        {
            let _lifecycle = lock(&self.lifecycle);
            let taken = lock(&self.thread).take();
            if let Some((handle, stop)) = taken {
                stop.store(true, Ordering::Release);
                self.intake.force_wake();
                let _ = handle.join();
            }
        }
        lock(&self.engine).detach_all(self);
    }
}

impl Engine {
    fn io<'a>(poll: &'a Poll, gate: &'a ConnectGate, index: usize) -> Io<'a> {
        Io {
            registry: poll.registry(),
            token: Token(index),
            gate,
        }
    }

    /// After a slot ran: give back its room under the connect limit once its
    /// attempt is over (connected, failed or given up), and queue it if it
    /// is waiting for room.
    fn settle_gate(&mut self, index: usize, core: &Core) {
        let generation = self.slots[index].generation;
        let Some(slot) = self.slots[index].slot.as_mut() else {
            return;
        };
        let connection = &mut slot.connection;
        if !core.attempt_in_progress() {
            if std::mem::take(&mut connection.holds_permit) {
                self.gate.leave();
            }
            connection.waiting.take(Waiting::PARKED);
            connection.waiting.take(Waiting::RESUME);
        }
        if connection.waiting.get(Waiting::PARKED)
            && !connection.waiting.replace(Waiting::IN_ROOM, true)
        {
            self.waiting_room.push_back(SlotId::new(index, generation));
        }
    }

    /// Give the room freed under the connect limit to the clients waiting
    /// longest; they run on the next turn, without a wait.
    fn admit_waiting(&mut self) {
        while self.gate.has_room() {
            let Some(id) = self.waiting_room.pop_front() else {
                // A fleet's worth of room is not kept once the fleet is in.
                if self.waiting_room.capacity() > ROOM_KEPT {
                    self.waiting_room = VecDeque::new();
                }
                return;
            };
            let entry = &mut self.slots[id.at()];
            let Some(slot) = entry
                .slot
                .as_mut()
                .filter(|_| entry.generation == id.generation)
            else {
                continue;
            };
            let connection = &mut slot.connection;
            connection.waiting.take(Waiting::IN_ROOM);
            if connection.waiting.take(Waiting::PARKED) {
                connection.holds_permit = true;
                connection.waiting.replace(Waiting::RESUME, true);
                self.gate.enter();
                self.carry.push(id.at());
            }
        }
    }

    /// A slot leaves with its connection: its room under the limit is free.
    fn leave_gate(gate: &ConnectGate, connection: &mut Connection) {
        if std::mem::take(&mut connection.holds_permit) {
            gate.leave();
        }
        connection.waiting.take(Waiting::IN_ROOM);
        // Elsewhere (another reactor) it asks for room again.
        if connection.waiting.take(Waiting::PARKED) {
            connection.waiting.replace(Waiting::RESUME, true);
        }
    }

    fn index_of(&self, core: &Arc<Core>) -> Option<usize> {
        let index = core.slot.load(Ordering::SeqCst) as usize;
        let slot = self.slots.get(index)?.slot.as_ref()?;
        std::ptr::eq(slot.core.as_ptr(), Arc::as_ptr(core)).then_some(index)
    }

    fn slot_of(&self, core: &Arc<Core>) -> Option<&Slot> {
        self.slots[self.index_of(core)?].slot.as_ref()
    }

    fn mark(&mut self, index: usize) {
        let entry = &mut self.slots[index];
        if entry.slot.is_some() && entry.mark != self.stamp {
            entry.mark = self.stamp;
            self.marked.push(index);
        }
    }

    /// A new turn's stamp. 32 bits wrap (after years of turns): the marks
    /// are cleared then, so that no stale mark equals a new stamp and keeps
    /// its slot from running.
    fn next_stamp(&mut self) {
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            for entry in &mut self.slots {
                entry.mark = 0;
            }
            self.stamp = 1;
        }
    }

    fn insert(&mut self, core: Arc<Core>, connection: Option<Box<Connection>>) {
        if core.is_closed() {
            // Freed before it got here; dropping the connection closes it.
            // (Its link may stay: this reactor holds nothing of it.)
            return;
        }
        let mut connection = connection.map_or_else(Connection::new, |moved| *moved);
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Entry {
                generation: 0,
                mark: 0,
                slot: None,
            });
            self.slots.len() - 1
        });
        connection.register(Self::io(&self.poll, &self.gate, index));
        let entry = &mut self.slots[index];
        entry.generation = entry.generation.wrapping_add(1);
        entry.mark = 0;
        entry.slot = Some(Slot {
            core: Arc::downgrade(&core),
            connection,
        });
        self.live += 1;
        core.slot.store(index as u32, Ordering::SeqCst);
        // Whatever it queued before it had a reactor runs now.
        core.queued.store(false, Ordering::SeqCst);
        self.mark(index);
    }

    /// Take `core`'s slot out with its connection (deregistered), without
    /// closing it: it moves to another reactor.
    fn take(&mut self, core: &Arc<Core>) -> Option<Box<Connection>> {
        let index = self.index_of(core)?;
        let io = Self::io(&self.poll, &self.gate, index);
        let mut slot = self.slots[index].slot.take()?;
        self.timers.cancel(index);
        slot.connection.deregister(io);
        Self::leave_gate(&self.gate, &mut slot.connection);
        self.free.push(index);
        self.live -= 1;
        core.slot.store(NO_SLOT, Ordering::SeqCst);
        Some(Box::new(slot.connection))
    }

    /// Remove a slot: its client was freed (or dropped). Closes the
    /// connection without callbacks, writing what is queued (a DISCONNECT,
    /// say) without waiting.
    fn remove(&mut self, index: usize) {
        let io = Self::io(&self.poll, &self.gate, index);
        let Some(mut slot) = self.slots[index].slot.take() else {
            return;
        };
        self.timers.cancel(index);
        Self::leave_gate(&self.gate, &mut slot.connection);
        self.free.push(index);
        self.live -= 1;
        match slot.core.upgrade() {
            Some(core) => {
                slot.connection.shutdown(&core, io);
                core.slot.store(NO_SLOT, Ordering::SeqCst);
                unlink(&core);
                if core.is_closed() {
                    // Freed: unlock its store now, a handle kept elsewhere
                    // must not hold it.
                    core.session().detach_store();
                }
            }
            None => slot.connection.deregister(io),
        }
    }

    fn detach_all(&mut self, shared: &Shared) {
        for index in 0..self.slots.len() {
            self.remove(index);
        }
        let arrivals = std::mem::take(&mut *lock(&shared.intake.arrivals));
        for core in arrivals {
            unlink(&core);
        }
        let moves = std::mem::take(&mut *lock(&shared.intake.moves));
        for arrival in moves {
            unlink(&arrival.core);
        }
        let ready = std::mem::take(&mut *lock(&shared.intake.ready));
        for core in ready {
            core.queued.store(false, Ordering::SeqCst);
        }
        self.timers.clear();
        self.carry.clear();
    }

    /// Clients that arrived, and clients with work queued by API calls.
    fn take_intake(&mut self, shared: &Shared) {
        if shared.private {
            // One client, which runs on every turn (as a wake, an event or a
            // deadline is what ended the poll); its wakes use no list.
            if let Some(index) = self.slots.iter().position(|e| e.slot.is_some()) {
                self.mark(index);
            }
            return;
        }
        std::mem::swap(&mut self.arrivals, &mut *lock(&shared.intake.arrivals));
        let mut arrivals = std::mem::take(&mut self.arrivals);
        let used = arrivals.len();
        for core in arrivals.drain(..) {
            self.insert(core, None);
        }
        let moves = std::mem::take(&mut *lock(&shared.intake.moves));
        for Arrival { core, connection } in moves {
            self.insert(core, connection);
        }
        keep_room(&mut arrivals, used);
        self.arrivals = arrivals;
        std::mem::swap(&mut self.ready, &mut *lock(&shared.intake.ready));
        let mut ready = std::mem::take(&mut self.ready);
        let used = ready.len();
        for core in ready.drain(..) {
            // Cleared before the client's work runs: a call after this
            // point queues it again (see `Core::wake`).
            core.queued.store(false, Ordering::SeqCst);
            let Some(index) = self.index_of(&core) else {
                continue;
            };
            if core.is_closed() {
                self.remove(index);
            } else {
                self.mark(index);
            }
        }
        keep_room(&mut ready, used);
        self.ready = ready;
    }

    /// Slots whose deadline has come.
    fn expire(&mut self, now: Instant) {
        while let Some(index) = self.timers.pop_due(now) {
            self.mark(index);
        }
    }

    /// How long the next poll may wait.
    fn next_wait(&mut self, shared: &Shared) -> Option<Duration> {
        if shared.intake.wake_is_pending() || !self.carry.is_empty() {
            return Some(Duration::ZERO);
        }
        let next = self.timers.next()?;
        Some(next.saturating_duration_since(Instant::now()))
    }

    /// Run every marked slot: its commands, reads, timers and writes.
    fn run_marked(&mut self, shared: &Shared) -> Option<Error> {
        let mut ended = None;
        let mut marked = std::mem::take(&mut self.marked);
        self.ran += marked.len();
        for &index in &marked {
            if shared.freed.load(Ordering::Acquire) {
                break;
            }
            let Some(slot) = self.slots[index].slot.as_mut() else {
                continue;
            };
            let Some(core) = slot.core.upgrade() else {
                self.remove(index);
                continue;
            };
            if core.is_closed() {
                self.remove(index);
                continue;
            }
            let io = Io {
                registry: self.poll.registry(),
                token: Token(index),
                gate: &self.gate,
            };
            // Cleared before its work looks at the session: a call after
            // this point queues the client again (see `Core::wake`).
            core.queued.store(false, Ordering::SeqCst);
            let error = slot.connection.work(&core, io, &mut self.scratch);
            ended = ended.or(error);
            self.settle_gate(index, &core);
            let Some(slot) = self.slots[index].slot.as_mut() else {
                continue;
            };
            if core.is_closed() {
                // Freed from a callback: nobody else will write what it
                // queued (a DISCONNECT, say) before the connection goes.
                self.remove(index);
                continue;
            }
            if slot.connection.has_unread(&core) {
                self.carry.push(index);
            }
            match slot.connection.next_deadline(&core) {
                // A deadline a little later keeps the earlier one: it fires
                // once for nothing and registers the new one then (a
                // keepalive that moves with every packet sent costs no heap
                // work per packet). One much later (the CONNACK ended the
                // connect timeout) moves it, so that a fleet that connected
                // together is not run when those timeouts come.
                Some(at)
                    if self.timers.deadline(index).is_none_or(|registered| {
                        at < registered || at > registered + REGISTER_LATER
                    }) =>
                {
                    self.timers.set(index, at)
                }
                Some(_) => {}
                None => self.timers.cancel(index),
            }
        }
        let used = marked.len();
        marked.clear();
        keep_room(&mut marked, used);
        self.marked = marked;
        self.admit_waiting();
        ended
    }

    /// One turn: wait for IO, a wake or the next deadline (at most
    /// `max_wait`; `None` waits as long as nothing is due), then run every
    /// client with something to do. Returns the first error that ended a
    /// connection during this turn, if any.
    fn turn(&mut self, shared: &Shared, max_wait: Option<Duration>) -> Option<Error> {
        self.ran = 0;
        let ended = {
            let _in_turn = TurnGuard::enter(&shared.intake);
            self.turn_inner(shared, max_wait)
        };
        if shared.freed.load(Ordering::Acquire) {
            // Freed from a callback of this turn: nobody else detaches.
            self.detach_all(shared);
        }
        ended
    }

    fn turn_inner(&mut self, shared: &Shared, max_wait: Option<Duration>) -> Option<Error> {
        self.gate
            .limit
            .set(shared.connect_limit.load(Ordering::Relaxed));
        // Work queued since the last turn (a publish from the thread that
        // runs the loop, say) goes out before this turn sleeps.
        if shared.intake.clear_wake() {
            self.next_stamp();
            self.take_intake(shared);
            if let Some(e) = self.run_marked(shared) {
                return Some(e);
            }
        }
        let mut wait = match (self.next_wait(shared), max_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if wait != Some(Duration::ZERO) && !shared.intake.prepare_sleep() {
            wait = Some(Duration::ZERO);
        }
        let polled = self.poll.poll(&mut self.events, wait);
        shared.intake.end_sleep();
        if let Err(e) = polled
            && e.kind() != std::io::ErrorKind::Interrupted
        {
            return Some(Error::Io);
        }
        shared.intake.clear_wake();
        self.next_stamp();
        for event in self.events.iter() {
            let index = event.token().0;
            if let Some(entry) = self.slots.get_mut(index)
                && let Some(slot) = entry.slot.as_mut()
            {
                slot.connection.on_event(event);
                if entry.mark != self.stamp {
                    entry.mark = self.stamp;
                    self.marked.push(index);
                }
            }
        }
        self.take_intake(shared);
        self.expire(Instant::now());
        let mut carry = std::mem::take(&mut self.carry);
        let used = carry.len();
        for index in carry.drain(..) {
            self.mark(index);
        }
        keep_room(&mut carry, used);
        self.carry = carry;
        let mut ended = self.run_marked(shared);
        // Work queued by this turn's callbacks (a connect_async, say) is
        // carried out now rather than after the next poll.
        if ended.is_none() && shared.intake.clear_wake() {
            self.next_stamp();
            self.take_intake(shared);
            ended = self.run_marked(shared);
        }
        ended
    }
}

/// Forget the reactor `core` was driven by, if it is still that one.
fn unlink(core: &Arc<Core>) {
    let mut link = lock(&core.link);
    *link = None;
    core.queued.store(false, Ordering::SeqCst);
}

/// Many clients on one reactor: one `Poll`, one thread (`start`) or none
/// (`run` in the caller's thread, or an external event loop with
/// `event_fd` and `next_timeout`). Add clients with
/// [`Client::add_to_reactor`](crate::Client::add_to_reactor).
///
/// Dropping it is `mqtt_reactor_free`: the thread stops, the clients'
/// connections close without callbacks and the clients are detached (they
/// remain usable, and must still be closed by their owners).
pub struct Reactor {
    pub(crate) shared: Arc<Shared>,
}

impl Reactor {
    /// A reactor with no client and no thread.
    pub fn new() -> Result<Reactor> {
        Ok(Reactor {
            shared: Shared::new(false).map_err(|_| Error::Io)?,
        })
    }

    /// Run the reactor on a thread of its own until `stop`. `LoopRunning`
    /// when it runs already, `InCallback` from one of its clients' callbacks.
    pub fn start(&self) -> Result<()> {
        self.shared.start()
    }

    /// Stop the thread and wait for it. `LoopNotRunning`, `InCallback`.
    pub fn stop(&self) -> Result<()> {
        self.shared.stop()
    }

    /// One turn in the calling thread, waiting at most `timeout` (`None`:
    /// until the next event or deadline). `LoopRunning` while the thread or
    /// another caller runs it, `InCallback` from one of its callbacks.
    pub fn run(&self, timeout: Option<Duration>) -> Result<()> {
        self.shared.run(timeout).map(drop)
    }

    /// A descriptor that becomes readable whenever the reactor has work,
    /// for external event loops (then call `run(Some(ZERO))`).
    pub fn event_fd(&self) -> RawFd {
        self.shared.event_fd()
    }

    /// Time until the reactor must run again even without events (`None`:
    /// nothing is due). `LoopRunning` while another thread runs it.
    pub fn next_timeout(&self) -> Result<Option<Duration>> {
        self.shared.next_timeout()
    }

    /// How many of its clients may be connecting at once (TCP, TLS and
    /// CONNECT until CONNACK); the others wait their turn, in order, their
    /// connect timeout starting when they start. 0: no limit. The default,
    /// 64, keeps thousands of clients started together from overflowing a
    /// broker's listen backlog. Takes effect from the next turn.
    pub fn set_connect_limit(&self, limit: usize) {
        let limit = if limit == 0 { usize::MAX } else { limit };
        self.shared.connect_limit.store(limit, Ordering::Relaxed);
        self.shared.intake.force_wake();
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        self.shared.free();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::session::SessionConfig;

    #[test]
    fn a_turn_runs_the_woken_client_only() {
        let shared = Shared::new(false).unwrap();
        let cores: Vec<Arc<Core>> = (0..1000)
            .map(|i| {
                let core = Arc::new(Core::new(SessionConfig {
                    client_id: format!("c{i}").into(),
                    ..SessionConfig::default()
                }));
                *lock(&core.link) = Some(shared.clone());
                shared.adopt(&core, None);
                core
            })
            .collect();
        let mut engine = lock(&shared.engine);
        engine.turn(&shared, Some(Duration::ZERO));
        assert_eq!(engine.live, 1000);
        assert_eq!(engine.ran, 1000, "each newcomer runs once");
        engine.turn(&shared, Some(Duration::ZERO));
        assert_eq!(engine.ran, 0, "nothing ready, nothing due");
        assert_eq!(engine.next_wait(&shared), None);
        cores[500].wake();
        cores[500].wake();
        engine.turn(&shared, Some(Duration::ZERO));
        assert_eq!(engine.ran, 1);
        cores[7].closed.store(true, Ordering::SeqCst);
        cores[7].wake();
        engine.turn(&shared, Some(Duration::ZERO));
        assert_eq!(engine.live, 999, "a freed client leaves on its wake");
        drop(engine);
        shared.free();
        assert!(cores.iter().all(|c| c.reactor().is_none()), "detached");
    }

    /// A shared reactor with one client added (its first turn not run yet).
    fn adopted_client() -> (Arc<Shared>, Arc<Core>) {
        let shared = Shared::new(false).unwrap();
        let core = Arc::new(Core::new(SessionConfig::default()));
        *lock(&core.link) = Some(shared.clone());
        shared.adopt(&core, None);
        (shared, core)
    }

    #[test]
    fn a_deadline_moved_much_later_moves_its_entry_and_a_removed_client_takes_it() {
        let (shared, core) = adopted_client();
        let mut engine = lock(&shared.engine);
        engine.turn(&shared, Some(Duration::ZERO));
        assert_eq!(engine.ran, 1);
        let index = core.slot.load(Ordering::SeqCst) as usize;
        // Registered an hour out (a connect timeout, say)...
        let hour = Instant::now() + Duration::from_secs(3600);
        engine.timers.set(index, hour);
        // ...while the client's next deadline went a day out (its CONNACK).
        let day = Instant::now() + Duration::from_secs(86_400);
        let slot = engine.slots[index].slot.as_mut().unwrap();
        slot.connection.set_reconnect_at(day);
        core.wake();
        engine.turn(&shared, Some(Duration::ZERO));
        assert_eq!(engine.ran, 1, "run once, for its wake");
        assert_eq!(engine.timers.deadline(index), Some(day), "moved");
        assert_eq!(engine.timers.len(), 1, "no stale entry beside it");
        engine.remove(index);
        assert_eq!(engine.timers.len(), 0, "gone with its client");
        drop(engine);
        shared.free();
    }

    #[test]
    fn a_client_waiting_for_room_holds_its_request_not_an_attempt() {
        // Accepted by the kernel's backlog, never answered: an attempt
        // keeps its room until the test frees it.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Shared::new(false).unwrap();
        shared.connect_limit.store(1, Ordering::Relaxed);
        let cores: Vec<Arc<Core>> = (0..2)
            .map(|_| {
                let core = Arc::new(Core::new(SessionConfig::default()));
                *lock(&core.link) = Some(shared.clone());
                shared.adopt(&core, None);
                core
            })
            .collect();
        let mut engine = lock(&shared.engine);
        engine.turn(&shared, Some(Duration::ZERO));
        for core in &cores {
            let intent = core.supersede_attempt();
            core.push_command(ReactorCommand::Connect {
                attempt: None,
                addrs: connection::Addrs::One(addr),
                intent,
            });
        }
        engine.turn(&shared, Some(Duration::ZERO));
        let at = |core: &Arc<Core>| core.slot.load(Ordering::SeqCst) as usize;
        let connection = |engine: &Engine, core: &Arc<Core>| {
            let slot = engine.slots[at(core)].slot.as_ref().unwrap();
            (
                slot.connection.holds_permit,
                slot.connection.waiting.get(Waiting::PARKED),
                slot.connection.has_dial(),
            )
        };
        assert_eq!(connection(&engine, &cores[0]), (true, false, true));
        assert_eq!(
            connection(&engine, &cores[1]),
            (false, true, false),
            "waiting without an attempt's state"
        );
        assert!(!cores[1].commands.is_empty(), "its request kept");
        // The first leaves: the second gets the room and starts, once.
        engine.remove(at(&cores[0]));
        engine.turn(&shared, Some(Duration::ZERO));
        engine.turn(&shared, Some(Duration::ZERO));
        assert_eq!(connection(&engine, &cores[1]), (true, false, true));
        assert!(cores[1].commands.is_empty());
        let waiting = engine.slots[at(&cores[1])]
            .slot
            .as_ref()
            .unwrap()
            .connection
            .waiting;
        assert!(!waiting.get(Waiting::RESUME));
        drop(engine);
        shared.free();
    }

    #[test]
    fn a_client_woken_before_its_first_turn_waits_on_no_list_but_its_arrival() {
        let (shared, core) = adopted_client();
        core.wake();
        assert!(lock(&shared.intake.ready).is_empty(), "no ready entry");
        assert_eq!(lock(&shared.intake.arrivals).len(), 1, "one word a client");
        let mut engine = lock(&shared.engine);
        engine.turn(&shared, Some(Duration::ZERO));
        assert_eq!(engine.ran, 1, "run once, for its arrival");
        // From then on a wake queues it as usual.
        core.wake();
        assert_eq!(lock(&shared.intake.ready).len(), 1);
        drop(engine);
        shared.free();
    }

    #[test]
    fn a_wrapped_turn_stamp_leaves_no_stale_mark() {
        let (shared, core) = adopted_client();
        let mut engine = lock(&shared.engine);
        engine.turn(&shared, Some(Duration::ZERO));
        let index = core.slot.load(Ordering::SeqCst) as usize;
        // Marked at stamp 1 long ago; the stamp wraps around to it.
        engine.slots[index].mark = 1;
        engine.stamp = u32::MAX;
        engine.next_stamp();
        engine.marked.clear();
        engine.mark(index);
        assert_eq!(engine.marked, vec![index]);
        drop(engine);
        shared.free();
    }

    #[test]
    fn per_turn_lists_give_back_a_bursts_capacity_and_keep_a_steady_loads() {
        let mut burst: Vec<usize> = Vec::with_capacity(16 * 1024);
        keep_room(&mut burst, 10);
        assert_eq!(burst.capacity(), 0);
        let mut steady: Vec<usize> = Vec::with_capacity(4096);
        keep_room(&mut steady, 2000);
        assert_eq!(steady.capacity(), 4096);
        let mut small: Vec<usize> = Vec::with_capacity(ROOM_KEPT);
        keep_room(&mut small, 0);
        assert_eq!(small.capacity(), ROOM_KEPT);
    }
}

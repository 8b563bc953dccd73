//! Command intake: how API calls on any thread reach the reactor. Each
//! client has a queue of `ReactorCommand`s (in its `Core`); a client with
//! work goes once onto the reactor's ready list, and the reactor's poll is
//! woken once, however many clients and calls queued work meanwhile.

use std::cell::Cell;
use std::net::SocketAddr;
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use mio::Waker;

use super::connection::{Addrs, Connection};
use super::core::{Core, lock};
use crate::Error;

/// Requests from API calls that only the reactor can carry out.
pub(crate) enum ReactorCommand {
    /// `attempt` is the blocking `connect` call waiting for the outcome; `None`
    /// for `connect_async`, whose outcome goes to the CONNACK/DISCONNECT callbacks.
    Connect {
        attempt: Option<u32>,
        /// One address inline: a connect to an IP literal allocates nothing.
        addrs: Addrs,
        intent: u64,
    },
    /// An asynchronous connect failed before the reactor could start it.
    Failed {
        error: Error,
        intent: u64,
    },
    /// The host name, resolved again for automatic reconnection `generation`.
    Resolved {
        generation: u32,
        result: Result<Vec<SocketAddr>, Error>,
    },
    StopReconnecting {
        intent: u64,
    },
}

/// A client joining a reactor, with the connection it brings from its
/// private reactor (if it had one).
pub(crate) struct Arrival {
    pub core: Arc<Core>,
    pub connection: Option<Box<Connection>>,
}

thread_local! {
    /// The reactor whose turn runs on this thread (0: none).
    static IN_TURN: Cell<usize> = const { Cell::new(0) };
}

/// Marks the calling thread as running a turn of a reactor.
pub(crate) struct TurnGuard(usize);

impl TurnGuard {
    pub fn enter(intake: &Intake) -> TurnGuard {
        TurnGuard(IN_TURN.with(|t| t.replace(intake as *const Intake as usize)))
    }
}

impl Drop for TurnGuard {
    fn drop(&mut self) {
        IN_TURN.with(|t| t.set(self.0));
    }
}

pub(crate) struct Intake {
    waker: Waker,
    /// Work was queued since the last turn began.
    wake_pending: AtomicBool,
    /// A turn is blocked in (or about to enter) its poll: queued work must
    /// write the waker. Otherwise the next turn finds `wake_pending` and does
    /// the work before it sleeps, which saves a syscall and a turn per publish.
    sleeping: AtomicBool,
    /// The poll descriptor was handed out: an external loop may be asleep on
    /// it, so every wake writes the waker.
    external_poller: AtomicBool,
    pub ready: std::sync::Mutex<Vec<Arc<Core>>>,
    /// Clients added, one word each (a fleet is added in one go).
    pub arrivals: std::sync::Mutex<Vec<Arc<Core>>>,
    /// Clients added with the connection they bring from their private
    /// reactor (rare: kept apart so that `arrivals` is one word a client).
    pub moves: std::sync::Mutex<Vec<Arrival>>,
}

impl Intake {
    pub fn new(waker: Waker) -> Intake {
        Intake {
            waker,
            wake_pending: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            external_poller: AtomicBool::new(false),
            ready: Default::default(),
            arrivals: Default::default(),
            moves: Default::default(),
        }
    }

    /// Whether the calling thread runs a turn of this reactor.
    pub fn in_turn(&self) -> bool {
        IN_TURN.with(|t| t.get()) == self as *const Intake as usize
    }

    /// `core` has work (its `queued` flag was just set).
    pub fn notify(&self, core: Arc<Core>) {
        lock(&self.ready).push(core);
        self.wake();
    }

    pub fn arrive(&self, arrival: Arrival) {
        match arrival.connection {
            None => lock(&self.arrivals).push(arrival.core),
            Some(_) => lock(&self.moves).push(arrival),
        }
        self.wake();
    }

    /// SeqCst pairs with [`Intake::prepare_sleep`]: either the reactor sees
    /// `wake_pending` before it sleeps, or this call sees `sleeping` and
    /// writes the waker. On the thread running a turn (a callback), the flag
    /// alone makes that turn do the work before it sleeps.
    pub fn wake(&self) {
        if self.in_turn() {
            self.wake_pending.store(true, Ordering::SeqCst);
            return;
        }
        if !self.wake_pending.swap(true, Ordering::SeqCst)
            && (self.sleeping.load(Ordering::SeqCst) || self.external_poller.load(Ordering::SeqCst))
        {
            let _ = self.waker.wake();
        }
    }

    /// Wake the poll whatever the flags say (stop, free).
    pub fn force_wake(&self) {
        self.wake_pending.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }

    /// Take the pending-work flag: the caller is about to do that work.
    pub fn clear_wake(&self) -> bool {
        self.wake_pending.swap(false, Ordering::SeqCst)
    }

    pub fn wake_is_pending(&self) -> bool {
        self.wake_pending.load(Ordering::SeqCst)
    }

    /// The reactor is about to poll: from now on wakes write the waker.
    /// Returns false when work arrived meanwhile and the poll must not block.
    pub fn prepare_sleep(&self) -> bool {
        self.sleeping.store(true, Ordering::SeqCst);
        !self.wake_pending.load(Ordering::SeqCst)
    }

    pub fn end_sleep(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
    }

    /// The descriptor was handed to an external loop.
    pub fn set_external_poller(&self) {
        self.external_poller.store(true, Ordering::SeqCst);
        if self.wake_is_pending() {
            // Queued before anyone could sleep on the descriptor: announce it now.
            let _ = self.waker.wake();
        }
    }
}

/// Commands from API calls waiting for the reactor: one word while there are
/// none, and one heap block per command (usually there is one at a time: the
/// reactor takes the whole queue). Thousands of clients connecting at once
/// each leave these blocks as holes in the heap once they are freed, so one
/// block, not a vector and its buffer. Lock-free, so the queue is one word:
/// any thread pushes, and the reactor takes the whole list with one swap (a
/// taken node is never seen by a push again, so there is no ABA).
pub(crate) struct CommandQueue {
    /// Newest first: a push is O(1) and `take` puts them in order.
    newest: AtomicPtr<Node>,
}

struct Node {
    command: ReactorCommand,
    next: *mut Node,
}

// SAFETY: the queue owns its nodes, and the commands in them are `Send`;
// nodes are only reached through atomic operations on `newest` (a push
// publishes a node built by its thread alone, `take` owns what it swaps out).
unsafe impl Send for CommandQueue {}
// SAFETY: as above.
unsafe impl Sync for CommandQueue {}

impl Default for CommandQueue {
    fn default() -> Self {
        CommandQueue {
            newest: AtomicPtr::new(ptr::null_mut()),
        }
    }
}

impl CommandQueue {
    pub fn push(&self, command: ReactorCommand) {
        let node = Box::into_raw(Box::new(Node {
            command,
            next: ptr::null_mut(),
        }));
        let mut newest = self.newest.load(Ordering::Relaxed);
        loop {
            // SAFETY: `node` is not published yet: only this thread sees it.
            unsafe { (*node).next = newest };
            // Release: the reactor's swap sees the node's contents.
            match self.newest.compare_exchange_weak(
                newest,
                node,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(current) => newest = current,
            }
        }
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.newest.load(Ordering::SeqCst).is_null()
    }

    /// Everything queued, oldest first, leaving the queue with no allocation.
    pub fn take(&self) -> Commands {
        let mut newest = self.newest.swap(ptr::null_mut(), Ordering::Acquire);
        let mut oldest = ptr::null_mut();
        while !newest.is_null() {
            // SAFETY: the swap gave this thread the whole list.
            let next = unsafe { std::mem::replace(&mut (*newest).next, oldest) };
            oldest = newest;
            newest = next;
        }
        Commands { oldest }
    }
}

impl Drop for CommandQueue {
    fn drop(&mut self) {
        drop(self.take());
    }
}

/// Commands taken from a queue, oldest first; owns them.
pub(crate) struct Commands {
    oldest: *mut Node,
}

impl Iterator for Commands {
    type Item = ReactorCommand;

    fn next(&mut self) -> Option<ReactorCommand> {
        if self.oldest.is_null() {
            return None;
        }
        // SAFETY: a node of the list `take` swapped out, each taken once.
        let node = unsafe { Box::from_raw(self.oldest) };
        self.oldest = node.next;
        Some(node.command)
    }
}

impl Drop for Commands {
    fn drop(&mut self) {
        // One node at a time: a recursive drop of a long list would
        // overflow the stack.
        for _ in self.by_ref() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intents(commands: Commands) -> Vec<u64> {
        commands
            .map(|command| match command {
                ReactorCommand::StopReconnecting { intent } => intent,
                _ => unreachable!("only StopReconnecting is queued here"),
            })
            .collect()
    }

    #[test]
    fn commands_come_out_oldest_first_and_leave_the_queue_empty() {
        let queue = CommandQueue::default();
        for intent in 1..=5 {
            queue.push(ReactorCommand::StopReconnecting { intent });
        }
        assert_eq!(intents(queue.take()), [1, 2, 3, 4, 5]);
        assert!(queue.newest.load(Ordering::SeqCst).is_null());
        assert_eq!(intents(queue.take()), [] as [u64; 0]);
        queue.push(ReactorCommand::StopReconnecting { intent: 9 });
        assert_eq!(intents(queue.take()), [9]);
    }

    #[test]
    fn a_long_queue_drops_without_deep_recursion() {
        // Run on a small stack: a recursive drop of this list would overflow it.
        std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(|| {
                let queue = CommandQueue::default();
                for intent in 0..200_000 {
                    queue.push(ReactorCommand::StopReconnecting { intent });
                }
                let mut taken = queue.take();
                assert_eq!(taken.next().map(|_| ()), Some(()));
                drop(taken);
                for intent in 0..200_000 {
                    queue.push(ReactorCommand::StopReconnecting { intent });
                }
                drop(queue);
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn pushes_from_many_threads_all_arrive_once_each_in_each_threads_order() {
        let queue = Arc::new(CommandQueue::default());
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let queue = queue.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        queue.push(ReactorCommand::StopReconnecting {
                            intent: t << 32 | i,
                        });
                    }
                })
            })
            .collect();
        let mut seen = Vec::new();
        while seen.len() < 40_000 {
            seen.extend(intents(queue.take()));
            std::thread::yield_now();
        }
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(intents(queue.take()), [] as [u64; 0]);
        for t in 0..4u64 {
            let of_thread: Vec<u64> = seen.iter().copied().filter(|i| i >> 32 == t).collect();
            assert_eq!(
                of_thread,
                (0..10_000).map(|i| t << 32 | i).collect::<Vec<_>>()
            );
        }
    }
}

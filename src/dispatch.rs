//! The seed's callback rules as data: per command, specific callbacks (with a
//! condition) ordered by priority, and at most one generic callback.
//!
//! Tables are copy-on-write behind an `Arc`, so dispatch takes a snapshot without
//! allocating and without holding a lock while user code runs; a callback may
//! therefore register further callbacks.

use std::ffi::CStr;
use std::sync::{Arc, Mutex};

use crate::Error;
use crate::protocol::codec::QoS;
use crate::protocol::properties::Properties;

/// The packet (or event) a callback is registered for. Values are the MQTT packet types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Command {
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    SubAck = 9,
    UnsubAck = 11,
    PingResp = 13,
    Disconnect = 14,
    /// MQTT 5 enhanced authentication: the server sent AUTH.
    Auth = 15,
}

impl Command {
    pub fn from_i32(value: i32) -> Option<Command> {
        Some(match value {
            2 => Command::ConnAck,
            3 => Command::Publish,
            4 => Command::PubAck,
            5 => Command::PubRec,
            6 => Command::PubRel,
            7 => Command::PubComp,
            9 => Command::SubAck,
            11 => Command::UnsubAck,
            13 => Command::PingResp,
            14 => Command::Disconnect,
            15 => Command::Auth,
            _ => return None,
        })
    }
}

/// An application message as callbacks see it. The topic is also available
/// NUL-terminated for the C boundary.
#[derive(Clone, Copy, Debug)]
pub struct MessageView<'a> {
    pub topic: &'a str,
    pub topic_c: &'a CStr,
    pub payload: &'a [u8],
    pub qos: QoS,
    pub retain: bool,
    pub dup: bool,
    pub mid: u16,
    /// MQTT 5: the PUBLISH's properties (`None` under 3.1.1).
    pub properties: Option<Properties<'a>>,
}

/// What a callback receives: the seed's `data` dictionary.
#[derive(Clone, Copy, Debug)]
pub struct Data<'a> {
    pub command: Command,
    /// PUBLISH with QoS 0/1, or the PUBREL that completes a QoS 2 message.
    pub message: Option<MessageView<'a>>,
    pub mid: u16,
    pub return_code: u8,
    pub session_present: bool,
    pub granted_qos: &'a [u8],
    /// DISCONNECT: why the connection ended (`None` after a requested disconnect).
    /// PUBCOMP: `Some(SessionLost)` when the broker acknowledged the message
    /// (PUBREC) and then came back without the session.
    /// MQTT 5 PUBACK/PUBCOMP: `Some(RefusedByBroker)` for a refused message.
    pub error: Option<Error>,
    /// MQTT 5 reason code of CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP and
    /// DISCONNECT (the server's, or the one we sent when we closed for a
    /// protocol error); under 3.1.1 the CONNACK return code, else 0.
    pub reason_code: u8,
    /// MQTT 5 SUBACK and UNSUBACK: one reason code per filter.
    pub reason_codes: &'a [u8],
    /// MQTT 5: the packet's properties (`None` under 3.1.1).
    pub properties: Option<Properties<'a>>,
    /// CONNACK with a server list (`Client::set_servers`): the index of the
    /// entry that answered. `None` without a list and for other events.
    pub server_index: Option<usize>,
}

impl<'a> Data<'a> {
    pub fn new(command: Command) -> Data<'a> {
        Data {
            command,
            message: None,
            mid: 0,
            return_code: 0,
            session_present: false,
            granted_qos: &[],
            error: None,
            reason_code: 0,
            reason_codes: &[],
            properties: None,
            server_index: None,
        }
    }
}

pub type Callback<C> = Arc<dyn Fn(&C, &Data<'_>) + Send + Sync>;
pub type Condition = Arc<dyn Fn(&Data<'_>) -> bool + Send + Sync>;

/// How the client type of a dispatcher runs callbacks and conditions held
/// inline (a C function pointer and its user data): one function each for
/// the type, so that a row holds two words rather than three.
pub trait RawTarget {
    /// Run an inline callback.
    ///
    /// # Safety
    /// `words` are those of a `Raw` made for this type's callbacks.
    unsafe fn run_raw(&self, data: &Data<'_>, words: [*mut (); 2]);

    /// Evaluate an inline condition.
    ///
    /// # Safety
    /// `words` are those of a `Raw` made for this type's conditions.
    unsafe fn test_raw(data: &Data<'_>, words: [*mut (); 2]) -> bool;
}

/// Two words the client type's `RawTarget` functions are given back: a
/// callback or condition from C (its function pointer and user data),
/// stored inline with no allocation.
#[derive(Clone, Copy)]
pub(crate) struct Raw {
    words: [*mut (); 2],
}

impl Raw {
    /// # Safety
    /// The `RawTarget` function of the dispatcher's client type that will
    /// get these words (`run_raw` for a `Handler`, `test_raw` for a `Test`)
    /// must be sound with them from any thread, any number of times (also
    /// concurrently), for as long as a dispatcher holds them.
    pub(crate) unsafe fn new(words: [*mut (); 2]) -> Raw {
        Raw { words }
    }
}

// SAFETY: the words are only handed back to the `RawTarget` functions,
// which `Raw::new`'s caller promised may run on any thread.
unsafe impl Send for Raw {}
// SAFETY: as above.
unsafe impl Sync for Raw {}

/// A callback to register.
pub(crate) enum Handler<C> {
    Native(Callback<C>),
    Raw(Raw),
}

impl<C> Clone for Handler<C> {
    fn clone(&self) -> Self {
        match self {
            Handler::Native(callback) => Handler::Native(callback.clone()),
            Handler::Raw(raw) => Handler::Raw(*raw),
        }
    }
}

/// A condition to register.
#[derive(Clone)]
pub(crate) enum Test {
    Native(Condition),
    Raw(Raw),
}

/// One row of the callback table: 24 bytes, the kind of callback (native
/// or inline) folded into the row's own tag. A specific callback takes two
/// rows, its condition then itself, so that a generic one (all an idle C
/// client usually has) carries no room for a condition or a priority.
///
/// Per command: the specific pairs by priority, highest first, equal
/// priorities in registration order; then at most one generic row, last.
enum Row<C> {
    /// The condition and priority of the specific row right after it.
    WhenNative {
        command: Command,
        priority: i32,
        test: Condition,
    },
    WhenRaw {
        command: Command,
        priority: i32,
        test: Raw,
    },
    SpecificNative {
        command: Command,
        callback: Callback<C>,
    },
    SpecificRaw {
        command: Command,
        raw: Raw,
    },
    GenericNative {
        command: Command,
        callback: Callback<C>,
    },
    GenericRaw {
        command: Command,
        raw: Raw,
    },
}

impl<C> Clone for Row<C> {
    fn clone(&self) -> Self {
        match self {
            Row::WhenNative {
                command,
                priority,
                test,
            } => Row::WhenNative {
                command: *command,
                priority: *priority,
                test: test.clone(),
            },
            &Row::WhenRaw {
                command,
                priority,
                test,
            } => Row::WhenRaw {
                command,
                priority,
                test,
            },
            Row::SpecificNative { command, callback } => Row::SpecificNative {
                command: *command,
                callback: callback.clone(),
            },
            &Row::SpecificRaw { command, raw } => Row::SpecificRaw { command, raw },
            Row::GenericNative { command, callback } => Row::GenericNative {
                command: *command,
                callback: callback.clone(),
            },
            &Row::GenericRaw { command, raw } => Row::GenericRaw { command, raw },
        }
    }
}

impl<C> Row<C> {
    fn when(command: Command, priority: i32, test: Test) -> Row<C> {
        match test {
            Test::Native(test) => Row::WhenNative {
                command,
                priority,
                test,
            },
            Test::Raw(test) => Row::WhenRaw {
                command,
                priority,
                test,
            },
        }
    }

    fn specific(command: Command, handler: Handler<C>) -> Row<C> {
        match handler {
            Handler::Native(callback) => Row::SpecificNative { command, callback },
            Handler::Raw(raw) => Row::SpecificRaw { command, raw },
        }
    }

    fn generic(command: Command, handler: Handler<C>) -> Row<C> {
        match handler {
            Handler::Native(callback) => Row::GenericNative { command, callback },
            Handler::Raw(raw) => Row::GenericRaw { command, raw },
        }
    }

    fn command(&self) -> Command {
        match self {
            Row::WhenNative { command, .. }
            | Row::WhenRaw { command, .. }
            | Row::SpecificNative { command, .. }
            | Row::SpecificRaw { command, .. }
            | Row::GenericNative { command, .. }
            | Row::GenericRaw { command, .. } => *command,
        }
    }

    /// A condition row's priority; `None` for the others.
    fn priority(&self) -> Option<i32> {
        match self {
            Row::WhenNative { priority, .. } | Row::WhenRaw { priority, .. } => Some(*priority),
            _ => None,
        }
    }

    fn is_generic(&self) -> bool {
        matches!(self, Row::GenericNative { .. } | Row::GenericRaw { .. })
    }
}

impl<C: RawTarget> Row<C> {
    /// A condition row's verdict (false for the others).
    fn holds(&self, data: &Data<'_>) -> bool {
        match self {
            Row::WhenNative { test, .. } => test(data),
            // SAFETY: words made for this type's conditions (`Raw::new`).
            Row::WhenRaw { test, .. } => unsafe { C::test_raw(data, test.words) },
            _ => false,
        }
    }

    /// Run a specific or generic row's callback (nothing for a condition).
    fn run(&self, client: &C, data: &Data<'_>) {
        match self {
            Row::SpecificNative { callback, .. } | Row::GenericNative { callback, .. } => {
                callback(client, data)
            }
            // SAFETY: words made for this type's callbacks (`Raw::new`).
            Row::SpecificRaw { raw, .. } | Row::GenericRaw { raw, .. } => unsafe {
                client.run_raw(data, raw.words)
            },
            Row::WhenNative { .. } | Row::WhenRaw { .. } => {}
        }
    }
}

/// `rows` with `remove` rows at `at` replaced by `insert`, in one allocation
/// (the iterator's exact length lets `Arc<[_]>` allocate once).
fn spliced<C, const N: usize>(
    rows: &[Row<C>],
    at: usize,
    remove: usize,
    insert: [Row<C>; N],
) -> Tables<C> {
    rows[..at]
        .iter()
        .cloned()
        .chain(insert)
        .chain(rows[at + remove..].iter().cloned())
        .collect()
}

/// Callbacks of one client. `C` is what callbacks receive as their first argument.
pub struct Dispatcher<C> {
    /// Every command's rows in one allocation (an idle client of thousands
    /// registers a few generic callbacks). Replaced, not changed, by `on`: a
    /// dispatch holds its own reference, so a callback may register
    /// callbacks without deadlock.
    tables: Mutex<Option<Tables<C>>>,
}

type Tables<C> = Arc<[Row<C>]>;

impl<C> Default for Dispatcher<C> {
    fn default() -> Self {
        Dispatcher {
            tables: Mutex::new(None),
        }
    }
}

impl<C> Dispatcher<C> {
    /// Register a callback. With a condition it is specific; without, it is the
    /// generic callback of that command and replaces the previous one.
    pub fn on(
        &self,
        command: Command,
        callback: Callback<C>,
        condition: Option<Condition>,
        priority: i32,
    ) {
        self.on_handler(
            command,
            Handler::Native(callback),
            condition.map(Test::Native),
            priority,
        );
    }

    /// `on` for a callback and condition either native or raw.
    pub(crate) fn on_handler(
        &self,
        command: Command,
        handler: Handler<C>,
        condition: Option<Test>,
        priority: i32,
    ) {
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let rows: &[Row<C>] = tables.as_deref().unwrap_or(&[]);
        let generic = rows
            .iter()
            .position(|row| row.is_generic() && row.command() == command);
        // The new table is built in its final allocation: thousands of
        // clients registering callbacks leave no intermediate blocks behind.
        let next: Tables<C> = match condition {
            Some(test) => {
                // Before the first lower priority, else before the generic one.
                let at = rows
                    .iter()
                    .position(|row| {
                        row.command() == command && row.priority().is_some_and(|p| p < priority)
                    })
                    .or(generic)
                    .unwrap_or(rows.len());
                let when = Row::when(command, priority, test);
                spliced(rows, at, 0, [when, Row::specific(command, handler)])
            }
            None => {
                let row = Row::generic(command, handler);
                match generic {
                    Some(at) => spliced(rows, at, 1, [row]),
                    None => spliced(rows, rows.len(), 0, [row]),
                }
            }
        };
        *tables = Some(next);
    }

    /// Make `handler` the specific callback of `command` registered under
    /// `condition` (this very `Arc`): it replaces the one registered under it
    /// before, else it is added with `priority`. Lets a caller keep one slot
    /// (the loop's message callback) without holding the handler elsewhere.
    pub(crate) fn replace_specific(
        &self,
        command: Command,
        handler: Handler<C>,
        condition: &Condition,
        priority: i32,
    ) {
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let rows: &[Row<C>] = tables.as_deref().unwrap_or(&[]);
        let registered = rows.iter().position(|row| {
            matches!(row, Row::WhenNative { command: c, test, .. }
                if *c == command && Arc::ptr_eq(test, condition))
        });
        if let Some(at) = registered {
            let next = spliced(rows, at + 1, 1, [Row::specific(command, handler)]);
            *tables = Some(next);
            return;
        }
        drop(tables);
        self.on_handler(
            command,
            handler,
            Some(Test::Native(condition.clone())),
            priority,
        );
    }

    /// Whether anything is registered for `command` (lets the caller skip
    /// preparing data nobody will see).
    pub fn has(&self, command: Command) -> bool {
        let tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        tables
            .as_deref()
            .is_some_and(|rows| rows.iter().any(|row| row.command() == command))
    }
}

impl<C: RawTarget> Dispatcher<C> {
    /// Run at most one specific callback (the highest-priority one whose condition
    /// holds), or else the generic one. Returns whether a callback ran.
    pub fn dispatch(&self, client: &C, data: &Data<'_>) -> bool {
        let Some(tables) = self
            .tables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return false;
        };
        let mut rows = tables.iter().filter(|row| row.command() == data.command);
        while let Some(row) = rows.next() {
            if row.priority().is_some() {
                // Taken even when the test fails: it is the pair's second row.
                let specific = rows.next();
                if let Some(specific) = specific
                    && row.holds(data)
                {
                    specific.run(client, data);
                    return true;
                }
            } else if row.is_generic() {
                // Last of its command: no condition held.
                row.run(client, data);
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    fn recorder(log: &Arc<StdMutex<Vec<&'static str>>>, name: &'static str) -> Callback<()> {
        let log = log.clone();
        Arc::new(move |_, _| log.lock().unwrap().push(name))
    }

    #[test]
    fn highest_priority_matching_wins_and_ties_go_to_the_earliest() {
        let d = Dispatcher::<()>::default();
        let log = Arc::new(StdMutex::new(Vec::new()));
        let yes: Condition = Arc::new(|_| true);
        let no: Condition = Arc::new(|_| false);
        d.on(
            Command::Publish,
            recorder(&log, "low"),
            Some(yes.clone()),
            0,
        );
        d.on(Command::Publish, recorder(&log, "high-no"), Some(no), 9);
        d.on(
            Command::Publish,
            recorder(&log, "high-a"),
            Some(yes.clone()),
            5,
        );
        d.on(Command::Publish, recorder(&log, "high-b"), Some(yes), 5);
        d.on(Command::Publish, recorder(&log, "generic"), None, 0);
        assert!(d.dispatch(&(), &Data::new(Command::Publish)));
        assert_eq!(*log.lock().unwrap(), vec!["high-a"]);
    }

    #[test]
    fn a_specific_callback_replaced_under_its_condition_keeps_one_slot() {
        let d = Dispatcher::<()>::default();
        let log = Arc::new(StdMutex::new(Vec::new()));
        let mark: Condition = Arc::new(|_| true);
        let other: Condition = Arc::new(|_| true);
        d.on(Command::Publish, recorder(&log, "other"), Some(other), -5);
        for name in ["first", "second"] {
            let handler = Handler::Native(recorder(&log, name));
            d.replace_specific(Command::Publish, handler, &mark, -1);
        }
        assert!(d.dispatch(&(), &Data::new(Command::Publish)));
        // Two pairs of rows: the replaced one did not stay beside its successor.
        let rows = d.tables.lock().unwrap().as_deref().map_or(0, <[_]>::len);
        assert_eq!(rows, 4);
        assert_eq!(*log.lock().unwrap(), vec!["second"]);
    }

    #[test]
    fn generic_runs_only_without_a_matching_condition_and_is_replaced() {
        let d = Dispatcher::<()>::default();
        let log = Arc::new(StdMutex::new(Vec::new()));
        d.on(
            Command::PubAck,
            recorder(&log, "c"),
            Some(Arc::new(|_| false)),
            0,
        );
        d.on(Command::PubAck, recorder(&log, "g1"), None, 0);
        d.on(Command::PubAck, recorder(&log, "g2"), None, 0);
        assert!(d.dispatch(&(), &Data::new(Command::PubAck)));
        assert!(!d.dispatch(&(), &Data::new(Command::SubAck)));
        assert_eq!(*log.lock().unwrap(), vec!["g2"]);
    }

    type Log = StdMutex<Vec<&'static str>>;

    /// Raw rows as C's are: a log (the "function") and a name (the "user
    /// data"); a raw condition holds when its first word is not null.
    impl RawTarget for () {
        unsafe fn run_raw(&self, _: &Data<'_>, words: [*mut (); 2]) {
            // SAFETY: `raw_recorder`'s words: a live `Log` and a `&'static str`.
            let (log, name) = unsafe { (&*words[0].cast::<Log>(), *words[1].cast::<&str>()) };
            log.lock().unwrap().push(name);
        }

        unsafe fn test_raw(_: &Data<'_>, words: [*mut (); 2]) -> bool {
            !words[0].is_null()
        }
    }

    fn raw_recorder(log: &Arc<Log>, name: &'static &'static str) -> Handler<()> {
        let words = [
            Arc::as_ptr(log).cast_mut().cast(),
            (name as *const &str).cast_mut().cast(),
        ];
        // SAFETY: the tests keep the log alive while the dispatcher lives.
        Handler::Raw(unsafe { Raw::new(words) })
    }

    fn raw_test(holds: bool) -> Test {
        let word = if holds {
            std::ptr::dangling_mut()
        } else {
            std::ptr::null_mut()
        };
        // SAFETY: `test_raw` reads no pointer.
        Test::Raw(unsafe { Raw::new([word, std::ptr::null_mut()]) })
    }

    #[test]
    fn inline_rows_take_no_more_room_than_native_ones() {
        let word = size_of::<usize>();
        assert_eq!(size_of::<Row<Arc<()>>>(), 3 * word);
    }

    #[test]
    fn inline_and_native_callbacks_share_priorities_and_conditions() {
        let d = Dispatcher::<()>::default();
        let log = Arc::new(StdMutex::new(Vec::new()));
        let yes = || Some(Test::Native(Arc::new(|_: &Data<'_>| true)));
        d.on_handler(Command::Publish, raw_recorder(&log, &"raw-low"), yes(), 0);
        d.on_handler(
            Command::Publish,
            raw_recorder(&log, &"raw-high-no"),
            Some(raw_test(false)),
            9,
        );
        d.on_handler(
            Command::Publish,
            raw_recorder(&log, &"raw-generic"),
            None,
            0,
        );
        d.on_handler(
            Command::Publish,
            Handler::Native(recorder(&log, "native-5")),
            Some(raw_test(true)),
            5,
        );
        d.on_handler(
            Command::Publish,
            raw_recorder(&log, &"raw-5"),
            Some(raw_test(true)),
            5,
        );
        d.on_handler(
            Command::PubAck,
            raw_recorder(&log, &"raw-no"),
            Some(raw_test(false)),
            0,
        );
        d.on_handler(Command::PubAck, raw_recorder(&log, &"puback"), None, 0);
        assert!(d.dispatch(&(), &Data::new(Command::Publish)));
        assert!(d.dispatch(&(), &Data::new(Command::PubAck)));
        assert!(!d.dispatch(&(), &Data::new(Command::SubAck)));
        assert_eq!(*log.lock().unwrap(), vec!["native-5", "puback"]);
    }

    #[test]
    fn an_inline_generic_replaces_a_native_one_and_the_reverse() {
        let d = Dispatcher::<()>::default();
        let log = Arc::new(StdMutex::new(Vec::new()));
        d.on_handler(Command::ConnAck, raw_recorder(&log, &"g1"), None, 0);
        d.on(Command::ConnAck, recorder(&log, "g2"), None, 0);
        assert!(d.dispatch(&(), &Data::new(Command::ConnAck)));
        d.on_handler(Command::ConnAck, raw_recorder(&log, &"g3"), None, 0);
        // Registered after the generic, still tried before it.
        d.on_handler(
            Command::ConnAck,
            raw_recorder(&log, &"no"),
            Some(raw_test(false)),
            -5,
        );
        assert!(d.dispatch(&(), &Data::new(Command::ConnAck)));
        d.on_handler(
            Command::ConnAck,
            raw_recorder(&log, &"yes"),
            Some(raw_test(true)),
            -9,
        );
        assert!(d.dispatch(&(), &Data::new(Command::ConnAck)));
        assert_eq!(*log.lock().unwrap(), vec!["g2", "g3", "yes"]);
    }

    /// A client whose callbacks register callbacks on it.
    #[derive(Default)]
    struct Me(Dispatcher<Me>);

    impl RawTarget for Me {
        unsafe fn run_raw(&self, _: &Data<'_>, _: [*mut (); 2]) {
            unreachable!("Me registers native callbacks only")
        }

        unsafe fn test_raw(_: &Data<'_>, _: [*mut (); 2]) -> bool {
            unreachable!("Me registers native conditions only")
        }
    }

    #[test]
    fn a_callback_registers_callbacks_from_inside_a_dispatch() {
        let me = Me::default();
        let log = Arc::new(StdMutex::new(Vec::new()));
        let inner = log.clone();
        me.0.on(
            Command::PubAck,
            Arc::new(move |me: &Me, _: &Data<'_>| {
                inner.lock().unwrap().push("first");
                let log = inner.clone();
                me.0.on(
                    Command::PubAck,
                    Arc::new(move |_: &Me, _: &Data<'_>| log.lock().unwrap().push("second")),
                    None,
                    0,
                );
            }),
            None,
            0,
        );
        assert!(me.0.dispatch(&me, &Data::new(Command::PubAck)));
        assert!(me.0.dispatch(&me, &Data::new(Command::PubAck)));
        assert_eq!(*log.lock().unwrap(), vec!["first", "second"]);
    }
}

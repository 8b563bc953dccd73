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

struct Specific<C> {
    callback: Callback<C>,
    condition: Condition,
    priority: i32,
}

struct CommandTable<C> {
    /// Sorted by priority, highest first; equal priorities keep registration
    /// order. A boxed slice (no capacity word): tables are rebuilt on `on`.
    specific: Box<[Specific<C>]>,
    generic: Option<Callback<C>>,
}

impl<C> Clone for CommandTable<C> {
    fn clone(&self) -> Self {
        CommandTable {
            specific: self
                .specific
                .iter()
                .map(|s| Specific {
                    callback: s.callback.clone(),
                    condition: s.condition.clone(),
                    priority: s.priority,
                })
                .collect(),
            generic: self.generic.clone(),
        }
    }
}

/// Callbacks of one client. `C` is what callbacks receive as their first argument.
pub struct Dispatcher<C> {
    /// One table per command that has callbacks, all in one allocation
    /// (an idle client of thousands registers a few commands). Replaced, not
    /// changed, by `on`: a dispatch holds its own reference, so a callback may
    /// register callbacks without deadlock.
    tables: Mutex<Option<Tables<C>>>,
}

type Tables<C> = Arc<[(Command, CommandTable<C>)]>;

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
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let mut next: Vec<(Command, CommandTable<C>)> = tables
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .map(|(c, table)| (*c, table.clone()))
            .collect();
        let at = match next.iter().position(|(c, _)| *c == command) {
            Some(at) => at,
            None => {
                next.push((
                    command,
                    CommandTable {
                        specific: Box::default(),
                        generic: None,
                    },
                ));
                next.len() - 1
            }
        };
        let table = &mut next[at].1;
        match condition {
            Some(condition) => {
                let at = table
                    .specific
                    .iter()
                    .position(|s| s.priority < priority)
                    .unwrap_or(table.specific.len());
                let mut specific = std::mem::take(&mut table.specific).into_vec();
                specific.insert(
                    at,
                    Specific {
                        callback,
                        condition,
                        priority,
                    },
                );
                table.specific = specific.into_boxed_slice();
            }
            None => table.generic = Some(callback),
        }
        *tables = Some(next.into());
    }

    /// Whether anything is registered for `command` (lets the caller skip
    /// preparing data nobody will see).
    pub fn has(&self, command: Command) -> bool {
        let tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        tables
            .as_deref()
            .is_some_and(|tables| tables.iter().any(|(c, _)| *c == command))
    }

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
        let Some((_, table)) = tables.iter().find(|(c, _)| *c == data.command) else {
            return false;
        };
        if let Some(specific) = table.specific.iter().find(|s| (s.condition)(data)) {
            (specific.callback)(client, data);
            return true;
        }
        if let Some(generic) = &table.generic {
            generic(client, data);
            return true;
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
}

//! Callback event recorder: every callback a client makes, as an owned [`Event`]
//! sent down an mpsc channel, plus `expect`-style waits on that channel.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use mqtt::protocol::codec::QoS;
use mqtt::protocol::properties::{Properties, PropertiesBuf};
use mqtt::{Client, Command, Data, Error};

use super::TIMEOUT;

/// An owned copy of what a callback saw, and when.
#[derive(Clone, Debug)]
pub struct Event {
    pub at: Instant,
    pub command: Command,
    pub topic: Option<String>,
    pub payload: Vec<u8>,
    pub qos: Option<QoS>,
    pub retain: bool,
    pub mid: u16,
    pub granted: Vec<u8>,
    pub return_code: u8,
    pub session_present: bool,
    pub error: Option<Error>,
    /// MQTT 5 reason code (see `Data::reason_code`).
    pub reason_code: u8,
    /// MQTT 5 SUBACK/UNSUBACK reason codes.
    pub reason_codes: Vec<u8>,
    /// MQTT 5: a copy of the packet's properties.
    pub properties: Option<PropertiesBuf>,
    /// MQTT 5: a copy of the message's properties.
    pub message_properties: Option<PropertiesBuf>,
    /// CONNACK with a server list: the entry that answered (not compared by `==`).
    pub server_index: Option<usize>,
}

impl Event {
    pub fn from_data(data: &Data<'_>) -> Event {
        Event {
            at: Instant::now(),
            command: data.command,
            topic: data.message.map(|m| m.topic.to_owned()),
            payload: data.message.map(|m| m.payload.to_vec()).unwrap_or_default(),
            qos: data.message.map(|m| m.qos),
            retain: data.message.is_some_and(|m| m.retain),
            mid: data.mid,
            granted: data.granted_qos.to_vec(),
            return_code: data.return_code,
            session_present: data.session_present,
            error: data.error,
            reason_code: data.reason_code,
            reason_codes: data.reason_codes.to_vec(),
            properties: data.properties.map(PropertiesBuf::from_properties),
            message_properties: data
                .message
                .and_then(|m| m.properties)
                .map(PropertiesBuf::from_properties),
            server_index: data.server_index,
        }
    }

    /// The packet's properties (empty when it had none).
    pub fn props(&self) -> Properties<'_> {
        self.properties
            .as_ref()
            .map(PropertiesBuf::as_properties)
            .unwrap_or_default()
    }

    /// The event carries a message (a PUBLISH, or the PUBREL completing a QoS 2 one).
    pub fn is_message(&self) -> bool {
        self.topic.is_some()
    }
}

/// Equality of what the callback saw; the arrival time `at` is ignored.
impl PartialEq for Event {
    fn eq(&self, other: &Event) -> bool {
        self.command == other.command
            && self.topic == other.topic
            && self.payload == other.payload
            && self.qos == other.qos
            && self.retain == other.retain
            && self.mid == other.mid
            && self.granted == other.granted
            && self.return_code == other.return_code
            && self.session_present == other.session_present
            && self.error == other.error
            && self.reason_code == other.reason_code
            && self.reason_codes == other.reason_codes
            && self.properties == other.properties
            && self.message_properties == other.message_properties
    }
}

pub const ALL_COMMANDS: [Command; 10] = [
    Command::ConnAck,
    Command::Publish,
    Command::PubAck,
    Command::PubRec,
    Command::PubRel,
    Command::PubComp,
    Command::SubAck,
    Command::UnsubAck,
    Command::PingResp,
    Command::Disconnect,
];

/// Record every callback of `client` for `commands` (generic callbacks, so a test
/// can still add specific ones).
pub fn record(client: &Client, commands: &[Command]) -> Receiver<Event> {
    let (tx, rx) = channel();
    for &command in commands {
        let tx = tx.clone();
        client.on(
            command,
            Arc::new(move |_: &Client, data: &Data<'_>| {
                let _ = tx.send(Event::from_data(data));
            }),
            None,
            0,
        );
    }
    rx
}

/// A new client whose every callback ([`ALL_COMMANDS`]) is recorded.
pub fn recorded_client(id: &str, clean: bool) -> (Client, Receiver<Event>) {
    let client = Client::new(id, clean).unwrap();
    let rx = record(&client, &ALL_COMMANDS);
    (client, rx)
}

/// The next event satisfying `want` within `timeout`, skipping others.
pub fn expect_within(
    rx: &Receiver<Event>,
    timeout: Duration,
    what: &str,
    want: impl Fn(&Event) -> bool,
) -> Event {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(e) if want(&e) => return e,
            Ok(_) => {}
            Err(_) => panic!("no {what} within {timeout:?}"),
        }
    }
}

/// The next event satisfying `want`, skipping others; panics after `TIMEOUT`.
pub fn expect(rx: &Receiver<Event>, what: &str, want: impl Fn(&Event) -> bool) -> Event {
    expect_within(rx, TIMEOUT, what, want)
}

pub fn expect_connack(rx: &Receiver<Event>) -> Event {
    expect(rx, "CONNACK", |e| e.command == Command::ConnAck)
}

pub fn expect_disconnect(rx: &Receiver<Event>) -> Event {
    expect(rx, "DISCONNECT", |e| e.command == Command::Disconnect)
}

/// The next event carrying a message.
pub fn expect_message(rx: &Receiver<Event>, what: &str) -> Event {
    expect(rx, what, Event::is_message)
}

/// The next message (PUBLISH or PUBREL callback) on `topic`.
pub fn message_on(rx: &Receiver<Event>, topic: &str) -> Event {
    expect(rx, topic, |e| {
        matches!(e.command, Command::Publish | Command::PubRel) && e.topic.as_deref() == Some(topic)
    })
}

/// Events already recorded, without waiting.
pub fn drain(rx: &Receiver<Event>) -> Vec<Event> {
    rx.try_iter().collect()
}

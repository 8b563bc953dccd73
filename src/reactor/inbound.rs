//! Where a packet's bytes become a callback: decode each complete packet
//! of the read buffer (`protocol::codec`), hand it to the session
//! (`protocol::session`), and dispatch what it means to the client's
//! callbacks (`dispatch`). CONNACK and DISCONNECT also steer the connection.

use std::ffi::CStr;
use std::sync::Arc;
use std::time::Instant;

use super::connection::{Connection, Io};
use super::core::Core;
use crate::Error;
use crate::dispatch::{Command, Data, MessageView};
use crate::log::{Level, log};
use crate::protocol::codec::{self, Decoded, Packet, ProtocolVersion, QoS};
use crate::protocol::properties::{self as prop, Properties};
use crate::protocol::session::{Incoming, Message, Refused};
use crate::protocol::v5::{self, AfterRefusal};

impl Connection {
    /// Decode and handle every complete packet in `buf[read_start..read_end]`.
    pub(super) fn process_buffer(
        &mut self,
        core: &Arc<Core>,
        io: Io<'_>,
        max_packet_size: usize,
        buf: &[u8],
        topic_buf: &mut Vec<u8>,
    ) -> Result<(), Error> {
        loop {
            let input = &buf[self.read_start as usize..self.read_end as usize];
            let (packet, used) = match codec::decode_as(input, max_packet_size, self.protocol) {
                Ok(Decoded::Packet(packet, used)) => (packet, used),
                Ok(Decoded::Incomplete(_)) => return Ok(()),
                Err(e) => {
                    log!(core, Level::Error, "invalid packet from the broker: {e}");
                    return Err(self.protocol_error(core, Error::from_codec(e)));
                }
            };
            crate::log::received(core, &packet);
            let name = crate::log::packet_name(&packet);
            let details = Details {
                reason_code: packet.reason_code().unwrap_or(0),
                properties: packet.properties(),
                reason_codes: match &packet {
                    Packet::UnsubAck(ack) => ack.reason_codes,
                    _ => &[],
                },
            };
            let handled = core.session().handle_packet(Instant::now(), packet);
            let incoming = match handled {
                Ok(incoming) => incoming,
                Err(e) => {
                    log!(core, Level::Error, "{name} from the broker: {e}");
                    return Err(self.protocol_error(core, e));
                }
            };
            match incoming {
                Some(Incoming::ConnAck(ack)) => {
                    self.read_start += used as u32;
                    let error = if self.protocol == ProtocolVersion::V5 {
                        v5::connack_error(ack.reason_code)
                    } else {
                        ack.code().and_then(Error::from_connack)
                    };
                    let mut data = Data::new(Command::ConnAck);
                    data.return_code = ack.reason_code;
                    data.reason_code = ack.reason_code;
                    data.session_present = ack.session_present;
                    data.properties = ack.properties;
                    data.server_index = self.dial_ref().server_index.map(|i| i as usize);
                    if let Some(error) = error {
                        let after = match ack.properties {
                            Some(props) => v5::after_refusal(ack.reason_code, props),
                            None => AfterRefusal::Retry,
                        };
                        core.run_callbacks(&data);
                        if let Some(conn) = self.conn.take() {
                            self.drop_connection(core, io, conn);
                        }
                        self.follow_refusal(core, after);
                        self.attempt_failed(core, io, error);
                        return Ok(());
                    }
                    self.connect_accepted(core, ack.session_present);
                    core.run_callbacks(&data);
                    let unresolved = core.session().take_unresolved();
                    for mid in unresolved {
                        if core.is_closed() {
                            break;
                        }
                        log!(
                            core,
                            Level::Warn,
                            "QoS 2 message {mid}: the broker lost its session after PUBREC; delivery unknown"
                        );
                        let mut data = Data::new(Command::PubComp);
                        data.mid = mid;
                        data.error = Some(Error::SessionLost);
                        core.run_callbacks(&data);
                    }
                    let refused = core.session().take_refused();
                    for (mid, what, error) in refused {
                        if core.is_closed() {
                            break;
                        }
                        log!(
                            core,
                            Level::Warn,
                            "{what:?} {mid} not sent: the broker's CONNACK does not allow it ({error})"
                        );
                        // Reported as the broker's refusal would be; QoS 0 has no ack.
                        let command = match what {
                            Refused::Publish(QoS::AtMostOnce) => continue,
                            Refused::Publish(QoS::AtLeastOnce) => Command::PubAck,
                            Refused::Publish(QoS::ExactlyOnce) => Command::PubComp,
                            Refused::Subscribe => Command::SubAck,
                            Refused::Unsubscribe => Command::UnsubAck,
                        };
                        let mut data = Data::new(command);
                        data.mid = mid;
                        data.error = Some(error);
                        core.run_callbacks(&data);
                    }
                    if core.is_closed() || self.conn.is_none() {
                        return Ok(());
                    }
                    continue;
                }
                Some(Incoming::Disconnect(disconnect)) => {
                    self.read_start += used as u32;
                    let props = disconnect.properties.unwrap_or_default();
                    log!(
                        core,
                        Level::Warn,
                        "the broker sent DISCONNECT (reason code {:#04x}{})",
                        disconnect.reason_code,
                        props
                            .str_of(prop::REASON_STRING)
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    );
                    let after = v5::after_refusal(disconnect.reason_code, props);
                    self.follow_refusal(core, after);
                    if std::mem::take(&mut self.stop_after_refusal) {
                        self.keep_reconnecting = false;
                    }
                    self.close_with(
                        core,
                        io,
                        Some(Error::ServerDisconnect),
                        disconnect.reason_code,
                        disconnect.properties,
                    );
                    return Ok(());
                }
                Some(incoming) => dispatch_incoming(core, topic_buf, incoming, &details),
                None => {}
            }
            self.read_start += used as u32;
            if core.is_closed() || self.conn.is_none() {
                return Ok(());
            }
        }
    }
}

/// What the packet behind an `Incoming` said beyond it (MQTT 5).
struct Details<'a> {
    reason_code: u8,
    properties: Option<Properties<'a>>,
    /// UNSUBACK's reason codes.
    reason_codes: &'a [u8],
}

fn dispatch_incoming(
    core: &Arc<Core>,
    topic_buf: &mut Vec<u8>,
    incoming: Incoming<'_>,
    details: &Details<'_>,
) {
    let ack_data = |command: Command, mid: u16| {
        let mut data = Data::new(command);
        data.mid = mid;
        data.reason_code = details.reason_code;
        data.properties = details.properties;
        data
    };
    match incoming {
        Incoming::Publish { mid, message } => {
            dispatch_message(core, topic_buf, Data::new(Command::Publish), mid, message)
        }
        Incoming::PubRel { mid, message } => {
            dispatch_message(
                core,
                topic_buf,
                ack_data(Command::PubRel, mid),
                mid,
                message.as_ref().map(|m| m.as_message()),
            );
            if let Some(message) = message {
                // The callbacks returned: now it counts as delivered (a store
                // records that before PUBCOMP goes).
                let mut session = core.session();
                if session.delivered(mid).is_err() {
                    drop(session);
                    log!(
                        core,
                        Level::Error,
                        "QoS 2 message {mid}: the store failed to record its delivery"
                    );
                    session = core.session();
                }
                session.recycle(message);
            }
        }
        Incoming::PubAck(mid) => {
            let mut data = ack_data(Command::PubAck, mid);
            if details.reason_code >= 0x80 {
                data.error = Some(Error::RefusedByBroker);
            }
            core.run_callbacks(&data);
        }
        Incoming::PubRec(mid) => {
            core.run_callbacks(&ack_data(Command::PubRec, mid));
            // A refused QoS 2 message ends here: its PUBCOMP callback says so.
            if details.reason_code >= 0x80 && !core.is_closed() {
                let mut data = ack_data(Command::PubComp, mid);
                data.error = Some(Error::RefusedByBroker);
                core.run_callbacks(&data);
            }
        }
        Incoming::PubComp(mid) => core.run_callbacks(&ack_data(Command::PubComp, mid)),
        Incoming::UnsubAck(mid) => {
            let mut data = ack_data(Command::UnsubAck, mid);
            data.reason_codes = details.reason_codes;
            core.run_callbacks(&data);
        }
        Incoming::SubAck { mid, return_codes } => {
            let mut data = ack_data(Command::SubAck, mid);
            data.granted_qos = return_codes;
            data.reason_codes = return_codes;
            core.run_callbacks(&data);
        }
        Incoming::PingResp => core.run_callbacks(&Data::new(Command::PingResp)),
        Incoming::Auth(_) => core.run_callbacks(&ack_data(Command::Auth, 0)),
        // Handled by the reactor, which closes the connection.
        Incoming::ConnAck(_) | Incoming::Disconnect(_) => {}
    }
}

fn dispatch_message<'a>(
    core: &Arc<Core>,
    topic_buf: &'a mut Vec<u8>,
    mut data: Data<'a>,
    mid: u16,
    message: Option<Message<'a>>,
) {
    data.mid = mid;
    let Some(m) = message else {
        core.run_callbacks(&data);
        return;
    };
    topic_buf.clear();
    if m.topic.is_empty() {
        // The PUBLISH used a topic alias the session resolved.
        let alias = m
            .properties
            .and_then(|p| p.u32_of(prop::TOPIC_ALIAS))
            .unwrap_or(0) as u16;
        let session = core.session();
        topic_buf.extend_from_slice(session.incoming_alias_topic(alias).unwrap_or("").as_bytes());
    } else {
        topic_buf.extend_from_slice(m.topic.as_bytes());
    }
    topic_buf.push(0);
    // The codec rejects topics containing U+0000, so this cannot fail.
    let Ok(topic_c) = CStr::from_bytes_with_nul(topic_buf) else {
        return;
    };
    let Ok(topic) = topic_c.to_str() else {
        return;
    };
    data.message = Some(MessageView {
        topic,
        topic_c,
        payload: m.payload,
        qos: m.qos,
        retain: m.retain,
        dup: m.dup,
        mid: m.mid,
        properties: m.properties,
    });
    core.run_callbacks(&data);
}

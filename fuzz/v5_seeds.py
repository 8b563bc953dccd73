#!/usr/bin/env python3
"""Writes the hand-made MQTT 5 seeds of the session target,
fuzz/seeds/session/v5-*, in the input format of fuzz_targets/session.rs
(which this follows byte by byte: keep them in step).

    python3 fuzz/v5_seeds.py
"""
import os

# Actions (the byte is taken modulo 24 under MQTT 5).
OPEN, LOSE, RAW, RECEIVE, PUBLISH, SUBSCRIBE, UNSUBSCRIBE = 0, 1, 2, 3, 6, 8, 9
WRITE_ALL = [10, 0]
ADVANCE, ACCEPT, DISCONNECT, RAISE, AUTH = 12, 13, 14, 15, 20

# receive_packet_v5 kinds (modulo 16).
CONNACK, IN_PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 0, 1, 6, 8, 9, 10
SUBACK, UNSUBACK, SERVER_DISCONNECT, SERVER_AUTH = 11, 12, 13, 14


def config(clean=True, receive_maximum=None, alias_max=None, auth=False,
           topic_alias_max=0, max_inflight=5, queue_qos0=False):
    """First byte (bit 7: MQTT 5, bit 0: clean session), the 3.1.1 config
    bytes, then the MQTT 5 ones."""
    out = [0x80 | int(clean),
           0,  # keep_alive 0
           9,  # connect_timeout 10 s
           max_inflight - 1,
           11,  # max_queued_messages 12
           255,  # max_queued_bytes 256
           int(queue_qos0),
           5,  # max_incoming_qos2 6
           239,  # max_packet_size 255
           1]  # resubscribe
    flags, extra = 0, []
    if receive_maximum is not None:
        flags |= 1
        extra.append(receive_maximum - 1)
    if alias_max is not None:
        flags |= 2
        extra.append(alias_max)
    if auth:
        flags |= 8
    return out + [flags] + extra + [topic_alias_max]


def connack_props(receive_maximum=None, max_packet_size=None, max_qos=None,
                  retain=None, alias_max=None, keep_alive=None, assigned=None):
    flags, extra = 0, []
    for bit, value in [(1, None if receive_maximum is None else receive_maximum - 1),
                       (2, None if max_packet_size is None else max_packet_size - 12),
                       (4, max_qos), (8, retain), (16, alias_max),
                       (32, keep_alive), (64, assigned)]:
        if value is not None:
            flags |= bit
            extra.append(value)
    return [flags] + extra


def accept(present=False, **props):
    return [ACCEPT, int(present)] + connack_props(**props)


def publish(topic=0, qos=1, retain=False, payload=(5, 0x41), flags=0, extra=()):
    """publish_v5: TOPICS index, QoS, retain, payload length and fill byte,
    property flags (1: user property, followed by key and value lengths)."""
    return [PUBLISH, topic, qos, int(retain), payload[0], payload[1], flags] + list(extra)


def receive(kind, *rest, id_choice=0):
    """receive_packet_v5: id choice (< 192: a known id), no reason string."""
    return [RECEIVE, id_choice, 0, kind] + list(rest)


def incoming_publish(payload=b"hi", qos=0, topic=1, alias=None, use_alias=False):
    flags = (1 if alias else 0) | (2 if use_alias else 0)
    out = [IN_PUBLISH, len(payload)] + list(payload) + [qos, 0, 0, flags, topic]
    if alias:
        out.append(alias - 1)
    return out


SEEDS = {
    # Aliases both ways: two publishes on one topic (set, then reuse), a
    # PUBACK, the server setting alias 1 then using it.
    "v5-aliases": config(alias_max=4, topic_alias_max=2)
    + [OPEN] + WRITE_ALL
    + accept(receive_maximum=3, max_packet_size=200, alias_max=2) + WRITE_ALL
    + publish(flags=1, extra=[3, 4]) + WRITE_ALL
    + publish(payload=(5, 0x42)) + WRITE_ALL
    + receive(PUBACK, 0)
    + receive(*incoming_publish(b"xyz", qos=1, alias=1))
    + receive(*incoming_publish(b"hi", alias=1, use_alias=True))
    + WRITE_ALL,
    # Receive Maximum 1 with three QoS 1 messages, then a reconnection with
    # the session: one resent, two waiting.
    "v5-receive-maximum": config(clean=False, receive_maximum=2)
    + [OPEN] + WRITE_ALL + accept(receive_maximum=1) + WRITE_ALL
    + publish() + publish(payload=(3, 0x43)) + publish(payload=(2, 0x44)) + WRITE_ALL
    + [LOSE, OPEN] + WRITE_ALL + accept(present=True, receive_maximum=1) + WRITE_ALL
    + receive(PUBACK, 0) + WRITE_ALL,
    # Maximum QoS 1 and no retain: refused publishes; a refused PUBACK; a
    # server DISCONNECT with a Server Reference.
    "v5-limits-disconnect": config()
    + [OPEN] + WRITE_ALL + accept(max_qos=1, retain=0, keep_alive=2, assigned=0) + WRITE_ALL
    + publish(qos=2) + publish(qos=1, retain=True) + publish(qos=1) + WRITE_ALL
    + receive(PUBACK, 3)  # 0x80
    + receive(SERVER_DISCONNECT, 7, 1, 0),
    # Subscribe with options and a Subscription Identifier, SUBACK and
    # UNSUBACK with v5 reason codes, then DISCONNECT 0x04 with properties.
    "v5-subscribe": config()
    + [OPEN] + WRITE_ALL + accept() + WRITE_ALL
    + [SUBSCRIBE, 1, 0, 0x21, 8, 0x02, 0x01, 1] + WRITE_ALL
    + receive(SUBACK, 2, 1, 4)
    + [UNSUBSCRIBE, 0, 1, 0] + WRITE_ALL
    + receive(UNSUBACK, 1, 2, id_choice=1)
    + [DISCONNECT, 2, 0x03, 5, 3, 4] + WRITE_ALL,
    # Enhanced authentication: the server's AUTH before CONNACK, our answer,
    # CONNACK, a re-authentication.
    "v5-auth": config(auth=True)
    + [OPEN] + WRITE_ALL
    + receive(SERVER_AUTH, 0, 2, 1, 4)
    + [AUTH, 0, 0x05, 6] + WRITE_ALL
    + accept() + WRITE_ALL
    + [AUTH, 2, 0x00] + WRITE_ALL
    + receive(SERVER_AUTH, 2, 2, 0),
    # A CONNACK refusal in MQTT 5 form, then an accepted one with a small
    # Maximum Packet Size and a message queued offline.
    "v5-refused": config(queue_qos0=True)
    + publish(qos=0, payload=(30, 0x45)) + [OPEN] + WRITE_ALL
    + receive(CONNACK, 0, 200, 0)
    + [OPEN] + WRITE_ALL + accept(max_packet_size=24) + WRITE_ALL,
}

if __name__ == "__main__":
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds", "session")
    os.makedirs(out_dir, exist_ok=True)
    for name, data in SEEDS.items():
        assert all(0 <= b < 256 for b in data), name
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(bytes(data))
        print(f"{name}: {len(data)} bytes")

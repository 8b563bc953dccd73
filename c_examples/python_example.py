#!/usr/bin/env python3
"""libmqtt from Python with ctypes (standard library only).

Loads the shared library from $MQTT_LIBRARY (a path to libmqtt.so), else
../target/release/libmqtt.so next to this file. Declares the structs and callback
types exactly as include/mqtt.h does, then subscribes, publishes at QoS 0, 1 and 2,
receives through callbacks (loop_start's on_message, and a specific PUBLISH callback
with a condition and a priority), and logs through mqtt_client_set_log.

Then MQTT 5 with a second client (mqtt_client_set_protocol): a subscription with a
Subscription Identifier (SUBACK reason codes), a publish_v5 with user properties
and a content type, read back in the message callback with mqtt_properties_*.
Property strings are NOT NUL-terminated: read them as pointer + length
(ctypes.string_at), never as c_char_p.

Usage: python3 python_example.py [host] [port]     (defaults: localhost 1883)
       python3 python_example.py --layout          (print the struct layouts)
Exit status 0 when everything arrived where expected.

Callbacks run on the library's loop thread; ctypes takes the GIL for them. Keep a
reference to every CFUNCTYPE object for as long as the library may call it.
"""

import ctypes
import os
import sys
import threading
from ctypes import (CFUNCTYPE, POINTER, Structure, c_bool, c_char_p, c_int, c_size_t,
                    c_uint8, c_uint16, c_uint32, c_void_p)

# ---- mqtt.h ---------------------------------------------------------------------------

# enum mqtt_command
MQTT_CONNACK, MQTT_PUBLISH, MQTT_PUBACK, MQTT_PUBREC, MQTT_PUBREL = 2, 3, 4, 5, 6
MQTT_PUBCOMP, MQTT_SUBACK, MQTT_UNSUBACK, MQTT_PINGRESP, MQTT_DISCONNECT = 7, 9, 11, 13, 14
# enum mqtt_log_level
MQTT_LOG_ERROR, MQTT_LOG_WARN, MQTT_LOG_INFO, MQTT_LOG_DEBUG = 1, 2, 3, 4
MQTT_OK = 0
# enum mqtt_protocol_version
MQTT_PROTOCOL_V311, MQTT_PROTOCOL_V5 = 4, 5
# enum mqtt_property_id (the ones used here)
MQTT_PROP_MESSAGE_EXPIRY_INTERVAL = 2
MQTT_PROP_CONTENT_TYPE = 3
MQTT_PROP_SUBSCRIPTION_IDENTIFIER = 11
MQTT_PROP_USER_PROPERTY = 38

mqtt_properties_p = c_void_p  # opaque; a callback's list is valid only during the callback


class mqtt_message(Structure):
    _fields_ = [
        ("topic", c_char_p),
        ("payload", POINTER(c_uint8)),
        ("payload_len", c_size_t),
        ("qos", c_uint8),
        ("retain", c_bool),
        ("dup", c_bool),
        ("mid", c_uint16),
        # MQTT 5 (appended; NULL under 3.1.1)
        ("properties", mqtt_properties_p),
    ]


class mqtt_data(Structure):
    _fields_ = [
        ("command", c_int),  # enum mqtt_command
        ("message", POINTER(mqtt_message)),
        ("mid", c_uint16),
        ("return_code", c_uint8),
        ("session_present", c_bool),
        ("granted_qos", POINTER(c_uint8)),
        ("granted_qos_len", c_size_t),
        ("error", c_int),
        # MQTT 5 (appended)
        ("reason_code", c_uint8),
        ("reason_codes", POINTER(c_uint8)),  # SUBACK / UNSUBACK: one per filter
        ("reason_codes_len", c_size_t),
        ("properties", mqtt_properties_p),   # NULL under 3.1.1
        # failover (appended): CONNACK's index into mqtt_client_set_servers' list, else -1
        ("server_index", c_int),
    ]


class mqtt_subscription(Structure):
    _fields_ = [("topic", c_char_p), ("qos", c_int)]


class mqtt_subscription_v5(Structure):
    _fields_ = [
        ("topic", c_char_p),
        ("qos", c_int),
        ("no_local", c_bool),
        ("retain_as_published", c_bool),
        ("retain_handling", c_int),
    ]


mqtt_client_p = c_void_p  # opaque
mqtt_callback = CFUNCTYPE(None, mqtt_client_p, POINTER(mqtt_data), c_void_p)
mqtt_condition = CFUNCTYPE(c_bool, POINTER(mqtt_data), c_void_p)
mqtt_log_callback = CFUNCTYPE(None, mqtt_client_p, c_int, c_char_p, c_void_p)


def load(path=None):
    """Load libmqtt and declare the prototypes used here."""
    if path is None:
        path = os.environ.get("MQTT_LIBRARY") or os.path.join(
            os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "libmqtt.so")
    lib = ctypes.CDLL(path)
    protos = {
        "mqtt_client_new": (mqtt_client_p, [c_char_p, c_bool]),
        "mqtt_client_free": (None, [mqtt_client_p]),
        "mqtt_client_on": (c_int, [mqtt_client_p, c_int, mqtt_callback, mqtt_condition, c_int,
                                   c_void_p]),
        "mqtt_client_connect": (c_int, [mqtt_client_p, c_char_p, c_uint16, c_uint16]),
        "mqtt_client_subscribe": (c_int, [mqtt_client_p, POINTER(mqtt_subscription), c_size_t]),
        "mqtt_client_publish": (c_int, [mqtt_client_p, c_char_p, c_void_p, c_size_t, c_int,
                                        c_bool]),
        "mqtt_client_disconnect": (c_int, [mqtt_client_p]),
        "mqtt_client_loop_start": (c_int, [mqtt_client_p, mqtt_callback, c_void_p]),
        "mqtt_client_loop_stop": (c_int, [mqtt_client_p]),
        "mqtt_client_set_connect_timeout": (c_int, [mqtt_client_p, c_uint32]),
        "mqtt_client_set_log": (c_int, [mqtt_client_p, mqtt_log_callback, c_int, c_void_p]),
        "mqtt_strerror": (c_char_p, [c_int]),
        "mqtt_version": (c_char_p, []),
        # MQTT 5
        "mqtt_client_set_protocol": (c_int, [mqtt_client_p, c_int]),
        "mqtt_client_publish_v5": (c_int, [mqtt_client_p, c_char_p, c_void_p, c_size_t, c_int,
                                           c_bool, mqtt_properties_p]),
        "mqtt_client_subscribe_v5": (c_int, [mqtt_client_p, POINTER(mqtt_subscription_v5),
                                             c_size_t, mqtt_properties_p]),
        "mqtt_client_disconnect_v5": (c_int, [mqtt_client_p, c_int, mqtt_properties_p]),
        "mqtt_properties_new": (mqtt_properties_p, []),
        "mqtt_properties_free": (None, [mqtt_properties_p]),
        "mqtt_properties_add_int": (c_int, [mqtt_properties_p, c_int, c_uint32]),
        "mqtt_properties_add_string": (c_int, [mqtt_properties_p, c_int, c_char_p]),
        "mqtt_properties_add_user": (c_int, [mqtt_properties_p, c_char_p, c_char_p]),
        "mqtt_properties_count": (c_size_t, [mqtt_properties_p, c_int]),
        "mqtt_properties_get_int_at": (c_int, [mqtt_properties_p, c_int, c_size_t,
                                               POINTER(c_uint32)]),
        # strings come back as pointer + length: c_void_p, not c_char_p
        "mqtt_properties_get_string": (c_int, [mqtt_properties_p, c_int, POINTER(c_void_p),
                                               POINTER(c_size_t)]),
        "mqtt_properties_get_user_at": (c_int, [mqtt_properties_p, c_size_t, POINTER(c_void_p),
                                                POINTER(c_size_t), POINTER(c_void_p),
                                                POINTER(c_size_t)]),
    }
    for name, (restype, argtypes) in protos.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


def text_at(ptr, length):
    """UTF-8 text of `length` bytes at `ptr` (property strings are not NUL-terminated)."""
    return ctypes.string_at(ptr, length).decode() if length else ""


def user_properties(lib, props):
    """[(key, value), ...] of a property list, in wire order."""
    pairs = []
    for i in range(lib.mqtt_properties_count(props, MQTT_PROP_USER_PROPERTY)):
        k, kl, v, vl = c_void_p(), c_size_t(), c_void_p(), c_size_t()
        if lib.mqtt_properties_get_user_at(props, i, ctypes.byref(k), ctypes.byref(kl),
                                           ctypes.byref(v), ctypes.byref(vl)) == MQTT_OK:
            pairs.append((text_at(k, kl.value), text_at(v, vl.value)))
    return pairs


def string_property(lib, props, prop_id):
    """The string property `prop_id`, or None when absent."""
    s, n = c_void_p(), c_size_t()
    if lib.mqtt_properties_get_string(props, prop_id, ctypes.byref(s), ctypes.byref(n)) != MQTT_OK:
        return None
    return text_at(s, n.value)


def int_properties(lib, props, prop_id):
    """Every occurrence of integer property `prop_id` (e.g. subscription identifiers)."""
    values = []
    for i in range(lib.mqtt_properties_count(props, prop_id)):
        v = c_uint32()
        if lib.mqtt_properties_get_int_at(props, prop_id, i, ctypes.byref(v)) == MQTT_OK:
            values.append(v.value)
    return values


def layout():
    """One line per struct: name, size, then field:offset (compared with C by the tests)."""
    for struct in (mqtt_message, mqtt_data, mqtt_subscription, mqtt_subscription_v5):
        fields = " ".join(f"{name}:{getattr(struct, name).offset}" for name, _ in struct._fields_)
        print(f"{struct.__name__} {ctypes.sizeof(struct)} {fields}")


# ---- the example ----------------------------------------------------------------------

class Example:
    def __init__(self, lib, host, port):
        self.lib, self.host, self.port = lib, host, port
        self.changed = threading.Condition()
        self.messages = []      # (topic, payload, qos) from on_message
        self.alerts = []        # payloads from the priority-10 specific callback
        self.low_priority = []  # the priority-5 one: never wins
        self.subacks = 0
        self.disconnects = 0
        self.log_lines = []
        self.v311_properties = []  # message.properties under 3.1.1: always NULL (None)
        # MQTT 5 part
        self.v5_subacks = []    # reason codes of each SUBACK
        self.v5_messages = []   # what on_message_v5 read from each message
        self.v5_pubacks = []    # reason code of each PUBACK
        self.v5_disconnects = 0
        self.base = f"py/{os.getpid()}"
        self.failures = 0
        # ctypes wrappers, kept alive while the client lives
        self.keep = []

    def cb(self, kind, fn):
        wrapped = kind(fn)
        self.keep.append(wrapped)
        return wrapped

    def bump(self, fn):
        with self.changed:
            fn()
            self.changed.notify_all()

    def wait(self, pred, timeout=10.0):
        with self.changed:
            return self.changed.wait_for(pred, timeout)

    def check(self, rc, what):
        if rc < 0:
            raise RuntimeError(f"{what}: {self.lib.mqtt_strerror(rc).decode()}")
        return rc

    # callbacks (on the loop thread)
    def on_message(self, client, data, user_data):
        m = data.contents.message.contents
        payload = ctypes.string_at(m.payload, m.payload_len) if m.payload_len else b""
        entry = (m.topic.decode(), payload.decode(), m.qos)
        props = m.properties

        def record():
            self.messages.append(entry)
            self.v311_properties.append(props)
        self.bump(record)

    def is_alert(self, data, user_data):
        d = data.contents
        return bool(d.message) and d.message.contents.topic.decode().endswith("/alerts")

    def on_alert(self, client, data, user_data):
        m = data.contents.message.contents
        payload = ctypes.string_at(m.payload, m.payload_len).decode()
        self.bump(lambda: self.alerts.append(payload))

    def on_alert_low(self, client, data, user_data):
        self.bump(lambda: self.low_priority.append(1))

    def on_suback(self, client, data, user_data):
        self.bump(lambda: setattr(self, "subacks", self.subacks + 1))

    def on_disconnect(self, client, data, user_data):
        self.bump(lambda: setattr(self, "disconnects", self.disconnects + 1))

    def on_log(self, client, level, message, user_data):
        self.log_lines.append((level, message.decode()))

    # MQTT 5 callbacks: the data's properties are the library's, valid only during the
    # callback, so everything is read (copied into Python objects) here.
    def on_message_v5(self, client, data, user_data):
        m = data.contents.message.contents
        lib, props = self.lib, m.properties
        seen = {
            "topic": m.topic.decode(),
            "payload": ctypes.string_at(m.payload, m.payload_len).decode(),
            "user": user_properties(lib, props),
            "content_type": string_property(lib, props, MQTT_PROP_CONTENT_TYPE),
            "subscription_ids": int_properties(lib, props, MQTT_PROP_SUBSCRIPTION_IDENTIFIER),
        }
        self.bump(lambda: self.v5_messages.append(seen))

    def on_suback_v5(self, client, data, user_data):
        d = data.contents
        codes = [d.reason_codes[i] for i in range(d.reason_codes_len)]
        self.bump(lambda: self.v5_subacks.append(codes))

    def on_puback_v5(self, client, data, user_data):
        code = data.contents.reason_code
        self.bump(lambda: self.v5_pubacks.append(code))

    def on_disconnect_v5(self, client, data, user_data):
        self.bump(lambda: setattr(self, "v5_disconnects", self.v5_disconnects + 1))

    def verdict(self, ok, what):
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
        self.failures += 0 if ok else 1

    def with_client(self, name, protocol, session):
        lib = self.lib
        client = lib.mqtt_client_new(f"{name}-{os.getpid()}".encode(), True)
        if not client:
            raise RuntimeError("mqtt_client_new failed")
        try:
            self.check(lib.mqtt_client_set_protocol(client, protocol), "set_protocol")
            return session(client)
        finally:
            lib.mqtt_client_free(client)  # stops the loop thread: no callback after this

    def run(self):
        rc = self.with_client("py-example", MQTT_PROTOCOL_V311, self.session)
        if rc == 0:
            rc = self.with_client("py-example-v5", MQTT_PROTOCOL_V5, self.session_v5)
        failed = rc != 0 or self.failures > 0
        print(f"python_example: libmqtt {self.lib.mqtt_version().decode()}: "
              f"{'FAILED' if failed else 'all good'}")
        return 1 if failed else 0

    def session(self, client):
        lib, check, cb = self.lib, self.check, self.cb
        no_condition = mqtt_condition()  # NULL
        check(lib.mqtt_client_set_connect_timeout(client, 5000), "set_connect_timeout")
        check(lib.mqtt_client_set_log(client, cb(mqtt_log_callback, self.on_log), MQTT_LOG_INFO,
                                      None), "set_log")
        check(lib.mqtt_client_on(client, MQTT_SUBACK, cb(mqtt_callback, self.on_suback),
                                 no_condition, 0, None), "on SUBACK")
        check(lib.mqtt_client_on(client, MQTT_DISCONNECT, cb(mqtt_callback, self.on_disconnect),
                                 no_condition, 0, None), "on DISCONNECT")
        # two specific PUBLISH callbacks with the same condition: priority 10 wins
        is_alert = cb(mqtt_condition, self.is_alert)
        check(lib.mqtt_client_on(client, MQTT_PUBLISH, cb(mqtt_callback, self.on_alert_low),
                                 is_alert, 5, None), "on PUBLISH (5)")
        check(lib.mqtt_client_on(client, MQTT_PUBLISH, cb(mqtt_callback, self.on_alert),
                                 is_alert, 10, None), "on PUBLISH (10)")
        check(lib.mqtt_client_loop_start(client, cb(mqtt_callback, self.on_message), None),
              "loop_start")
        check(lib.mqtt_client_connect(client, self.host.encode(), 30, self.port), "connect")

        sub = mqtt_subscription(f"{self.base}/#".encode(), 2)
        check(lib.mqtt_client_subscribe(client, ctypes.byref(sub), 1), "subscribe")
        if not self.wait(lambda: self.subacks == 1):
            print("python_example: no SUBACK", file=sys.stderr)
            return 1
        for qos in (0, 1, 2):
            payload = f"payload {qos}".encode()
            check(lib.mqtt_client_publish(client, f"{self.base}/qos{qos}".encode(), payload,
                                          len(payload), qos, False), f"publish QoS {qos}")
        check(lib.mqtt_client_publish(client, f"{self.base}/alerts".encode(), b"fire", 4, 1,
                                      False), "publish alert")
        if not self.wait(lambda: len(self.messages) == 3 and len(self.alerts) == 1):
            print(f"python_example: messages {self.messages}, alerts {self.alerts}",
                  file=sys.stderr)
            return 1
        check(lib.mqtt_client_disconnect(client), "disconnect")
        if not self.wait(lambda: self.disconnects == 1):
            print("python_example: no DISCONNECT callback", file=sys.stderr)
            return 1
        check(lib.mqtt_client_loop_stop(client), "loop_stop")

        verdict = self.verdict
        for qos in (0, 1, 2):
            expected = (f"{self.base}/qos{qos}", f"payload {qos}", qos)
            verdict(expected in self.messages, f"QoS {qos} message received")
        verdict(self.alerts == ["fire"], "alert went to the priority-10 condition callback")
        verdict(not self.low_priority, "the priority-5 callback did not run")
        texts = [text for _, text in self.log_lines]
        verdict(any(t.startswith(f"connecting to {self.host}:{self.port}") for t in texts)
                and "connected (session present: false)" in texts
                and "disconnected" in texts, f"INFO log lines: {texts}")
        verdict(all(level <= MQTT_LOG_INFO for level, _ in self.log_lines), "no DEBUG lines")
        verdict(all(p is None for p in self.v311_properties),
                "3.1.1 messages carry no properties")
        return 0

    def session_v5(self, client):
        lib, check, cb = self.lib, self.check, self.cb
        no_condition = mqtt_condition()  # NULL
        check(lib.mqtt_client_set_connect_timeout(client, 5000), "set_connect_timeout")
        check(lib.mqtt_client_on(client, MQTT_SUBACK, cb(mqtt_callback, self.on_suback_v5),
                                 no_condition, 0, None), "on SUBACK (v5)")
        check(lib.mqtt_client_on(client, MQTT_PUBACK, cb(mqtt_callback, self.on_puback_v5),
                                 no_condition, 0, None), "on PUBACK (v5)")
        check(lib.mqtt_client_on(client, MQTT_DISCONNECT,
                                 cb(mqtt_callback, self.on_disconnect_v5), no_condition, 0,
                                 None), "on DISCONNECT (v5)")
        check(lib.mqtt_client_loop_start(client, cb(mqtt_callback, self.on_message_v5), None),
              "loop_start (v5)")
        check(lib.mqtt_client_connect(client, self.host.encode(), 30, self.port),
              "connect (v5)")

        topic = f"{self.base}/v5/kitchen".encode()
        # property lists made here are ours: the calls copy them, we free them
        sub_props = lib.mqtt_properties_new()
        pub_props = lib.mqtt_properties_new()
        try:
            # matching messages come back tagged with this subscription identifier
            check(lib.mqtt_properties_add_int(sub_props, MQTT_PROP_SUBSCRIPTION_IDENTIFIER, 7),
                  "add subscription identifier")
            sub = mqtt_subscription_v5(f"{self.base}/v5/#".encode(), 1, False, False, 0)
            check(lib.mqtt_client_subscribe_v5(client, ctypes.byref(sub), 1, sub_props),
                  "subscribe_v5")
            if not self.wait(lambda: len(self.v5_subacks) == 1):
                print("python_example: no MQTT 5 SUBACK", file=sys.stderr)
                return 1
            check(lib.mqtt_properties_add_user(pub_props, b"sensor", b"kitchen"), "add_user")
            check(lib.mqtt_properties_add_user(pub_props, b"unit", b"C"), "add_user")
            check(lib.mqtt_properties_add_string(pub_props, MQTT_PROP_CONTENT_TYPE,
                                                 b"text/plain"), "add_string")
            check(lib.mqtt_properties_add_int(pub_props, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, 60),
                  "add_int")
            check(lib.mqtt_client_publish_v5(client, topic, b"21.5", 4, 1, False, pub_props),
                  "publish_v5")
        finally:
            lib.mqtt_properties_free(sub_props)
            lib.mqtt_properties_free(pub_props)
        if not self.wait(lambda: len(self.v5_messages) == 1 and len(self.v5_pubacks) == 1):
            print(f"python_example: MQTT 5 messages {self.v5_messages}, "
                  f"PUBACKs {self.v5_pubacks}", file=sys.stderr)
            return 1
        check(lib.mqtt_client_disconnect_v5(client, 0, None), "disconnect_v5")
        if not self.wait(lambda: self.v5_disconnects == 1):
            print("python_example: no MQTT 5 DISCONNECT callback", file=sys.stderr)
            return 1
        check(lib.mqtt_client_loop_stop(client), "loop_stop (v5)")

        verdict = self.verdict
        m = self.v5_messages[0]
        verdict(self.v5_subacks == [[1]], f"v5 SUBACK reason codes: {self.v5_subacks}")
        verdict(m["topic"] == topic.decode() and m["payload"] == "21.5", "v5 message received")
        verdict(m["user"] == [("sensor", "kitchen"), ("unit", "C")],
                f"v5 user properties read back in order: {m['user']}")
        verdict(m["content_type"] == "text/plain", f"v5 content type: {m['content_type']}")
        verdict(m["subscription_ids"] == [7],
                f"v5 subscription identifier: {m['subscription_ids']}")
        verdict(self.v5_pubacks == [0], f"v5 PUBACK reason code: {self.v5_pubacks}")
        return 0


def main(argv):
    if len(argv) > 1 and argv[1] == "--layout":
        layout()
        return 0
    host = argv[1] if len(argv) > 1 else "localhost"
    port = int(argv[2]) if len(argv) > 2 else 1883
    return Example(load(), host, port).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))

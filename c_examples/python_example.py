#!/usr/bin/env python3
"""libmqtt from Python with ctypes (standard library only).

Loads the shared library from $MQTT_LIBRARY (a path to libmqtt.so), else
../target/release/libmqtt.so next to this file. Declares the structs and callback
types exactly as include/mqtt.h does, then subscribes, publishes at QoS 0, 1 and 2,
receives through callbacks (loop_start's on_message, and a specific PUBLISH callback
with a condition and a priority), and logs through mqtt_client_set_log.

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


class mqtt_message(Structure):
    _fields_ = [
        ("topic", c_char_p),
        ("payload", POINTER(c_uint8)),
        ("payload_len", c_size_t),
        ("qos", c_uint8),
        ("retain", c_bool),
        ("dup", c_bool),
        ("mid", c_uint16),
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
    ]


class mqtt_subscription(Structure):
    _fields_ = [("topic", c_char_p), ("qos", c_int)]


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
    }
    for name, (restype, argtypes) in protos.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


def layout():
    """One line per struct: name, size, then field:offset (compared with C by the tests)."""
    for struct in (mqtt_message, mqtt_data, mqtt_subscription):
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
        self.base = f"py/{os.getpid()}"
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
        self.bump(lambda: self.messages.append((m.topic.decode(), payload.decode(), m.qos)))

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

    def run(self):
        lib = self.lib
        client = lib.mqtt_client_new(f"py-example-{os.getpid()}".encode(), True)
        if not client:
            raise RuntimeError("mqtt_client_new failed")
        try:
            return self.session(client)
        finally:
            lib.mqtt_client_free(client)  # stops the loop thread: no callback after this

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

        failures = 0

        def verdict(ok, what):
            nonlocal failures
            print(f"{'ok  ' if ok else 'FAIL'} {what}")
            failures += 0 if ok else 1

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
        print(f"python_example: libmqtt {self.lib.mqtt_version().decode()}: "
              f"{'FAILED' if failures else 'all good'}")
        return 1 if failures else 0


def main(argv):
    if len(argv) > 1 and argv[1] == "--layout":
        layout()
        return 0
    host = argv[1] if len(argv) > 1 else "localhost"
    port = int(argv[2]) if len(argv) > 2 else 1883
    return Example(load(), host, port).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))

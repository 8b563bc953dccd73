#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests, the C programs and
# examples (compiled against include/mqtt.h, run against private mosquitto
# brokers, under valgrind and ASan), the CMake consumer projects, and the interop
# matrix against rumqttd, aedes, amqtt and ejabberd (scripts/interop-deps.sh).
#
# Works on a fresh clone of a fresh Debian machine with a Rust toolchain: it
# installs the Debian packages the tests need when they are missing (as root, or
# with password-less sudo; MQTT_NO_INSTALL=1 never installs) and builds what they
# link. Extra arguments go to `cargo test` (e.g. a test name).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/packages.sh

need_packages "the tests start private mosquitto brokers, build C and C++ programs (one on SQLite), run them under valgrind, and consume the library from CMake and pkg-config" \
    mosquitto:mosquitto cmake:cmake valgrind:valgrind pkg-config:pkg-config \
    c++:g++ cc:gcc nm:binutils python3:python3 /usr/include/sqlite3.h:libsqlite3-dev
need_packages "tests/net_proxy.rs tunnels MQTT through real HTTP CONNECT and SOCKS5 proxies" \
    tinyproxy:tinyproxy microsocks:microsocks
# tests/net_websocket.rs runs aedes (npm, pinned in tests/netpaths_support/ws_broker)
# behind a WebSocket listener; the test runs `npm ci` there on first use.
need_packages "tests/net_websocket.rs starts a Node.js MQTT broker with a WebSocket listener" \
    node:nodejs npm:npm

# The brokers of the interop matrix (tests/interop.rs) besides mosquitto:
# rumqttd, aedes, amqtt and ejabberd, each from its registry, into a cache
# outside the clone (~/.cache/libmqtt-interop), installed once per machine.
scripts/interop-deps.sh

# The C programs link the cdylib and staticlib; `cargo test` alone builds only the rlib.
cargo build --lib
cargo test --all-targets "$@"

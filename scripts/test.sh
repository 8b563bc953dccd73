#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests, the C programs and
# examples (compiled against include/mqtt.h, run against private mosquitto
# brokers, under valgrind and ASan), and the CMake consumer projects.
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

# The C programs link the cdylib and staticlib; `cargo test` alone builds only the rlib.
cargo build --lib
cargo test --all-targets "$@"

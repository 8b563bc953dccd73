#!/usr/bin/env bash
# The whole test suite: Rust unit and integration tests, the C programs and
# examples (compiled against include/mqtt.h, run against private mosquitto
# brokers, under valgrind when present), and the CMake consumer projects.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --all-targets "$@"

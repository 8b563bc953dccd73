#!/usr/bin/env bash
# The home-heating demo of the seed documentation, end to end on this machine:
#
#   1. cargo build --release                  -> target/release/libmqtt.so
#   2. cc c_examples/home_{controller,sensor}.c against it
#   3. a private mosquitto on a free loopback port (nothing else is touched)
#   4. the controller (subscribed to home/+) in the background; once it prints "ready",
#      the sensor publishes 3 rounds of temperatures for 6 rooms, then home/_stop
#   5. the controller's decisions are printed; mosquitto is stopped
#
# Usage: scripts/demo.sh [rounds]      (default 3)
# Needs a Rust toolchain; installs mosquitto and a C compiler when missing (as root or
# with password-less sudo; MQTT_NO_INSTALL=1 never installs). The mosquitto service is
# not used. Exits 0 when the demo worked.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rounds=${1:-3}
cc=${CC:-cc}
target_dir=${CARGO_TARGET_DIR:-$root/target}
bin_dir=$target_dir/demo
work=$(mktemp -d "${TMPDIR:-/tmp}/mqtt-demo.XXXXXX")
mosquitto_pid=""
controller_pid=""

cleanup() {
    [ -n "$controller_pid" ] && kill "$controller_pid" 2>/dev/null || true
    if [ -n "$mosquitto_pid" ]; then
        kill "$mosquitto_pid" 2>/dev/null || true
        wait "$mosquitto_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

source "$root/scripts/packages.sh"
say() { printf '==> %s\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }

find_mosquitto() {
    if [ -n "${MOSQUITTO:-}" ]; then echo "$MOSQUITTO"; return; fi
    command -v mosquitto 2>/dev/null && return
    for m in /usr/sbin/mosquitto /usr/local/sbin/mosquitto; do
        [ -x "$m" ] && { echo "$m"; return; }
    done
    die "mosquitto not found (Debian: apt-get install mosquitto)"
}

free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    else
        # a random high port nobody answers on (bash's /dev/tcp); mosquitto's bind decides
        local p
        while :; do
            p=$((20000 + RANDOM % 40000))
            (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
        done
    fi
}

# wait_for_line FILE PATTERN SECONDS [PID]: poll FILE until a line matches (or PID dies)
wait_for_line() {
    local file=$1 pattern=$2 deadline=$((SECONDS + $3)) pid=${4:-}
    until grep -q -- "$pattern" "$file" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || return 1
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
        sleep 0.05
    done
}

# $MOSQUITTO names a broker binary of the user's own: then only the compiler is needed
if [ -n "${MOSQUITTO:-}" ]; then
    need_packages "the demo compiles two C programs" "$cc":gcc || exit 1
else
    need_packages "the demo runs a private mosquitto broker and compiles two C programs" \
        mosquitto:mosquitto "$cc":gcc || exit 1
fi

say "building libmqtt (cargo build --release)"
(cd "$root" && cargo build --release --lib)
lib_dir=$target_dir/release
[ -f "$lib_dir/libmqtt.so" ] || die "no $lib_dir/libmqtt.so after the build"

say "building the home-heating programs into $bin_dir"
mkdir -p "$bin_dir"
for prog in home_controller home_sensor; do
    "$cc" -std=c99 -Wall -Wextra -pedantic -O2 -pthread -I "$root/include" \
        -o "$bin_dir/$prog" "$root/c_examples/$prog.c" \
        -L "$lib_dir" -lmqtt -Wl,-rpath,"$lib_dir"
done

mosquitto=$(find_mosquitto)
for attempt in 1 2 3 4 5; do
    port=$(free_port)
    {
        echo "listener $port 127.0.0.1"
        echo "allow_anonymous true"
        echo "persistence false"
        echo "log_dest file $work/mosquitto.log"
        # as root mosquitto would switch to user "mosquitto", unable to write $work
        if [ "$(id -u)" = 0 ]; then echo "user root"; fi
    } >"$work/mosquitto.conf"
    : >"$work/mosquitto.log"
    "$mosquitto" -c "$work/mosquitto.conf" </dev/null >"$work/mosquitto.out" 2>&1 &
    mosquitto_pid=$!
    if wait_for_line "$work/mosquitto.log" " running" 10 "$mosquitto_pid"; then
        break
    fi
    kill "$mosquitto_pid" 2>/dev/null || true
    wait "$mosquitto_pid" 2>/dev/null || true
    mosquitto_pid=""
done
[ -n "$mosquitto_pid" ] || { cat "$work"/mosquitto.* >&2; die "mosquitto did not start"; }
say "mosquitto (pid $mosquitto_pid) listening on 127.0.0.1:$port"

say "starting the controller"
"$bin_dir/home_controller" 127.0.0.1 "$port" >"$work/controller.out" 2>&1 &
controller_pid=$!
if ! wait_for_line "$work/controller.out" "controller: ready" 20 "$controller_pid"; then
    cat "$work/controller.out" >&2
    die "the controller did not become ready"
fi
grep "controller: ready" "$work/controller.out"

say "running the sensor ($rounds rounds)"
"$bin_dir/home_sensor" 127.0.0.1 "$port" "$rounds" || die "the sensor failed"

say "waiting for the controller"
status=0
wait "$controller_pid" || status=$?
controller_pid=""

say "the controller's decisions"
grep -v "controller: ready" "$work/controller.out" || true
[ $status -eq 0 ] || die "the controller exited with status $status"

say "demo finished, stopping mosquitto"

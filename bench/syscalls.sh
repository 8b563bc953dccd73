#!/usr/bin/env bash
# System calls per message at QoS 1 and 2: libmqtt, libmosquitto and the raw
# socket reference, publisher and subscriber, through a private mosquitto
# configured as in bench/run.sh. Counted by `perf stat -e raw_syscalls:sys_enter`
# (every system call of the process, all threads; no slowdown, unlike strace).
#
#   bench/syscalls.sh [--count N] [--rounds R] [--no-build]
#
# Prints the median over the rounds (interleaved) of syscalls per message and
# the ratio to libmosquitto. Needs what bench/run.sh needs, plus perf
# (Debian linux-perf) with the raw_syscalls tracepoint readable (root).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/wait_ready.sh"
root=$(cd "$here/.." && pwd)
count=20000 rounds=3 build=1 window=20
while [ $# -gt 0 ]; do
    case $1 in
    --count) count=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --no-build) build=0 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "syscalls.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
perf stat -x, -e raw_syscalls:sys_enter -o /dev/null true 2>/dev/null || {
    echo "syscalls.sh: perf cannot count raw_syscalls:sys_enter here (apt-get install -y linux-perf; run as root)" >&2
    exit 1
}
bin=$root/target/bench
if [ $build = 1 ]; then
    echo "building libmqtt (cargo rustc --release --lib --crate-type cdylib,staticlib) and target/bench/ ..."
    (cd "$root" && cargo rustc --release --lib --crate-type cdylib,staticlib --quiet)
    mkdir -p "$bin"
    CFLAGS="-O2 -g -Wall -Wextra"
    cc $CFLAGS -o "$bin/bench_libmqtt" "$here/bench_libmqtt.c" -I"$root/include" \
        -L"$root/target/release" -Wl,-rpath,"$root/target/release" -lmqtt -lpthread
    cc $CFLAGS -o "$bin/bench_mosquitto" "$here/bench_mosquitto.c" -lmosquitto
    cc $CFLAGS -o "$bin/bench_raw" "$here/bench_raw.c"
fi
source "$here/private_broker.sh"
start_private_broker syscalls "set_tcp_nodelay true
max_inflight_messages $window
max_queued_messages 0
max_queued_bytes 0"
syscalls() { grep raw_syscalls "$1" | cut -d, -f1; }
failed=0
for round in $(seq 1 "$rounds"); do
    for qos in 1 2; do
        for lib in libmqtt mosquitto raw; do
            topic="syscalls/$lib/$qos/$round/$$"
            rm -f "$work/sub.out"
            perf stat -x, -e raw_syscalls:sys_enter -o "$work/sub.perf" \
                timeout 120 "$bin/bench_$lib" sub 127.0.0.1 "$port" "$topic" "$qos" "$count" >"$work/sub.out" 2>&1 &
            sp=$!
            wait_ready "$work/sub.out" "$sp" || true
            perf stat -x, -e raw_syscalls:sys_enter -o "$work/pub.perf" \
                timeout 120 "$bin/bench_$lib" pub 127.0.0.1 "$port" "$topic" "$qos" "$count" "$window" >"$work/pub.out" 2>&1 || true
            wait "$sp" || true
            if grep -qs 'ok=1' "$work/pub.out" && grep -qs 'ok=1' "$work/sub.out"; then
                echo "$lib $qos $(syscalls "$work/pub.perf") $(syscalls "$work/sub.perf")" >> "$work/results"
            else
                echo "  FAIL $lib QoS $qos round $round: $(grep -h RESULT "$work/pub.out" "$work/sub.out" | tr '\n' ' ')" >&2
                failed=1
            fi
        done
    done
done
python3 - "$work/results" "$count" <<'PY'
import statistics, sys
count = int(sys.argv[2])
runs = {}
for line in open(sys.argv[1]):
    lib, qos, pub, sub = line.split()
    runs.setdefault((lib, qos), []).append((int(pub) / count, int(sub) / count))
def median(lib, qos, side):
    r = runs.get((lib, qos))
    return statistics.median(x[side] for x in r) if r else None
print()
print("%-36s %-14s %-14s %-14s" % ("syscalls per message (ratio)", "libmqtt", "libmosquitto", "raw socket"))
for qos in ("1", "2"):
    for side, name in ((0, "publisher"), (1, "subscriber")):
        ref = median("mosquitto", qos, side)
        cells = []
        for lib in ("libmqtt", "mosquitto", "raw"):
            v = median(lib, qos, side)
            if v is None:
                cells.append("FAILED")
            elif lib != "mosquitto" and ref:
                cells.append("%.2f (%.2f)" % (v, v / ref))
            else:
                cells.append("%.2f" % v)
        print("%-36s %-14s %-14s %-14s" % (f"QoS {qos} {name}", *cells))
PY
exit $failed

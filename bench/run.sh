#!/bin/sh
# bench/run.sh - libmqtt side by side with libmosquitto and Paho C (MQTTAsync).
#
#   bench/run.sh [--quick] [--rounds N] [--no-build]
#
# Needs: a Rust toolchain (cargo), cc, mosquitto (the broker), libmosquitto-dev,
# libpaho-mqtt-dev, binutils (strip):
#   apt-get install -y mosquitto libmosquitto-dev libpaho-mqtt-dev build-essential
#
# Builds libmqtt as shipped (cargo rustc --release --lib --crate-type cdylib,staticlib:
# the release profile with LTO) and the bench programs into target/bench/,
# starts a private mosquitto on a free loopback port, runs every workload with each
# library in its own processes, interleaved (libmqtt, mosquitto, paho, [raw], then
# the next workload, round after round), prints one table of medians over the
# rounds with each figure's ratio to libmosquitto's, and stops mosquitto.
# A run that loses, duplicates or corrupts a message is reported as FAIL.
# Environment: BENCH_LIBMQTT_LOOP=thread runs libmqtt on its loop thread;
# BENCH_PIN=0 leaves latency runs unpinned (by default the broker and the client
# share CPU 0 during them: see bench/README.md);
# BENCH_KEEP=1 keeps the work directory (raw RESULT lines, broker config).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
rounds=3
quick=0
build=1
while [ $# -gt 0 ]; do
    case $1 in
    --quick) quick=1; rounds=1 ;;
    --rounds) rounds=$2; shift ;;
    --rounds=*) rounds=${1#--rounds=} ;;
    --no-build) build=0 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
# --quick keeps --rounds if given after it
WINDOW=20
if [ $quick = 1 ]; then
    N0=30000 N1=10000 N2=5000 NLAT=1000
else
    N0=300000 N1=100000 N2=50000 NLAT=5000
fi

bin=$root/target/bench
work=$(mktemp -d "${TMPDIR:-/tmp}/mqtt-bench.XXXXXX")
results=$work/results
: > "$results"
broker_pid=

cleanup() {
    if [ -n "$broker_pid" ]; then
        kill "$broker_pid" 2>/dev/null || true
        wait "$broker_pid" 2>/dev/null || true
    fi
    if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT INT TERM

# ---- build ---------------------------------------------------------------------------
for cmd in cc strip; do
    command -v $cmd >/dev/null 2>&1 || { echo "run.sh: $cmd not found" >&2; exit 1; }
done
for h in mosquitto.h MQTTAsync.h; do
    echo "#include <$h>" | cc -E -x c - >/dev/null 2>&1 || {
        echo "run.sh: <$h> not found: apt-get install -y libmosquitto-dev libpaho-mqtt-dev" >&2
        exit 1
    }
done
if [ $build = 1 ]; then
    echo "building libmqtt (cargo rustc --release --lib --crate-type cdylib,staticlib) and target/bench/ ..."
    (cd "$root" && cargo rustc --release --lib --crate-type cdylib,staticlib --quiet)
    mkdir -p "$bin"
    CFLAGS="-O2 -g -Wall -Wextra"
    cc $CFLAGS -o "$bin/bench_libmqtt" "$here/bench_libmqtt.c" -I"$root/include" \
        -L"$root/target/release" -Wl,-rpath,"$root/target/release" -lmqtt -lpthread
    cc $CFLAGS -o "$bin/bench_mosquitto" "$here/bench_mosquitto.c" -lmosquitto
    cc $CFLAGS -o "$bin/bench_paho" "$here/bench_paho.c" -lpaho-mqtt3a -lpthread
    cc $CFLAGS -o "$bin/bench_raw" "$here/bench_raw.c"
fi

# ---- broker --------------------------------------------------------------------------
mosquitto=$(command -v mosquitto || true)
[ -n "$mosquitto" ] || for m in /usr/sbin/mosquitto /usr/local/sbin/mosquitto; do
    [ -x "$m" ] && mosquitto=$m && break
done
[ -n "$mosquitto" ] || { echo "run.sh: mosquitto not found (apt-get install mosquitto)" >&2; exit 1; }
HOST=127.0.0.1
attempt=0
while :; do
    attempt=$((attempt + 1))
    PORT=$((20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 40000))
    # max_queued_messages 0 with max_queued_bytes 0: no queue limit at all. Any
    # limit (even 10000000) makes mosquitto 2.0.11 drop 1-4 % of the QoS 1
    # messages to a fast subscriber, whatever its library; see bench/README.md.
    cat > "$work/mosquitto.conf" <<CONF
listener $PORT $HOST
allow_anonymous true
set_tcp_nodelay true
max_inflight_messages $WINDOW
max_queued_messages 0
max_queued_bytes 0
persistence false
log_dest none
CONF
    "$mosquitto" -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
    broker_pid=$!
    sleep 0.3
    if kill -0 "$broker_pid" 2>/dev/null; then break; fi
    broker_pid=
    [ $attempt -lt 20 ] || { echo "run.sh: mosquitto does not start" >&2; cat "$work/mosquitto.log" >&2; exit 1; }
done

# ---- runs ----------------------------------------------------------------------------
field() { # field NAME LINE
    echo "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"
}
record() { # record TEST LIB METRIC VALUE
    echo "$1 $2 $3 $4" >> "$results"
}

seq_id=0
HZ=$(getconf CLK_TCK)
broker_ticks() { # utime + stime of the broker, in clock ticks
    awk '{ print $14 + $15 }' "/proc/$broker_pid/stat"
}
# throughput TEST LIB QOS COUNT: subscriber first, publisher once it is subscribed
throughput() {
    t=$1 lib=$2 qos=$3 n=$4
    seq_id=$((seq_id + 1))
    topic="bench/$t/$lib/$$/$seq_id"
    prog=$bin/bench_$lib
    w=$WINDOW
    # raw QoS 0: 64 PUBLISHes per write(); QoS 1/2: the same window as everyone
    if [ "$lib" = raw ] && [ "$qos" = 0 ]; then w=64; fi
    b0=$(broker_ticks)
    timeout 120 "$prog" sub $HOST $PORT "$topic" "$qos" "$n" > "$work/sub.out" 2>"$work/sub.err" &
    sp=$!
    i=0
    while ! grep -qs '^ready' "$work/sub.out"; do
        sleep 0.01
        i=$((i + 1))
        if [ $i -gt 1000 ] || ! kill -0 $sp 2>/dev/null; then break; fi
    done
    timeout 120 "$prog" pub $HOST $PORT "$topic" "$qos" "$n" "$w" > "$work/pub.out" 2>"$work/pub.err" || true
    wait $sp || true
    b1=$(broker_ticks)
    pl=$(grep '^RESULT' "$work/pub.out" || true)
    sl=$(grep '^RESULT' "$work/sub.out" || true)
    echo "$t $lib pub: $pl" >> "$work/raw_lines"
    echo "$t $lib sub: $sl" >> "$work/raw_lines"
    if [ "$(field ok "$pl")" != 1 ] || [ "$(field ok "$sl")" != 1 ]; then
        echo "  FAIL $t $lib: pub [$pl] sub [$sl] $(cat "$work/pub.err" "$work/sub.err" | head -3)" >&2
        record "$t" "$lib" rate FAIL
        return
    fi
    vals=$(awk -v n="$n" -v t0="$(field t_start "$pl")" -v t1="$(field t_last "$sl")" \
        -v pc="$(field cpu "$pl")" -v sc="$(field cpu "$sl")" -v bt=$((b1 - b0)) -v hz="$HZ" \
        -v pw="$(field nvcsw "$pl")" -v sw="$(field nvcsw "$sl")" \
        'BEGIN { printf "%.0f %.3f %.3f %.3f %.2f %.2f", n / (t1 - t0), pc / n * 1e6, sc / n * 1e6,
                 bt / hz / n * 1e6, pw / n, sw / n }')
    set -- $vals
    record "$t" "$lib" rate "$1"
    record "$t" "$lib" pubcpu "$2"
    record "$t" "$lib" subcpu "$3"
    record "$t" "$lib" brokercpu "$4"
    record "$t" "$lib" pubwake "$5"
    record "$t" "$lib" subwake "$6"
    printf '  %-6s %-9s %8s msg/s  pub %6s us/msg  sub %6s us/msg  broker %6s us/msg  wake-ups/msg pub %5s sub %5s\n' \
        "$t" "$lib" "$1" "$2" "$3" "$4" "$5" "$6"
}

pin=
pin_label=unpinned
if [ "${BENCH_PIN:-1}" != 0 ] && command -v taskset >/dev/null 2>&1; then
    pin="taskset -c 0"
    pin_label="broker and client on CPU 0"
fi
latency() { # latency TEST LIB QOS
    t=$1 lib=$2 qos=$3
    seq_id=$((seq_id + 1))
    [ -z "$pin" ] || taskset -pc 0 "$broker_pid" >/dev/null
    l=$(timeout 120 $pin "$bin/bench_$lib" lat $HOST $PORT "bench/$t/$lib/$$/$seq_id" "$qos" "$NLAT" 2>"$work/lat.err" | grep '^RESULT' || true)
    [ -z "$pin" ] || taskset -pc "0-$(($(nproc) - 1))" "$broker_pid" >/dev/null
    echo "$t $lib: $l" >> "$work/raw_lines"
    if [ "$(field ok "$l")" != 1 ]; then
        echo "  FAIL $t $lib: [$l] $(head -3 "$work/lat.err")" >&2
        record "$t" "$lib" p50 FAIL
        return
    fi
    record "$t" "$lib" p50 "$(field p50_us "$l")"
    record "$t" "$lib" p99 "$(field p99_us "$l")"
    printf '  %-6s %-9s p50 %7s us  p99 %7s us\n' "$t" "$lib" "$(field p50_us "$l")" "$(field p99_us "$l")"
}

idle() { # idle LIB
    seq_id=$((seq_id + 1))
    l=$(timeout 60 "$bin/bench_$1" idle $HOST $PORT "bench/idle/$1/$$/$seq_id" 2>/dev/null | grep '^RESULT' || true)
    if [ "$(field ok "$l")" != 1 ]; then
        record idle "$1" rss FAIL
        return
    fi
    record idle "$1" rss "$(field vmhwm_kb "$l")"
}

LIBS="libmqtt mosquitto paho"
started=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
echo "broker: $("$mosquitto" -h 2>/dev/null | head -1) on $HOST:$PORT; $rounds round(s); counts q0 $N0, q1 $N1, q2 $N2, latency $NLAT"
r=0
while [ $r -lt "$rounds" ]; do
    r=$((r + 1))
    echo "round $r/$rounds"
    for lib in $LIBS raw; do throughput q0 $lib 0 $N0; done
    for lib in $LIBS raw; do throughput q1 $lib 1 $N1; done
    for lib in $LIBS raw; do throughput q2 $lib 2 $N2; done
    for lib in $LIBS; do latency lat0 $lib 0; done
    for lib in $LIBS; do latency lat1 $lib 1; done
    for lib in $LIBS; do idle $lib; done
done

# stripped library sizes (kB), once
so_of() { ldd "$bin/bench_$1" | awk -v p="$2" '$1 ~ p { print $3 }'; }
for pair in "libmqtt libmqtt.so" "mosquitto libmosquitto" "paho libpaho-mqtt3a"; do
    set -- $pair
    so=$(so_of "$1" "$2")
    if [ -n "$so" ]; then
        cp "$(readlink -f "$so")" "$work/strip.so"
        strip "$work/strip.so"
        record size "$1" sokb "$(( $(wc -c < "$work/strip.so") / 1024 ))"
    fi
done

# ---- table ---------------------------------------------------------------------------
echo
echo "libmqtt $(sed -n 's/^version *= *"\(.*\)"/\1/p' "$root/Cargo.toml" | head -1) vs libmosquitto $(dpkg-query -W -f='${Version}' libmosquitto1 2>/dev/null || echo '?') vs Paho C $(dpkg-query -W -f='${Version}' 'libpaho-mqtt1.3' 2>/dev/null || echo '?') (MQTTAsync)"
echo "date: $started; machine: $(nproc) CPUs, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1), $(uname -sr)"
echo "medians of $rounds round(s); in brackets: ratio to libmosquitto (for msg/s higher is better, for everything else lower is better)"
echo "window $WINDOW in flight, 64-byte payloads; libmqtt loop: ${BENCH_LIBMQTT_LOOP:-caller's loop (mqtt_client_loop)}; latency: $pin_label"
echo
awk '
function median(key,   n, i, j, tmp, a) {
    n = cnt[key]
    for (i = 1; i <= n; i++) a[i] = v[key, i]
    for (i = 2; i <= n; i++) { tmp = a[i]; for (j = i - 1; j >= 1 && a[j] > tmp; j--) a[j + 1] = a[j]; a[j + 1] = tmp }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function cell(t, lib, m, f,   key, x, ref, s) {
    key = t SUBSEP lib SUBSEP m
    if (fail[t, lib]) return "FAIL"
    if (!(key in cnt)) return "-"
    x = median(key)
    if (f != "") s = sprintf(f, x)
    else s = (x >= 100 ? sprintf("%.0f", x) : (x >= 10 ? sprintf("%.1f", x) : sprintf("%.3f", x)))
    rk = t SUBSEP "mosquitto" SUBSEP m
    if (lib != "mosquitto" && (rk in cnt) && !fail[t, "mosquitto"]) {
        ref = median(rk)
        if (ref > 0) s = s sprintf(" (%.2f)", x / ref)
    }
    return s
}
{ if ($4 == "FAIL") { fail[$1, $2] = 1; next }
  key = $1 SUBSEP $2 SUBSEP $3; v[key, ++cnt[key]] = $4 + 0 }
END {
    fmt = "%-34s %-16s %-16s %-16s %-12s\n"
    printf fmt, "figure", "libmqtt", "libmosquitto", "paho (async)", "raw socket"
    printf fmt, "------", "-------", "------------", "------------", "----------"
    split("q0 q1 q2", T, " ")
    for (i = 1; i <= 3; i++) {
        t = T[i]; q = i - 1
        printf fmt, "QoS " q " throughput, msg/s", cell(t, "libmqtt", "rate"), cell(t, "mosquitto", "rate"), cell(t, "paho", "rate"), cell(t, "raw", "rate")
        printf fmt, "QoS " q " publisher CPU, us/msg", cell(t, "libmqtt", "pubcpu"), cell(t, "mosquitto", "pubcpu"), cell(t, "paho", "pubcpu"), cell(t, "raw", "pubcpu")
        printf fmt, "QoS " q " subscriber CPU, us/msg", cell(t, "libmqtt", "subcpu"), cell(t, "mosquitto", "subcpu"), cell(t, "paho", "subcpu"), cell(t, "raw", "subcpu")
        printf fmt, "QoS " q " broker CPU, us/msg", cell(t, "libmqtt", "brokercpu"), cell(t, "mosquitto", "brokercpu"), cell(t, "paho", "brokercpu"), cell(t, "raw", "brokercpu")
        printf fmt, "QoS " q " publisher wake-ups/msg", cell(t, "libmqtt", "pubwake", "%.2f"), cell(t, "mosquitto", "pubwake", "%.2f"), cell(t, "paho", "pubwake", "%.2f"), cell(t, "raw", "pubwake", "%.2f")
        printf fmt, "QoS " q " subscriber wake-ups/msg", cell(t, "libmqtt", "subwake", "%.2f"), cell(t, "mosquitto", "subwake", "%.2f"), cell(t, "paho", "subwake", "%.2f"), cell(t, "raw", "subwake", "%.2f")
    }
    printf fmt, "QoS 0 round trip p50, us", cell("lat0", "libmqtt", "p50"), cell("lat0", "mosquitto", "p50"), cell("lat0", "paho", "p50"), ""
    printf fmt, "QoS 0 round trip p99, us", cell("lat0", "libmqtt", "p99"), cell("lat0", "mosquitto", "p99"), cell("lat0", "paho", "p99"), ""
    printf fmt, "QoS 1 round trip p50, us", cell("lat1", "libmqtt", "p50"), cell("lat1", "mosquitto", "p50"), cell("lat1", "paho", "p50"), ""
    printf fmt, "QoS 1 round trip p99, us", cell("lat1", "libmqtt", "p99"), cell("lat1", "mosquitto", "p99"), cell("lat1", "paho", "p99"), ""
    printf fmt, "idle connected client VmHWM, kB", cell("idle", "libmqtt", "rss"), cell("idle", "mosquitto", "rss"), cell("idle", "paho", "rss"), ""
    printf fmt, "stripped library, kB", cell("size", "libmqtt", "sokb"), cell("size", "mosquitto", "sokb"), cell("size", "paho", "sokb"), ""
}' "$results"
if grep -q ' FAIL$' "$results"; then
    echo
    echo "FAILED runs (lost, duplicated or corrupted messages, or errors): $(grep ' FAIL$' "$results" | awk '{print $1 "/" $2}' | sort | uniq -c | tr '\n' ' ')"
    exit 1
fi

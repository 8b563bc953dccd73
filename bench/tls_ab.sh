#!/bin/sh
# bench/tls_ab.sh - two builds of libmqtt and libmosquitto, interleaved in the
# same run, on the 16-KiB TLS throughput rows of `run.sh --tls` (and the 64-byte
# QoS 1 row): how a change to the TLS path moves the rate and the CPU of the
# publisher, the subscriber and the broker.
#
#   bench/tls_ab.sh DIR_A DIR_B [ROUNDS]     (default 5 rounds)
#
# DIR_A and DIR_B each hold a libmqtt.so (copied from target/release/ of the
# build in question); target/bench/ must hold the programs (bench/run.sh builds
# them). Prints one line per run and the medians per build. BENCH_CHRT=N runs the
# broker and every client at SCHED_FIFO priority N (chrt), so that other work on
# the machine does not take their CPUs (as on a quiet machine).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
. "$here/wait_ready.sh"
bin=$(cd "$here/.." && pwd)/target/bench
[ $# -ge 2 ] || { echo "usage: bench/tls_ab.sh DIR_A DIR_B [ROUNDS]" >&2; exit 2; }
A=$(cd "$1" && pwd) B=$(cd "$2" && pwd) rounds=${3:-5}
for d in "$A" "$B"; do
    [ -f "$d/libmqtt.so" ] || { echo "tls_ab.sh: no $d/libmqtt.so" >&2; exit 2; }
    # the programs ask for the soname
    ln -sf libmqtt.so "$d/libmqtt.so.0"
done
for p in bench_libmqtt bench_mosquitto; do
    [ -x "$bin/$p" ] || { echo "tls_ab.sh: no $bin/$p (run bench/run.sh once)" >&2; exit 2; }
done
rt=
[ -z "${BENCH_CHRT:-}" ] || rt="chrt -f $BENCH_CHRT"

work=$(mktemp -d "${TMPDIR:-/tmp}/tls-ab.XXXXXX")
broker_pid=
cleanup() {
    [ -z "$broker_pid" ] || { kill "$broker_pid" 2>/dev/null || true; wait "$broker_pid" 2>/dev/null || true; }
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/ca.key" \
    -out "$work/ca.pem" -days 2 -subj "/CN=libmqtt bench CA" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/server.key" \
    -out "$work/server.csr" -subj "/CN=127.0.0.1" 2>/dev/null
echo "subjectAltName=IP:127.0.0.1" > "$work/server.ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
    -out "$work/server.pem" -days 2 -extfile "$work/server.ext" 2>/dev/null
chmod 755 "$work"
chmod 644 "$work"/*
mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
attempt=0
while :; do
    attempt=$((attempt + 1))
    PORT=$((20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 40000))
    cat > "$work/mosquitto.conf" <<CONF
listener $PORT 127.0.0.1
cafile $work/ca.pem
certfile $work/server.pem
keyfile $work/server.key
tls_version tlsv1.3
allow_anonymous true
set_tcp_nodelay true
max_inflight_messages 20
max_queued_messages 0
max_queued_bytes 0
persistence false
log_dest none
CONF
    $rt "$mosquitto" -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
    broker_pid=$!
    sleep 0.3
    if kill -0 "$broker_pid" 2>/dev/null; then break; fi
    broker_pid=
    [ $attempt -lt 20 ] || { echo "tls_ab.sh: mosquitto does not start" >&2; exit 1; }
done

field() { echo "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
ticks() { awk '{ print $14 + $15 }' "/proc/$broker_pid/stat"; }
HZ=$(getconf CLK_TCK)
seq_id=0
# run LABEL PROG LIBDIR QOS COUNT PAYLOAD
run() {
    seq_id=$((seq_id + 1))
    topic="bench/ab/$1/$$/$seq_id"
    b0=$(ticks)
    rm -f "$work/sub.out"
    env LD_LIBRARY_PATH="$3" BENCH_TLS_CA="$work/ca.pem" BENCH_PAYLOAD="$6" \
        $rt timeout 120 "$2" sub 127.0.0.1 "$PORT" "$topic" "$4" "$5" > "$work/sub.out" 2>/dev/null &
    sp=$!
    wait_ready "$work/sub.out" $sp || true
    pl=$(env LD_LIBRARY_PATH="$3" BENCH_TLS_CA="$work/ca.pem" BENCH_PAYLOAD="$6" \
        $rt timeout 120 "$2" pub 127.0.0.1 "$PORT" "$topic" "$4" "$5" 20 2>/dev/null | grep '^RESULT' || true)
    wait $sp || true
    b1=$(ticks)
    sl=$(grep '^RESULT' "$work/sub.out" || true)
    row="$6 B q$4"
    if [ "$(field ok "$pl")" != 1 ] || [ "$(field ok "$sl")" != 1 ]; then
        echo "  FAIL $row $1"
        return
    fi
    awk -v l="$1" -v row="$row" -v n="$5" -v t0="$(field t_start "$pl")" -v t1="$(field t_last "$sl")" \
        -v pc="$(field cpu "$pl")" -v sc="$(field cpu "$sl")" -v bt=$((b1 - b0)) -v hz="$HZ" \
        'BEGIN { printf "  %-10s %-6s %8.0f msg/s  pub %6.2f  sub %6.2f  broker %6.1f us/msg\n",
                 row, l, n / (t1 - t0), pc / n * 1e6, sc / n * 1e6, bt / hz / n * 1e6 }' | tee -a "$work/lines"
}

echo "A: $A  B: $B  $rounds round(s)${rt:+, $rt}"
r=0
while [ $r -lt "$rounds" ]; do
    r=$((r + 1))
    echo "round $r/$rounds"
    for w in "0 20000 16384" "1 10000 16384" "1 50000 64"; do
        # shellcheck disable=SC2086
        set -- $w
        run A "$bin/bench_libmqtt" "$A" "$1" "$2" "$3"
        run B "$bin/bench_libmqtt" "$B" "$1" "$2" "$3"
        run mosq "$bin/bench_mosquitto" "" "$1" "$2" "$3"
    done
done
echo "medians (msg/s; CPU us/msg publisher / subscriber / broker)"
awk '{ k = $1 " " $2 " " $3 " " $4; r[k] = r[k] " " $5; p[k] = p[k] " " $8; s[k] = s[k] " " $10; b[k] = b[k] " " $12 }
function med(str,  a, n, i, j, t) {
    n = split(str, a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
END { for (k in r) printf "  %-18s %8.0f  %6.2f / %6.2f / %6.1f\n", k, med(r[k]), med(p[k]), med(s[k]), med(b[k]) }' \
    "$work/lines" | sort

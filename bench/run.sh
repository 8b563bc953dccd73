#!/bin/sh
# bench/run.sh - libmqtt side by side with libmosquitto and Paho C (MQTTAsync).
#
#   bench/run.sh [--quick] [--rounds N] [--no-build] [--v5] [--tls] [--all] [--no-base] [--store] [--ws]
#
#   --v5       also MQTT 5 rows: libmqtt vs libmosquitto (mosquitto_publish_v5),
#              QoS 0/1/2, plain, with a user property, with a topic alias
#   --tls      also TLS rows against a second, TLS-only listener of the broker
#              (CA and server certificate for 127.0.0.1 made with openssl at run
#              time): libmqtt (rustls), libmosquitto and Paho MQTTAsync
#              (paho-mqtt3as; both OpenSSL): QoS 0/1 with 64-byte and 16-KiB
#              payloads, handshake time and CPU, idle RSS
#   --all      --v5 and --tls
#   --store    also durable-store rows: QoS 1 throughput and publisher CPU of
#              libmqtt in memory and with mqtt_client_set_persistence in each
#              sync mode (NONE, BATCH, EVERY), and of Paho MQTTAsync in memory
#              and with its default file persistence, all in the work directory
#              (one disk); prints the ratios the durable store is held to,
#              end to end (with a subscriber) and for the publisher alone
#   --ws       also WebSocket rows: libmqtt QoS 0/1 over ws (mqtt_client_connect_uri)
#              and over plain TCP to the same broker, aedes with a WebSocket and a
#              TCP listener (tests/netpaths_support/ws_broker; needs Node.js, and
#              npm ci there on first use): throughput and CPU per message
#   --no-base  leave out the default MQTT 3.1.1 rows (plain TCP throughput,
#              latency, idle RSS, library size): only the --v5 / --tls / --store / --ws ones
#
# Needs: a Rust toolchain (cargo), cc, mosquitto (the broker), libmosquitto-dev,
# libpaho-mqtt-dev, binutils (strip); for --tls also openssl:
#   apt-get install -y mosquitto libmosquitto-dev libpaho-mqtt-dev build-essential openssl
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
# BENCH_KEEP=1 keeps the work directory (raw RESULT lines, broker config);
# BENCH_TLS_KEY=rsa makes the server certificate's key RSA 2048 instead of
# ECDSA P-256 (--tls).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
. "$here/wait_ready.sh"
root=$(cd "$here/.." && pwd)
rounds=3
quick=0
build=1
v5=0
tls=0
base=1
store=0
ws=0
while [ $# -gt 0 ]; do
    case $1 in
    --quick) quick=1; rounds=1 ;;
    --rounds) rounds=$2; shift ;;
    --rounds=*) rounds=${1#--rounds=} ;;
    --no-build) build=0 ;;
    --v5) v5=1 ;;
    --tls) tls=1 ;;
    --all) v5=1; tls=1 ;;
    --no-base) base=0 ;;
    --store) store=1 ;;
    --ws) ws=1 ;;
    -h|--help) sed -n '2,43p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
# --quick keeps --rounds if given after it
WINDOW=20
STORE_WIDE=500 # --store: the window of the wide-window rows
# N*: MQTT 3.1.1 rows; V*: MQTT 5 rows; T*: TLS rows, 64-byte payloads;
# L*: TLS rows, 16-KiB payloads (BIG); NHS: connects per handshake run
BIG=16384
if [ $quick = 1 ]; then
    N0=30000 N1=10000 N2=5000 NLAT=1000 NB=30000
    V0=15000 V1=5000 V2=2500
    T0=10000 T1=5000 L0=2000 L1=1000 NHS=50
    # --store: in memory, NONE and BATCH; EVERY (one fdatasync per message); Paho persistent
    NS=10000 NSE=500 NSP=2000
    W0=10000 W1=5000
else
    N0=300000 N1=100000 N2=50000 NLAT=5000 NB=200000
    V0=150000 V1=50000 V2=25000
    T0=100000 T1=50000 L0=20000 L1=10000 NHS=200
    NS=50000 NSE=2000 NSP=10000
    W0=50000 W1=20000
fi
[ $base = 1 ] || [ $v5 = 1 ] || [ $tls = 1 ] || [ $store = 1 ] || [ $ws = 1 ] || { echo "run.sh: --no-base without --v5, --tls, --store or --ws: nothing to run" >&2; exit 2; }

bin=$root/target/bench
work=$(mktemp -d "${TMPDIR:-/tmp}/mqtt-bench.XXXXXX")
results=$work/results
: > "$results"
broker_pid=
ws_pid=

cleanup() {
    for p in $broker_pid $ws_pid; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "work directory kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT INT TERM

# ---- build ---------------------------------------------------------------------------
for cmd in cc strip; do
    command -v $cmd >/dev/null 2>&1 || { echo "run.sh: $cmd not found" >&2; exit 1; }
done
if [ $tls = 1 ]; then
    command -v openssl >/dev/null 2>&1 || { echo "run.sh: openssl not found (apt-get install -y openssl)" >&2; exit 1; }
fi
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
    # the same program with Paho's TLS library, for the --tls rows
    cc $CFLAGS -o "$bin/bench_paho_tls" "$here/bench_paho.c" -lpaho-mqtt3as -lpthread
    cc $CFLAGS -o "$bin/bench_raw" "$here/bench_raw.c"
fi

# ---- certificates (--tls) ------------------------------------------------------------
# A throw-away CA and a server certificate for IP 127.0.0.1 signed by it, made now
# (ECDSA P-256 keys; BENCH_TLS_KEY=rsa: RSA 2048 for the server). Every client
# checks the chain and the host name (127.0.0.1 against the IP SAN). mosquitto,
# started as root, drops to its own user before it reads the files: they and the
# work directory are therefore world-readable (test keys, deleted at the end).
CA=
if [ $tls = 1 ]; then
    tlsdir=$work/tls
    mkdir -p "$tlsdir"
    chmod 711 "$work"
    chmod 755 "$tlsdir"
    case ${BENCH_TLS_KEY:-ec} in
    rsa) server_key="-newkey rsa:2048" ;;
    ec) server_key="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1" ;;
    *) echo "run.sh: BENCH_TLS_KEY must be ec or rsa" >&2; exit 2 ;;
    esac
    {
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout "$tlsdir/ca.key" -out "$tlsdir/ca.pem" -days 2 -subj "/CN=libmqtt bench CA" \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
        openssl req $server_key -nodes -keyout "$tlsdir/server.key" -out "$tlsdir/server.csr" \
            -subj "/CN=127.0.0.1"
        printf '%s\n' "subjectAltName=IP:127.0.0.1" "basicConstraints=critical,CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" \
            > "$tlsdir/server.ext"
        openssl x509 -req -in "$tlsdir/server.csr" -CA "$tlsdir/ca.pem" -CAkey "$tlsdir/ca.key" \
            -CAcreateserial -out "$tlsdir/server.pem" -days 2 -extfile "$tlsdir/server.ext"
    } > "$work/openssl.log" 2>&1 || { echo "run.sh: openssl failed:" >&2; cat "$work/openssl.log" >&2; exit 1; }
    chmod 644 "$tlsdir"/*
    CA=$tlsdir/ca.pem
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
    TLSPORT=$((PORT + 1))
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
    # TLS 1.3 only: the version all three clients then speak (they all offer 1.2
    # and 1.3); each picks its cipher suite and key exchange as shipped.
    [ $tls = 0 ] || cat >> "$work/mosquitto.conf" <<CONF
listener $TLSPORT $HOST
cafile $tlsdir/ca.pem
certfile $tlsdir/server.pem
keyfile $tlsdir/server.key
tls_version tlsv1.3
CONF
    "$mosquitto" -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
    broker_pid=$!
    sleep 0.3
    if kill -0 "$broker_pid" 2>/dev/null; then break; fi
    broker_pid=
    [ $attempt -lt 20 ] || { echo "run.sh: mosquitto does not start" >&2; cat "$work/mosquitto.log" >&2; exit 1; }
done

# ---- WebSocket broker (--ws) ----------------------------------------------------------
# aedes with a WebSocket listener (path /mqtt) and a plain TCP one, so that the ws and
# TCP rows measure the client against the same broker
if [ $ws = 1 ]; then
    wsdir=$root/tests/netpaths_support/ws_broker
    command -v node >/dev/null 2>&1 || { echo "run.sh: --ws needs node (Node.js)" >&2; exit 1; }
    [ -f "$wsdir/node_modules/aedes/package.json" ] ||
        (cd "$wsdir" && npm ci --no-audit --no-fund --loglevel=error)
    WS_BROKER_TCP_PORT=0 node "$wsdir/ws_broker.mjs" 0 /mqtt > "$work/ws_broker.out" 2>"$work/ws_broker.log" &
    ws_pid=$!
    if ! wait_ready "$work/ws_broker.out" "$ws_pid" 20; then
        echo "run.sh: the WebSocket broker does not start" >&2
        cat "$work/ws_broker.log" >&2
        exit 1
    fi
    WSPORT=$(awk '/^ready/ { print $2 }' "$work/ws_broker.out")
    WSTCPPORT=$(awk '/^ready/ { print $3 }' "$work/ws_broker.out")
fi

# ---- runs ----------------------------------------------------------------------------
field() { # field NAME LINE
    echo "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"
}
record() { # record TEST LIB METRIC VALUE
    echo "$1 $2 $3 $4" >> "$results"
}

seq_id=0
HZ=$(getconf CLK_TCK)
broker_ticks() { # utime + stime of the broker (ticks_pid if set), in clock ticks
    awk '{ print $14 + $15 }' "/proc/${ticks_pid:-$broker_pid}/stat"
}
# the program of LIB; Paho's TLS build when the options name a CA
prog_of() { # prog_of LIB [VAR=VALUE ...]
    p=$bin/bench_$1
    shift
    case " $* " in *" BENCH_TLS_CA="*) [ "$p" != "$bin/bench_paho" ] || p=${p}_tls ;; esac
    echo "$p"
}
# throughput TEST LIB QOS COUNT [PORT [VAR=VALUE ...]]: subscriber first, publisher
# once it is subscribed; the VAR=VALUE options (bench_common.h) go to both
throughput() {
    t=$1 lib=$2 qos=$3 n=$4
    port=${5:-$PORT}
    shift 4
    [ $# = 0 ] || shift
    seq_id=$((seq_id + 1))
    topic="bench/$t/$lib/$$/$seq_id"
    prog=$(prog_of "$lib" "$@")
    w=$WINDOW
    # raw QoS 0: 64 PUBLISHes per write(); QoS 1/2: the same window as everyone
    if [ "$lib" = raw ] && [ "$qos" = 0 ]; then w=64; fi
    b0=$(broker_ticks)
    # removed here, not just truncated by the redirection below: that happens in
    # the background child, possibly after the loop below has seen the previous
    # run's "ready" line and started the publisher too early (lost first messages)
    rm -f "$work/sub.out" "$work/pub.out"
    env "$@" timeout 120 "$prog" sub $HOST "$port" "$topic" "$qos" "$n" > "$work/sub.out" 2>"$work/sub.err" &
    sp=$!
    wait_ready "$work/sub.out" $sp || true
    env "$@" timeout 120 "$prog" pub $HOST "$port" "$topic" "$qos" "$n" "$w" > "$work/pub.out" 2>"$work/pub.err" || true
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
    # shellcheck disable=SC2086
    set -- $vals
    record "$t" "$lib" rate "$1"
    record "$t" "$lib" pubcpu "$2"
    record "$t" "$lib" subcpu "$3"
    record "$t" "$lib" brokercpu "$4"
    record "$t" "$lib" pubwake "$5"
    record "$t" "$lib" subwake "$6"
    record "$t" "$lib" pubrss "$(field vmhwm_kb "$pl")"
    printf '  %-7s %-9s %8s msg/s  pub %6s us/msg  sub %6s us/msg  broker %6s us/msg  wake-ups/msg pub %5s sub %5s\n' \
        "$t" "$lib" "$1" "$2" "$3" "$4" "$5" "$6"
}

# pub_only TEST LIB COUNT [VAR=VALUE ...]: a QoS 1 publisher alone (no
# subscriber): the publish rate, first publish to last PUBACK, and its CPU.
# The durable store concerns the publisher only; a subscriber doubles the
# broker's work per message and makes the broker the ceiling of every row.
pub_only() {
    t=$1 lib=$2 n=$3
    shift 3
    seq_id=$((seq_id + 1))
    pl=$(env "$@" timeout 120 "$(prog_of "$lib" "$@")" pub $HOST "$PORT" "bench/$t/$lib/$$/$seq_id" 1 "$n" "$WINDOW" 2>"$work/pub.err" | grep '^RESULT' || true)
    echo "$t $lib pub: $pl" >> "$work/raw_lines"
    if [ "$(field ok "$pl")" != 1 ]; then
        echo "  FAIL $t $lib: pub [$pl] $(head -3 "$work/pub.err")" >&2
        record "$t" "$lib" rate FAIL
        return
    fi
    vals=$(awk -v n="$n" -v t0="$(field t_start "$pl")" -v t1="$(field t_end "$pl")" -v pc="$(field cpu "$pl")" \
        'BEGIN { printf "%.0f %.3f", n / (t1 - t0), pc / n * 1e6 }')
    # shellcheck disable=SC2086
    set -- $vals
    record "$t" "$lib" rate "$1"
    record "$t" "$lib" pubcpu "$2"
    printf '  %-7s %-9s %8s msg/s  pub %6s us/msg (publisher alone)\n' "$t" "$lib" "$1" "$2"
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

idle() { # idle LIB [TEST [PORT [VAR=VALUE ...]]]
    lib=$1 t=${2:-idle} port=${3:-$PORT}
    shift
    [ $# = 0 ] || shift
    [ $# = 0 ] || shift
    seq_id=$((seq_id + 1))
    l=$(env "$@" timeout 60 "$(prog_of "$lib" "$@")" idle $HOST "$port" "bench/idle/$lib/$$/$seq_id" 2>"$work/idle.err" | grep '^RESULT' || true)
    echo "$t $lib: $l" >> "$work/raw_lines"
    if [ "$(field ok "$l")" != 1 ]; then
        echo "  FAIL $t $lib: [$l] $(head -3 "$work/idle.err")" >&2
        record "$t" "$lib" rss FAIL
        return
    fi
    record "$t" "$lib" rss "$(field vmhwm_kb "$l")"
}

# handshake TEST LIB PORT [VAR=VALUE ...]: NHS times new client, connect, CONNACK,
# disconnect, free; p50/p99 of connect -> CONNACK, the client's CPU per connect
# (connect -> CONNACK, and the whole cycle) and the broker's
handshake() {
    t=$1 lib=$2 port=$3
    shift 3
    seq_id=$((seq_id + 1))
    b0=$(broker_ticks)
    l=$(env "$@" timeout 300 "$(prog_of "$lib" "$@")" handshake $HOST "$port" "bench/hs/$lib/$$/$seq_id" "$NHS" 2>"$work/hs.err" | grep '^RESULT' || true)
    b1=$(broker_ticks)
    echo "$t $lib: $l" >> "$work/raw_lines"
    if [ "$(field ok "$l")" != 1 ]; then
        echo "  FAIL $t $lib: [$l] $(head -3 "$work/hs.err")" >&2
        record "$t" "$lib" p50 FAIL
        return
    fi
    bc=$(awk -v bt=$((b1 - b0)) -v hz="$HZ" -v n="$NHS" 'BEGIN { printf "%.1f", bt / hz / n * 1e6 }')
    record "$t" "$lib" p50 "$(field p50_us "$l")"
    record "$t" "$lib" p99 "$(field p99_us "$l")"
    record "$t" "$lib" cpu "$(field cpu_us "$l")"
    record "$t" "$lib" cyclecpu "$(field cycle_cpu_us "$l")"
    record "$t" "$lib" brokercpu "$bc"
    printf '  %-7s %-9s p50 %7s us  p99 %7s us  CPU connect->CONNACK %7s us  whole cycle %7s us  broker %6s us\n' \
        "$t" "$lib" "$(field p50_us "$l")" "$(field p99_us "$l")" "$(field cpu_us "$l")" \
        "$(field cycle_cpu_us "$l")" "$bc"
}

LIBS="libmqtt mosquitto paho"
started=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
V5LIBS="libmqtt mosquitto" # Paho: MQTT 5 not done in bench_paho.c
echo "broker: $("$mosquitto" -h 2>/dev/null | head -1) on $HOST:$PORT$([ $tls = 0 ] || echo " and TLS on $HOST:$TLSPORT ($(openssl x509 -in "$tlsdir/server.pem" -noout -text | sed -n 's/^ *Public Key Algorithm: //p' | head -1) server key)"); $rounds round(s)"
[ $base = 0 ] || echo "  MQTT 3.1.1: counts q0 $N0, q1 $N1, q2 $N2, latency $NLAT"
[ $v5 = 0 ] || echo "  MQTT 5 (--v5): counts q0 $V0, q1 $V1, q2 $V2"
[ $tls = 0 ] || echo "  TLS (--tls): counts 64 B q0 $T0, q1 $T1; $BIG B q0 $L0, q1 $L1; $NHS connects per handshake run"
[ $store = 0 ] || echo "  durable store (--store): counts QoS 1 $NS (memory, NONE, BATCH), $NSE (EVERY), $NSP (Paho file persistence)"
[ $ws = 0 ] || echo "  WebSocket (--ws): aedes on $HOST:$WSPORT (ws) and $HOST:$WSTCPPORT (TCP); counts q0 $W0, q1 $W1"
r=0
while [ $r -lt "$rounds" ]; do
    r=$((r + 1))
    echo "round $r/$rounds"
    if [ $base = 1 ]; then
        for lib in $LIBS raw; do throughput q0 $lib 0 $N0; done
        # A QoS 0 burst with no window: peak memory of the publisher.
        for lib in libmqtt mosquitto; do throughput burst $lib 0 $NB "$PORT" BENCH_BURST=1; done
        throughput burstthr libmqtt 0 $NB "$PORT" BENCH_BURST=1 BENCH_LIBMQTT_LOOP=thread
        for lib in $LIBS raw; do throughput q1 $lib 1 $N1; done
        for lib in $LIBS raw; do throughput q2 $lib 2 $N2; done
        for lib in $LIBS; do latency lat0 $lib 0; done
        for lib in $LIBS; do latency lat1 $lib 1; done
        for lib in $LIBS; do idle $lib; done
    fi
    if [ $v5 = 1 ]; then
        # v5: plain; v5u: one user property on every PUBLISH (checked by the
        # subscriber); v5a: topic alias (the topic once, then the alias alone)
        for q in 0 1 2; do
            eval "n=\$V$q"
            for lib in $V5LIBS; do throughput "v5q$q" $lib $q "$n" "$PORT" BENCH_V5=1; done
            for lib in $V5LIBS; do throughput "v5uq$q" $lib $q "$n" "$PORT" BENCH_USER_PROPERTY=1; done
            for lib in $V5LIBS; do throughput "v5aq$q" $lib $q "$n" "$PORT" BENCH_TOPIC_ALIAS=1; done
        done
    fi
    if [ $tls = 1 ]; then
        for lib in $LIBS; do throughput tq0 $lib 0 $T0 "$TLSPORT" BENCH_TLS_CA="$CA"; done
        for lib in $LIBS; do throughput tq1 $lib 1 $T1 "$TLSPORT" BENCH_TLS_CA="$CA"; done
        for lib in $LIBS; do throughput tq0big $lib 0 $L0 "$TLSPORT" BENCH_TLS_CA="$CA" BENCH_PAYLOAD=$BIG; done
        for lib in $LIBS; do throughput tq1big $lib 1 $L1 "$TLSPORT" BENCH_TLS_CA="$CA" BENCH_PAYLOAD=$BIG; done
        for lib in $LIBS; do handshake ths $lib "$TLSPORT" BENCH_TLS_CA="$CA"; done
        for lib in $LIBS; do handshake hs $lib "$PORT"; done
        for lib in $LIBS; do idle $lib tidle "$TLSPORT" BENCH_TLS_CA="$CA"; done
    fi
    if [ $store = 1 ]; then
        # a fresh store per run, in the work directory: the same disk for all
        sd=$work/store.$r
        rm -rf "$sd"
        mkdir -p "$sd"
        throughput sq1mem libmqtt 1 $NS
        throughput sq1none libmqtt 1 $NS "$PORT" BENCH_STORE_DIR="$sd/none" BENCH_STORE_SYNC=0
        throughput sq1batch libmqtt 1 $NS "$PORT" BENCH_STORE_DIR="$sd/batch" BENCH_STORE_SYNC=1
        throughput sq1every libmqtt 1 $NSE "$PORT" BENCH_STORE_DIR="$sd/every" BENCH_STORE_SYNC=2
        throughput sq1mem paho 1 $NS
        mkdir -p "$sd/paho"
        throughput sq1pers paho 1 $NSP "$PORT" BENCH_PAHO_PERSIST="$sd/paho"
        # BATCH syncs once per loop turn: a wider window puts more in a turn
        WINDOW=$STORE_WIDE
        throughput sq1memw libmqtt 1 $NS
        throughput sq1batchw libmqtt 1 $NS "$PORT" BENCH_STORE_DIR="$sd/batchw" BENCH_STORE_SYNC=1
        WINDOW=20
        pub_only pq1mem libmqtt $NS
        pub_only pq1none libmqtt $NS BENCH_STORE_DIR="$sd/pnone" BENCH_STORE_SYNC=0
        pub_only pq1batch libmqtt $NS BENCH_STORE_DIR="$sd/pbatch" BENCH_STORE_SYNC=1
        pub_only pq1every libmqtt $NSE BENCH_STORE_DIR="$sd/pevery" BENCH_STORE_SYNC=2
        pub_only pq1mem paho $NS
        mkdir -p "$sd/ppaho"
        pub_only pq1pers paho $NSP BENCH_PAHO_PERSIST="$sd/ppaho"
        # the application ahead of the in-flight window: queued messages are
        # stored as publish accepts them and synced together when the first
        # of them leaves the queue
        WINDOW=$STORE_WIDE
        pub_only pq1memq libmqtt $NS BENCH_INFLIGHT=20
        pub_only pq1batchq libmqtt $NS BENCH_STORE_DIR="$sd/pbatchq" BENCH_STORE_SYNC=1 BENCH_INFLIGHT=20
        WINDOW=20
    fi
    if [ $ws = 1 ]; then
        # the broker CPU of these rows is aedes's (node)
        ticks_pid=$ws_pid
        throughput wq0tcp libmqtt 0 $W0 "$WSTCPPORT"
        throughput wq0ws libmqtt 0 $W0 "$WSPORT" BENCH_WS_PATH=/mqtt
        throughput wq1tcp libmqtt 1 $W1 "$WSTCPPORT"
        throughput wq1ws libmqtt 1 $W1 "$WSPORT" BENCH_WS_PATH=/mqtt
        ticks_pid=
    fi
done

# stripped library sizes (kB), once
so_of() { ldd "$bin/bench_$1" | awk -v p="$2" '$1 ~ p { print $3 }'; }
if [ $base = 1 ]; then
    for pair in "libmqtt libmqtt.so" "mosquitto libmosquitto" "paho libpaho-mqtt3a"; do
        # shellcheck disable=SC2086
        set -- $pair
        so=$(so_of "$1" "$2")
        if [ -n "$so" ]; then
            cp "$(readlink -f "$so")" "$work/strip.so"
            strip "$work/strip.so"
            record size "$1" sokb "$(( $(wc -c < "$work/strip.so") / 1024 ))"
        fi
    done
fi

# ---- table ---------------------------------------------------------------------------
echo
echo "libmqtt $(sed -n 's/^version *= *"\(.*\)"/\1/p' "$root/Cargo.toml" | head -1) vs libmosquitto $(dpkg-query -W -f='${Version}' libmosquitto1 2>/dev/null || echo '?') vs Paho C $(dpkg-query -W -f='${Version}' 'libpaho-mqtt1.3' 2>/dev/null || echo '?') (MQTTAsync)"
echo "date: $started; machine: $(nproc) CPUs, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1), $(uname -sr)"
echo "medians of $rounds round(s); in brackets: ratio to libmosquitto (for msg/s higher is better, for everything else lower is better)"
echo "window $WINDOW in flight, 64-byte payloads; libmqtt loop: ${BENCH_LIBMQTT_LOOP:-caller's loop (mqtt_client_loop)}; latency: $pin_label"
# the medians and cells of every table; each table is an END block after these
AWK_FUNCS='
function median(key,   n, i, j, tmp, a) {
    n = cnt[key]
    for (i = 1; i <= n; i++) a[i] = v[key, i]
    for (i = 2; i <= n; i++) { tmp = a[i]; for (j = i - 1; j >= 1 && a[j] > tmp; j--) a[j + 1] = a[j]; a[j + 1] = tmp }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function cell(t, lib, m, f,   key, x, ref, s, rk) {
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
'
[ $base = 0 ] || { echo; awk "$AWK_FUNCS"'
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
    printf fmt, "QoS 0 burst, msg/s", cell("burst", "libmqtt", "rate"), cell("burst", "mosquitto", "rate"), "", ""
    printf fmt, "QoS 0 burst, publisher VmHWM kB", cell("burst", "libmqtt", "pubrss"), cell("burst", "mosquitto", "pubrss"), "", ""
    printf fmt, "  libmqtt on its loop thread", cell("burstthr", "libmqtt", "rate") " msg/s", cell("burstthr", "libmqtt", "pubrss") " kB", "", ""
    printf fmt, "QoS 0 round trip p50, us", cell("lat0", "libmqtt", "p50"), cell("lat0", "mosquitto", "p50"), cell("lat0", "paho", "p50"), ""
    printf fmt, "QoS 0 round trip p99, us", cell("lat0", "libmqtt", "p99"), cell("lat0", "mosquitto", "p99"), cell("lat0", "paho", "p99"), ""
    printf fmt, "QoS 1 round trip p50, us", cell("lat1", "libmqtt", "p50"), cell("lat1", "mosquitto", "p50"), cell("lat1", "paho", "p50"), ""
    printf fmt, "QoS 1 round trip p99, us", cell("lat1", "libmqtt", "p99"), cell("lat1", "mosquitto", "p99"), cell("lat1", "paho", "p99"), ""
    printf fmt, "idle connected client VmHWM, kB", cell("idle", "libmqtt", "rss"), cell("idle", "mosquitto", "rss"), cell("idle", "paho", "rss"), ""
    printf fmt, "stripped library, kB", cell("size", "libmqtt", "sokb"), cell("size", "mosquitto", "sokb"), cell("size", "paho", "sokb"), ""
}' "$results"; }

if [ $v5 = 1 ]; then
    echo
    echo "MQTT 5 (--v5): libmqtt vs libmosquitto's v5 API; publisher and subscriber of the same library;"
    echo "plain: mqtt_client_publish_v5 / mosquitto_publish_v5 without properties; + user property: one"
    echo "(\"bench-key\" = \"bench-value-0123456789\") on every PUBLISH, read and checked by the subscriber;"
    echo "+ topic alias: the topic once, then the alias alone (libmqtt: mqtt_client_set_topic_alias_max;"
    echo "libmosquitto: a Topic Alias property set by the program). Both subscribers announce Receive Maximum 1000."
    echo
    awk "$AWK_FUNCS"'
END {
    fmt = "%-50s %-16s %-16s\n"
    printf fmt, "figure", "libmqtt", "libmosquitto"
    printf fmt, "------", "-------", "------------"
    split("v5 v5u v5a", V, " ")
    L["v5"] = "v5"; L["v5u"] = "v5 + user property"; L["v5a"] = "v5 + topic alias"
    split("rate pubcpu subcpu", M, " ")
    N["rate"] = "throughput, msg/s"; N["pubcpu"] = "publisher CPU, us/msg"; N["subcpu"] = "subscriber CPU, us/msg"
    for (q = 0; q <= 2; q++)
        for (m = 1; m <= 3; m++)
            for (k = 1; k <= 3; k++) {
                t = V[k] "q" q
                printf fmt, "QoS " q " " N[M[m]] ", " L[V[k]], cell(t, "libmqtt", M[m]), cell(t, "mosquitto", M[m])
            }
}' "$results"
fi

if [ $tls = 1 ]; then
    echo
    echo "TLS (--tls): mosquitto TLS 1.3 listener, $(openssl x509 -in "$tlsdir/server.pem" -noout -text | sed -n 's/^ *Public Key Algorithm: //p' | head -1) server certificate"
    echo "signed by a CA made at run time; every client checks the chain and the host name. libmqtt: rustls + ring;"
    echo "libmosquitto and Paho MQTTAsync (libpaho-mqtt3as): the system's OpenSSL $(openssl version | awk '{print $2}')."
    echo "Handshake: $NHS times a new client, connect -> CONNACK timed, disconnect, free; client CPU per connect"
    echo "between connect and CONNACK, and for the whole cycle (create, TLS setup, connect, disconnect, free)."
    echo
    awk "$AWK_FUNCS"'
END {
    fmt = "%-50s %-16s %-16s %-16s\n"
    printf fmt, "figure", "libmqtt", "libmosquitto", "paho (async)"
    printf fmt, "------", "-------", "------------", "------------"
    split("tq0 tq1 tq0big tq1big", T, " ")
    L["tq0"] = "QoS 0, 64 B"; L["tq1"] = "QoS 1, 64 B"; L["tq0big"] = "QoS 0, 16 KiB"; L["tq1big"] = "QoS 1, 16 KiB"
    split("rate pubcpu subcpu brokercpu", M, " ")
    N["rate"] = "throughput, msg/s"; N["pubcpu"] = "publisher CPU, us/msg"
    N["subcpu"] = "subscriber CPU, us/msg"; N["brokercpu"] = "broker CPU, us/msg"
    for (k = 1; k <= 4; k++)
        for (m = 1; m <= 4; m++) {
            t = T[k]
            printf fmt, "TLS " L[t] " " N[M[m]], cell(t, "libmqtt", M[m]), cell(t, "mosquitto", M[m]), cell(t, "paho", M[m])
        }
    split("ths hs", H, " ")
    L["ths"] = "TLS"; L["hs"] = "TCP (reference)"
    for (k = 1; k <= 2; k++) {
        t = H[k]
        printf fmt, L[t] " connect -> CONNACK p50, us", cell(t, "libmqtt", "p50"), cell(t, "mosquitto", "p50"), cell(t, "paho", "p50")
        printf fmt, L[t] " connect -> CONNACK p99, us", cell(t, "libmqtt", "p99"), cell(t, "mosquitto", "p99"), cell(t, "paho", "p99")
        printf fmt, L[t] " client CPU per connect, us", cell(t, "libmqtt", "cpu"), cell(t, "mosquitto", "cpu"), cell(t, "paho", "cpu")
        printf fmt, L[t] " client CPU per whole cycle, us", cell(t, "libmqtt", "cyclecpu"), cell(t, "mosquitto", "cyclecpu"), cell(t, "paho", "cyclecpu")
        printf fmt, L[t] " broker CPU per connect, us", cell(t, "libmqtt", "brokercpu"), cell(t, "mosquitto", "brokercpu"), cell(t, "paho", "brokercpu")
    }
    printf fmt, "idle connected TLS client VmHWM, kB", cell("tidle", "libmqtt", "rss"), cell("tidle", "mosquitto", "rss"), cell("tidle", "paho", "rss")
}' "$results"
fi
if [ $store = 1 ]; then
    echo
    echo "Durable store (--store): QoS 1, window $WINDOW, 64-byte payloads; stores in $work"
    echo "($(df -T "$work" | awk 'NR == 2 { print $2 " on " $1 }')). libmqtt: mqtt_client_set_persistence, one append-only log"
    echo "(NONE: written, never synced; BATCH: one fdatasync per loop turn before its packets go out;"
    echo "EVERY: fdatasync before publish returns). Paho MQTTAsync: MQTTCLIENT_PERSISTENCE_DEFAULT (a file per message)."
    echo
    awk "$AWK_FUNCS"'
function med(t, lib, m,   key) { key = t SUBSEP lib SUBSEP m; return (key in cnt) && !fail[t, lib] ? median(key) : 0 }
function ratio(a, b) { return b > 0 ? sprintf("%.2fx", a / b) : "-" }
END {
    fmt = "%-32s %-14s %-14s %-14s %-14s %-14s %-14s\n"
    printf fmt, "figure", "libmqtt mem", "libmqtt NONE", "libmqtt BATCH", "libmqtt EVERY", "paho mem", "paho file"
    printf fmt, "------", "-----------", "------------", "-------------", "-------------", "--------", "---------"
    split("rate pubcpu", M, " ")
    N["rate"] = "QoS 1 throughput, msg/s"; N["pubcpu"] = "QoS 1 publisher CPU, us/msg"
    for (m = 1; m <= 2; m++)
        printf fmt, N[M[m]], cell("sq1mem", "libmqtt", M[m]), cell("sq1none", "libmqtt", M[m]), cell("sq1batch", "libmqtt", M[m]), cell("sq1every", "libmqtt", M[m]), cell("sq1mem", "paho", M[m]), cell("sq1pers", "paho", M[m])
    mem = med("sq1mem", "libmqtt", "rate"); pers = med("sq1pers", "paho", "rate")
    printf fmt, "window '"$STORE_WIDE"': throughput, msg/s", cell("sq1memw", "libmqtt", "rate"), "", cell("sq1batchw", "libmqtt", "rate"), "", "", ""
    printf fmt, "window '"$STORE_WIDE"': publisher CPU, us/msg", cell("sq1memw", "libmqtt", "pubcpu"), "", cell("sq1batchw", "libmqtt", "pubcpu"), "", "", ""
    printf "targets: BATCH / libmqtt in memory = %s (>= 0.8x; window '"$STORE_WIDE"': %s); NONE / Paho persistent = %s (>= 10x); EVERY / Paho persistent = %s (>= 1x)\n", ratio(med("sq1batch", "libmqtt", "rate"), mem), ratio(med("sq1batchw", "libmqtt", "rate"), med("sq1memw", "libmqtt", "rate")), ratio(med("sq1none", "libmqtt", "rate"), pers), ratio(med("sq1every", "libmqtt", "rate"), pers)
    printf fmt, "publisher alone: msg/s", cell("pq1mem", "libmqtt", "rate"), cell("pq1none", "libmqtt", "rate"), cell("pq1batch", "libmqtt", "rate"), cell("pq1every", "libmqtt", "rate"), cell("pq1mem", "paho", "rate"), cell("pq1pers", "paho", "rate")
    printf fmt, "publisher alone: CPU, us/msg", cell("pq1mem", "libmqtt", "pubcpu"), cell("pq1none", "libmqtt", "pubcpu"), cell("pq1batch", "libmqtt", "pubcpu"), cell("pq1every", "libmqtt", "pubcpu"), cell("pq1mem", "paho", "pubcpu"), cell("pq1pers", "paho", "pubcpu")
    pmem = med("pq1mem", "libmqtt", "rate"); ppers = med("pq1pers", "paho", "rate")
    printf "publisher alone (no subscriber, rate to the last PUBACK): BATCH / memory = %s; NONE / Paho persistent = %s; EVERY / Paho persistent = %s\n", ratio(med("pq1batch", "libmqtt", "rate"), pmem), ratio(med("pq1none", "libmqtt", "rate"), ppers), ratio(med("pq1every", "libmqtt", "rate"), ppers)
    printf fmt, "alone, app '"$STORE_WIDE"' ahead: msg/s", cell("pq1memq", "libmqtt", "rate"), "", cell("pq1batchq", "libmqtt", "rate"), "", "", ""
    printf fmt, "alone, app '"$STORE_WIDE"' ahead: CPU, us/msg", cell("pq1memq", "libmqtt", "pubcpu"), "", cell("pq1batchq", "libmqtt", "pubcpu"), "", "", ""
    printf "publisher alone, application up to '"$STORE_WIDE"' unacknowledged, in-flight window 20: BATCH / memory = %s\n", ratio(med("pq1batchq", "libmqtt", "rate"), med("pq1memq", "libmqtt", "rate"))
}' "$results"
fi
if [ $ws = 1 ]; then
    echo
    echo "WebSocket (--ws): libmqtt over ws (mqtt_client_connect_uri, path /mqtt) and over TCP, to the"
    echo "same aedes $(sed -n 's/.*"version": *"\(.*\)".*/\1/p' "$wsdir/node_modules/aedes/package.json" | head -1) (Node.js $(node --version)); window $WINDOW, 64-byte payloads; broker CPU is node's."
    echo
    awk "$AWK_FUNCS"'
function med(t, lib, m,   key) { key = t SUBSEP lib SUBSEP m; return (key in cnt) && !fail[t, lib] ? median(key) : 0 }
function ratio(a, b) { return b > 0 ? sprintf("%.2fx", a / b) : "-" }
END {
    fmt = "%-36s %-14s %-14s %-10s\n"
    printf fmt, "figure", "TCP", "ws", "ws / TCP"
    printf fmt, "------", "---", "--", "--------"
    split("rate pubcpu subcpu brokercpu", M, " ")
    N["rate"] = "throughput, msg/s"; N["pubcpu"] = "publisher CPU, us/msg"
    N["subcpu"] = "subscriber CPU, us/msg"; N["brokercpu"] = "broker CPU, us/msg"
    for (q = 0; q <= 1; q++)
        for (m = 1; m <= 4; m++)
            printf fmt, "QoS " q " " N[M[m]], cell("wq" q "tcp", "libmqtt", M[m]), cell("wq" q "ws", "libmqtt", M[m]), ratio(med("wq" q "ws", "libmqtt", M[m]), med("wq" q "tcp", "libmqtt", M[m]))
}' "$results"
fi
if grep -q ' FAIL$' "$results"; then
    echo
    echo "FAILED runs (lost, duplicated or corrupted messages, or errors): $(grep ' FAIL$' "$results" | awk '{print $1 "/" $2}' | sort | uniq -c | tr '\n' ' ')"
    exit 1
fi

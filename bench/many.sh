#!/usr/bin/env bash
# Many clients in one process: libmqtt (one reactor, in the caller's thread),
# libmosquitto (one poll() loop over mosquitto_socket of every client) and Paho C
# MQTTAsync (its own threads), through one private mosquitto (max_connections -1).
#
#   bench/many.sh [--clients N] [--pub-clients N] [--rate R] [--seconds S] [--no-build]
#
# Rows: N idle connected clients (keepalive 60): time to connect them all, RSS
# per client (growth over all N, which includes one-time costs such as the
# library's code pages; and growth from N/2 connected to N connected, what one
# client more costs: the harness connects the first half, waits for them and
# reads RSS before it starts the second), threads, CPU per second while idle;
# then --pub-clients clients
# each publishing QoS 1 at --rate msg/s for --seconds: CPU per message and
# publish -> PUBACK latency p50/p99. Defaults: 10000 idle, 1000 x 20 msg/s, 10 s.
# Needs what bench/run.sh needs (libmosquitto-dev, libpaho-mqtt-dev) and an
# open-files limit of at least N + 100 for the clients' process and the broker
# (the script raises the soft limit to the hard one); libmosquitto, which needs
# 3N + 100, runs with fewer clients when the limit is lower, and the table says
# how many. libmosquitto also runs idle with a loop_start thread per client,
# reported below the table (whether it survives, and at what cost).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
clients=10000 pub_clients=1000 rate=20 seconds=10 build=1 idle_s=10
while [ $# -gt 0 ]; do
    case $1 in
    --clients) clients=$2; shift ;;
    --pub-clients) pub_clients=$2; shift ;;
    --rate) rate=$2; shift ;;
    --seconds) seconds=$2; shift ;;
    --idle-seconds) idle_s=$2; shift ;;
    --no-build) build=0 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "many.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((clients + 100)) ]; then
    echo "many.sh: open files limit $(ulimit -n) is below $((clients + 100)); use --clients $(( $(ulimit -n) - 100 ))" >&2
    exit 1
fi
bin=$root/target/bench
source "$root/scripts/packages.sh"
need_packages "bench/many.sh builds one harness against libmqtt, libmosquitto and Paho C and runs them through a private mosquitto" \
    mosquitto:mosquitto cc:gcc python3:python3 \
    /usr/include/mosquitto.h:libmosquitto-dev /usr/include/MQTTAsync.h:libpaho-mqtt-dev
if [ $build = 1 ]; then
    echo "building libmqtt (cargo rustc --release --lib --crate-type cdylib,staticlib) and target/bench/bench_many_* ..."
    (cd "$root" && cargo rustc --release --lib --crate-type cdylib,staticlib --quiet)
    mkdir -p "$bin"
    CFLAGS="-O2 -g -Wall -Wextra"
    cc $CFLAGS -o "$bin/bench_many_libmqtt" "$here/bench_many_libmqtt.c" -I"$root/include" \
        -L"$root/target/release" -Wl,-rpath,"$root/target/release" -lmqtt -lpthread
    cc $CFLAGS -o "$bin/bench_many_mosquitto" "$here/bench_many_mosquitto.c" -lmosquitto
    cc $CFLAGS -o "$bin/bench_many_paho" "$here/bench_many_paho.c" -lpaho-mqtt3a -lpthread
fi
source "$here/private_broker.sh"
start_private_broker many "max_connections -1
set_tcp_nodelay true"
echo "broker: $($mosquitto -h 2>/dev/null | sed -n 's/^mosquitto version /mosquitto /p' | head -1) on 127.0.0.1:$port"
results=$work/results
failed=0
# libmosquitto holds three descriptors per client (its socket and a socket
# pair for wake-ups): under a lower open-files limit it runs with as many
# clients as fit, and its per-client figures are compared as they are.
nofile=$(ulimit -n)
mosq_clients=$clients
[ $((3 * clients + 100)) -le "$nofile" ] || mosq_clients=$(( (nofile - 100) / 3 ))
for lib in libmqtt mosquitto paho; do
    n=$clients
    if [ $lib = mosquitto ] && [ "$mosq_clients" -lt "$clients" ]; then
        n=$mosq_clients
        echo "  libmosquitto: $n clients (3 descriptors each, open-files limit $nofile)"
    fi
    line=$("$bin/bench_many_$lib" idle 127.0.0.1 "$port" "$n" 60 "$idle_s" | grep '^RESULT' || true)
    echo "  $line"
    echo "$line" >> "$results"
    case $line in *ok=1*) ;; *) failed=1 ;; esac
    sleep 1 # let the broker close the previous connections
done
# libmosquitto's other way, a loop_start thread per client, "if it survives"
# (issue 15): its result is reported, and its failure is libmosquitto's, not
# the run's.
line=$(BENCH_MOSQ_LOOP_START=1 "$bin/bench_many_mosquitto" idle 127.0.0.1 "$port" "$mosq_clients" 60 "$idle_s" | grep '^RESULT' || true)
echo "  $line"
echo "$line" >> "$results"
sleep 1
for lib in libmqtt mosquitto paho; do
    line=$("$bin/bench_many_$lib" pub 127.0.0.1 "$port" "$pub_clients" "$rate" "$seconds" | grep '^RESULT' || true)
    echo "  $line"
    echo "$line" >> "$results"
    case $line in *ok=1*) ;; *) failed=1 ;; esac
    sleep 1
done
python3 - "$results" "$clients" "$pub_clients" "$rate" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    f = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
    if f: rows[(f["lib"], f["mode"])] = f
libs = ["libmqtt", "mosquitto", "paho"]
def cell(lib, mode, key, fmt):
    r = rows.get((lib, mode))
    if not r or r.get("ok") != "1": return "FAILED"
    v = float(r[key])
    ref = rows.get(("mosquitto", mode))
    s = fmt.format(v)
    # a count, or a total over however many clients each library ran: no ratio
    if key in ("clients", "connect_s") and ref and ref.get("clients") != r.get("clients"):
        return s
    if key != "clients" and lib != "mosquitto" and ref and ref.get("ok") == "1" and float(ref[key]) > 0:
        s += " (%.2f)" % (v / float(ref[key]))
    return s
print()
print("%-44s %-18s %-18s %-18s" % ("figure (ratio to libmosquitto)", "libmqtt", "libmosquitto", "paho (async)"))
for label, mode, key, fmt in [
    ("idle clients connected", "idle", "clients", "{:.0f}"),
    ("  connect all, s", "idle", "connect_s", "{:.2f}"),
    ("  connects per second", "idle", "connects_per_s", "{:.0f}"),
    ("  RSS per client, KiB: growth / clients", "idle", "kb_per_client", "{:.2f}"),
    ("    one client more (second half)", "idle", "kb_per_added_client", "{:.2f}"),
    ("  threads in the process", "idle", "threads", "{:.0f}"),
    ("  CPU while idle, ms per second", "idle", "idle_cpu_ms_per_s", "{:.2f}"),
    (f"{sys.argv[3]} clients x {sys.argv[4]} msg/s QoS 1: CPU us/msg", "pub", "cpu_us_per_msg", "{:.1f}"),
    ("  publish -> PUBACK p50, us", "pub", "p50_us", "{:.0f}"),
    ("  publish -> PUBACK p99, us", "pub", "p99_us", "{:.0f}"),
]:
    print("%-44s %-18s %-18s %-18s" % (label, *(cell(l, mode, key, fmt) for l in libs)))
r = rows.get(("mosquitto-threads", "idle"))
if r:
    print()
    head = "libmosquitto with a loop_start thread per client: %s of %s connected, %s threads" % (
        r["connected"], r["clients"], r["threads"])
    if r.get("ok") == "1":
        print(head + ", RSS per client %s KiB (one more: %s), CPU while idle %s ms/s" % (
            r["kb_per_client"], r["kb_per_added_client"], r["idle_cpu_ms_per_s"]))
    else:
        print(head + ";")
        print("its loop threads wait in pselect(), which cannot watch a descriptor above 1023,")
        print("and each client holds three: the clients past that never connect")
PY
exit $failed

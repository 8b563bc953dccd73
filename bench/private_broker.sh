# Sourced by the bash bench scripts (many.sh, syscalls.sh): a private mosquitto
# on a free loopback port, stopped (and its work directory removed) at exit.
#
#   start_private_broker NAME "EXTRA CONFIG LINES"
#
# Sets $work (a temporary directory for the script too), $mosquitto, $port and
# $broker_pid; exits with the broker's log if it does not start.

start_private_broker() {
    local name=$1 extra=$2 attempt
    work=$(mktemp -d "${TMPDIR:-/tmp}/mqtt-$name.XXXXXX")
    broker_pid=
    trap stop_private_broker EXIT INT TERM
    mosquitto=$(command -v mosquitto || echo /usr/sbin/mosquitto)
    for attempt in $(seq 1 20); do
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
        printf 'listener %s 127.0.0.1\nallow_anonymous true\n%s\n' "$port" "$extra" > "$work/mosquitto.conf"
        "$mosquitto" -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
        broker_pid=$!
        sleep 0.3
        if kill -0 "$broker_pid" 2>/dev/null; then
            return 0
        fi
        broker_pid=
    done
    echo "$name.sh: mosquitto does not start" >&2
    cat "$work/mosquitto.log" >&2
    exit 1
}

stop_private_broker() {
    [ -z "$broker_pid" ] || { kill "$broker_pid" 2>/dev/null || true; wait "$broker_pid" 2>/dev/null || true; }
    rm -rf "$work"
}

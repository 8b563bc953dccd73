#!/bin/sh
# A private mosquitto for ctest (see CMakeLists.txt), POSIX sh.
#
#   test_broker.sh start DIR                     start mosquitto on a free loopback port;
#                                                DIR/port and DIR/pid describe it
#   test_broker.sh stop DIR                      stop it
#   test_broker.sh run DIR PROGRAM [ARGS...]     PROGRAM HOST PORT, or PROGRAM ARGS... with
#                                                @HOST@ and @PORT@ replaced when ARGS given
#   test_broker.sh home DIR CONTROLLER SENSOR    the home-heating pair: the controller,
#                                                then (once it printed "ready") the sensor
#
# With MQTT_TEST_PORT (and optionally MQTT_TEST_HOST) in the environment, an existing
# broker is used instead and start/stop do nothing. MOSQUITTO names the broker binary.
set -eu

usage() {
    echo "usage: $0 start|stop DIR | run DIR PROGRAM [ARGS...] | home DIR CONTROLLER SENSOR" >&2
    exit 2
}
[ $# -ge 2 ] || usage
cmd=$1
dir=$2
shift 2

find_mosquitto() {
    if [ -n "${MOSQUITTO:-}" ]; then echo "$MOSQUITTO"; return; fi
    if command -v mosquitto >/dev/null 2>&1; then command -v mosquitto; return; fi
    for m in /usr/sbin/mosquitto /usr/local/sbin/mosquitto; do
        if [ -x "$m" ]; then echo "$m"; return; fi
    done
    echo "test_broker.sh: mosquitto not found (apt-get install mosquitto)" >&2
    exit 1
}

random_port() {
    # 20000..59999; a taken port makes mosquitto exit and we try another
    n=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')
    echo $((20000 + n % 40000))
}

endpoint() {
    if [ -n "${MQTT_TEST_PORT:-}" ]; then
        host=${MQTT_TEST_HOST:-127.0.0.1}
        port=$MQTT_TEST_PORT
    elif [ -f "$dir/port" ]; then
        host=127.0.0.1
        port=$(cat "$dir/port")
    else
        echo "test_broker.sh: no broker in $dir (run the mqtt.broker.start test first)" >&2
        exit 1
    fi
}

stop_broker() {
    if [ -f "$dir/pid" ]; then
        pid=$(cat "$dir/pid")
        kill "$pid" 2>/dev/null || true
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$dir/pid" "$dir/port"
    fi
}

case $cmd in
start)
    if [ -n "${MQTT_TEST_PORT:-}" ]; then
        echo "using the broker at ${MQTT_TEST_HOST:-127.0.0.1}:$MQTT_TEST_PORT"
        exit 0
    fi
    mosquitto=$(find_mosquitto)
    mkdir -p "$dir"
    stop_broker
    attempt=0
    while [ $attempt -lt 20 ]; do
        attempt=$((attempt + 1))
        port=$(random_port)
        {
            echo "listener $port 127.0.0.1"
            echo "allow_anonymous true"
            echo "persistence false"
            echo "log_dest file $dir/mosquitto.log"
            # as root, mosquitto would switch to user mosquitto, which cannot write here
            if [ "$(id -u)" = 0 ]; then echo "user root"; fi
        } >"$dir/mosquitto.conf"
        : >"$dir/mosquitto.log"
        # no inherited stdout/stderr: ctest must not wait for the daemon
        "$mosquitto" -c "$dir/mosquitto.conf" </dev/null >"$dir/mosquitto.out" 2>&1 &
        pid=$!
        i=0
        while [ $i -lt 200 ]; do
            if grep -q " running" "$dir/mosquitto.log" 2>/dev/null; then
                echo "$pid" >"$dir/pid"
                echo "$port" >"$dir/port"
                echo "mosquitto (pid $pid) listening on 127.0.0.1:$port"
                exit 0
            fi
            kill -0 "$pid" 2>/dev/null || break # exited: port taken? try another
            sleep 0.05
            i=$((i + 1))
        done
        kill "$pid" 2>/dev/null || true
    done
    echo "test_broker.sh: could not start mosquitto" >&2
    cat "$dir/mosquitto.log" "$dir/mosquitto.out" >&2 2>/dev/null || true
    exit 1
    ;;
stop)
    [ -n "${MQTT_TEST_PORT:-}" ] || stop_broker
    ;;
run)
    [ $# -ge 1 ] || usage
    endpoint
    program=$1
    shift
    if [ $# -eq 0 ]; then
        exec "$program" "$host" "$port"
    fi
    count=$#
    for arg in "$@"; do
        case $arg in
        @HOST@) arg=$host ;;
        @PORT@) arg=$port ;;
        esac
        set -- "$@" "$arg"
    done
    shift "$count"
    exec "$program" "$@"
    ;;
home)
    [ $# -eq 2 ] || usage
    endpoint
    out=$(mktemp)
    "$1" "$host" "$port" >"$out" 2>&1 &
    controller=$!
    i=0
    until grep -q "controller: ready" "$out"; do
        if ! kill -0 $controller 2>/dev/null || [ $i -ge 200 ]; then
            cat "$out"
            echo "test_broker.sh: the controller never became ready" >&2
            kill $controller 2>/dev/null || true
            rm -f "$out"
            exit 1
        fi
        sleep 0.05
        i=$((i + 1))
    done
    status=0
    "$2" "$host" "$port" 3 || status=$?
    if [ $status -ne 0 ]; then kill $controller 2>/dev/null || true; fi
    wait $controller || status=$?
    cat "$out"
    rm -f "$out"
    exit $status
    ;;
*)
    usage
    ;;
esac

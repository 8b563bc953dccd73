#!/usr/bin/env bash
# Installs the brokers of the interop matrix (tests/interop.rs) besides mosquitto,
# each from its own registry at a pinned version, into $MQTT_INTEROP_DIR
# (default ${XDG_CACHE_HOME:-~/.cache}/libmqtt-interop: outside the clone, so
# that every clone and CI run on the machine reuses one rumqttd build):
#
#   rumqttd  crates.io   cargo install (built once, ~1-3 min; reused after)
#   aedes    npm         aedes + ws into aedes/node_modules (run by tests/interop/aedes-server.mjs)
#   amqtt    PyPI        a venv in amqtt/
#   ejabberd Debian      apt (its mod_mqtt; the tests generate the config)
#
# Idempotent and quick when everything is there (it only checks versions).
# MQTT_NO_INSTALL=1 installs nothing: then tests/interop.rs fails for each
# missing broker unless MQTT_SKIP_INTEROP=1 says to leave the matrix out.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/packages.sh

RUMQTTD_VERSION=0.20.0
AEDES_VERSION=1.2.0
WS_VERSION=8.18.3
AMQTT_VERSION=0.12.1

# tests/common/brokers.rs computes the same default.
dir=${MQTT_INTEROP_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/libmqtt-interop}

if [ -n "${MQTT_SKIP_INTEROP:-}" ] && [ "${MQTT_SKIP_INTEROP}" != 0 ]; then
    echo "interop brokers: MQTT_SKIP_INTEROP is set: not installing them (tests/interop.rs runs against mosquitto only)"
    exit 0
fi

mkdir -p "$dir"
# Two clones checking and installing at once would build into the same place.
exec 9>"$dir/.lock"
flock 9

missing=()
[ -x "$dir/rumqttd/bin/rumqttd" ] && [ "$(cat "$dir/rumqttd/VERSION" 2>/dev/null)" = "$RUMQTTD_VERSION" ] || missing+=(rumqttd)
[ "$(cat "$dir/aedes/VERSION" 2>/dev/null)" = "aedes@$AEDES_VERSION ws@$WS_VERSION" ] || missing+=(aedes)
[ -x "$dir/amqtt/bin/amqtt" ] && [ "$(cat "$dir/amqtt/VERSION" 2>/dev/null)" = "$AMQTT_VERSION" ] || missing+=(amqtt)
have_command erl && compgen -G "/usr/lib/*/ejabberd-*/ebin/mod_mqtt.beam" >/dev/null || missing+=(ejabberd)
if [ ${#missing[@]} -eq 0 ]; then
    echo "interop brokers: rumqttd $RUMQTTD_VERSION, aedes $AEDES_VERSION, amqtt $AMQTT_VERSION, ejabberd (Debian) already installed in $dir"
    exit 0
fi
if [ -n "${MQTT_NO_INSTALL:-}" ] && [ "${MQTT_NO_INSTALL}" != 0 ]; then
    echo "interop brokers: missing ${missing[*]}; MQTT_NO_INSTALL is set: not installing them." >&2
    echo "  tests/interop.rs will fail for them; run scripts/interop-deps.sh, or set MQTT_SKIP_INTEROP=1 to leave them out" >&2
    exit 0
fi

for broker in "${missing[@]}"; do
    start=$(date +%s)
    case $broker in
    rumqttd)
        echo "==> installing rumqttd $RUMQTTD_VERSION from crates.io into $dir/rumqttd (a broker of the interop matrix; built once, then reused)"
        # Not --locked: its lock file pins metrics 0.22.1 and time 0.3.x, which
        # current rustc rejects; the semver-compatible releases build.
        CARGO_TARGET_DIR="$dir/rumqttd-build" cargo install --quiet rumqttd \
            --version "$RUMQTTD_VERSION" --root "$dir/rumqttd"
        echo "$RUMQTTD_VERSION" >"$dir/rumqttd/VERSION"
        # The build directory is only needed to resume a failed build.
        rm -rf "$dir/rumqttd-build"
        ;;
    aedes)
        echo "==> installing aedes $AEDES_VERSION and ws $WS_VERSION from npm into $dir/aedes (a broker of the interop matrix)"
        need_packages "aedes runs on Node.js" node:nodejs npm:npm
        mkdir -p "$dir/aedes"
        (cd "$dir/aedes" && npm install --silent --no-audit --no-fund --no-save --prefix . \
            "aedes@$AEDES_VERSION" "ws@$WS_VERSION" >/dev/null)
        echo "aedes@$AEDES_VERSION ws@$WS_VERSION" >"$dir/aedes/VERSION"
        ;;
    amqtt)
        echo "==> installing amqtt $AMQTT_VERSION from PyPI into a venv in $dir/amqtt (a broker of the interop matrix)"
        need_packages "amqtt is a Python broker" python3:python3
        python3 -m venv "$dir/amqtt" || {
            echo "python3 -m venv failed: install Debian's python3-venv" >&2
            exit 1
        }
        "$dir/amqtt/bin/pip" install --quiet --disable-pip-version-check "amqtt==$AMQTT_VERSION"
        echo "$AMQTT_VERSION" >"$dir/amqtt/VERSION"
        ;;
    ejabberd)
        # need_packages looks for a command: erl may come without ejabberd, so a
        # command that never exists forces the install when mod_mqtt is missing.
        need_packages "ejabberd's mod_mqtt is a broker of the interop matrix" erl:ejabberd
        compgen -G "/usr/lib/*/ejabberd-*/ebin/mod_mqtt.beam" >/dev/null ||
            need_packages "ejabberd's mod_mqtt is a broker of the interop matrix" ejabberd-has-no-mod-mqtt:ejabberd
        ;;
    esac
    echo "    $broker: $(($(date +%s) - start)) s"
done

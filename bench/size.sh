#!/bin/sh
# bench/size.sh - footprint of libmqtt next to libmosquitto and Paho C, as markdown.
#
#   bench/size.sh [--no-build]
#
# Needs: a Rust toolchain (cargo), cc, binutils (strip, size), and for the other
# libraries' rows: apt-get install -y libmosquitto-dev libpaho-mqtt-dev libssl-dev
# (a row whose library is missing says so).
#
# 1. Builds libmqtt as shipped, with the release profile and LTO
#    (cargo rustc --release --lib --crate-type cdylib,staticlib), once with the default
#    `tls` feature and once with --no-default-features, and keeps copies in
#    target/size/tls/ and target/size/notls/ (--no-build: use the copies already there).
# 2. Shared libraries: strips a copy of each and prints its size: libmqtt.so with and
#    without TLS; the system's libmosquitto, Paho's libpaho-mqtt3a/3as and the
#    OpenSSL libssl/libcrypto that they load for TLS (found through ldconfig, each
#    symlink followed to the real file).
# 3. Static linking: compiles bench/size_hello.c (create a client, connect, subscribe,
#    publish, disconnect, free) linked against target/size/*/libmqtt.a plus the system
#    libraries of CMakeLists.txt's MQTT_STATIC_LINK_LIBRARIES, with -ffunction-sections
#    -fdata-sections -Wl,--gc-sections, and the same program with the library calls
#    stubbed out (-DSIZE_HELLO_BASELINE); prints the difference of their `size` text
#    (code + read-only data + unwind tables): what the library adds to a program.
#    The same for Paho's MQTTClient (bench/size_hello_paho.c, libpaho-mqtt3c.a /
#    libpaho-mqtt3cs.a; OpenSSL stays a shared library) and for libmosquitto
#    (bench/size_hello_mosquitto.c) when a static libmosquitto.a exists.
#
# The programs are left in target/size/; each takes HOST [PORT [CA_FILE]] and exits 0
# when its message came back from the broker. 1 kB = 1024 bytes.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
out=$root/target/size
build=1
case ${1:-} in
--no-build) build=0 ;;
-h | --help) sed -n '2,30p' "$0"; exit 0 ;;
"") ;;
*) echo "size.sh: unknown argument $1" >&2; exit 2 ;;
esac
for cmd in cc strip size; do
    command -v $cmd >/dev/null 2>&1 || { echo "size.sh: $cmd not found" >&2; exit 1; }
done
cc=${CC:-cc}

# ---- 1. build ------------------------------------------------------------------------
if [ $build = 1 ]; then
    # the default build last: target/release/ is left as cargo's default build makes it
    for variant in notls tls; do
        flags=
        [ $variant = notls ] && flags=--no-default-features
        echo "building libmqtt ($variant): cargo rustc --release --lib --crate-type cdylib,staticlib $flags" >&2
        # shellcheck disable=SC2086
        (cd "$root" && cargo rustc --release --lib --crate-type cdylib,staticlib $flags --quiet)
        mkdir -p "$out/$variant"
        cp "$root/target/release/libmqtt.so" "$root/target/release/libmqtt.a" "$out/$variant/"
    done
fi
for variant in tls notls; do
    for f in libmqtt.so libmqtt.a; do
        [ -f "$out/$variant/$f" ] || { echo "size.sh: $out/$variant/$f missing: run without --no-build" >&2; exit 1; }
    done
done

# ---- helpers -------------------------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/mqtt-size.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

kb() { # bytes -> kB (1024), no decimals
    awk -v b="$1" 'BEGIN { printf "%.0f", b / 1024 }'
}
stripped_size() { # FILE -> size in bytes of a stripped copy
    strip -o "$tmp/stripped" "$1" && wc -c < "$tmp/stripped" | tr -d ' '
}
find_lib() { # SONAME... -> the real file behind the first one ldconfig knows, or nothing
    for name in "$@"; do
        path=$(ldconfig -p 2>/dev/null | awk -v n="$name" '$1 == n { print $NF; exit }')
        if [ -n "$path" ] && [ -e "$path" ]; then
            readlink -f "$path"
            return
        fi
    done
}
find_static() { # NAME.a -> path in the usual library directories, or nothing
    multiarch=$($cc -print-multiarch 2>/dev/null || true)
    for dir in ${multiarch:+/usr/lib/$multiarch /usr/local/lib/$multiarch} /usr/local/lib /usr/lib /usr/lib64; do
        if [ -f "$dir/$1" ]; then
            echo "$dir/$1"
            return
        fi
    done
}
text_size() { # EXECUTABLE -> the text column of size(1) (Berkeley format)
    size "$1" | awk 'NR == 2 { print $1 }'
}

# ---- 2. shared libraries -------------------------------------------------------------
mqtt_tls=$(stripped_size "$out/tls/libmqtt.so")
mqtt_notls=$(stripped_size "$out/notls/libmqtt.so")
echo
echo "### Shared library, stripped"
echo
echo "| library | file | stripped, kB |"
echo "|---|---|---:|"
echo "| libmqtt with TLS (rustls + ring inside) | libmqtt.so | $(kb "$mqtt_tls") |"
echo "| libmqtt without TLS (\`--no-default-features\`) | libmqtt.so | $(kb "$mqtt_notls") |"
shared_row() { # LABEL SONAME...; prints the row, sets $bytes (0 when missing)
    label=$1
    shift
    file=$(find_lib "$@")
    if [ -z "$file" ]; then
        echo "| $label | $1 not found | - |"
        bytes=0
        return
    fi
    bytes=$(stripped_size "$file")
    echo "| $label | $(basename "$file") | $(kb "$bytes") |"
}
shared_row "libmosquitto (TLS through OpenSSL)" libmosquitto.so.1
mosq=$bytes
shared_row "Paho C MQTTAsync, no TLS" libpaho-mqtt3a.so.1
shared_row "Paho C MQTTAsync with TLS (through OpenSSL)" libpaho-mqtt3as.so.1
paho_s=$bytes
shared_row "OpenSSL libssl" libssl.so.3 libssl.so.1.1
ssl=$bytes
shared_row "OpenSSL libcrypto" libcrypto.so.3 libcrypto.so.1.1
crypto=$bytes
if [ "$mosq" -gt 0 ] && [ "$ssl" -gt 0 ] && [ "$crypto" -gt 0 ]; then
    echo "| libmosquitto + libssl + libcrypto | (TLS, all loaded) | $(kb $((mosq + ssl + crypto))) |"
fi
if [ "$paho_s" -gt 0 ] && [ "$ssl" -gt 0 ] && [ "$crypto" -gt 0 ]; then
    echo "| Paho MQTTAsync (TLS) + libssl + libcrypto | (TLS, all loaded) | $(kb $((paho_s + ssl + crypto))) |"
fi

# ---- 3. statically linked hello client -----------------------------------------------
# The system libraries a Rust staticlib needs (Linux), as CMakeLists.txt lists them.
rust_libs=$(sed -n 's/^ *set(MQTT_STATIC_LINK_LIBRARIES \([a-z_ ]*\))$/\1/p' "$root/CMakeLists.txt" | tail -n 1)
[ -n "$rust_libs" ] || { echo "size.sh: MQTT_STATIC_LINK_LIBRARIES not found in CMakeLists.txt" >&2; exit 1; }
rust_flags=$(for l in $rust_libs; do printf ' -l%s' "$l"; done)
CFLAGS="-O2 -ffunction-sections -fdata-sections"
LDFLAGS="-Wl,--gc-sections"

# hello NAME SOURCE "LINK ARGS" [CFLAGS...]: builds NAME and NAME-baseline, prints
# "<text of NAME> <text of baseline> <stripped NAME> <stripped baseline>"
hello() {
    name=$1 src=$2 link=$3
    shift 3
    # shellcheck disable=SC2086
    $cc $CFLAGS "$@" -I "$root/include" -o "$out/$name" "$src" $LDFLAGS $link
    # shellcheck disable=SC2086
    $cc $CFLAGS "$@" -DSIZE_HELLO_BASELINE -I "$root/include" -o "$out/$name-baseline" "$src" \
        $LDFLAGS $link
    echo "$(text_size "$out/$name") $(text_size "$out/$name-baseline")" \
        "$(stripped_size "$out/$name") $(stripped_size "$out/$name-baseline")"
}
static_row() { # LABEL "STATIC LIBS" TEXT BASE STRIPPED STRIPPED_BASE
    echo "| $1 | $2 | $(kb $(($3 - $4))) | $(kb $(($5 - $6))) |"
}
echo
echo "### Statically linked hello client: what the library adds"
echo
echo "\`bench/size_hello.c\` (create, connect, subscribe, publish, disconnect, free) minus"
echo "the same program with the library calls stubbed out; \`$cc $CFLAGS $LDFLAGS\`."
echo
echo "| client | linked statically | text added, kB | stripped executable added, kB |"
echo "|---|---|---:|---:|"
# shellcheck disable=SC2086
set -- $(hello size_hello_notls "$here/size_hello.c" "$out/notls/libmqtt.a $rust_flags")
static_row "libmqtt without TLS" "libmqtt.a$rust_flags" "$@"
# shellcheck disable=SC2086
set -- $(hello size_hello_tls "$here/size_hello.c" "$out/tls/libmqtt.a $rust_flags" -DSIZE_HELLO_TLS)
static_row "libmqtt with TLS (rustls + ring)" "libmqtt.a$rust_flags" "$@"

paho_a=$(find_static libpaho-mqtt3c.a)
paho_as=$(find_static libpaho-mqtt3cs.a)
if [ -n "$paho_a" ]; then
    # shellcheck disable=SC2046
    set -- $(hello size_hello_paho "$here/size_hello_paho.c" "$paho_a -lpthread")
    static_row "Paho C MQTTClient, no TLS" "$(basename "$paho_a") -lpthread" "$@"
else
    echo "| Paho C MQTTClient, no TLS | no static libpaho-mqtt3c.a found | - | - |"
fi
if [ -n "$paho_as" ]; then
    # shellcheck disable=SC2046
    set -- $(hello size_hello_paho_tls "$here/size_hello_paho.c" "$paho_as -lssl -lcrypto -lpthread" -DSIZE_HELLO_TLS)
    static_row "Paho C MQTTClient with TLS (OpenSSL shared, not counted)" \
        "$(basename "$paho_as") -lssl -lcrypto -lpthread" "$@"
else
    echo "| Paho C MQTTClient with TLS | no static libpaho-mqtt3cs.a found | - | - |"
fi
mosq_a=$(find_static libmosquitto.a)
if [ -n "$mosq_a" ]; then
    # shellcheck disable=SC2046
    set -- $(hello size_hello_mosquitto "$here/size_hello_mosquitto.c" "$mosq_a -lssl -lcrypto -lpthread")
    static_row "libmosquitto (OpenSSL shared, not counted)" "$(basename "$mosq_a") -lssl -lcrypto -lpthread" "$@"
else
    echo "| libmosquitto | no static libmosquitto.a on this system (Debian ships only the shared library) | - | - |"
fi
echo
echo "(1 kB = 1024 bytes; programs in target/size/, each runs as: PROGRAM HOST [PORT [CA_FILE]])"

#!/bin/sh
# Consume libmqtt the three documented ways and run the result:
#   1. build + install libmqtt into a prefix (cmake --install), check the installed files;
#   2. MQTT_VIA=package: find_package(mqtt) with CMAKE_PREFIX_PATH=<prefix>;
#   3. MQTT_VIA=subdir:  add_subdirectory(../..);
#   4. pkg-config:       cc main.c $(pkg-config --cflags --libs mqtt), shared and static;
#   5. plain cargo, as the README says: cargo rustc --release --lib --crate-type
#      cdylib,staticlib, then cc main.c -I include -L target/release -lmqtt -Wl,-rpath,...,
#      with no symlink by hand.
# Each consumer is built against both mqtt::mqtt and mqtt::mqtt_static.
#
# Usage: tests/cmake_consumer/run.sh [WORKDIR]   (default: a fresh temp dir, removed after;
#        a given WORKDIR is kept and reused, so a second run only rebuilds what changed)
# Needs cmake, a C compiler, cargo, pkg-config. Builds libmqtt twice (release): minutes.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
if [ $# -ge 1 ]; then
    work=$1
    mkdir -p "$work"
    cleanup=false
else
    work=$(mktemp -d)
    cleanup=true
fi
work=$(cd "$work" && pwd)
prefix=$work/prefix
cc=${CC:-cc}
jobs=${JOBS:-4}

step() { printf '\n=== %s\n' "$*"; }
fail() { echo "cmake_consumer: FAILED: $*" >&2; exit 1; }

step "1. build and install libmqtt into $prefix"
rm -rf "$prefix" # build dirs are reused: cargo and cmake rebuild what changed
cmake -S "$root" -B "$work/lib-build" -DCMAKE_BUILD_TYPE=Release \
    -DMQTT_INSTALL=ON -DMQTT_BUILD_EXAMPLES=OFF -DMQTT_BUILD_TESTS=OFF
cmake --build "$work/lib-build" -j "$jobs"
cmake --install "$work/lib-build" --prefix "$prefix"
libdir=$prefix/lib
for f in include/mqtt.h lib/libmqtt.so lib/libmqtt.a lib/cmake/mqtt/mqttConfig.cmake \
    lib/cmake/mqtt/mqttConfigVersion.cmake lib/pkgconfig/mqtt.pc; do
    [ -f "$prefix/$f" ] || fail "not installed: $f"
done
cmp -s "$root/include/mqtt.h" "$prefix/include/mqtt.h" || fail "installed mqtt.h differs"
# Linux: libmqtt.so -> libmqtt.so.0 -> libmqtt.so.0.X.Y (the file, soname libmqtt.so.0)
if [ "$(uname -s)" = Linux ]; then
    [ -L "$libdir/libmqtt.so" ] && [ "$(readlink "$libdir/libmqtt.so")" = libmqtt.so.0 ] ||
        fail "lib/libmqtt.so is not a symlink to libmqtt.so.0"
    real=$(readlink "$libdir/libmqtt.so.0") || fail "lib/libmqtt.so.0 is not a symlink"
    case $real in
    libmqtt.so.0.*.*) [ -f "$libdir/$real" ] && [ ! -L "$libdir/$real" ] ||
        fail "lib/$real is not a regular file" ;;
    *) fail "lib/libmqtt.so.0 points to $real" ;;
    esac
    if command -v readelf >/dev/null 2>&1; then
        readelf -d "$libdir/$real" | grep -q 'SONAME.*\[libmqtt\.so\.0\]' ||
            fail "installed library lacks SONAME libmqtt.so.0"
    fi
fi

run_consumer() { # build dir
    "$1/consumer" || fail "$1/consumer"
    "$1/consumer_static" || fail "$1/consumer_static"
    if command -v readelf >/dev/null 2>&1; then
        readelf -d "$1/consumer" | grep -q 'NEEDED.*\[libmqtt\.so\.0\]' ||
            fail "consumer does not load libmqtt.so.0 by its soname"
        if readelf -d "$1/consumer_static" | grep -q 'NEEDED.*libmqtt'; then
            fail "consumer_static depends on libmqtt.so"
        fi
    fi
}

step "2. find_package(mqtt) from the installed prefix"
cmake -S "$here" -B "$work/package" -DMQTT_VIA=package -DCMAKE_PREFIX_PATH="$prefix"
cmake --build "$work/package" -j "$jobs"
run_consumer "$work/package"
# the version file refuses an incompatible request
mkdir -p "$work/version-check"
cat >"$work/version-check/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.16)
project(version_check NONE)
find_package(mqtt 99.0 REQUIRED)
CMAKE
if cmake -S "$work/version-check" -B "$work/version-check/build" \
    -DCMAKE_PREFIX_PATH="$prefix" >/dev/null 2>&1; then
    fail "find_package(mqtt 99.0) succeeded"
fi

step "3. add_subdirectory(../..)"
cmake -S "$here" -B "$work/subdir" -DMQTT_VIA=subdir -DCMAKE_BUILD_TYPE=Release
cmake --build "$work/subdir" -j "$jobs"
run_consumer "$work/subdir"

step "4. pkg-config"
export PKG_CONFIG_PATH="$libdir/pkgconfig"
pkg-config --exists mqtt || fail "pkg-config does not find mqtt"
echo "mqtt $(pkg-config --modversion mqtt): $(pkg-config --cflags --libs mqtt)"
# shellcheck disable=SC2046
$cc -std=c99 -Wall -Wextra -pedantic -Werror -o "$work/pc_shared" "$here/main.c" \
    $(pkg-config --cflags --libs mqtt)
LD_LIBRARY_PATH="$(pkg-config --variable=libdir mqtt)" "$work/pc_shared" || fail "pkg-config shared"
# static: the archive itself, then the private libraries pkg-config lists
static_libs=$(pkg-config --static --libs-only-l mqtt | sed 's/-lmqtt\b//')
# shellcheck disable=SC2046,SC2086
$cc -std=c99 -Wall -Wextra -pedantic -Werror -o "$work/pc_static" "$here/main.c" \
    $(pkg-config --cflags mqtt) "$(pkg-config --variable=libdir mqtt)/libmqtt.a" $static_libs
"$work/pc_static" || fail "pkg-config static"

step "5. plain cargo: cargo rustc --release --lib --crate-type cdylib,staticlib, cc -L <target>/release -lmqtt"
# The target dir CMake's build used in step 1: the same cargo command, so this is
# quick, and CMake itself creates no symlink there (build.rs does).
cargo_target=$work/lib-build/cargo
(cd "$root" && cargo rustc --release --lib --crate-type cdylib,staticlib --target-dir "$cargo_target")
$cc -std=c99 -Wall -Wextra -pedantic -Werror -o "$work/plain_cargo" "$here/main.c" \
    -I "$root/include" -L "$cargo_target/release" -lmqtt -Wl,-rpath,"$cargo_target/release"
if [ "$(uname -s)" = Linux ]; then
    [ "$(readlink "$cargo_target/release/libmqtt.so.0")" = libmqtt.so ] ||
        fail "cargo laid out no libmqtt.so.0 -> libmqtt.so"
fi
env -u LD_LIBRARY_PATH "$work/plain_cargo" || fail "a program linked per the README does not start"

step "all consumers OK"
if $cleanup; then rm -rf "$work"; fi

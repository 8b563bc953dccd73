# Sourced by demo.sh, test.sh and bench/many.sh: installs the Debian packages a command needs
# when they are missing, saying which and why, so each README command works on a
# fresh machine on its own.
#
#   need_packages WHY COMMAND:PACKAGE ...
#
# COMMAND is looked up on PATH and in the sbin directories, or is an absolute
# path to a file the package installs (e.g. a header); (mosquitto lives in
# /usr/sbin, outside a normal user's PATH). As root the packages are installed with
# apt-get; otherwise with `sudo -n` when that works without a password; otherwise
# the function stops with the apt-get line to run. MQTT_NO_INSTALL=1 never installs.

have_command() {
    # An absolute path names a file (a header, say) rather than a command.
    case $1 in /*) [ -e "$1" ]; return ;; esac
    command -v "$1" >/dev/null 2>&1 && return 0
    local dir
    for dir in /usr/sbin /usr/local/sbin /sbin; do
        [ -x "$dir/$1" ] && return 0
    done
    return 1
}

need_packages() {
    local why=$1 pair missing=()
    shift
    for pair in "$@"; do
        have_command "${pair%%:*}" || missing+=("${pair#*:}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0

    local sudo=()
    local hint="apt-get install -y ${missing[*]}"
    if [ -n "${MQTT_NO_INSTALL:-}" ] && [ "${MQTT_NO_INSTALL}" != 0 ]; then
        echo "missing ${missing[*]} ($why); MQTT_NO_INSTALL is set: install them with: $hint" >&2
        return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "missing ${missing[*]} ($why) and no apt-get here: install them with your package manager" >&2
        return 1
    fi
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            echo "missing ${missing[*]} ($why); not root and no password-less sudo: run: sudo $hint" >&2
            return 1
        fi
    fi
    printf '==> installing %s (%s)\n' "${missing[*]}" "$why"
    # apt-get must not ask anything, and the lists of a fresh machine are empty
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq &&
        "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || {
        echo "installing ${missing[*]} failed: run: $hint" >&2
        return 1
    }
}

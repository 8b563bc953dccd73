# Sourced by the bench scripts (POSIX sh).
# wait_ready FILE PID [SECONDS]: until a line of FILE starts with "ready".
# Returns 1 if PID exits first or SECONDS (default 10) pass, so the caller
# decides whether that is fatal; a run that goes on anyway fails its own check.
wait_ready() {
    _wr_tries=$(( ${3:-10} * 100 ))
    while ! grep -qs '^ready' "$1"; do
        # it may have written the line just before it exited
        kill -0 "$2" 2>/dev/null || { grep -qs '^ready' "$1"; return; }
        _wr_tries=$((_wr_tries - 1))
        [ $_wr_tries -gt 0 ] || return 1
        sleep 0.01
    done
}

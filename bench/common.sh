# Shared by run.sh, ingest.sh and search.sh (sourced, not run): building, a temporary work directory
# that is removed on exit with every server started in it, starting servers that print their URL,
# and the rows every report starts with. Expects ROOT, TARGET_DIR and log() to be set by the
# sourcing script.

die() { log "error: $*"; exit 1; }

# build_release BINARY...: builds the release binaries (unless BENCH_SKIP_BUILD=1) and checks they exist.
build_release() {
    if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
        log "building release binaries (CARGO_TARGET_DIR=$TARGET_DIR)"
        (cd "$ROOT" && CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -p fhirside -p fhirside-bench)
    fi
    local bin
    for bin in "$@"; do [ -x "$TARGET_DIR/release/$bin" ] || die "missing $TARGET_DIR/release/$bin"; done
}

# make_workdir NAME: a temporary directory in $WORK; servers in $PIDS are stopped and it is removed on exit.
make_workdir() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    PIDS=()
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}

SERVER_PID=""
SERVER_URL=""
# start_server LOG COMMAND...: runs it in the background, waits for its "FHIR base URL:" line.
start_server() {
    local logfile=$1; shift
    "$@" >"$logfile" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    SERVER_URL=""
    local _
    for _ in $(seq 1 300); do
        SERVER_URL=$(sed -n 's/^FHIR base URL: //p' "$logfile")
        [ -n "$SERVER_URL" ] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$logfile" >&2; die "server exited: $*"; }
        sleep 0.1
    done
    die "server did not print its URL within 30 s: $*"
}
stop_server() { # stop_server PID
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# report_header_rows LOAD_START: the report's first table rows (date, commit, CPU, load average since
# LOAD_START, kernel). Capture them before redirecting into the report: `git status` would otherwise
# see a tracked report half rewritten and call the tree modified.
report_header_rows() {
    local commit cpu
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]; then commit="$commit (+ uncommitted changes)"; fi
    cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
    echo "| Date | $(date -u '+%Y-%m-%d %H:%M UTC') |"
    echo "| Git commit | $commit |"
    echo "| CPU | $cpu, \`nproc\` = $(nproc) |"
    echo "| Load average (1/5/15 min) | $1 at start, $(cut -d' ' -f1-3 /proc/loadavg) at end |"
    echo "| Kernel | $(uname -sr) |"
}

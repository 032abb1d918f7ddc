# Shared by run.sh, ingest.sh, search.sh and bulk.sh (sourced, not run): building, a temporary work directory
# that is removed on exit with every server started in it, starting servers that print their URL,
# PostgreSQL schemas made for a run (dropped on exit too), and the rows every report starts with.
# Expects ROOT, TARGET_DIR and log() to be set by the sourcing script.

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
    PG_SCHEMAS=()
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
    # After the servers: a schema in use would make DROP SCHEMA wait for their transactions.
    local entry
    for entry in "${PG_SCHEMAS[@]}"; do
        if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept PostgreSQL schema ${entry#* }"; else pg_drop_schema ${entry} || true; fi
    done
    if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}

SERVER_PID=""
SERVER_URL=""
# start_server LOG COMMAND...: runs it in the background, waits for its "FHIR base URL:" line.
start_server() {
    local logfile=$1; shift
    # Created here: the background job's redirection may happen after the first look at it.
    : >"$logfile"
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

# --- PostgreSQL --------------------------------------------------------------------------------
# A run on PostgreSQL gets a fresh schema of its own in the database it is given, so that it
# never mixes with other data there and can be dropped whole afterwards. The servers reach it
# through the URL's `options=-csearch_path=…` (the base URL must not carry `options` itself), and
# identify themselves as PG_APPLICATION, which tells their backends from other clients' (see
# pg_cpu_s).
PG_APPLICATION=fhirside-bench

# pg_psql BASE-URL ARGS...: psql on the database, stopping at the first error, quiet (without the
# NOTICEs of DROP SCHEMA … CASCADE listing every table).
pg_psql() {
    local base=$1; shift
    PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning" psql "$base" -X -q -v ON_ERROR_STOP=1 "$@"
}

# pg_fresh_schema BASE-URL SCHEMA: drops and creates SCHEMA; it is dropped again on exit (unless
# BENCH_KEEP=1), even if the run fails.
pg_fresh_schema() {
    pg_psql "$1" -c "DROP SCHEMA IF EXISTS $2 CASCADE" -c "CREATE SCHEMA $2" \
        || die "cannot create schema $2 in $1 (is PostgreSQL running?)"
    PG_SCHEMAS+=("$1 $2")
}
pg_drop_schema() { # pg_drop_schema BASE-URL SCHEMA
    pg_psql "$1" -c "DROP SCHEMA IF EXISTS $2 CASCADE" || log "could not drop schema $2"
}
# pg_done_schema BASE-URL SCHEMA: a run is finished with SCHEMA: drops it now (unless BENCH_KEEP=1)
# rather than on exit, so that a script with several rows holds one loaded schema at a time.
pg_done_schema() {
    [ "${BENCH_KEEP:-0}" = 1 ] && return 0
    pg_drop_schema "$1" "$2"
    local kept=() entry
    for entry in "${PG_SCHEMAS[@]}"; do [ "$entry" = "$1 $2" ] || kept+=("$entry"); done
    PG_SCHEMAS=("${kept[@]}")
}

# pg_schema_url BASE-URL SCHEMA: the URL a server uses to store in SCHEMA.
pg_schema_url() {
    local sep='?'
    case $1 in *\?*) sep='&' ;; esac
    printf '%s%soptions=-csearch_path%%3D%s&application_name=%s' "$1" "$sep" "$2" "$PG_APPLICATION"
}

# pg_schema_mb BASE-URL SCHEMA: the size of SCHEMA's tables with their indexes and TOAST, in MB
# (the WAL is the cluster's, not the schema's, and is not counted).
pg_schema_mb() {
    pg_psql "$1" -At -c "SELECT round(coalesce(sum(pg_total_relation_size(c.oid)), 0) / 1048576.0)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = '$2' AND c.relkind IN ('r', 'm')"
}

# pg_server_desc BASE-URL: version and the settings that decide write cost, for the report.
pg_server_desc() {
    pg_psql "$1" -At -F ', ' -c "SELECT split_part(version(), ' on ', 1),
        'shared_buffers ' || current_setting('shared_buffers'),
        'synchronous_commit ' || current_setting('synchronous_commit'),
        'fsync ' || current_setting('fsync'),
        'max_wal_size ' || current_setting('max_wal_size')"
}

# pg_cpu_snapshot: "PID TICKS" (utime + stime, in clock ticks) of every local process whose comm is
# `postgres`: the postmaster, its background processes and one backend per client connection.
# Prints nothing when PostgreSQL does not run on this machine.
pg_cpu_snapshot() {
    local pid
    for pid in $(pgrep -x postgres); do
        awk -v pid="$pid" '{ sub(/^.*\) /, ""); print pid, $12 + $13 }' "/proc/$pid/stat" 2>/dev/null || true
    done
}

# pg_foreign_backends BASE-URL: the pids of client backends that are not PG_APPLICATION's (other
# clients of the same PostgreSQL, such as a test suite), to leave out of pg_cpu_s.
pg_foreign_backends() {
    pg_psql "$1" -At -c "SELECT pid FROM pg_stat_activity
        WHERE backend_type = 'client backend' AND application_name IS DISTINCT FROM '$PG_APPLICATION'" | tr '\n' ' '
}

# pg_cpu_s BEFORE-FILE AFTER-FILE [EXCLUDED-PIDS]: the CPU seconds PostgreSQL spent between two
# snapshots, approximately: the sum over the processes alive at the second snapshot of their ticks
# minus those at the first (from zero for a process that is new since, or whose pid was reused).
# A process that ended in between is lost, with all its CPU time; the server's connection pool
# keeps its backends open, so in practice that is only short-lived ones (autovacuum workers,
# other clients). Background processes (WAL writer, checkpointer, autovacuum) are counted whoever
# they work for. "n/a" when there is no local PostgreSQL.
pg_cpu_s() {
    [ -s "$1" ] || { echo n/a; return; }
    awk -v hz="$CLK_TCK" -v skip=" ${3:-} " '
        FILENAME == ARGV[1] { before[$1] = $2; next }
        index(skip, " " $1 " ") == 0 { b = ($1 in before && before[$1] <= $2) ? before[$1] : 0; s += $2 - b }
        END { printf "%.1f", s / hz }' "$1" "$2"
}
CLK_TCK=$(getconf CLK_TCK)

# --- measurements shared by ingest.sh and bulk.sh ----------------------------------------------
cpu_s() { # user + system CPU seconds of a process (all its threads), or of one thread (/proc/PID/task/TID)
    awk -v hz="$CLK_TCK" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "${2:-/proc/$1}/stat"
}
sub_s() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a - b }'; }
busy() { # busy CPU-SECONDS WALL-SECONDS: cores kept busy
    awk -v c="$1" -v w="$2" 'BEGIN { printf "%.2f", c / w }'
}
store_label() { # store_label STORE REPLICAS
    if [ "$1" = embedded ]; then echo embedded; elif [ "$2" = 1 ]; then echo PostgreSQL; else echo "PostgreSQL × $2"; fi
}

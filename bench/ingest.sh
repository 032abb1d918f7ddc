#!/usr/bin/env bash
# Synthea-120 ingest benchmark: `POST /` of 122 bundles (92,114 resources). Not part of the test
# suite: run it by hand.
#
#   bench/ingest.sh                     # 1 and 4 concurrent clients, about 2 minutes
#   INGEST_CLIENTS="1 2 4 8" bench/ingest.sh
#
# Builds release binaries, then for each client count starts a fresh `fhirside serve` (embedded
# SQLite, plain HTTP, --auth none) on a free loopback port with an empty temporary data directory,
# runs the `ingest` load client against it, records the server's RSS, CPU time and database size,
# and stops it. Writes bench/results/ingest.md (also printed). See bench/README.md.
#
# Environment (all optional):
#   INGEST_CLIENTS="1 4"         concurrent client connections, one fresh server per value
#   INGEST_DATASET=DIR           the dataset (default ../shared/datasets/synthea-120 beside the repository)
#   INGEST_PERF=N                also `perf record -g` the server during the N-client run; the report
#                                goes next to the results (ingest-perf-cN.txt), perf.data to the temp dir
#   INGEST_OUT=path.md           where to write the table (default bench/results/ingest.md)
#   BENCH_SKIP_BUILD=1           use the binaries already in $CARGO_TARGET_DIR/release
#   BENCH_KEEP=1                 keep the temporary directory (data dirs, logs, perf data)
#   CARGO_TARGET_DIR             cargo's target directory (default <repo>/target)
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLIENTS=${INGEST_CLIENTS:-"1 4"}
DATASET=${INGEST_DATASET:-$ROOT/../shared/datasets/synthea-120}
PERF_AT=${INGEST_PERF:-}
OUT=${INGEST_OUT:-$ROOT/bench/results/ingest.md}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release
TARGET_RPS=5000
SERVER_ARGS=(--http --auth none --listen 127.0.0.1:0 --max-bundle-entries 10000 --max-body-bytes 67108864)

log() { printf '[ingest] %s\n' "$*" >&2; }
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"

command -v bzcat >/dev/null || die "bzcat is required (Debian package bzip2)"
[ -d "$DATASET" ] || die "no dataset at $DATASET"
if [ -n "$PERF_AT" ]; then command -v perf >/dev/null || die "INGEST_PERF needs perf"; fi

build_release fhirside ingest
make_workdir fhirside-ingest
rss_mb() { # VmRSS | anon | file | shmem, in MB
    awk '/^(VmRSS|RssAnon|RssFile|RssShmem):/ { v[$1] = $2 / 1024 }
         END { printf "%.0f | %.0f | %.0f | %.0f", v["VmRSS:"], v["RssAnon:"], v["RssFile:"], v["RssShmem:"] }' "/proc/$1/status"
}
hwm_mb() { awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
CLK_TCK=$(getconf CLK_TCK)
cpu_s() { # user + system CPU seconds of a process (all its threads), or of one thread (/proc/PID/task/TID)
    awk -v hz="$CLK_TCK" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "${2:-/proc/$1}/stat"
}
writer_cpu_s() { # CPU seconds of the store's writer thread (named store-writer), or 0
    local t
    for t in /proc/"$1"/task/*; do
        if grep -qx 'store-writer' "$t/comm" 2>/dev/null; then cpu_s "$1" "$t"; return; fi
    done
    echo 0
}
size_mb() { # total size of the given files (missing ones count 0), in MB
    local total=0 f
    for f in "$@"; do [ -e "$f" ] && total=$((total + $(stat -c %s "$f"))); done
    awk -v b="$total" 'BEGIN { printf "%.0f", b / 1048576 }'
}
field() { # field NAME RESULT-LINE
    printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"
}

declare -A ROW MEM RPS_OF IDLE_OF
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
for c in $CLIENTS; do
    DATA=$WORK/data-c$c
    log "$c client(s): starting fhirside on an empty data directory"
    start_server "$WORK/fhirside-c$c.log" "$BIN/fhirside" serve "${SERVER_ARGS[@]}" --data-dir "$DATA"
    PID=$SERVER_PID
    sleep 1
    RSS_IDLE=$(rss_mb "$PID")
    PERF_PID=""
    if [ "$PERF_AT" = "$c" ]; then
        # Starts before ingest's decompression (a few seconds of an idle server); the report is
        # dominated by the load.
        # DWARF unwinding: the release build has no frame pointers, but keeps line tables.
        perf record -F 199 --call-graph dwarf,32768 -p "$PID" -o "$WORK/perf-c$c.data" >"$WORK/perf-c$c.log" 2>&1 &
        PERF_PID=$!
        PIDS+=("$PERF_PID")
    fi
    # ingest decompresses the dataset before it starts the clock; the server is idle meanwhile, so
    # its CPU time during that phase is (close to) nothing.
    CPU_BEFORE=$(cpu_s "$PID")
    WRITER_BEFORE=$(writer_cpu_s "$PID")
    "$BIN/ingest" --url "$SERVER_URL" --dataset "$DATASET" --clients "$c" >"$WORK/ingest-c$c.out" 2>"$WORK/ingest-c$c.err" \
        || { cat "$WORK/ingest-c$c.err" >&2; die "ingest failed at $c client(s) (server log: $WORK/fhirside-c$c.log)"; }
    CPU_AFTER=$(cpu_s "$PID")
    WRITER_AFTER=$(writer_cpu_s "$PID")
    if [ -n "$PERF_PID" ]; then
        kill -INT "$PERF_PID" 2>/dev/null || true
        wait "$PERF_PID" 2>/dev/null || true
    fi
    cat "$WORK/ingest-c$c.err" >&2
    RESULT=$(grep '^RESULT ' "$WORK/ingest-c$c.out") || die "no RESULT line from ingest"
    RSS_AFTER=$(rss_mb "$PID")
    HWM=$(hwm_mb "$PID")
    DB_LOADED=$(size_mb "$DATA/fhirside.db")
    WAL_LOADED=$(size_mb "$DATA/fhirside.db-wal")
    stop_server "$PID"
    DISK_STOPPED=$(du -sm "$DATA" | cut -f1)
    WALL=$(field wall_s "$RESULT")
    SERVER_CPU=$(awk -v a="$CPU_AFTER" -v b="$CPU_BEFORE" 'BEGIN { printf "%.1f", a - b }')
    CORES=$(awk -v c="$SERVER_CPU" -v w="$WALL" 'BEGIN { printf "%.2f", c / w }')
    WRITER_CPU=$(awk -v a="$WRITER_AFTER" -v b="$WRITER_BEFORE" 'BEGIN { printf "%.1f", a - b }')
    WRITER_BUSY=$(awk -v c="$WRITER_CPU" -v w="$WALL" 'BEGIN { printf "%.0f %%", 100 * c / w }')
    RPS_OF[$c]=$(field resources_per_s "$RESULT")
    IDLE_OF[$c]=${RSS_IDLE%% *}
    ROW[$c]="| $c | $(field resources "$RESULT") | $(printf '%.1f' "$WALL") | **${RPS_OF[$c]}** \
| $(field patients_resources_per_s "$RESULT") \
| $(printf '%.2f / %.2f' "$(field bundle_p50_s "$RESULT")" "$(field bundle_max_s "$RESULT")") | $SERVER_CPU ($CORES) | $WRITER_CPU ($WRITER_BUSY) |"
    MEM[$c]="| $c | $RSS_AFTER | $HWM | $DB_LOADED + $WAL_LOADED | $DISK_STOPPED |"
    log "$c client(s): $(field resources_per_s "$RESULT") resources/s; server CPU $SERVER_CPU s (writer thread $WRITER_CPU s); RSS after load ${RSS_AFTER%% *} MB; database $DB_LOADED MB + WAL $WAL_LOADED MB"
    if [ -n "$PERF_PID" ]; then
        PERF_OUT=${OUT%.md}-perf-c$c.txt
        log "perf report (this takes a while)"
        {
            echo "### Samples by thread (store-writer = the store's single writer thread)"
            perf report -i "$WORK/perf-c$c.data" --stdio --no-children --sort comm -g none 2>/dev/null | grep -v '^#' | grep -v '^$'
            echo
            echo "### Inclusive time (children) by function, >= 1 %"
            perf report -i "$WORK/perf-c$c.data" --stdio --children --sort sym -g none --percent-limit 1 2>/dev/null \
                | grep -v '^#' | grep -v '^$' | cut -c1-220
            echo
            echo "### Self time by thread and function, >= 0.5 %"
            perf report -i "$WORK/perf-c$c.data" --stdio --no-children --sort comm,sym -g none --percent-limit 0.5 2>/dev/null \
                | grep -v '^#' | grep -v '^$' | cut -c1-220
        } >"$PERF_OUT" || log "perf report failed"
        log "perf report (self time): $PERF_OUT; data: $WORK/perf-c$c.data (BENCH_KEEP=1 to keep it)"
    fi
done

# --- report ------------------------------------------------------------------------------------
HEADER_ROWS=$(report_header_rows "$LOAD_START")
BEST_C=""; for c in $CLIENTS; do
    if [ -z "$BEST_C" ] || [ "${RPS_OF[$c]}" -gt "${RPS_OF[$BEST_C]}" ]; then BEST_C=$c; fi
done
mkdir -p "$(dirname "$OUT")"
{
    echo "# Fhirside ingest benchmark: Synthea-120"
    echo
    echo "| | |"
    echo "|---|---|"
    echo "$HEADER_ROWS"
    echo "| Server | \`fhirside serve ${SERVER_ARGS[*]}\`: embedded SQLite, full validation, release build, a fresh data directory per row |"
    echo "| Data | \`$(basename "$DATASET")\`: 2 batch bundles (Organizations, Practitioners; \`ifNoneExist\`) first, then 120 patient transactions (\`urn:uuid:\` and conditional references) |"
    if [ -n "$PERF_AT" ]; then echo "| Profiling | \`perf record -F 199 --call-graph dwarf\` attached to the server during the $PERF_AT-client run (a few % slower); report: \`$(basename "${OUT%.md}")-perf-c$PERF_AT.txt\` |"; fi
    echo "| Client | \`ingest\` (\`src/bin/ingest.rs\`): bundles decompressed up front, HTTP/1.1 keep-alive, \`Prefer: return=minimal\`, every entry checked 2xx |"
    echo
    echo "## Results"
    echo
    echo "| Clients | Resources | Wall time (s) | Resources/s | Patient phase resources/s | Bundle p50 / max (s) | Server CPU s (cores busy) | Writer thread CPU s (busy) |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
    for c in $CLIENTS; do echo "${ROW[$c]}"; done
    echo
    echo "Wall time covers the whole load (both phases; the batch bundles always go one at a time), from the"
    echo "first request to the last response. Server CPU is user + system time of the fhirside process during"
    echo "the load; in parentheses, divided by the wall time (how many of the $(nproc) cores it kept busy)."
    echo "Writer thread CPU is the part spent on the store's single writer thread (\`store-writer\`,"
    echo "which runs every transaction's work and commits); near 100 % busy, it is the bottleneck."
    echo "Bundle p50 / max is the response time of the patient transactions (at more than one client it"
    echo "includes waiting for the store's single writer)."
    echo
    echo "## Memory and disk"
    echo
    echo "| Clients | RSS after load (MB) | anon | file | shmem | Peak RSS (MB) | DB + WAL after load (MB) | Data dir after shutdown (MB) |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
    for c in $CLIENTS; do echo "${MEM[$c]}"; done
    echo
    echo "RSS is \`VmRSS\` of the server right after the last response (idle before the load:"
    echo "$(for c in $CLIENTS; do printf '%s MB at c=%s; ' "${IDLE_OF[$c]}" "$c"; done | sed 's/; $//')); anon = heap and stacks,"
    echo "file = pages of the binary,"
    echo "shmem = the WAL index. The data directory is measured again after a clean shutdown, which"
    echo "checkpoints the WAL into the database."
    echo
    echo "## Against the target (reported, not asserted)"
    echo
    echo "| Target | Measured | |"
    echo "|---|---|---|"
    if [ "${RPS_OF[$BEST_C]}" -ge "$TARGET_RPS" ]; then V=met; else V="**missed**"; fi
    echo "| ≥ $TARGET_RPS resources/s, full validation, embedded store | ${RPS_OF[$BEST_C]} resources/s (best, at $BEST_C clients) | $V |"
} >"$OUT"
log "wrote $OUT"
echo
cat "$OUT"

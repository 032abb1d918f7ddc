#!/usr/bin/env bash
# Synthea-120 ingest benchmark: `POST /` of 122 bundles (92,114 resources). Not part of the test
# suite: run it by hand.
#
#   bench/ingest.sh                     # 1 and 4 concurrent clients, about 2 minutes
#   INGEST_CLIENTS="1 2 4 8" bench/ingest.sh
#   INGEST_STORES="embedded postgres" INGEST_REPLICAS="1 2" bench/ingest.sh
#                                       # one table: embedded, PostgreSQL, PostgreSQL with 2 replicas
#
# Builds release binaries, then for each row — a store, a number of replicas, a client count —
# starts fresh `fhirside serve`s (plain HTTP, --auth none, an empty temporary data directory each;
# on PostgreSQL a fresh schema per row, shared by the row's replicas) on free loopback ports, runs
# the `ingest` load client against them, records the servers' RSS and CPU time, PostgreSQL's CPU
# time and the database size, and stops them. Writes bench/results/ingest.md (ingest-postgres.md
# when PostgreSQL is among the stores), also printed. See bench/README.md.
#
# Environment (all optional):
#   INGEST_CLIENTS="1 4"         concurrent client connections, one row (fresh servers) per value
#   INGEST_STORES=embedded       the stores, a row set each: `embedded` (SQLite in the data directory)
#                                and/or `postgres` (default: postgres alone when INGEST_DATABASE is set)
#   INGEST_DATABASE=postgres://… the PostgreSQL database of the postgres rows (default
#                                postgres://root@127.0.0.1:5432/test); each row gets a fresh schema
#                                fhirside_bench_ingest_c<clients>_r<replicas> in it, dropped afterwards
#   INGEST_REPLICAS="1"          servers on one schema, a row set each (postgres rows only; rows with
#                                fewer clients than replicas are skipped); client i talks to server i % R
#   INGEST_DATASET=DIR           the dataset (default ../shared/datasets/synthea-120 beside the repository)
#   INGEST_PERF=N                also `perf record -g` the (first) server during the N-client rows; the
#                                report goes next to the results (ingest-perf-cN.txt for the embedded
#                                store, ingest-perf-postgres-rR-cN.txt), perf.data to the temp dir
#   INGEST_OUT=path.md           where to write the report (default bench/results/ingest.md, or
#                                bench/results/ingest-postgres.md when a store is postgres)
#   BENCH_SKIP_BUILD=1           use the binaries already in $CARGO_TARGET_DIR/release
#   BENCH_KEEP=1                 keep the temporary directory (data dirs, logs, perf data) and the schemas
#   CARGO_TARGET_DIR             cargo's target directory (default <repo>/target)
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLIENTS=${INGEST_CLIENTS:-"1 4"}
PG_BASE=${INGEST_DATABASE:-postgres://root@127.0.0.1:5432/test}
if [ -n "${INGEST_DATABASE:-}" ]; then STORES=${INGEST_STORES:-postgres}; else STORES=${INGEST_STORES:-embedded}; fi
REPLICAS=${INGEST_REPLICAS:-1}
DATASET=${INGEST_DATASET:-$ROOT/../shared/datasets/synthea-120}
PERF_AT=${INGEST_PERF:-}
case " $STORES " in
    *" postgres "*) USES_PG=1; DEFAULT_OUT=$ROOT/bench/results/ingest-postgres.md ;;
    *) USES_PG=0; DEFAULT_OUT=$ROOT/bench/results/ingest.md ;;
esac
OUT=${INGEST_OUT:-$DEFAULT_OUT}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release
TARGET_RPS=5000
SERVER_ARGS=(--http --auth none --listen 127.0.0.1:0 --max-bundle-entries 10000 --max-body-bytes 67108864)

log() { printf '[ingest] %s\n' "$*" >&2; }
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"

for store in $STORES; do
    case $store in embedded | postgres) ;; *) die "INGEST_STORES: unknown store $store (embedded, postgres)" ;; esac
done
for r in $REPLICAS; do
    [[ $r =~ ^[1-9][0-9]*$ ]] || die "INGEST_REPLICAS: $r is not a positive integer"
    # Several servers on one embedded store cannot be: each data directory is its own database.
    if [ "$r" -gt 1 ] && [ "$USES_PG" = 0 ]; then die "INGEST_REPLICAS > 1 needs PostgreSQL (INGEST_DATABASE or INGEST_STORES=postgres)"; fi
done
command -v bzcat >/dev/null || die "bzcat is required (Debian package bzip2)"
[ -d "$DATASET" ] || die "no dataset at $DATASET"
if [ -n "$PERF_AT" ]; then command -v perf >/dev/null || die "INGEST_PERF needs perf"; fi
if [ "$USES_PG" = 1 ]; then
    command -v psql >/dev/null || die "psql is required for PostgreSQL (Debian package postgresql-client)"
    PG_DESC=$(pg_server_desc "$PG_BASE") || die "cannot connect to $PG_BASE"
fi

build_release fhirside ingest
make_workdir fhirside-ingest
rss_fields() { # VmRSS anon file shmem VmHWM, in MB
    awk '/^(VmRSS|RssAnon|RssFile|RssShmem|VmHWM):/ { v[$1] = $2 / 1024 }
         END { printf "%.0f %.0f %.0f %.0f %.0f", v["VmRSS:"], v["RssAnon:"], v["RssFile:"], v["RssShmem:"], v["VmHWM:"] }' "/proc/$1/status"
}
# rss_cells PID...: "RSS | anon | file | shmem | peak" cells; with several servers each cell lists
# every server's value ("a + b"), in the order of the URLs.
rss_cells() {
    local pid
    for pid in "$@"; do rss_fields "$pid"; echo; done \
        | awk '{ for (i = 1; i <= 5; i++) c[i] = (NR == 1 ? "" : c[i] " + ") $i }
               END { printf "%s | %s | %s | %s | %s", c[1], c[2], c[3], c[4], c[5] }'
}
cpu_sum_s() { # cpu_sum_s PID...: the sum of their CPU seconds
    local pid
    for pid in "$@"; do cpu_s "$pid"; echo; done | awk '{ s += $1 } END { printf "%.2f", s }'
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

# --- one row -----------------------------------------------------------------------------------
declare -A ROW MEM RPS_OF IDLE_OF
KEYS=()      # the rows, in order: "STORE REPLICAS CLIENTS"
SKIPPED=()
# run_row STORE REPLICAS CLIENTS: fresh server(s), the load, the measurements, a row of each table.
run_row() {
    local store=$1 r=$2 c=$3
    local key="$store $r $c" tag label schema="" db_args=() urls=() pids=() dirs=() i
    if [ "$store" = embedded ]; then tag=c$c; else tag=$store-r$r-c$c; fi
    label=$(store_label "$store" "$r")
    if [ "$store" = postgres ]; then
        schema=fhirside_bench_ingest_c${c}_r${r}
        pg_fresh_schema "$PG_BASE" "$schema"
        db_args=(--database "$(pg_schema_url "$PG_BASE" "$schema")")
    fi
    log "$label, $c client(s): starting $r fhirside$([ "$r" = 1 ] || echo s) on empty data director$([ "$r" = 1 ] && echo y || echo ies)${schema:+ and schema $schema}"
    for ((i = 1; i <= r; i++)); do
        dirs+=("$WORK/data-$tag$([ "$r" = 1 ] || echo "-$i")")
        # One at a time: the first creates the schema's tables, the others find them made.
        start_server "$WORK/fhirside-$tag-$i.log" "$BIN/fhirside" serve "${SERVER_ARGS[@]}" "${db_args[@]}" --data-dir "${dirs[-1]}"
        pids+=("$SERVER_PID")
        urls+=("$SERVER_URL")
    done
    sleep 1
    IDLE_OF[$key]=$(for i in "${pids[@]}"; do rss_fields "$i" | cut -d' ' -f1; done | paste -sd+ | sed 's/+/ + /g')
    local perf_pid="" perf_out=""
    if [ "$PERF_AT" = "$c" ]; then
        # Starts before ingest's decompression (a few seconds of an idle server); the report is
        # dominated by the load.
        # DWARF unwinding: the release build has no frame pointers, but keeps line tables.
        perf record -F 199 --call-graph dwarf,32768 -p "${pids[0]}" -o "$WORK/perf-$tag.data" >"$WORK/perf-$tag.log" 2>&1 &
        perf_pid=$!
        PIDS+=("$perf_pid")
    fi
    # ingest decompresses the dataset before it starts the clock; the servers (and PostgreSQL) are
    # idle meanwhile, so their CPU time during that phase is (close to) nothing.
    local cpu_before writer_before pg_skip=""
    cpu_before=$(cpu_sum_s "${pids[@]}")
    writer_before=$(writer_cpu_s "${pids[0]}")
    if [ "$store" = postgres ]; then pg_cpu_snapshot >"$WORK/pg-cpu-$tag.before"; fi
    "$BIN/ingest" --url "$(IFS=,; echo "${urls[*]}")" --dataset "$DATASET" --clients "$c" >"$WORK/ingest-$tag.out" 2>"$WORK/ingest-$tag.err" \
        || { cat "$WORK/ingest-$tag.err" >&2; die "ingest failed: $label, $c client(s) (server logs: $WORK/fhirside-$tag-*.log)"; }
    local cpu_after writer_after
    if [ "$store" = postgres ]; then
        # Other clients' backends first, so that the snapshot does not count the psql's own.
        pg_skip=$(pg_foreign_backends "$PG_BASE") || pg_skip=""
        pg_cpu_snapshot >"$WORK/pg-cpu-$tag.after"
    fi
    cpu_after=$(cpu_sum_s "${pids[@]}")
    writer_after=$(writer_cpu_s "${pids[0]}")
    if [ -n "$perf_pid" ]; then
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
    fi
    cat "$WORK/ingest-$tag.err" >&2
    local result rss db_cell schema_mb="n/a"
    result=$(grep '^RESULT ' "$WORK/ingest-$tag.out") || die "no RESULT line from ingest"
    rss=$(rss_cells "${pids[@]}")
    if [ "$store" = embedded ]; then
        db_cell="$(size_mb "${dirs[0]}/fhirside.db") + $(size_mb "${dirs[0]}/fhirside.db-wal")"
    else
        db_cell=n/a
        schema_mb=$(pg_schema_mb "$PG_BASE" "$schema") || schema_mb="?"
    fi
    for i in "${pids[@]}"; do stop_server "$i"; done
    local disk_stopped
    disk_stopped=$(du -smc "${dirs[@]}" | tail -1 | cut -f1)
    if [ -n "$schema" ]; then pg_done_schema "$PG_BASE" "$schema"; fi

    local wall server_cpu writer_cell pg_cell total_cpu
    wall=$(field wall_s "$result")
    server_cpu=$(sub_s "$cpu_after" "$cpu_before")
    if [ "$store" = embedded ]; then
        local writer_cpu
        writer_cpu=$(sub_s "$writer_after" "$writer_before")
        writer_cell="$writer_cpu ($(awk -v c="$writer_cpu" -v w="$wall" 'BEGIN { printf "%.0f %%", 100 * c / w }'))"
        pg_cell=n/a
        total_cpu=$server_cpu
    else
        local pg_cpu
        pg_cpu=$(pg_cpu_s "$WORK/pg-cpu-$tag.before" "$WORK/pg-cpu-$tag.after" "$pg_skip")
        writer_cell=n/a
        if [ "$pg_cpu" = n/a ]; then
            pg_cell="n/a (not local)"
            total_cpu=""
        else
            pg_cell="$pg_cpu ($(busy "$pg_cpu" "$wall"))"
            total_cpu=$(awk -v a="$server_cpu" -v b="$pg_cpu" 'BEGIN { printf "%.1f", a + b }')
        fi
    fi
    local resources per_resource="n/a"
    resources=$(field resources "$result")
    if [ -n "$total_cpu" ]; then per_resource=$(awk -v t="$total_cpu" -v n="$resources" 'BEGIN { printf "%.2f", 1000 * t / n }'); fi
    RPS_OF[$key]=$(field resources_per_s "$result")
    KEYS+=("$key")
    ROW[$key]="| $label | $c | $resources | $(printf '%.1f' "$wall") | **${RPS_OF[$key]}** \
| $(field patients_resources_per_s "$result") \
| $(printf '%.2f / %.2f' "$(field bundle_p50_s "$result")" "$(field bundle_max_s "$result")") \
| $server_cpu ($(busy "$server_cpu" "$wall")) | $writer_cell | $pg_cell | $per_resource |"
    MEM[$key]="| $label | $c | $rss | $db_cell | $schema_mb | $disk_stopped |"
    if [ "$store" = embedded ]; then
        log "$label, $c client(s): ${RPS_OF[$key]} resources/s; server CPU $server_cpu s (writer thread $writer_cell); RSS after load $(echo "$rss" | cut -d'|' -f1)MB; database $db_cell MB"
    else
        log "$label, $c client(s): ${RPS_OF[$key]} resources/s; server CPU $server_cpu s; PostgreSQL CPU $pg_cell; RSS after load $(echo "$rss" | cut -d'|' -f1)MB; schema $schema_mb MB"
    fi
    if [ -n "$perf_pid" ]; then
        if [ "$store" = embedded ]; then perf_out=${OUT%.md}-perf-c$c.txt; else perf_out=${OUT%.md}-perf-$tag.txt; fi
        log "perf report (this takes a while)"
        {
            echo "### $label, $c client(s)$([ "$r" = 1 ] || echo ": the first of the $r servers")"
            echo
            echo "### Samples by thread (store-writer = the embedded store's single writer thread)"
            perf report -i "$WORK/perf-$tag.data" --stdio --no-children --sort comm -g none 2>/dev/null | grep -v '^#' | grep -v '^$'
            echo
            echo "### Inclusive time (children) by function, >= 1 %"
            perf report -i "$WORK/perf-$tag.data" --stdio --children --sort sym -g none --percent-limit 1 2>/dev/null \
                | grep -v '^#' | grep -v '^$' | cut -c1-220
            echo
            echo "### Self time by thread and function, >= 0.5 %"
            perf report -i "$WORK/perf-$tag.data" --stdio --no-children --sort comm,sym -g none --percent-limit 0.5 2>/dev/null \
                | grep -v '^#' | grep -v '^$' | cut -c1-220
        } >"$perf_out" || log "perf report failed"
        log "perf report (self time): $perf_out; data: $WORK/perf-$tag.data (BENCH_KEEP=1 to keep it)"
    fi
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
for store in $STORES; do
    if [ "$store" = embedded ]; then row_replicas=1; else row_replicas=$REPLICAS; fi
    for r in $row_replicas; do
        for c in $CLIENTS; do
            if [ "$c" -lt "$r" ]; then
                # Client i talks to server i % R: some servers would get no load at all.
                log "skipping $(store_label "$store" "$r") at $c client(s): fewer clients than replicas"
                SKIPPED+=("$(store_label "$store" "$r") at $c client(s)")
                continue
            fi
            run_row "$store" "$r" "$c"
        done
    done
done
[ ${#KEYS[@]} -gt 0 ] || die "no rows to run (INGEST_CLIENTS=$CLIENTS, INGEST_REPLICAS=$REPLICAS)"

# --- report ------------------------------------------------------------------------------------
HEADER_ROWS=$(report_header_rows "$LOAD_START")
HAS_EMBEDDED=0; HAS_PG=0; HAS_REPLICAS=0; BEST=""
for key in "${KEYS[@]}"; do
    read -r store r c <<<"$key"
    if [ "$store" = embedded ]; then
        HAS_EMBEDDED=1
        if [ -z "$BEST" ] || [ "${RPS_OF[$key]}" -gt "${RPS_OF[$BEST]}" ]; then BEST=$key; fi
    else
        HAS_PG=1
        [ "$r" -gt 1 ] && HAS_REPLICAS=1
    fi
done
case $HAS_EMBEDDED$HAS_PG in
    10) TITLE_STORE="embedded store" ;;
    01) TITLE_STORE="PostgreSQL" ;;
    *) TITLE_STORE="embedded store and PostgreSQL" ;;
esac
[ "$HAS_REPLICAS" = 1 ] && TITLE_STORE="$TITLE_STORE, with replicas"
mkdir -p "$(dirname "$OUT")"
{
    echo "# Fhirside ingest benchmark: Synthea-120 ($TITLE_STORE)"
    echo
    echo "| | |"
    echo "|---|---|"
    echo "$HEADER_ROWS"
    if [ "$HAS_EMBEDDED" = 1 ]; then
        echo "| Server (embedded) | \`fhirside serve ${SERVER_ARGS[*]}\`: embedded SQLite, full validation, release build, a fresh data directory per row |"
    fi
    if [ "$HAS_PG" = 1 ]; then
        echo "| Server (PostgreSQL) | \`fhirside serve ${SERVER_ARGS[*]} --database …\`: PostgreSQL, full validation, release build, a fresh data directory per server and a fresh schema per row; **PostgreSQL × R** = R servers (replicas) on the row's schema, client connection i on server i % R |"
        echo "| PostgreSQL | $PG_DESC; on this machine, sharing its cores with the servers and the client |"
    fi
    N_FIRST=$(find -L "$DATASET" -maxdepth 1 -name '0-*.json.bz2' | wc -l)
    N_PATIENTS=$(( $(find -L "$DATASET" -maxdepth 1 -name '*.json.bz2' | wc -l) - N_FIRST ))
    echo "| Data | \`$(basename "$DATASET")\`: $N_FIRST batch bundles (Organizations, Practitioners; \`ifNoneExist\`) first, then $N_PATIENTS patient transactions (\`urn:uuid:\` and conditional references) |"
    if [ -n "$PERF_AT" ]; then echo "| Profiling | \`perf record -F 199 --call-graph dwarf\` attached to the (first) server during the $PERF_AT-client runs (a few % slower); reports: \`$(basename "${OUT%.md}")-perf-*.txt\` |"; fi
    echo "| Client | \`ingest\` (\`src/bin/ingest.rs\`): bundles decompressed up front, HTTP/1.1 keep-alive, \`Prefer: return=minimal\`, every entry checked 2xx |"
    echo
    echo "## Results"
    echo
    echo "| Store | Clients | Resources | Wall time (s) | Resources/s | Patient phase resources/s | Bundle p50 / max (s) | Server CPU s (cores busy) | Writer thread CPU s (busy) | PostgreSQL CPU s (cores busy) | Total CPU ms / resource |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for key in "${KEYS[@]}"; do echo "${ROW[$key]}"; done
    echo
    echo "Wall time covers the whole load (both phases; the batch bundles always go one at a time, to the first"
    echo "server), from the first request to the last response. Server CPU is user + system time of the fhirside"
    echo "process(es) during the load, summed over the replicas; in parentheses, divided by the wall time (how"
    echo "many of the $(nproc) cores it kept busy)."
    if [ "$HAS_EMBEDDED" = 1 ]; then
        echo "Writer thread CPU (embedded store) is the part spent on the store's single writer thread (\`store-writer\`,"
        echo "which runs every transaction's work and commits); near 100 % busy, it is the bottleneck."
    fi
    if [ "$HAS_PG" = 1 ]; then
        echo "PostgreSQL CPU is user + system time of the local processes named \`postgres\` (the postmaster, its"
        echo "background processes and the servers' backends), approximately: the processes alive at the end of the"
        echo "load, minus what each had used at its start (from zero for one started since); a process that ended"
        echo "during the load is missed (the servers' connection pools keep their backends open, so that is only"
        echo "short-lived ones such as autovacuum workers), client backends of other applications are left out, and"
        echo "background processes (WAL writer, checkpointer, autovacuum) count whoever they worked for."
    fi
    echo "Total CPU is server + PostgreSQL CPU per resource stored, the cost of the load whatever the wall time."
    echo "Bundle p50 / max is the response time of the patient transactions (at more than one client it"
    echo "includes waiting for other clients' transactions: the embedded store's single writer, row locks)."
    if [ ${#SKIPPED[@]} -gt 0 ]; then
        echo "Not run, with fewer clients than replicas: $(printf '%s; ' "${SKIPPED[@]}" | sed 's/; $//')."
    fi
    echo
    echo "## Memory and disk"
    echo
    echo "| Store | Clients | RSS after load (MB) | anon | file | shmem | Peak RSS (MB) | SQLite DB + WAL after load (MB) | PostgreSQL schema after load (MB) | Data dir after shutdown (MB) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for key in "${KEYS[@]}"; do echo "${MEM[$key]}"; done
    echo
    echo "RSS is \`VmRSS\` of the server right after the last response (with replicas, each server's: \"a + b\";"
    echo "idle before the load: $(for key in "${KEYS[@]}"; do read -r store r c <<<"$key"; printf '%s MB for %s at c=%s; ' "${IDLE_OF[$key]}" "$(store_label "$store" "$r")" "$c"; done | sed 's/; $//'));"
    echo "anon = heap and stacks, file = pages of the binary, shmem = the embedded store's WAL index."
    if [ "$HAS_EMBEDDED" = 1 ]; then
        echo "The embedded store's data directory is measured again after a clean shutdown, which checkpoints the"
        echo "WAL into the database."
    fi
    if [ "$HAS_PG" = 1 ]; then
        echo "The PostgreSQL schema's size is that of its tables with their indexes and TOAST"
        echo "(\`pg_total_relation_size\`), without PostgreSQL's WAL; on PostgreSQL the data directories hold only"
        echo "the audit log (summed over the replicas)."
    fi
    if [ "$HAS_EMBEDDED" = 1 ]; then
        echo
        echo "## Against the target (reported, not asserted)"
        echo
        echo "| Target | Measured | |"
        echo "|---|---|---|"
        if [ "${RPS_OF[$BEST]}" -ge "$TARGET_RPS" ]; then V=met; else V="**missed**"; fi
        echo "| ≥ $TARGET_RPS resources/s, full validation, embedded store | ${RPS_OF[$BEST]} resources/s (best embedded row, at ${BEST##* } clients) | $V |"
    fi
} >"$OUT"
log "wrote $OUT"
echo
cat "$OUT"

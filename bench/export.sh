#!/usr/bin/env bash
# Bulk export benchmark: loads Synthea-120 (92,114 resources) into a fresh server, then times
# system-level `$export` runs from kick-off to the manifest. Not part of the test suite: run it by
# hand.
#
#   bench/export.sh                       # embedded store, 3 exports, about 2 minutes
#   EXPORT_STORES="embedded postgres" bench/export.sh
#
# Builds release binaries, starts `fhirside serve` (plain HTTP, --auth none, --no-audit) on an
# empty temporary data directory (on PostgreSQL, a fresh schema), loads the dataset with the
# `ingest` client (4 connections), then runs EXPORT_RUNS exports one after another, polling the
# status URL every 20 ms. Each run reports the wall time, the resources and bytes written (from the
# manifest and the files), resources/s, and the server's CPU seconds (and PostgreSQL's, on
# PostgreSQL) per resource. Writes bench/results/export.md, also printed.
#
# Environment (all optional):
#   EXPORT_STORES=embedded       `embedded` and/or `postgres`
#   EXPORT_RUNS=3                exports per store
#   EXPORT_DATABASE=postgres://… PostgreSQL for the postgres rows (default postgres://root@127.0.0.1:5432/test)
#   EXPORT_DATASET=DIR           the dataset (default ../shared/datasets/synthea-120)
#   EXPORT_OUT=path.md           the report (default bench/results/export.md)
#   BENCH_SKIP_BUILD=1, BENCH_KEEP=1, CARGO_TARGET_DIR as for the other scripts
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STORES=${EXPORT_STORES:-embedded}
RUNS=${EXPORT_RUNS:-3}
PG_BASE=${EXPORT_DATABASE:-postgres://root@127.0.0.1:5432/test}
DATASET=${EXPORT_DATASET:-$ROOT/../shared/datasets/synthea-120}
OUT=${EXPORT_OUT:-$ROOT/bench/results/export.md}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release
SERVER_ARGS=(--http --auth none --no-audit --listen 127.0.0.1:0 --max-bundle-entries 10000 --max-body-bytes 67108864)
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[export] %s\n' "$*" >&2; }
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"

command -v curl >/dev/null || die "curl is required"
command -v python3 >/dev/null || die "python3 is required (to read the manifest)"
[ -d "$DATASET" ] || die "no dataset at $DATASET"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
build_release fhirside ingest
make_workdir fhirside-export

ROWS=()
for store in $STORES; do
    db_args=()
    schema=""
    if [ "$store" = postgres ]; then
        schema=fhirside_bench_export
        pg_fresh_schema "$PG_BASE" "$schema"
        db_args=(--database "$(pg_schema_url "$PG_BASE" "$schema")")
    elif [ "$store" != embedded ]; then
        die "EXPORT_STORES: unknown store $store (embedded, postgres)"
    fi
    data=$WORK/data-$store
    start_server "$WORK/fhirside-$store.log" "$BIN/fhirside" serve "${SERVER_ARGS[@]}" "${db_args[@]}" --data-dir "$data"
    pid=$SERVER_PID
    url=$SERVER_URL
    log "$store: loading $DATASET"
    "$BIN/ingest" --url "$url" --dataset "$DATASET" --clients 4 >"$WORK/ingest-$store.out" 2>"$WORK/ingest-$store.err" \
        || { cat "$WORK/ingest-$store.err" >&2; die "ingest failed"; }
    for run in $(seq 1 "$RUNS"); do
        cpu_before=$(cpu_s "$pid")
        if [ "$store" = postgres ]; then pg_cpu_snapshot >"$WORK/pg-cpu.before"; fi
        start=$(date +%s.%N)
        status=$(curl -sS -o /dev/null -D - -H 'Prefer: respond-async' -H 'Accept: application/fhir+json' "$url/\$export" \
            | tr -d '\r' | sed -n 's/^[Cc]ontent-[Ll]ocation: //p')
        [ -n "$status" ] || die "the kick-off returned no Content-Location"
        while :; do
            code=$(curl -sS -o "$WORK/manifest.json" -w '%{http_code}' "$status")
            [ "$code" = 200 ] && break
            [ "$code" = 202 ] || { cat "$WORK/manifest.json" >&2; die "status answered $code"; }
            sleep 0.02
        done
        end=$(date +%s.%N)
        cpu_after=$(cpu_s "$pid")
        pg_cpu=0
        if [ "$store" = postgres ]; then
            pg_skip=$(pg_foreign_backends "$PG_BASE") || pg_skip=""
            pg_cpu_snapshot >"$WORK/pg-cpu.after"
            pg_cpu=$(pg_cpu_s "$WORK/pg-cpu.before" "$WORK/pg-cpu.after" "$pg_skip")
        fi
        read -r resources files <<<"$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); print(sum(o["count"] for o in m["output"]), len(m["output"]))' "$WORK/manifest.json")"
        bytes=$(du -sb "$data/bulk" | cut -f1)
        wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
        cpu=$(sub_s "$cpu_after" "$cpu_before")
        ROWS+=("| $(store_label "$store" 1) | $run | $resources | $files | $(awk -v b="$bytes" 'BEGIN { printf "%.0f", b / 1048576 }') | $wall | $(awk -v r="$resources" -v w="$wall" 'BEGIN { printf "%.0f", r / w }') | $cpu | $pg_cpu | $(awk -v c="$cpu" -v p="$pg_cpu" -v r="$resources" 'BEGIN { printf "%.1f", 1000000 * (c + p) / r }') |")
        log "$store run $run: $resources resources in $wall s"
        # The next run starts from an empty bulk directory (and the job's files are not counted twice).
        curl -sS -o /dev/null -X DELETE "$status"
    done
    stop_server "$pid"
    if [ -n "$schema" ]; then pg_done_schema "$PG_BASE" "$schema"; fi
done

HEADER=$(report_header_rows "$LOAD_START")
{
    echo "# Bulk export benchmark"
    echo
    echo "System-level \`\$export\` of Synthea-120 (see bench/export.sh), from kick-off to the manifest."
    echo
    echo "| | |"
    echo "|---|---|"
    echo "$HEADER"
    echo
    echo "| Store | Run | Resources | Files | MB written | Wall s | Resources/s | Server CPU s | PostgreSQL CPU s | CPU µs per resource |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${ROWS[@]}"
} >"$OUT"
cat "$OUT"

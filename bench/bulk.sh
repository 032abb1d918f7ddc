#!/usr/bin/env bash
# Bulk data benchmark: loads Synthea-120 (92,114 resources) into a fresh server, times
# system-level `$export` runs from kick-off to the manifest, then `$import`s the last export's
# files into fresh servers (InitialLoad, then IncrementalLoad) from kick-off to the result. Not part
# of the test suite: run it by hand.
#
#   bench/bulk.sh                         # embedded store, 3 exports and 2 imports, about 3 minutes
#   EXPORT_STORES="embedded postgres" bench/bulk.sh
#
# Builds release binaries, starts `fhirside serve` (plain HTTP, --auth none, --no-audit) on an
# empty temporary data directory (on PostgreSQL, a fresh schema), loads the dataset with the
# `ingest` client (4 connections), then runs EXPORT_RUNS exports one after another, polling the
# status URL every 20 ms. Each run reports the wall time, the resources and bytes written (from the
# manifest and the files), resources/s, and the server's CPU seconds (and PostgreSQL's, on
# PostgreSQL) per resource. The imports read the files from the exporting server's data directory
# (`--import-root`). Writes bench/results/bulk.md, also printed.
#
# Environment (all optional):
#   EXPORT_STORES=embedded       `embedded` and/or `postgres`
#   EXPORT_RUNS=3                exports per store
#   EXPORT_DATABASE=postgres://… PostgreSQL for the postgres rows (default postgres://root@127.0.0.1:5432/test)
#   EXPORT_DATASET=DIR           the dataset (default ../shared/datasets/synthea-120)
#   EXPORT_SCALE=1               load this many renamed copies of the dataset (bench/scale-dataset.py;
#                                10 makes 915,893 resources); the report is then bulk-Nx.md
#   EXPORT_OUT=path.md           the report (default bench/results/bulk.md)
#   BENCH_SKIP_BUILD=1, BENCH_KEEP=1, CARGO_TARGET_DIR as for the other scripts
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STORES=${EXPORT_STORES:-embedded}
RUNS=${EXPORT_RUNS:-3}
PG_BASE=${EXPORT_DATABASE:-postgres://root@127.0.0.1:5432/test}
DATASET=${EXPORT_DATASET:-$ROOT/../shared/datasets/synthea-120}
SCALE=${EXPORT_SCALE:-1}
[[ $SCALE =~ ^[1-9][0-9]*$ ]] || { echo "EXPORT_SCALE must be a positive integer" >&2; exit 2; }
if [ "$SCALE" = 1 ]; then OUT=${EXPORT_OUT:-$ROOT/bench/results/bulk.md}; else OUT=${EXPORT_OUT:-$ROOT/bench/results/bulk-${SCALE}x.md}; fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release
SERVER_ARGS=(--http --auth none --no-audit --listen 127.0.0.1:0 --max-bundle-entries 10000 --max-body-bytes 67108864)
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[bulk] %s\n' "$*" >&2; }
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"

command -v curl >/dev/null || die "curl is required"
command -v python3 >/dev/null || die "python3 is required (to read the manifest)"
[ -d "$DATASET" ] || die "no dataset at $DATASET"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
build_release fhirside ingest
make_workdir fhirside-export

COPIES=("$DATASET")
if [ "$SCALE" -gt 1 ]; then
    log "writing $((SCALE - 1)) renamed copies of $(basename "$DATASET") (bench/scale-dataset.py)"
    python3 "$ROOT/bench/scale-dataset.py" --dataset "$DATASET" --copies "$SCALE" --out "$WORK/scaled"
    for ((k = 1; k < SCALE; k++)); do COPIES+=("$(printf '%s/scaled/copy-%02d' "$WORK" "$k")"); done
fi

ROWS=()
IMPORT_ROWS=()
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
    for copy in "${COPIES[@]}"; do
        log "$store: loading $copy"
        "$BIN/ingest" --url "$url" --dataset "$copy" --clients 4 >"$WORK/ingest-$store.out" 2>"$WORK/ingest-$store.err" \
            || { cat "$WORK/ingest-$store.err" >&2; die "ingest failed"; }
    done
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
        # The next run starts from an empty bulk directory (the last run's files are imported below).
        if [ "$run" != "$RUNS" ]; then curl -sS -o /dev/null -X DELETE "$status"; fi
    done
    stop_server "$pid"

    # Imports of the last export's files into fresh servers (schemas), one per mode.
    inputs=$(find "$data/bulk" -name '*.ndjson' | sort | python3 -c '
import json, sys
parts = [{"name": "input", "part": [{"name": "type", "valueString": p.rsplit("/", 1)[1].split("-")[0]},
                                    {"name": "url", "valueUri": "file://" + p.strip()}]} for p in sys.stdin if p.strip()]
print(json.dumps(parts))')
    for mode in InitialLoad IncrementalLoad; do
        import_db=()
        import_schema=""
        if [ "$store" = postgres ]; then
            import_schema=fhirside_bench_import
            pg_fresh_schema "$PG_BASE" "$import_schema"
            import_db=(--database "$(pg_schema_url "$PG_BASE" "$import_schema")")
        fi
        target=$WORK/import-$store-$mode
        start_server "$WORK/fhirside-import-$store-$mode.log" "$BIN/fhirside" serve "${SERVER_ARGS[@]}" "${import_db[@]}" \
            --data-dir "$target" --import-root "$data/bulk"
        ipid=$SERVER_PID
        iurl=$SERVER_URL
        body=$(python3 -c 'import json, sys; print(json.dumps({"resourceType": "Parameters", "parameter":
            [{"name": "inputFormat", "valueString": "application/fhir+ndjson"}, {"name": "mode", "valueString": sys.argv[1]}]
            + json.loads(sys.argv[2])}))' "$mode" "$inputs")
        cpu_before=$(cpu_s "$ipid")
        if [ "$store" = postgres ]; then pg_cpu_snapshot >"$WORK/pg-cpu.before"; fi
        start=$(date +%s.%N)
        status=$(curl -sS -o /dev/null -D - -H 'Prefer: respond-async' -H 'Content-Type: application/fhir+json' \
            --data-binary "$body" "$iurl/\$import" | tr -d '\r' | sed -n 's/^[Cc]ontent-[Ll]ocation: //p')
        [ -n "$status" ] || die "the import kick-off returned no Content-Location"
        while :; do
            code=$(curl -sS -o "$WORK/result.json" -w '%{http_code}' "$status")
            [ "$code" = 200 ] && break
            [ "$code" = 202 ] || { cat "$WORK/result.json" >&2; die "import status answered $code"; }
            sleep 0.05
        done
        end=$(date +%s.%N)
        cpu_after=$(cpu_s "$ipid")
        pg_cpu=0
        if [ "$store" = postgres ]; then
            pg_skip=$(pg_foreign_backends "$PG_BASE") || pg_skip=""
            pg_cpu_snapshot >"$WORK/pg-cpu.after"
            pg_cpu=$(pg_cpu_s "$WORK/pg-cpu.before" "$WORK/pg-cpu.after" "$pg_skip")
        fi
        read -r imported errors <<<"$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(sum(o["count"] for o in r["output"]), sum(e["count"] for e in r["error"]))' "$WORK/result.json")"
        wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
        cpu=$(sub_s "$cpu_after" "$cpu_before")
        IMPORT_ROWS+=("| $(store_label "$store" 1) | $mode | $imported | $errors | $wall | $(awk -v r="$imported" -v w="$wall" 'BEGIN { printf "%.0f", r / w }') | $cpu | $pg_cpu | $(awk -v c="$cpu" -v p="$pg_cpu" -v r="$imported" 'BEGIN { printf "%.1f", 1000000 * (c + p) / r }') |")
        log "$store $mode: $imported resources in $wall s"
        stop_server "$ipid"
        # Nothing reads the imported store again (at ten times it is about 5 GB).
        rm -rf "$target"
        if [ -n "$import_schema" ]; then pg_done_schema "$PG_BASE" "$import_schema"; fi
    done
    if [ -n "$schema" ]; then pg_done_schema "$PG_BASE" "$schema"; fi
done

HEADER=$(report_header_rows "$LOAD_START")
{
    echo "# Bulk data benchmark"
    echo
    echo "System-level \`\$export\` of Synthea-120$([ "$SCALE" = 1 ] || echo " ($SCALE renamed copies)") from kick-off to the manifest, and \`\$import\` of the exported files"
    echo "into a fresh server from kick-off to the result (see bench/bulk.sh)."
    echo
    echo "| | |"
    echo "|---|---|"
    echo "$HEADER"
    echo
    echo "| Store | Run | Resources | Files | MB written | Wall s | Resources/s | Server CPU s | PostgreSQL CPU s | CPU µs per resource |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "| Store | Import mode | Resources | Refused lines | Wall s | Resources/s | Server CPU s | PostgreSQL CPU s | CPU µs per resource |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${IMPORT_ROWS[@]}"
} >"$OUT"
cat "$OUT"

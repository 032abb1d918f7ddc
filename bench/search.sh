#!/usr/bin/env bash
# Search benchmark on Synthea-120: loads the dataset (optionally N renamed copies of it) into a fresh
# server, then measures a fixed suite of searches with the `search` load generator. Not part of the
# test suite: run it by hand.
#
#   bench/search.sh                # Synthea-120 (92,114 resources), about 5 minutes
#   bench/search.sh --scale 10     # 10 renamed copies (915,893 resources), about 25 minutes
#
# Builds release binaries, starts `fhirside serve` (embedded SQLite, or PostgreSQL with
# SEARCH_DATABASE; plain HTTP, --auth none) on a free loopback port with an empty temporary data
# directory, loads the dataset with the `ingest` client (see ingest.sh), restarts the server on the
# loaded directory (a clean shutdown checkpoints the embedded store's WAL; on PostgreSQL it is
# harmless), resolves the ids the suite needs by searching, and runs every query of the suite for
# SEARCH_DURATION seconds at each concurrency. Writes bench/results/search.md (search-Nx.md with
# --scale N; search-postgres.md, search-Nx-postgres.md on PostgreSQL, search-postgres-rR.md with R
# replicas), also printed. See bench/README.md.
#
# Environment (all optional):
#   SEARCH_DURATION=5            measured seconds per query
#   SEARCH_WARMUP=1              seconds of unrecorded load before each query
#   SEARCH_CONNECTIONS="1 4"     concurrencies (client connections), one table each
#   SEARCH_LOAD_CLIENTS=2        ingest clients while loading
#   SEARCH_DATASET=DIR           the dataset (default ../shared/datasets/synthea-120 beside the repository)
#   SEARCH_DATABASE=postgres://… run on PostgreSQL, in a fresh schema fhirside_bench_search of that
#                                database (dropped at the end) instead of the embedded store
#   SEARCH_REPLICAS=1            servers on the PostgreSQL schema (each with its own data directory);
#                                the load and the query connections are spread over them (i % R)
#   SEARCH_OUT=path.md           where to write the report
#   BENCH_SKIP_BUILD=1           use the binaries already in $CARGO_TARGET_DIR/release
#   BENCH_KEEP=1                 keep the temporary directory (data dir, logs, queries, scaled dataset)
#                                and the PostgreSQL schema
#   CARGO_TARGET_DIR             cargo's target directory (default <repo>/target)
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCALE=1
while [ $# -gt 0 ]; do
    case $1 in
        --scale) [ $# -ge 2 ] || { echo "--scale needs a value" >&2; exit 2; }; SCALE=$2; shift 2 ;;
        --scale=*) SCALE=${1#--scale=}; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument $1 (usage: bench/search.sh [--scale N])" >&2; exit 2 ;;
    esac
done
[[ $SCALE =~ ^[1-9][0-9]*$ ]] || { echo "--scale must be a positive integer" >&2; exit 2; }
DURATION=${SEARCH_DURATION:-5}
WARMUP=${SEARCH_WARMUP:-1}
CONNECTIONS=${SEARCH_CONNECTIONS:-"1 4"}
LOAD_CLIENTS=${SEARCH_LOAD_CLIENTS:-2}
DATASET=${SEARCH_DATASET:-$ROOT/../shared/datasets/synthea-120}
PG_BASE=${SEARCH_DATABASE:-}
REPLICAS=${SEARCH_REPLICAS:-1}
PG_SCHEMA=fhirside_bench_search
DEFAULT_OUT=$ROOT/bench/results/search$([ "$SCALE" = 1 ] || echo "-${SCALE}x")$([ -z "$PG_BASE" ] || echo -postgres)$([ "$REPLICAS" = 1 ] || echo "-r$REPLICAS").md
OUT=${SEARCH_OUT:-$DEFAULT_OUT}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release
SERVER_ARGS=(--http --auth none --listen 127.0.0.1:0 --max-bundle-entries 10000 --max-body-bytes 67108864)

# The suite's values, chosen from Synthea-120 (see bench/README.md). The patient is the one with the
# most Observations (2,265); its server id is found by searching for its Synthea identifier.
FAMILY=Wi                                             # 9 of the 120 patients' family names
LOINC_HEIGHT='http://loinc.org|8302-2'                # Body Height, 1,243 Observations
SINUSITIS='http://snomed.info/sct|444814009'          # Viral sinusitis, 125 Conditions of 64 patients
PROVIDER=UMASS                                        # 2 Organizations, 277 Encounters
PATIENT_IDENTIFIER='https://github.com/synthetichealth/synthea|e5a8d3f4-4484-ebfd-7404-d9f02c9fe6a6'
SINGLE_MS=3
COMPLEX_MS=20

log() { printf '[search] %s\n' "$*" >&2; }
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"

command -v bzcat >/dev/null || die "bzcat is required (Debian package bzip2)"
command -v curl >/dev/null || die "curl is required"
command -v python3 >/dev/null || die "python3 is required"
[ -d "$DATASET" ] || die "no dataset at $DATASET"
[[ $REPLICAS =~ ^[1-9][0-9]*$ ]] || die "SEARCH_REPLICAS must be a positive integer"
# Several servers on one embedded store cannot be: each data directory is its own database.
if [ "$REPLICAS" -gt 1 ] && [ -z "$PG_BASE" ]; then die "SEARCH_REPLICAS > 1 needs SEARCH_DATABASE"; fi
if [ -n "$PG_BASE" ]; then
    command -v psql >/dev/null || die "psql is required for PostgreSQL (Debian package postgresql-client)"
    PG_DESC=$(pg_server_desc "$PG_BASE") || die "cannot connect to $PG_BASE"
fi

build_release fhirside ingest search
make_workdir fhirside-search
DB_ARGS=()
if [ -n "$PG_BASE" ]; then
    pg_fresh_schema "$PG_BASE" "$PG_SCHEMA"
    DB_ARGS=(--database "$(pg_schema_url "$PG_BASE" "$PG_SCHEMA")")
fi
# One data directory per server; on PostgreSQL they hold only the audit log.
DATAS=()
for ((i = 1; i <= REPLICAS; i++)); do DATAS+=("$WORK/data$([ "$REPLICAS" = 1 ] || echo "-$i")"); done
SERVER_PIDS=()
SERVER_URLS=""
start_servers() { # start_servers LOG-PREFIX: REPLICAS servers on their data directories, one after the other
    local i
    SERVER_PIDS=()
    SERVER_URLS=""
    for i in "${!DATAS[@]}"; do
        start_server "$WORK/$1-$((i + 1)).log" "$BIN/fhirside" serve "${SERVER_ARGS[@]}" "${DB_ARGS[@]}" --data-dir "${DATAS[$i]}"
        SERVER_PIDS+=("$SERVER_PID")
        SERVER_URLS=${SERVER_URLS:+$SERVER_URLS,}$SERVER_URL
    done
    # The ids and the `next` links are taken from the first server.
    SERVER_URL=${SERVER_URLS%%,*}
    PID=${SERVER_PIDS[0]}
}
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# --- data --------------------------------------------------------------------------------------
COPIES=("$DATASET")
SCALE_S=""
if [ "$SCALE" -gt 1 ]; then
    log "writing $((SCALE - 1)) renamed copies of $(basename "$DATASET") (bench/scale-dataset.py)"
    t0=$(date +%s.%N)
    python3 "$ROOT/bench/scale-dataset.py" --dataset "$DATASET" --copies "$SCALE" --out "$WORK/scaled"
    SCALE_S=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')
    for ((k = 1; k < SCALE; k++)); do COPIES+=("$(printf '%s/scaled/copy-%02d' "$WORK" "$k")"); done
fi

if [ -n "$PG_BASE" ]; then STORE_DESC="PostgreSQL (schema $PG_SCHEMA)"; else STORE_DESC="the embedded store"; fi
log "starting $REPLICAS fhirside$([ "$REPLICAS" = 1 ] || echo s) on $STORE_DESC and loading ${#COPIES[@]} cop$([ ${#COPIES[@]} = 1 ] && echo y || echo ies) with $LOAD_CLIENTS client(s)"
start_servers fhirside-load
LOAD_T0=$(date +%s.%N)
k=0
for dir in "${COPIES[@]}"; do
    "$BIN/ingest" --url "$SERVER_URLS" --dataset "$dir" --clients "$LOAD_CLIENTS" >"$WORK/ingest-$k.out" 2>"$WORK/ingest-$k.err" \
        || { cat "$WORK/ingest-$k.err" >&2; die "loading $dir failed (server logs: $WORK/fhirside-load-*.log)"; }
    log "copy $k: $(sed -n 's/^ingest: total //p' "$WORK/ingest-$k.err")"
    k=$((k + 1))
done
LOAD_S=$(awk -v a="$LOAD_T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')
for pid in "${SERVER_PIDS[@]}"; do stop_server "$pid"; done
if [ -n "$PG_BASE" ]; then
    DB_MB=$(pg_schema_mb "$PG_BASE" "$PG_SCHEMA")
    DB_DESC="PostgreSQL schema $DB_MB MB (tables, indexes and TOAST)"
else
    DB_MB=$(du -sm "${DATAS[0]}" | cut -f1)
    DB_DESC="data directory $DB_MB MB"
fi

# A clean restart: on the embedded store the shutdown checkpoints the WAL into the database; on
# PostgreSQL it changes nothing (the store analyses its tables itself), but keeps the runs alike.
log "restarting fhirside on the loaded data ($DB_DESC)"
start_servers fhirside

# fhir_get PATH: the body of a GET (fails on a non-2xx status).
fhir_get() { curl -sfS -H 'Accept: application/fhir+json' "$SERVER_URL/$1"; }
# json EXPR: evaluates a Python expression on the JSON document `d` read from stdin.
json() { python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }
RESOURCES=$(fhir_get '?_summary=count' | json 'd["total"]') || die "GET /?_summary=count failed"
PATIENTS=$(fhir_get 'Patient?_summary=count' | json 'd["total"]') || die "GET /Patient?_summary=count failed"
PATIENT_ID=$(fhir_get "Patient?identifier=$PATIENT_IDENTIFIER" | json 'd["entry"][0]["resource"]["id"]') \
    || die "no Patient with identifier $PATIENT_IDENTIFIER"
log "$RESOURCES resources, $PATIENTS patients; the patient of the subject search is Patient/$PATIENT_ID"

# --- the suite ---------------------------------------------------------------------------------
QUERIES=$WORK/queries.tsv
{
    printf '# NAME\tTARGET p50 (ms)\tPATH (next:PATH = the next link of PATH'"'"'s first page)\n'
    printf '%s\t%s\t%s\n' \
        family "$SINGLE_MS" "Patient?family=$FAMILY" \
        birthdate "$SINGLE_MS" "Patient?birthdate=ge1980-01-01" \
        gender "$SINGLE_MS" "Patient?gender=female" \
        obs-code "$SINGLE_MS" "Observation?code=$LOINC_HEIGHT" \
        obs-subject "$SINGLE_MS" "Observation?subject=Patient/$PATIENT_ID" \
        obs-date "$SINGLE_MS" "Observation?date=ge2019-01-01" \
        obs-value-quantity "$SINGLE_MS" "Observation?value-quantity=gt100" \
        condition-code "$SINGLE_MS" "Condition?code=$SINUSITIS" \
        encounter-date "$SINGLE_MS" "Encounter?date=2019" \
        obs-component "$SINGLE_MS" "Observation?component-code-value-quantity=http://loinc.org|8480-6\$gt140" \
        chain-subject "$COMPLEX_MS" "Observation?subject:Patient.family=$FAMILY" \
        chain-provider "$COMPLEX_MS" "Encounter?service-provider.name=$PROVIDER" \
        has-condition "$COMPLEX_MS" "Patient?_has:Condition:subject:code=$SINUSITIS" \
        include-subject "$COMPLEX_MS" "Observation?code=$LOINC_HEIGHT&_include=Observation:subject" \
        revinclude-encounter "$COMPLEX_MS" "Patient?_revinclude=Encounter:patient&_count=10" \
        sort-date "$SINGLE_MS" "Observation?code=$LOINC_HEIGHT&_sort=-date" \
        page-2 "$SINGLE_MS" "next:Observation?code=$LOINC_HEIGHT" \
        total-accurate - "Observation?date=ge2019-01-01&_total=accurate"
} >"$QUERIES"

declare -A TABLE
for c in $CONNECTIONS; do
    log "running the suite at $c connection(s), ${DURATION} s per query (+ ${WARMUP} s warm-up)"
    "$BIN/search" --url "$SERVER_URLS" --queries "$QUERIES" --duration "$DURATION" --warmup "$WARMUP" \
        --concurrency "$c" >"$WORK/search-c$c.md" || die "search failed at $c connection(s)"
    TABLE[$c]=$(cat "$WORK/search-c$c.md")
done
# With replicas, every server's ("a + b").
RSS_MB=$(for pid in "${SERVER_PIDS[@]}"; do awk '/^VmRSS:/ { printf "%.0f\n", $2 / 1024 }' "/proc/$pid/status"; done | paste -sd+ | sed 's/+/ + /g')
HWM_MB=$(for pid in "${SERVER_PIDS[@]}"; do awk '/^VmHWM:/ { printf "%.0f\n", $2 / 1024 }' "/proc/$pid/status"; done | paste -sd+ | sed 's/+/ + /g')

# --- report ------------------------------------------------------------------------------------
HEADER_ROWS=$(report_header_rows "$LOAD_START")
if [ "$SCALE" = 1 ]; then DATA_DESC="\`$(basename "$DATASET")\`"; else
    DATA_DESC="\`$(basename "$DATASET")\` × $SCALE: the original and $((SCALE - 1)) copies with renamed ids (\`bench/scale-dataset.py\`, ${SCALE_S} s); Organizations, Practitioners and Locations shared"
fi
mkdir -p "$(dirname "$OUT")"
{
    if [ -z "$PG_BASE" ]; then TITLE_STORE="embedded store"; else TITLE_STORE=PostgreSQL$([ "$REPLICAS" = 1 ] || echo ", $REPLICAS replicas"); fi
    echo "# Fhirside search benchmark: $(basename "$DATASET")$([ "$SCALE" = 1 ] || echo " × $SCALE") ($TITLE_STORE)"
    echo
    echo "| | |"
    echo "|---|---|"
    echo "$HEADER_ROWS"
    if [ -z "$PG_BASE" ]; then
        echo "| Server | \`fhirside serve ${SERVER_ARGS[*]}\`: embedded SQLite, release build, restarted on the loaded data directory before the queries |"
    else
        echo "| Server | \`fhirside serve ${SERVER_ARGS[*]} --database …\`: PostgreSQL (a fresh schema), release build$([ "$REPLICAS" = 1 ] || echo ", $REPLICAS servers (replicas) on the schema, each with its own data directory, client connection i on server i % $REPLICAS"), restarted after the load before the queries |"
        echo "| PostgreSQL | $PG_DESC; on this machine, sharing its cores with the server$([ "$REPLICAS" = 1 ] || echo s) and the client |"
    fi
    echo "| Data | $DATA_DESC |"
    echo "| Data size | $RESOURCES resources ($PATIENTS patients); $DB_DESC; loaded in $LOAD_S s with $LOAD_CLIENTS \`ingest\` clients |"
    echo "| Server RSS | $RSS_MB MB after the queries (peak $HWM_MB MB)$([ "$REPLICAS" = 1 ] || echo ", each server's") |"
    echo "| Client | \`search\` (\`src/bin/search.rs\`): one keep-alive HTTP/1.1 connection per thread, closed loop, \`Prefer: handling=strict\`; ${WARMUP} s warm-up + ${DURATION} s per query |"
    echo
    for c in $CONNECTIONS; do
        echo "## $c connection$([ "$c" = 1 ] || echo s)"
        echo
        echo "${TABLE[$c]}"
        echo
    done
    echo "## The suite"
    echo
    echo "Default page size (10) except where \`_count\` is given. Values chosen from Synthea-120: family prefix"
    echo "\`$FAMILY\` (9 of 120 patients), LOINC 8302-2 Body Height (1,243 Observations), SNOMED 444814009 Viral"
    echo "sinusitis (125 Conditions, 64 patients), Organization name prefix \`$PROVIDER\` (2 Organizations, 277"
    echo "Encounters), and the patient with the most Observations (2,265; Synthea id"
    echo "\`${PATIENT_IDENTIFIER#*|}\`, here \`Patient/$PATIENT_ID\`). In a scaled dataset every count is"
    echo "multiplied by the scale, except for the Organizations, and the subject search still names one patient."
    echo "**Target p50** (reported, not asserted): < $SINGLE_MS ms for single-parameter searches (including the"
    echo "sorted one and the second page), < $COMPLEX_MS ms for chained, \`_has\`, \`_include\` and \`_revinclude\`; none for"
    echo "\`_total=accurate\`, which counts every match by design. The 1-connection table is the unloaded latency; at more"
    echo "connections than cores, latency includes queueing (client and server share the $(nproc) cores)."
} >"$OUT"
log "wrote $OUT"
echo
cat "$OUT"

#!/usr/bin/env bash
# Search benchmark on Synthea-120: loads the dataset (optionally N renamed copies of it) into a fresh
# server, then measures a fixed suite of searches with the `search` load generator. Not part of the
# test suite: run it by hand.
#
#   bench/search.sh                # Synthea-120 (92,114 resources), about 5 minutes
#   bench/search.sh --scale 10     # 10 renamed copies (915,893 resources), about 25 minutes
#
# Builds release binaries, starts `fhirside serve` (embedded SQLite, plain HTTP, --auth none) on a
# free loopback port with an empty temporary data directory, loads the dataset with the `ingest`
# client (see ingest.sh), restarts the server on the loaded directory (a clean shutdown checkpoints
# the WAL), resolves the ids the suite needs by searching, and runs every query of the suite for
# SEARCH_DURATION seconds at each concurrency. Writes bench/results/search.md (search-Nx.md with
# --scale N), also printed. See bench/README.md.
#
# Environment (all optional):
#   SEARCH_DURATION=5            measured seconds per query
#   SEARCH_WARMUP=1              seconds of unrecorded load before each query
#   SEARCH_CONNECTIONS="1 4"     concurrencies (client connections), one table each
#   SEARCH_LOAD_CLIENTS=2        ingest clients while loading
#   SEARCH_DATASET=DIR           the dataset (default ../shared/datasets/synthea-120 beside the repository)
#   SEARCH_OUT=path.md           where to write the report
#   BENCH_SKIP_BUILD=1           use the binaries already in $CARGO_TARGET_DIR/release
#   BENCH_KEEP=1                 keep the temporary directory (data dir, logs, queries, scaled dataset)
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
if [ "$SCALE" = 1 ]; then DEFAULT_OUT=$ROOT/bench/results/search.md; else DEFAULT_OUT=$ROOT/bench/results/search-${SCALE}x.md; fi
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

build_release fhirside ingest search
make_workdir fhirside-search
DATA=$WORK/data
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

log "starting fhirside on an empty data directory and loading ${#COPIES[@]} cop$([ ${#COPIES[@]} = 1 ] && echo y || echo ies) with $LOAD_CLIENTS client(s)"
start_server "$WORK/fhirside-load.log" "$BIN/fhirside" serve "${SERVER_ARGS[@]}" --data-dir "$DATA"
LOAD_T0=$(date +%s.%N)
k=0
for dir in "${COPIES[@]}"; do
    "$BIN/ingest" --url "$SERVER_URL" --dataset "$dir" --clients "$LOAD_CLIENTS" >"$WORK/ingest-$k.out" 2>"$WORK/ingest-$k.err" \
        || { cat "$WORK/ingest-$k.err" >&2; die "loading $dir failed (server log: $WORK/fhirside-load.log)"; }
    log "copy $k: $(sed -n 's/^ingest: total //p' "$WORK/ingest-$k.err")"
    k=$((k + 1))
done
LOAD_S=$(awk -v a="$LOAD_T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')
stop_server "$SERVER_PID"
DB_MB=$(du -sm "$DATA" | cut -f1)

log "restarting fhirside on the loaded data directory ($DB_MB MB)"
start_server "$WORK/fhirside.log" "$BIN/fhirside" serve "${SERVER_ARGS[@]}" --data-dir "$DATA"
PID=$SERVER_PID

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
    "$BIN/search" --url "$SERVER_URL" --queries "$QUERIES" --duration "$DURATION" --warmup "$WARMUP" \
        --concurrency "$c" >"$WORK/search-c$c.md" || die "search failed at $c connection(s)"
    TABLE[$c]=$(cat "$WORK/search-c$c.md")
done
RSS_MB=$(awk '/^VmRSS:/ { printf "%.0f", $2 / 1024 }' "/proc/$PID/status")
HWM_MB=$(awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$PID/status")

# --- report ------------------------------------------------------------------------------------
HEADER_ROWS=$(report_header_rows "$LOAD_START")
if [ "$SCALE" = 1 ]; then DATA_DESC="\`$(basename "$DATASET")\`"; else
    DATA_DESC="\`$(basename "$DATASET")\` × $SCALE: the original and $((SCALE - 1)) copies with renamed ids (\`bench/scale-dataset.py\`, ${SCALE_S} s); Organizations, Practitioners and Locations shared"
fi
mkdir -p "$(dirname "$OUT")"
{
    echo "# Fhirside search benchmark: $(basename "$DATASET")$([ "$SCALE" = 1 ] || echo " × $SCALE")"
    echo
    echo "| | |"
    echo "|---|---|"
    echo "$HEADER_ROWS"
    echo "| Server | \`fhirside serve ${SERVER_ARGS[*]}\`: embedded SQLite, release build, restarted on the loaded data directory before the queries |"
    echo "| Data | $DATA_DESC |"
    echo "| Data size | $RESOURCES resources ($PATIENTS patients); data directory $DB_MB MB; loaded in $LOAD_S s with $LOAD_CLIENTS \`ingest\` clients |"
    echo "| Server RSS | $RSS_MB MB after the queries (peak $HWM_MB MB) |"
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

#!/usr/bin/env bash
# Fhirside throughput/latency/memory benchmark. Not part of the test suite: run it by hand.
#
#   bench/run.sh                      # everything, 10 s per measurement
#   BENCH_DURATION=30 bench/run.sh    # longer runs
#
# Builds release binaries, starts `fhirside serve` (embedded default, plain HTTP, then HTTPS) and the
# `ceiling` server on free loopback ports with temporary data directories, seeds patients, drives
# each scenario with wrk, and writes bench/results/latest.md (also printed). See bench/README.md.
#
# Environment (all optional):
#   BENCH_DURATION=10            seconds per measurement
#   BENCH_WARMUP=2               seconds of unrecorded load before each scenario
#   BENCH_CONNECTIONS="1 16 64"  concurrencies (wrk -c) for read, create and ceiling
#   BENCH_HTTPS_CONNECTIONS=...  concurrencies for the HTTPS read run (default: BENCH_CONNECTIONS)
#   BENCH_PATIENTS=1000          patients created before the read runs
#   BENCH_WRK_THREADS=2          upper bound on wrk -t (never more than the connections)
#   BENCH_SKIP_BUILD=1           use the binaries already in $CARGO_TARGET_DIR/release
#   BENCH_KEEP=1                 keep the temporary directory (data dirs, logs, wrk scripts)
#   BENCH_OUT=path.md            where to write the table (default bench/results/latest.md)
#   CARGO_TARGET_DIR             cargo's target directory (default <repo>/target)
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${BENCH_DURATION:-10}
WARMUP=${BENCH_WARMUP:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-"1 16 64"}
HTTPS_CONNECTIONS=${BENCH_HTTPS_CONNECTIONS:-$CONNECTIONS}
PATIENTS=${BENCH_PATIENTS:-1000}
MAX_THREADS=${BENCH_WRK_THREADS:-2}
OUT=${BENCH_OUT:-$ROOT/bench/results/latest.md}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release

log() { printf '[bench] %s\n' "$*" >&2; }
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"

# --- tools -------------------------------------------------------------------------------------
if ! command -v wrk >/dev/null; then
    log "installing wrk"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    command -v apt-get >/dev/null || die "wrk is missing and apt-get is not available; install wrk"
    $SUDO apt-get install -y wrk >/dev/null || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y wrk >/dev/null; }
fi
command -v curl >/dev/null || die "curl is required"

build_release fhirside ceiling

# --- servers -----------------------------------------------------------------------------------
make_workdir fhirside-bench
rss_mb() { # VmRSS in MB, then its anonymous / file-backed / shared-memory (WAL index) parts
    awk '/^(VmRSS|RssAnon|RssFile|RssShmem):/ { v[$1] = $2 / 1024 }
         END { printf "%.1f | %.1f | %.1f | %.1f", v["VmRSS:"], v["RssAnon:"], v["RssFile:"], v["RssShmem:"] }' "/proc/$1/status"
}
hwm_mb() { awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# --- wrk ---------------------------------------------------------------------------------------
cat >"$WORK/read.lua" <<EOF
-- GET /Patient/{id} over every seeded id; each wrk thread starts at a different offset.
wrk.headers["Accept"] = "application/fhir+json"
local threads = 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
local requests, n, i = {}, 0, 0
function init(args)
  for id in io.lines("$WORK/ids.txt") do
    n = n + 1
    requests[n] = wrk.format("GET", "/Patient/" .. id)
  end
  i = ((tid or 0) * 379) % n
end
function request()
  i = i % n + 1
  return requests[i]
end
EOF
cat >"$WORK/create.lua" <<EOF
-- POST /Patient with the same ~1 KB body each time (the server assigns a new id to each).
wrk.method = "POST"
wrk.path = "/Patient"
wrk.headers["Content-Type"] = "application/fhir+json"
wrk.headers["Accept"] = "application/fhir+json"
local f = assert(io.open("$WORK/create.json", "rb"))
wrk.body = f:read("*a")
f:close()
EOF
sed 's/__N__/bench/g' "$ROOT/bench/data/patient.json" >"$WORK/create.json"

RAW=$WORK/wrk.txt
: >"$RAW"
declare -A RPS P50 P99 ERR
# run_wrk KEY URL SCRIPT CONNECTIONS [SECONDS]: one measurement, parsed into RPS/P50/P99/ERR[KEY].
run_wrk() {
    local key=$1 url=$2 script=$3 c=$4 secs=${5:-$DURATION}
    local t=$((c < MAX_THREADS ? c : MAX_THREADS))
    local out=$WORK/wrk-$key.txt
    wrk -t "$t" -c "$c" -d "${secs}s" --timeout 10s --latency -s "$script" "$url" >"$out" 2>&1 \
        || { cat "$out" >&2; die "wrk failed ($key)"; }
    { echo "### $key (wrk -t $t -c $c -d ${secs}s)"; cat "$out"; echo; } >>"$RAW"
    RPS[$key]=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
    P50[$key]=$(awk -f "$WORK/latency.awk" -v pct=50% "$out")
    P99[$key]=$(awk -f "$WORK/latency.awk" -v pct=99% "$out")
    ERR[$key]=$(awk '/Non-2xx or 3xx responses:/ { e += $NF }
                     /Socket errors:/ { gsub(",", ""); e += $4 + $6 + $8 + $10 }
                     END { print e + 0 }' "$out")
    log "$(printf '%-14s c=%-3s %8s req/s  p50 %6s ms  p99 %6s ms  errors %s' \
        "$key" "$c" "${RPS[$key]}" "${P50[$key]}" "${P99[$key]}" "${ERR[$key]}")"
}
# wrk prints percentiles like "99%    1.23ms"; normalise to milliseconds.
cat >"$WORK/latency.awk" <<'EOF'
$1 == pct && in_dist {
    v = $2; unit = v; sub(/^[0-9.]+/, "", unit); sub(/[a-z]+$/, "", v)
    f = (unit == "us") ? 0.001 : (unit == "ms") ? 1 : (unit == "s") ? 1000 : (unit == "m") ? 60000 : 1
    printf "%.2f", v * f; exit
}
/Latency Distribution/ { in_dist = 1 }
EOF
warm() { # warm URL SCRIPT
    [ "$WARMUP" -gt 0 ] || return 0
    local c; for c in $CONNECTIONS; do :; done
    wrk -t "$((c < MAX_THREADS ? c : MAX_THREADS))" -c "$c" -d "${WARMUP}s" --timeout 10s -s "$2" "$1" >/dev/null 2>&1 || true
}

# --- fhirside over HTTP ------------------------------------------------------------------------
DATA=$WORK/data
log "starting fhirside (HTTP)"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
start_server "$WORK/fhirside-http.log" "$BIN/fhirside" serve --http --auth none --listen 127.0.0.1:0 --data-dir "$DATA"
URL=$SERVER_URL
FHIRSIDE_PID=$SERVER_PID
sleep 1
RSS_IDLE=$(rss_mb "$FHIRSIDE_PID")
log "idle RSS ${RSS_IDLE%% *} MB; seeding $PATIENTS patients"

# One curl process, one keep-alive connection, one POST per patient.
mkdir -p "$WORK/patients"
: >"$WORK/seed.curl"
for n in $(seq -w 1 "$PATIENTS"); do
    sed "s/__N__/$n/g" "$ROOT/bench/data/patient.json" >"$WORK/patients/$n.json"
    cat >>"$WORK/seed.curl" <<EOF
url = "$URL/Patient"
request = "POST"
header = "Content-Type: application/fhir+json"
header = "Prefer: return=minimal"
data-binary = "@$WORK/patients/$n.json"
output = "/dev/null"
silent
write-out = "%{http_code} %header{location}\\n"
next
EOF
done
sed -i '$d' "$WORK/seed.curl" # no "next" after the last request
SEED_START=$(date +%s.%N)
curl -K "$WORK/seed.curl" >"$WORK/seed.out"
SEED_SECS=$(awk -v s="$SEED_START" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
awk '$1 != 201 { bad++ } END { exit bad > 0 }' "$WORK/seed.out" || { head "$WORK/seed.out" >&2; die "seeding failed"; }
awk '{ n = split($2, p, "/"); print p[n - 2] }' "$WORK/seed.out" >"$WORK/ids.txt"
[ "$(wc -l <"$WORK/ids.txt")" -eq "$PATIENTS" ] || die "expected $PATIENTS ids"
RSS_SEEDED=$(rss_mb "$FHIRSIDE_PID")
FIRST_ID=$(head -1 "$WORK/ids.txt")
curl -sf -o "$WORK/read-body.json" -w '%{size_header} %{size_download}\n' "$URL/Patient/$FIRST_ID" >"$WORK/read-size.txt"
read -r READ_HEADER_BYTES READ_BODY_BYTES <"$WORK/read-size.txt"
log "seeded in ${SEED_SECS}s; a read is ${READ_HEADER_BYTES} B of headers + ${READ_BODY_BYTES} B of body"

# --- ceiling: the same stack, constant response of a read's size --------------------------------
# It runs alongside fhirside (an idle server costs nothing) so that each read row is measured right
# next to its ceiling row: on a shared machine, that keeps the ratio meaningful.
log "starting ceiling"
start_server "$WORK/ceiling.log" "$BIN/ceiling" --listen 127.0.0.1:0 --body-file "$WORK/read-body.json"
CEILING_URL=$SERVER_URL
CEILING_PID=$SERVER_PID
curl -sf -o /dev/null -w '%{size_header} %{size_download}\n' "$CEILING_URL/Patient/$FIRST_ID" >"$WORK/ceiling-size.txt"
read -r CEILING_HEADER_BYTES CEILING_BODY_BYTES <"$WORK/ceiling-size.txt"
RSS_CEILING_IDLE=$(rss_mb "$CEILING_PID")

log "read-by-id (HTTP) and ceiling, interleaved"
warm "$URL" "$WORK/read.lua"
warm "$CEILING_URL" "$WORK/read.lua"
for c in $CONNECTIONS; do
    run_wrk "read-$c" "$URL" "$WORK/read.lua" "$c"
    run_wrk "ceiling-$c" "$CEILING_URL" "$WORK/read.lua" "$c"
done
RSS_AFTER_READ=$(rss_mb "$FHIRSIDE_PID")
RSS_CEILING_AFTER=$(rss_mb "$CEILING_PID")
stop_server "$CEILING_PID"

log "create (HTTP)"
warm "$URL" "$WORK/create.lua"
for c in $CONNECTIONS; do run_wrk "create-$c" "$URL" "$WORK/create.lua" "$c"; done
RSS_AFTER_CREATE=$(rss_mb "$FHIRSIDE_PID")
HWM_FHIRSIDE=$(hwm_mb "$FHIRSIDE_PID")
stop_server "$FHIRSIDE_PID"

# --- fhirside without the audit log (same data directory, plain HTTP) ------------------------------
# The same reads with auditing off (--no-audit): the cost of writing two audit records per request.
log "starting fhirside (HTTP, --no-audit)"
start_server "$WORK/fhirside-noaudit.log" "$BIN/fhirside" serve --http --auth none --no-audit --listen 127.0.0.1:0 --data-dir "$DATA"
NOAUDIT_URL=$SERVER_URL
NOAUDIT_PID=$SERVER_PID
log "read-by-id without auditing (HTTP)"
warm "$NOAUDIT_URL" "$WORK/read.lua"
for c in $CONNECTIONS; do run_wrk "noaudit-read-$c" "$NOAUDIT_URL" "$WORK/read.lua" "$c"; done
stop_server "$NOAUDIT_PID"

# --- fhirside with authentication (built-in authority, same data directory, plain HTTP) -----------
# The same reads with a bearer token: the cost of validating it and resolving the caller's roles.
log "starting fhirside (HTTP, built-in authority)"
start_server "$WORK/fhirside-auth.log" "$BIN/fhirside" serve --http --listen 127.0.0.1:0 --data-dir "$DATA"
AUTH_URL=$SERVER_URL
AUTH_PID=$SERVER_PID
"$BIN/fhirside" app create --name bench --role "FHIR Data Reader" --output json --data-dir "$DATA" >"$WORK/app.json"
json_field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
TOKEN=$("$BIN/fhirside" token --client-id "$(json_field "$WORK/app.json" clientId)" \
    --client-secret "$(json_field "$WORK/app.json" clientSecret)" --output tsv --data-dir "$DATA")
curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" "$AUTH_URL/Patient/$FIRST_ID" || die "authenticated read failed"
{ echo "wrk.headers[\"Authorization\"] = \"Bearer $TOKEN\""; cat "$WORK/read.lua"; } >"$WORK/auth-read.lua"
log "read-by-id with a bearer token (HTTP)"
warm "$AUTH_URL" "$WORK/auth-read.lua"
for c in $CONNECTIONS; do run_wrk "auth-read-$c" "$AUTH_URL" "$WORK/auth-read.lua" "$c"; done
stop_server "$AUTH_PID"

# --- fhirside over HTTPS (same data directory, generated local certificate) ----------------------
log "starting fhirside (HTTPS)"
start_server "$WORK/fhirside-https.log" "$BIN/fhirside" serve --auth none --listen 127.0.0.1:0 --data-dir "$DATA"
HTTPS_URL=$SERVER_URL
HTTPS_PID=$SERVER_PID
sleep 1
RSS_HTTPS_IDLE=$(rss_mb "$HTTPS_PID")
curl -sfk -o /dev/null "$HTTPS_URL/Patient/$FIRST_ID" || die "HTTPS read failed"
log "read-by-id (HTTPS)"
warm "$HTTPS_URL" "$WORK/read.lua"
for c in $HTTPS_CONNECTIONS; do run_wrk "tls-read-$c" "$HTTPS_URL" "$WORK/read.lua" "$c"; done
RSS_HTTPS_AFTER_READ=$(rss_mb "$HTTPS_PID")
stop_server "$HTTPS_PID"

# --- report ------------------------------------------------------------------------------------
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.0f %%", 100 * a / b; else print "–" }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }
verdict() { if "$@"; then echo "met"; else echo "**missed**"; fi; }

HEADER_ROWS=$(report_header_rows "$LOAD_START")
LAST_C=""; for c in $CONNECTIONS; do LAST_C=$c; done
BEST_C=""; for c in $CONNECTIONS; do
    if [ -z "$BEST_C" ] || [ "${RPS[read-$c]}" -gt "${RPS[read-$BEST_C]}" ]; then BEST_C=$c; fi
done
BEST_CREATE_C=""; for c in $CONNECTIONS; do
    if [ -z "$BEST_CREATE_C" ] || [ "${RPS[create-$c]}" -gt "${RPS[create-$BEST_CREATE_C]}" ]; then BEST_CREATE_C=$c; fi
done
WORST_P99=0; for c in $CONNECTIONS; do
    if awk -v a="${P99[read-$c]}" -v b="$WORST_P99" 'BEGIN { exit !(a > b) }'; then WORST_P99=${P99[read-$c]}; fi
done

mkdir -p "$(dirname "$OUT")"
{
    echo "# Fhirside benchmark results"
    echo
    echo "| | |"
    echo "|---|---|"
    echo "$HEADER_ROWS"
    echo "| Client | $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2), -t min(c, $MAX_THREADS), ${DURATION} s per row after ${WARMUP} s warm-up, keep-alive |"
    echo "| Server | \`fhirside serve --auth none\` (embedded SQLite, default settings: audit log on), release build |"
    echo "| Data | $PATIENTS patients seeded (in ${SEED_SECS} s, one connection); reads cycle over all of them |"
    echo "| Read response | ${READ_HEADER_BYTES} B headers + ${READ_BODY_BYTES} B body (ceiling: ${CEILING_HEADER_BYTES} B + ${CEILING_BODY_BYTES} B) |"
    echo
    echo "**Client and server share the same $(nproc) cores over loopback.** Absolute numbers are a lower"
    echo "bound on what the server alone could do; compare rows as ratios within this one run."
    echo
    echo "## Throughput and latency"
    echo
    echo "| Scenario | Connections | Req/s | p50 (ms) | p99 (ms) | vs ceiling | Errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for c in $CONNECTIONS; do
        echo "| read-by-id \`GET /Patient/{id}\` | $c | ${RPS[read-$c]} | ${P50[read-$c]} | ${P99[read-$c]} | $(pct "${RPS[read-$c]}" "${RPS[ceiling-$c]}") | ${ERR[read-$c]} |"
    done
    for c in $CONNECTIONS; do
        echo "| ceiling (same stack, constant body) | $c | ${RPS[ceiling-$c]} | ${P50[ceiling-$c]} | ${P99[ceiling-$c]} | 100 % | ${ERR[ceiling-$c]} |"
    done
    for c in $CONNECTIONS; do
        echo "| read-by-id without the audit log (\`--no-audit\`) | $c | ${RPS[noaudit-read-$c]} | ${P50[noaudit-read-$c]} | ${P99[noaudit-read-$c]} | $(pct "${RPS[noaudit-read-$c]}" "${RPS[ceiling-$c]}") | ${ERR[noaudit-read-$c]} |"
    done
    for c in $CONNECTIONS; do
        echo "| read-by-id with a bearer token | $c | ${RPS[auth-read-$c]} | ${P50[auth-read-$c]} | ${P99[auth-read-$c]} | $(pct "${RPS[auth-read-$c]}" "${RPS[ceiling-$c]}") | ${ERR[auth-read-$c]} |"
    done
    for c in $HTTPS_CONNECTIONS; do
        local_ceiling=${RPS[ceiling-$c]:-0}
        echo "| read-by-id over HTTPS | $c | ${RPS[tls-read-$c]} | ${P50[tls-read-$c]} | ${P99[tls-read-$c]} | $(pct "${RPS[tls-read-$c]}" "$local_ceiling") | ${ERR[tls-read-$c]} |"
    done
    for c in $CONNECTIONS; do
        echo "| create \`POST /Patient\` ($(wc -c <"$WORK/create.json") B) | $c | ${RPS[create-$c]} | ${P50[create-$c]} | ${P99[create-$c]} | $(pct "${RPS[create-$c]}" "${RPS[ceiling-$c]}") | ${ERR[create-$c]} |"
    done
    echo
    TOTAL_ERRORS=0; for key in "${!ERR[@]}"; do TOTAL_ERRORS=$((TOTAL_ERRORS + ERR[$key])); done
    if [ "$TOTAL_ERRORS" -gt 0 ]; then
        echo "**Warning: $TOTAL_ERRORS requests failed (non-2xx or socket errors); see the raw wrk output.**"
        echo
    fi
    echo "\"vs ceiling\" is req/s divided by the ceiling's req/s at the same concurrency (the HTTPS row is"
    echo "compared with the plain-HTTP ceiling, so it includes the cost of TLS). The bearer-token rows run"
    echo "on the same data with the built-in authority on (\`fhirside serve --http\`) and a FHIR Data Reader"
    echo "app's token: their ratio to the plain read rows is the cost of authentication."
    echo
    echo "The plain read rows write two audit records per request (the default); the \`--no-audit\` rows"
    echo "do not: their ratio is the cost of auditing."
    echo
    for c in $CONNECTIONS; do
        echo "- auditing at $c connection(s): reads run at $(pct "${RPS[read-$c]}" "${RPS[noaudit-read-$c]}") of the rate without it"
        echo "- authentication at $c connection(s): $(pct "${RPS[auth-read-$c]}" "${RPS[read-$c]}") of the unauthenticated read rate"
    done
    echo
    echo "## Memory (VmRSS of the server process)"
    echo
    echo "| Process | When | VmRSS (MB) | anon | file | shmem |"
    echo "|---|---|---:|---:|---:|---:|"
    echo "| fhirside | idle, 1 s after start (empty data dir) | $RSS_IDLE |"
    echo "| fhirside | after seeding $PATIENTS patients | $RSS_SEEDED |"
    echo "| fhirside | after the read runs | $RSS_AFTER_READ |"
    echo "| fhirside | after the create runs | $RSS_AFTER_CREATE |"
    echo "| fhirside | peak (VmHWM) over the HTTP runs | $HWM_FHIRSIDE | | | |"
    echo "| fhirside (HTTPS) | idle, 1 s after start (seeded data dir) | $RSS_HTTPS_IDLE |"
    echo "| fhirside (HTTPS) | after the HTTPS read runs | $RSS_HTTPS_AFTER_READ |"
    echo "| ceiling | idle | $RSS_CEILING_IDLE |"
    echo "| ceiling | after its runs | $RSS_CEILING_AFTER |"
    echo
    echo "anon = heap and stacks, including SQLite's page caches (up to 64 MiB for the writer, 16 MiB per"
    echo "read connection) and the read-by-id cache of current versions (up to 64 MiB); file = pages of the"
    echo "binary; shmem = the WAL index (\`-shm\`)."
    echo
    echo "## Against the targets (reported, not asserted)"
    echo
    echo "| Target | Measured | |"
    echo "|---|---|---|"
    echo "| read-by-id ≥ 25,000 req/s | ${RPS[read-$BEST_C]} req/s (best, at $BEST_C connections) | $(verdict ge "${RPS[read-$BEST_C]}" 25000) |"
    echo "| read-by-id ≥ 60 % of the ceiling | $(pct "${RPS[read-$BEST_C]}" "${RPS[ceiling-$BEST_C]}") at $BEST_C connections | $(verdict ge "$(awk -v a="${RPS[read-$BEST_C]}" -v b="${RPS[ceiling-$BEST_C]}" 'BEGIN { print (b > 0) ? a / b : 0 }')" 0.6) |"
    echo "| read-by-id p99 < 5 ms | ${WORST_P99} ms (worst over $CONNECTIONS connections; ${P99[read-$LAST_C]} ms at $LAST_C) | $(verdict lt "$WORST_P99" 5) |"
    echo "| create ≥ 3,000 req/s | ${RPS[create-$BEST_CREATE_C]} req/s (best, at $BEST_CREATE_C connections) | $(verdict ge "${RPS[create-$BEST_CREATE_C]}" 3000) |"
    echo "| idle RSS < 50 MB | ${RSS_IDLE%% *} MB | $(verdict lt "${RSS_IDLE%% *}" 50) |"
} >"$OUT"
cp "$RAW" "${OUT%.md}-wrk.txt"
log "wrote $OUT (raw wrk output: ${OUT%.md}-wrk.txt)"
echo
cat "$OUT"

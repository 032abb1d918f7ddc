#!/usr/bin/env bash
# The cost of encryption at rest: Synthea-120 ingested, then reads by id, identifier searches and
# family-name searches, each on a server without and one with `--encryption-key`, alternating in one
# run so that the two see the same machine. Not part of the test suite: run it by hand.
#
#   bench/encryption.sh              # 2 rounds of each, about 6 minutes
#
# Each server is `fhirside serve --http --auth none` on a fresh temporary data directory (the
# embedded store, audit on as by default; the encrypted one with a key file). The `ingest` client
# loads the dataset with one connection; then wrk runs each request mix for ENC_DURATION seconds at
# ENC_CONNECTIONS connections. Writes bench/results/encryption.md (also printed).
#
# Environment (all optional):
#   ENC_ROUNDS=2               rounds; each runs a plain server, then an encrypted one
#   ENC_DURATION=10            seconds per wrk measurement
#   ENC_CONNECTIONS=16         wrk connections
#   ENC_DATASET=DIR            the dataset (default ../shared/datasets/synthea-120 beside the repository)
#   ENC_OUT=path.md            where to write the report (default bench/results/encryption.md)
#   BENCH_SKIP_BUILD=1         use the binaries already in $CARGO_TARGET_DIR/release
#   BENCH_KEEP=1               keep the temporary directory
#   CARGO_TARGET_DIR           cargo's target directory (default <repo>/target)
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ENC_ROUNDS:-2}
DURATION=${ENC_DURATION:-10}
CONNECTIONS=${ENC_CONNECTIONS:-16}
DATASET=${ENC_DATASET:-$ROOT/../shared/datasets/synthea-120}
OUT=${ENC_OUT:-$ROOT/bench/results/encryption.md}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release

log() { printf '[bench] %s\n' "$*" >&2; }
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"

command -v wrk >/dev/null || die "wrk is missing (apt-get install -y wrk)"
build_release fhirside ingest
make_workdir fhirside-bench-encryption
head -c 32 /dev/urandom | base64 >"$WORK/kek"
chmod 600 "$WORK/kek"

# wrk script over a file of request paths, each thread starting at a different offset.
paths_script() { # paths_script NAME
    cat >"$WORK/$1.lua" <<LUA
wrk.headers["Accept"] = "application/fhir+json"
local threads = 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
local requests, n, i = {}, 0, 0
function init(args)
  for path in io.lines("$WORK/$1.txt") do n = n + 1; requests[n] = wrk.format("GET", path) end
  i = ((tid or 0) * 379) % n
end
function request() i = i % n + 1; return requests[i] end
LUA
}

rps() { # rps URL NAME: requests/s of the mix NAME (after a 2 s warm-up), and its non-2xx count
    wrk -t 2 -c "$CONNECTIONS" -d 2s -s "$WORK/$2.lua" "$1" >/dev/null 2>&1 || true
    wrk -t 2 -c "$CONNECTIONS" -d "${DURATION}s" --timeout 10s -s "$WORK/$2.lua" "$1" >"$WORK/wrk.out" 2>&1 || die "wrk failed"
    local errors
    errors=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$WORK/wrk.out")
    [ -z "$errors" ] || die "$2: $errors non-2xx answers ($(cat "$WORK/wrk.out"))"
    awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$WORK/wrk.out"
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
ROWS=()
declare -A SUM
for round in $(seq 1 "$ROUNDS"); do
    for mode in plain encrypted; do
        dir=$WORK/$mode-$round
        args=(serve --http --auth none --listen 127.0.0.1:0 --data-dir "$dir" --max-bundle-entries 10000 --max-body-bytes 67108864)
        [ "$mode" = encrypted ] && args+=(--encryption-key "file:$WORK/kek")
        log "round $round: $mode"
        start_server "$WORK/$mode-$round.log" "$BIN/fhirside" "${args[@]}"
        url=$SERVER_URL
        pid=$SERVER_PID
        "$BIN/ingest" --url "$url" --dataset "$DATASET" --clients 1 >"$WORK/ingest.out" 2>"$WORK/ingest.err" \
            || { cat "$WORK/ingest.err" >&2; die "ingest failed ($mode)"; }
        ingest=$(tr ' ' '\n' <"$WORK/ingest.out" | sed -n 's/^resources_per_s=//p')
        # The request mixes, from the Patients as loaded (the same on both servers, ids aside).
        curl -sf "$url/Patient?_count=1000&_elements=identifier,name" | python3 -c '
import json, sys, urllib.parse
bundle = json.load(sys.stdin)
reads, identifiers, families = [], [], []
for entry in bundle.get("entry", []):
    p = entry["resource"]
    reads.append("/Patient/" + p["id"])
    for ident in p.get("identifier", [])[:1]:
        identifiers.append("/Patient?identifier=" + urllib.parse.quote(ident["system"] + "|" + ident["value"], safe=""))
    family = (p.get("name") or [{}])[0].get("family", "")
    if len(family) >= 4:
        families.append("/Patient?family=" + urllib.parse.quote(family[:4]))
for name, paths in (("read", reads), ("identifier", identifiers), ("family", families)):
    open(sys.argv[1] + "/" + name + ".txt", "w").write("\n".join(paths) + "\n")
' "$WORK"
        for mix in read identifier family; do paths_script "$mix"; done
        read_rps=$(rps "$url" read)
        identifier_rps=$(rps "$url" identifier)
        family_rps=$(rps "$url" family)
        stop_server "$pid"
        db_mb=$(du -sm "$dir/fhirside.db" | cut -f1)
        log "$mode: ingest $ingest/s, read $read_rps/s, identifier $identifier_rps/s, family $family_rps/s, db $db_mb MB"
        ROWS+=("| $round | $mode | $ingest | $read_rps | $identifier_rps | $family_rps | $db_mb |")
        for k in ingest read_rps identifier_rps family_rps db_mb; do SUM[$mode-$k]=$(( ${SUM[$mode-$k]:-0} + ${!k} )); done
    done
done

ratio() { awk -v e="${SUM[encrypted-$1]}" -v p="${SUM[plain-$1]}" 'BEGIN { printf "%.2f", e / p }'; }
HEADER=$(report_header_rows "$LOAD_START")
{
    echo "# Fhirside benchmark: the cost of encryption at rest"
    echo
    echo "| | |"
    echo "|---|---|"
    echo "$HEADER"
    echo "| Servers | \`fhirside serve --http --auth none\` (embedded store, audit on), release build; \`encrypted\` adds \`--encryption-key file:…\` |"
    echo "| Load | Synthea-120 (92,114 resources) by \`ingest\` with 1 client; then wrk, $CONNECTIONS connections, ${DURATION} s per mix |"
    echo
    echo "## Results"
    echo
    echo "| Round | Server | Ingest resources/s | Read by id req/s | \`identifier=system\\|value\` req/s | \`family=\` (4 letters) req/s | fhirside.db MB |"
    echo "|---:|---|---:|---:|---:|---:|---:|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "Encrypted as a share of plain (sums over the rounds): ingest **$(ratio ingest)**, read by id **$(ratio read_rps)**,"
    echo "identifier search **$(ratio identifier_rps)**, family search **$(ratio family_rps)**, database size $(ratio db_mb)."
} >"$OUT"
cat "$OUT"

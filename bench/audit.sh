#!/usr/bin/env bash
# The cost of the audit log on reads: the same data directory served with the audit log on (the
# default) and with `--no-audit`, alternating in one run so that both see the same machine, with
# and without a bearer token (a token fills `CallerIdentity`: the longer record). Not part of the
# test suite: run it by hand.
#
#   bench/audit.sh                   # 3 rounds, about 5 minutes
#
# Seeds AUDIT_PATIENTS patients, then per round and per mode (audit, no-audit) starts
# `fhirside serve --http` on the seeded directory and runs wrk `GET /Patient/{id}` over all of
# them for AUDIT_DURATION seconds at each of AUDIT_CONNECTIONS. The token rows use the built-in
# authority and a FHIR Data Reader app. Writes bench/results/audit.md (also printed).
#
# Environment (all optional):
#   AUDIT_ROUNDS=3              rounds; each runs every mode once
#   AUDIT_DURATION=8            seconds per wrk measurement (after a 2 s warm-up)
#   AUDIT_CONNECTIONS="16 64"   wrk connections
#   AUDIT_PATIENTS=1000         patients seeded
#   AUDIT_OUT=path.md           where to write the report (default bench/results/audit.md)
#   BENCH_SKIP_BUILD=1          use the binaries already in $CARGO_TARGET_DIR/release
#   BENCH_KEEP=1                keep the temporary directory
#   CARGO_TARGET_DIR            cargo's target directory (default <repo>/target)
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${AUDIT_ROUNDS:-3}
DURATION=${AUDIT_DURATION:-8}
CONNECTIONS=${AUDIT_CONNECTIONS:-"16 64"}
PATIENTS=${AUDIT_PATIENTS:-1000}
OUT=${AUDIT_OUT:-$ROOT/bench/results/audit.md}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release

log() { printf '[bench] %s\n' "$*" >&2; }
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"

command -v wrk >/dev/null || die "wrk is missing (apt-get install -y wrk)"
build_release fhirside
make_workdir fhirside-bench-audit
DATA=$WORK/data

# --- seed, and a reader's token -----------------------------------------------------------------
start_server "$WORK/seed.log" "$BIN/fhirside" serve --http --auth none --no-audit --listen 127.0.0.1:0 --data-dir "$DATA"
url=$SERVER_URL
: >"$WORK/seed.curl"
for n in $(seq -w 1 "$PATIENTS"); do
    sed "s/__N__/$n/g" "$ROOT/bench/data/patient.json" >"$WORK/p$n.json"
    printf 'url = "%s/Patient"\nrequest = "POST"\nheader = "Content-Type: application/fhir+json"\nheader = "Prefer: return=minimal"\ndata-binary = "@%s"\noutput = "/dev/null"\nsilent\nwrite-out = "%%{http_code} %%header{location}\\n"\nnext\n' \
        "$url" "$WORK/p$n.json" >>"$WORK/seed.curl"
done
sed -i '$d' "$WORK/seed.curl"
curl -K "$WORK/seed.curl" >"$WORK/seed.out"
awk '$1 != 201 { bad++ } END { exit bad > 0 }' "$WORK/seed.out" || { head "$WORK/seed.out" >&2; die "seeding failed"; }
awk '{ n = split($2, p, "/"); print p[n - 2] }' "$WORK/seed.out" >"$WORK/ids.txt"
stop_server "$SERVER_PID"
# The built-in authority is set up by a server that runs with authentication on.
start_server "$WORK/authority.log" "$BIN/fhirside" serve --http --no-audit --listen 127.0.0.1:0 --data-dir "$DATA"
"$BIN/fhirside" app create --name bench-reader --role "FHIR Data Reader" --output json --data-dir "$DATA" >"$WORK/app.json"
stop_server "$SERVER_PID"
json_field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
# A token's audience is the running server's base URL, whose port changes with every start.
token() {
    "$BIN/fhirside" token --client-id "$(json_field "$WORK/app.json" clientId)" \
        --client-secret "$(json_field "$WORK/app.json" clientSecret)" --output tsv --data-dir "$DATA"
}

read_script() { # read_script NAME [TOKEN]
    : >"$WORK/$1.lua"
    [ -z "${2:-}" ] || echo "wrk.headers[\"Authorization\"] = \"Bearer $2\"" >"$WORK/$1.lua"
    cat >>"$WORK/$1.lua" <<LUA
wrk.headers["Accept"] = "application/fhir+json"
local threads = 0
function setup(thread) thread:set("tid", threads); threads = threads + 1 end
local requests, n, i = {}, 0, 0
function init(args)
  for id in io.lines("$WORK/ids.txt") do n = n + 1; requests[n] = wrk.format("GET", "/Patient/" .. id) end
  i = ((tid or 0) * 379) % n
end
function request() i = i % n + 1; return requests[i] end
LUA
}

rps() { # rps URL SCRIPT CONNECTIONS: requests/s (after a 2 s warm-up); any non-2xx answer is an error
    wrk -t 2 -c "$3" -d 2s -s "$WORK/$2.lua" "$1" >/dev/null 2>&1 || true
    wrk -t 2 -c "$3" -d "${DURATION}s" --timeout 10s -s "$WORK/$2.lua" "$1" >"$WORK/wrk.out" 2>&1 || die "wrk failed"
    local errors
    errors=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$WORK/wrk.out")
    [ -z "$errors" ] || die "$2: $errors non-2xx answers ($(cat "$WORK/wrk.out"))"
    awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$WORK/wrk.out"
}

read_script read

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
ROWS=()
declare -A SUM
for round in $(seq 1 "$ROUNDS"); do
    for auth in none token; do
        for mode in audit no-audit; do
            args=(serve --http --listen 127.0.0.1:0 --data-dir "$DATA")
            [ "$auth" = none ] && args+=(--auth none)
            [ "$mode" = no-audit ] && args+=(--no-audit)
            start_server "$WORK/$mode-$auth-$round.log" "$BIN/fhirside" "${args[@]}"
            script=read
            if [ "$auth" = token ]; then
                read_script read-token "$(token)"
                script=read-token
            fi
            row="| $round | $auth | $mode |"
            for c in $CONNECTIONS; do
                r=$(rps "$SERVER_URL" "$script" "$c")
                row="$row $r |"
                SUM[$auth-$mode-$c]=$(( ${SUM[$auth-$mode-$c]:-0} + r ))
            done
            stop_server "$SERVER_PID"
            log "round $round, auth $auth, $mode:$row"
            ROWS+=("$row")
        done
    done
done

ratio() { awk -v a="${SUM[$1-audit-$2]}" -v n="${SUM[$1-no-audit-$2]}" 'BEGIN { printf "%.2f", a / n }'; }
HEADER=$(report_header_rows "$LOAD_START")
{
    echo "# Fhirside benchmark: the cost of the audit log on reads"
    echo
    echo "| | |"
    echo "|---|---|"
    echo "$HEADER"
    echo "| Servers | \`fhirside serve --http\` (embedded store), release build, the same seeded data directory; \`audit\` is the default, \`no-audit\` adds \`--no-audit\`; \`token\` rows run with the built-in authority and a FHIR Data Reader's bearer token, \`none\` rows with \`--auth none\` |"
    echo "| Load | wrk \`GET /Patient/{id}\` over $PATIENTS patients, ${DURATION} s per row after a 2 s warm-up; client and server share the 2 cores |"
    echo
    echo "## Results (requests/s)"
    echo
    printf '| Round | Auth | Mode |'; for c in $CONNECTIONS; do printf ' %s connections |' "$c"; done; echo
    printf '|---:|---|---|'; for _ in $CONNECTIONS; do printf -- '---:|'; done; echo
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "Reads with the audit log as a share of reads without it (sums over the rounds):"
    echo
    for auth in none token; do
        printf -- '- %s:' "$([ "$auth" = none ] && echo 'no authentication' || echo 'bearer token')"
        for c in $CONNECTIONS; do printf ' **%s** at %s connections;' "$(ratio "$auth" "$c")" "$c"; done
        echo
    done
} >"$OUT"
cat "$OUT"

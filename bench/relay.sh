#!/usr/bin/env bash
# Relay benchmark: messages posted to one Fhirside's relay, delivered to a second Fhirside as
# transaction Bundles. Not part of the test suite: run it by hand.
#
#   bench/relay.sh                        # embedded stores, a minute or two
#
# Starts a target `fhirside serve` (plain HTTP on loopback, its built-in authority, audit on) with
# an app registration holding FHIR Data Contributor, and a relay `fhirside serve` (plain HTTP,
# --auth none so that the load client can use the Platform API, audit on), then runs the `relay`
# load client (bench/src/bin/relay.rs): it sets up a credential and a FHIR destination as the
# README documents, verifies it, and posts RELAY_MESSAGES admission Bundles (a new Patient and an
# Encounter) from RELAY_CONCURRENCY threads, timed until the relay's logs show nothing pending.
# Each row gives delivered messages/s, the time to accept a message (on disk), and the latency
# the relay adds from accepted to stored on the target (percentiles), with both servers' CPU time.
# Writes bench/results/relay.md, also printed.
#
# Environment (all optional):
#   RELAY_MESSAGES=2000  RELAY_CONCURRENCY="1 8"
#   RELAY_OUT=path.md (default bench/results/relay.md)
#   BENCH_SKIP_BUILD=1, BENCH_KEEP=1, CARGO_TARGET_DIR as for the other scripts
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MESSAGES=${RELAY_MESSAGES:-2000}
CONCURRENCY=${RELAY_CONCURRENCY:-1 8}
OUT=${RELAY_OUT:-$ROOT/bench/results/relay.md}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release

log() { printf '[relay] %s\n' "$*" >&2; }
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
build_release fhirside relay
make_workdir fhirside-relay

json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

ROWS=()
for threads in $CONCURRENCY; do
    start_server "$WORK/target-$threads.log" "$BIN/fhirside" serve --http --listen 127.0.0.1:0 \
        --data-dir "$WORK/target-$threads"
    target_pid=$SERVER_PID
    target_url=$SERVER_URL
    tenant=$(sed -n 's/^authentication: built-in authority, tenant //p' "$WORK/target-$threads.log")
    app=$("$BIN/fhirside" app create --name relay-bench --role "FHIR Data Contributor" \
        --data-dir "$WORK/target-$threads" --output json)
    client_id=$(json_field clientId <<<"$app")
    client_secret=$(json_field clientSecret <<<"$app")
    start_server "$WORK/relay-$threads.log" "$BIN/fhirside" serve --http --auth none --listen 127.0.0.1:0 \
        --data-dir "$WORK/relay-$threads"
    relay_pid=$SERVER_PID
    relay_cpu_before=$(cpu_s "$relay_pid")
    target_cpu_before=$(cpu_s "$target_pid")
    log "$MESSAGES messages from $threads threads"
    "$BIN/relay" --relay "$SERVER_URL" --target "$target_url" --tenant "$tenant" --client-id "$client_id" \
        --client-secret "$client_secret" --messages "$MESSAGES" --concurrency "$threads" >"$WORK/relay-$threads.out" \
        || { cat "$WORK/relay-$threads.out" "$WORK/relay-$threads.log" >&2; die "the run with $threads threads failed"; }
    relay_cpu=$(sub_s "$(cpu_s "$relay_pid")" "$relay_cpu_before")
    target_cpu=$(sub_s "$(cpu_s "$target_pid")" "$target_cpu_before")
    result=$(sed -n 's/^RESULT //p' "$WORK/relay-$threads.out")
    get() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$result"; }
    log "$threads threads: $(get delivered_per_s) delivered/s, added latency p50 $(get latency_p50_ms) ms"
    ROWS+=("| $threads | $MESSAGES | $(get wall_s) | $(get delivered_per_s) | $(get accept_p50_ms) | $(get latency_p50_ms) | $(get latency_p95_ms) | $(get latency_p99_ms) | $relay_cpu | $target_cpu |")
    stop_server "$relay_pid"
    stop_server "$target_pid"
done

HEADER=$(report_header_rows "$LOAD_START")
{
    echo "# Relay benchmark"
    echo
    echo "Admission Bundles (a new Patient and an Encounter) posted to a relay and delivered to a second Fhirside as"
    echo "idempotent transactions (see bench/relay.sh): embedded stores, audit on, plain HTTP on loopback. Wall time"
    echo "from the first post until nothing is pending; accept is the relay's answer time (message on disk); the"
    echo "added latency runs from that answer to the Patient's \`meta.lastUpdated\` on the target."
    echo
    echo "| | |"
    echo "|---|---|"
    echo "$HEADER"
    echo
    echo "| Posting threads | Messages | Wall s | Delivered/s | Accept p50 ms | Added latency p50 ms | p95 ms | p99 ms | Relay CPU s | Target CPU s |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${ROWS[@]}"
} >"$OUT"
cat "$OUT"

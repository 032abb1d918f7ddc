#!/usr/bin/env bash
# MedTech benchmark: device messages through a message broker into FHIR Observations. Not part of
# the test suite: run it by hand.
#
#   bench/medtech.sh                      # MQTT and NATS JetStream, embedded store, about a minute
#
# Starts a private Mosquitto (with the in-flight and queue limits a MedTech deployment should use,
# see crates/mqtt) and a private nats-server with JetStream on free ports, then for each transport a
# fresh `fhirside serve` (plain HTTP, --auth none, audit on, as deployed) with the mappings in
# bench/data/medtech (Azure's CalculatedContent heart rate into hourly SampledData, resolution
# Create) subscribed to that broker, and runs the `medtech` load client: MEDTECH_MESSAGES messages
# from MEDTECH_DEVICES devices, timed from the first publish until the server has received them all
# (bench/src/bin/medtech.rs). Each row gives messages/s and the server's CPU time per message.
# Writes bench/results/medtech.md, also printed.
#
# Environment (all optional):
#   MEDTECH_MESSAGES=50000  MEDTECH_DEVICES=50  MEDTECH_TRANSPORTS="mqtt nats"
#   MEDTECH_OUT=path.md (default bench/results/medtech.md)
#   BENCH_SKIP_BUILD=1, BENCH_KEEP=1, CARGO_TARGET_DIR as for the other scripts
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MESSAGES=${MEDTECH_MESSAGES:-50000}
DEVICES=${MEDTECH_DEVICES:-50}
TRANSPORTS=${MEDTECH_TRANSPORTS:-mqtt nats}
OUT=${MEDTECH_OUT:-$ROOT/bench/results/medtech.md}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[medtech] %s\n' "$*" >&2; }
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"

command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || die "mosquitto is required (Debian package mosquitto)"
command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || die "nats-server is required (Debian package nats-server)"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
build_release fhirside medtech
make_workdir fhirside-medtech

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() { # wait_port PORT: until something listens on it
    local _
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
    die "nothing listens on port $1"
}

MQTT_PORT=$(free_port)
cat >"$WORK/mosquitto.conf" <<CONF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
max_inflight_messages 1000
max_queued_messages 1000000
persistence false
CONF
PATH="$PATH:/usr/sbin" mosquitto -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
PIDS+=("$!")
NATS_PORT=$(free_port)
PATH="$PATH:/usr/sbin" nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$WORK/nats" >"$WORK/nats.log" 2>&1 &
PIDS+=("$!")
wait_port "$MQTT_PORT"
wait_port "$NATS_PORT"

ROWS=()
for transport in $TRANSPORTS; do
    case $transport in
        mqtt) broker="mqtt://127.0.0.1:$MQTT_PORT"
              broker_args=(--medtech-mqtt "$broker" --medtech-mqtt-topic "medtech/#")
              client_args=(--topic medtech/bench) ;;
        nats) broker="nats://127.0.0.1:$NATS_PORT"
              broker_args=(--medtech-nats "$broker" --medtech-nats-stream MEDTECH --medtech-nats-subject "medtech.>")
              client_args=(--stream MEDTECH --subject medtech.bench) ;;
        *) die "MEDTECH_TRANSPORTS: unknown transport $transport (mqtt, nats)" ;;
    esac
    start_server "$WORK/fhirside-$transport.log" "$BIN/fhirside" serve --http --auth none --listen 127.0.0.1:0 \
        --data-dir "$WORK/data-$transport" --medtech-resolution create \
        --medtech-device-mapping "$ROOT/bench/data/medtech/device-mapping.json" \
        --medtech-fhir-mapping "$ROOT/bench/data/medtech/fhir-mapping.json" "${broker_args[@]}"
    pid=$SERVER_PID
    cpu_before=$(cpu_s "$pid")
    log "$transport: $MESSAGES messages from $DEVICES devices"
    "$BIN/medtech" --url "$SERVER_URL" --transport "$transport" --broker "$broker" --messages "$MESSAGES" \
        --devices "$DEVICES" "${client_args[@]}" >"$WORK/medtech-$transport.out" \
        || { cat "$WORK/medtech-$transport.out" "$WORK/fhirside-$transport.log" >&2; die "the $transport run failed"; }
    cpu_after=$(cpu_s "$pid")
    result=$(sed -n 's/^RESULT //p' "$WORK/medtech-$transport.out")
    get() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" <<<"$result"; }
    us=$(awk -v a="$cpu_before" -v b="$cpu_after" -v n="$MESSAGES" 'BEGIN { printf "%.1f", (b - a) / n * 1e6 }')
    cpu=$(awk -v a="$cpu_before" -v b="$cpu_after" 'BEGIN { printf "%.1f", b - a }')
    log "$transport: $(get messages_per_s) messages/s"
    ROWS+=("| $transport | $MESSAGES | $DEVICES | $(get wall_s) | $(get messages_per_s) | $(get publish_s) | $(get observations) | $cpu | $us |")
    stop_server "$pid"
done

HEADER=$(report_header_rows "$LOAD_START")
{
    echo "# MedTech benchmark"
    echo
    echo "Device messages through a broker into Observations (see bench/medtech.sh): Azure's CalculatedContent heart"
    echo "rate into hourly SampledData, resolution Create, embedded store, audit on; from the first publish until the"
    echo "server has received every message."
    echo
    echo "| | |"
    echo "|---|---|"
    echo "$HEADER"
    echo
    echo "| Transport | Messages | Devices | Wall s | Messages/s | Published in s | Observation writes | Server CPU s | CPU µs per message |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${ROWS[@]}"
} >"$OUT"
cat "$OUT"

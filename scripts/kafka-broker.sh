#!/usr/bin/env bash
# A Kafka-compatible broker on this machine, for trying Sluice on Kafka and for
# the tests: tansu (https://github.com/tansu-io/tansu), built with cargo.
#
#   scripts/kafka-broker.sh install            # cargo install tansu (once; ~8 min on 2 cores)
#   scripts/kafka-broker.sh start [memory|sqlite]   # default memory; sqlite survives restarts
#   scripts/kafka-broker.sh stop
#   scripts/kafka-broker.sh status
#
# Listens on 127.0.0.1:${SLUICE_KAFKA_PORT:-9092}. State (PID file, log, the
# sqlite database) lives in ${SLUICE_KAFKA_DIR:-$HOME/.cache/sluice-kafka}.
# The broker is stopped by its PID, never by name.
set -euo pipefail

TANSU_VERSION=0.6.0
PORT="${SLUICE_KAFKA_PORT:-9092}"
DIR="${SLUICE_KAFKA_DIR:-$HOME/.cache/sluice-kafka}"
PIDFILE="$DIR/tansu-$PORT.pid"
LOG="$DIR/tansu-$PORT.log"

tansu_bin() {
    if command -v tansu >/dev/null 2>&1; then
        command -v tansu
    elif [ -x "$HOME/.cargo/bin/tansu" ]; then
        echo "$HOME/.cargo/bin/tansu"
    fi
}

install() {
    if [ -n "$(tansu_bin)" ]; then
        return 0
    fi
    echo "installing tansu $TANSU_VERSION with cargo (once; about 8 minutes on 2 cores)..." >&2
    CARGO_TARGET_DIR="$HOME/.cache/tansu-build" \
        cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore,libsql
}

running() {
    [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

wait_ready() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
            return 0
        fi
        if ! running; then
            echo "tansu exited; its log ($LOG):" >&2
            tail -20 "$LOG" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "tansu did not answer on 127.0.0.1:$PORT within 10 s; log: $LOG" >&2
    return 1
}

start() {
    local storage="${1:-memory}"
    install
    mkdir -p "$DIR"
    if running; then
        echo "tansu already running on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))" >&2
        return 0
    fi
    local url
    case "$storage" in
        memory) url="memory://tansu/" ;;
        sqlite) url="sqlite://tansu-$PORT.db" ;;   # relative to $DIR: tansu reads absolute paths as relative
        *) echo "storage must be memory or sqlite, not '$storage'" >&2; exit 2 ;;
    esac
    (cd "$DIR" && exec "$(tansu_bin)" broker --storage-engine "$url" \
        --listener-url "tcp://127.0.0.1:$PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$PORT") >"$LOG" 2>&1 &
    echo $! >"$PIDFILE"
    wait_ready
    echo "tansu ($storage) listening on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))" >&2
}

stop() {
    if running; then
        local pid
        pid="$(cat "$PIDFILE")"
        kill "$pid"
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        echo "stopped tansu (pid $pid)" >&2
    fi
    rm -f "$PIDFILE"
}

case "${1:-}" in
    install) install ;;
    start) start "${2:-memory}" ;;
    stop) stop ;;
    status)
        if running; then echo "running (pid $(cat "$PIDFILE")) on 127.0.0.1:$PORT"; else echo "not running"; exit 1; fi ;;
    *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac

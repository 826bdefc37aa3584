#!/usr/bin/env bash
# The quickstart: build sluice and the example modules, start the host on the
# embedded log, feed examples/quickstart/orders.jsonl, print what the modules
# produced, stop the host.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/bootstrap.sh
. scripts/env.sh

QS=examples/quickstart
RUN=$QS/.run
PORT=${SLUICE_PORT:-7070}
MODULES="filter aggregator router"

echo "==> building sluice and the example modules (the first build takes a while)"
cargo build --release -p sluice-host
GUESTS="$CARGO_TARGET_DIR/wasm-guests"   # the same directory the tests build modules in
cargo build --profile wasm --target wasm32-wasip2 --target-dir "$GUESTS" $(for m in $MODULES; do echo -p $m; done)

rm -rf "$RUN"
for m in $MODULES; do
  mkdir -p "$RUN/modules/$m"
  cp "modules/$m/module.toml" "$GUESTS/wasm32-wasip2/wasm/$m.wasm" "$RUN/modules/$m/"
done

SLUICE="$CARGO_TARGET_DIR/release/sluice"
export SLUICE_ADDR="http://127.0.0.1:$PORT"
echo "==> starting the host on 127.0.0.1:$PORT (log: $RUN/host.log)"
"$SLUICE" run --config "$QS/sluice.toml" --listen "127.0.0.1:$PORT" >"$RUN/host.log" 2>&1 &
HOST=$!
trap 'kill -TERM $HOST 2>/dev/null || true; wait $HOST 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do
  "$SLUICE" status >/dev/null 2>&1 && break
  kill -0 $HOST 2>/dev/null || { cat "$RUN/host.log"; exit 1; }
  sleep 0.1
done
# The host generated an API token at first start; the CLI needs it to produce.
[ -n "${SLUICE_API_TOKEN:-}" ] || export SLUICE_API_TOKEN="$(cat "$RUN/data/api-token")"

echo "==> producing $(wc -l <"$QS/orders.jsonl") sample events to 'orders'"
"$SLUICE" produce orders --file "$QS/orders.jsonl"
"$SLUICE" status --wait-idle 30 >/dev/null

echo; echo "==> modules"
"$SLUICE" modules
for topic in large-orders totals order-events payment-events router.dlq; do
  echo; echo "==> topic $topic"
  "$SLUICE" tail "$topic" --no-follow --short
done

#!/usr/bin/env bash
# Runs every test: unit tests, doc tests, and the end-to-end tests that build
# the guest modules from source and drive real `sluice` processes.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
# The Kafka tests run against a real broker: tansu, built with cargo once
# (~8 minutes on 2 cores) and then found in ~/.cargo/bin.
scripts/kafka-broker.sh install
# tansu 0.6's command line cannot enable its TLS listener (--cert and --key
# conflict), so the TLS test puts socat's OpenSSL listener in front of it.
if ! command -v socat >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test: installing socat" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq socat >/dev/null
  else
    echo "test: socat is missing (Debian/Ubuntu: sudo apt-get install socat)" >&2
    exit 1
  fi
fi
# The tests build JavaScript and Python modules with pinned toolchains from
# the npm registry and PyPI, installed once into ~/.cache/sluice-tools (keyed
# by the lock files in guest-sdk/js and guest-sdk/python).
scripts/guest-tools.sh install
# The observability tests run a real Prometheus (Debian's package, which
# also brings promtool: this checks the alert rules and the Grafana
# dashboard's queries first) and the dashboard in headless Chromium, driven
# by puppeteer-core pinned in tests/browser/.
scripts/check-observability.sh
scripts/browser-tools.sh install
# The registry test drives the host with confluent-kafka's own
# SchemaRegistryClient (PyPI, pinned with hashes in tests/registry/).
scripts/registry-tools.sh install
. scripts/env.sh
cargo test --release --workspace "$@"

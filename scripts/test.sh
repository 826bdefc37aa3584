#!/usr/bin/env bash
# Runs every test: unit tests, doc tests, and the end-to-end tests that build
# the guest modules from source and drive real `sluice` processes.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
. scripts/env.sh
cargo test --release --workspace "$@"

# Sourced by the scripts: one shared build directory outside the checkout, so
# the quickstart, the tests and CI reuse each other's builds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice-target}"

#!/usr/bin/env bash
# Installs the pinned Confluent Schema Registry client (confluent-kafka's
# SchemaRegistryClient) that tests/registry/client.py drives against the
# host's registry API, once per lock file, into $SLUICE_TOOLS (default
# ~/.cache/sluice-tools):
#   registry-<lock hash>/venv     from tests/registry/requirements.lock (pip --require-hashes)
# A changed lock file installs into a new directory; an unchanged one is reused.
#
#   scripts/registry-tools.sh install     # install (if needed)
#   scripts/registry-tools.sh dir         # print the directory (installing if needed);
#                                         # its venv/bin/python runs client.py
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
LOCK="$HERE/../tests/registry/requirements.lock"
TOOLS="${SLUICE_TOOLS:-$HOME/.cache/sluice-tools}"

# Of the file's contents only: its path differs between checkouts, the
# client it pins does not.
hash_of() { cat "$@" | sha256sum | cut -c1-16; }

# Installed in place and marked complete last, so an interrupted install is
# redone rather than used.
registry_dir() {
  local dir
  dir="$TOOLS/registry-$(hash_of "$LOCK")"
  if [ ! -f "$dir/.complete" ]; then
    command -v python3 >/dev/null || { echo "python3 is needed for the Schema Registry client tests" >&2; exit 1; }
    echo "==> installing the Schema Registry client into $dir (once)" >&2
    rm -rf "$dir" && mkdir -p "$dir"
    python3 -m venv "$dir/venv"
    "$dir/venv/bin/pip" install -q --require-hashes -r "$LOCK" >&2
    touch "$dir/.complete"
  fi
  echo "$dir"
}

case "${1:-install}" in
  install) registry_dir >/dev/null ;;
  dir) registry_dir ;;
  *) echo "usage: $0 install|dir" >&2; exit 2 ;;
esac

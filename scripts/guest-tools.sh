#!/usr/bin/env bash
# Installs the pinned toolchains for JavaScript and Python modules, once per
# lock file, into $SLUICE_TOOLS (default ~/.cache/sluice-tools):
#   js-<lock hash>/node_modules   from guest-sdk/js/package-lock.json (npm ci)
#   py-<lock hash>/venv           from guest-sdk/python/requirements.lock (pip --require-hashes)
# A changed lock file installs into a new directory; an unchanged one is reused.
#
#   scripts/guest-tools.sh install        # both
#   scripts/guest-tools.sh js-dir         # print the JS toolchain directory (installing if needed)
#   scripts/guest-tools.sh py-dir         # print the Python venv directory (installing if needed)
#
# The SDK directory (with js/ and python/) is taken from SLUICE_SDK, else this
# repository's guest-sdk/ (or, in a module made by `sluice new`, the .sluice/
# directory this script sits in).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
if [ -n "${SLUICE_SDK:-}" ]; then SDK="$SLUICE_SDK"
elif [ -d "$HERE/../guest-sdk/js" ]; then SDK="$HERE/../guest-sdk"
else SDK="$HERE"; fi
TOOLS="${SLUICE_TOOLS:-$HOME/.cache/sluice-tools}"

# Of the files' contents only: their paths differ between checkouts (and
# between modules made by `sluice new`), the toolchain they pin does not.
hash_of() { cat "$@" | sha256sum | cut -c1-16; }

# Each toolchain is installed in place and marked complete last, so an
# interrupted install is redone rather than used.
js_dir() {
  local lock="$SDK/js/package-lock.json" dir
  dir="$TOOLS/js-$(hash_of "$SDK/js/package.json" "$lock")"
  if [ ! -f "$dir/.complete" ]; then
    command -v npm >/dev/null || { echo "npm is needed for JavaScript modules (Node.js 20 or newer)" >&2; exit 1; }
    echo "==> installing the JavaScript module toolchain into $dir (once)" >&2
    rm -rf "$dir" && mkdir -p "$dir"
    cp "$SDK/js/package.json" "$lock" "$dir/"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
    touch "$dir/.complete"
  fi
  echo "$dir"
}

py_dir() {
  local lock="$SDK/python/requirements.lock" dir
  dir="$TOOLS/py-$(hash_of "$lock")"
  if [ ! -f "$dir/.complete" ]; then
    command -v python3 >/dev/null || { echo "python3 is needed for Python modules" >&2; exit 1; }
    echo "==> installing the Python module toolchain into $dir (once)" >&2
    rm -rf "$dir" && mkdir -p "$dir"
    python3 -m venv "$dir/venv"
    "$dir/venv/bin/pip" install -q --require-hashes -r "$lock" >&2
    touch "$dir/.complete"
  fi
  echo "$dir"
}

case "${1:-install}" in
  install) js_dir >/dev/null; py_dir >/dev/null ;;
  js-dir) js_dir ;;
  py-dir) py_dir ;;
  *) echo "usage: $0 install|js-dir|py-dir" >&2; exit 2 ;;
esac

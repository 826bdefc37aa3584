#!/usr/bin/env bash
# Installs what the dashboard browser test needs, once per lock file:
#   - the system Chromium (Debian's package, via apt-get, when it is missing;
#     puppeteer never downloads a browser here);
#   - tests/browser/ (puppeteer-core, pinned by its package-lock.json) with
#     npm ci into $SLUICE_TOOLS (default ~/.cache/sluice-tools):
#       browser-<hash of package.json + package-lock.json>/node_modules
# A changed lock file installs into a new directory; an unchanged one is reused.
#
#   scripts/browser-tools.sh install      # Chromium and the npm packages
#   scripts/browser-tools.sh dir          # print the directory (installing if needed)
#
# Then:
#   SLUICE_BROWSER_TOOLS="$(scripts/browser-tools.sh dir)" \
#     node tests/browser/dashboard.mjs http://127.0.0.1:7070/ /tmp/dashboard.png
# CHROMIUM=/path/to/chrome overrides the browser the driver launches.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
SRC="$HERE/../tests/browser"
TOOLS="${SLUICE_TOOLS:-$HOME/.cache/sluice-tools}"

# Of the files' contents only: their paths differ between checkouts (and
# between modules made by `sluice new`), the toolchain they pin does not.
hash_of() { cat "$@" | sha256sum | cut -c1-16; }

chromium_path() {
  if [ -n "${CHROMIUM:-}" ]; then echo "$CHROMIUM"; return 0; fi
  command -v chromium || command -v chromium-browser || return 1
}

ensure_chromium() {
  if [ -n "${CHROMIUM:-}" ]; then
    [ -x "$CHROMIUM" ] || { echo "CHROMIUM=$CHROMIUM is not an executable" >&2; exit 1; }
    return 0
  fi
  chromium_path >/dev/null && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "Chromium is needed for the browser test: install it (Debian: apt-get install chromium)" >&2
    echo "or set CHROMIUM to a Chrome/Chromium executable" >&2
    exit 1
  fi
  echo "==> installing Chromium with apt-get (once)" >&2
  # Another apt-get may hold the lock for a while: wait for it rather than fail.
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q update >&2
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -y -q install chromium >&2
  chromium_path >/dev/null || { echo "apt-get installed no chromium executable" >&2; exit 1; }
}

# Installed in place and marked complete last, so an interrupted install is
# redone rather than used.
node_dir() {
  local lock="$SRC/package-lock.json" dir
  dir="$TOOLS/browser-$(hash_of "$SRC/package.json" "$lock")"
  if [ ! -f "$dir/.complete" ]; then
    command -v npm >/dev/null || { echo "npm is needed for the browser test (Node.js 18 or newer)" >&2; exit 1; }
    echo "==> installing the browser test driver into $dir (once)" >&2
    rm -rf "$dir" && mkdir -p "$dir"
    cp "$SRC/package.json" "$lock" "$dir/"
    # No browser download (puppeteer-core has none; the variable guards the rest).
    (cd "$dir" && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >&2)
    touch "$dir/.complete"
  fi
  echo "$dir"
}

case "${1:-install}" in
  install) ensure_chromium; node_dir >/dev/null ;;
  dir) ensure_chromium; node_dir ;;
  *) echo "usage: $0 install|dir" >&2; exit 2 ;;
esac

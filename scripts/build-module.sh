#!/usr/bin/env bash
# Builds a Sluice module directory into the component its module.toml names
# (`component = "..."`), ready for `sluice deploy <dir>`; or runs its tests.
#
#   scripts/build-module.sh build <module-dir>
#   scripts/build-module.sh test  <module-dir>
#
# The language is read from the directory:
#   Cargo.toml                  Rust: cargo build --target wasm32-wasip2 --release
#   src/index.js or src/index.ts JavaScript / TypeScript: bundled with the `sluice`
#                               helpers (rolldown), then componentize-js
#   src/handler.py              Python: packaged with the `sluice` helpers, then
#                               componentize-py
# Tests: `cargo test` (native), `node --test` on test/ with an in-memory host,
# `python3 -m unittest` on tests/ with an in-memory host.
#
# Toolchains are pinned and installed once by scripts/guest-tools.sh. In a
# module made by `sluice new` this script is .sluice/build.sh, with the WIT
# contract and the helpers beside it.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
if [ -d "$HERE/../guest-sdk/js" ]; then      # this repository
  ROOT="$HERE/.."; WIT="$ROOT/wit"; SDK="$ROOT/guest-sdk"; TOOLS_SH="$HERE/guest-tools.sh"
else                                         # a scaffolded module's .sluice/
  WIT="$HERE/wit"; SDK="$HERE"; TOOLS_SH="$HERE/tools.sh"
fi
export SLUICE_SDK="$SDK"

cmd="${1:-}"; dir="${2:-}"
[ -n "$dir" ] && [ -f "$dir/module.toml" ] || { echo "usage: $0 build|test <module-dir with module.toml>" >&2; exit 2; }
dir="$(cd "$dir" && pwd)"

lang=""
if [ -f "$dir/Cargo.toml" ]; then lang=rust
elif [ -f "$dir/src/index.js" ] || [ -f "$dir/src/index.ts" ]; then lang=js
elif [ -f "$dir/src/handler.py" ]; then lang=python
else echo "$dir: no Cargo.toml, src/index.js, src/index.ts or src/handler.py: which language is this module in?" >&2; exit 2; fi

# The component path from module.toml (relative to the module directory).
component=$(sed -n 's/^component *= *"\(.*\)".*/\1/p' "$dir/module.toml" | head -1)
[ -n "$component" ] || { echo "$dir/module.toml: component: missing" >&2; exit 2; }
out="${SLUICE_BUILD_OUT:-$dir/$component}"   # SLUICE_BUILD_OUT: write it elsewhere (the test harness does)
mkdir -p "$(dirname "$out")"

build_rust() {
  local name target
  name=$(sed -n 's/^name *= *"\(.*\)".*/\1/p' "$dir/Cargo.toml" | head -1 | tr - _)
  target="${CARGO_TARGET_DIR:-$dir/target}"
  (cd "$dir" && cargo build --quiet --release --target wasm32-wasip2)
  cp "$target/wasm32-wasip2/release/$name.wasm" "$out"
}

build_js() {
  local js tmp entry src
  js=$("$TOOLS_SH" js-dir)
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  src="$dir/src/index.js"; [ -f "$src" ] || src="$dir/src/index.ts"
  cat >"$tmp/entry.js" <<JS
import { handle as userHandle } from "$src";
import { run } from "sluice";
export function handle(event) { return run(userHandle, event); }
JS
  cat >"$tmp/rolldown.config.mjs" <<JS
export default {
  input: "$tmp/entry.js",
  output: { file: "$tmp/bundle.js", format: "esm" },
  external: [/^sluice:processor\\//],
  resolve: { alias: { sluice: "$SDK/js/sluice.js" } },
  platform: "neutral",
  logLevel: "warn",
};
JS
  (cd "$tmp" && "$js/node_modules/.bin/rolldown" -c "$tmp/rolldown.config.mjs" >/dev/null)
  # No outgoing HTTP (fetch) and no incoming-request handler: a module's only
  # channels are the sluice:processor imports.
  "$js/node_modules/.bin/componentize-js" --wit "$WIT" --world-name processor \
    --disable http fetch-event -o "$out" "$tmp/bundle.js" >/dev/null
}

build_python() {
  local py tmp
  py=$("$TOOLS_SH" py-dir)
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  cp -r "$dir/src/." "$tmp/"
  cp -r "$SDK/python/sluice" "$tmp/"
  cat >"$tmp/sluice_entry.py" <<'PY'
import wit_world
from componentize_py_types import Err
from wit_world.imports import types

import handler
import sluice


class WitWorld(wit_world.WitWorld):
    def handle(self, event):
        outcome = sluice.run(handler.handle, event)
        if outcome is not None:
            kind, message = outcome
            failure = types.Failure_Retry(message) if kind == "retry" else types.Failure_Reject(message)
            raise Err(failure)
PY
  "$py/venv/bin/componentize-py" -d "$WIT" -w processor componentize -p "$tmp" sluice_entry -o "$out" >/dev/null
}

case "$cmd" in
  build)
    "build_$lang"
    echo "$out"
    ;;
  test)
    case "$lang" in
      rust) (cd "$dir" && cargo test --quiet) ;;
      js) (cd "$dir" && node --import "$SDK/js/testing.mjs" --test test/) ;;
      python) (cd "$dir" && PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$dir/src:$SDK/python" python3 -m unittest discover -s tests -v) ;;
    esac
    ;;
  *) echo "usage: $0 build|test <module-dir>" >&2; exit 2 ;;
esac

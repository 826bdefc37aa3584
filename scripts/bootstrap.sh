#!/usr/bin/env bash
# Installs what building Sluice needs on a fresh machine: the wasm32-wasip2
# Rust target (guest modules) and libclang (bindgen, for the rocksdb crate).
set -euo pipefail

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "bootstrap: adding the wasm32-wasip2 target" >&2
  rustup target add wasm32-wasip2
fi

have_libclang() {
  [ -n "${LIBCLANG_PATH:-}" ] && return 0
  compgen -G "/usr/lib/llvm-*/lib/libclang*.so*" >/dev/null || compgen -G "/usr/lib/x86_64-linux-gnu/libclang*.so*" >/dev/null
}
if ! have_libclang; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing libclang-dev" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev >/dev/null
  else
    echo "bootstrap: libclang is missing; install it (Debian/Ubuntu: sudo apt-get install libclang-dev)" >&2
    exit 1
  fi
fi

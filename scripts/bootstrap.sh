#!/usr/bin/env bash
# Installs what building Sluice needs on a fresh machine: the wasm32-wasip2
# Rust target (guest modules) and libclang (bindgen, for the rocksdb crate).
# Nothing else: the quickstart runs this first and needs no more. What only
# the tests need (the Kafka broker, the JavaScript and Python toolchains) is
# installed by scripts/test.sh.
set -euo pipefail

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "bootstrap: adding the wasm32-wasip2 target" >&2
  rustup target add wasm32-wasip2
fi

# Only libclang itself counts: libclang-cpp (often preinstalled) is not what
# bindgen loads.
have_libclang() {
  [ -n "${LIBCLANG_PATH:-}" ] && return 0
  if command -v dpkg >/dev/null; then
    dpkg -s libclang-dev >/dev/null 2>&1 && return 0
  fi
  compgen -G "/usr/lib/llvm-*/lib/libclang.so" >/dev/null
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

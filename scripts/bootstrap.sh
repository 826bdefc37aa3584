#!/usr/bin/env bash
# Installs what building Sluice needs on a fresh machine: the wasm32-wasip2
# Rust target (guest modules), libclang (bindgen, for the rocksdb crate) and
# OpenSSL's headers (librdkafka's TLS and SASL).
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
# librdkafka's TLS and SASL/SCRAM use the system OpenSSL (found by pkg-config).
have_openssl() {
  command -v pkg-config >/dev/null && pkg-config --exists openssl
}
missing=()
have_libclang || missing+=(libclang-dev)
have_openssl || missing+=(libssl-dev pkg-config)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "bootstrap: missing ${missing[*]}; install them (Debian/Ubuntu: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi

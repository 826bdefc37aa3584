#!/usr/bin/env bash
# Keep the shared build cache ($CARGO_TARGET_DIR) from filling the disk.
#
# Every checkout at a new path (each CI run clones to a fresh directory)
# hashes the workspace crates differently, so their incremental caches pile
# up: about a gigabyte per checkout. An incremental cache is only a speed-up
# for the next compile of its crate, so dropping one is always safe; cargo
# starts a new one. This drops those untouched for 12 hours, and all of them
# when less than 10 GiB is free.
set -euo pipefail
. "$(dirname "$0")/env.sh"
inc="$CARGO_TARGET_DIR/release/incremental"
[ -d "$inc" ] || exit 0
find "$inc" -mindepth 1 -maxdepth 1 -type d -mmin +720 -exec rm -rf {} +
free_kib=$(df -Pk "$CARGO_TARGET_DIR" | awk 'NR == 2 { print $4 }')
if [ "$free_kib" -lt $((10 * 1024 * 1024)) ]; then
  echo "prune-cache: less than 10 GiB free; dropping every incremental cache" >&2
  rm -rf "$inc"
fi

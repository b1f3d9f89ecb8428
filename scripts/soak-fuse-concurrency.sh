#!/usr/bin/env bash
# A longer run of tests/tests/fuse_concurrency.rs than the test command's:
# writers, renames, deletes and listers at once in one tree of each FUSE
# server for SECS seconds (default 300), then e2fsck -fn and the kernel's
# reading of the image against what the clients believe they made.
# Run as root.   SECS=1800 bash scripts/soak-fuse-concurrency.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/sbin:/sbin
cargo build -q -p ext4-fuse -p ext4-fuse-bsd
EXT4_FUSE_CONC_SECS=${SECS:-300} \
    cargo test -q -p ext4-tests --test fuse_concurrency -- --nocapture

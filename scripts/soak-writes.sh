#!/usr/bin/env bash
# A longer run of the write path's random operation sequences (every
# profile of the feature matrix, e2fsck -fn and the kernel's ext4 after
# each sequence) than the test command's: CASES sequences per profile
# (default 200). Run as root for the kernel comparison.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/sbin:/sbin
export EXT4_WRITE_CASES=${CASES:-200}
cargo test -p ext4-tests --test engine_writes random -- --test-threads=2

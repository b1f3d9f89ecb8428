#!/usr/bin/env bash
# A longer run of the journal's crash tests than the test command's:
# CASES random sequences per profile (default 50), each crashed at POINTS
# points (default: every flush and as many between), every crash image
# recovered by the engine and in turn by e2fsck and the kernel's mount.
# Run as root for the kernel's recovery.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/sbin:/sbin
export EXT4_CRASH_CASES=${CASES:-50}
export EXT4_CRASH_POINTS=${POINTS:-100000}
cargo test -p ext4-tests --test journal_writes random_crashes -- --test-threads=2

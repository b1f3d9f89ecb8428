#!/usr/bin/env bash
# A longer run of tests/tests/fuse_crash.rs than the test command's: kill -9
# of each FUSE server during an unpack with random fsyncs, ROUNDS rounds per
# server (default 50) from seed SEED (default random, printed), each crashed
# image replayed by the kernel's ext4 and by the server, every fsynced file
# checked and e2fsck -fn run after each. Run as root.
#   ROUNDS=200 SEED=12345 bash scripts/soak-fuse-crash.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/sbin:/sbin
seed=${SEED:-$(( (RANDOM << 15 | RANDOM) + 1 ))}
echo "seed $seed (SEED=$seed repeats this run)"
cargo build -q -p ext4-fuse -p ext4-fuse-bsd
EXT4_FUSE_CRASH_ROUNDS=${ROUNDS:-50} EXT4_FUSE_CRASH_SEED=$seed \
    cargo test -q -p ext4-tests --test fuse_crash -- --nocapture

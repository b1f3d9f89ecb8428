#!/usr/bin/env bash
# A longer run of frontend-linux/tests/iomap_writes.rs's fsx than the test
# command's: OPS random operations (default 1,000,000) through the kernel
# model on each of the three images (ext4 4 KiB, ext4 1 KiB blocks, ext3),
# for SEEDS seeds (default 3) from SEED (default random, printed); after
# each run e2fsck -fn must be clean and the kernel's ext4 must read exactly
# the model's bytes. Run as root (the kernel comparison loop-mounts).
#   OPS=200000 SEEDS=5 SEED=12345 bash scripts/soak-iomap-fsx.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/sbin:/sbin
seed=${SEED:-$(( (RANDOM << 15 | RANDOM) + 1 ))}
echo "seed $seed (SEED=$seed repeats this run)"
cargo test -q -p ext4-fuse --test iomap_writes --no-run
for i in $(seq 0 $(( ${SEEDS:-3} - 1 ))); do
    s=$(( seed + i ))
    echo "== seed $s"
    IOMAP_FSX_OPS=${OPS:-1000000} IOMAP_FSX_SEED=$s \
        cargo test -q -p ext4-fuse --test iomap_writes fsx_ -- --nocapture --test-threads=1 2>&1 \
        | grep -v '^ext4-fuse: fallocate on inode .*: unsupported'
done

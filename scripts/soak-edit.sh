#!/usr/bin/env bash
# A longer run of frontend-image/tests/edit_kernel.rs than the test
# command's: COUNT random edit sequences (default 20) of OPS edits each
# (default 150) from seed SEED (default random, printed), applied by
# ext4-image and by the shell tools on the kernel's mount, on every base
# image row; e2fsck -fn and the two trees compared after each. Run as root.
#   COUNT=50 OPS=200 SEED=12345 bash scripts/soak-edit.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/sbin:/sbin
seed=${SEED:-$(( (RANDOM << 15 | RANDOM) + 1 ))}
echo "seed $seed (SEED=$seed repeats this run)"
seeds=$(seq -s, "$seed" $(( seed + ${COUNT:-20} - 1 )))
EDIT_SEEDS=$seeds EDIT_OPS=${OPS:-150} \
    cargo test -q -p ext4-image --test edit_kernel -- --nocapture

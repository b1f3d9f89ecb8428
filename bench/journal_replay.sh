#!/usr/bin/env bash
# Journal recovery: `ext4-image recover` against `e2fsck -E journal_only`
# (replay into the image), and the engine's in-memory replay (`ext4-image
# info`, which opens the image replaying it in memory) beside them, on
# copies of one image whose 128 MiB journal the kernel left as full of
# committed transactions as it lets it get (~90 MiB: it checkpoints when a
# quarter is left): thousands of fsynced creates, then EXT4_IOC_SHUTDOWN
# without flushing the log (xfs_io's shutdown). Cold
# (page cache dropped before each run) and warm; the median of RUNS runs;
# ratios against e2fsck.
#
# The crash image is built once and kept under bench/out/ (delete it to
# rebuild). Needs root (loop mount, shutdown, drop_caches).
#
#   bash bench/journal_replay.sh            RUNS=5 by default
#   TOOL=path/to/ext4-image bash bench/journal_replay.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
runs=${RUNS:-5}
[ "$(id -u)" = 0 ] || { echo "journal_replay.sh: needs root (loop mount, shutdown)" >&2; exit 1; }
command -v xfs_io >/dev/null || apt-get install -y -q xfsprogs >/dev/null

if [ -n "${TOOL:-}" ]; then
    tool=$(realpath "$TOOL")
else
    cargo build --release -q -p ext4-image
    tool=${CARGO_TARGET_DIR:-$PWD/target}/release/ext4-image
fi

mkdir -p "$out"
crash=$out/journal-128m.img
mnt=$out/journal-mnt
work=$out/journal-work.img
trap 'if mountpoint -q "$mnt"; then umount "$mnt"; fi; rm -f "$work"' EXIT

if [ ! -f "$crash" ]; then
    echo "building $crash ..." >&2
    tmp=$out/journal-build.img
    rm -f "$tmp"
    mke2fs -F -q -t ext4 -b 4096 -O metadata_csum,64bit -J size=128 \
        -E lazy_itable_init=0,lazy_journal_init=0,nodiscard "$tmp" 2G
    mkdir -p "$mnt"
    # commit=600: only fsyncs commit. Each of 3,300 fsynced creates is a
    # transaction of about eight log blocks (its inode's table block, the
    # bitmaps, the directory block, the descriptors, the commit block).
    # jbd2 checkpoints (and the log's tail moves) once less than a quarter
    # of the journal (its largest transaction) is free, so about 96 MiB is
    # the fullest log it leaves.
    mount -o loop,commit=600 "$tmp" "$mnt"
    python3 - "$mnt" <<'EOF2'
import os, sys
root = sys.argv[1]
for d in range(33):
    os.mkdir(f"{root}/d{d}")
    for i in range(100):
        p = f"{root}/d{d}/file-{i:04d}"
        with open(p, "wb") as f:
            f.write(os.urandom(100 + i))
            os.fsync(f.fileno())
EOF2
    xfs_io -x -c shutdown "$mnt"
    # The image as the power cut left it (unmounting would write the
    # committed metadata home).
    cp --sparse=always "$tmp" "$crash.tmp"
    umount "$mnt"
    rm -f "$tmp"
    mv "$crash.tmp" "$crash"
fi

logged=$("$tool" "$crash" info --json 2>/dev/null |
    python3 -c "import json,sys; r=json.load(sys.stdin)['journal']['replay']; print(r['logged_blocks'], r['replayed_blocks'], r['transactions'], r['log_blocks'])")
set -- $logged
echo "image: $crash: a log of $4 blocks ($(( $4 * 4 / 1024 )) MiB of the 128 MiB journal): $3 transactions, $1 logged copies of $2 distinct blocks"
echo "load average: $(load_avg)"

# One timed run of "$@" on a fresh copy of the crash image; prints seconds.
timed() {
    local mode=$1
    shift
    cp --sparse=always "$crash" "$work"
    if [ "$mode" = cold ]; then cold; else cat "$work" >/dev/null; fi
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null 2>&1 || true
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}

printf '%-6s %-38s %10s %10s\n' mode run seconds "vs e2fsck"
for mode in cold warm; do
    declare -a e=() r=() m=()
    for _ in $(seq 1 "$runs"); do
        e+=("$(timed $mode e2fsck -y -E journal_only "$work")")
        r+=("$(timed $mode "$tool" "$work" recover)")
        m+=("$(timed $mode "$tool" "$work" info)")
    done
    me=$(median "${e[@]}")
    mr=$(median "${r[@]}")
    mm=$(median "${m[@]}")
    printf '%-6s %-38s %10.3f %10s\n' $mode "e2fsck -E journal_only" "$me" 1.00
    printf '%-6s %-38s %10.3f %10s\n' $mode "ext4-image recover" "$mr" "$(ratio "$mr" "$me")"
    printf '%-6s %-38s %10.3f %10s\n' $mode "ext4-image info (replay in memory)" "$mm" "$(ratio "$mm" "$me")"
done
# The two replays leave the same bytes (but for the superblock fields
# e2fsck rewrites: free counts, write time, kbytes written, checksum).
cp --sparse=always "$crash" "$work"
e2fsck -y -E journal_only "$work" >/dev/null 2>&1 || true
cp --sparse=always "$crash" "$work.ours"
"$tool" "$work.ours" recover >/dev/null
diffs=$({ cmp -l "$work" "$work.ours" || true; } | awk '$1 < 1025 || $1 > 2048 {n++} END {print n+0}')
rm -f "$work.ours"
echo "bytes differing outside the superblock between the two replays: $diffs"

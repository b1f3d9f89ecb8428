#!/usr/bin/env bash
# Times `ext4-image extract` against `debugfs -R 'rdump / DIR'` and
# `ext4-image check` against `e2fsck -fn`, cold (page cache dropped before
# each run) and warm (run again at once), on one image holding a
# source-like tree of ~50,000 files plus a 1 GiB file. Prints a table with
# the ratios and each run's peak RSS (/usr/bin/time -v), and the cold floor:
# how long reading the image's allocated bytes alone takes, cold, in the
# same run (a cold extract cannot beat it).
#
# The tree and image (bench/lib.sh) are built once and kept under
# bench/out/ (delete it to rebuild). Needs root for drop_caches; without it
# the "cold" runs are warm.
#
# Destination: as root, every extraction goes into a freshly made ext4
# (with a journal, like an ordinary system) on a loop device, so no run
# pays for the previous run's files. Extracting into a directory of the
# host filesystem right after `rm -rf` of the last copy measured the host
# instead: on a filesystem without a journal, ext4 skips inodes deleted in
# the last minute when allocating (recently_deleted()), so every create
# scanned the ~50,000 just freed (openat(O_CREAT) at ~100 us, debugfs and
# ext4-image alike; a quarter of perf's samples of a warm run). Without root,
# or with EXTRACT_DEST=dir, it uses a directory under bench/out/ as before.
#
#   bash bench/extract_check.sh [FILES]     (default 50000)
#   TOOL=path/to/ext4-image bash bench/extract_check.sh   (time another build)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
files=${1:-50000}

if [ ! -x /usr/bin/time ]; then
    apt-get install -y -q time >/dev/null
fi

if [ -n "${TOOL:-}" ]; then
    tool=$(realpath "$TOOL")
else
    cargo build --release -q -p ext4-image
    tool=${CARGO_TARGET_DIR:-$PWD/target}/release/ext4-image
fi

bench_image "$files"

dest=$out/extract-dest
destimg=$out/extract-dest.img
loopdest=0
if [ "$(id -u)" = 0 ] && [ "${EXTRACT_DEST:-loop}" = loop ]; then loopdest=1; fi
undest() { if mountpoint -q "$dest"; then umount "$dest"; fi; }
trap 'undest; if mountpoint -q "$out/extract-src"; then umount "$out/extract-src"; fi; rm -f "$destimg"' EXIT
# An empty destination (rdump needs it to exist); not timed.
fresh_dest() {
    if [ $loopdest = 1 ]; then
        undest
        rm -f "$destimg"
        truncate -s 8G "$destimg"
        # Inode tables and journal zeroed now, not by a kernel thread
        # during the timed run.
        mke2fs -F -q -t ext4 -E lazy_itable_init=0,lazy_journal_init=0,nodiscard "$destimg"
        mkdir -p "$dest"
        mount -o loop "$destimg" "$dest"
        rmdir "$dest/lost+found"
    else
        rm -rf "$dest" && mkdir -p "$dest"
    fi
    sync
}
# run NAME CMD... : time one run in a fresh destination, leave
# "seconds kbytes cpu-seconds" in $result.
run() {
    fresh_dest
    run_here "$@"
}
run_here() {
    local log=$out/time.log
    /usr/bin/time -v -o "$log" "$@" >/dev/null 2>"$out/stderr.log" || true
    local wall rss cpu
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$log")
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
    cpu=$(awk -F': ' '/(User|System) time \(seconds\)/ {s += $2} END {printf "%.2f", s}' "$log")
    result="$(python3 -c "
import sys
p = sys.argv[1].split(':')
s = 0.0
for x in p: s = s * 60 + float(x)
print('%.2f' % s)" "$wall") $rss $cpu"
}

declare -A T
measure() { # key cmd...
    local key=$1
    shift
    fresh_dest
    cold
    run_here "$@"
    T[$key.cold]=$result
    run "$@"
    T[$key.warm]=$result
}

echo "image: $img ($(du -h --apparent-size "$img" | cut -f1) apparent, $(du -h "$img" | cut -f1) used), $files files + 1 GiB file" >&2
load0=$(load_avg)
measure ours_extract "$tool" "$img" extract / "$dest"
measure debugfs_rdump debugfs -R "rdump / $dest" "$img"
measure ours_check "$tool" "$img" check
measure ours_check1 "$tool" "$img" check -j 1
measure e2fsck e2fsck -fn "$img"
undest
# The floor for a cold extract: reading every allocated byte of the image
# (file data and metadata, its holes skipped) once, in 8 MiB requests,
# with nothing written. No extractor can finish a cold run sooner.
floor_read() {
    python3 - "$img" <<'EOF2'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size, pos, total = os.fstat(fd).st_size, 0, 0
while pos < size:
    try:
        data = os.lseek(fd, pos, os.SEEK_DATA)
    except OSError:
        break
    hole = os.lseek(fd, data, os.SEEK_HOLE)
    while data < hole:
        n = len(os.pread(fd, min(8 << 20, hole - data), data))
        if n == 0:
            break
        data += n
        total += n
    pos = hole
print(total)
EOF2
}
# A reference for the warm runs: the kernel copying the same tree from a
# read-only mount of the image (page cache warm) into a fresh destination
# with `cp -a`, one thread. Its CPU seconds are mostly the destination
# filesystem's work (creating 53,000 inodes, 2 GB of buffered writes),
# which an extractor pays too.
cp_ref=""
if [ $loopdest = 1 ]; then
    srcmnt=$out/extract-src
    mkdir -p "$srcmnt"
    if mount -o ro,loop,noload "$img" "$srcmnt" 2>/dev/null; then
        tar cf - -C "$srcmnt" . | cat >/dev/null
        fresh_dest
        /usr/bin/time -o "$out/time.log" -f "%e %U %S" cp -a "$srcmnt/." "$dest/" || true
        cp_ref=$(awk '{ printf "%.2f s wall, %.2f s CPU", $1, $2 + $3 }' "$out/time.log")
        umount "$srcmnt"
        undest
    fi
    rmdir "$srcmnt" 2>/dev/null || true
fi
cold
floor_start=$(date +%s.%N)
floor_bytes=$(floor_read)
floor_s=$(python3 -c "import sys, time; print('%.2f' % (time.time() - float(sys.argv[1])))" "$floor_start")
rm -rf "$dest" "$destimg"

t() { echo "${T[$1]}" | cut -d' ' -f1; }
m() { echo "${T[$1]}" | cut -d' ' -f2; }
c() { echo "${T[$1]}" | cut -d' ' -f3; }

printf '\n%-34s %9s %9s %11s %12s\n' "run" "cold s" "warm s" "warm CPU s" "peak RSS MiB"
for k in ours_extract debugfs_rdump ours_check ours_check1 e2fsck; do
    case $k in
        ours_extract) name="ext4-image extract /" ;;
        debugfs_rdump) name="debugfs rdump /" ;;
        ours_check) name="ext4-image check (2 threads)" ;;
        ours_check1) name="ext4-image check -j 1" ;;
        e2fsck) name="e2fsck -fn" ;;
    esac
    rss=$(( $(m $k.cold) > $(m $k.warm) ? $(m $k.cold) : $(m $k.warm) ))
    printf '%-34s %9s %9s %11s %12s\n' "$name" "$(t $k.cold)" "$(t $k.warm)" "$(c $k.warm)" "$((rss / 1024))"
done
echo
printf '%-44s %7s %7s  %s\n' "ratio" "cold" "warm" "target"
printf '%-44s %7s %7s  %s\n' "debugfs rdump / ext4-image extract (speedup)" \
    "$(ratio "$(t debugfs_rdump.cold)" "$(t ours_extract.cold)")" \
    "$(ratio "$(t debugfs_rdump.warm)" "$(t ours_extract.warm)")" ">= 5"
printf '%-44s %7s %7s  %s\n' "ext4-image check / e2fsck -fn" \
    "$(ratio "$(t ours_check.cold)" "$(t e2fsck.cold)")" \
    "$(ratio "$(t ours_check.warm)" "$(t e2fsck.warm)")" "<= 2"
printf '%-44s %7s %7s  %s\n' "ext4-image check -j 1 / e2fsck -fn" \
    "$(ratio "$(t ours_check1.cold)" "$(t e2fsck.cold)")" \
    "$(ratio "$(t ours_check1.warm)" "$(t e2fsck.warm)")" "<= 2"
echo
echo "cold floor: reading the image's $((floor_bytes >> 20)) MiB of allocated data cold (one reader, 8 MiB requests, holes skipped) took ${floor_s} s;"
echo "  so a cold extract can be at most $(ratio "$(t debugfs_rdump.cold)" "$floor_s")x faster than this run's rdump (5x needs $(awk -v a="$(t debugfs_rdump.cold)" 'BEGIN { printf "%.2f", a / 5 }') s)"
if [ -n "$cp_ref" ]; then
    echo "warm reference: the kernel's cp -a of the same tree from a read-only mount (warm) into a fresh destination: $cp_ref"
fi
[ $can_drop = 1 ] || echo "(not root: caches were not dropped, cold = warm)"
if [ $loopdest = 1 ]; then
    echo "destination: a fresh ext4 on a loop device per run"
else
    echo "destination: a directory under $out (on $(df --output=fstype "$out" | tail -1))"
fi
echo "load average before: $load0, after: $(load_avg) ($(nproc) CPUs)"
echo "cache budgets: metadata 32 MiB, mapping 16 MiB (defaults)"

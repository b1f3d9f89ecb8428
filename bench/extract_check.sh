#!/usr/bin/env bash
# Times `ext4-image extract` against `debugfs -R 'rdump / DIR'` and
# `ext4-image check` against `e2fsck -fn`, cold (page cache dropped before
# each run) and warm (run again at once), on one image holding a
# source-like tree of ~50,000 files plus a 1 GiB file. Prints a table with
# the ratios and each run's peak RSS (/usr/bin/time -v).
#
# The tree and image (bench/lib.sh) are built once and kept under
# bench/out/ (delete it to rebuild). Needs root for drop_caches; without it
# the "cold" runs are warm.
#
#   bash bench/extract_check.sh [FILES]     (default 50000)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
files=${1:-50000}

if [ ! -x /usr/bin/time ]; then
    apt-get install -y -q time >/dev/null
fi

cargo build --release -q -p ext4-image
tool=${CARGO_TARGET_DIR:-$PWD/target}/release/ext4-image

bench_image "$files"

dest=$out/extract-dest
# run NAME CMD... : time one run, leave "seconds kbytes" in $result.
run() {
    local log=$out/time.log
    rm -rf "$dest" && mkdir -p "$dest"  # rdump needs it to exist
    /usr/bin/time -v -o "$log" "$@" >/dev/null 2>"$out/stderr.log" || true
    local wall rss
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$log")
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
    result="$(python3 -c "
import sys
p = sys.argv[1].split(':')
s = 0.0
for x in p: s = s * 60 + float(x)
print('%.2f' % s)" "$wall") $rss"
}

declare -A T
measure() { # key cmd...
    local key=$1
    shift
    cold
    run "$@"
    T[$key.cold]=$result
    sync
    run "$@"
    T[$key.warm]=$result
}

echo "image: $img ($(du -h --apparent-size "$img" | cut -f1) apparent, $(du -h "$img" | cut -f1) used), $files files + 1 GiB file" >&2
measure ours_extract "$tool" "$img" extract / "$dest"
measure debugfs_rdump debugfs -R "rdump / $dest" "$img"
measure ours_check "$tool" "$img" check
measure ours_check1 "$tool" "$img" check -j 1
measure e2fsck e2fsck -fn "$img"
rm -rf "$dest"

t() { echo "${T[$1]}" | cut -d' ' -f1; }
m() { echo "${T[$1]}" | cut -d' ' -f2; }

printf '\n%-34s %9s %9s %12s\n' "run" "cold s" "warm s" "peak RSS MiB"
for k in ours_extract debugfs_rdump ours_check ours_check1 e2fsck; do
    case $k in
        ours_extract) name="ext4-image extract /" ;;
        debugfs_rdump) name="debugfs rdump /" ;;
        ours_check) name="ext4-image check (2 threads)" ;;
        ours_check1) name="ext4-image check -j 1" ;;
        e2fsck) name="e2fsck -fn" ;;
    esac
    rss=$(( $(m $k.cold) > $(m $k.warm) ? $(m $k.cold) : $(m $k.warm) ))
    printf '%-34s %9s %9s %12s\n' "$name" "$(t $k.cold)" "$(t $k.warm)" "$((rss / 1024))"
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
[ $can_drop = 1 ] || echo "(not root: caches were not dropped, cold = warm)"
echo "cache budgets: metadata 32 MiB, mapping 16 MiB (defaults)"

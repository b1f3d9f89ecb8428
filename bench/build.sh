#!/usr/bin/env bash
# Times `ext4-image mkfs IMAGE 4G --from TREE` against `mke2fs -t ext4 -d
# TREE IMAGE 4G` on the benchmark tree of bench/lib.sh (~53,000 entries:
# 50,000 files plus a 1 GiB file), both to a fresh file, the source warm in
# the page cache (each run once to warm up, then the median of three).
# Both flush the image before they exit. Prints each median, the ratio and
# each tool's peak RSS, and checks both images with e2fsck -fn.
#
#   bash bench/build.sh [FILES]     (default 50000)
#   TOOL=path/to/ext4-image bash bench/build.sh
#   TREE=/some/tree bash bench/build.sh   (another source tree)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
files=${1:-50000}
if [ -n "${TOOL:-}" ]; then
    tool=$(realpath "$TOOL")
else
    cargo build --release -q -p ext4-image
    tool=${CARGO_TARGET_DIR:-$PWD/target}/release/ext4-image
fi
if [ -n "${TREE:-}" ]; then
    tree=$TREE
    mkdir -p "$out"
else
    bench_image "$files"
fi
ours_img=$out/build-ours.img
theirs_img=$out/build-mke2fs.img
trap 'rm -f "$ours_img" "$theirs_img"' EXIT

# time_it CMD: "seconds peak-KiB" of CMD.
time_it() {
    /usr/bin/time -f "%e %M" -o "$out/time.log" bash -c "$1" >/dev/null
    cat "$out/time.log"
}
measure() { # name img cmd
    local runs=() rss=0 r
    rm -f "$2"
    time_it "$3" >/dev/null
    for _ in 1 2 3; do
        rm -f "$2"
        r=$(time_it "$3")
        runs+=("${r% *}")
        rss=$(( ${r#* } > rss ? ${r#* } : rss ))
    done
    printf '%-40s %8s s %8s MiB\n' "$1" "$(median "${runs[@]}")" "$((rss / 1024))"
    echo "$(median "${runs[@]}")" >"$out/$1.median"
}
load0=$(load_avg)
echo "tree: $tree ($(find "$tree" | wc -l) entries, $(du -sh "$tree" | cut -f1))"
measure "ext4-image mkfs --from" "$ours_img" "'$tool' mkfs '$ours_img' 4G -q --from '$tree'"
measure "mke2fs -d" "$theirs_img" "mke2fs -F -q -t ext4 -d '$tree' '$theirs_img' 4G"
echo "ratio mke2fs -d / ext4-image mkfs --from (speedup): $(ratio "$(cat "$out/mke2fs -d.median")" "$(cat "$out/ext4-image mkfs --from.median")")"
for i in "$ours_img" "$theirs_img"; do
    e2fsck -fn "$i" >/dev/null 2>&1 && echo "e2fsck -fn $(basename "$i"): clean" \
        || echo "e2fsck -fn $(basename "$i"): NOT CLEAN"
done
echo "load average before: $load0, after: $(load_avg) ($(nproc) CPUs)"

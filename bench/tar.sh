#!/usr/bin/env bash
# Times `ext4-image tar IMAGE` against GNU tar writing the same stream
# (`--format=posix --xattrs --acls --numeric-owner -S`) from the kernel's
# read-only mount of the image, warm (each run once to warm up, then the
# median of three), on the benchmark image of bench/lib.sh (~50,000 files
# plus a 1 GiB file). Both streams go through a pipe (GNU tar skips reading
# file data when its archive is /dev/null). Prints each median, the ratio
# and each tool's peak RSS. Needs root (the kernel mount).
#
#   bash bench/tar.sh [FILES]     (default 50000)
#   TOOL=path/to/ext4-image bash bench/tar.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
files=${1:-50000}
[ "$(id -u)" = 0 ] || { echo "bench/tar.sh needs root (kernel mount)" >&2; exit 2; }
if [ -n "${TOOL:-}" ]; then
    tool=$(realpath "$TOOL")
else
    cargo build --release -q -p ext4-image
    tool=${CARGO_TARGET_DIR:-$PWD/target}/release/ext4-image
fi
bench_image "$files"
mnt=$out/tar-src
mkdir -p "$mnt"
mount -o ro,loop,noload "$img" "$mnt"
trap 'umount "$mnt"; rmdir "$mnt"' EXIT

# time_it CMD: "seconds peak-KiB" of CMD piped into cat >/dev/null.
time_it() {
    /usr/bin/time -f "%e %M" -o "$out/time.log" bash -c "$1 | cat >/dev/null"
    cat "$out/time.log"
}
measure() { # name cmd
    local runs=() rss=0 r
    time_it "$2" >/dev/null
    for _ in 1 2 3; do
        r=$(time_it "$2")
        runs+=("${r% *}")
        rss=$(( ${r#* } > rss ? ${r#* } : rss ))
    done
    printf '%-52s %8s s %8s MiB\n' "$1" "$(median "${runs[@]}")" "$((rss / 1024))"
    echo "$(median "${runs[@]}")"  >"$out/$1.median"
}
load0=$(load_avg)
ours="'$tool' tar '$img'"
gnu="tar --format=posix --xattrs --acls --numeric-owner -S -C '$mnt' -cf - ."
measure ours "$ours"
measure gnu "$gnu"
echo "ratio GNU tar of the kernel mount / ext4-image tar (speedup): $(ratio "$(cat "$out/gnu.median")" "$(cat "$out/ours.median")")"
echo "(gnu's peak RSS is GNU tar's only; the kernel's page cache is not counted)"
echo "load average before: $load0, after: $(load_avg) ($(nproc) CPUs)"

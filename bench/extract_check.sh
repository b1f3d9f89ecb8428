#!/usr/bin/env bash
# Times `ext4-image extract` against `debugfs -R 'rdump / DIR'` and
# `ext4-image check` against `e2fsck -fn`, cold (page cache dropped before
# each run) and warm (run again at once), on one image holding a
# source-like tree of ~50,000 files plus a 1 GiB file. Prints a table with
# the ratios and each run's peak RSS (/usr/bin/time -v).
#
# The tree and image are built once and kept under bench/out/ (delete it to
# rebuild). Needs root for drop_caches; without it the "cold" runs are warm.
#
#   bash bench/extract_check.sh [FILES]     (default 50000)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/sbin:/sbin
files=${1:-50000}
out=bench/out
tree=$out/tree-$files
img=$out/bench-$files.img
mkdir -p "$out"

if [ ! -x /usr/bin/time ]; then
    apt-get install -y -q time >/dev/null
fi

cargo build --release -q -p ext4-image
tool=$PWD/target/release/ext4-image

if [ ! -f "$img" ]; then
    if [ ! -f "$tree/.done" ]; then
        rm -rf "$tree"
        echo "generating $files files under $tree ..." >&2
        python3 - "$tree" "$files" <<'EOF'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(42)
words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randint(2, 10)))
         for _ in range(4000)]
text = (" ".join(rng.choice(words) + ("\n" if rng.random() < 0.1 else "") for _ in range(400000))).encode()
dirs = [root]
os.makedirs(root)
made = 0
while made < n:
    # Source trees: a directory every ~15 files, nested up to ~8 deep.
    if rng.random() < 1 / 15 or len(dirs) == 1:
        parent = rng.choice(dirs[-50:]) if rng.random() < 0.7 else rng.choice(dirs)
        if parent.count("/") - root.count("/") >= 8:
            parent = root
        d = os.path.join(parent, "dir%05d_%s" % (len(dirs), rng.choice(words)))
        os.makedirs(d)
        dirs.append(d)
    d = rng.choice(dirs[-20:])
    # Log-uniform 100 B .. 50 KiB, with a long tail up to 4 MiB.
    if rng.random() < 0.01:
        size = int(50 * 1024 * (80 ** rng.random()))
    else:
        size = int(100 * (512 ** rng.random()))
    off = rng.randrange(0, len(text) - 1)
    data = (text[off:] + text)[:size] if size <= len(text) else (text * (size // len(text) + 1))[:size]
    name = "%s_%d.%s" % (rng.choice(words), made, rng.choice(["c", "h", "rs", "py", "txt", "md", "json"]))
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)
    made += 1
with open(os.path.join(root, "big.bin"), "wb") as f:
    block = os.urandom(1 << 20)
    for i in range(1024):
        f.write(block[i:] + block[:i])
open(os.path.join(root, ".done"), "w").close()
EOF
    fi
    echo "building $img ..." >&2
    mke2fs -F -q -t ext4 -O metadata_csum,64bit -L bench -d "$tree" "$img" 4G
fi

can_drop=0
if [ -w /proc/sys/vm/drop_caches ]; then can_drop=1; fi
cold() {
    sync
    if [ $can_drop = 1 ]; then echo 3 >/proc/sys/vm/drop_caches; fi
}

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
ratio() { python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print('%.2f' % (a / b if b else 0))" "$1" "$2"; }

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

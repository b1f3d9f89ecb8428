# Shared by the bench/*.sh scripts (source it; it sets no shell options).
#
#   bench_image FILES   build (once) a source-like tree of FILES files plus a
#                       1 GiB big.bin, and an ext4 image of it; sets $out,
#                       $tree, $img. Both are kept under bench/out/ (not
#                       committed; delete them to rebuild).
#   bench_tree FILES    just the tree of bench_image; sets $out, $tree.
#   bench_tar FILES     (once) a tar of that tree without big.bin (the
#                       write benchmark's untar input); sets $tar, $tree.
#   real_image          build (once) a copy of this machine's /usr/share and
#                       Python standard library plus a 1 GiB big.bin, and an
#                       ext4 image of it; sets $out, $tree, $img, $entries. A
#                       real tree has big linear directories (man1: ~18,000
#                       entries), which mke2fs -d writes without an index.
#   cold                sync and drop the page, dentry and inode caches
#                       (when root; $can_drop says whether it can).
#   median X...         the median of the numbers given.
#   ratio A B           A / B with two decimals (0 when B is 0).
#   load_avg            the 1/5/15-minute load average.

export PATH=$PATH:/usr/sbin:/sbin
out=${out:-bench/out}

bench_tree() {
    local files=$1
    tree=$out/tree-$files
    mkdir -p "$out"
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
}

bench_image() {
    local files=$1
    img=$out/bench-$files.img
    bench_tree "$files"
    [ -f "$img" ] && return 0
    echo "building $img ..." >&2
    mke2fs -F -q -t ext4 -O metadata_csum,64bit -L bench -d "$tree" "$img" 4G
}

bench_tar() {
    bench_tree "$1"
    tar=$out/tree-$1.tar
    [ -f "$tar" ] && return 0
    echo "writing $tar ..." >&2
    tar cf "$tar.tmp" -C "$tree" --exclude=./big.bin --exclude=./.done . && mv "$tar.tmp" "$tar"
}

# The sources of the real tree, when present.
REAL_SOURCES="/usr/share /usr/lib/python3"

real_image() {
    tree=$out/tree-real
    img=$out/bench-real.img
    mkdir -p "$out"
    if [ ! -f "$tree/.done" ]; then
        rm -rf "$tree"
        mkdir -p "$tree"
        local s
        for s in $REAL_SOURCES /usr/lib/python3.*; do
            [ -d "$s" ] || continue
            echo "copying $s into $tree ..." >&2
            mkdir -p "$tree$(dirname "$s")"
            cp -a "$s" "$tree$(dirname "$s")/"
        done
        echo "writing $tree/big.bin ..." >&2
        python3 - "$tree/big.bin" <<'EOF2'
import os, sys
with open(sys.argv[1], "wb") as f:
    block = os.urandom(1 << 20)
    for i in range(1024):
        f.write(block[i:] + block[:i])
EOF2
        touch "$tree/.done"
    fi
    entries=$(find "$tree" | wc -l)
    if [ ! -f "$img" ]; then
        echo "building $img (mke2fs -d is slow on big directories: a minute or two) ..." >&2
        mke2fs -F -q -t ext4 -O metadata_csum,64bit -L bench-real -d "$tree" "$img" 4G
    fi
}

# The biggest directory under $1: "ENTRIES PATH".
largest_dir() {
    find "$1" -mindepth 1 -printf '%h\n' | sort | uniq -c | sort -n | tail -1
}

can_drop=0
if [ -w /proc/sys/vm/drop_caches ]; then can_drop=1; fi
cold() {
    sync
    if [ $can_drop = 1 ]; then echo 3 >/proc/sys/vm/drop_caches; fi
}

median() {
    printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {
        if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2];
        else printf "%.6g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0 || a == "-" || b == "-") print "-"; else printf "%.2f\n", a / b }'
}

load_avg() {
    cut -d' ' -f1-3 /proc/loadavg
}

#!/usr/bin/env bash
# Builds the seed images of the fuzz targets (small filesystems made by
# mke2fs -d across feature sets) into fuzz/seeds/<target>/, gzip'd.
# Run by hand when the seed set should change; the output is checked in.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A tree with something of everything the engine reads.
tree() {
    local t=$1
    mkdir -p "$t/a/b/c/d/e" "$t/h" "$t/acl"
    echo hello > "$t/small"
    : > "$t/empty"
    head -c 3000 /dev/urandom > "$t/three_blocks"
    printf 'x%.0s' $(seq 1 100) > "$t/a/b/c/d/e/deep"
    # Sparse: data at 0, in the single- and the double-indirect range.
    echo start > "$t/sparse"
    echo mid | dd of="$t/sparse" bs=1024 seek=20 conv=notrunc status=none
    echo end | dd of="$t/sparse" bs=1024 seek=290 conv=notrunc status=none
    for i in $(seq 1 60); do echo "$i" > "$t/h/file_with_a_longish_name_number_$i"; done
    ln -s small "$t/fast_link"
    ln -s "$(printf 'long/%.0s' $(seq 1 20))target" "$t/slow_link"
    ln -s chain2 "$t/chain1"; ln -s chain3 "$t/chain2"; ln -s small "$t/chain3"
    ln -s loop_b "$t/loop_a"; ln -s loop_a "$t/loop_b"
    ln -s a/b/c "$t/dir_link"
    ln -s /abs/path "$t/abs_link"
    ln "$t/small" "$t/hardlink"
    mkfifo "$t/fifo"
    mknod "$t/cdev" c 1 3
    setfattr -n user.small -v v "$t/small"
    setfattr -n user.medium -v "$(head -c 200 /dev/zero | tr '\0' m)" "$t/three_blocks"
    setfattr -n trusted.t -v tv "$t/a"
    setfattr -n security.s -v sv "$t/sparse"
    setfacl -m u:1234:rw,g:77:r "$t/acl" 2>/dev/null || true
    setfacl -d -m u:1234:rwx "$t/acl" 2>/dev/null || true
}

mk() { # name size mke2fs-args...
    local name=$1 size=$2 src=$3
    shift 3
    echo "seed $name" >&2
    rm -f "$work/$name.img"
    mke2fs -q -F -o Linux -E root_owner=0:0 -d "$src" "$@" "$work/$name.img" "$size" >/dev/null
    # Index every directory (htree) where the features allow it.
    e2fsck -fyD "$work/$name.img" >/dev/null 2>&1 || true
    imgs+=("$name")
}

imgs=()
tree "$work/t"
mkdir -p "$work/big"
# 2-level hash tree with 1 KiB blocks: more leaves than one root holds.
for i in $(seq 1 700); do
    : > "$work/big/$(printf 'n%03d_%0200d' "$i" 0)"
done
mkdir -p "$work/tiny/d"
echo tiny > "$work/tiny/f"
ln -s f "$work/tiny/l"
setfattr -n user.x -v y "$work/tiny/f"
mkdir -p "$work/ea"
tree "$work/ea"
setfattr -n user.huge -v "$(head -c 3000 /dev/zero | tr '\0' E)" "$work/ea/small"

mk ext2_1k 512k "$work/t" -t ext2 -b 1024 -N 256
mk ext3_1k 4096k "$work/t" -t ext3 -b 1024 -N 256
mk ext4_csum_1k 512k "$work/t" -t ext4 -b 1024 -N 256 -O ^has_journal
mk ext4_nocsum_1k 512k "$work/t" -t ext4 -b 1024 -N 256 -O ^has_journal,^metadata_csum,uninit_bg
mk ext4_inline 512k "$work/t" -t ext4 -b 1024 -N 256 -O ^has_journal,inline_data
mk ext4_bigalloc 1024k "$work/t" -t ext4 -b 1024 -C 2048 -N 256 -O ^has_journal,bigalloc
mk ext4_4k 1024k "$work/t" -t ext4 -b 4096 -N 256 -O ^has_journal
mk ext4_noextent 512k "$work/t" -t ext4 -b 1024 -N 256 -O ^has_journal,^extent,^64bit,^flex_bg
mk ext4_64bit_metabg 512k "$work/t" -t ext4 -b 1024 -N 256 -O ^has_journal,64bit,meta_bg,^resize_inode
mk ext4_eainode 512k "$work/ea" -t ext4 -b 1024 -N 256 -O ^has_journal,ea_inode
mk ext4_htree2 512k "$work/big" -t ext4 -b 1024 -N 800 -O ^has_journal,large_dir
mk ext2_htree2 512k "$work/big" -t ext2 -b 1024 -N 800
mk ext4_96k_tiny 96k "$work/tiny" -t ext4 -b 1024 -N 32 -O ^has_journal,^resize_inode

for i in "${imgs[@]}"; do
    e2fsck -fn "$work/$i.img" >/dev/null 2>&1 || echo "note: $i is not fsck-clean" >&2
done

# Which seeds go to which target: every target gets the images that
# exercise its structure.
put() { # target images...
    local t=$1
    shift
    rm -rf "seeds/$t"
    mkdir -p "seeds/$t"
    for i in "$@"; do gzip -9nc "$work/$i.img" > "seeds/$t/$i.img.gz"; done
}
all=("${imgs[@]}")
put open "${all[@]}"
put walk "${all[@]}"
put inode ext2_1k ext4_csum_1k ext4_nocsum_1k ext4_inline ext4_96k_tiny
put blockmap ext2_1k ext3_1k ext4_nocsum_1k ext4_csum_1k ext4_bigalloc ext4_4k ext4_noextent
put dir ext2_1k ext4_nocsum_1k ext4_csum_1k ext4_htree2 ext2_htree2 ext4_4k
put inline ext4_inline
put xattr ext4_nocsum_1k ext4_csum_1k ext4_eainode ext4_inline
put symlink ext2_1k ext4_nocsum_1k ext4_inline ext4_noextent
du -sh seeds

#!/usr/bin/env bash
# How the crafted regression images of engine/tests/hostile.rs were made
# (mke2fs -d, then debugfs and byte edits). The outputs are checked in;
# run this only to rebuild them. Each image is one hostile structure.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin
out=$(cd "$(dirname "$0")" && pwd)
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
cd "$w"
mkdir -p t/a/b/c
echo hi >t/a/b/c/f
echo x >t/file
head -c 5000 /dev/zero | tr '\0' B >t/big
head -c 3000 /dev/zero | tr '\0' S >t/second

dbg() { debugfs -w -R "$2" "$1" >/dev/null 2>&1; }
bmap() { debugfs -R "bmap $2 $3" "$1" 2>/dev/null; }
# Write little-endian u32 `val` `count` times at byte `off` of image `img`.
put32() {
    python3 -c "
import struct,sys
img,off,val,count=sys.argv[1],int(sys.argv[2],0),int(sys.argv[3],0),int(sys.argv[4],0)
with open(img,'r+b') as f:
    f.seek(off); f.write(struct.pack('<I',val)*count)" "$@"
}
put16() {
    python3 -c "
import struct,sys
img,off,val=sys.argv[1],int(sys.argv[2],0),int(sys.argv[3],0)
with open(img,'r+b') as f:
    f.seek(off); f.write(struct.pack('<H',val))" "$@"
}
inode_off() { # img path -> byte offset of the inode record
    local blk off
    read -r blk off < <(debugfs -R "imap $2" "$1" 2>/dev/null | awk '/located at block/ {gsub(",","",$4); print $4, $6}')
    echo $((blk * 1024 + off))
}
save() {
    gzip -9nc "$1" >"$out/$2.img.gz"
}

mke2fs -q -F -o Linux -t ext2 -b 1024 -N 32 -d t ext2.img 128k
mke2fs -q -F -o Linux -t ext4 -b 1024 -N 32 -O ^has_journal,^metadata_csum,^resize_inode -d t ext4.img 128k

# A subdirectory entry naming an ancestor: /a/b/c/up -> /a.
cp ext2.img dir_cycle.img
dbg dir_cycle.img "link /a /a/b/c/up"
save dir_cycle.img dir_cycle

# An indirect block whose every pointer is itself, hung under the single,
# double and triple indirect slots of a file claiming 1 TiB.
cp ext2.img indirect_self.img
b=$(bmap indirect_self.img /big 0)
put32 indirect_self.img $((b * 1024)) "$b" 256
dbg indirect_self.img "sif /big block[IND] $b"
dbg indirect_self.img "sif /big block[DIND] $b"
dbg indirect_self.img "sif /big block[TIND] $b"
dbg indirect_self.img "sif /big size 0x10000000000"
save indirect_self.img indirect_self

# Indirect pointers aimed at metadata: the superblock's block, the
# descriptor table and the inode table.
cp ext2.img indirect_meta.img
dbg indirect_meta.img "sif /big block[IND] 1"
dbg indirect_meta.img "sif /big block[DIND] 2"
dbg indirect_meta.img "sif /big block[TIND] 5"
dbg indirect_meta.img "sif /big size 0x100000000"
save indirect_meta.img indirect_meta

# An extent tree whose interior node points at itself: the root (depth 2)
# names block B, and B (depth 1) names B again.
cp ext4.img extent_loop.img
b=$(bmap extent_loop.img /big 0)
io=$(inode_off extent_loop.img /big)
ib=$((io + 40))
# root: magic, 1 entry, max 4, depth 2; index: lblk 0 -> B
put16 extent_loop.img $ib 0xF30A
put16 extent_loop.img $((ib + 2)) 1
put16 extent_loop.img $((ib + 4)) 4
put16 extent_loop.img $((ib + 6)) 2
put32 extent_loop.img $((ib + 12)) 0 1
put32 extent_loop.img $((ib + 16)) "$b" 1
put32 extent_loop.img $((ib + 20)) 0 1
# B: magic, 1 entry, max 84, depth 1; index: lblk 0 -> B
bo=$((b * 1024))
put32 extent_loop.img $bo 0 256
put16 extent_loop.img $bo 0xF30A
put16 extent_loop.img $((bo + 2)) 1
put16 extent_loop.img $((bo + 4)) 84
put16 extent_loop.img $((bo + 6)) 1
put32 extent_loop.img $((bo + 16)) "$b" 1
save extent_loop.img extent_loop

# The same loop at one level (depth 1 pointing at a node that claims
# depth 1 again), and an extent past the end of the filesystem.
cp ext4.img extent_bad.img
b=$(bmap extent_bad.img /big 0)
io=$(inode_off extent_bad.img /big)
put16 extent_bad.img $((io + 40 + 6)) 1
put32 extent_bad.img $((io + 40 + 16)) "$b" 1
put32 extent_bad.img $((b * 1024)) 0 256
put16 extent_bad.img $((b * 1024)) 0xF30A
put16 extent_bad.img $((b * 1024 + 2)) 1
put16 extent_bad.img $((b * 1024 + 4)) 84
put16 extent_bad.img $((b * 1024 + 6)) 1
put32 extent_bad.img $((b * 1024 + 16)) "$b" 1
io2=$(inode_off extent_bad.img /second)
# /second's first extent: start block far past the end.
put32 extent_bad.img $((io2 + 40 + 20)) 0x7fffffff 1
save extent_bad.img extent_bad

# Sizes that overflow: a regular file of 2^64-1 bytes, a directory of
# 2^32-1 bytes.
cp ext4.img huge_size.img
dbg huge_size.img "sif /file size 0xffffffffffffffff"
dbg huge_size.img "sif /a size 0xffffffff"
save huge_size.img huge_size

# An orphan list with a cycle: the superblock's head names /a, /a's dtime
# (the next orphan) names /file, whose dtime names /a.
cp ext4.img orphan_cycle.img
a=$(debugfs -R "stat /a" orphan_cycle.img 2>/dev/null | awk '/^Inode:/ {print $2; exit}')
f=$(debugfs -R "stat /file" orphan_cycle.img 2>/dev/null | awk '/^Inode:/ {print $2; exit}')
dbg orphan_cycle.img "ssv last_orphan $a"
dbg orphan_cycle.img "sif <$a> dtime $f"
dbg orphan_cycle.img "sif <$f> dtime $a"
save orphan_cycle.img orphan_cycle

# Hash-tree lies on a 2-level tree: the interior nodes' entries all point
# back at the first interior node, and a second copy claims 3 levels on a
# filesystem without large_dir.
mkdir -p big
for i in $(seq 1 700); do : >"big/$(printf 'n%03d_%0200d' "$i" 0)"; done
mke2fs -q -F -o Linux -t ext2 -b 1024 -N 800 -d big htree.img 512k
e2fsck -fyD htree.img >/dev/null 2>&1 || true
root=$(bmap htree.img / 0)
ro=$((root * 1024))
python3 - htree.img $ro <<'PY'
import struct, sys
img, ro = sys.argv[1], int(sys.argv[2])
with open(img, 'r+b') as f:
    f.seek(ro); root = bytearray(f.read(1024))
    count = struct.unpack_from('<H', root, 34)[0]
    first = struct.unpack_from('<I', root, 36)[0] & 0x0fffffff
    # Every root entry, and every entry of every interior node, now point
    # at the first interior node (logical block `first`).
    for i in range(count):
        struct.pack_into('<I', root, 32 + 8 * i + 4, first)
    f.seek(ro); f.write(root)
PY
cp htree.img htree_levels.img
save htree.img htree_loop
put16 htree_levels.img $((ro + 30)) 3
save htree_levels.img htree_levels

# A directory block that is garbage in the middle of the root directory:
# the other entries must stay reachable.
cp ext2.img dir_garbage.img
b=$(bmap dir_garbage.img /a/b 0)
put32 dir_garbage.img $((b * 1024 + 24)) 0xdeadbeef 8
save dir_garbage.img dir_garbage

# inline_data: a small inline file (iomap past its end), and a fast
# symlink whose target has a NUL in the middle.
mkdir -p il
echo inline >il/small
ln -s abcdef il/link
mke2fs -q -F -o Linux -t ext4 -b 1024 -N 32 -O ^has_journal,^metadata_csum,^resize_inode,inline_data -d il inline.img 128k
io=$(inode_off inline.img /link)
python3 -c "
import sys
with open(sys.argv[1],'r+b') as f:
    f.seek(int(sys.argv[2]) + 40 + 2); f.write(b'\0')" inline.img "$io"
save inline.img inline_nul

#!/usr/bin/env bash
# A tour on a sample image: builds a small ext4 image from this
# repository's own sources with mke2fs, inspects and checks it with
# ext4-image (no mount, no root needed), exports it as a tar stream, and,
# when run as root, mounts it read-write with ext4-fuse, writes into it,
# unmounts, and lets e2fsck judge the result.
#   bash scripts/demo.sh [IMAGE]      (default target/sample.img)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/sbin:/sbin
out=${1:-target/sample.img}
mkdir -p "$(dirname "$out")"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Building the programs (release)"
cargo build --release -q -p ext4-image -p ext4-fuse
bin=target/release
img=$bin/ext4-image

step "A 16 MiB ext4 image of engine/, made by mke2fs -d: $out"
mke2fs -q -F -t ext4 -O metadata_csum,64bit -L sample -d engine "$out" 16M

step "ext4-image info: the superblock, as dumpe2fs -h shows it (first lines)"
$img "$out" info | sed -n 1,12p

step "ext4-image ls -lh /src: a directory, no mount needed"
$img "$out" ls -lh /src | sed -n 1,8p

step "ext4-image stat /src/lib.rs: one inode, nanosecond times"
$img "$out" stat /src/lib.rs

step "ext4-image check --data: e2fsck's rules, read-only"
$img "$out" check --data

step "ext4-image tar /src | tar -tv: the tree as a tar stream, owners kept"
$img "$out" tar /src | tar -tv | sed -n 1,5p

if [ "$(id -u)" != 0 ] || [ ! -e /dev/fuse ]; then
    step "Not root (or no /dev/fuse): skipping the mount. Run as root to see it."
    echo "sample image: $out"
    exit 0
fi

mnt=$(mktemp -d)
cleanup() { umount "$mnt" 2>/dev/null || true; rmdir "$mnt"; }
trap cleanup EXIT

step "ext4-fuse $out $mnt -f: mounted read-write (nosuid,nodev)"
# In the foreground (in the background of this script), so that after
# umount the script can wait for the server to finish closing the volume:
# umount of a FUSE mount returns before the server has.
$bin/ext4-fuse "$out" "$mnt" -f &
server=$!
until mountpoint -q "$mnt"; do sleep 0.1; done
findmnt -no SOURCE,TARGET,FSTYPE,OPTIONS "$mnt"

step "Writing through the mount: a directory, a file, a symlink"
mkdir "$mnt/demo"
echo "written through ext4-fuse on $(date -u +%F)" > "$mnt/demo/hello.txt"
ln -s hello.txt "$mnt/demo/link"
ls -l "$mnt/demo"
df -h "$mnt"

step "umount: the server commits the journal and closes the volume cleanly"
umount "$mnt"
wait "$server"

step "e2fsck -fn: the image we wrote is consistent"
e2fsck -fn "$out"

step "ext4-image cat /demo/hello.txt: what the mount wrote, read offline"
$img "$out" cat /demo/hello.txt
echo "sample image: $out"

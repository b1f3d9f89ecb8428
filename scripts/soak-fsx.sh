#!/usr/bin/env bash
# A long fsx run on both read-write FUSE servers (the test command runs
# 100,000 operations each, tests/tests/rw_mounts.rs): OPS operations
# (default 1,000,000) for each of SEEDS seeds (default "1 2 3"), each on a
# fresh image with tests/data/fsx-rw.toml, then e2fsck -fn. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin
OPS=${OPS:-1000000}
SEEDS=${SEEDS:-"1 2 3"}
cargo build -q --release -p ext4-fuse -p ext4-fuse-bsd
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
# fsx (crate 0.3.2) never unmaps its mmap-operation mappings: at about
# 65,000 (vm.max_map_count) it dies with "Cannot allocate memory" on the
# kernel's ext4 as on ours. Raised for the run, restored after.
maps=$(sysctl -n vm.max_map_count)
sysctl -qw vm.max_map_count=4000000
cleanup() {
  umount -l "$work"/m-* 2>/dev/null || true
  rm -rf "$work"
  sysctl -qw vm.max_map_count="$maps"
}
trap cleanup EXIT
for server in ext4-fuse ext4-fuse-bsd; do
  for seed in $SEEDS; do
    img=$work/$server-$seed.img mnt=$work/m-$server-$seed
    mkdir -p "$mnt" "$work/art-$server-$seed"
    mke2fs -F -q -t ext4 -b 4096 "$img" 128M
    "$bin/$server" "$img" "$mnt"
    echo "== $server seed $seed: $OPS operations"
    status=0
    fsx -N "$OPS" -S "$seed" -f tests/data/fsx-rw.toml -P "$work/art-$server-$seed" "$mnt/fsx.file" || status=$?
    umount "$mnt"
    sleep 1
    [ $status -eq 0 ] || { echo "fsx failed on $server seed $seed" >&2; exit 1; }
    e2fsck -fn "$img" >/dev/null || { echo "e2fsck -fn failed after $server seed $seed" >&2; exit 1; }
  done
done
echo "fsx soak: all runs clean"

#!/usr/bin/env bash
# A long fsx run on both read-write FUSE servers (the test command runs
# 100,000 operations each, tests/tests/rw_mounts.rs): SEEDS runs (default
# ten: 1..10) of OPS operations each (default 100,000), one million per
# server in all, each on a fresh image with tests/data/fsx-rw.toml, then
# e2fsck -fn. SERVERS picks the servers (default "ext4-fuse ext4-fuse-bsd";
# "ext4-fuse:uring=on" adds -o options). Run as root.
#
# Why many runs rather than one of a million: fsx 0.3.2 never unmaps the
# mapping of its mapread operation. The process slows as they pile up (one
# run of 1,000,000 had done about 210,000 operations after 49 minutes, at
# 79,000 mappings) and dies at vm.max_map_count, which is raised here.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin
OPS=${OPS:-100000}
SEEDS=${SEEDS:-"1 2 3 4 5 6 7 8 9 10"}
SERVERS=${SERVERS:-"ext4-fuse ext4-fuse-bsd"}
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
for spec in $SERVERS; do
  server=${spec%%:*} opts=
  [ "$spec" = "$server" ] || opts="-o ${spec#*:}"
  for seed in $SEEDS; do
    img=$work/$server-$seed.img mnt=$work/m-$server-$seed
    mkdir -p "$mnt" "$work/art-$server-$seed"
    mke2fs -F -q -t ext4 -b 4096 "$img" 128M
    # shellcheck disable=SC2086
    "$bin/$server" "$img" "$mnt" $opts
    echo "== $spec seed $seed: $OPS operations ($(date +%T))"
    status=0
    fsx -N "$OPS" -S "$seed" -f tests/data/fsx-rw.toml -P "$work/art-$server-$seed" "$mnt/fsx.file" || status=$?
    umount "$mnt"
    sleep 1
    [ $status -eq 0 ] || { echo "fsx failed on $server seed $seed" >&2; exit 1; }
    e2fsck -fn "$img" >/dev/null || { echo "e2fsck -fn failed after $server seed $seed" >&2; exit 1; }
  done
done
echo "fsx soak: all runs clean"

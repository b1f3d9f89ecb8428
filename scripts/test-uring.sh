#!/usr/bin/env bash
# The ext4-fuse suites a second time over FUSE over io_uring (issue #21):
# the whole-tree comparisons with the kernel's ext4 (read-only, sandboxed),
# the read-write mounts (interop with the kernel, fsx, full disk, crash
# cleanliness) and pjdfstest, every ext4-fuse mount with -o uring=on
# (tests/src/fuse.rs adds $EXT4_TESTS_EXT4_FUSE_OPTS). Sets the fuse
# module's enable_uring for the run and puts it back. Run as root, from
# scripts/test-all.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
param=/sys/module/fuse/parameters/enable_uring
if [ ! -e $param ]; then
    line="no $param: FUSE over io_uring needs Linux 6.14+ with CONFIG_FUSE_IO_URING"
    if [ "${EXT4_TESTS_REQUIRE_ALL:-}" = 1 ]; then
        echo "test-uring.sh: $line (EXT4_TESTS_REQUIRE_ALL=1 forbids skipping)" >&2
        exit 1
    fi
    echo "SKIPPED: $line"
    exit 0
fi
was=$(cat $param)
trap 'echo "$was" >$param' EXIT
echo Y >$param
export EXT4_TESTS_EXT4_FUSE_OPTS=uring=on
cargo test -p ext4-fuse --test matrix --test sandbox -- --test-threads=2
cargo test -p ext4-tests --test rw_mounts --test pjdfstest -- --test-threads=2

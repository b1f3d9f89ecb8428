#!/usr/bin/env bash
# FUSE iomap writes through the kernel model: upcalls per MiB for
# sequential writes, random overwrites and appends, with the server's
# mapping-cache pushes on and off, and the server's CPU per IOEND
# (frontend-linux/tests/iomap_writes.rs, bench_write_upcalls_per_mib).
# This kernel has no FUSE iomap, so there is no peer to run in the same
# row: the numbers are the protocol's cost, for comparison between
# versions of the server.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/sbin:/sbin
cargo test -q --release -p ext4-fuse --test iomap_writes bench_write_upcalls_per_mib \
    -- --ignored --nocapture --test-threads=1 2>&1 | grep -v '^test \|^running\|^$'

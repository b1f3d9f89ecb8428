#!/usr/bin/env bash
# The project's test command: installs the oracles, checks format and lints,
# runs the fuzz targets briefly, and runs every test (unit, property, and
# integration against mke2fs, debugfs, e2fsck, the kernel's ext4 and FUSE,
# and the e2fsprogs corpus).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/sbin:/sbin
bash scripts/install-test-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The engine stays no_std + alloc: it must build for a target without std.
rustup target add x86_64-unknown-none
cargo build -p ext4-engine --target x86_64-unknown-none
# A fixed number of executions of every fuzz target from its seeds.
bash scripts/fuzz-smoke.sh
# This command runs as root with /dev/fuse and loop devices (as CI does):
# a test that would skip for want of a tool or privilege fails instead.
# Unset it to run the rest on a machine without them.
export EXT4_TESTS_REQUIRE_ALL=${EXT4_TESTS_REQUIRE_ALL-1}
cargo test --workspace --no-fail-fast -- --test-threads=2
# The ext4-fuse suites again with every request through io_uring queues.
bash scripts/test-uring.sh

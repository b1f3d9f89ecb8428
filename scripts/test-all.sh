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
# A fixed number of executions of every fuzz target from its seeds.
bash scripts/fuzz-smoke.sh
cargo test --workspace --no-fail-fast -- --test-threads=2

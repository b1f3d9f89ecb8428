#!/usr/bin/env bash
# pjdfstest on the kernel's ext4 (a loop mount) and on both read-write FUSE
# servers, each on a copy of the same fresh image, in one run, with the
# committed configuration (tests/data/pjdfstest.toml): the test
# tests/tests/pjdfstest.rs, which the test command runs too. Prints each
# mount's summary; fails when a test the kernel passes does not pass on a
# server (and says which, with pjdfstest's words).
# Needs root, pjdfstest and the user pjdtest (scripts/install-test-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin
cargo build -q -p ext4-fuse -p ext4-fuse-bsd
EXT4_TESTS_REQUIRE_ALL=1 cargo test -q -p ext4-tests --test pjdfstest -- --nocapture

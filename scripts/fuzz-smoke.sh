#!/usr/bin/env bash
# CI smoke run of the fuzz targets: builds them, then runs each a fixed
# number of executions from the checked-in seeds (fuzz/seeds/<target>/).
# Fails on any crash, hang (-timeout) or memory blow-up (-rss_limit_mb).
# Skips, loudly and with exit 0, only when no nightly toolchain exists.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin
runs=${FUZZ_SMOKE_RUNS:-300}
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "################################################################" >&2
    echo "## fuzz-smoke: SKIPPED - no nightly toolchain installed        ##" >&2
    echo "## (rustup toolchain install nightly) to run the fuzz smoke   ##" >&2
    echo "################################################################" >&2
    exit 0
fi
cargo +nightly fuzz --version >/dev/null 2>&1 || cargo +nightly install cargo-fuzz --locked
targets=(open inode blockmap dir inline xattr symlink walk)
# A scratch corpus from the seeds only, so runs are repeatable.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t" "$scratch/artifacts/$t"
    for f in fuzz/seeds/"$t"/*.img.gz; do gzip -dc "$f" >"$scratch/$t/$(basename "$f" .gz)"; done
done
cd fuzz
cargo +nightly fuzz build -s none
bin=target/x86_64-unknown-linux-gnu/release
for t in "${targets[@]}"; do
    start=$(date +%s)
    if ! "$bin/$t" -runs="$runs" -seed=1 -max_len=4194304 -timeout=30 -rss_limit_mb=2048 \
        -artifact_prefix="$scratch/artifacts/$t/" "$scratch/$t" >"$scratch/$t.log" 2>&1; then
        echo "fuzz-smoke: $t FAILED" >&2
        grep -E 'panicked|ERROR|SUMMARY' -A3 "$scratch/$t.log" | head -20 >&2
        mkdir -p artifacts/"$t"
        cp "$scratch/artifacts/$t"/* artifacts/"$t"/ 2>/dev/null || true
        exit 1
    fi
    echo "fuzz-smoke: $t ok ($runs runs, $(($(date +%s) - start)) s): $(grep -E '^#[0-9]+' "$scratch/$t.log" | tail -1)"
done

#!/usr/bin/env bash
# CI smoke run of the fuzz targets: builds them (nightly, cargo-fuzz, no
# sanitizer: the engine forbids unsafe code; overflow checks and debug
# assertions stay on), then runs each one a fixed number of executions
# (FUZZ_SMOKE_RUNS, default 300) from the checked-in seeds only
# (fuzz/seeds/<target>/), with a fixed seed, so a run is repeatable.
#
# Fails, naming the target and the input, on a crash or panic, on an input
# that runs longer than 30 s (-timeout), on a memory blow-up past 2 GiB
# (-rss_limit_mb), and on a target whose whole run outlasts
# FUZZ_SMOKE_TARGET_SECS (default 120: the run is killed, so a slow or hung
# harness cannot stall CI). Crashing inputs are copied to
# fuzz/artifacts/<target>/ for `cargo fuzz run <target> <file>`.
#
# Needs the nightly toolchain and cargo-fuzz; scripts/install-test-deps.sh
# installs both. Build output goes to FUZZ_TARGET_DIR (default fuzz/target).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export PATH=$HOME/.cargo/bin:$PATH:/usr/sbin:/sbin
runs=${FUZZ_SMOKE_RUNS:-300}
limit=${FUZZ_SMOKE_TARGET_SECS:-120}
tdir=${FUZZ_TARGET_DIR:-$root/fuzz/target}
fail() {
    echo "fuzz-smoke: FAILED: $*" >&2
    exit 1
}
rustup toolchain list 2>/dev/null | grep -q '^nightly' ||
    fail "no nightly toolchain (scripts/install-test-deps.sh installs it)"
cargo +nightly fuzz --version >/dev/null 2>&1 ||
    fail "cargo-fuzz is not installed (scripts/install-test-deps.sh installs it)"

targets=(open inode blockmap dir inline xattr symlink walk journal)
t0=$(date +%s)
# A scratch corpus from the seeds only: libFuzzer adds what it finds to its
# corpus directory, which must not carry over between runs.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t" "$scratch/artifacts/$t"
    seeds=(fuzz/seeds/"$t"/*.img.gz)
    [ -e "${seeds[0]}" ] || fail "$t: no seeds in fuzz/seeds/$t/"
    for f in "${seeds[@]}"; do gzip -dc "$f" >"$scratch/$t/$(basename "$f" .gz)"; done
done

if ! (cd fuzz && cargo +nightly fuzz build -s none --target-dir "$tdir") >"$scratch/build.log" 2>&1; then
    tail -30 "$scratch/build.log" >&2
    fail "cargo +nightly fuzz build -s none (in fuzz/) failed"
fi
bin=$tdir/x86_64-unknown-linux-gnu/release
for t in "${targets[@]}"; do
    [ -x "$bin/$t" ] || fail "$t: not built ($bin/$t missing)"
done
echo "fuzz-smoke: built in $(($(date +%s) - t0)) s"

# One target: its log, and a one-line verdict in $scratch/$t.result (the
# first word "ok" or "FAILED").
run_one() {
    local t=$1 start rc secs execs cov
    start=$(date +%s)
    set +e
    timeout -k 10 "$limit" "$bin/$t" -runs="$runs" -seed=1 -max_len=4194304 -timeout=30 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$scratch/artifacts/$t/" \
        "$scratch/$t" >"$scratch/$t.log" 2>&1
    rc=$?
    set -e
    secs=$(($(date +%s) - start))
    execs=$(awk '/^stat::number_of_executed_units/ {print $2}' "$scratch/$t.log")
    cov=$(grep -oE 'cov: [0-9]+' "$scratch/$t.log" | tail -1)
    if [ $rc -eq 0 ]; then
        echo "ok: ${execs:-?} executions, ${cov:-cov: ?}, $secs s" >"$scratch/$t.result"
    elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        echo "FAILED: still running after $limit s (killed): slow or hung" >"$scratch/$t.result"
    else
        echo "FAILED: exit $rc after $secs s" >"$scratch/$t.result"
    fi
}

# Each target is one single-threaded process: run two at a time (the
# machine has two cores); every run stays repeatable.
jobs=${FUZZ_SMOKE_JOBS:-2}
for t in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    run_one "$t" &
done
wait

failed=()
for t in "${targets[@]}"; do
    result=$(cat "$scratch/$t.result" 2>/dev/null || echo "FAILED: no result")
    if [ "${result%%:*}" = ok ]; then
        echo "fuzz-smoke: $t $result"
        continue
    fi
    failed+=("$t")
    echo "fuzz-smoke: $t $result" >&2
    grep -E 'panicked|ERROR|SUMMARY|Test unit written|timeout|out-of-memory' -A3 "$scratch/$t.log" |
        head -20 >&2 || true
    tail -5 "$scratch/$t.log" >&2
    if compgen -G "$scratch/artifacts/$t/*" >/dev/null; then
        mkdir -p fuzz/artifacts/"$t"
        cp "$scratch/artifacts/$t"/* fuzz/artifacts/"$t"/
        echo "fuzz-smoke: the input is in fuzz/artifacts/$t/; reproduce with:" \
            "cd fuzz && cargo +nightly fuzz run -s none $t artifacts/$t/<file>" >&2
    fi
done
echo "fuzz-smoke: ${#targets[@]} targets, $runs runs each, $(($(date +%s) - t0)) s in all"
[ ${#failed[@]} -eq 0 ] || fail "${failed[*]}"

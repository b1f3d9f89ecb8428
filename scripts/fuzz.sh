#!/usr/bin/env bash
# Run the engine's fuzz targets locally, one at a time, each for a chosen
# number of seconds (default 180), and print per target the time, executions
# and coverage libFuzzer reports at the end. Crashes, hangs and memory
# blow-ups land in fuzz/artifacts/<target>/; logs in fuzz/artifacts/logs/.
#
#   scripts/fuzz.sh [seconds] [target ...]
#
# Needs a nightly toolchain and cargo-fuzz (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-180}
shift || true
all=(open inode blockmap dir inline xattr symlink walk)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz.sh: no nightly toolchain (rustup toolchain install nightly)" >&2
    exit 1
fi
cargo +nightly fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked

bash fuzz/prepare-corpus.sh "${targets[@]}"
cd fuzz
# No sanitizer: the engine forbids unsafe code, and ASan slows each
# execution several times; overflow checks and debug assertions stay on.
mkdir -p artifacts/logs
for t in "${targets[@]}"; do
    cargo +nightly fuzz build -s none "$t" >/dev/null
    mkdir -p "artifacts/$t"
    start=$(date +%s)
    set +e
    cargo +nightly fuzz run -s none "$t" "corpus/$t" -- \
        -max_total_time="$secs" -max_len=4194304 -timeout=20 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"artifacts/logs/$t.log" 2>&1
    rc=$?
    set -e
    end=$(date +%s)
    last=$(grep -E '^#[0-9]+' "artifacts/logs/$t.log" | tail -1)
    execs=$(grep -E '^stat::number_of_executed_units' "artifacts/logs/$t.log" | awk '{print $2}')
    echo "$t: $((end - start)) s, exit $rc, execs ${execs:-?}, last: $last"
    if [ $rc -ne 0 ]; then
        grep -E 'panicked|ERROR|SUMMARY|Test unit written' "artifacts/logs/$t.log" | head -5
    fi
done

#!/usr/bin/env bash
# FUSE over io_uring: one entry per CPU queue against several. While a
# writer pinned to CPU 0 writes 300 MiB files with fsync in a loop, a
# reader pinned to the same CPU sends GETXATTRs (each one reaches the
# server) for a few seconds; with one entry per queue a request from CPU 0
# waits behind the writer's FSYNC and WRITEs. Prints the reader's request
# count and latency percentiles per setting, in the same run; root, and
# a kernel with FUSE over io_uring (enable_uring is set for the run and
# put back).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/sbin:/sbin
param=/sys/module/fuse/parameters/enable_uring
[ -w "$param" ] || { echo "needs root and a fuse module with enable_uring" >&2; exit 1; }
cargo build -q --release -p ext4-fuse
bin=$PWD/target/release/ext4-fuse
work=$(mktemp -d)
was=$(cat "$param")
trap 'umount "$work/mnt" 2>/dev/null || true; echo "$was" > "$param"; rm -rf "$work"' EXIT
echo Y > "$param"
mke2fs -q -F -t ext4 "$work/img" 2g
mkdir "$work/mnt"
cat > "$work/reader.py" <<'PY'
import os, sys, time
os.sched_setaffinity(0, {0})
path, secs = sys.argv[1], float(sys.argv[2])
lat, end = [], time.time() + secs
while time.time() < end:
    t = time.perf_counter()
    try:
        os.getxattr(path, "user.x")
    except OSError:
        pass
    lat.append(time.perf_counter() - t)
lat.sort()
n = len(lat)
print(f"{n:>9} {lat[n // 2] * 1e6:>9.0f} {lat[int(n * 0.99)] * 1e6:>9.0f} {lat[-1] * 1e3:>9.1f}")
PY
cpus=$(( $(sed 's/.*-//' /sys/devices/system/cpu/possible) + 1 ))
printf '%-28s %9s %9s %9s %9s\n' "entries per queue" requests "p50 us" "p99 us" "max ms"
for round in 1 2 3; do
    for entries in 1 2; do
        "$bin" "$work/img" "$work/mnt" -o "uring=on,threads=$((entries * cpus))"
        sleep 1
        touch "$work/mnt/a"
        # A session of its own, so that the whole writer (dd too) stops.
        setsid taskset -c 0 sh -c "while :; do dd if=/dev/zero of=$work/mnt/big bs=1M count=300 conv=fsync status=none; done" &
        writer=$!
        sleep 0.3
        printf '%-28s ' "$entries (round $round)"
        python3 "$work/reader.py" "$work/mnt/a" 6
        kill -- -"$writer"; wait "$writer" 2>/dev/null || true
        # dd ends its current write first.
        while kill -0 -- -"$writer" 2>/dev/null; do sleep 0.1; done
        umount "$work/mnt"
        sleep 0.5
    done
done

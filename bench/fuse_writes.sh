#!/usr/bin/env bash
# The write rows of the FUSE benchmark (issue 18): each workload on a fresh
# image per column, mounted read-write by the kernel's ext4 (loop),
# ext4-fuse, ext4-fuse-bsd and fuse2fs -o rw, in the same run; every
# timing includes making the result durable (sync, then the unmount).
#   seq      1 GiB sequential write (dd bs=1M) + fsync            (seconds)
#   rand     fio 4 KiB random writes to a 256 MiB file, psync,    (IOPS)
#            buffered, -t seconds, end_fsync
#   create   500 x (create a 4 KiB file + fsync), one directory   (seconds)
# Not yet: untarring the benchmark tree and rm -rf of it need mkdir and
# rmdir, which the servers answer EOPNOTSUPP until the engine's namespace
# operations land.
#
# Prints each value (median of -r repetitions) and the ratios ours/kernel
# (a slowdown: lower is better) and fuse2fs/ours (a speedup: higher is
# better), as time ratios (for fio: kernel IOPS / our IOPS).
#
#   bash bench/fuse_writes.sh [-c COLUMNS] [-T TESTS] [-r N] [-t SECONDS] [-B]
#     -c COLUMNS  comma list of kernel,ours,bsd,fuse2fs (default all)
#     -T TESTS    comma list of seq,rand,create (default all)
#     -r N        repetitions (default 1)
#     -t SECONDS  fio runtime (default 8)
#     -B          do not build; use the binaries as they are
#   Environment: EXT4_FUSE, EXT4_FUSE_BSD (binaries; default the release
#   builds under $CARGO_TARGET_DIR or target/), OURS_OPTS, BSD_OPTS.
# Needs root. Images live in a scratch directory under $TMPDIR (default /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

cols=kernel,ours,bsd,fuse2fs tests=seq,rand,create reps=1 fio_secs=8 build=1
while getopts c:T:r:t:Bh o; do
    case $o in
        c) cols=$OPTARG ;;
        T) tests=$OPTARG ;;
        r) reps=$OPTARG ;;
        t) fio_secs=$OPTARG ;;
        B) build=0 ;;
        *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
    esac
done
IFS=, read -r -a COLS <<<"$cols"
IFS=, read -r -a TESTS <<<"$tests"
[ "$(id -u)" = 0 ] || { echo "needs root (mount)" >&2; exit 1; }
export PATH=$PATH:/usr/sbin:/sbin
target=${CARGO_TARGET_DIR:-target}
if [ $build = 1 ]; then
    cargo build -q --release -p ext4-fuse -p ext4-fuse-bsd
fi
ours_bin=${EXT4_FUSE:-$target/release/ext4-fuse}
bsd_bin=${EXT4_FUSE_BSD:-$target/release/ext4-fuse-bsd}

work=$(mktemp -d "${TMPDIR:-/tmp}/fusewrites.XXXXXX")
mnt=$work/mnt
img=$work/img
mkdir -p "$mnt"
server_pid=
log=$work/server.log
cleanup() {
    local rc=$?
    if mountpoint -q "$mnt" 2>/dev/null; then
        umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    fi
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

do_mount() { # column
    case $1 in
        kernel) mount -o loop "$img" "$mnt" ;;
        ours) "$ours_bin" "$img" "$mnt" -f ${OURS_OPTS:+-o $OURS_OPTS} >>"$log" 2>&1 &
            server_pid=$! ;;
        bsd) "$bsd_bin" "$img" "$mnt" -f ${BSD_OPTS:+-o $BSD_OPTS} >>"$log" 2>&1 &
            server_pid=$! ;;
        fuse2fs) fuse2fs -f "$img" "$mnt" -o rw >>"$log" 2>&1 &
            server_pid=$! ;;
    esac
    local i
    for ((i = 0; i < 300; i++)); do
        mountpoint -q "$mnt" && return 0
        sleep 0.1
    done
    echo "$1: no mount after 30 s (see $log)" >&2
    exit 1
}

do_umount() {
    umount "$mnt"
    if [ -n "$server_pid" ]; then
        wait "$server_pid" || true
        server_pid=
    fi
}

now() { date +%s.%N; }

# One run of test $2 on column $1: prints its value.
run_one() {
    rm -f "$img"
    mke2fs -F -q -t ext4 -b 4096 "$img" 3G
    do_mount "$1"
    local t0 v
    case $2 in
        seq)
            t0=$(now)
            dd if=/dev/zero of="$mnt/seq" bs=1M count=1024 conv=fsync status=none
            sync
            do_umount
            v=$(echo "$(now) - $t0" | bc)
            ;;
        rand)
            v=$(fio --name=rand --filename="$mnt/rand" --size=256M --rw=randwrite --bs=4k \
                --ioengine=psync --direct=0 --time_based --runtime="$fio_secs" --end_fsync=1 \
                --randseed=42 --output-format=terse --terse-version=3 | cut -d';' -f49)
            do_umount
            ;;
        create)
            mkdir -p "$work/src" && head -c 4096 /dev/urandom >"$work/src/4k"
            t0=$(now)
            python3 - "$mnt" "$work/src/4k" <<'EOF'
import os, sys
mnt, src = sys.argv[1], open(sys.argv[2], 'rb').read()
for i in range(500):
    fd = os.open(os.path.join(mnt, f"f{i:03}"), os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, src)
    os.fsync(fd)
    os.close(fd)
EOF
            sync
            do_umount
            v=$(echo "$(now) - $t0" | bc)
            ;;
    esac
    if ! e2fsck -fn "$img" >/dev/null 2>&1; then
        echo "$1/$2: e2fsck -fn failed afterwards" >&2
        # A peer's damage is reported; ours or the kernel's stops the run.
        [ "$1" = fuse2fs ] || exit 1
    fi
    echo "$v"
}

declare -A val
for t in "${TESTS[@]}"; do
    for c in "${COLS[@]}"; do
        vs=()
        for ((r = 0; r < reps; r++)); do vs+=("$(run_one "$c" "$t")"); done
        val[$c,$t]=$(median "${vs[@]}")
    done
done

printf '\nFUSE write benchmark, %s, load %s\n' "$(date -u +%F)" "$(load_avg)"
printf '%-8s' test
for c in "${COLS[@]}"; do printf '%12s' "$c"; done
printf '%14s%14s%14s\n' ours/kernel bsd/kernel fuse2fs/ours
for t in "${TESTS[@]}"; do
    printf '%-8s' "$t"
    for c in "${COLS[@]}"; do printf '%12s' "${val[$c,$t]}"; done
    k=${val[kernel,$t]:--} o=${val[ours,$t]:--} b=${val[bsd,$t]:--} f=${val[fuse2fs,$t]:--}
    if [ "$t" = rand ]; then
        # IOPS: time per I/O is the inverse.
        printf '%14s%14s%14s\n' "$(ratio "$k" "$o")" "$(ratio "$k" "$b")" "$(ratio "$o" "$f")"
    else
        printf '%14s%14s%14s\n' "$(ratio "$o" "$k")" "$(ratio "$b" "$k")" "$(ratio "$f" "$o")"
    fi
done
printf '(seq, create: seconds; rand: IOPS. Ratios are time ratios.)\n'

#!/usr/bin/env bash
# Mounts each image with the kernel's ext4 (mount -o loop,ro), ext4-fuse,
# ext4-fuse-bsd and fuse2fs -o ro, and times on each, cold and warm. Two
# images (bench/lib.sh builds them once, both with mke2fs -d, each with a
# 1 GiB big.bin):
#   synth  a generated source-like tree of ~50,000 files, ~15 per directory
#   real   a copy of this machine's /usr/share and Python standard library
#          (~55,000 entries; man1 alone ~18,000): mke2fs -d writes such big
#          directories linear (no hash tree), the case of issue #15
# The tests:
#   cat    cat MNT/big.bin >/dev/null                       (seconds)
#   find   find MNT -printf '%s %m %u\n' >/dev/null          (seconds)
#   tar    tar cf - -C MNT . | wc -c                         (seconds)
#   fio    4 KiB random reads of big.bin, psync, buffered,   (IOPS)
#          fixed runtime, same offsets every run
# The write tests (issue #18), each on a fresh empty 4 GiB image (mke2fs -t
# ext4) per column, mounted read-write (kernel: mount -o loop; fuse2fs -o
# rw), everything made durable (sync, then the unmount) inside the timing:
#   untar  tar xf of the synth tree without big.bin (bench_tar), sync  (seconds)
#          (also the server's peak RSS, VmHWM, at the end of the untar)
#   seq    1 GiB sequential write (dd bs=1M conv=fsync), sync           (seconds)
#   rand   fio 4 KiB random writes to a 256 MiB file, psync, buffered, (IOPS)
#          -t seconds, end_fsync
#   create 500 x (create a 4 KiB file + fsync), one directory          (seconds)
#   rm     rm -rf of the untarred tree (cold: a fresh mount after      (seconds)
#          sync + drop_caches), sync
# Each image is checked with e2fsck -fn afterwards (outside the timing).
#
# The uring column (issue #21) is ext4-fuse -o uring=on: requests through
# one io_uring queue per CPU (the fuse module's enable_uring is set to Y for
# the run and put back after); its own table compares it with the kernel
# and with ext4-fuse on /dev/fuse, for the read and the write tests. It is
# in the default columns when the module has the parameter.
#
# Cold = a fresh mount (so no server keeps metadata from an earlier run)
# followed by sync + drop_caches; warm = the same command again at once.
# Each value is the median of the repetitions. Prints one table with the
# columns side by side, the ratios and the targets of issues #4 and #6
# (synth) or #15 (real) per image, and writes them to bench/out/ as well.
#
# Ratios are all time ratios: ours/kernel is a slowdown (lower is better),
# fuse2fs/ours a speedup (higher is better). For fio, time per I/O, i.e.
# kernel IOPS / our IOPS and our IOPS / fuse2fs IOPS.
#
# On a shared machine, anyone else's drop_caches turns a warm run cold
# (seen as server CPU in a warm row of the CPU table), and load shifts wall
# times by 2x between repetitions: compare ratios within one run, and
# the CPU table.
#
# Needs root (mount, drop_caches). Every mount is unmounted and checked
# before the next; an exit or interrupt unmounts whatever is mounted.
#
#   bash bench/fuse.sh [-i IMAGES] [-n FILES] [-c COLUMNS] [-T TESTS]
#                      [-r N] [-R N] [-t SECONDS] [-B]
#     -i IMAGES   comma list of synth,real (default both)
#     -n FILES    files in the synth tree (default 50000)
#     -c COLUMNS  comma list of kernel,ours,bsd,fuse2fs,uring (default all)
#     -T TESTS    comma list of cat,find,tar,fio (reads) and untar,seq,
#                 rand,create,rm (writes) (default all)
#     -r N        repetitions of the short tests, cat and find (default 3)
#     -R N        repetitions of the long tests, tar and fio, and of
#                 every write test (default 1)
#     -t SECONDS  fio runtime per run, reads and writes (default 10)
#     -B          do not build; use the binaries as they are
#   Environment: EXT4_FUSE, EXT4_FUSE_BSD (binaries; default the release
#   builds under $CARGO_TARGET_DIR or target/), OURS_OPTS, BSD_OPTS (extra
#   -o options, e.g. threads=2), BENCH_NOTE (a line for the report, e.g.
#   which binaries stand in which column).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

uring_param=/sys/module/fuse/parameters/enable_uring
cols=kernel,ours,bsd,fuse2fs
[ ! -e $uring_param ] || cols+=,uring
files=50000 tests=cat,find,tar,fio,untar,seq,rand,create,rm images=synth,real
reps_short=3 reps_long=1 fio_secs=10 build=1
while getopts i:n:c:T:r:R:t:Bh o; do
    case $o in
        i) images=$OPTARG ;;
        n) files=$OPTARG ;;
        c) cols=$OPTARG ;;
        T) tests=$OPTARG ;;
        r) reps_short=$OPTARG ;;
        R) reps_long=$OPTARG ;;
        t) fio_secs=$OPTARG ;;
        B) build=0 ;;
        *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
    esac
done
IFS=, read -r -a COLS <<<"$cols"
IFS=, read -r -a TESTS <<<"$tests"
RTESTS=() WTESTS=()
IFS=, read -r -a IMAGES <<<"$images"
for i in "${IMAGES[@]}"; do
    case $i in synth | real) ;; *) echo "unknown image $i" >&2; exit 2 ;; esac
done
for c in "${COLS[@]}"; do
    case $c in kernel | ours | bsd | fuse2fs | uring) ;; *) echo "unknown column $c" >&2; exit 2 ;; esac
done
for t in "${TESTS[@]}"; do
    case $t in
        cat | find | tar | fio) RTESTS+=("$t") ;;
        untar | seq | rand | create | rm) WTESTS+=("$t") ;;
        *) echo "unknown test $t" >&2; exit 2 ;;
    esac
done
if [ "$(id -u)" != 0 ]; then
    echo "needs root (mount, drop_caches)" >&2
    exit 1
fi
for tool in fio fuse2fs mountpoint; do
    command -v $tool >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

tgt=${CARGO_TARGET_DIR:-$PWD/target}
if [ $build = 1 ]; then
    cargo build --release -q -p ext4-fuse -p ext4-fuse-bsd
fi
ours_bin=${EXT4_FUSE:-$tgt/release/ext4-fuse}
bsd_bin=${EXT4_FUSE_BSD:-$tgt/release/ext4-fuse-bsd}

big=big.bin
mnt=$(mktemp -d /tmp/fusebench.XXXXXX)
server_pid= wimg=
server_log=$out/fuse-server.log
: >"$server_log"
uring_was=
if [[ ",$cols," == *,uring,* ]]; then
    [ -e $uring_param ] || { echo "uring column: this kernel's fuse module has no enable_uring" >&2; exit 1; }
    uring_was=$(cat $uring_param)
    echo Y >$uring_param
fi

cleanup() {
    local rc=$?
    if mountpoint -q "$mnt" 2>/dev/null; then
        umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    fi
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rmdir "$mnt" 2>/dev/null || true
    [ -z "${wimg:-}" ] || rm -f "$wimg"
    [ -z "$uring_was" ] || echo "$uring_was" >$uring_param
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
    echo "fuse.sh: $*" >&2
    exit 1
}

do_mount() { # column [ro|rw]
    local m=${2:-ro}
    case $1 in
        kernel) mount -o loop,$m "$img" "$mnt" ;;
        ours) "$ours_bin" "$img" "$mnt" -f -o $m${OURS_OPTS:+,$OURS_OPTS} >>"$server_log" 2>&1 &
            server_pid=$! ;;
        bsd) "$bsd_bin" "$img" "$mnt" -f -o $m${BSD_OPTS:+,$BSD_OPTS} >>"$server_log" 2>&1 &
            server_pid=$! ;;
        uring) "$ours_bin" "$img" "$mnt" -f -o $m,uring=on${OURS_OPTS:+,$OURS_OPTS} >>"$server_log" 2>&1 &
            server_pid=$! ;;
        fuse2fs) fuse2fs -f "$img" "$mnt" -o $m >>"$server_log" 2>&1 &
            server_pid=$! ;;
    esac
    local i
    for ((i = 0; i < 300; i++)); do
        mountpoint -q "$mnt" && return 0
        if [ -n "$server_pid" ] && ! kill -0 "$server_pid" 2>/dev/null; then
            server_pid=
            die "$1 did not mount (see $server_log)"
        fi
        sleep 0.1
    done
    die "$1: no mount after 30 s"
}

do_umount() { # column
    umount "$mnt" || die "$1: umount failed"
    if [ -n "$server_pid" ]; then
        local i
        for ((i = 0; i < 300; i++)); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$server_pid" 2>/dev/null && die "$1: server still running 30 s after umount"
        wait "$server_pid" || echo "fuse.sh: $1 server exited with status $?" >&2
        server_pid=
    fi
    mountpoint -q "$mnt" && die "$1: still mounted after umount"
    if [ -n "$(losetup -j "$img")" ]; then
        sleep 1 # autoclear can lag the umount a little
        [ -z "$(losetup -j "$img")" ] || die "$1: loop device left attached: $(losetup -j "$img")"
    fi
}

# CPU ticks used so far by this shell's finished children and by the FUSE
# server: "client server". The kernel column's loop worker is not counted
# (its ext4 work runs in the client's system time).
hz=$(getconf CLK_TCK)
ticks() {
    local self srv=0
    self=$(awk '{ print $16 + $17 }' /proc/$$/stat)
    if [ -n "$server_pid" ]; then
        srv=$(awk '{ print $14 + $15 }' "/proc/$server_pid/stat" 2>/dev/null || echo 0)
    fi
    echo "$self $srv"
}

# run TEST: one run on the mounted column; sets $result (seconds, or IOPS
# for fio), $cpu ("client server" CPU seconds; for fio, microseconds per
# I/O) and $check (tar's byte count, the same for every column).
result= check= cpu=
run() {
    local t0 t1 c0 c1
    check=-
    c0=$(ticks)
    case $1 in
        cat)
            t0=$EPOCHREALTIME
            cat "$mnt/$big" >/dev/null
            t1=$EPOCHREALTIME ;;
        find)
            t0=$EPOCHREALTIME
            find "$mnt" -printf '%s %m %u\n' >/dev/null
            t1=$EPOCHREALTIME ;;
        tar)
            t0=$EPOCHREALTIME
            check=$(tar cf - -C "$mnt" . | wc -c)
            t1=$EPOCHREALTIME ;;
        fio)
            fio --name=randread --filename="$mnt/$big" --readonly --rw=randread \
                --bs=4k --ioengine=psync --direct=0 --invalidate=0 --size="$bigsize" \
                --runtime="$fio_secs" --time_based --randrepeat=1 \
                --output-format=json >"$out/fio.json" 2>"$out/fio.err" ||
                die "fio failed: $(cat "$out/fio.err")"
            c1=$(ticks)
            result=$(python3 -c 'import json,sys; print("%.0f" % json.load(open(sys.argv[1]))["jobs"][0]["read"]["iops"])' \
                "$out/fio.json")
            # CPU per I/O in microseconds, client and server.
            cpu=$(awk -v a="$c0" -v b="$c1" -v hz="$hz" -v n="$((result * fio_secs))" 'BEGIN {
                split(a, x, " "); split(b, y, " "); if (n == 0) n = 1;
                printf "%.1f %.1f\n", (y[1] - x[1]) / hz / n * 1e6, (y[2] - x[2]) / hz / n * 1e6 }')
            return ;;
    esac
    c1=$(ticks)
    result=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }')
    cpu=$(awk -v a="$c0" -v b="$c1" -v hz="$hz" 'BEGIN {
        split(a, x, " "); split(b, y, " ");
        printf "%.2f %.2f\n", (y[1] - x[1]) / hz, (y[2] - x[2]) / hz }')
}

# verdict VALUE OP LIMIT: "ok" or "MISS" (or "" without a value).
verdict() {
    [ "$1" != - ] || { echo; return; }
    awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN {
        ok = (op == "<=") ? (v <= l) : (v >= l); print ok ? "ok" : "MISS" }'
}

# ---- write tests ----------------------------------------------------------
# wrun COLUMN TEST: one write test on a fresh image; sets W[col.test] (and
# W[col.rm], RSS[col] for untar/rm, which share the untarred image).
wrun() {
    local c=$1 t=$2 t0 v
    img=$wimg
    : >"$img" # (mke2fs announces a file it creates)
    mke2fs -F -q -t ext4 -L benchw "$img" 4G
    do_mount "$c" rw
    LOAD[$c]+="$(cut -d' ' -f1 /proc/loadavg) "
    case $t in
        untar | rm)
            t0=$EPOCHREALTIME
            tar xf "$tar" -C "$mnt" || die "$c: untar failed"
            sync
            if [ -n "$server_pid" ]; then
                RSS[$c]+="$(awk '/^VmHWM/ { print $2 }' "/proc/$server_pid/status") "
            fi
            do_umount "$c"
            v=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f\n", b - a }')
            has_test untar && W[$c.untar]+="$v "
            if has_test rm; then
                fsck_or_die "$c" untar
                cold
                do_mount "$c" rw
                t0=$EPOCHREALTIME
                rm -rf "${mnt:?}"/* || die "$c: rm -rf failed"
                sync
                do_umount "$c"
                v=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f\n", b - a }')
                W[$c.rm]+="$v "
                t=rm
            else
                t=untar
            fi
            ;;
        seq)
            t0=$EPOCHREALTIME
            dd if=/dev/zero of="$mnt/seq" bs=1M count=1024 conv=fsync status=none || die "$c: dd failed"
            sync
            do_umount "$c"
            W[$c.seq]+="$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f\n", b - a }') "
            ;;
        rand)
            v=$(fio --name=randw --filename="$mnt/rand" --size=256M --rw=randwrite --bs=4k \
                --ioengine=psync --direct=0 --time_based --runtime="$fio_secs" --end_fsync=1 \
                --randseed=42 --output-format=json 2>"$out/fio.err" |
                python3 -c 'import json,sys; print("%.0f" % json.load(sys.stdin)["jobs"][0]["write"]["iops"])') ||
                die "$c: fio failed: $(cat "$out/fio.err")"
            do_umount "$c"
            W[$c.rand]+="$v "
            ;;
        create)
            t0=$EPOCHREALTIME
            python3 - "$mnt" <<'PY' || die "$c: create+fsync failed"
import os, sys
mnt, data = sys.argv[1], bytes(range(256)) * 16
for i in range(500):
    fd = os.open(os.path.join(mnt, "f%03d" % i), os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, data)
    os.fsync(fd)
    os.close(fd)
PY
            sync
            do_umount "$c"
            W[$c.create]+="$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f\n", b - a }') "
            ;;
    esac
    fsck_or_die "$c" "$t"
}

# Median VmHWM of a column's untar runs in MiB, or "-".
rss_mib() {
    [ -n "${RSS[$1]:-}" ] || { echo -; return; }
    # shellcheck disable=SC2086
    median ${RSS[$1]} | awk '{ printf "%d\n", $1 / 1024 }'
}
last() { echo "$1" | awk '{ print $NF }'; }
has_test() { [[ ",$tests," == *",$1,"* ]]; }

# e2fsck -fn after a run: our columns or the kernel's failing stops the
# run; fuse2fs's damage is reported and counted.
fsck_or_die() { # column test
    if ! e2fsck -fn "$wimg" >"$out/e2fsck.log" 2>&1; then
        echo "fuse.sh: $1/$2: e2fsck -fn found problems (see $out/e2fsck.log)" >&2
        [ "$1" = fuse2fs ] || exit 1
        FSCKBAD[$1]+="$2 "
    fi
}

measure_writes() {
    bench_tar "$files"
    wimg=$(mktemp /tmp/fusebench-w.XXXXXX.img)
    unset W RSS LOAD FSCKBAD
    declare -gA W RSS LOAD FSCKBAD
    local start_load end_load rep t c wt=()
    start_load=$(load_avg)
    # untar and rm share one run (rm removes what untar made).
    for t in "${WTESTS[@]}"; do
        case $t in
            untar | rm) [[ " ${wt[*]} " == *" untar "* ]] || wt+=(untar) ;;
            *) wt+=("$t") ;;
        esac
    done
    for ((rep = 1; rep <= reps_long; rep++)); do
        for t in "${wt[@]}"; do
            for c in "${COLS[@]}"; do
                wrun "$c" "$t"
                echo "rep $rep write $t $c: $(last "${W[$c.$t]:-}")$([ "$t" != untar ] || ! has_test rm || echo " rm $(last "${W[$c.rm]:-}")") (load $(load_avg))" >&2
            done
        done
    done
    end_load=$(load_avg)
    rm -f "$wimg"
    wmed() { # col test
        [ -n "${W[$1.$2]:-}" ] || { echo -; return; }
        # shellcheck disable=SC2086
        median ${W[$1.$2]}
    }
    # Time-like value (fio: seconds per I/O).
    wtv() {
        local v
        v=$(wmed "$1" "$2")
        if [ "$2" = rand ] && [ "$v" != - ]; then
            awk -v v="$v" 'BEGIN { if (v + 0 == 0) print "-"; else printf "%.9f\n", 1 / v }'
        else
            echo "$v"
        fi
    }
    # Targets of issue #18 (both frontends): ours/kernel and fuse2fs/ours.
    wkt() { case $1 in untar) echo 1.5 ;; seq) echo 1.2 ;; rand) echo 1.25 ;; create) echo 1.5 ;; rm) echo 2 ;; esac; }
    wft() { case $1 in untar | rm) echo 5 ;; *) echo - ;; esac; }
    report=$out/fuse-writes-$(date +%Y%m%d-%H%M%S).txt
    {
        echo "bench/fuse.sh writes $(date -Is) on $(uname -r), $(nproc) CPUs, commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- engine frontend-linux frontend-bsd fuse-common || echo ' (+ uncommitted changes)')"
        echo "fresh 4 GiB image per run (mke2fs -t ext4, defaults), in $(dirname "$wimg"); untar: $tar ($(tar tf "$tar" | wc -l) entries, $(du -sh --apparent-size "$tar" | cut -f1))"
        echo "load average (1/5/15 min): start $start_load, end $end_load; 1-min load at each mount:"
        for c in "${COLS[@]}"; do echo "  $c: ${LOAD[$c]:-}"; done
        echo "repetitions: $reps_long (median shown); fio: 4 KiB randwrite, psync, buffered, ${fio_secs} s, end_fsync"
        [ -z "${BENCH_NOTE:-}" ] || echo "note: $BENCH_NOTE"
        echo "options: ext4-fuse -o rw${OURS_OPTS:+,$OURS_OPTS}; ext4-fuse-bsd -o rw${BSD_OPTS:+,$BSD_OPTS}; fuse2fs -o rw; kernel -o loop,rw"
        echo
        hdr="%-7s %9s %9s %9s %9s | %6s %6s %-4s | %8s %5s %-4s | %6s %6s %-4s | %8s %5s %-4s\n"
        # shellcheck disable=SC2059
        printf "$hdr" "" kernel ext4-fuse fuse-bsd fuse2fs "fuse/k" target "" "f2fs/fus" target "" "bsd/k" target "" "f2fs/bsd" target ""
        for t in "${WTESTS[@]}"; do
            k=$(wtv kernel "$t") o=$(wtv ours "$t") b=$(wtv bsd "$t") f=$(wtv fuse2fs "$t")
            ok_=$(ratio "$o" "$k") fo=$(ratio "$f" "$o") bk=$(ratio "$b" "$k") fb=$(ratio "$f" "$b")
            kt=$(wkt "$t") ft=$(wft "$t")
            kv=$(verdict "$ok_" "<=" "$kt") bkv=$(verdict "$bk" "<=" "$kt")
            fv= fbv=
            [ "$ft" = - ] || { fv=$(verdict "$fo" ">=" "$ft"); fbv=$(verdict "$fb" ">=" "$ft"); }
            [ "$ft" = - ] || ft=">=$ft"
            # shellcheck disable=SC2059
            printf "$hdr" "$t" "$(wmed kernel "$t")" "$(wmed ours "$t")" "$(wmed bsd "$t")" \
                "$(wmed fuse2fs "$t")" "$ok_" "<=$kt" "$kv" "$fo" "$ft" "$fv" "$bk" "<=$kt" "$bkv" "$fb" "$ft" "$fbv"
        done
        if has_test untar; then
            printf '%-7s %9s %9s %9s %9s   (server peak RSS during the untar, MiB)\n' rss - \
                "$(rss_mib ours)" "$(rss_mib bsd)" "$(rss_mib fuse2fs)"
        fi
        echo
        if [[ " ${COLS[*]} " == *" uring "* ]]; then
            echo
            echo "FUSE over io_uring (issue #21): ext4-fuse -o rw,uring=on"
            uhdr="%-7s %9s %9s %9s | %7s %6s %-4s | %9s\n"
            # shellcheck disable=SC2059
            printf "$uhdr" "" kernel ext4-fuse uring "uring/k" target "" "uring/fus"
            for t in "${WTESTS[@]}"; do
                k=$(wtv kernel "$t") o=$(wtv ours "$t") u=$(wtv uring "$t")
                uk=$(ratio "$u" "$k") kt=$(wkt "$t")
                # shellcheck disable=SC2059
                printf "$uhdr" "$t" "$(wmed kernel "$t")" "$(wmed ours "$t")" "$(wmed uring "$t")" \
                    "$uk" "<=$kt" "$(verdict "$uk" "<=" "$kt")" "$(ratio "$u" "$o")"
            done
        fi
        echo
        echo "values: seconds (rand: IOPS); ratios: time ratios (rand: time per I/O, so fuse/k <= 1.25 is >= 0.8x the kernel's IOPS)"
        echo "targets (issue #18, both frontends): untar <= 1.5x kernel and >= 5x faster than fuse2fs; seq <= 1.2x;"
        echo "  rand >= 0.8x kernel IOPS; create+fsync <= 1.5x; rm -rf <= 2x kernel and >= 5x faster than fuse2fs"
        for c in "${!FSCKBAD[@]}"; do echo "e2fsck -fn found problems after $c: ${FSCKBAD[$c]}"; done
    } | tee "$report"
    echo "saved to $report" >&2
}

measure_image() { # synth|real
image=$1
case $image in
    synth) bench_image "$files"; entries="$files files" ;;
    real) real_image; entries="$entries entries" ;;
esac
bigsize=$(stat -c %s "$tree/$big")
# V[col.test.phase]: the values of all repetitions; LOAD[col]: the 1-minute
# load average seen at each of its mounts.
unset V CC CS CHECK LOAD
declare -gA V CC CS CHECK LOAD
start_load=$(load_avg)
maxreps=$((reps_short > reps_long ? reps_short : reps_long))
for ((rep = 1; rep <= maxreps; rep++)); do
    for t in "${RTESTS[@]}"; do
        case $t in cat | find) n=$reps_short ;; *) n=$reps_long ;; esac
        [ "$rep" -le "$n" ] || continue
        # Columns inside the repetition loop: a change in the machine's
        # load hits every column about equally.
        for c in "${COLS[@]}"; do
            do_mount "$c"
            LOAD[$c]+="$(cut -d' ' -f1 /proc/loadavg) "
            cold
            run "$t"
            v_cold=$result cpu_cold=$cpu
            V[$c.$t.cold]+="$result "
            CC[$c.$t.cold]+="${cpu% *} " CS[$c.$t.cold]+="${cpu#* } "
            [ "$check" = - ] || CHECK[$c.$t]+="$check "
            run "$t"
            V[$c.$t.warm]+="$result "
            CC[$c.$t.warm]+="${cpu% *} " CS[$c.$t.warm]+="${cpu#* } "
            do_umount "$c"
            echo "rep $rep $t $c: cold $v_cold (cpu $cpu_cold) warm $result (cpu $cpu) (load $(load_avg))" >&2
        done
    done
done
end_load=$(load_avg)

# ---- report --------------------------------------------------------------
med() { # col test phase
    local k=$1.$2.$3
    [ -n "${V[$k]:-}" ] || { echo -; return; }
    # shellcheck disable=SC2086
    median ${V[$k]}
}
has() { [[ ",$cols," == *",$1,"* ]]; }
# CPU of a row: "client+server" medians, or "-".
cpu_med() { # col test phase
    local k=$1.$2.$3
    [ -n "${CC[$k]:-}" ] || { echo -; return; }
    # shellcheck disable=SC2086
    echo "$(median ${CC[$k]})+$(median ${CS[$k]})"
}
# Time-like value: seconds, or seconds per I/O for fio (1 / IOPS).
tv() { # col test phase
    local v
    v=$(med "$1" "$2" "$3")
    if [ "$2" = fio ] && [ "$v" != - ]; then
        awk -v v="$v" 'BEGIN { if (v + 0 == 0) print "-"; else printf "%.9f\n", 1 / v }'
    else
        echo "$v"
    fi
}
# Targets (ours/kernel) per row: issue #15 on the real tree, #4 otherwise.
ktarget() { # test phase
    if [ "$image" = real ]; then
        case $1.$2 in find.cold) echo 1.5 ;; tar.cold) echo 2 ;; *) echo - ;; esac
        return
    fi
    case $1.$2 in
        cat.cold) echo 1.3 ;;
        find.cold) echo 2 ;;
        find.warm) echo 1.5 ;;
        tar.*) echo 2.5 ;;
        fio.*) echo 1.0 ;;
        *) echo - ;;
    esac
}
# ext4-fuse-bsd/kernel (issue #15, real tree: no READDIRPLUS on FreeBSD).
bktarget() { # test phase
    case $image.$1.$2 in real.find.cold) echo 3 ;; *) echo - ;; esac
}
# fuse2fs/ours must be >= 5 where fuse2fs is at least 5x slower than the
# kernel (issue #4); the bsd column on the tree walk (cold) and tree read.
f2target() { # test phase col
    local f2k
    f2k=$(ratio "$(tv fuse2fs "$1" "$2")" "$(tv kernel "$1" "$2")")
    if [ "$3" = bsd ]; then
        case $image.$1.$2 in synth.find.cold | synth.tar.*) echo 5 ;; *) echo - ;; esac
        return
    fi
    if [ "$f2k" != - ] && awk -v r="$f2k" 'BEGIN { exit !(r >= 5) }'; then echo 5; else echo -; fi
}

# The uring column against the kernel and against ext4-fuse on /dev/fuse,
# with the targets of issue #21 (cold find <= 1.1x kernel, cold fio >=
# kernel IOPS) and the server CPU of both transports.
uring_table() {
    echo
    echo "FUSE over io_uring (issue #21): ext4-fuse -o uring=on"
    local h="%-10s %9s %9s %9s | %8s %6s %-4s | %9s | %14s %14s\n" t ph k o u uk ut uv uo
    # shellcheck disable=SC2059
    printf "$h" "" kernel ext4-fuse uring "uring/k" target "" "uring/fus" "cpu ext4-fuse" "cpu uring"
    for t in "${RTESTS[@]}"; do
        for ph in cold warm; do
            k=$(tv kernel "$t" $ph) o=$(tv ours "$t" $ph) u=$(tv uring "$t" $ph)
            uk=$(ratio "$u" "$k") uo=$(ratio "$u" "$o") ut=- uv=
            case $t.$ph in find.cold) ut=1.1 ;; fio.cold) ut=1.0 ;; esac
            [ "$ut" = - ] || { uv=$(verdict "$uk" "<=" "$ut"); ut="<=$ut"; }
            # shellcheck disable=SC2059
            printf "$h" "$t $ph" "$(med kernel "$t" $ph)" "$(med ours "$t" $ph)" "$(med uring "$t" $ph)" \
                "$uk" "$ut" "$uv" "$uo" "$(cpu_med ours "$t" $ph)" "$(cpu_med uring "$t" $ph)"
        done
    done
    echo "uring/k = uring / kernel, uring/fus = uring / ext4-fuse on /dev/fuse (time ratios; fio: time per I/O)"
}

report=$out/fuse-$image-$(date +%Y%m%d-%H%M%S).txt
{
    echo "bench/fuse.sh $(date -Is) on $(uname -r), $(nproc) CPUs, commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- engine frontend-linux frontend-bsd || echo ' (+ uncommitted changes)')"
    echo "image $image: $img, $entries + 1 GiB $big (mke2fs -d; 4 KiB blocks, metadata_csum); largest directory: $(largest_dir "$tree")"
    echo "load average (1/5/15 min): start $start_load, end $end_load; 1-min load at each mount:"
    for c in "${COLS[@]}"; do echo "  $c: ${LOAD[$c]}"; done
    echo "repetitions: cat/find $reps_short, tar/fio $reps_long (median shown); fio: 4 KiB randread, psync, buffered, ${fio_secs} s"
    echo "cold = fresh mount + sync + drop_caches; warm = same command again at once"
    [ -z "${BENCH_NOTE:-}" ] || echo "note: $BENCH_NOTE"
    echo "options: ext4-fuse -o ro${OURS_OPTS:+,$OURS_OPTS}; ext4-fuse-bsd -o ro${BSD_OPTS:+,$BSD_OPTS}; fuse2fs -o ro; kernel -o loop,ro"
    echo
    hdr="%-10s %9s %9s %9s %9s | %8s %6s %-4s | %8s %6s %-4s | %8s %6s %-4s | %8s %6s %-4s\n"
    # shellcheck disable=SC2059
    printf "$hdr" "" kernel ext4-fuse fuse-bsd fuse2fs "fuse/k" target "" "f2fs/fus" target "" "bsd/k" target "" "f2fs/bsd" target ""
    for t in "${RTESTS[@]}"; do
        for ph in cold warm; do
            k=$(tv kernel "$t" $ph)
            o=$(tv ours "$t" $ph)
            b=$(tv bsd "$t" $ph)
            f=$(tv fuse2fs "$t" $ph)
            ok_=$(ratio "$o" "$k")
            fo=$(ratio "$f" "$o")
            bk=$(ratio "$b" "$k")
            fb=$(ratio "$f" "$b")
            kt=$(ktarget "$t" $ph)
            ft=$(f2target "$t" $ph ours)
            bt=$(f2target "$t" $ph bsd)
            bkt=$(bktarget "$t" $ph)
            kv=; fv=; bv=; bkv=
            [ "$bkt" = - ] || bkv=$(verdict "$bk" "<=" "$bkt")
            [ "$bkt" = - ] || bkt="<=$bkt"
            [ "$kt" = - ] || kv=$(verdict "$ok_" "<=" "$kt")
            [ "$ft" = - ] || fv=$(verdict "$fo" ">=" "$ft")
            [ "$bt" = - ] || bv=$(verdict "$fb" ">=" "$bt")
            [ "$kt" = - ] || kt="<=$kt"
            [ "$ft" = - ] || ft=">=$ft"
            [ "$bt" = - ] || bt=">=$bt"
            # shellcheck disable=SC2059
            printf "$hdr" "$t $ph" "$(med kernel "$t" $ph)" "$(med ours "$t" $ph)" \
                "$(med bsd "$t" $ph)" "$(med fuse2fs "$t" $ph)" \
                "$ok_" "$kt" "$kv" "$fo" "$ft" "$fv" "$bk" "$bkt" "$bkv" "$fb" "$bt" "$bv"
        done
    done
    echo
    echo "CPU per run, client+server (median): seconds; fio: microseconds per I/O. Load-independent"
    echo "but not free of it; the kernel column counts no server (loop worker not included)."
    cpuhdr="%-10s %14s %14s %14s %14s\n"
    # shellcheck disable=SC2059
    printf "$cpuhdr" "" kernel ext4-fuse ext4-fuse-bsd fuse2fs
    for t in "${RTESTS[@]}"; do
        for ph in cold warm; do
            # shellcheck disable=SC2059
            printf "$cpuhdr" "$t $ph" "$(cpu_med kernel "$t" $ph)" "$(cpu_med ours "$t" $ph)" \
                "$(cpu_med bsd "$t" $ph)" "$(cpu_med fuse2fs "$t" $ph)"
        done
    done
    echo
    echo "values: seconds (fio: IOPS); ratios: time ratios (fio: time per I/O)"
    echo "fuse/k = ext4-fuse / kernel, f2fs/fus = fuse2fs / ext4-fuse, bsd/k = ext4-fuse-bsd / kernel, f2fs/bsd = fuse2fs / ext4-fuse-bsd"
    if [ "$image" = real ]; then
        echo "targets (issue #15): cold find <= 1.5x kernel, cold tar <= 2x; bsd cold find <= 3x kernel;"
        echo "  >= 5x faster than fuse2fs where fuse2fs is >= 5x slower than the kernel"
    else
        echo "targets (issues #4, #6): cold cat <= 1.3x kernel; cold find <= 2x, warm <= 1.5x; tar <= 2.5x; fio >= kernel IOPS;"
        echo "  >= 5x faster than fuse2fs where fuse2fs is >= 5x slower than the kernel; bsd >= 5x fuse2fs on cold find and tar"
    fi
    # The tar stream size is a check that every column saw the same tree.
    sizes=
    for c in "${COLS[@]}"; do
        [ -n "${CHECK[$c.tar]:-}" ] && sizes+="$c: $(echo ${CHECK[$c.tar]} | tr ' ' '\n' | sort -u | tr '\n' ' ')"
    done
    [ -z "$sizes" ] || echo "tar bytes per column (cold runs): $sizes"
    [ $can_drop = 1 ] || echo "(not root: caches were not dropped, cold = warm)"
    has uring && uring_table
} | tee "$report"
echo "saved to $report" >&2
}

if [ ${#RTESTS[@]} -gt 0 ]; then
    for image in "${IMAGES[@]}"; do
        measure_image "$image"
    done
fi
[ ${#WTESTS[@]} -eq 0 ] || measure_writes

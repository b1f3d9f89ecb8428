#!/usr/bin/env bash
# pjdfstest on the kernel's ext4 (a loop mount) and on each read-write FUSE
# server, each on a fresh copy of the same image, in one run, with the
# committed configuration (tests/data/pjdfstest.toml: allow_other, which
# with default_permissions is how our servers always mount; the features
# posix_fallocate, utime_now, utimensat; two dummy users). Fails when a
# test the kernel passes does not pass on a server, and prints which.
#   bash scripts/pjdfstest-compare.sh [SERVERS]   (default "ext4-fuse ext4-fuse-bsd")
# Needs root, pjdfstest (scripts/install-test-deps.sh) and the user
# pjdtest (created here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin
servers=${1:-"ext4-fuse ext4-fuse-bsd"}
conf=$PWD/tests/data/pjdfstest.toml
target=${CARGO_TARGET_DIR:-target}
cargo build -q -p ext4-fuse -p ext4-fuse-bsd
id pjdtest >/dev/null 2>&1 ||
    useradd --system --no-create-home --user-group --shell /usr/sbin/nologin pjdtest
work=$(mktemp -d)
cleanup() { umount "$work"/mnt 2>/dev/null || umount -l "$work"/mnt 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/mnt"
chmod 0755 "$work"
run() { # name -> $work/name.out
    chmod 0777 "$work/mnt"
    (cd "$work/mnt" && pjdfstest -c "$conf" -p "$work/mnt" >"$work/$1.out" 2>&1) || true
    tail -1 "$work/$1.out"
}
passed() { awk '$NF == "ok" {print $1}' "$1" | sort; }
mke2fs -F -q -t ext4 -b 4096 "$work/fresh.img" 1G
cp "$work/fresh.img" "$work/kernel.img"
mount -o loop "$work/kernel.img" "$work/mnt"
echo "kernel:        $(run kernel)"
umount "$work/mnt"
e2fsck -fn "$work/kernel.img" >/dev/null
status=0
for s in $servers; do
    cp "$work/fresh.img" "$work/$s.img"
    "$target/debug/$s" "$work/$s.img" "$work/mnt" -o allow_other
    printf '%-14s %s\n' "$s:" "$(run "$s")"
    umount "$work/mnt"
    sleep 1
    e2fsck -fn "$work/$s.img" >/dev/null || { echo "$s: e2fsck -fn failed" >&2; status=1; }
    missing=$(comm -23 <(passed "$work/kernel.out") <(passed "$work/$s.out"))
    if [ -n "$missing" ]; then
        echo "$s: $(wc -l <<<"$missing") tests the kernel passes do not pass:"
        sed 's/^/  /' <<<"$missing" | head -50
        status=1
    fi
done
exit $status

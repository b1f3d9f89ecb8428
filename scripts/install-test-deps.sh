#!/usr/bin/env bash
# Installs what the tests use as oracles and tools, on a fresh Debian machine.
set -euo pipefail
need=()
for pair in mke2fs:e2fsprogs debugfs:e2fsprogs fusermount3:fuse3 fuse2fs:fuse2fs \
            getfattr:attr setfattr:attr getfacl:acl setfacl:acl fio:fio losetup:mount; do
  cmd=${pair%%:*}; pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The kernel's FUSE and loop devices are used by the mount tests.
[ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true
modprobe loop 2>/dev/null || true

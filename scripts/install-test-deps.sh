#!/usr/bin/env bash
# Installs what the tests use as oracles and tools, on a fresh Debian machine.
set -euo pipefail
need=()
for pair in mke2fs:e2fsprogs debugfs:e2fsprogs fusermount3:fuse3 fuse2fs:fuse2fs \
            getfattr:attr setfattr:attr getfacl:acl setfacl:acl fio:fio losetup:mount \
            sfdisk:fdisk sgdisk:gdisk tar:tar python3:python3; do
  cmd=${pair%%:*}; pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
# GNU time measures peak RSS in tests/tests/hostile_inputs.rs (`time` alone
# would find the shell keyword).
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The kernel's FUSE and loop devices are used by the mount tests.
[ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true
modprobe loop 2>/dev/null || true
# The fuzz smoke (scripts/fuzz-smoke.sh) builds the fuzz targets with
# cargo-fuzz on the nightly toolchain.
export PATH=$HOME/.cargo/bin:$PATH
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "installing: rust nightly toolchain"
  rustup toolchain install nightly --profile minimal ||
    { echo "install-test-deps: cannot install the nightly toolchain (needed by scripts/fuzz-smoke.sh)" >&2; exit 1; }
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "installing: cargo-fuzz"
  cargo install cargo-fuzz --version 0.13.2 --locked --quiet ||
    { echo "install-test-deps: cannot install cargo-fuzz (needed by scripts/fuzz-smoke.sh)" >&2; exit 1; }
fi
# fsx drives random operations on the read-write mounts
# (tests/tests/rw_mounts.rs, scripts/soak-fsx.sh); pjdfstest is the POSIX
# suite the read-write mounts are held to.
if ! command -v fsx >/dev/null 2>&1; then
  echo "installing: fsx"
  cargo install fsx --version 0.3.2 --locked --quiet ||
    { echo "install-test-deps: cannot install fsx (needed by tests/tests/rw_mounts.rs)" >&2; exit 1; }
fi
if ! command -v pjdfstest >/dev/null 2>&1; then
  echo "installing: pjdfstest"
  cargo install pjdfstest --version 0.2.2 --locked --quiet ||
    { echo "install-test-deps: cannot install pjdfstest (needed by tests/tests/pjdfstest.rs)" >&2; exit 1; }
fi
# pjdfstest's second dummy user (tests/data/pjdfstest.toml; the first is nobody).
if ! id pjdtest >/dev/null 2>&1; then
  echo "adding the user pjdtest (for pjdfstest)"
  useradd --system --no-create-home --user-group --shell /usr/sbin/nologin pjdtest
fi

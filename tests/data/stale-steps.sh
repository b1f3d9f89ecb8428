# Modes the kernel's attribute cache holds (statx for STATX_MODE alone,
# which a cached mode answers) right after writes, fallocate and
# copy_file_range by an unprivileged user dropped set-ID bits: on
# ext4-fuse (the server drops them itself, FUSE_HANDLE_KILLPRIV_V2) and
# ext4-fuse-bsd (the server drops what the kernel left), each telling the
# kernel (FUSE_NOTIFY_INVAL_INODE), as on the kernel's ext4
# (tests/tests/rw_mounts.rs server_changes_reach_the_kernel_cache).
d=$1   # the mount point (made world-writable by the caller)
cd "$d" || exit 1
modes() {
    python3 - "$@" <<'PY'
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(256)
out = []
for p in sys.argv[1:]:
    # statx(AT_FDCWD, p, 0, STATX_MODE): stx_mode is at byte 28.
    if libc.statx(-100, p.encode(), 0, 0x2, buf) != 0:
        out.append(p + " error")
    else:
        out.append(p + " " + oct(int.from_bytes(buf.raw[28:30], "little") & 0o7777)[2:])
print(" ".join(out))
PY
}
for f in w o a c; do printf data > $f; done
chown 65534:65534 w a c && chmod 6755 w a c && chmod 2747 o
modes w o a c
setpriv --reuid=65534 --regid=65534 --clear-groups sh -c 'printf x >> w; printf x >> o;
    fallocate -l 8192 a; python3 -c "import os; s=os.open(\"w\", os.O_RDONLY);
d=os.open(\"c\", os.O_WRONLY); os.copy_file_range(s, d, 3, 0, 1)"'
modes w o a c

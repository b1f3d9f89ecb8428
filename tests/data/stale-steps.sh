# Modes the kernel's attribute cache holds (statx for STATX_MODE alone,
# which a cached mode answers) right after writes, fallocate and
# copy_file_range by an unprivileged user dropped set-ID bits: on
# ext4-fuse (the server drops them itself, FUSE_HANDLE_KILLPRIV_V2) and
# ext4-fuse-bsd (the server drops what the kernel left), each telling the
# kernel (FUSE_NOTIFY_INVAL_INODE), as on the kernel's ext4
# (tests/tests/rw_mounts.rs server_changes_reach_the_kernel_cache).
d=$1   # the mount point (made world-writable by the caller)
cd "$d" || exit 1
# modes [--change] FILE...: with --change, first (as the caller, here
# an unprivileged one) append to w and o, fallocate a and copy_file_range
# into c, then read the modes at once, in the same process: within the
# kernel's attribute timeout (a second) of the open that refreshed them,
# so only a notification can make the cached mode the new one (a slow
# machine cannot hide its absence).
modes() {
    python3 - "$@" <<'PY'
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(256)
paths = sys.argv[1:]
if paths[0] == "--change":
    paths = paths[1:]
    for p in ("w", "o"):
        fd = os.open(p, os.O_WRONLY | os.O_APPEND)
        os.write(fd, b"x")
        os.close(fd)
    fd = os.open("a", os.O_WRONLY)
    os.posix_fallocate(fd, 0, 8192)
    os.close(fd)
    s, t = os.open("w", os.O_RDONLY), os.open("c", os.O_WRONLY)
    os.copy_file_range(s, t, 1, 3, 0)
    os.close(s)
    os.close(t)
out = []
for p in paths:
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
export -f modes
setpriv --reuid=65534 --regid=65534 --clear-groups bash -c 'modes --change w o a c'

# What writes, truncations and changes of owner take away (set-user-ID,
# set-group-ID, security.capability), by root and by an unprivileged user:
# the same script on the kernel's ext4 and on both servers must print the
# same (tests/tests/rw_mounts.rs killpriv_as_the_kernel). Each line: the
# file, its mode, owner and size, and its capabilities afterwards.
d=$1   # the mount point (made world-writable by the caller)
cd "$d" || exit 1
nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups sh -c "$1"; }
# mk NAME OWNER MODE [cap]: a file of 4 bytes, given away, then its mode
# (chown drops set-ID bits), then capabilities if asked.
mk() {
    printf data > "$1" && chown "$2" "$1" && chmod "$3" "$1" || echo "mk $1 failed"
    if [ "$4" = cap ]; then setcap cap_net_raw+ep "$1" || echo "setcap $1 failed"; fi
}
show() {
    for f in "$@"; do
        echo "$(stat -c '%n %a %U:%G %s' "$f") cap=$(getcap "$f" | awk '{print $2}')"
    done
}

# Root (CAP_FSETID keeps the set-ID bits on writes; capabilities go).
mk r_write 65534:65534 6755;     printf x >> r_write
mk r_write_cap 65534:65534 755 cap; printf x >> r_write_cap
mk r_trunc 65534:65534 6755;     truncate -s 2 r_trunc
mk r_trunc_cap 65534:65534 755 cap; truncate -s 2 r_trunc_cap
mk r_otrunc_cap 65534:65534 755 cap; : > r_otrunc_cap
mk r_chown 65534:65534 6755;     chown 0:0 r_chown
mk r_chown_nx 65534:65534 2745;  chown 0:0 r_chown_nx
mk r_chown_cap 65534:65534 755 cap; chown 0:0 r_chown_cap
mkdir r_dir && chmod 6755 r_dir; chown 65534:65534 r_dir
show r_write r_write_cap r_trunc r_trunc_cap r_otrunc_cap r_chown r_chown_nx r_chown_cap r_dir

# An unprivileged writer and owner.
mk n_write 65534:65534 6755;     nobody 'printf x >> n_write'
mk n_write_nx 65534:65534 2745;  nobody 'printf x >> n_write_nx'
mk n_write_other 0:0 2747;       nobody 'printf x >> n_write_other'
mk n_write_cap 65534:65534 755 cap; nobody 'printf x >> n_write_cap'
mk n_pwrite 65534:65534 6755;    nobody 'printf y | dd of=n_pwrite bs=1 seek=1 conv=notrunc status=none'
mk n_trunc 65534:65534 6755;     nobody 'truncate -s 2 n_trunc'
mk n_trunc_cap 65534:65534 755 cap; nobody 'truncate -s 2 n_trunc_cap'
mk n_otrunc 65534:65534 6755;    nobody ': > n_otrunc'
mk n_falloc 65534:65534 6755;    nobody 'fallocate -l 8192 n_falloc'
mk n_chown 65534:65534 6755;     nobody 'chown 65534:65534 n_chown'
mk n_chown_nx 65534:65534 2745;  nobody 'chown 65534:65534 n_chown_nx'
mk n_chown_cap 65534:65534 755 cap; nobody 'chown 65534:65534 n_chown_cap'
show n_write n_write_nx n_write_other n_write_cap n_pwrite n_trunc n_trunc_cap n_otrunc n_falloc n_chown n_chown_nx n_chown_cap

# Requests that carry no kill flag: fallocate and copy_file_range.
mk r_falloc 65534:65534 6755;    fallocate -l 8192 r_falloc
mk r_falloc_cap 65534:65534 755 cap; fallocate -l 8192 r_falloc_cap
mk n_copy 65534:65534 6755;      nobody 'python3 -c "import os; s=os.open(\"r_write\", os.O_RDONLY); d=os.open(\"n_copy\", os.O_WRONLY); print(os.copy_file_range(s, d, 3, 0, 1))"'
mk n_copy_cap 65534:65534 755 cap; nobody 'python3 -c "import os; s=os.open(\"r_write\", os.O_RDONLY); d=os.open(\"n_copy_cap\", os.O_WRONLY); print(os.copy_file_range(s, d, 3, 0, 1))"'
show r_falloc r_falloc_cap n_copy n_copy_cap

# Access times after reads, listings and readlinks, in two phases on the
# same image: `setup` makes the files (then the caller unmounts, sets the
# noatime inode flag of f_flag with debugfs, and mounts again, so that no
# cache serves the reads), `read` reads them and prints, for each, whether
# its atime changed and whether it is now the current time. The same on
# the kernel's ext4 and on both servers must print the same
# (tests/tests/rw_mounts.rs atime_as_the_kernel).
import os
import sys
import time

root, phase = sys.argv[1], sys.argv[2]
os.chdir(root)
FILES = ["f_fresh", "f_future", "f_old", "f_flag", "f_onoatime"]
HOUR = 3600 * 10**9
DAY = 24 * HOUR

if phase == "setup":
    now = time.time_ns()
    for f in FILES:
        with open(f, "w") as fh:
            fh.write("data\n")
    # atime after mtime and ctime, and less than a day old: relatime keeps it.
    os.utime("f_future", ns=(now + HOUR, now - DAY))
    # atime after mtime but before ctime (now): relatime updates.
    os.utime("f_old", ns=(now - HOUR, now - DAY))
    os.mkdir("d_fresh")
    os.mkdir("d_future")
    for d in ["d_fresh", "d_future"]:
        open(os.path.join(d, "entry"), "w").close()
    os.utime("d_future", ns=(now + HOUR, now - DAY))
    os.symlink("f_fresh", "l_fresh")
    sys.exit(0)

paths = FILES + ["d_fresh", "d_future", "l_fresh"]
before = {p: os.lstat(p).st_atime_ns for p in paths}
time.sleep(0.05)
for f in ["f_fresh", "f_future", "f_old", "f_flag"]:
    with open(f) as fh:
        fh.read()
fd = os.open("f_onoatime", os.O_RDONLY | os.O_NOATIME)
os.read(fd, 100)
os.close(fd)
for d in ["d_fresh", "d_future"]:
    os.listdir(d)
os.readlink("l_fresh")
now = time.time_ns()
for p in paths:
    after = os.lstat(p).st_atime_ns
    changed = "updated" if after != before[p] else "kept"
    current = "now" if abs(after - now) < 60 * 10**9 else "not-now"
    print(p, changed, current)

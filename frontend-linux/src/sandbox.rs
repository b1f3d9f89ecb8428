//! The server's own confinement, applied once its descriptors are open and
//! `FUSE_INIT` is done: an unprivileged user, no capabilities (or only
//! `CAP_SYS_RAWIO` in iomap mode), `PR_SET_NO_NEW_PRIVS`, and a seccomp
//! filter allowing only what the request loop uses. A parser bug triggered
//! by a hostile image can then do nothing but answer wrong bytes.
//!
//! A denied system call raises `SIGSYS` (`SECCOMP_RET_TRAP`); the handler
//! writes one line naming the call and ends the process. The denied call
//! itself never runs whatever the handler does: trapping only decides how
//! the process dies. `SECCOMP_RET_KILL_PROCESS` would say nothing outside
//! the audit log, and `SECCOMP_RET_LOG` lets the call proceed.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::sync::atomic::{AtomicI32, Ordering};

use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{Gid, Uid, User};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

use crate::log;

/// The user the server runs as unless `-o setuid=` says otherwise.
pub const DEFAULT_USER: &str = "nobody";

/// What [`prepare`] found; [`apply`] uses it without touching any file.
pub struct Plan {
    /// `None`: stay as we are (not root, and no `setuid=` asked).
    target: Option<(String, Uid, Gid)>,
    keep_rawio: bool,
    /// io_uring descriptors of FUSE over io_uring (`io_uring_enter` on
    /// these only, and each serving thread pins itself to its CPU).
    rings: Vec<i32>,
}

impl Plan {
    pub fn allow_rings(&mut self, fds: &[i32]) {
        self.rings = fds.to_vec();
    }
}

/// Look the user up (this reads /etc/passwd and NSS modules, so it must
/// happen before the filter is in place).
pub fn prepare(user: Option<&str>, keep_rawio: bool) -> Result<Plan, String> {
    let name = user.unwrap_or(DEFAULT_USER);
    let found = User::from_name(name)
        .map_err(|e| format!("looking up user {name}: {e}"))?
        .ok_or_else(|| format!("no such user: {name} (see -o setuid=)"))?;
    let privileged = Uid::effective().is_root() || has_cap(Capability::CAP_SETUID);
    let target = if Uid::current() == found.uid && Uid::effective() == found.uid {
        None
    } else if privileged {
        Some((name.to_string(), found.uid, found.gid))
    } else if user.is_some() {
        return Err(format!(
            "cannot switch to user {name}: not running as root (use -o nosandbox, or start as {name})"
        ));
    } else {
        // An ordinary user's server is already unprivileged; it still gets
        // the filter and no_new_privs.
        None
    };
    Ok(Plan {
        target,
        keep_rawio,
        rings: Vec::new(),
    })
}

fn has_cap(c: Capability) -> bool {
    caps::has_cap(None, CapSet::Effective, c).unwrap_or(false)
}

/// Capabilities kept: `CAP_SYS_RAWIO` in iomap mode, nothing otherwise.
pub fn kept(keep_rawio: bool) -> CapsHashSet {
    let mut s = CapsHashSet::new();
    if keep_rawio {
        s.insert(Capability::CAP_SYS_RAWIO);
    }
    s
}

/// Drop everything but `keep` from the bounding set. Numbers past the ones
/// the `caps` crate knows are dropped too (PR_CAPBSET_READ answers EINVAL
/// past the kernel's last capability). Without CAP_SETPCAP nothing can be
/// dropped; that is only tolerated when `must` is false (an unprivileged
/// server: with no_new_privs and no execve the bounding set cannot matter).
pub fn drop_bounding(keep: &CapsHashSet, must: bool) -> Result<(), String> {
    let keep_bits: u64 = keep.iter().map(|c| c.bitmask()).fold(0, |a, b| a | b);
    for n in 0..64u32 {
        // SAFETY: PR_CAPBSET_READ takes a capability number and no pointers.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_READ, n as libc::c_ulong, 0, 0, 0) };
        if r < 0 {
            break;
        }
        if r == 1 && keep_bits & (1u64 << n) == 0 {
            // SAFETY: as above.
            let d = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, n as libc::c_ulong, 0, 0, 0) };
            if d != 0 {
                if !must {
                    return Ok(());
                }
                return Err(format!(
                    "cannot drop capability {n} from the bounding set: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    Ok(())
}

/// Become `uid`/`gid` with no supplementary groups, keeping only `keep`
/// (permitted, effective and, for the helper's exec, inheritable and
/// ambient when `ambient`).
pub fn switch_user(uid: Uid, gid: Gid, keep: &CapsHashSet, ambient: bool) -> Result<(), String> {
    let set_keepcaps = |on: libc::c_ulong| {
        // SAFETY: PR_SET_KEEPCAPS takes a flag and no pointers.
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, on, 0, 0, 0) }
    };
    if !keep.is_empty() && set_keepcaps(1) != 0 {
        return Err(format!(
            "PR_SET_KEEPCAPS: {}",
            std::io::Error::last_os_error()
        ));
    }
    nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setresgid({gid}): {e}"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setresuid({uid}): {e}"))?;
    if !keep.is_empty() {
        set_keepcaps(0);
    }
    set_caps(keep, ambient)
}

/// Permitted = effective = `keep`; inheritable and ambient = `keep` when
/// `ambient` (so an exec'd non-root program keeps them), empty otherwise.
pub fn set_caps(keep: &CapsHashSet, ambient: bool) -> Result<(), String> {
    let none = CapsHashSet::new();
    let inh = if ambient { keep } else { &none };
    caps::clear(None, CapSet::Ambient)
        .map_err(|e| format!("clearing ambient capabilities: {e}"))?;
    caps::set(None, CapSet::Inheritable, inh)
        .map_err(|e| format!("setting inheritable capabilities: {e}"))?;
    caps::set(None, CapSet::Effective, keep)
        .map_err(|e| format!("setting effective capabilities: {e}"))?;
    caps::set(None, CapSet::Permitted, keep)
        .map_err(|e| format!("setting permitted capabilities: {e}"))?;
    if ambient {
        for c in keep {
            caps::raise(None, CapSet::Ambient, *c)
                .map_err(|e| format!("raising ambient {c}: {e}"))?;
        }
    }
    Ok(())
}

pub fn no_new_privs() -> Result<(), String> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes a flag and no pointers.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "PR_SET_NO_NEW_PRIVS: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Make glibc shrink a thread arena's heap once, so that it reads
/// /proc/sys/vm/overcommit_memory now. It does so lazily, on the first
/// shrink, and would otherwise be killed for the open in some worker's
/// free() long after confinement.
fn warm_arena_trim() {
    #[cfg(target_env = "gnu")]
    {
        // A fixed, small trim threshold for the dance (the dynamic one may
        // have grown to tens of MiB), then steady-state thresholds: buffers
        // up to 4 MiB from the arenas, trimmed past 8 MiB free.
        // SAFETY: mallopt only changes allocator tunables.
        unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 10) };
        // 64 KiB blocks: under the mmap threshold, so they come from this
        // thread's arena, and freed together they exceed the trim threshold.
        let blocks: Vec<Vec<u8>> = (0..32).map(|_| vec![1u8; 64 << 10]).collect();
        drop(std::hint::black_box(blocks));
        // SAFETY: as above.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
        }
    }
}

/// Confine the calling process. Must run before any other thread exists:
/// capability sets are per thread, and threads inherit the filter only
/// when created after it.
pub fn apply(plan: Plan) -> Result<(), String> {
    // The C library sets up its thread signals (rt_sigaction) on the first
    // thread creation; get that done while rt_sigaction is still allowed.
    // glibc also opens /proc/sys/vm/overcommit_memory the first time it
    // shrinks a thread arena's heap (and caches the answer): make that
    // happen here too, or some worker's later free() would be killed for it.
    std::thread::Builder::new()
        .spawn(warm_arena_trim)
        .and_then(|t| t.join().map_err(|_| std::io::Error::other("panicked")))
        .map_err(|e| format!("starting a thread: {e}"))?;
    let keep = kept(plan.keep_rawio);
    // The bounding set first: dropping from it needs CAP_SETPCAP, which
    // goes away with the user switch.
    let root = Uid::effective().is_root() || has_cap(Capability::CAP_SETPCAP);
    drop_bounding(&keep, root)?;
    match &plan.target {
        Some((name, uid, gid)) => switch_user(*uid, *gid, &keep, false)
            .map_err(|e| format!("switching to {name}: {e}"))?,
        None => set_caps(&keep, false)?,
    }
    no_new_privs()?;
    install_sigsys_handler()?;
    let (first, second) = filters(&plan.rings)?;
    // Logged before the filter: getuid is not on the list.
    log::debug(format_args!(
        "sandbox: uid {} gid {}, capabilities {:?}, seccomp on",
        Uid::current(),
        Gid::current(),
        keep
    ));
    // The clone3 → ENOSYS filter goes first; the stricter allow list is
    // stacked on it (the kernel applies the most restrictive answer).
    seccompiler::apply_filter(&first).map_err(|e| format!("seccomp: {e}"))?;
    seccompiler::apply_filter(&second).map_err(|e| format!("seccomp: {e}"))?;
    Ok(())
}

/// Every system call the server may make once confined, found with
/// `strace -f` on a mount under load (all workers, the signal thread,
/// unmount and exit); see the README. Calls taking a flag word are limited
/// further in [`filters`].
const ALLOWED: &[libc::c_long] = &[
    // Requests in, replies out, image reads, log lines.
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_preadv,
    // Writing the image (a read-write mount) and making it durable.
    libc::SYS_pwrite64,
    libc::SYS_pwritev,
    libc::SYS_fdatasync,
    libc::SYS_fsync,
    libc::SYS_lseek,
    libc::SYS_close,
    // Locks, the allocator, thread stacks.
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_brk,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_getrandom,
    // The C library sizes malloc arenas by the CPUs a new thread may use.
    libc::SYS_sched_getaffinity,
    // Starting and ending worker threads.
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sigaltstack,
    libc::SYS_rt_sigprocmask,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_exit,
    libc::SYS_exit_group,
    // Signals: the signal thread waits in rt_sigtimedwait.
    libc::SYS_rt_sigtimedwait,
    libc::SYS_rt_sigreturn,
    libc::SYS_restart_syscall,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    // Workers that poll for requests sleep in poll(2) (see channel.rs).
    libc::SYS_poll,
    libc::SYS_ppoll,
];

fn rule(conds: Vec<SeccompCondition>) -> Result<SeccompRule, String> {
    SeccompRule::new(conds).map_err(|e| format!("seccomp rule: {e}"))
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, String> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value)
        .map_err(|e| format!("seccomp condition: {e}"))
}

fn arch() -> Result<seccompiler::TargetArch, String> {
    std::env::consts::ARCH
        .try_into()
        .map_err(|e| format!("seccomp: unsupported architecture: {e:?}"))
}

/// The two filters: (clone3 answers ENOSYS, so the C library falls back to
/// clone, whose flags a filter can see), (the allow list; anything else traps).
pub fn filters(rings: &[i32]) -> Result<(BpfProgram, BpfProgram), String> {
    let arch = arch()?;
    let mut first = BTreeMap::new();
    first.insert(libc::SYS_clone3, vec![]);
    let first = SeccompFilter::new(
        first,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .and_then(BpfProgram::try_from)
    .map_err(|e| format!("seccomp: {e}"))?;

    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for &nr in ALLOWED {
        rules.insert(nr, vec![]);
    }
    // clone3 must reach the first filter's ENOSYS rather than trap here.
    rules.insert(libc::SYS_clone3, vec![]);
    // Threads only, never a new process.
    let thread = libc::CLONE_THREAD as u64;
    rules.insert(
        libc::SYS_clone,
        vec![rule(vec![cond(
            0,
            SeccompCmpOp::MaskedEq(thread),
            thread,
        )?])?],
    );
    // Memory, but never executable: no new code can be mapped.
    let exec = libc::PROT_EXEC as u64;
    for nr in [libc::SYS_mmap, libc::SYS_mprotect] {
        rules.insert(
            nr,
            vec![rule(vec![cond(2, SeccompCmpOp::MaskedEq(exec), 0)?])?],
        );
    }
    // Rust's descriptor drop checks the descriptor is open (debug builds).
    rules.insert(
        libc::SYS_fcntl,
        vec![rule(vec![cond(
            1,
            SeccompCmpOp::Eq,
            libc::F_GETFD as u64,
        )?])?],
    );
    // Thread names only.
    rules.insert(
        libc::SYS_prctl,
        vec![rule(vec![cond(
            0,
            SeccompCmpOp::Eq,
            libc::PR_SET_NAME as u64,
        )?])?],
    );
    // FUSE over io_uring: entering its own rings, and each ring's thread
    // pinning itself (pid 0) to its queue's CPU.
    if !rings.is_empty() {
        let on_ring = |fd: &i32| rule(vec![cond(0, SeccompCmpOp::Eq, *fd as u64)?]);
        rules.insert(
            libc::SYS_io_uring_enter,
            rings.iter().map(on_ring).collect::<Result<_, _>>()?,
        );
        rules.insert(
            libc::SYS_sched_setaffinity,
            vec![rule(vec![cond(0, SeccompCmpOp::Eq, 0)?])?],
        );
    }
    // abort() signals its own process only.
    rules.insert(
        libc::SYS_tgkill,
        vec![rule(vec![cond(
            0,
            SeccompCmpOp::Eq,
            std::process::id() as u64,
        )?])?],
    );
    let second = SeccompFilter::new(rules, SeccompAction::Trap, SeccompAction::Allow, arch)
        .and_then(BpfProgram::try_from)
        .map_err(|e| format!("seccomp: {e}"))?;
    Ok((first, second))
}

/// Where the SIGSYS handler also writes its line (the syslog socket once
/// daemonized; stderr is always tried).
static EXTRA_LOG_FD: AtomicI32 = AtomicI32::new(-1);

/// Name the few calls a confined server is most likely to be caught making.
fn syscall_name(nr: libc::c_long) -> &'static str {
    match nr {
        libc::SYS_open => "open",
        libc::SYS_openat => "openat",
        libc::SYS_openat2 => "openat2",
        libc::SYS_socket => "socket",
        libc::SYS_connect => "connect",
        libc::SYS_execve => "execve",
        libc::SYS_execveat => "execveat",
        libc::SYS_fork => "fork",
        libc::SYS_vfork => "vfork",
        libc::SYS_clone => "clone",
        libc::SYS_ptrace => "ptrace",
        libc::SYS_kill => "kill",
        libc::SYS_ioctl => "ioctl",
        libc::SYS_mmap => "mmap",
        libc::SYS_mprotect => "mprotect",
        libc::SYS_prctl => "prctl",
        libc::SYS_umount2 => "umount2",
        libc::SYS_mount => "mount",
        libc::SYS_rt_sigaction => "rt_sigaction",
        libc::SYS_unlink => "unlink",
        libc::SYS_unlinkat => "unlinkat",
        libc::SYS_newfstatat => "newfstatat",
        libc::SYS_statx => "statx",
        libc::SYS_fstat => "fstat",
        libc::SYS_sendto => "sendto",
        libc::SYS_tgkill => "tgkill",
        libc::SYS_getuid => "getuid",
        libc::SYS_geteuid => "geteuid",
        libc::SYS_getgid => "getgid",
        libc::SYS_setuid => "setuid",
        libc::SYS_setresuid => "setresuid",
        libc::SYS_capset => "capset",
        libc::SYS_bind => "bind",
        libc::SYS_getdents64 => "getdents64",
        libc::SYS_fcntl => "fcntl",
        libc::SYS_sched_getaffinity => "sched_getaffinity",
        _ => "?",
    }
}

/// Fill `buf` from its end with the decimal digits of `n`; return the start.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> usize {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || i == 0 {
            return i;
        }
    }
}

/// The line the handler writes, built without allocating.
fn denied_line(nr: i64, out: &mut [u8; 160]) -> usize {
    let mut len = 0;
    let mut put = |b: &[u8]| {
        let n = b.len().min(out.len() - len);
        out[len..len + n].copy_from_slice(&b[..n]);
        len += n;
    };
    put(b"ext4-fuse: sandbox: denied system call ");
    let mut digits = [0u8; 20];
    let start = decimal(nr.unsigned_abs(), &mut digits);
    if nr < 0 {
        put(b"-");
    }
    put(&digits[start..]);
    put(b" (");
    put(syscall_name(nr as libc::c_long).as_bytes());
    put(b"); the server stops here\n");
    len
}

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SIGSYS's siginfo: after si_signo/si_errno/si_code come, aligned to 8,
    // `void *_call_addr; int _syscall; unsigned _arch` (64-bit layout).
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let nr = unsafe { *(info as *const u8).add(16 + 8).cast::<i32>() };
    let mut line = [0u8; 160];
    let n = denied_line(nr as i64, &mut line);
    // SAFETY: write and _exit are async-signal-safe; the buffer is ours.
    unsafe {
        libc::write(2, line.as_ptr().cast(), n);
        let fd = EXTRA_LOG_FD.load(Ordering::Relaxed);
        if fd >= 0 {
            // Syslog priority: LOG_DAEMON | LOG_ERR.
            let mut msg = [0u8; 176];
            let head = b"<27>";
            msg[..head.len()].copy_from_slice(head);
            msg[head.len()..head.len() + n - 1].copy_from_slice(&line[..n - 1]);
            libc::write(fd, msg.as_ptr().cast(), head.len() + n - 1);
        }
        libc::_exit(128 + libc::SIGSYS);
    }
}

/// Also write the denied-call line to `fd` (a connected syslog socket).
pub fn set_extra_log_fd(fd: i32) {
    EXTRA_LOG_FD.store(fd, Ordering::Relaxed);
}

fn install_sigsys_handler() -> Result<(), String> {
    if let Some(fd) = log::sink_fd() {
        set_extra_log_fd(fd);
    }
    // SAFETY: a zeroed sigaction is valid; the handler only calls
    // async-signal-safe functions.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigsys as *const () as libc::sighandler_t;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut()) != 0 {
            return Err(format!(
                "sigaction(SIGSYS): {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Environment variable naming the test-only probe, see [`run_test_probe`].
pub const PROBE_ENV: &str = "EXT4_FUSE_TEST_PROBE";

/// Test-only hook (environment `EXT4_FUSE_TEST_PROBE=open|socket|exec`):
/// after confinement, try something the sandbox must stop and log what
/// happened. With the sandbox on the attempt is expected to end the
/// process through the SIGSYS handler; with `-o nosandbox` it reports how
/// the plain call went, which shows the probe itself works.
pub fn run_test_probe(what: &str) {
    let result = match what {
        "open" => std::fs::File::open("/etc/passwd").map(|_| ()),
        "socket" => std::net::UdpSocket::bind("127.0.0.1:0").map(|_| ()),
        "exec" => {
            let prog = CString::new("/bin/true").unwrap_or_default();
            let argv = [prog.as_ptr(), std::ptr::null()];
            let envp = [std::ptr::null()];
            // SAFETY: NUL-terminated argv/envp arrays of valid C strings.
            // On success the process image is replaced, so this probe only
            // returns when execve failed.
            unsafe { libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
            Err(std::io::Error::last_os_error())
        }
        other => {
            log::error(format_args!("probe: unknown probe {other:?}"));
            return;
        }
    };
    match result {
        Ok(()) => log::error(format_args!("probe {what}: allowed")),
        Err(e) => log::error(format_args!("probe {what}: failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denied_line_names_the_call() {
        let mut b = [0u8; 160];
        let n = denied_line(libc::SYS_openat, &mut b);
        assert_eq!(
            std::str::from_utf8(&b[..n]).unwrap(),
            format!(
                "ext4-fuse: sandbox: denied system call {} (openat); the server stops here\n",
                libc::SYS_openat
            )
        );
        let n = denied_line(0x7fff_ffff, &mut b);
        assert!(std::str::from_utf8(&b[..n])
            .unwrap()
            .contains("2147483647 (?)"));
    }

    #[test]
    fn filters_compile() {
        let (a, b) = filters(&[]).unwrap();
        assert!(!a.is_empty() && b.len() > ALLOWED.len());
    }
}

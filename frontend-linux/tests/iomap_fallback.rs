//! On this kernel (no FUSE iomap): `-o iomap=auto` (the default) mounts
//! through the plain data path and reads what the kernel's ext4 reads;
//! `-o iomap=on` fails with one clear line and mounts nothing. With the
//! probe forced (test-only environment variable), the set-up runs for
//! real: a loop device is attached, the kernel then does not grant
//! FUSE_IOMAP, and the loop device must be gone afterwards on both the
//! failing (`on`) and the falling-back (`auto`) path.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ext4_fuse::iomap_setup::PROBE_OVERRIDE_ENV;
use ext4_fuse::loopdev::devices_backed_by;
use ext4_tests::fuse::is_mounted;
use ext4_tests::image::{build_image, matrix_spec};
use ext4_tests::oracle::KernelMount;
use ext4_tests::util::{require_e2fsprogs, require_fuse, require_kernel_ext4, target_dir};

const BIN: &str = env!("CARGO_BIN_EXE_ext4-fuse");
const FILE: &str = "files/size-65537";

fn scratch(tag: &str) -> PathBuf {
    let d = target_dir()
        .join("ext4-test-mnt")
        .join(format!("iomap-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(d.join("mnt")).unwrap();
    d
}

/// A private copy of the small image, so no other test's loop devices
/// share its path.
fn image_copy(dir: &Path) -> PathBuf {
    let src = build_image(matrix_spec("ext4")).path;
    let img = dir.join("image.img");
    fs::copy(src, &img).unwrap();
    img
}

/// Run `ext4-fuse IMG MNT -f -d ARGS` (the probe forced when `assume`);
/// once it mounts, call `mounted` and unmount. Returns (exit code,
/// stderr).
fn serve(
    img: &Path,
    mnt: &Path,
    args: &[&str],
    assume: bool,
    mut mounted: impl FnMut(),
) -> (Option<i32>, String) {
    let log = mnt.with_extension("log");
    let mut cmd = Command::new(BIN);
    cmd.arg(img)
        .arg(mnt)
        .args(["-f", "-d"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap());
    if assume {
        cmd.env(PROBE_OVERRIDE_ENV, "assume");
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut done = false;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if is_mounted(mnt) {
            if !done {
                done = true;
                mounted();
            }
            // Again until it goes (busy while the server starts up).
            let _ = Command::new("umount").arg(mnt).status();
        }
        assert!(
            Instant::now() < deadline,
            "ext4-fuse neither mounted nor exited"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = child.wait().unwrap();
    (st.code(), fs::read_to_string(&log).unwrap_or_default())
}

/// Run `ext4-fuse IMG MNT -f -o ro -o OPTS`; if it mounts, read FILE,
/// unmount, and return (mounted and served, file bytes, exit code,
/// stderr).
fn run(img: &Path, mnt: &Path, opts: &str, assume: bool) -> (bool, Vec<u8>, Option<i32>, String) {
    let (mut mounted, mut data) = (false, Vec::new());
    let (code, err) = serve(img, mnt, &["-o", "ro", "-o", opts], assume, || {
        // Served, not just mounted: a server that fails its set-up after
        // mount(2) (iomap=on) shows the mount for a moment, never a file.
        let r = fs::read(mnt.join(FILE));
        mounted = r.is_ok();
        data = r.unwrap_or_default();
    });
    (mounted, data, code, err)
}

/// The tools are here and the kernel lacks FUSE iomap (else the
/// fallback is not what happens).
fn applies() -> bool {
    if !require_e2fsprogs() || !require_kernel_ext4() || !require_fuse() {
        return false;
    }
    if ext4_fuse::iomap_setup::kernel_supports_iomap() {
        eprintln!("this kernel has FUSE iomap: the fallback test does not apply");
        return false;
    }
    true
}

#[test]
fn fallback_on_a_kernel_without_iomap() {
    if !applies() {
        return;
    }
    let dir = scratch("fallback");
    let img = image_copy(&dir);
    let mnt = dir.join("mnt");
    let want = {
        let km = KernelMount::ro(&img).unwrap();
        fs::read(km.path().join(FILE)).unwrap()
    };

    // auto (the default): plain path, correct data, clean exit.
    for opts in ["ro", "ro,iomap=auto", "ro,iomap=off"] {
        let (mounted, data, code, err) = run(&img, &mnt, opts, false);
        assert!(mounted, "{opts}: did not mount: {err}");
        assert_eq!(code, Some(0), "{opts}: {err}");
        assert!(data == want, "{opts}: data differs from the kernel's");
        assert!(
            err.contains("data path: plain FUSE"),
            "{opts}: no data-path line: {err}"
        );
        assert!(!err.contains("data path: iomap"));
    }

    // on: a clear one-line failure, nothing mounted.
    let (mounted, _, code, err) = run(&img, &mnt, "ro,iomap=on", false);
    assert!(!mounted);
    assert_eq!(code, Some(1));
    let lines: Vec<&str> = err.lines().filter(|l| !l.contains("unique=")).collect();
    assert_eq!(lines.len(), 1, "expected one line: {err}");
    assert!(
        lines[0].contains("-o iomap=on") && lines[0].contains("no iomap support"),
        "{err}"
    );
    assert!(!is_mounted(&mnt));

    // Forced probe: a loop device is attached for real, then the kernel
    // does not grant FUSE_IOMAP. No loop device may survive either path.
    assert!(devices_backed_by(&img).is_empty());
    let (mounted, _, code, err) = run(&img, &mnt, "ro,iomap=on", true);
    assert!(!mounted || !is_mounted(&mnt));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("did not offer FUSE_IOMAP"), "{err}");
    assert!(
        err.contains("iomap set-up: /dev/loop"),
        "no loop device was attached: {err}"
    );
    assert!(
        devices_backed_by(&img).is_empty(),
        "iomap=on failure leaked a loop device"
    );
    assert!(!is_mounted(&mnt), "iomap=on failure left a mount");

    let (mounted, data, code, err) = run(&img, &mnt, "ro,iomap=auto", true);
    assert!(mounted, "{err}");
    assert_eq!(code, Some(0), "{err}");
    assert!(data == want);
    assert!(err.contains("iomap set-up: /dev/loop"), "{err}");
    assert!(
        err.contains("did not offer FUSE_IOMAP") && err.contains("plain FUSE data path"),
        "{err}"
    );
    assert!(
        devices_backed_by(&img).is_empty(),
        "iomap=auto fallback leaked a loop device"
    );
    let _ = fs::remove_dir_all(&dir);
}

/// Run `ext4-fuse IMG MNT -f -d -o OPTS` read-write; while mounted, write
/// `data` to `/written` and note the loop devices backed by the image and
/// whether each is read-only; unmount. Returns (mounted and written, loop
/// devices with their `ro`, exit code, stderr).
fn run_rw(
    img: &Path,
    mnt: &Path,
    opts: &str,
    assume: bool,
    data: &[u8],
) -> (bool, Vec<(String, String)>, Option<i32>, String) {
    let (mut written, mut loops) = (false, Vec::new());
    let (code, err) = serve(img, mnt, &["-o", opts], assume, || {
        // A mount that fails set-up after mount(2) (iomap=on) goes away
        // under the write.
        written = fs::write(mnt.join("written"), data).is_ok();
        loops = devices_backed_by(img)
            .into_iter()
            .map(|n| {
                let ro = fs::read_to_string(format!("/sys/block/{n}/ro")).unwrap_or_default();
                (n, ro.trim().to_string())
            })
            .collect();
    });
    (written, loops, code, err)
}

/// Wait up to 5 s for the kernel to detach an autoclear loop device of
/// `img` (it does so a little after the last close).
fn detached(img: &Path) -> bool {
    let start = Instant::now();
    while !devices_backed_by(img).is_empty() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    devices_backed_by(img).is_empty()
}

/// Read-write mounts: without iomap in the kernel, `auto` serves the
/// plain path on the image file (no loop device). With the probe forced,
/// a read-write image mount attaches a *writable* loop device and serves
/// its volume on it (what the kernel would write file data through);
/// when the kernel then does not grant FUSE_IOMAP, `auto` goes on with
/// the plain path on that device, and `on` fails. Every run leaves no
/// loop device, an image `e2fsck -fn` passes, and the kernel's ext4 reads
/// what was written.
#[test]
fn read_write_mounts_and_the_writable_loop_device() {
    if !applies() {
        return;
    }
    let dir = scratch("rw");
    let img = image_copy(&dir);
    let mnt = dir.join("mnt");
    let check = |what: &str, want: &[u8]| {
        let (code, out) = ext4_tests::oracle::e2fsck_check(&img);
        assert_eq!(code, 0, "{what}: e2fsck -fn exited {code}:\n{out}");
        let km = KernelMount::ro(&img).unwrap();
        let got = fs::read(km.path().join("written")).unwrap();
        assert!(got == want, "{what}: the kernel's ext4 reads other bytes");
        km.unmount().unwrap();
        // Its loop device goes a moment later; the next run counts them.
        assert!(
            detached(&img),
            "{what}: the kernel mount's loop device stayed"
        );
    };

    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 4096) as u8).collect();
    let (mounted, loops, code, err) = run_rw(&img, &mnt, "rw", false, &data);
    assert!(mounted && code == Some(0), "{err}");
    assert!(loops.is_empty(), "plain path attached {loops:?}");
    assert!(err.contains("data path: plain FUSE"), "{err}");
    check("rw", &data);

    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 13 + i / 512) as u8).collect();
    let (mounted, loops, code, err) = run_rw(&img, &mnt, "rw,iomap=auto", true, &data);
    assert!(mounted && code == Some(0), "{err}");
    assert_eq!(loops.len(), 1, "{err}");
    assert_eq!(loops[0].1, "0", "{} is read-only", loops[0].0);
    assert!(
        err.contains(&format!("the volume is open on /dev/{}", loops[0].0)),
        "{err}"
    );
    assert!(
        err.contains("did not offer FUSE_IOMAP") && err.contains("plain FUSE data path"),
        "{err}"
    );
    assert!(detached(&img), "a loop device outlived the mount");
    check("rw,iomap=auto on the loop device", &data);

    let (mounted, _, code, err) = run_rw(&img, &mnt, "rw,iomap=on", true, b"x");
    assert!(!mounted || !is_mounted(&mnt));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("did not offer FUSE_IOMAP"), "{err}");
    assert!(detached(&img), "iomap=on failure leaked a loop device");
    let (code, out) = ext4_tests::oracle::e2fsck_check(&img);
    assert_eq!(
        code, 0,
        "iomap=on failure: e2fsck -fn exited {code}:\n{out}"
    );
    let _ = fs::remove_dir_all(&dir);
}

const HELPER: &str = env!("CARGO_BIN_EXE_ext4-fuse-mount");

/// The mount helper, read-write with the probe forced: it attaches a
/// *writable* loop device and hands it to the server as the source, which
/// serves its volume on it (the plain path here: the kernel grants no
/// iomap). Written data survives the unmount, the loop device goes, and
/// the image passes `e2fsck -fn`.
#[test]
fn the_helper_hands_over_a_writable_loop_device() {
    if !applies() {
        return;
    }
    let dir = scratch("helper-rw");
    let img = image_copy(&dir);
    let mnt = dir.join("mnt");
    let st = Command::new(HELPER)
        .arg(&img)
        .arg(&mnt)
        .args(["-o", "rw"])
        .env(PROBE_OVERRIDE_ENV, "assume")
        .status()
        .unwrap();
    assert!(st.success(), "ext4-fuse-mount: {st}");
    assert!(is_mounted(&mnt));
    let loops = devices_backed_by(&img);
    let ro: Vec<String> = loops
        .iter()
        .map(|n| fs::read_to_string(format!("/sys/block/{n}/ro")).unwrap_or_default())
        .collect();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 31 + i / 999) as u8).collect();
    let wrote = fs::write(mnt.join("written"), &data);
    let _ = Command::new("umount").arg(&mnt).status();
    assert_eq!(loops.len(), 1, "no loop device: {loops:?}");
    assert_eq!(ro[0].trim(), "0", "{} is read-only", loops[0]);
    wrote.unwrap();
    assert!(detached(&img), "a loop device outlived the mount");
    let (code, out) = ext4_tests::oracle::e2fsck_check(&img);
    assert_eq!(code, 0, "e2fsck -fn exited {code}:\n{out}");
    let km = KernelMount::ro(&img).unwrap();
    assert!(fs::read(km.path().join("written")).unwrap() == data);
    drop(km);
    let _ = fs::remove_dir_all(&dir);
}

//! Every way an administrator mounts with `ext4-fuse` gives a mount the
//! kernel marks `nosuid,nodev` (an untrusted image's set-uid files and
//! device nodes stay inert), as /proc/mounts shows it, unless `-o kernel`
//! (fuse2fs' option) asks otherwise; and the server's user never shows up
//! as mount(8)'s own `user=` option. The paths: `ext4-fuse` directly,
//! `ext4-fuse-mount` by hand, `mount -t fuse.ext4-fuse` and an fstab line
//! through the installed helper (modelled in a private mount namespace
//! where the helper is bound over /sbin/mount.fuse, which mount(8) runs
//! for `fuse.*` types; /etc/fstab likewise), `mount.fuse3` starting
//! `ext4-fuse` (as mount(8) does without our helper), and the systemd
//! unit's own ExecStart options.

use std::path::{Path, PathBuf};
use std::process::Command;

use ext4_tests::fuse::{is_mounted, FuseServer};
use ext4_tests::image::{build_image, matrix_spec};
use ext4_tests::oracle::Scratch;
use ext4_tests::util::{have_tool, require_e2fsprogs, require_fuse};

const SERVER: &str = env!("CARGO_BIN_EXE_ext4-fuse");
const HELPER: &str = env!("CARGO_BIN_EXE_ext4-fuse-mount");

fn can_run() -> bool {
    require_e2fsprogs() && require_fuse() && have_tool("unshare") && have_tool("findmnt")
}

/// The options field of `mnt`'s line in a /proc/mounts text.
fn options_of(mounts: &str, mnt: &Path) -> Option<String> {
    let mnt = mnt.to_str().unwrap();
    mounts
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[1] == mnt)
        .map(|f| f[3].to_string())
}

/// Run `script` as `sh -c` in a private mount namespace; it sees `$IMG`,
/// `$MNT`, `$HELPER`, `$SERVER`, `$DIR`. Returns its stdout; panics
/// with its stderr when it fails.
fn in_namespace(dir: &Path, img: &Path, mnt: &Path, script: &str) -> String {
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-ec", script])
        .env("IMG", img)
        .env("MNT", mnt)
        .env("HELPER", HELPER)
        .env("SERVER", SERVER)
        .env("DIR", dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script}: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the mount looked like from inside the namespace: /proc/mounts'
/// options and findmnt's (which adds mount(8)'s own, from its utab).
const SHOW: &str =
    "cat /proc/self/mounts; echo ===; findmnt -n -o OPTIONS \"$MNT\"; umount \"$MNT\"";

fn judge(what: &str, out: &str, mnt: &Path, want_inert: bool, bad: &mut Vec<String>) {
    let (mounts, findmnt) = out.split_once("===").unwrap_or((out, ""));
    let Some(opts) = options_of(mounts, mnt) else {
        bad.push(format!("{what}: not in /proc/mounts"));
        return;
    };
    let flags: Vec<&str> = opts.split(',').collect();
    let inert = flags.contains(&"nosuid") && flags.contains(&"nodev");
    if inert != want_inert {
        bad.push(format!(
            "{what}: /proc/mounts says {opts} (want nosuid,nodev: {want_inert})"
        ));
    }
    if findmnt.contains("user=") || opts.contains("user=") {
        bad.push(format!(
            "{what}: mount(8) shows a user= option: {}",
            findmnt.trim()
        ));
    }
}

#[test]
fn every_mount_path_is_nosuid_nodev_unless_asked() {
    if !can_run() {
        return;
    }
    let img = build_image(matrix_spec("ext4"));
    let dir = Scratch::new("mount-paths");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut bad = Vec::new();

    // Directly, and with fuse2fs' `kernel`, which turns them on (so the
    // check above can see the difference).
    for (opts, inert) in [("ro", true), ("ro,suid,dev", true), ("ro,kernel", false)] {
        let s = FuseServer::mount(Path::new(SERVER), &img.path, opts).unwrap();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let what = format!("ext4-fuse -o {opts}");
        judge(&what, &mounts, s.path(), inert, &mut bad);
        s.unmount().unwrap();
    }
    // The helper by hand (it returns once the server serves).
    let helper = format!("\"$HELPER\" \"$IMG\" \"$MNT\" -o ro,setuid=nobody; {SHOW}");
    let out = in_namespace(dir.path(), &img.path, &mnt, &helper);
    judge("ext4-fuse-mount", &out, &mnt, true, &mut bad);

    // mount(8) through the installed helper: mount(8) runs
    // /sbin/mount.fuse.ext4-fuse, else /sbin/mount.fuse, with the same
    // arguments; here a script standing in for the latter runs the helper
    // through a symlink named as installed (scripts/install.sh).
    std::os::unix::fs::symlink(HELPER, dir.path().join("mount.fuse.ext4-fuse")).unwrap();
    std::fs::write(
        dir.path().join("helper.sh"),
        format!(
            "#!/bin/sh\nexec {}/mount.fuse.ext4-fuse \"$@\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        dir.path().join("helper.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let via_mount = format!(
        "mount --bind \"$DIR/helper.sh\" /sbin/mount.fuse; \
         mount -t fuse.ext4-fuse -o ro,allow_other,setuid=nobody \"$IMG\" \"$MNT\"; {SHOW}"
    );
    let out = in_namespace(dir.path(), &img.path, &mnt, &via_mount);
    judge("mount -t fuse.ext4-fuse", &out, &mnt, true, &mut bad);

    // An fstab line, mounted by its mount point.
    std::fs::write(
        dir.path().join("fstab"),
        format!(
            "{} {} fuse.ext4-fuse ro,allow_other,setuid=nobody,nofail 0 0\n",
            img.path.display(),
            mnt.display()
        ),
    )
    .unwrap();
    let via_fstab = format!(
        "mount --bind \"$DIR/helper.sh\" /sbin/mount.fuse; mount --bind \"$DIR/fstab\" /etc/fstab; \
         mount \"$MNT\"; {SHOW}"
    );
    let out = in_namespace(dir.path(), &img.path, &mnt, &via_fstab);
    judge("fstab", &out, &mnt, true, &mut bad);

    // mount.fuse3 starting ext4-fuse, as mount(8) does when our helper is
    // not installed: it adds dev,suid to the server's options.
    let bin_dir = Path::new(SERVER).parent().unwrap().display().to_string();
    let via_fuse3 = format!(
        "PATH={bin_dir}:$PATH /sbin/mount.fuse3 \"$IMG\" \"$MNT\" -o ro -t fuse.ext4-fuse; {SHOW}"
    );
    let out = in_namespace(dir.path(), &img.path, &mnt, &via_fuse3);
    judge("mount.fuse3", &out, &mnt, true, &mut bad);

    // The systemd unit's ExecStart, with its own options (the helper with
    // -f stays; it is stopped by unmounting, as ExecStop does).
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/ext4-fuse@.service"),
    )
    .unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart in the unit");
    let unit_opts = exec
        .split_whitespace()
        .skip_while(|w| *w != "-o")
        .nth(1)
        .expect("-o in ExecStart")
        .to_string();
    let via_unit = format!(
        "\"$HELPER\" -f \"$IMG\" \"$MNT\" -o {unit_opts} & \
         for i in $(seq 200); do grep -q \" $MNT \" /proc/self/mounts && break; sleep 0.05; done; \
         {SHOW}; wait"
    );
    let out = in_namespace(dir.path(), &img.path, &mnt, &via_unit);
    judge(
        &format!("the unit (-o {unit_opts})"),
        &out,
        &mnt,
        true,
        &mut bad,
    );

    assert!(!is_mounted(&mnt), "left mounted");
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The one place the unit and the install script agree on.
#[test]
fn the_unit_runs_the_installed_helper() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let unit =
        std::fs::read_to_string(root.join("frontend-linux/systemd/ext4-fuse@.service")).unwrap();
    let script = std::fs::read_to_string(root.join("scripts/install.sh")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let helper = exec.split_whitespace().next().unwrap();
    assert!(
        script.contains(helper),
        "the unit runs {helper}, which scripts/install.sh does not install"
    );
}

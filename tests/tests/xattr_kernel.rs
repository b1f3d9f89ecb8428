//! The engine's xattr parsers against the kernel's ext4: images whose
//! xattrs the kernel wrote (in-inode, in blocks, shared blocks, EA inodes,
//! ACLs, inline data), read back through the kernel (`getfattr`) while
//! mounted, then parsed from the raw image after unmounting; every region
//! also survives random damage.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use ext4_engine::test_support::{
    block_hash, block_header, crc32c, disk_to_xattr, entry_hash, full_name, parse_block,
    parse_ibody, split_name, verify_block_checksum, xattr_to_disk, XattrEntry, XattrValue,
};
use ext4_engine::{InodeNo, PhysBlock};
use ext4_tests::damage::xattr_flips;
use ext4_tests::oracle::{self, assert_fsck_clean, mke2fs, tempfile_path, KernelMount};
use ext4_tests::util::{have_tool, require_e2fsprogs, require_kernel_ext4, run_ok, skip};

fn run(cmd: &str, args: &[&str]) -> Vec<u8> {
    run_ok(Command::new(cmd).args(args)).into_bytes()
}

fn debugfs(img: &Path, req: &str) -> String {
    oracle::debugfs(img, req).unwrap()
}

/// `getfattr -d -m - -e hex` of one file, as name -> value.
fn getfattr(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let out = run(
        "getfattr",
        &[
            "-d",
            "-m",
            "-",
            "-e",
            "hex",
            "--absolute-names",
            path.to_str().unwrap(),
        ],
    );
    let mut map = BTreeMap::new();
    for line in String::from_utf8(out).unwrap().lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, hex) = line
            .split_once("=0x")
            .unwrap_or_else(|| panic!("odd line {line}"));
        let value = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        map.insert(name.as_bytes().to_vec(), value);
    }
    map
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn read_at(img: &Path, at: u64, len: usize) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(img).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    let mut buf = vec![0; len];
    f.read_exact(&mut buf).unwrap();
    buf
}

/// The raw on-disk inode, located with `debugfs imap`.
fn raw_inode(img: &Path, ino: u64, bs: u64) -> Vec<u8> {
    let out = debugfs(img, &format!("imap <{ino}>"));
    let loc = out.split("located at block ").nth(1).unwrap();
    let (blk, off) = loc.trim().split_once(", offset 0x").unwrap();
    let blk: u64 = blk.parse().unwrap();
    let off = u64::from_str_radix(off.trim(), 16).unwrap();
    read_at(img, blk * bs + off, 256)
}

#[derive(Default, Debug)]
struct Seen {
    ibody_inline: usize,
    block_inline: usize,
    ea_inode: usize,
    acl_access: usize,
    acl_default: usize,
    system_data: usize,
    shared_block: usize,
    hashes_checked: usize,
}

fn setfattr(path: &Path, name: &str, value: &str) {
    run(
        "setfattr",
        &["-n", name, "-v", value, path.to_str().unwrap()],
    );
}

fn hex_value(len: usize, seed: u32) -> String {
    let mut s = String::from("0x");
    for i in 0..len {
        s += &format!(
            "{:02x}",
            (i as u32).wrapping_mul(seed).wrapping_add(seed >> 3) as u8
        );
    }
    s
}

fn one_image(bs: u32, seen: &mut Seen) {
    let img = tempfile_path(&format!("xattr-kernel-{bs}")).with_extension("img");
    let _rm = RemoveOnDrop(img.clone());
    mke2fs(
        &img,
        &[
            "-t",
            "ext4",
            "-O",
            "^has_journal,metadata_csum,inline_data,ea_inode",
            "-I",
            "256",
            "-b",
            &bs.to_string(),
        ],
        None,
        "8M",
    );
    let mount = KernelMount::mount(&img, false, "").expect("mount rw");
    let m = mount.path().to_path_buf();

    // Small values (in-inode), an empty one, binary bytes.
    let f = m.join("small");
    std::fs::write(&f, b"").unwrap();
    setfattr(&f, "user.a", "hi");
    setfattr(&f, "user.empty", "");
    setfattr(&f, "user.bin", "0x00ff807f01");
    // One value too big for the inode: an xattr block (4K) or ea_inode (1K).
    let f = m.join("big");
    std::fs::write(&f, b"x").unwrap();
    setfattr(&f, "user.big", &hex_value(3000, 7));
    setfattr(&f, "trusted.t", "0x01");
    setfattr(&f, "security.s", "label");
    // Many values: in-inode then spilling into the block.
    let f = m.join("many");
    std::fs::write(&f, b"").unwrap();
    for i in 0..12 {
        setfattr(&f, &format!("user.k{i:02}"), &hex_value(40, i));
    }
    let long_name = format!("user.{}", "n".repeat(200));
    setfattr(&f, &long_name, "v");
    // A 10 KiB value: always an ea_inode.
    let f = m.join("huge");
    std::fs::write(&f, b"").unwrap();
    setfattr(&f, "user.huge", &hex_value(10 * 1024, 13));
    // Two inodes with identical block contents share one block.
    for name in ["share1", "share2"] {
        let f = m.join(name);
        std::fs::write(&f, b"").unwrap();
        setfattr(&f, "user.shared", &hex_value(900, 3));
    }
    // ACLs.
    let f = m.join("acl");
    std::fs::write(&f, b"").unwrap();
    run("setfacl", &["-m", "u:1234:rwx,g:55:r", f.to_str().unwrap()]);
    let d = m.join("dacl");
    std::fs::create_dir(&d).unwrap();
    run(
        "setfacl",
        &["-d", "-m", "u:7:rx,g:8:w,o::r", d.to_str().unwrap()],
    );
    run(
        "setfacl",
        &["-m", "u:9:r,u:4000000000:w", d.to_str().unwrap()],
    );
    // Inline data: a hidden system.data in-inode.
    let f = m.join("inline");
    std::fs::write(&f, b"hello").unwrap();

    let names = [
        "small", "big", "many", "huge", "share1", "share2", "acl", "dacl", "inline",
    ];
    let mut want = Vec::new();
    for n in names {
        let p = m.join(n);
        want.push((n, std::fs::metadata(&p).unwrap().ino(), getfattr(&p)));
    }
    mount.unmount().expect("unmount");
    assert_fsck_clean(&img);

    let sb = read_at(&img, 1024, 1024);
    let csum_seed = if le32(&sb, 0x60) & 0x2000 != 0 {
        le32(&sb, 0x270)
    } else {
        crc32c(!0, &sb[0x68..0x78])
    };
    let bs64 = u64::from(bs);
    for (n, ino, want) in want {
        let inode = raw_inode(&img, ino, bs64);
        let ino = InodeNo(ino as u32);
        let extra = usize::from(le16(&inode, 0x80));
        let region = &inode[128 + extra..];
        let file_acl = u64::from(le32(&inode, 0x68)) | u64::from(le16(&inode, 0x76)) << 32;
        let stat = debugfs(&img, &format!("stat <{ino}>"));
        assert!(
            stat.contains(&format!("File ACL: {file_acl}\n")),
            "{n}: File ACL differs:\n{stat}"
        );

        let mut entries: Vec<(XattrEntry, bool)> = parse_ibody(region, ino)
            .unwrap()
            .into_iter()
            .map(|e| (e, false))
            .collect();
        xattr_flips(region, false, 2000, ino.0.into());
        let block;
        if file_acl != 0 {
            block = read_at(&img, file_acl * bs64, bs as usize);
            let file_acl = PhysBlock(file_acl);
            assert!(
                verify_block_checksum(&block, file_acl, csum_seed),
                "{n}: block checksum"
            );
            let mut bad = block.clone();
            bad[100] ^= 1;
            assert!(!verify_block_checksum(&bad, file_acl, csum_seed));
            let hdr = block_header(&block, file_acl).unwrap();
            let es = parse_block(&block, file_acl).unwrap();
            assert_eq!(
                hdr.h_hash.get(),
                block_hash(es.iter().map(|e| e.hash)),
                "{n}: h_hash"
            );
            if hdr.h_refcount.get() > 1 {
                seen.shared_block += 1;
            }
            entries.extend(es.into_iter().map(|e| (e, true)));
            xattr_flips(&block, true, 2000, file_acl.0);
        }

        let mut got = BTreeMap::new();
        for (e, in_block) in entries {
            let full = full_name(e.index, e.name).unwrap();
            assert_eq!(split_name(&full), Some((e.index, e.name)));
            let mut value = match e.value {
                XattrValue::Inline(v) => {
                    if in_block {
                        seen.block_inline += 1;
                        assert_eq!(e.hash, entry_hash(e.name, v), "{n}: e_hash");
                        seen.hashes_checked += 1;
                    } else {
                        seen.ibody_inline += 1;
                    }
                    v.to_vec()
                }
                XattrValue::EaInode { ino: ea, size } => {
                    seen.ea_inode += 1;
                    let v = oracle::debugfs_dump(&img, &format!("<{ea}>")).unwrap();
                    assert_eq!(v.len(), size as usize, "{n}: ea_inode size");
                    // The entry hash covers the ea_inode's own hash, kept in i_atime.
                    let ea_raw = raw_inode(&img, ea.0.into(), bs64);
                    assert_eq!(e.hash, entry_hash(e.name, &ea_raw[8..12]), "{n}: ea e_hash");
                    seen.hashes_checked += 1;
                    v
                }
            };
            match e.index {
                2 | 3 => {
                    if e.index == 2 {
                        seen.acl_access += 1;
                    } else {
                        seen.acl_default += 1;
                    }
                    let x = disk_to_xattr(&value, ino).unwrap();
                    assert_eq!(xattr_to_disk(&x).unwrap(), value, "{n}: ACL round trip");
                    value = x;
                }
                7 if e.name == b"data" => {
                    // Inline data: the kernel hides it from listxattr.
                    seen.system_data += 1;
                    continue;
                }
                _ => {}
            }
            assert!(got.insert(full, value).is_none(), "{n}: duplicate name");
        }
        assert_eq!(
            got, want,
            "{n} (block size {bs}): parsed xattrs differ from getfattr"
        );
    }
}

#[test]
fn matches_kernel_getfattr() {
    if !require_e2fsprogs() || !require_kernel_ext4() {
        return;
    }
    for tool in ["getfattr", "setfattr", "setfacl"] {
        if !have_tool(tool) {
            return skip(&format!("`{tool}` not found (install attr and acl)"));
        }
    }
    let mut seen = Seen::default();
    for bs in [1024, 4096] {
        one_image(bs, &mut seen);
    }
    eprintln!(
        "xattr oracle: {} in-inode, {} block, {} ea_inode values; ACLs {}+{}; \
         system.data {}; shared blocks {}; hashes {}",
        seen.ibody_inline,
        seen.block_inline,
        seen.ea_inode,
        seen.acl_access,
        seen.acl_default,
        seen.system_data,
        seen.shared_block,
        seen.hashes_checked
    );
    // Every path must have been exercised by the kernel's own layout.
    assert!(seen.ibody_inline > 0, "no in-inode value");
    assert!(seen.block_inline > 0, "no xattr block value");
    assert!(seen.ea_inode > 0, "no ea_inode value");
    assert!(seen.acl_access > 0 && seen.acl_default > 0, "no ACL");
    assert!(seen.system_data > 0, "no inline data");
    assert!(seen.shared_block > 0, "no shared xattr block");
    assert!(seen.hashes_checked > 0);
}

/// Removes a scratch image, also when the test fails.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

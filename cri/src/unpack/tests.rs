//! Layer application against the real filesystem (as root: ownership, devices and trusted
//! xattrs need it). Every test unpacks into its own temporary directory, removed on drop.

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use super::*;

/// A tar stream built entry by entry; names are written raw so malicious paths can be made.
struct Layer(tar::Builder<Vec<u8>>);

impl Layer {
    fn new() -> Self {
        Layer(tar::Builder::new(Vec::new()))
    }

    fn header(kind: tar::EntryType, name: &str, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(1000);
        h.set_gid(2000);
        h.set_mtime(1_600_000_000);
        h.set_size(0);
        let bytes = name.as_bytes();
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h
    }

    fn push(mut self, mut h: tar::Header, data: &[u8]) -> Self {
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    fn dir(self, name: &str) -> Self {
        let h = Self::header(tar::EntryType::Directory, name, 0o755);
        self.push(h, b"")
    }

    fn file(self, name: &str, data: &[u8], mode: u32) -> Self {
        let h = Self::header(tar::EntryType::Regular, name, mode);
        self.push(h, data)
    }

    fn link(self, kind: tar::EntryType, name: &str, target: &str) -> Self {
        let mut h = Self::header(kind, name, 0o777);
        h.set_link_name(target).unwrap_or_else(|_| {
            let b = target.as_bytes();
            h.as_old_mut().linkname[..b.len()].copy_from_slice(b);
        });
        self.push(h, b"")
    }

    fn device(self, kind: tar::EntryType, name: &str, major: u32, minor: u32) -> Self {
        let mut h = Self::header(kind, name, 0o600);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.push(h, b"")
    }

    fn xattr_file(mut self, name: &str, key: &str, value: &[u8]) -> Self {
        let pax_key = format!("SCHILY.xattr.{key}");
        self.0
            .append_pax_extensions([(pax_key.as_str(), value)])
            .unwrap();
        self.file(name, b"x", 0o644)
    }

    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).unwrap()
}

fn sample() -> Vec<u8> {
    Layer::new()
        .dir("etc/")
        .file("etc/motd", b"hello\n", 0o644)
        .file("bin/tool", b"#!/bin/sh\n", 0o4755)
        .link(tar::EntryType::Symlink, "bin/sh", "/bin/busybox")
        .link(tar::EntryType::Link, "bin/tool-again", "bin/tool")
        .device(tar::EntryType::Char, "dev/null", 1, 3)
        .device(tar::EntryType::Fifo, "run/pipe", 0, 0)
        .xattr_file("etc/with-xattr", "user.capstan", b"v")
        .bytes()
}

#[test]
fn applies_files_links_devices_in_every_compression() {
    for (label, blob) in [
        ("plain", sample()),
        ("gzip", gzip(&sample())),
        ("zstd", zstd(&sample())),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("snap");
        let stats = apply_layer(blob.as_slice(), &dest).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(stats.entries, 8, "{label}");
        assert_eq!(std::fs::read(dest.join("etc/motd")).unwrap(), b"hello\n");
        let tool = std::fs::metadata(dest.join("bin/tool")).unwrap();
        assert_eq!(
            tool.mode() & 0o7777,
            0o4755,
            "{label}: setuid survives the chown"
        );
        assert_eq!((tool.uid(), tool.gid()), (1000, 2000));
        assert_eq!(tool.mtime(), 1_600_000_000);
        assert_eq!(
            std::fs::read_link(dest.join("bin/sh")).unwrap(),
            Path::new("/bin/busybox")
        );
        assert_eq!(
            std::fs::metadata(dest.join("bin/tool-again"))
                .unwrap()
                .ino(),
            tool.ino()
        );
        let null = std::fs::symlink_metadata(dest.join("dev/null")).unwrap();
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
        assert!(std::fs::symlink_metadata(dest.join("run/pipe"))
            .unwrap()
            .file_type()
            .is_fifo());
        assert_eq!(
            xattr::get(dest.join("etc/with-xattr"), "user.capstan").unwrap(),
            Some(b"v".to_vec())
        );
        assert_eq!(
            std::fs::metadata(dest.join("etc")).unwrap().mtime(),
            1_600_000_000,
            "directory times are set last"
        );
    }
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    let blob = Layer::new()
        .dir("data/")
        .file("data/.wh..wh..opq", b"", 0o644)
        .file("etc/.wh.removed", b"", 0o644)
        .bytes();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("snap");
    let stats = apply_layer(blob.as_slice(), &dest).unwrap();
    assert_eq!(stats.whiteouts, 2);
    let w = std::fs::symlink_metadata(dest.join("etc/removed")).unwrap();
    assert!(
        w.file_type().is_char_device() && w.rdev() == 0,
        "a 0:0 character device"
    );
    assert!(!dest.join("etc/.wh.removed").exists());
    assert_eq!(
        xattr::get(dest.join("data"), OVERLAY_OPAQUE_XATTR).unwrap(),
        Some(b"y".to_vec())
    );
    assert!(!dest.join("data/.wh..wh..opq").exists());
}

#[test]
fn entries_that_escape_are_refused_and_nothing_is_left() {
    let cases = [
        (
            "parent",
            Layer::new()
                .file("ok", b"1", 0o644)
                .file("../evil", b"x", 0o644)
                .bytes(),
        ),
        (
            "nested parent",
            Layer::new().file("a/../../evil", b"x", 0o644).bytes(),
        ),
        (
            "absolute",
            Layer::new().file("/abs/evil", b"x", 0o644).bytes(),
        ),
        (
            "hardlink out",
            Layer::new()
                .link(tar::EntryType::Link, "pw", "../../etc/passwd")
                .bytes(),
        ),
        (
            "through a symlink",
            Layer::new()
                .link(tar::EntryType::Symlink, "out", "/tmp")
                .file("out/evil", b"x", 0o644)
                .bytes(),
        ),
    ];
    for (label, blob) in cases {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("snap");
        match apply_layer(blob.as_slice(), &dest) {
            Err(UnpackError::Escape { .. }) => {}
            other => panic!("{label}: expected a refusal, got {other:?}"),
        }
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{label}: left {left:?} behind");
        assert!(
            !dir.path().parent().unwrap().join("evil").exists(),
            "{label}"
        );
    }
}

#[test]
fn compression_is_detected_from_the_first_bytes() {
    assert_eq!(Compression::detect(&gzip(b"x")), Compression::Gzip);
    assert_eq!(Compression::detect(&zstd(b"x")), Compression::Zstd);
    assert_eq!(Compression::detect(b"ustar"), Compression::None);
}

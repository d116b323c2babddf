use super::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

fn sample() -> Vec<u8> {
    let mut w = CpioWriter::new(Vec::new());
    w.add_file("init", 0o755, b"#!/bin/sh\necho hi\n").unwrap();
    w.add_file("etc/hearth/modules", 0o644, b"kernel/a.ko\n")
        .unwrap();
    w.add_symlink("bin/sh", "/init").unwrap();
    w.add_hard_links(&["lib/one", "lib/two"], 0o600, b"shared body")
        .unwrap();
    w.add_char_device("dev/console", 0o600, 5, 1).unwrap();
    w.add_dir("empty", 0o700).unwrap();
    w.finish().unwrap()
}

#[test]
fn round_trips_through_own_reader() {
    let bytes = sample();
    assert_eq!(bytes.len() % 4, 0);
    let entries = CpioReader::read_all(&bytes).unwrap();
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "init",
            "etc",
            "etc/hearth",
            "etc/hearth/modules",
            "bin",
            "bin/sh",
            "lib",
            "lib/one",
            "lib/two",
            "dev",
            "dev/console",
            "empty"
        ]
    );
    let by = |n: &str| entries.iter().find(|e| e.name == n).unwrap();
    assert_eq!(by("init").mode, S_IFREG | 0o755);
    assert_eq!(by("init").data, b"#!/bin/sh\necho hi\n");
    assert_eq!(by("etc").mode, S_IFDIR | 0o755);
    assert_eq!(by("bin/sh").mode, S_IFLNK | 0o777);
    assert_eq!(by("bin/sh").data, b"/init");
    let (one, two) = (by("lib/one"), by("lib/two"));
    assert_eq!(one.ino, two.ino);
    assert_eq!((one.nlink, two.nlink), (2, 2));
    assert!(one.data.is_empty(), "data goes with the last link");
    assert_eq!(two.data, b"shared body");
    assert_eq!(by("dev/console").rdev, (5, 1));
    assert_eq!(by("dev/console").mode, S_IFCHR | 0o600);
    assert_eq!(by("empty").mode, S_IFDIR | 0o700);
    // Deterministic output.
    assert_eq!(bytes, sample());
}

#[test]
fn trailer_is_required_and_terminates() {
    let bytes = sample();
    // Cut the trailer off: read_all must notice.
    let trailer_at = bytes.windows(10).rposition(|w| w == b"TRAILER!!!").unwrap() - HEADER_LEN;
    assert!(matches!(
        CpioReader::read_all(&bytes[..trailer_at]),
        Err(GuestError::BadCpio(_))
    ));
    // Anything after the trailer (kernel images append padding) is ignored.
    let mut padded = bytes.clone();
    padded.extend_from_slice(&[0u8; 512]);
    assert_eq!(CpioReader::read_all(&padded).unwrap().len(), 12);
}

#[test]
fn reader_bounds_lengths() {
    let bytes = sample();
    // Claim a huge file size in the first header: must be refused, not allocated.
    let mut bad = bytes.clone();
    bad[6 + 6 * 8..6 + 7 * 8].copy_from_slice(b"7fffffff");
    assert!(matches!(
        CpioReader::read_all(&bad),
        Err(GuestError::BadCpio(_))
    ));
    let mut bad = bytes.clone();
    bad[6 + 11 * 8..6 + 12 * 8].copy_from_slice(b"00100000");
    assert!(matches!(
        CpioReader::read_all(&bad),
        Err(GuestError::BadCpio(_))
    ));
    assert!(matches!(
        CpioReader::read_all(&bytes[..50]),
        Err(GuestError::BadCpio(_))
    ));
}

#[test]
fn refuses_bad_names() {
    let mut w = CpioWriter::new(Vec::new());
    for n in ["", "/abs", "a/../b", "a//b", "dir/", "TRAILER!!!", "./x"] {
        assert!(
            matches!(w.add_file(n, 0o644, b""), Err(GuestError::BadEntryName(_))),
            "{n:?}"
        );
    }
}

#[test]
fn gnu_cpio_extracts_it() {
    if Command::new("cpio").arg("--version").output().is_err() {
        eprintln!("skipping: GNU cpio not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a.cpio");
    std::fs::write(&archive, sample()).unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let list = Command::new("cpio")
        .args(["-i", "-t", "-F"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(listed.lines().any(|l| l == "lib/two"), "{listed}");
    // Device nodes need root; list-only check above covers them otherwise.
    let out = Command::new("cpio")
        .args(["-i", "-d", "--no-absolute-filenames", "-F"])
        .arg(&archive)
        .current_dir(&out_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let init = out_dir.join("init");
    assert_eq!(std::fs::read(&init).unwrap(), b"#!/bin/sh\necho hi\n");
    assert_eq!(
        std::fs::metadata(&init).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    assert_eq!(
        std::fs::read_link(out_dir.join("bin/sh")).unwrap().to_str(),
        Some("/init")
    );
    let one = std::fs::metadata(out_dir.join("lib/one")).unwrap();
    let two = std::fs::metadata(out_dir.join("lib/two")).unwrap();
    assert_eq!(one.ino(), two.ino(), "hard link preserved");
    assert_eq!(
        std::fs::read(out_dir.join("lib/one")).unwrap(),
        b"shared body"
    );
    assert_eq!(
        std::fs::read(out_dir.join("etc/hearth/modules")).unwrap(),
        b"kernel/a.ko\n"
    );
}

/// Deterministic pseudo-random corruptions never panic the reader.
#[test]
fn corrupted_archives_never_panic() {
    let good = sample();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..3000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut b = good.clone();
        let at = (x as usize) % b.len();
        b[at] = b"0123456789abcdefz\0"[(x >> 32) as usize % 18];
        let _ = CpioReader::read_all(&b[..b.len() - (x as usize >> 40) % 8]);
    }
}

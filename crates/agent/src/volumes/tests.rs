use super::*;
use hearth_agent_proto::v1::FileEntry;
use std::os::unix::fs::MetadataExt;

fn entry(path: &str, kind: Kind, mode: u32) -> FileEntry {
    FileEntry {
        path: path.into(),
        kind: Some(kind),
        mode,
        uid: 0,
        gid: 0,
    }
}
fn dir(p: &str) -> FileEntry {
    entry(p, Kind::Directory(true), 0o755)
}
fn file(p: &str, data: &str) -> FileEntry {
    entry(p, Kind::File(data.as_bytes().to_vec()), 0o644)
}
fn link(p: &str, t: &str) -> FileEntry {
    entry(p, Kind::Symlink(t.into()), 0o777)
}

/// A configMap as the kubelet's atomic writer lays it out.
fn kubelet_tree(ts: &str, value: &str) -> Vec<FileEntry> {
    let mut e = vec![
        dir(ts),
        file(&format!("{ts}/key"), value),
        link("..data", ts),
        link("key", "..data/key"),
    ];
    e[1].mode = 0o440;
    e[1].gid = 2000;
    e
}

fn sync(v: &Volumes, name: &str, entries: Vec<FileEntry>) -> Result<(), VolumeError> {
    v.sync(&SyncVolumeRequest {
        name: name.into(),
        entries,
        root_mode: 0o1777,
    })
}

fn names(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn volumes() -> (tempfile::TempDir, Volumes) {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("scratch")).unwrap();
    let v = Volumes::with_dirs(t.path().join("volumes"), t.path().join("scratch/volumes"));
    (t, v)
}

#[test]
fn the_atomic_swap_is_replayed_and_leaves_no_stale_dir() {
    let (t, v) = volumes();
    sync(&v, "cm-1", kubelet_tree("..2026_01", "one")).unwrap();
    let root = t.path().join("volumes/cm-1");
    assert_eq!(std::fs::read_to_string(root.join("key")).unwrap(), "one");
    let meta = std::fs::metadata(root.join("..2026_01/key")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o440);
    assert_eq!(meta.gid(), 2000);
    assert_eq!(std::fs::metadata(&root).unwrap().mode() & 0o7777, 0o1777);
    sync(&v, "cm-1", kubelet_tree("..2026_02", "two")).unwrap();
    assert_eq!(std::fs::read_to_string(root.join("key")).unwrap(), "two");
    assert_eq!(names(&root), ["..2026_02", "..data", "key"]);
    // Same tree again: nothing changes, nothing breaks.
    sync(&v, "cm-1", kubelet_tree("..2026_02", "two")).unwrap();
    assert_eq!(names(&root), ["..2026_02", "..data", "key"]);
    // A key removed, a nested one added.
    let mut tree = kubelet_tree("..2026_03", "three");
    tree.truncate(3);
    tree.insert(1, dir("..2026_03/sub"));
    tree.insert(2, file("..2026_03/sub/deep", "d"));
    tree.push(link("sub", "..data/sub"));
    sync(&v, "cm-1", tree).unwrap();
    assert_eq!(names(&root), ["..2026_03", "..data", "sub"]);
    assert_eq!(std::fs::read_to_string(root.join("sub/deep")).unwrap(), "d");
    v.remove("cm-1").unwrap();
    assert!(!root.exists());
    v.remove("cm-1").unwrap();
}

#[test]
fn hostile_trees_are_refused() {
    let (t, v) = volumes();
    for bad in [
        vec![file("../x", "a")],
        vec![file("/etc/x", "a")],
        vec![file("a/./b", "a")],
        vec![file("a//b", "a")],
        vec![file("", "a")],
        vec![file("nodir/x", "a")],
        vec![file("x", "a"), file("x", "b")],
        vec![link("l", "")],
        vec![file(".hearth-sync-x", "a")],
        vec![FileEntry {
            path: "k".into(),
            ..Default::default()
        }],
    ] {
        let e = sync(&v, "bad", bad.clone()).unwrap_err();
        assert!(matches!(e, VolumeError::Invalid { .. }), "{bad:?}: {e}");
    }
    for name in ["", "UP", "a/b", "..", &"x".repeat(65)] {
        assert!(sync(&v, name, vec![]).is_err(), "{name}");
    }
    // A symlink in the tree is never followed while writing: a file
    // "through" it lands nowhere outside.
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    sync(&v, "v", vec![link("esc", outside.to_str().unwrap())]).unwrap();
    let e = sync(
        &v,
        "v",
        vec![
            link("esc", outside.to_str().unwrap()),
            file("esc/pwned", "x"),
        ],
    )
    .unwrap_err();
    assert!(matches!(e, VolumeError::Invalid { .. }), "{e}");
    // A directory entry over the symlink replaces the link, not the
    // target.
    sync(&v, "v", vec![dir("esc"), file("esc/f", "x")]).unwrap();
    assert!(names(&outside).is_empty());
    assert!(std::fs::symlink_metadata(t.path().join("volumes/v/esc"))
        .unwrap()
        .is_dir());
    // Reading through a symlink is refused too.
    sync(&v, "v", vec![link("l", "/etc/passwd")]).unwrap();
    let e = v
        .read_file(&ReadVolumeFileRequest {
            name: "v".into(),
            path: "l".into(),
            max_bytes: 10,
        })
        .unwrap_err();
    assert!(matches!(e, VolumeError::NotFound(_)), "{e}");
    // A sub_path cannot lead out through a symlink.
    assert!(v.source("v", "l").is_err());
    assert!(v.source("v", "../v").is_err());
    // Modes are masked.
    let mut f = file("m", "x");
    f.mode = 0o170777;
    sync(&v, "v", vec![f]).unwrap();
    let m = std::fs::metadata(t.path().join("volumes/v/m")).unwrap();
    assert_eq!(m.mode() & 0o170000, 0o100000);
}

#[test]
fn empty_dirs_live_on_scratch_and_files_read_back() {
    let (t, v) = volumes();
    let req = CreateEmptyDirRequest {
        name: "ed-1".into(),
        tmpfs_size_bytes: 0,
        memory: false,
    };
    v.create_empty_dir(&req).unwrap();
    v.create_empty_dir(&req).unwrap();
    let src = v.source("ed-1", "").unwrap();
    std::fs::write(src.join("f"), "hello world").unwrap();
    assert!(t.path().join("scratch/volumes/ed-1/f").exists());
    let mode = std::fs::metadata(t.path().join("scratch/volumes/ed-1"))
        .unwrap()
        .mode();
    assert_eq!(mode & 0o777, 0o777);
    let r = v
        .read_file(&ReadVolumeFileRequest {
            name: "ed-1".into(),
            path: "f".into(),
            max_bytes: 5,
        })
        .unwrap();
    assert_eq!((r.data.as_slice(), r.truncated), (&b"hello"[..], true));
    let r = v
        .read_file(&ReadVolumeFileRequest {
            name: "ed-1".into(),
            path: "f".into(),
            max_bytes: 0,
        })
        .unwrap();
    assert_eq!(
        (r.data.as_slice(), r.truncated),
        (&b"hello world"[..], false)
    );
    assert!(v.source("ed-1", "f").unwrap().ends_with("ed-1/f"));
    // A sync cannot turn an emptyDir into a synced volume.
    assert!(sync(&v, "ed-1", vec![]).is_err());
    v.remove("ed-1").unwrap();
    assert!(!t.path().join("scratch/volumes/ed-1").exists());
    assert!(!t.path().join("volumes/ed-1").exists());
    assert!(matches!(
        v.source("ed-1", ""),
        Err(VolumeError::NotFound(_))
    ));
}

#[test]
fn memory_empty_dirs_are_tmpfs_of_the_size_asked() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to mount a tmpfs");
        return;
    }
    let (t, v) = volumes();
    v.create_empty_dir(&CreateEmptyDirRequest {
        name: "mem".into(),
        tmpfs_size_bytes: 4 << 20,
        memory: true,
    })
    .unwrap();
    let p = t.path().join("volumes/mem");
    let st = nix::sys::statfs::statfs(&p).unwrap();
    assert_eq!(st.filesystem_type(), nix::sys::statfs::TMPFS_MAGIC);
    assert_eq!(st.blocks() * st.block_size() as u64, 4 << 20);
    v.remove("mem").unwrap();
    assert!(!p.exists());
}

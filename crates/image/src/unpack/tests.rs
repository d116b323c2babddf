use super::*;

enum E<'a> {
    File(&'a str, &'a [u8]),
    Dir(&'a str),
    Sym(&'a str, &'a str),
    Hard(&'a str, &'a str),
    Char(&'a str),
}

/// Builds a plain tar, writing names raw (the tar crate refuses `..` itself).
fn layer(dir: &Path, name: &str, entries: &[E<'_>]) -> LayerFile {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        let (path, kind, data, link): (&str, EntryType, &[u8], Option<&str>) = match e {
            E::File(p, d) => (p, EntryType::Regular, d, None),
            E::Dir(p) => (p, EntryType::Directory, b"", None),
            E::Sym(p, t) => (p, EntryType::Symlink, b"", Some(t)),
            E::Hard(p, t) => (p, EntryType::Link, b"", Some(t)),
            E::Char(p) => (p, EntryType::Char, b"", None),
        };
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(t) = link {
            h.as_old_mut().linkname[..t.len()].copy_from_slice(t.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind == EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    let p = dir.join(name);
    std::fs::write(&p, b.into_inner().unwrap()).unwrap();
    LayerFile {
        digest: format!("test:{name}"),
        path: p,
        diff_id: None,
    }
}

const OPTS: UnpackOptions = UnpackOptions {
    allow_device_nodes: false,
    chown: false,
};

#[test]
fn whiteouts_opaque_and_links() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fs::create_dir(&root).unwrap();
    let l1 = layer(
        t.path(),
        "l1",
        &[
            E::Dir("etc/"),
            E::File("etc/a", b"a"),
            E::File("etc/b", b"b"),
            E::Dir("opq/"),
            E::File("opq/old", b"old"),
            E::Sym("usr-link", "/usr"),
            E::Dir("usr/"),
        ],
    );
    let l2 = layer(
        t.path(),
        "l2",
        &[
            E::File("etc/.wh.a", b""),
            E::File("opq/new", b"new"),
            E::File("opq/.wh..wh..opq", b""),
            E::Hard("etc/b2", "etc/b"),
            E::File("usr-link/viasym", b"v"),
            E::File("nodir/.wh.x", b""),
        ],
    );
    apply_layer(&root, &l1, OPTS).unwrap();
    apply_layer(&root, &l2, OPTS).unwrap();
    assert!(!root.join("etc/a").exists());
    assert!(!root.join("nodir").exists(), "a whiteout creates nothing");
    assert!(root.join("etc/b").exists());
    assert!(!root.join("opq/old").exists());
    assert_eq!(fs::read(root.join("opq/new")).unwrap(), b"new");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::metadata(root.join("etc/b")).unwrap().ino(),
        fs::metadata(root.join("etc/b2")).unwrap().ino()
    );
    // An absolute symlink used as a parent resolves inside the root.
    assert_eq!(fs::read(root.join("usr/viasym")).unwrap(), b"v");
}

#[test]
fn refuses_traversal_and_escapes() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fs::create_dir(&root).unwrap();
    for (name, entries) in [
        ("dotdot", vec![E::File("../evil", b"x")]),
        ("abs", vec![E::File("/evil", b"x")]),
        (
            "symesc",
            vec![E::Sym("esc", "../../.."), E::File("esc/evil", b"x")],
        ),
        ("hardesc", vec![E::Hard("h", "../../etc/passwd")]),
    ] {
        let l = layer(t.path(), name, &entries);
        let err = apply_layer(&root, &l, OPTS).unwrap_err();
        assert!(
            matches!(&err, ImageError::UnsafeLayerPath { layer, .. } if layer == &format!("test:{name}")),
            "{name}: {err}"
        );
    }
    assert!(!t.path().join("evil").exists());
}

#[test]
fn device_nodes_need_permission() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fs::create_dir(&root).unwrap();
    let l = layer(t.path(), "dev", &[E::Char("dev/null")]);
    let err = apply_layer(&root, &l, OPTS).unwrap_err();
    assert!(
        matches!(err, ImageError::DeviceNodeNotAllowed { ref path, .. } if path == "dev/null"),
        "{err}"
    );
}

#[test]
fn diff_id_is_checked() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fs::create_dir(&root).unwrap();
    let mut l = layer(t.path(), "x", &[E::File("f", b"x")]);
    l.diff_id = Some(crate::content::sha256_digest(b"other"));
    assert!(matches!(
        apply_layer(&root, &l, OPTS),
        Err(ImageError::DiffIdMismatch { .. })
    ));
    l.diff_id = Some(crate::content::sha256_digest(&fs::read(&l.path).unwrap()));
    apply_layer(&root, &l, OPTS).unwrap();
}

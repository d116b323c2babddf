use super::*;
use std::os::unix::fs::PermissionsExt;

fn policy() -> VolumePolicy {
    VolumePolicy {
        kubelet_root_dir: "/var/lib/kubelet".into(),
        host_path_allow_list: vec!["/srv/shared".into()],
        ..VolumePolicy::default()
    }
}

fn mount(host: &str) -> MountConfig {
    MountConfig {
        container_path: "/data".into(),
        host_path: host.into(),
        read_only: false,
    }
}

#[test]
fn subpaths_pass_only_for_volumes_that_are_copied() {
    let dir = tempfile::tempdir().unwrap();
    let policy = VolumePolicy {
        kubelet_root_dir: dir.path().to_owned(),
        ..VolumePolicy::default()
    };
    let pod = dir.path().join("pods/u1");
    for v in [
        "kubernetes.io~configmap/cfg",
        "kubernetes.io~empty-dir/cache",
    ] {
        std::fs::create_dir_all(pod.join("volumes").join(v)).unwrap();
    }
    let sub = |vol: &str| {
        mount(
            &pod.join(format!("volume-subpaths/{vol}/app/0"))
                .to_string_lossy(),
        )
    };
    assert_eq!(
        classify(&policy, "u1", &sub("cfg")).unwrap(),
        VolumeKind::Once
    );
    let e = classify(&policy, "u1", &sub("cache"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("subPath of the emptyDir cache"), "{e}");
    // A hostPath volume has no directory under volumes/: refused.
    let e = classify(&policy, "u1", &sub("host"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("hostPath"), "{e}");
}

#[test]
fn allow_listed_prefixes_are_compared_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir_all(shared.join("models")).unwrap();
    std::os::unix::fs::symlink("/etc", shared.join("escape")).unwrap();
    let policy = VolumePolicy {
        kubelet_root_dir: dir.path().join("kubelet"),
        host_path_allow_list: vec![shared.clone()],
        ..VolumePolicy::default()
    };
    let m = |p: &std::path::Path| mount(&p.to_string_lossy());
    assert_eq!(
        classify(&policy, "u1", &m(&shared.join("models"))).unwrap(),
        VolumeKind::Once
    );
    let e = classify(&policy, "u1", &m(&shared.join("escape")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("host_path_allow_list"), "{e}");
}

#[test]
fn classification_table() {
    use VolumeKind::*;
    let pod = "/var/lib/kubelet/pods/u1";
    let ok: &[(&str, VolumeKind)] = &[
        ("/volumes/kubernetes.io~secret/token", Synced),
        ("/volumes/kubernetes.io~configmap/cfg", Synced),
        ("/volumes/kubernetes.io~projected/kube-api-access-x", Synced),
        ("/volumes/kubernetes.io~downward-api/info", Synced),
        ("/volumes/kubernetes.io~empty-dir/cache", EmptyDir),
        ("/etc-hosts", Once),
        ("/containers/app/0a1b2c3d", TerminationLog),
    ];
    for (rel, kind) in ok {
        let m = mount(&format!("{pod}{rel}"));
        assert_eq!(classify(&policy(), "u1", &m).unwrap(), *kind, "{rel}");
    }
    assert_eq!(
        classify(&policy(), "u1", &mount("/srv/shared/models")).unwrap(),
        Once
    );
    let refused: &[(&str, &str)] = &[
        ("/etc", "host_path_allow_list"),
        ("/srv/sharedx", "host_path_allow_list"),
        (
            "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~csi/pv",
            "cannot reach",
        ),
        (
            "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~secret",
            "cannot reach",
        ),
        (
            "/var/lib/kubelet/pods/u1/volumes/kubernetes.io~secret/a/b",
            "cannot reach",
        ),
        (
            "/var/lib/kubelet/pods/u2/volumes/kubernetes.io~secret/t",
            "another pod",
        ),
        ("/var/lib/kubelet/plugins/x", "cannot reach"),
    ];
    for (host, why) in refused {
        let e = classify(&policy(), "u1", &mount(host)).unwrap_err();
        assert!(
            matches!(e, RuntimeError::FailedPrecondition(_)),
            "{host}: {e}"
        );
        let msg = e.to_string();
        assert!(msg.contains(host) && msg.contains(why), "{host}: {msg}");
    }
    for host in ["relative/x", "/var/lib/kubelet/pods/u1/../u2/etc-hosts"] {
        let e = classify(&policy(), "u1", &mount(host)).unwrap_err();
        assert!(matches!(e, RuntimeError::InvalidArgument(_)), "{host}: {e}");
    }
    let mut m = mount("/var/lib/kubelet/pods/u1/etc-hosts");
    m.container_path = "etc/hosts".into();
    assert!(classify(&policy(), "u1", &m).is_err());
}

#[test]
fn names_are_stable_and_shared_per_host_path() {
    let p = Path::new("/var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/cache");
    let a = volume_name(VolumeKind::EmptyDir, p);
    assert_eq!(a, volume_name(VolumeKind::EmptyDir, p));
    assert!(a.starts_with("ed-") && a.len() == 19, "{a}");
    assert!(a
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
    assert_ne!(
        a,
        volume_name(VolumeKind::EmptyDir, &p.with_file_name("other"))
    );
    // FNV-1a of "" and "a": fixed for ever (a restart must find the name).
    assert_eq!(fnv64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv64(b"a"), 0xaf63_dc4c_8601_ec8c);
}

#[test]
fn mountinfo_sizes() {
    let info = "\
22 1 0:20 / /run rw,nosuid shared:5 - tmpfs tmpfs rw,size=1000k,mode=755
90 22 0:50 / /var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/m\\040x rw - tmpfs tmpfs rw,size=65536k
91 22 0:51 / /big rw - tmpfs tmpfs rw,size=2g
92 22 0:52 / /nosize rw - tmpfs tmpfs rw
93 22 0:53 / /ext rw - ext4 /dev/sda rw
";
    let p = Path::new("/var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/m x");
    assert_eq!(tmpfs_size_in_mountinfo(info, p), Some(64 << 20));
    assert_eq!(
        tmpfs_size_in_mountinfo(info, Path::new("/big")),
        Some(2 << 30)
    );
    assert_eq!(tmpfs_size_in_mountinfo(info, Path::new("/nosize")), Some(0));
    assert_eq!(tmpfs_size_in_mountinfo(info, Path::new("/ext")), None);
    assert_eq!(tmpfs_size_in_mountinfo(info, Path::new("/run/x")), None);
}

/// A configMap laid out as the kubelet's atomic writer does.
fn kubelet_configmap(dir: &Path, ts: &str, value: &str) {
    std::fs::create_dir_all(dir.join(ts)).unwrap();
    std::fs::write(dir.join(ts).join("key"), value).unwrap();
    std::fs::set_permissions(dir.join(ts).join("key"), PermissionsExt::from_mode(0o640)).unwrap();
    let _ = std::fs::remove_file(dir.join("..data_tmp"));
    std::os::unix::fs::symlink(ts, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    if !dir.join("key").exists() {
        std::os::unix::fs::symlink("..data/key", dir.join("key")).unwrap();
    }
}

#[test]
fn the_walk_sends_the_kubelet_layout_as_is() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("cm");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, PermissionsExt::from_mode(0o1777)).unwrap();
    kubelet_configmap(&dir, "..2026_11_28_10_00_00.1", "v1");
    // A symlink out of the tree is sent as a symlink, never followed.
    std::os::unix::fs::symlink("/etc/shadow", dir.join("evil")).unwrap();
    let tree = walk(&dir, 1 << 20).unwrap();
    assert_eq!(tree.root_mode, 0o1777);
    let shape: Vec<(&str, String)> = tree
        .entries
        .iter()
        .map(|e| {
            let k = match e.kind.as_ref().unwrap() {
                Kind::Directory(_) => "dir".to_string(),
                Kind::File(d) => format!("file {}", String::from_utf8_lossy(d)),
                Kind::Symlink(t) => format!("-> {t}"),
            };
            (e.path.as_str(), k)
        })
        .collect();
    assert_eq!(
        shape,
        [
            ("..2026_11_28_10_00_00.1", "dir".to_string()),
            ("..2026_11_28_10_00_00.1/key", "file v1".into()),
            ("..data", "-> ..2026_11_28_10_00_00.1".into()),
            ("evil", "-> /etc/shadow".into()),
            ("key", "-> ..data/key".into()),
        ]
    );
    assert_eq!(tree.entries[1].mode, 0o640);
    // Bounded.
    assert!(matches!(walk(&dir, 40), Err(WalkError::TooLarge { .. })));
    // One file.
    let f = dir.join("..2026_11_28_10_00_00.1/key");
    let tree = walk(&f, 1 << 20).unwrap();
    assert_eq!(tree.entries.len(), 1);
    assert_eq!(tree.entries[0].path, FILE_ENTRY);
    // Gone.
    assert!(matches!(
        walk(&t.path().join("nope"), 10),
        Err(WalkError::Io { .. })
    ));
}

#[test]
fn plans_check_the_host() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("kubelet");
    let pod = root.join("pods/u1");
    let ed = pod.join("volumes/kubernetes.io~empty-dir/cache");
    std::fs::create_dir_all(&ed).unwrap();
    std::fs::write(pod.join("etc-hosts"), "127.0.0.1 localhost\n").unwrap();
    let shared = t.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let p = VolumePolicy {
        kubelet_root_dir: root.clone(),
        host_path_allow_list: vec![shared.clone()],
        ..VolumePolicy::default()
    };
    let mounts = [
        mount(ed.to_str().unwrap()),
        MountConfig {
            container_path: "/etc/hosts".into(),
            host_path: pod.join("etc-hosts"),
            read_only: false,
        },
        mount(shared.to_str().unwrap()),
    ];
    let plan = plan(&p, "u1", &mounts).unwrap();
    assert_eq!(plan[0].kind, VolumeKind::EmptyDir);
    assert_eq!(plan[0].sub_path, "");
    assert!(!plan[0].memory, "a plain directory is not medium Memory");
    assert_eq!(plan[1].sub_path, FILE_ENTRY);
    assert!(plan[2].read_only, "allow-listed host paths are read-only");
    let e = super::plan(
        &p,
        "u1",
        &[mount(
            pod.join("volumes/kubernetes.io~secret/gone")
                .to_str()
                .unwrap(),
        )],
    )
    .unwrap_err();
    assert!(e.to_string().contains("kubelet creates it"), "{e}");
    let mounts = container_mounts(&plan);
    assert_eq!(mounts[1].container_path, "/etc/hosts");
    assert_eq!(mounts[1].volume, plan[1].volume);
}

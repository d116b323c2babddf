use super::*;

#[test]
fn account_files_are_regular_files_read_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("passwd");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // A FIFO (nobody writes to it) is not read: no hang.
    assert_eq!(read_account_file(&fifo), "");
    assert_eq!(read_account_file(&dir.path().join("missing")), "");
    let plain = dir.path().join("group");
    std::fs::write(&plain, "root:x:0:\n").unwrap();
    assert_eq!(read_account_file(&plain), "root:x:0:\n");
}

#[test]
fn users_resolve_from_the_containers_files() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("etc")).unwrap();
    fs::write(
        dir.path().join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nuser:x:1000:1001::/home:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("etc/group"),
        "root:x:0:\nusers:x:100:user,other\nwheel:x:10:root\n",
    )
    .unwrap();
    let by_name = UserArgs {
        username: "user".into(),
        ..Default::default()
    };
    assert_eq!(
        resolve_user(&by_name, dir.path()).unwrap(),
        Creds {
            uid: 1000,
            gid: 1001,
            groups: vec![100]
        }
    );
    let by_uid = UserArgs {
        uid: Some(1000),
        gid: Some(5),
        additional_gids: vec![7, 100],
        ..Default::default()
    };
    assert_eq!(
        resolve_user(&by_uid, dir.path()).unwrap(),
        Creds {
            uid: 1000,
            gid: 5,
            groups: vec![100, 7]
        }
    );
    let unknown_uid = UserArgs {
        uid: Some(4242),
        ..Default::default()
    };
    assert_eq!(
        resolve_user(&unknown_uid, dir.path()).unwrap(),
        Creds {
            uid: 4242,
            gid: 0,
            groups: vec![]
        }
    );
    let missing = UserArgs {
        username: "nobody".into(),
        ..Default::default()
    };
    assert!(resolve_user(&missing, dir.path())
        .unwrap_err()
        .contains("\"nobody\" not found"));
}

#[test]
fn specs_round_trip_through_their_file() {
    let dir = tempfile::tempdir().unwrap();
    let spec = InitSpec {
        rootfs: "/r".into(),
        read_only: true,
        mounts: vec![BindMount {
            source: "/run/hearth/volumes/v".into(),
            destination: "/data".into(),
            read_only: true,
        }],
        process: ProcessSpec {
            args: vec!["sh".into()],
            user: UserArgs {
                uid: Some(1),
                additional_gids: vec![3, 4],
                caps: vec![0, 21],
                ..Default::default()
            },
            no_new_privs: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let path = dir.path().join("init.json");
    write_spec(&path, &spec).unwrap();
    let args = init_args(&path);
    assert_eq!(args[0], INIT);
    let back: InitSpec = read_spec(&args[1..]).unwrap();
    assert_eq!(back, spec);
    assert!(read_spec::<InitSpec>(&[]).is_err());
    fs::write(&path, b"{").unwrap();
    assert!(read_spec::<InitSpec>(&args[1..])
        .unwrap_err()
        .contains("malformed spec"));
}

#[test]
fn capability_sets_follow_containerd() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(capability_set(&[], &[]).unwrap(), DEFAULT_CAPS);
    let no_chown = capability_set(&[], &s(&["CAP_CHOWN"])).unwrap();
    assert!(!no_chown.contains(&0) && no_chown.contains(&1));
    assert_eq!(
        capability_set(&s(&["NET_BIND_SERVICE"]), &s(&["ALL"])).unwrap(),
        [10]
    );
    let admin = capability_set(&s(&["cap_sys_admin"]), &[]).unwrap();
    assert!(admin.contains(&21) && admin.contains(&0));
    assert_eq!(
        capability_set(&s(&["ALL"]), &[]).unwrap().len(),
        CAP_NAMES.len()
    );
    // Named drops apply after `add ALL`; `drop ALL` wins over it.
    let all_but_admin = capability_set(&s(&["ALL"]), &s(&["CAP_SYS_ADMIN"])).unwrap();
    assert!(!all_but_admin.contains(&21) && all_but_admin.contains(&0));
    assert!(capability_set(&s(&["ALL"]), &s(&["ALL"]))
        .unwrap()
        .is_empty());
    assert!(
        !DEFAULT_CAPS.contains(&27),
        "no MKNOD without a device cgroup"
    );
    assert!(capability_set(&s(&["CAP_BOGUS"]), &[])
        .unwrap_err()
        .contains("CAP_BOGUS"));
}

#[test]
fn lookup_follows_path() {
    assert_eq!(lookup("/x/y", ""), Some(PathBuf::from("/x/y")));
    assert!(lookup("sh", "/nonexistent:/bin").is_some());
    assert_eq!(lookup("no-such-command-here", "/bin"), None);
}

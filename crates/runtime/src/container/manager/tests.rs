use super::*;

#[test]
fn log_paths_stay_below_the_directory() {
    assert_eq!(
        log_path("/var/log/pods/x", "c/0.log").unwrap(),
        PathBuf::from("/var/log/pods/x/c/0.log")
    );
    assert_eq!(log_path("", "c/0.log").unwrap(), PathBuf::new());
    assert!(log_path("/d", "../x.log").is_err());
    assert!(log_path("/d", "/etc/passwd").is_err());
}

#[test]
fn updates_keep_what_they_do_not_set() {
    let old = super::super::Resources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_bytes: 32 << 20,
        cpuset_cpus: "0".into(),
        unified: [("pids.max".to_string(), "10".to_string())].into(),
        ..Default::default()
    };
    let new = super::super::Resources {
        cpu_quota: 200_000,
        memory_limit_bytes: 64 << 20,
        unified: [("memory.high".to_string(), "1".to_string())].into(),
        ..Default::default()
    };
    let m = merge_resources(old, new);
    assert_eq!(m.cpu_period, 100_000);
    assert_eq!(m.cpu_quota, 200_000);
    assert_eq!(m.cpu_shares, 512);
    assert_eq!(m.memory_limit_bytes, 64 << 20);
    assert_eq!(m.cpuset_cpus, "0");
    assert_eq!(m.unified.len(), 2);
}

#[test]
fn image_names() {
    let id = "sha256:0123456789abcdef0123";
    assert_eq!(image_mountpoint(id), "/run/hearth/images/0123456789ab");
    assert_eq!(image_drive(id), "image-0123456789ab");
}

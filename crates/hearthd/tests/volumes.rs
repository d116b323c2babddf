//! The kubelet's volumes end to end on the namespaces backend (whose agent
//! sees no host path, like a VM's): a kubelet root laid out in a temp dir,
//! secret and configMap volumes updated the way the kubelet's atomic
//! writer does it, emptyDirs shared by two containers (on scratch, and a
//! tmpfs for medium Memory), etc-hosts, a subPath file, the termination
//! message copied back, allow-listed and refused host paths, a volume
//! directory removed under a running container, and nothing left after
//! RemovePodSandbox.

mod common;
#[path = "common/containers.rs"]
mod ctr;
#[path = "common/kubelet.rs"]
mod kubelet;
#[path = "../../image/tests/common/mod.rs"]
mod registry;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use ctr::*;
use k8s_cri::v1 as cri;
use tonic::Code;

/// `sh -c script` in the container: (exit code, stdout + stderr).
async fn sh(c: &mut Client, id: &str, script: &str) -> (i32, String) {
    // The image links only a few applets: the rest through busybox.
    let script = format!(
        "for a in cat ls stat grep; do eval \"$a() {{ /bin/busybox $a \\\"\\$@\\\"; }}\"; done; {script}"
    );
    let r = exec(c, id, &["/bin/busybox", "sh", "-c", &script], 10)
        .await
        .unwrap();
    let mut out = String::from_utf8_lossy(&r.stdout).into_owned();
    out.push_str(&String::from_utf8_lossy(&r.stderr));
    (r.exit_code, out)
}

/// Polls `script` until its output is `want`; how long that took.
async fn poll_until(c: &mut Client, id: &str, script: &str, want: &str) -> Duration {
    let t0 = Instant::now();
    loop {
        let (_, out) = sh(c, id, script).await;
        if out == want {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{script}: still {out:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The volumes in the pod's guest (the namespaces backend's agent root is
/// reachable through /proc).
async fn guest_volumes(c: &mut Client, pod_id: &str) -> Vec<String> {
    let pid = agent_pid(c, pod_id).await;
    let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/root/run/hearth/volumes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn create_err(r: Result<String, tonic::Status>) -> tonic::Status {
    match r {
        Ok(id) => panic!("CreateContainer succeeded ({id}), expected an error"),
        Err(s) => s,
    }
}

fn mount_tmpfs(dir: &Path, size: &str) -> bool {
    std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_volumes_reach_the_guest() {
    if skip_without_registry("volumes") {
        return;
    }
    let (_reg, image) = registry_with_busybox();
    let mut env = Env::new();
    let root = env.path().join("kubelet");
    let shared = env.path().join("shared");
    env.config.volumes.kubelet_root_dir = root.clone();
    env.config.volumes.host_path_allow_list = vec![shared.clone()];

    // The kubelet's side, before the snapshot (it is not hearthd's).
    let (pod_name, uid) = ("vol", "uid-vol");
    let pod_dir = root.join("pods").join(uid);
    let secret = kubelet::volume_dir(&root, uid, "secret", "token");
    kubelet::write_atomic(&secret, &[("token", "s1")]);
    // fsGroup: the kubelet sets the group and the mode on the host files.
    let data = secret.join(std::fs::read_link(secret.join("..data")).unwrap());
    std::fs::set_permissions(data.join("token"), PermissionsExt::from_mode(0o440)).unwrap();
    std::os::unix::fs::chown(data.join("token"), None, Some(2000)).unwrap();
    let config_map = kubelet::volume_dir(&root, uid, "configmap", "cfg");
    kubelet::write_atomic(&config_map, &[("app.conf", "c1")]);
    let cache = kubelet::volume_dir(&root, uid, "empty-dir", "cache");
    std::fs::create_dir_all(&cache).unwrap();
    let mem = kubelet::volume_dir(&root, uid, "empty-dir", "mem");
    std::fs::create_dir_all(&mem).unwrap();
    assert!(mount_tmpfs(&mem, "8m"), "cannot mount a tmpfs on {mem:?}");
    let _unmount = Unmount(mem.clone());
    std::fs::write(
        pod_dir.join("etc-hosts"),
        "127.0.0.1 localhost\n10.1.2.3 marker-host\n",
    )
    .unwrap();
    let term = pod_dir.join("containers/term/0a1b2c3d");
    std::fs::create_dir_all(term.parent().unwrap()).unwrap();
    std::fs::write(&term, "").unwrap();
    // The kubelet makes it writable by any container user.
    std::fs::set_permissions(&term, PermissionsExt::from_mode(0o666)).unwrap();
    let sub = pod_dir.join("volume-subpaths/cfg/writer/0");
    std::fs::create_dir_all(sub.parent().unwrap()).unwrap();
    std::fs::write(&sub, "sub-content").unwrap();
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("data.txt"), "shared-data").unwrap();
    let outside = root.join("plugins/x");
    std::fs::create_dir_all(&outside).unwrap();
    let big = kubelet::volume_dir(&root, uid, "secret", "big");
    kubelet::write_atomic(&big, &[("blob", &"x".repeat(4 << 20))]);

    let (daemon, mut c) = daemon_with_image(&env, &image).await;
    let before = env.snapshot();
    let (pod_id, pod_config, _) = run_pod_with_logs(&mut c, &env, pod_name, &handler()).await;

    // 1. A container with every supported kind of volume.
    let mut writer = container("writer", &image);
    writer.args = vec![format!("echo hello > /cache/msg; exec sleep {}", marker())];
    writer.mounts = vec![
        mount(&cache, "/cache", false),
        mount(&secret, "/secret", true),
        mount(&config_map, "/config", true),
        mount(&pod_dir.join("etc-hosts"), "/etc/hosts", false),
        mount(&mem, "/mem", false),
        mount(&sub, "/sub.conf", true),
        mount(&shared, "/shared", false),
    ];
    writer.linux = Some(run_as_root());
    let writer_id = create(&mut c, &pod_id, writer.clone(), &pod_config)
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", agent_logs(&env)));
    start(&mut c, &writer_id).await;
    wait_state(&mut c, &writer_id, RUNNING).await;

    let w = writer_id.as_str();
    for (script, want) in [
        ("cat /secret/token", "s1"),
        ("stat -L -c '%a %g' /secret/token", "440 2000\n"),
        ("cat /config/app.conf", "c1"),
        ("cat /sub.conf", "sub-content"),
        ("cat /shared/data.txt", "shared-data"),
    ] {
        assert_eq!(sh(&mut c, w, script).await, (0, want.into()), "{script}");
    }
    let (_, hosts) = sh(&mut c, w, "cat /etc/hosts").await;
    assert!(hosts.contains("10.1.2.3 marker-host"), "{hosts}");
    // Read-only where asked, and for allow-listed host paths always.
    for target in ["/secret/token", "/config/new", "/sub.conf", "/shared/x"] {
        let (code, out) = sh(&mut c, w, &format!("echo x > {target}")).await;
        assert_ne!(code, 0, "{target} is writable: {out}");
    }
    // Memory emptyDir: a tmpfs of the host's size; the other one is not.
    let (_, mounts) = sh(&mut c, w, "cat /proc/mounts").await;
    let line = |at: &str| {
        mounts
            .lines()
            .find(|l| l.split(' ').nth(1) == Some(at))
            .unwrap_or_else(|| panic!("{at} not in {mounts}"))
            .to_owned()
    };
    assert!(
        line("/mem").starts_with("tmpfs ") && line("/mem").contains("size=8192k"),
        "{}",
        line("/mem")
    );
    assert!(!line("/cache").contains(" tmpfs "), "{}", line("/cache"));

    // 2. A second container shares the emptyDir and the secret.
    let mut reader = container("reader", &image);
    reader.args = vec![format!("exec sleep {}", marker())];
    reader.mounts = vec![
        mount(&cache, "/data", false),
        mount(&secret, "/secret", true),
    ];
    let reader_id = create_running(&mut c, &pod_id, reader, &pod_config).await;
    assert_eq!(
        sh(&mut c, &reader_id, "cat /data/msg").await,
        (0, "hello\n".into())
    );
    sh(&mut c, &reader_id, "echo back > /data/reply").await;
    assert_eq!(
        sh(&mut c, w, "cat /cache/reply").await,
        (0, "back\n".into())
    );

    // 3. The kubelet updates the secret and the configMap: the containers
    //    see the new content, and no stale timestamped directory.
    kubelet::write_atomic(&secret, &[("token", "s2")]);
    let took = poll_until(&mut c, w, "cat /secret/token", "s2").await;
    eprintln!("volumes: secret update visible in {took:?}");
    poll_until(&mut c, &reader_id, "cat /secret/token", "s2").await;
    kubelet::write_atomic(&config_map, &[("app.conf", "c2"), ("extra", "e")]);
    poll_until(&mut c, w, "cat /config/app.conf /config/extra", "c2e").await;
    // (The guest may show the kubelet's intermediate state for one
    // debounce; then exactly the host's timestamped directory.)
    for (id, host, dir) in [
        (w, &secret, "/secret"),
        (w, &config_map, "/config"),
        (reader_id.as_str(), &secret, "/secret"),
    ] {
        let ts = std::fs::read_link(host.join("..data")).unwrap();
        let want = format!("{}\n", ts.display());
        poll_until(&mut c, id, &format!("ls -a {dir} | grep '^[.][.]2'"), &want).await;
    }

    // 4. The reader goes; the shared secret stays for the writer, still
    //    synced.
    stop_and_remove(&mut c, &reader_id).await;
    kubelet::write_atomic(&secret, &[("token", "s3")]);
    poll_until(&mut c, w, "cat /secret/token", "s3").await;

    // The writer's seven mounts are seven guest volumes; the reader's were
    // shared and nothing of it is left.
    let writer_volumes = guest_volumes(&mut c, &pod_id).await;
    assert_eq!(writer_volumes.len(), 7, "{writer_volumes:?}");

    // 5. The termination message comes back to the kubelet's file.
    let mut t = container("term", &image);
    t.args = vec!["printf bye > /dev/termination-log".into()];
    t.mounts = vec![mount(&term, "/dev/termination-log", false)];
    let (term_id, s) = run_to_exit(&mut c, &pod_id, t, &pod_config).await;
    assert_eq!(s.exit_code, 0, "{s:?}");
    assert_eq!(std::fs::read_to_string(&term).unwrap(), "bye");
    remove(&mut c, &term_id).await;

    // 6. Refused mounts name the path; nothing is left of them.
    let refused = |host: &Path, at: &str| {
        let mut bad = container("bad", &image);
        bad.mounts = vec![mount(&config_map, "/ok", true), mount(host, at, false)];
        bad
    };
    let cases: Vec<(cri::ContainerConfig, Code, String)> = vec![
        (
            refused(Path::new("/etc"), "/host-etc"),
            Code::FailedPrecondition,
            "/etc".into(),
        ),
        (
            refused(&outside, "/x"),
            Code::FailedPrecondition,
            outside.display().to_string(),
        ),
        (
            refused(&secret.with_file_name("missing"), "/x"),
            Code::FailedPrecondition,
            "kubelet creates it".into(),
        ),
        (
            refused(&big, "/big"),
            Code::FailedPrecondition,
            "more than".into(),
        ),
        (
            {
                let mut b = refused(&cache, "/c");
                b.mounts[1].propagation = cri::MountPropagation::PropagationBidirectional as i32;
                b
            },
            Code::FailedPrecondition,
            "Bidirectional".into(),
        ),
        (
            {
                let mut b = refused(&cache, "/c");
                b.mounts[1].host_path.clear();
                b.mounts[1].image = spec(&image);
                b
            },
            Code::Unimplemented,
            "image".into(),
        ),
    ];
    for (config, code, needle) in cases {
        let s = create_err(create(&mut c, &pod_id, config, &pod_config).await);
        assert_eq!(s.code(), code, "{s:?}");
        assert!(s.message().contains(&needle), "{needle}: {}", s.message());
    }
    // HostToContainer is taken (as private).
    let mut h2c = container("h2c", &image);
    h2c.mounts = vec![mount(&config_map, "/cfg", true)];
    h2c.mounts[0].propagation = cri::MountPropagation::PropagationHostToContainer as i32;
    let h2c_id = create(&mut c, &pod_id, h2c, &pod_config).await.unwrap();
    remove(&mut c, &h2c_id).await;

    // Failed creates (one after syncing /ok) and removed containers left
    // no guest volume.
    assert_eq!(guest_volumes(&mut c, &pod_id).await, writer_volumes);

    // 7. The configMap's directory disappears under the running writer:
    //    hearthd keeps going, the container keeps the last content.
    std::fs::remove_dir_all(&config_map).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sh(&mut c, w, "cat /config/app.conf").await,
        (0, "c2".into())
    );
    kubelet::write_atomic(&secret, &[("token", "s4")]);
    poll_until(&mut c, w, "cat /secret/token", "s4").await;

    // 8. Nothing is left.
    stop_and_remove_pod(&mut c, &pod_id).await.unwrap();
    assert!(marker_processes().is_empty(), "{:?}", marker_processes());
    env.assert_clean(&before);
    // hearthd wrote no host file but the termination message.
    let mut left: Vec<String> = Vec::new();
    for p in [pod_dir.join("containers/term"), shared.clone()] {
        for e in std::fs::read_dir(&p).unwrap() {
            left.push(e.unwrap().file_name().to_string_lossy().into_owned());
        }
    }
    left.sort();
    assert_eq!(left, ["0a1b2c3d", "data.txt"]);
    daemon.shutdown().await;
}

/// Unmounts the test's host tmpfs, also when the test fails.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let dir = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: umount2 with a valid C string.
        unsafe { libc::umount2(dir.as_ptr(), libc::MNT_DETACH) };
    }
}

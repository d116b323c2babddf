//! Container security settings end to end through the CRI on the
//! namespaces backend (real hearthd, real agent, busybox from a registry on
//! 127.0.0.1): seccomp (RuntimeDefault, Localhost profiles, bad profiles),
//! masked and read-only paths, no_new_privs, the pod's pid namespace,
//! privileged containers, AppArmor / SELinux refusals; every pod is removed
//! and nothing may be left behind.

mod common;
#[path = "common/containers.rs"]
mod ctr;
#[path = "../../image/tests/common/mod.rs"]
mod registry;

use common::*;
use ctr::*;
use k8s_cri::v1 as cri;
use tonic::Code;

/// A root container sleeping with this run's marker, with `sc` (its user
/// set to root unless `sc` names one).
fn sleeper(
    name: &str,
    image: &str,
    mut sc: cri::LinuxContainerSecurityContext,
) -> cri::ContainerConfig {
    let mut cfg = sleeping(name, image, marker());
    if sc.run_as_user.is_none() {
        sc.run_as_user = Some(cri::Int64Value { value: 0 });
    }
    cfg.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(sc),
        ..Default::default()
    });
    cfg
}

/// Creates and starts `cfg` in `pod`, waits until it runs.
async fn running(
    c: &mut Client,
    pod: &(String, cri::PodSandboxConfig),
    cfg: cri::ContainerConfig,
) -> String {
    create_running(c, &pod.0, cfg, &pod.1).await
}

/// Runs `script` in container `id` (ExecSync); returns the exit code and
/// stdout + stderr.
async fn sh(c: &mut Client, id: &str, script: &str) -> (i32, String) {
    let r = exec(c, id, &["/bin/busybox", "sh", "-c", script], 10)
        .await
        .unwrap();
    (
        r.exit_code,
        format!(
            "{}{}",
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        ),
    )
}

/// `sh` that must exit 0; returns its trimmed output.
async fn sh_ok(c: &mut Client, id: &str, script: &str) -> String {
    let (code, out) = sh(c, id, script).await;
    assert_eq!(code, 0, "{script}: {out}");
    out.trim().to_owned()
}

async fn run_pod(c: &mut Client, env: &Env, name: &str) -> (String, cri::PodSandboxConfig) {
    let config = pod(name, &env.cgroup_parent);
    let id = run_pod_on(c, &config, &handler()).await;
    (id, config)
}

async fn remove_pod(c: &mut Client, id: &str) {
    c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .unwrap();
}

async fn containers_of(c: &mut Client, pod: &str) -> Vec<cri::Container> {
    let filter = cri::ContainerFilter {
        pod_sandbox_id: pod.into(),
        ..Default::default()
    };
    list_containers(c, filter).await
}

fn seccomp(
    profile_type: cri::security_profile::ProfileType,
    path: &str,
) -> cri::LinuxContainerSecurityContext {
    cri::LinuxContainerSecurityContext {
        seccomp: Some(cri::SecurityProfile {
            profile_type: profile_type as i32,
            localhost_ref: path.into(),
        }),
        ..Default::default()
    }
}

fn pid_mode(mode: cri::NamespaceMode) -> cri::LinuxContainerSecurityContext {
    cri::LinuxContainerSecurityContext {
        namespace_options: Some(cri::NamespaceOption {
            pid: mode as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_security_settings() {
    if skip_without_registry("security") {
        return;
    }
    let (_reg, image) = registry_with_busybox();
    let env = Env::new();
    let (daemon, mut c) = daemon_with_image(&env, &image).await;
    let before = env.snapshot();

    seccomp_profiles(&mut c, &env, &image).await;
    env.assert_clean(&before);
    paths_and_no_new_privs(&mut c, &env, &image).await;
    env.assert_clean(&before);
    pod_pid_namespace(&mut c, &env, &image).await;
    env.assert_clean(&before);
    refusals(&mut c, &env, &image).await;
    env.assert_clean(&before);
    assert_eq!(marker_processes(), Vec::<String>::new());
    drop(c);
    daemon.shutdown().await;

    // Privileged containers when the operator allows them.
    let mut env = env;
    env.config.namespaces.allow_privileged = true;
    let (daemon, mut c) = daemon_with_image(&env, &image).await;
    let before = env.snapshot();
    let pod = run_pod(&mut c, &env, "priv").await;
    let sc = cri::LinuxContainerSecurityContext {
        privileged: true,
        ..Default::default()
    };
    let id = running(&mut c, &pod, sleeper("priv", &image, sc)).await;
    // Every capability there is, i.e. every one this (root) test process
    // has in its bounding set: this host withholds CAP_SYS_RESOURCE.
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let own = own
        .lines()
        .find(|l| l.starts_with("CapBnd:"))
        .unwrap()
        .to_owned();
    let mask = u64::from_str_radix(own.trim_start_matches("CapBnd:").trim(), 16).unwrap();
    assert_ne!(mask & (1 << 21), 0, "this test needs CAP_SYS_ADMIN: {own}");
    let bnd = sh_ok(&mut c, &id, "/bin/busybox grep CapBnd /proc/self/status").await;
    assert_eq!(bnd, own, "agent log: {}", agent_logs(&env));
    let bnd = sh_ok(&mut c, &id, "/bin/busybox grep CapBnd /proc/1/status").await;
    assert_eq!(bnd, own);
    remove_pod(&mut c, &pod.0).await;
    env.assert_clean(&before);
    assert_eq!(marker_processes(), Vec::<String>::new());
    drop(c);
    daemon.shutdown().await;
}

/// The seccomp mode of a container's own process.
const SECCOMP_STATUS: &str = "/bin/busybox grep Seccomp: /proc/1/status";

// The legacy `seccomp_profile_path` string is tested on purpose.
#[allow(deprecated)]
async fn seccomp_profiles(c: &mut Client, env: &Env, image: &str) {
    use cri::security_profile::ProfileType;
    let pod = run_pod(c, env, "seccomp").await;
    let unshare = "/bin/busybox unshare -U /bin/busybox true";

    // Unconfined: an unprivileged user namespace needs no capability.
    let free = running(
        c,
        &pod,
        sleeper("free", image, seccomp(ProfileType::Unconfined, "")),
    )
    .await;
    let (code, out) = sh(c, &free, unshare).await;
    assert_eq!(code, 0, "unshare -U unconfined: {out}");
    assert_eq!(sh_ok(c, &free, SECCOMP_STATUS).await, "Seccomp:\t0");

    // RuntimeDefault: seccomp refuses it; ordinary work runs.
    let conf = running(
        c,
        &pod,
        sleeper("default", image, seccomp(ProfileType::RuntimeDefault, "")),
    )
    .await;
    let (code, out) = sh(c, &conf, unshare).await;
    assert_ne!(code, 0, "unshare -U under RuntimeDefault: {out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    // The container's own process has the filter, not only the exec.
    assert_eq!(sh_ok(c, &conf, SECCOMP_STATUS).await, "Seccomp:\t2");
    let out = sh_ok(
        c,
        &conf,
        "cd /tmp && /bin/busybox mkdir d && echo hi > d/f && /bin/busybox cat d/f \
         && /bin/busybox ls / | /bin/busybox wc -l && /bin/busybox id -u",
    )
    .await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "hi", "{out}");
    assert_eq!(lines[2], "0", "{out}");
    // A run-to-exit container under the same filter.
    let mut once = container("once", image);
    once.command = vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("{unshare} || exit 7"),
    ];
    once.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(seccomp(ProfileType::RuntimeDefault, "")),
        ..Default::default()
    });
    let (_, s) = run_to_exit(c, &pod.0, once, &pod.1).await;
    assert_eq!(s.exit_code, 7, "{s:?}");

    // Localhost: a profile that only denies mkdir.
    let dir = env.path().join("seccomp");
    std::fs::create_dir_all(&dir).unwrap();
    let no_mkdir = dir.join("no-mkdir.json");
    std::fs::write(
        &no_mkdir,
        serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO" }]
        })
        .to_string(),
    )
    .unwrap();
    let local = running(
        c,
        &pod,
        sleeper(
            "local",
            image,
            seccomp(ProfileType::Localhost, no_mkdir.to_str().unwrap()),
        ),
    )
    .await;
    let (code, out) = sh(c, &local, "/bin/busybox mkdir /tmp/nope").await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    sh_ok(c, &local, "echo x > /tmp/file && /bin/busybox rm /tmp/file && /bin/busybox unshare -U /bin/busybox true").await;
    // The legacy string form.
    let mut legacy = sleeper("legacy", image, Default::default());
    legacy
        .linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .seccomp_profile_path = format!("localhost/{}", no_mkdir.display());
    let legacy = running(c, &pod, legacy).await;
    let (code, out) = sh(c, &legacy, "/bin/busybox mkdir /tmp/nope").await;
    assert!(
        code != 0 && out.contains("Operation not permitted"),
        "{out}"
    );

    // Malformed and missing profiles: InvalidArgument, nothing created.
    let before = containers_of(c, &pod.0).await.len();
    let bad = dir.join("bad.json");
    for (name, text, want) in [
        ("garbage", "{ not json", "malformed seccomp profile"),
        (
            "action",
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_SOMETIMES"}]}"#,
            "SCMP_ACT_SOMETIMES",
        ),
    ] {
        std::fs::write(&bad, text).unwrap();
        let e = create(
            c,
            &pod.0,
            sleeper(
                name,
                image,
                seccomp(ProfileType::Localhost, bad.to_str().unwrap()),
            ),
            &pod.1,
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(want), "{e:?}");
    }
    let missing = dir.join("missing.json");
    let e = create(
        c,
        &pod.0,
        sleeper(
            "missing",
            image,
            seccomp(ProfileType::Localhost, missing.to_str().unwrap()),
        ),
        &pod.1,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains(missing.to_str().unwrap()), "{e:?}");
    assert_eq!(containers_of(c, &pod.0).await.len(), before);

    remove_pod(c, &pod.0).await;
}

/// Counts what a container sees in /proc/irq (0 where it is masked).
const IRQ_ENTRIES: &str = "/bin/busybox ls -A /proc/irq | /bin/busybox wc -l";

/// Asserts NoNewPrivs is `want` for the container's own process and an
/// exec's.
async fn assert_no_new_privs(c: &mut Client, id: &str, want: &str) {
    for pid in ["self", "1"] {
        assert_eq!(
            sh_ok(
                c,
                id,
                &format!("/bin/busybox grep NoNewPrivs /proc/{pid}/status")
            )
            .await,
            format!("NoNewPrivs:\t{want}")
        );
    }
}

async fn paths_and_no_new_privs(c: &mut Client, env: &Env, image: &str) {
    let pod = run_pod(c, env, "paths").await;

    // Defaults: /proc/keys is /dev/null, /proc/sys read-only; no
    // no_new_privs unless asked.
    let plain = running(c, &pod, sleeper("plain", image, Default::default())).await;
    assert_eq!(
        sh_ok(
            c,
            &plain,
            "/bin/busybox stat -c %F /proc/keys; /bin/busybox wc -c < /proc/keys"
        )
        .await,
        "character special file\n0"
    );
    let (code, out) = sh(c, &plain, "echo hearth > /proc/sys/kernel/domainname").await;
    assert!(code != 0 && out.contains("Read-only file system"), "{out}");
    assert_no_new_privs(c, &plain, "0").await;

    // Explicit lists replace the defaults.
    let sc = cri::LinuxContainerSecurityContext {
        masked_paths: vec!["/proc/cpuinfo".into(), "/proc/irq".into()],
        readonly_paths: vec!["/tmp".into()],
        no_new_privs: true,
        ..Default::default()
    };
    let listed = running(c, &pod, sleeper("listed", image, sc)).await;
    assert_eq!(
        sh_ok(c, &listed, "/bin/busybox wc -c < /proc/cpuinfo").await,
        "0"
    );
    assert_eq!(sh_ok(c, &listed, IRQ_ENTRIES).await, "0");
    assert_ne!(sh_ok(c, &plain, IRQ_ENTRIES).await, "0");
    let (code, out) = sh(c, &listed, "echo x > /tmp/f").await;
    assert!(code != 0 && out.contains("Read-only file system"), "{out}");
    let keys = sh_ok(c, &listed, "/bin/busybox stat -c %F /proc/keys").await;
    assert!(keys.starts_with("regular"), "{keys}");
    assert_no_new_privs(c, &listed, "1").await;

    remove_pod(c, &pod.0).await;
}

/// `pid args` of every process a container sees (busybox ps).
async fn processes(c: &mut Client, id: &str) -> Vec<(u32, String)> {
    let out = sh_ok(c, id, "/bin/busybox ps -o pid,args").await;
    out.lines()
        .skip(1)
        .map(|l| {
            let l = l.trim();
            let (pid, args) = l.split_once(' ').unwrap_or((l, ""));
            (pid.parse().unwrap(), args.trim().to_owned())
        })
        .collect()
}

async fn pod_pid_namespace(c: &mut Client, env: &Env, image: &str) {
    let pod = run_pod(c, env, "pidns").await;
    let a = running(
        c,
        &pod,
        sleeper("a", image, pid_mode(cri::NamespaceMode::Pod)),
    )
    .await;
    let mut b_cfg = sleeper("b", image, pid_mode(cri::NamespaceMode::Pod));
    b_cfg.command = vec![
        "/bin/busybox".into(),
        "sleep".into(),
        format!("{}.5", marker()),
    ];
    let b = running(c, &pod, b_cfg).await;
    let own = running(
        c,
        &pod,
        sleeper("own", image, pid_mode(cri::NamespaceMode::Container)),
    )
    .await;

    for id in [&a, &b] {
        let ps = processes(c, id).await;
        let one = ps.iter().find(|(pid, _)| *pid == 1);
        assert!(
            one.is_some_and(|(_, args)| args.contains("pod-pause")),
            "PID 1 is not the pod's pause holder: {ps:?}"
        );
        let sleeps: Vec<&String> = ps
            .iter()
            .map(|(_, a)| a)
            .filter(|a| a.contains("sleep"))
            .collect();
        assert_eq!(
            sleeps,
            [
                &format!("/bin/busybox sleep {}", marker()),
                &format!("/bin/busybox sleep {}.5", marker())
            ],
            "{ps:?}"
        );
        for (_, args) in &ps {
            assert!(
                args.contains("pod-pause") || args.contains("sleep") || args.contains("ps -o"),
                "a process a container must not see: {args:?} in {ps:?}"
            );
        }
    }
    let ps = processes(c, &own).await;
    assert_eq!(
        ps[0],
        (1, format!("/bin/busybox sleep {}", marker())),
        "{ps:?}"
    );
    assert!(
        ps.iter()
            .all(|(_, a)| !a.contains("pod-pause") && !a.contains(".5")),
        "{ps:?}"
    );

    // hostPID is refused.
    let e = create(
        c,
        &pod.0,
        sleeper("host", image, pid_mode(cri::NamespaceMode::Node)),
        &pod.1,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    remove_pod(c, &pod.0).await;
}

// The legacy `apparmor_profile` string is tested on purpose.
#[allow(deprecated)]
async fn refusals(c: &mut Client, env: &Env, image: &str) {
    use cri::security_profile::ProfileType;
    let pod = run_pod(c, env, "refused").await;
    let privileged = cri::LinuxContainerSecurityContext {
        privileged: true,
        ..Default::default()
    };
    // Only the namespaces backend refuses them (in a VM they are root in
    // the VM).
    if handler() == "namespaces" {
        let e = create(c, &pod.0, sleeper("priv", image, privileged), &pod.1)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("privileged"), "{e:?}");
        // MKNOD is as good as privileged without a device cgroup.
        for add in ["CAP_MKNOD", "ALL"] {
            let mknod = cri::LinuxContainerSecurityContext {
                capabilities: Some(cri::Capability {
                    add_capabilities: vec![add.into()],
                    ..Default::default()
                }),
                ..Default::default()
            };
            let e = create(c, &pod.0, sleeper("mknod", image, mknod), &pod.1)
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
            assert!(e.message().contains("CAP_MKNOD"), "{e:?}");
        }
    }

    let apparmor = cri::LinuxContainerSecurityContext {
        apparmor: Some(cri::SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: "k8s-profile".into(),
        }),
        ..Default::default()
    };
    let selinux = cri::LinuxContainerSecurityContext {
        selinux_options: Some(cri::SeLinuxOption {
            r#type: "spc_t".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let legacy_apparmor = cri::LinuxContainerSecurityContext {
        apparmor_profile: "localhost/k8s-profile".into(),
        ..Default::default()
    };
    for (what, sc) in [
        ("apparmor", apparmor),
        ("selinux", selinux),
        ("apparmor", legacy_apparmor),
    ] {
        let e = create(c, &pod.0, sleeper(what, image, sc), &pod.1)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().to_lowercase().contains(what), "{e:?}");
    }
    assert!(containers_of(c, &pod.0).await.is_empty());
    remove_pod(c, &pod.0).await;
}

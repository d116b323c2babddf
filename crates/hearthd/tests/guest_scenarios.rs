//! The images, containers, volumes and networking scenarios in a real
//! guest kernel: a pod on a VM handler pulls and runs busybox from a
//! registry on 127.0.0.1, reads a secret the kubelet updates, is OOM-killed
//! under a cgroup v2 memory limit in the guest, logs and execs, and reaches
//! a pod on the same CNI bridge. Nothing is left.
//!
//! Runs on the `qemu` handler (TCG on these machines, so in CI) and on the
//! `firecracker` handler where Firecracker guests can boot (hardware KVM;
//! see the README). Needs what `qemu.rs` / `firecracker.rs` need plus
//! docker-registry, skopeo and mkfs.erofs; prints why it skips otherwise.

mod common;
#[path = "common/containers.rs"]
mod ctr;
#[path = "common/firecracker.rs"]
mod fcenv;
#[path = "common/kubelet.rs"]
mod kubelet;
#[path = "../../image/tests/common/mod.rs"]
mod registry;
#[path = "common/qemu.rs"]
mod vm;

use std::time::{Duration, Instant};

use common::*;
use ctr::*;

/// The pod's IP from its status.
async fn pod_ip(c: &mut Client, id: &str) -> String {
    let status = pod_status(c, id, false).await.status.unwrap();
    status.network.unwrap().ip
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_in_a_qemu_guest() {
    let test = "scenarios_in_a_qemu_guest";
    let Ok(bundle) = vm::prerequisites(test) else {
        return;
    };
    let vmm = Vmm {
        name: "QEMU",
        pid: |state| state["qemu"]["pid"].as_u64(),
    };
    scenarios(
        test,
        vm::qemu_env(&bundle),
        vm::HANDLER,
        &bundle.release,
        vmm,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_in_a_firecracker_guest() {
    let test = "scenarios_in_a_firecracker_guest";
    let Some(fc) = fcenv::prerequisites(test) else {
        return;
    };
    if fcenv::pvm_host() {
        eprintln!(
            "{test}: skipped: /dev/kvm is paravirtual (PVM) here and a stock guest kernel cannot \
             boot; run it on a host with hardware KVM"
        );
        return;
    }
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fc.guest_dir.join("manifest.json")).expect("the guest bundle's manifest"),
    )
    .unwrap();
    let release = manifest["kernel_release"].as_str().unwrap().to_owned();
    let mut env = Env::new();
    env.config.firecracker = fcenv::fc_config(&fc, false);
    env.config.timeouts.boot_ms = 30_000;
    let vmm = Vmm {
        name: "Firecracker",
        pid: |state| state["pid"].as_u64(),
    };
    scenarios(test, env, "firecracker", &release, vmm).await;
}

/// The backend's VMM process: its name in the pod's reason, and where its
/// pid is in PodSandboxStatus' `backendState`.
struct Vmm {
    name: &'static str,
    pid: fn(&serde_json::Value) -> Option<u64>,
}

/// The scenarios on `handler` (a VM backend in `env`, run by `vmm`) whose
/// guest kernel is `release`.
async fn scenarios(test: &str, mut env: Env, handler: &str, release: &str, vmm: Vmm) {
    if skip_without_registry(test) {
        return;
    }
    let (_reg, image) = registry_with_busybox();
    let kubelet_root = env.path().join("kubelet");
    env.config.volumes.kubelet_root_dir = kubelet_root.clone();
    let (daemon, mut c) = daemon_with_image(&env, &image).await;
    let before = env.snapshot();

    // A pod in a VM, with the test's CNI network.
    let t0 = Instant::now();
    let (vm_id, vm_pod, logs) = run_pod_with_logs(&mut c, &env, "guest", handler).await;
    eprintln!("{test}: pod READY in {:?}", t0.elapsed());
    let uid = vm_pod.metadata.as_ref().unwrap().uid.clone();
    let vm_ip = pod_ip(&mut c, &vm_id).await;
    assert!(!vm_ip.is_empty());

    // A container reading a secret, as the kubelet lays it out.
    let secret = kubelet::volume_dir(&kubelet_root, &uid, "secret", "token");
    kubelet::write_atomic(&secret, &[("key", "first")]);
    let mut app = container("app", &image);
    app.command = vec!["/bin/sh".into(), "-c".into()];
    app.args = vec![
        "echo started in $(/bin/busybox uname -r); cat /secret/key; echo; exec sleep 600".into(),
    ];
    // Root, for ping's raw socket (CAP_NET_RAW is in the default set).
    app.linux = Some(run_as_root());
    app.mounts = vec![mount(&secret, "/secret", true)];
    let t1 = Instant::now();
    let app_id = create_and_start(&mut c, &vm_id, app, &vm_pod).await;
    eprintln!(
        "{test}: container created and started in {:?}",
        t1.elapsed()
    );
    // Logs: the guest kernel's release, then the secret.
    let log_file = logs.join("app/0.log");
    let end = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&log_file).unwrap_or_default();
        if text.contains("first") || Instant::now() > end {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        text.contains(&format!("stdout F started in {release}")),
        "{text}"
    );
    assert!(text.contains("stdout F first"), "{text}");
    // ExecSync, and the secret's update reaching the guest.
    wait_output(
        &mut c,
        &app_id,
        &["/bin/busybox", "cat", "/secret/key"],
        "first",
    )
    .await;
    kubelet::write_atomic(&secret, &[("key", "second")]);
    wait_output(
        &mut c,
        &app_id,
        &["/bin/busybox", "cat", "/secret/key"],
        "second",
    )
    .await;
    let r = exec(
        &mut c,
        &app_id,
        &["/bin/busybox", "ls", "-a", "/secret"],
        10,
    )
    .await
    .unwrap();
    let listing = String::from_utf8_lossy(&r.stdout).into_owned();
    assert_eq!(
        listing.lines().filter(|l| l.starts_with("..2026")).count(),
        1,
        "{listing}"
    );

    // A container over its cgroup v2 memory limit is OOM-killed.
    let hog = memory_hog(&image, 32 << 20, 0);
    let (hog_id, _) = run_to_oom(&mut c, &env, &vm_id, hog, &vm_pod).await;
    remove(&mut c, &hog_id).await;

    // A pod on the namespaces handler on the same bridge: the guest
    // reaches it, and it reaches the guest.
    let peer_pod = pod("peer", &env.cgroup_parent);
    let peer_id = run_pod_on(&mut c, &peer_pod, "namespaces").await;
    let peer_ip = pod_ip(&mut c, &peer_id).await;
    let mut peer = sleeping("peer", &image, "600");
    peer.linux = Some(run_as_root());
    let peer_ctr = create_and_start(&mut c, &peer_id, peer, &peer_pod).await;
    for (from, to) in [(&peer_ctr, &vm_ip), (&app_id, &peer_ip)] {
        let r = exec(
            &mut c,
            from,
            &["/bin/busybox", "ping", "-c", "1", "-W", "5", to],
            20,
        )
        .await
        .unwrap();
        assert_eq!(
            r.exit_code,
            0,
            "ping {to}: {} {}",
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        );
    }

    // The VMM dies under a running container: the pod is NOTREADY, the
    // container has exited and says why.
    let (_, before_kill) = info(&mut c, &vm_id).await;
    let pid = (vmm.pid)(&before_kill["backendState"]).expect("the VMM's pid") as i32;
    // SAFETY: kill of the pid the sandbox reports for its VMM.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let s = wait_state(&mut c, &app_id, EXITED).await;
    assert_eq!(s.reason, "Error", "{s:?}");
    assert!(
        s.message.contains("the pod sandbox died") && s.message.contains(vmm.name),
        "{s:?}"
    );
    let (state, after) = info(&mut c, &vm_id).await;
    assert_eq!(state, NOTREADY, "{after}");

    for id in [&vm_id, &peer_id] {
        stop_and_remove_pod(&mut c, id).await.unwrap();
    }
    daemon.shutdown().await;
    env.assert_clean(&before);
}

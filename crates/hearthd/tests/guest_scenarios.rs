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
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

/// The pod's IP from its status.
async fn pod_ip(c: &mut RuntimeServiceClient<Channel>, id: &str) -> String {
    c.pod_sandbox_status(cri::PodSandboxStatusRequest {
        pod_sandbox_id: id.into(),
        verbose: false,
    })
    .await
    .unwrap()
    .into_inner()
    .status
    .unwrap()
    .network
    .unwrap()
    .ip
}

/// A Linux config that runs the container as root.
fn root() -> cri::LinuxContainerConfig {
    cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 0 }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_in_a_qemu_guest() {
    let test = "scenarios_in_a_qemu_guest";
    let Ok(bundle) = vm::prerequisites(test) else {
        return;
    };
    scenarios(test, vm::qemu_env(&bundle), vm::HANDLER, &bundle.release).await;
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
    scenarios(test, env, "firecracker", &release).await;
}

/// The scenarios on `handler` (a VM backend in `env`) whose guest kernel
/// is `release`.
async fn scenarios(test: &str, mut env: Env, handler: &str, release: &str) {
    if let Some(why) = registry::need(&["docker-registry", "skopeo", "mkfs.erofs"], true) {
        eprintln!("{test}: skipped: {why}");
        return;
    }
    let (_reg, image) = registry_with_busybox();
    let kubelet_root = env.path().join("kubelet");
    env.config.volumes.kubelet_root_dir = kubelet_root.clone();
    let daemon = Daemon::start(&env).await;
    let mut images = ImageServiceClient::new(daemon.channel.clone());
    images
        .pull_image(cri::PullImageRequest {
            image: spec(&image),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut c = daemon.client.clone();
    let before = env.snapshot();

    // A pod in a VM, with the test's CNI network.
    let logs = env.path().join("pod-logs");
    let mut vm_pod = pod("guest", &env.cgroup_parent);
    vm_pod.log_directory = logs.to_string_lossy().into_owned();
    let uid = vm_pod.metadata.as_ref().unwrap().uid.clone();
    let t0 = Instant::now();
    let vm_id = c
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(vm_pod.clone()),
            runtime_handler: handler.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    eprintln!("{test}: pod READY in {:?}", t0.elapsed());
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
    app.linux = Some(root());
    app.mounts = vec![cri::Mount {
        container_path: "/secret".into(),
        host_path: secret.to_string_lossy().into_owned(),
        readonly: true,
        ..Default::default()
    }];
    let t1 = Instant::now();
    let app_id = create(&mut c, &vm_id, app, &vm_pod).await.unwrap();
    c.start_container(cri::StartContainerRequest {
        container_id: app_id.clone(),
    })
    .await
    .unwrap();
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
    let mut hog = container("hog", &image);
    hog.command = vec!["/bin/busybox".into(), "tail".into(), "/dev/zero".into()];
    hog.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 32 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let (hog_id, s) = run_to_exit(&mut c, &vm_id, hog, &vm_pod).await;
    assert_eq!(
        (s.reason.as_str(), s.exit_code),
        ("OOMKilled", 137),
        "{s:?}"
    );
    remove(&mut c, &hog_id).await;

    // A pod on the namespaces handler on the same bridge: the guest
    // reaches it, and it reaches the guest.
    let peer_pod = pod("peer", &env.cgroup_parent);
    let peer_id = c
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(peer_pod.clone()),
            runtime_handler: "namespaces".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let peer_ip = pod_ip(&mut c, &peer_id).await;
    let mut peer = container("peer", &image);
    peer.command = vec!["/bin/busybox".into(), "sleep".into(), "600".into()];
    peer.linux = Some(root());
    let peer_ctr = create(&mut c, &peer_id, peer, &peer_pod).await.unwrap();
    c.start_container(cri::StartContainerRequest {
        container_id: peer_ctr.clone(),
    })
    .await
    .unwrap();
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

    for id in [&vm_id, &peer_id] {
        c.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await
        .unwrap();
        c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await
        .unwrap();
    }
    daemon.shutdown().await;
    env.assert_clean(&before);
}

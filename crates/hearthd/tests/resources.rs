//! Container resources end to end on the namespaces backend (this host is
//! cgroup v1): the limits of CreateContainer land in the container's own
//! cgroups under the pod's (read back from the host), a container over its
//! memory limit is OOM-killed and reported `OOMKilled` / 137,
//! UpdateContainerResources changes a running container's limits and is
//! refused for an exited one, and nothing is left after StopPodSandbox +
//! RemovePodSandbox (the kubelet's order: the agent is gone when the
//! containers are removed). The same in a real guest kernel on the qemu
//! backend (TCG here), where the cgroups are v2.

mod common;
#[path = "common/containers.rs"]
mod ctr;
#[path = "../../image/tests/common/mod.rs"]
mod registry;
#[path = "common/qemu.rs"]
mod vm;

use std::path::PathBuf;

use common::*;
use ctr::*;
use k8s_cri::v1 as cri;
use tonic::Code;

/// The host directory of container `id`'s cgroup in the v1 hierarchy that
/// carries `controller` (e.g. `/sys/fs/cgroup/memory/<pod>/containers/<id>`).
fn host_cgroup(pod_cgroup: &str, controller: &str, id: &str) -> PathBuf {
    let hierarchy = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .find(|e| {
            e.file_type().is_ok_and(|t| t.is_dir())
                && e.file_name()
                    .to_string_lossy()
                    .split(',')
                    .any(|c| c == controller)
        })
        .unwrap_or_else(|| panic!("no {controller} hierarchy under /sys/fs/cgroup"))
        .path();
    hierarchy
        .join(pod_cgroup.trim_start_matches('/'))
        .join("containers")
        .join(id)
}

fn read(dir: &std::path::Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
        .trim()
        .to_owned()
}

async fn update(
    c: &mut Client,
    id: &str,
    r: cri::LinuxContainerResources,
) -> Result<(), tonic::Status> {
    c.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: id.into(),
        linux: Some(r),
        ..Default::default()
    })
    .await
    .map(drop)
}

/// The limits both tests give their running container: CPU, memory, pids.
fn sleeper_limits() -> cri::LinuxContainerResources {
    cri::LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_in_bytes: 64 << 20,
        unified: [("pids.max".to_string(), "50".to_string())].into(),
        ..Default::default()
    }
}

/// A memory limit of `bytes`, and the same memory+swap (no swap).
fn memory_limit(bytes: i64) -> cri::LinuxContainerResources {
    cri::LinuxContainerResources {
        memory_limit_in_bytes: bytes,
        memory_swap_limit_in_bytes: bytes,
        ..Default::default()
    }
}

/// UpdateContainerResources of `id` is refused as FailedPrecondition
/// (the container is not running).
async fn assert_not_updatable(c: &mut Client, id: &str) {
    let e = update(
        c,
        id,
        cri::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
}

fn reported(s: &cri::ContainerStatus) -> cri::LinuxContainerResources {
    s.resources
        .as_ref()
        .and_then(|r| r.linux.clone())
        .unwrap_or_else(|| panic!("no resources in the status: {s:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_limits_oom_and_updates() {
    if skip_without_registry("resources") {
        return;
    }
    if !std::path::Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
        eprintln!("resources: skipped: the host has no cgroup v1 memory hierarchy");
        return;
    }
    let (_reg, image) = registry_with_busybox();
    let env = Env::new();
    let (daemon, mut c) = daemon_with_image(&env, &image).await;
    let before = env.snapshot();
    let pod_config = pod("limits", &env.cgroup_parent);
    let pod_cgroup = pod_config.linux.as_ref().unwrap().cgroup_parent.clone();
    let pod_id = run_pod_on(&mut c, &pod_config, &handler()).await;

    // 1. Over its memory limit: the kernel's OOM killer ends it.
    let hog = memory_hog(&image, 32 << 20, 32 << 20);
    let (hog_id, s) = run_to_oom(&mut c, &env, &pod_id, hog, &pod_config).await;
    assert_eq!(reported(&s).memory_limit_in_bytes, 32 << 20);
    let hog_mem = host_cgroup(&pod_cgroup, "memory", &hog_id);
    assert_eq!(
        read(&hog_mem, "memory.limit_in_bytes"),
        (32 << 20).to_string()
    );
    assert!(
        read(&hog_mem, "memory.oom_control").contains("oom_kill 1"),
        "{}",
        read(&hog_mem, "memory.oom_control")
    );
    // A container that exits by itself is not OOMKilled.
    let mut fine = container("fine", &image);
    fine.command = vec!["/bin/sh".into(), "-c".into(), "exit 0".into()];
    let fine = with_resources(
        fine,
        cri::LinuxContainerResources {
            memory_limit_in_bytes: 32 << 20,
            ..Default::default()
        },
    );
    let (fine_id, s) = run_to_exit(&mut c, &pod_id, fine, &pod_config).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"), "{s:?}");

    // Limits this pod's cgroups cannot express fail CreateContainer
    // cleanly, naming the field.
    let mut v2_only = cri::LinuxContainerResources::default();
    v2_only.unified.insert("memory.high".into(), "1".into());
    let e = create(
        &mut c,
        &pod_id,
        with_resources(container("v2only", &image), v2_only),
        &pod_config,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("memory.high"), "{e:?}");

    // 2. The limits of a running container, as the host sees them.
    let limits = cri::LinuxContainerResources {
        memory_swap_limit_in_bytes: 64 << 20,
        ..sleeper_limits()
    };
    let sleeper = with_resources(sleeping("sleeper", &image, "1000"), limits);
    let id = create_running(&mut c, &pod_id, sleeper, &pod_config).await;
    let mem = host_cgroup(&pod_cgroup, "memory", &id);
    let cpu = host_cgroup(&pod_cgroup, "cpu", &id);
    let pids = host_cgroup(&pod_cgroup, "pids", &id);
    assert_eq!(read(&mem, "memory.limit_in_bytes"), (64 << 20).to_string());
    assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "50000");
    assert_eq!(read(&cpu, "cpu.cfs_period_us"), "100000");
    assert_eq!(read(&cpu, "cpu.shares"), "512");
    assert_eq!(read(&pids, "pids.max"), "50");
    // Its process is in them (and so is an exec's, while it runs).
    for dir in [&mem, &cpu, &pids, &host_cgroup(&pod_cgroup, "cpuset", &id)] {
        assert!(
            !read(dir, "cgroup.procs").is_empty(),
            "no process in {}",
            dir.display()
        );
    }
    let r = exec(
        &mut c,
        &id,
        &["/bin/busybox", "cat", "/proc/self/cgroup"],
        5,
    )
    .await
    .unwrap();
    let own = String::from_utf8_lossy(&r.stdout).into_owned();
    assert!(
        own.lines()
            .any(|l| l.contains(":memory:") && l.ends_with(&format!("/containers/{id}"))),
        "{own}"
    );

    // 3. UpdateContainerResources on the running container.
    let more = cri::LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 200_000,
        ..memory_limit(128 << 20)
    };
    update(&mut c, &id, more).await.unwrap();
    assert_eq!(read(&mem, "memory.limit_in_bytes"), (128 << 20).to_string());
    assert_eq!(
        read(&mem, "memory.memsw.limit_in_bytes"),
        (128 << 20).to_string()
    );
    assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "200000");
    assert_eq!(read(&cpu, "cpu.shares"), "512");
    let r = reported(&status(&mut c, &id).await);
    assert_eq!(
        (r.memory_limit_in_bytes, r.cpu_quota, r.cpu_shares),
        (128 << 20, 200_000, 512)
    );
    // And back down (memory+swap then follows the memory limit).
    update(&mut c, &id, memory_limit(48 << 20)).await.unwrap();
    assert_eq!(read(&mem, "memory.limit_in_bytes"), (48 << 20).to_string());
    // Bad input names the field; v2-only files are refused on v1.
    let mut bad = cri::LinuxContainerResources::default();
    bad.unified.insert("../../memory.max".into(), "1".into());
    let e = update(&mut c, &id, bad).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("unified"), "{e:?}");
    let mut v2_only = cri::LinuxContainerResources::default();
    v2_only.unified.insert("memory.high".into(), "1".into());
    let e = update(&mut c, &id, v2_only).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = update(&mut c, "nope", Default::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = c
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // 4. Exited containers cannot be updated.
    assert_not_updatable(&mut c, &hog_id).await;

    // 5. RemoveContainer takes its cgroups away.
    remove(&mut c, &hog_id).await;
    remove(&mut c, &fine_id).await;
    assert!(!hog_mem.exists(), "{} left", hog_mem.display());

    // A container the kubelet never got to remove before the pod stopped:
    // the host removes what the agent left in the pod's cgroup.
    let late = sleeping("late", &image, "1000");
    let late_id = create(&mut c, &pod_id, late, &pod_config).await.unwrap();
    assert!(host_cgroup(&pod_cgroup, "memory", &late_id).is_dir());

    c.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .unwrap();
    assert_not_updatable(&mut c, &id).await;
    c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .unwrap();
    env.assert_clean(&before);

    drop(c);
    daemon.shutdown().await;
}

/// cgroup v2 in a real guest (qemu backend): limits the guest kernel
/// accepts at create and update, a value it refuses, an OOM kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgroup_v2_limits_in_a_qemu_guest() {
    let test = "cgroup_v2_limits_in_a_qemu_guest";
    let Ok(bundle) = vm::prerequisites(test) else {
        return;
    };
    if skip_without_registry(test) {
        return;
    }
    let (_reg, image) = registry_with_busybox();
    let env = vm::qemu_env(&bundle);
    let (daemon, mut c) = daemon_with_image(&env, &image).await;
    let before = env.snapshot();
    let pod_config = pod("cgv2", &env.cgroup_parent);
    let pod_id = run_pod_on(&mut c, &pod_config, vm::HANDLER).await;

    // Limits the guest kernel takes, at create and at update.
    let mut limits = sleeper_limits();
    limits
        .unified
        .insert("memory.high".into(), "60000000".into());
    let sleeper = with_resources(sleeping("sleeper", &image, "600"), limits);
    let id = create(&mut c, &pod_id, sleeper, &pod_config)
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", agent_logs(&env)));
    update(
        &mut c,
        &id,
        cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 100_000,
            memory_limit_in_bytes: 96 << 20,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let r = reported(&status(&mut c, &id).await);
    assert_eq!(
        (r.memory_limit_in_bytes, r.cpu_quota, r.cpu_shares),
        (96 << 20, 100_000, 512)
    );
    // A CPU the guest does not have: the kernel refuses it.
    let e = update(
        &mut c,
        &id,
        cri::LinuxContainerResources {
            cpuset_cpus: "63".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    remove(&mut c, &id).await;

    // Over its memory limit: OOM-killed, seen in memory.events.
    let hog = memory_hog(&image, 32 << 20, 0);
    let (hog_id, _) = run_to_oom(&mut c, &env, &pod_id, hog, &pod_config).await;
    remove(&mut c, &hog_id).await;

    stop_and_remove_pod(&mut c, &pod_id).await.unwrap();
    drop(c);
    daemon.shutdown().await;
    env.assert_clean(&before);
}

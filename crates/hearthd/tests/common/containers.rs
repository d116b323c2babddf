//! Shared helpers of the container end-to-end tests (containers.rs,
//! security.rs, volumes.rs, resources.rs, guest_scenarios.rs,
//! hearthctl_run.rs) and the containers bench: the busybox registry, the
//! image pull, pods with a log directory, container configs, CRI calls and
//! waits. A test file includes it next to `mod common` and `mod registry`:
//!
//! ```ignore
//! mod common;
//! #[path = "../../image/tests/common/mod.rs"]
//! mod registry;
//! #[path = "common/containers.rs"]
//! mod ctr;
//! ```
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::{pod, run_pod_on, Client, Daemon, Env};
use crate::registry::{busybox_layer, tar_of, Comp, Layer, Layout, Registry, E};
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use tonic::transport::Channel;

pub const EXITED: i32 = cri::ContainerState::ContainerExited as i32;

pub const RUNNING: i32 = cri::ContainerState::ContainerRunning as i32;

/// Marks this run's long-running test processes, to find leftovers
/// (a sleep duration unique to this test process).
pub fn marker() -> String {
    (700_000 + std::process::id()).to_string()
}

/// Whether `test` must skip here: it needs root, docker-registry, skopeo
/// and mkfs.erofs (says why when it skips).
pub fn skip_without_registry(test: &str) -> bool {
    if hearth_test_support::skip_unless_root(test) {
        return true;
    }
    if let Some(why) = crate::registry::need(&["docker-registry", "skopeo", "mkfs.erofs"], true) {
        eprintln!("{test}: skipped: {why}");
        return true;
    }
    false
}

/// PullImage of `image` through `channel`; its image ref.
pub async fn pull(channel: &Channel, image: &str) -> String {
    ImageServiceClient::new(channel.clone())
        .pull_image(cri::PullImageRequest {
            image: spec(image),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .image_ref
}

/// Starts hearthd on `env` and pulls `image`; the daemon and a client.
pub async fn daemon_with_image(env: &Env, image: &str) -> (Daemon, Client) {
    let daemon = Daemon::start(env).await;
    pull(&daemon.channel, image).await;
    let c = daemon.client.clone();
    (daemon, c)
}

/// Runs pod `name` on `handler` with its containers logging under
/// `<env>/pod-logs`; returns its id, its config (CreateContainer sends it
/// again) and the log directory.
pub async fn run_pod_with_logs(
    c: &mut Client,
    env: &Env,
    name: &str,
    handler: &str,
) -> (String, cri::PodSandboxConfig, PathBuf) {
    let logs = env.path().join("pod-logs");
    let mut config = pod(name, &env.cgroup_parent);
    config.log_directory = logs.to_string_lossy().into_owned();
    let id = run_pod_on(c, &config, handler).await;
    (id, config, logs)
}

/// `c` with the resources `r`.
pub fn with_resources(
    mut c: cri::ContainerConfig,
    r: cri::LinuxContainerResources,
) -> cri::ContainerConfig {
    c.linux = Some(cri::LinuxContainerConfig {
        resources: Some(r),
        ..Default::default()
    });
    c
}

/// Container `hog`: it eats memory (`tail /dev/zero`) under a limit of
/// `memory` bytes (and `memory_swap` of memory+swap; 0 sets none).
pub fn memory_hog(image: &str, memory: i64, memory_swap: i64) -> cri::ContainerConfig {
    let mut hog = with_resources(
        container("hog", image),
        cri::LinuxContainerResources {
            memory_limit_in_bytes: memory,
            memory_swap_limit_in_bytes: memory_swap,
            ..Default::default()
        },
    );
    hog.command = vec!["/bin/busybox".into(), "tail".into(), "/dev/zero".into()];
    hog
}

/// Runs `hog` to its end and asserts that the OOM killer ended it
/// (137, OOMKilled); its id and status.
pub async fn run_to_oom(
    c: &mut Client,
    env: &Env,
    pod: &str,
    hog: cri::ContainerConfig,
    sandbox: &cri::PodSandboxConfig,
) -> (String, cri::ContainerStatus) {
    let (id, s) = run_to_exit(c, pod, hog, sandbox).await;
    assert_eq!(
        (s.exit_code, s.reason.as_str()),
        (137, "OOMKilled"),
        "{s:?}\n{}",
        agent_logs(env)
    );
    (id, s)
}

/// Container `name` of the test image sleeping `secs` (busybox sleep).
pub fn sleeping(name: &str, image: &str, secs: impl Into<String>) -> cri::ContainerConfig {
    let mut config = container(name, image);
    config.command = vec!["/bin/busybox".into(), "sleep".into(), secs.into()];
    config
}

/// A Linux config that runs the container as root.
pub fn run_as_root() -> cri::LinuxContainerConfig {
    cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 0 }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A bind mount of `host` at `at` in the container.
pub fn mount(host: &std::path::Path, at: &str, readonly: bool) -> cri::Mount {
    cri::Mount {
        container_path: at.into(),
        host_path: host.to_string_lossy().into_owned(),
        readonly,
        ..Default::default()
    }
}

pub fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

pub fn container(name: &str, image: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: spec(image),
        log_path: format!("{name}/0.log"),
        labels: [("container".to_string(), name.to_string())].into(),
        annotations: [("note".to_string(), format!("about {name}"))].into(),
        ..Default::default()
    }
}

pub async fn create(
    c: &mut Client,
    pod: &str,
    config: cri::ContainerConfig,
    sandbox: &cri::PodSandboxConfig,
) -> Result<String, tonic::Status> {
    c.create_container(cri::CreateContainerRequest {
        pod_sandbox_id: pod.into(),
        config: Some(config),
        sandbox_config: Some(sandbox.clone()),
    })
    .await
    .map(|r| r.into_inner().container_id)
}

pub async fn start(c: &mut Client, id: &str) {
    c.start_container(cri::StartContainerRequest {
        container_id: id.into(),
    })
    .await
    .unwrap();
}

/// Creates and starts a container; its id.
pub async fn create_and_start(
    c: &mut Client,
    pod: &str,
    config: cri::ContainerConfig,
    sandbox: &cri::PodSandboxConfig,
) -> String {
    let id = create(c, pod, config, sandbox).await.unwrap();
    start(c, &id).await;
    id
}

/// Creates and starts a container and waits until it runs; its id.
pub async fn create_running(
    c: &mut Client,
    pod: &str,
    config: cri::ContainerConfig,
    sandbox: &cri::PodSandboxConfig,
) -> String {
    let id = create_and_start(c, pod, config, sandbox).await;
    wait_state(c, &id, RUNNING).await;
    id
}

/// Creates and starts a container and waits for it to exit.
pub async fn run_to_exit(
    c: &mut Client,
    pod: &str,
    config: cri::ContainerConfig,
    sandbox: &cri::PodSandboxConfig,
) -> (String, cri::ContainerStatus) {
    let id = create_and_start(c, pod, config, sandbox).await;
    let s = wait_state(c, &id, EXITED).await;
    (id, s)
}

pub async fn remove(c: &mut Client, id: impl Into<String>) {
    c.remove_container(cri::RemoveContainerRequest {
        container_id: id.into(),
    })
    .await
    .unwrap();
}

/// StopContainer at once (no grace period), then RemoveContainer.
pub async fn stop_and_remove(c: &mut Client, id: &str) {
    c.stop_container(cri::StopContainerRequest {
        container_id: id.into(),
        timeout: 0,
    })
    .await
    .unwrap();
    remove(c, id).await;
}

/// The containers ListContainers returns for `filter`.
pub async fn list_containers(c: &mut Client, filter: cri::ContainerFilter) -> Vec<cri::Container> {
    c.list_containers(cri::ListContainersRequest {
        filter: Some(filter),
    })
    .await
    .unwrap()
    .into_inner()
    .containers
}

pub async fn status(c: &mut Client, id: &str) -> cri::ContainerStatus {
    c.container_status(cri::ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    })
    .await
    .unwrap()
    .into_inner()
    .status
    .unwrap()
}

pub async fn wait_state(c: &mut Client, id: &str, state: i32) -> cri::ContainerStatus {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let s = status(c, id).await;
        if s.state == state {
            return s;
        }
        assert!(
            Instant::now() < end,
            "{id} never reached state {state}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn exec(
    c: &mut Client,
    id: &str,
    cmd: &[&str],
    timeout: i64,
) -> Result<cri::ExecSyncResponse, tonic::Status> {
    c.exec_sync(cri::ExecSyncRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout,
    })
    .await
    .map(|r| r.into_inner())
}

/// The agents' logs, for failure messages.
pub fn agent_logs(env: &Env) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(env.config.state.join("sandboxes"))
        .into_iter()
        .flatten()
        .flatten()
    {
        out.push_str(&std::fs::read_to_string(e.path().join("agent.log")).unwrap_or_default());
    }
    out
}

/// A registry on 127.0.0.1 with the busybox test image; its reference.
pub fn registry_with_busybox() -> (Registry, String) {
    let reg = Registry::start(None);
    let mut layout = Layout::new();
    // Entrypoint ["/bin/sh", "-c"], Cmd ["echo hi"], Env PATH=/bin A=b,
    // WorkingDir /work, User 1000, StopSignal SIGINT.
    // A second layer with the applets the test calls by name.
    let applets = tar_of(&[
        E::Dir("bin/"),
        E::Sym("bin/echo", "busybox"),
        E::Sym("bin/sleep", "busybox"),
        E::Dir("tmp/"),
    ]);
    let built = layout.image(
        &[
            Layer::new(busybox_layer(), Comp::Gzip),
            Layer::new(applets, Comp::None),
        ],
        "amd64",
        "1000",
        serde_json::json!({}),
    );
    layout.tag(&built.desc, "v1");
    reg.push(layout.path(), "v1", "demo/busybox", &[]);
    let image = format!("{}/demo/busybox:v1", reg.host());
    (reg, image)
}

/// Processes of this run's marked sleeps still alive.
pub fn marker_processes() -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(&format!("sleep {}", marker())) && !cmd.contains("cargo") {
                out.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
            }
        }
    }
    out
}

/// Polls `cmd` in `id` until its stdout is `want` (a few seconds).
pub async fn wait_output(c: &mut Client, id: &str, cmd: &[&str], want: &str) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let r = exec(c, id, cmd, 10).await.unwrap();
        let out = String::from_utf8_lossy(&r.stdout).into_owned();
        if out == want {
            return;
        }
        assert!(
            Instant::now() < end,
            "{cmd:?} still says {out:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

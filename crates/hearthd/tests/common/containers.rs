//! Shared helpers of the container end-to-end tests (containers.rs,
//! security.rs): the busybox registry, container configs, CRI calls and
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

use std::time::{Duration, Instant};

use crate::common::Env;
use crate::registry::{busybox_layer, tar_of, Comp, Layer, Layout, Registry, E};
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

pub const EXITED: i32 = cri::ContainerState::ContainerExited as i32;

pub const RUNNING: i32 = cri::ContainerState::ContainerRunning as i32;

/// Marks this run's long-running test processes, to find leftovers
/// (a sleep duration unique to this test process).
pub fn marker() -> String {
    (700_000 + std::process::id()).to_string()
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
    c: &mut RuntimeServiceClient<Channel>,
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

/// Creates and starts a container and waits for it to exit.
pub async fn run_to_exit(
    c: &mut RuntimeServiceClient<Channel>,
    pod: &str,
    config: cri::ContainerConfig,
    sandbox: &cri::PodSandboxConfig,
) -> (String, cri::ContainerStatus) {
    let id = create(c, pod, config, sandbox).await.unwrap();
    c.start_container(cri::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    let s = wait_state(c, &id, EXITED).await;
    (id, s)
}

pub async fn remove(c: &mut RuntimeServiceClient<Channel>, id: impl Into<String>) {
    c.remove_container(cri::RemoveContainerRequest {
        container_id: id.into(),
    })
    .await
    .unwrap();
}

pub async fn status(c: &mut RuntimeServiceClient<Channel>, id: &str) -> cri::ContainerStatus {
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

pub async fn wait_state(
    c: &mut RuntimeServiceClient<Channel>,
    id: &str,
    state: i32,
) -> cri::ContainerStatus {
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
    c: &mut RuntimeServiceClient<Channel>,
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
pub async fn wait_output(
    c: &mut RuntimeServiceClient<Channel>,
    id: &str,
    cmd: &[&str],
    want: &str,
) {
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

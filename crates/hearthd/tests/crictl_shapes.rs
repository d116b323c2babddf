//! The request shapes crictl sends for runp, pods, inspectp, stopp and rmp
//! (crictl is not installable here, so they are replayed): crictl's own
//! example pod-config.json, parsed the way crictl parses it (proto field
//! names), and the list filter crictl builds.

mod common;

use common::*;
use k8s_cri::v1 as cri;

/// crictl's documented example (docs/crictl.md), with a cgroup parent.
const CRICTL_POD_JSON: &str = r#"{
    "metadata": {
        "name": "nginx-sandbox",
        "namespace": "default",
        "attempt": 1,
        "uid": "hdishd83djaidwnduwk28bcsb"
    },
    "log_directory": "/tmp",
    "linux": {
    }
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crictl_requests_work_unchanged() {
    if hearth_test_support::skip_unless_root("crictl_shapes") {
        return;
    }
    let env = Env::new();
    let daemon = Daemon::start(&env).await;
    let mut c = daemon.client.clone();

    let v: serde_json::Value = serde_json::from_str(CRICTL_POD_JSON).unwrap();
    let m = &v["metadata"];
    // crictl: runp → RunPodSandbox{config, runtime_handler: ""}, with no
    // hostname (crictl's example sets none; the kubelet always does).
    let config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: m["name"].as_str().unwrap().into(),
            uid: m["uid"].as_str().unwrap().into(),
            namespace: m["namespace"].as_str().unwrap().into(),
            attempt: m["attempt"].as_u64().unwrap() as u32,
        }),
        log_directory: v["log_directory"].as_str().unwrap().into(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: format!("{}/crictl", env.cgroup_parent),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = c
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: handler(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;

    // crictl pods: ListPodSandbox with an empty (non-nil) filter.
    let items = c
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter::default()),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].metadata.as_ref().unwrap().attempt, 1);
    assert_eq!(items[0].state, READY);
    // crictl pods --id <prefix> and inspectp <prefix> (verbose).
    let items = c
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                id: id[..13].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(items.len(), 1);
    let (state, info) = common::info(&mut c, &id[..13]).await;
    assert_eq!(state, READY);
    // No resources sent: the defaults, and the guest overhead.
    assert_eq!(info["vm"]["vcpusSource"], "default_vcpus");
    assert_eq!(
        info["vm"]["memorySource"],
        "default_memory_mib + guest_overhead_mib"
    );
    // No hostname sent: the pod name is used.
    let pid = info["backendState"]["agent_pid"].as_u64().unwrap();
    let hostname = std::fs::read_to_string(format!("/proc/{pid}/root/etc/hostname")).unwrap();
    assert_eq!(hostname.trim(), "nginx-sandbox");
    // crictl stopp / rmp by prefix.
    c.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: id[..13].into(),
    })
    .await
    .unwrap();
    c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: id[..13].into(),
    })
    .await
    .unwrap();
    let items = c
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(items.is_empty());
    drop(c);
    daemon.shutdown().await;
}

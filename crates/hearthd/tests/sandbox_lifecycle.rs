//! End to end through a real CRI client: RunPodSandbox → PodSandboxStatus →
//! ListPodSandbox (each filter, id prefixes) → StopPodSandbox →
//! RemovePodSandbox, with the real agent running, and nothing left after.

mod common;

use std::collections::HashMap;
use std::fs;

use common::*;
use k8s_cri::v1 as cri;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_lifecycle_with_the_real_agent_leaves_nothing() {
    if hearth_test_support::skip_unless_root("sandbox_lifecycle") {
        return;
    }
    let env = Env::new();
    let before = env.snapshot();
    let daemon = Daemon::start(&env).await;
    let mut c = daemon.client.clone();

    let version = c
        .version(cri::VersionRequest {
            version: "v1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(version.runtime_name, "hearth");
    assert_eq!(version.runtime_api_version, "v1");
    let rc = c
        .runtime_config(cri::RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rc.linux.unwrap().cgroup_driver,
        cri::CgroupDriver::Cgroupfs as i32
    );

    let id = c
        .run_pod_sandbox(run_request(pod("web", &env.cgroup_parent)))
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    assert_eq!(id.len(), 64);

    // Status, by a 12-character prefix, with the verbose info.
    let (state, info) = common::info(&mut c, &id[..12]).await;
    assert_eq!(state, READY);
    assert_eq!(info["backend"], "namespaces");
    assert_eq!(info["vm"]["vcpus"], 2, "{info}");
    assert_eq!(info["vm"]["memoryMiB"], 256 + 64, "{info}");
    assert_eq!(
        info["vm"]["vcpusSource"],
        "linux.resources.cpu_quota / cpu_period"
    );
    let pid = info["backendState"]["agent_pid"]
        .as_u64()
        .expect("agent pid") as u32;

    // The agent really runs: PID 1 of its namespace, configured as asked.
    let proc_root = format!("/proc/{pid}/root");
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(
        nspid.trim_end().ends_with("\t1"),
        "agent is not PID 1 of its namespace: {nspid}"
    );
    assert_eq!(
        fs::read_to_string(format!("{proc_root}/etc/hostname"))
            .unwrap()
            .trim(),
        "web-host"
    );
    let uts = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-u", "uname", "-n"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&uts.stdout).trim(), "web-host");
    let resolv = fs::read_to_string(format!("{proc_root}/etc/resolv.conf")).unwrap();
    assert!(resolv.contains("nameserver 10.96.0.10"), "{resolv}");
    assert!(
        resolv.contains("search default.svc.cluster.local"),
        "{resolv}"
    );
    assert!(resolv.contains("options ndots:5"), "{resolv}");
    // Its root holds no host paths.
    for host_dir in ["usr", "home", "var", "bin", "root", "boot"] {
        assert!(
            !std::path::Path::new(&format!("{proc_root}/{host_dir}")).exists(),
            "agent root shows host path /{host_dir}"
        );
    }
    // Every mount point it has is one of the private root's.
    let mountinfo = fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let points: Vec<&str> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .collect();
    for p in &points {
        let top = p.split('/').nth(1).unwrap_or("");
        assert!(
            ["", "proc", "sys", "dev", "run", "tmp"].contains(&top),
            "agent has a mount at {p}:\n{mountinfo}"
        );
    }
    assert!(
        points.contains(&"/run/hearth/scratch"),
        "scratch disk not mounted:\n{mountinfo}"
    );
    // Its process is in the pod's cgroup.
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let want = format!("{}/pod-web", env.cgroup_parent);
    assert!(
        cgroups
            .lines()
            .any(|l| l.contains(":memory:") && l.ends_with(&want))
            || cgroups
                .lines()
                .any(|l| l.starts_with("0::") && l.ends_with(&want)),
        "agent not in {want}:\n{cgroups}"
    );

    // A second pod, to make the filters mean something.
    let id2 = c
        .run_pod_sandbox(run_request(pod("db", &env.cgroup_parent)))
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let lister = c.clone();
    let list = |f: Option<cri::PodSandboxFilter>| {
        let mut c = lister.clone();
        async move {
            let mut ids: Vec<String> = list_pods(&mut c, f)
                .await
                .into_iter()
                .map(|p| p.id)
                .collect();
            ids.sort();
            ids
        }
    };
    let mut both = vec![id.clone(), id2.clone()];
    both.sort();
    assert_eq!(list(None).await, both);
    let by_id = |p: &str| cri::PodSandboxFilter {
        id: p.into(),
        ..Default::default()
    };
    assert_eq!(list(Some(by_id(&id[..8]))).await, vec![id.clone()]);
    assert_eq!(list(Some(by_id(&id2))).await, vec![id2.clone()]);
    let by_label = |v: &str| cri::PodSandboxFilter {
        label_selector: HashMap::from([("app".to_string(), v.to_string())]),
        ..Default::default()
    };
    assert_eq!(list(Some(by_label("db"))).await, vec![id2.clone()]);
    assert!(list(Some(by_label("none"))).await.is_empty());
    let by_state = |s: i32| cri::PodSandboxFilter {
        state: Some(cri::PodSandboxStateValue { state: s }),
        ..Default::default()
    };
    assert_eq!(list(Some(by_state(READY))).await, both);
    assert!(list(Some(by_state(NOTREADY))).await.is_empty());

    // Stop: NOTREADY, the agent gone; a second stop is fine.
    c.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .unwrap();
    assert_eq!(common::info(&mut c, &id).await.0, NOTREADY);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}/root/etc")).exists(),
        "agent still runs after stop"
    );
    c.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: id.clone(),
    })
    .await
    .unwrap();
    assert_eq!(list(Some(by_state(NOTREADY))).await, vec![id.clone()]);
    assert_eq!(list(Some(by_state(READY))).await, vec![id2.clone()]);

    // Remove (the second pod without a stop first), twice.
    for i in [&id, &id, &id2, &id2] {
        c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: i.clone(),
        })
        .await
        .unwrap();
    }
    assert!(list(None).await.is_empty());
    let gone = c
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);

    drop(c);
    drop(lister);
    daemon.shutdown().await;
    let after = env.snapshot();
    assert_eq!(before.leaked(&after), Vec::<String>::new());
    assert!(
        env.leftover_cgroups().is_empty(),
        "cgroups left: {:?}",
        env.leftover_cgroups()
    );
    let records = fs::read_dir(env.config.root.join("sandboxes"))
        .unwrap()
        .count();
    assert_eq!(records, 0, "sandbox records left");
    let run_dirs = fs::read_dir(env.config.state.join("sandboxes"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(run_dirs, 0, "runtime dirs left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_tells_the_truth() {
    if hearth_test_support::skip_unless_root("status_tells_the_truth") {
        return;
    }
    let env = Env::new();
    let daemon = Daemon::start(&env).await;
    let mut c = daemon.client.clone();
    let s = c
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let conds: HashMap<String, (bool, String)> = s
        .status
        .unwrap()
        .conditions
        .into_iter()
        .map(|c| (c.r#type, (c.status, c.reason)))
        .collect();
    // The firecracker handler cannot run here, yet the runtime is ready
    // because the namespaces handler can.
    assert!(conds["RuntimeReady"].0, "{conds:?}");
    assert_eq!(conds["NetworkReady"], (true, String::new()), "{conds:?}");
    let handlers: serde_json::Value = serde_json::from_str(&s.info["runtimeHandlers"]).unwrap();
    assert_eq!(handlers["namespaces"]["usable"], true);
    assert_eq!(handlers["firecracker"]["usable"], false);
    let names: Vec<String> = s.runtime_handlers.into_iter().map(|h| h.name).collect();
    assert_eq!(
        names,
        vec![
            "firecracker".to_string(),
            "namespaces".to_string(),
            "qemu".to_string()
        ]
    );
    // Without a CNI config the network is not ready, and says why.
    let conf = env
        .config
        .network
        .cni_conf_dir
        .join("10-hearth-test.conflist");
    let saved = fs::read(&conf).unwrap();
    fs::remove_file(&conf).unwrap();
    let s = c
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let net = s
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .unwrap();
    assert!(!net.status);
    assert_eq!(net.reason, "NetworkPluginNotReady");
    assert!(
        net.message
            .contains(env.config.network.cni_conf_dir.to_str().unwrap()),
        "{}",
        net.message
    );
    fs::write(&conf, saved).unwrap();
    c.update_runtime_config(cri::UpdateRuntimeConfigRequest {
        runtime_config: Some(cri::RuntimeConfig {
            network_config: Some(cri::NetworkConfig {
                pod_cidr: "10.244.0.0/24".into(),
            }),
        }),
    })
    .await
    .unwrap();
    let s = c
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.info["podCIDR"], "10.244.0.0/24");
    drop(c);
    daemon.shutdown().await;
}

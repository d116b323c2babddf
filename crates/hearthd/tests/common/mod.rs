//! Shared set-up of hearthd's end-to-end tests: a temp-dir hearthd with the
//! real agent, a CRI client, and the leak watch.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use hearth_test_support::leaks::{Snapshot, Watch};
use hearthd::config::Config;
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

/// The runtime handler the scenarios run on (later issues run them on the
/// qemu and firecracker backends too).
pub fn handler() -> String {
    std::env::var("HEARTH_E2E_HANDLER").unwrap_or_else(|_| "namespaces".into())
}

/// CRI runtime service client, as the tests hold it.
pub type Client = RuntimeServiceClient<Channel>;

/// A fresh temp dir named `<prefix>…` and its tag (the dir's own name, for
/// cgroup parents and the like).
pub fn temp_dir(prefix: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    let tag = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    (dir, tag)
}

/// A temp-dir environment for one hearthd.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub cgroup_parent: String,
    /// The test's CNI bridge.
    pub bridge: String,
    /// Its subnet.
    pub subnet: String,
}

impl Env {
    pub fn new() -> Env {
        let (dir, tag) = temp_dir("hearth-e2e");
        let agent = hearth_test_support::agent_binary().expect("agent binary");
        let mut config = Config {
            address: dir.path().join("hearth.sock"),
            root: dir.path().join("root"),
            state: dir.path().join("state"),
            default_runtime_handler: "namespaces".into(),
            ..Config::default()
        };
        config.namespaces.agent_binary = agent;
        config.network.netns_dir = dir.path().join("netns");
        config.scratch.size_mib = 64;
        config.timeouts.boot_ms = 10_000;
        config.cgroups.default_parent = format!("/{tag}");
        // A CNI network of the test's own: a bridge made here (so it is
        // there before any snapshot), host-local IPAM in the temp dir.
        let n = tag
            .bytes()
            .fold(7u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
        let bridge = format!("hb{:08x}", n);
        let subnet = format!("10.{}.{}.0/24", 100 + (n >> 8) % 100, n % 250);
        let conf_dir = dir.path().join("cni");
        std::fs::create_dir_all(&conf_dir).unwrap();
        std::fs::write(
            conf_dir.join("10-hearth-test.conflist"),
            serde_json::json!({
                "cniVersion": "1.0.0",
                "name": format!("hearth-test-{tag}"),
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": bridge,
                        "isGateway": true,
                        "ipMasq": false,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{ "subnet": subnet }]],
                            "dataDir": dir.path().join("ipam"),
                        }
                    },
                    { "type": "portmap", "capabilities": { "portMappings": true }, "snat": true }
                ]
            })
            .to_string(),
        )
        .unwrap();
        let ok = std::process::Command::new("ip")
            .args(["link", "add", "name", &bridge, "type", "bridge"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "cannot create test bridge {bridge}");
        std::process::Command::new("ip")
            .args(["link", "set", &bridge, "up"])
            .status()
            .unwrap();
        config.network.cni_conf_dir = conf_dir;
        config.network.cni_bin_dirs = vec!["/usr/lib/cni".into(), "/opt/cni/bin".into()];

        // The netns directory becomes a shared mount point on first use
        // (as with `ip netns`): a node-level mount made once, not per pod.
        // Make it before any snapshot so it is not counted as a pod's leak.
        let netns = hearth_network::NetnsManager::new(config.network.netns_dir.clone());
        netns.create("probe").unwrap();
        netns.remove("probe").unwrap();
        Env {
            cgroup_parent: format!("/{tag}"),
            bridge,
            subnet,
            dir,
            config,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn watch(&self) -> Watch {
        Watch {
            netns_dirs: vec![self.config.network.netns_dir.clone()],
            process_names: vec![self.path().to_string_lossy().into_owned()],
            paths: vec![self.path().to_path_buf()],
            bridges: vec![self.bridge.clone()],
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot::take(&self.watch())
    }

    /// Writes the config to a file for a hearthd process.
    pub fn write_config(&self) -> PathBuf {
        let p = self.path().join("config.toml");
        std::fs::write(&p, toml::to_string(&self.config).unwrap()).unwrap();
        p
    }

    /// Asserts that nothing the test made is left: mounts, loop devices,
    /// netns, links, processes, fds (against `before`) and cgroups.
    pub fn assert_clean(&self, before: &Snapshot) {
        assert_eq!(before.leaked(&self.snapshot()), Vec::<String>::new());
        let cgroups = self.leftover_cgroups();
        assert!(cgroups.is_empty(), "cgroups left: {cgroups:?}");
    }

    /// Cgroup dirs left under this test's parent, in any v1 hierarchy.
    pub fn leftover_cgroups(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = e.path().join(self.cgroup_parent.trim_start_matches('/'));
            if p.exists() {
                out.push(p);
            }
        }
        let p = Path::new("/sys/fs/cgroup").join(self.cgroup_parent.trim_start_matches('/'));
        if p.exists() && !out.contains(&p) {
            out.push(p);
        }
        out
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let dir =
            std::ffi::CString::new(self.config.network.netns_dir.as_os_str().as_encoded_bytes())
                .unwrap();
        // SAFETY: umount2 with a valid C string.
        unsafe { libc::umount2(dir.as_ptr(), libc::MNT_DETACH) };
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

/// hearthd running in-process.
pub struct Daemon {
    pub client: Client,
    pub channel: Channel,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Daemon {
    pub async fn start(env: &Env) -> Daemon {
        let runtime = hearthd::build(&env.config).await.expect("build");
        let listener = hearthd::bind(&env.config.address).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(hearthd::serve(listener, runtime, async {
            let _ = rx.await;
        }));
        let channel = hearth_test_support::cri_channel(&env.config.address)
            .await
            .unwrap();
        Daemon {
            client: RuntimeServiceClient::new(channel.clone()),
            channel,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub async fn shutdown(mut self) {
        drop(self.client);
        drop(self.channel);
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap().unwrap();
    }
}

/// A pod config as the kubelet sends it.
pub fn pod(name: &str, cgroup_parent: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: format!("{name}-host"),
        log_directory: "/tmp".into(),
        dns_config: Some(cri::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        labels: [("app".to_string(), name.to_string())].into(),
        annotations: [("note".to_string(), "e2e".to_string())].into(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: format!("{cgroup_parent}/pod-{name}"),
            resources: Some(cri::LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 150_000,
                memory_limit_in_bytes: 256 << 20,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn run_request(config: cri::PodSandboxConfig) -> cri::RunPodSandboxRequest {
    cri::RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: handler(),
    }
}

/// RunPodSandbox of `config` on `handler`; the pod's id.
pub async fn run_pod_on(c: &mut Client, config: &cri::PodSandboxConfig, handler: &str) -> String {
    c.run_pod_sandbox(cri::RunPodSandboxRequest {
        config: Some(config.clone()),
        runtime_handler: handler.into(),
    })
    .await
    .unwrap()
    .into_inner()
    .pod_sandbox_id
}

/// StopPodSandbox, then RemovePodSandbox (the kubelet's order).
pub async fn stop_and_remove_pod(c: &mut Client, id: &str) -> Result<(), tonic::Status> {
    c.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await?;
    c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await?;
    Ok(())
}

/// The pods ListPodSandbox returns for `filter`.
pub async fn list_pods(
    c: &mut Client,
    filter: Option<cri::PodSandboxFilter>,
) -> Vec<cri::PodSandbox> {
    c.list_pod_sandbox(cri::ListPodSandboxRequest { filter })
        .await
        .unwrap()
        .into_inner()
        .items
}

/// PodSandboxStatus of `id`.
pub async fn pod_status(c: &mut Client, id: &str, verbose: bool) -> cri::PodSandboxStatusResponse {
    c.pod_sandbox_status(cri::PodSandboxStatusRequest {
        pod_sandbox_id: id.into(),
        verbose,
    })
    .await
    .unwrap()
    .into_inner()
}

/// The `info` JSON of a verbose PodSandboxStatus.
pub async fn info(client: &mut Client, id: &str) -> (i32, serde_json::Value) {
    let r = pod_status(client, id, true).await;
    let info = serde_json::from_str(&r.info["info"]).unwrap();
    (r.status.unwrap().state, info)
}

/// The pod's agent process (namespaces backend), from the verbose info.
pub async fn agent_pid(c: &mut Client, id: &str) -> u32 {
    info(c, id).await.1["backendState"]["agent_pid"]
        .as_u64()
        .unwrap() as u32
}

pub const READY: i32 = cri::PodSandboxState::SandboxReady as i32;
pub const NOTREADY: i32 = cri::PodSandboxState::SandboxNotready as i32;

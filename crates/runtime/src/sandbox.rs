//! The pod sandbox: its domain config, its lifecycle state machine and the
//! record that is persisted before every action.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::backend::BackendHandle;
use crate::id::Id;
use crate::sizing::{Resources, VmSize};

/// Lifecycle of a sandbox. `transition` is the only way to move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxState {
    /// RunPodSandbox is under way (persisted first, so a crash leaves a
    /// record that recovery cleans up).
    Creating,
    /// The agent runs and answered; the pod can run containers.
    Ready,
    /// Stopped, or the agent/VM is gone. Only removal follows.
    NotReady,
}

/// A move that the state machine does not allow.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("sandbox cannot go from {from:?} to {to:?}")]
pub struct IllegalTransition {
    /// Current state.
    pub from: SandboxState,
    /// Requested state.
    pub to: SandboxState,
}

impl SandboxState {
    /// Checks a move and returns the new state.
    pub fn transition(self, to: SandboxState) -> Result<SandboxState, IllegalTransition> {
        use SandboxState::*;
        match (self, to) {
            (Creating, Ready) | (Creating, NotReady) | (Ready, NotReady) | (NotReady, NotReady) => {
                Ok(to)
            }
            _ => Err(IllegalTransition { from: self, to }),
        }
    }
}

/// CRI `PodSandboxMetadata`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Pod name.
    pub name: String,
    /// Pod UID.
    pub uid: String,
    /// Pod namespace.
    pub namespace: String,
    /// Creation attempt.
    pub attempt: u32,
}

impl Metadata {
    /// The key that must be unique among live sandboxes, as containerd's.
    pub fn unique_name(&self) -> String {
        format!(
            "{}_{}_{}_{}",
            self.name, self.namespace, self.uid, self.attempt
        )
    }
}

/// Where a namespace comes from (CRI `NamespaceMode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NamespaceMode {
    /// One namespace for the pod.
    #[default]
    Pod,
    /// One per container.
    Container,
    /// The node's (host's) namespace.
    Node,
    /// Another container's.
    Target,
}

/// CRI `DNSConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    /// Nameservers.
    pub servers: Vec<String>,
    /// Search domains.
    pub searches: Vec<String>,
    /// resolv.conf options.
    pub options: Vec<String>,
}

impl DnsConfig {
    /// The resolv.conf the pod gets.
    pub fn resolv_conf(&self) -> String {
        let mut out = String::new();
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for s in &self.servers {
            out.push_str(&format!("nameserver {s}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// CRI `PortMapping`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// "tcp", "udp" or "sctp".
    pub protocol: String,
    /// Port in the pod.
    pub container_port: i32,
    /// Port on the host (0: none).
    pub host_port: i32,
    /// Host IP to bind (empty: all).
    pub host_ip: String,
}

/// The domain form of a `PodSandboxConfig` (never a prost type).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxConfig {
    /// Identity of the pod.
    pub metadata: Metadata,
    /// Hostname (empty only with the node's network).
    pub hostname: String,
    /// Directory of the containers' logs.
    pub log_directory: String,
    /// DNS settings; `None` means the host's resolv.conf.
    pub dns: Option<DnsConfig>,
    /// Port mappings.
    pub port_mappings: Vec<PortMapping>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// cgroupfs-style parent cgroup.
    pub cgroup_parent: String,
    /// Namespaced sysctls.
    pub sysctls: BTreeMap<String, String>,
    /// Network namespace mode (`Node` = host network).
    pub network: NamespaceMode,
    /// PID namespace mode of the containers.
    pub pid: NamespaceMode,
    /// IPC namespace mode.
    pub ipc: NamespaceMode,
    /// `linux.resources`.
    pub resources: Option<Resources>,
    /// `linux.overhead`.
    pub overhead: Option<Resources>,
}

impl SandboxConfig {
    /// Whether the pod uses the host's network namespace.
    pub fn host_network(&self) -> bool {
        self.network == NamespaceMode::Node
    }
}

/// What is persisted for each sandbox, before every action on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxRecord {
    /// The sandbox id.
    pub id: Id,
    /// Lifecycle state.
    pub state: SandboxState,
    /// Creation time, ns since the epoch.
    pub created_at_ns: i64,
    /// The runtime handler the pod asked for (resolved: never empty).
    pub runtime_handler: String,
    /// The backend kind that runs it.
    pub backend: String,
    /// The pod's config.
    pub config: SandboxConfig,
    /// The computed VM size.
    pub size: VmSize,
    /// The pod's network namespace (absent with the host network).
    pub netns: Option<PathBuf>,
    /// What the CNI plugins set up (absent with the host network).
    #[serde(default)]
    pub network: Option<crate::network::PodNetworkState>,
    /// The scratch disk image.
    pub scratch: Option<PathBuf>,
    /// Cgroup directories Hearth created for the pod (removed at the end).
    pub cgroups_created: Vec<PathBuf>,
    /// The backend's own handle (pids, paths), opaque to the core.
    pub backend_handle: Option<BackendHandle>,
    /// Why the sandbox is NotReady, when it did not stop on request.
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::SandboxState::*;
    use super::*;

    #[test]
    fn legal_moves_only() {
        assert_eq!(Creating.transition(Ready), Ok(Ready));
        assert_eq!(Creating.transition(NotReady), Ok(NotReady));
        assert_eq!(Ready.transition(NotReady), Ok(NotReady));
        assert_eq!(NotReady.transition(NotReady), Ok(NotReady));
        assert!(NotReady.transition(Ready).is_err());
        assert!(Ready.transition(Creating).is_err());
        assert!(Ready.transition(Ready).is_err());
    }

    #[test]
    fn resolv_conf_from_dns_config() {
        let dns = DnsConfig {
            servers: vec!["10.0.0.10".into(), "1.1.1.1".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            dns.resolv_conf(),
            "search default.svc.cluster.local svc.cluster.local\n\
             nameserver 10.0.0.10\nnameserver 1.1.1.1\noptions ndots:5\n"
        );
    }
}

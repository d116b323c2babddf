//! The pod network effect: the pod's named network namespace, and the CNI
//! plugins run into it (ADD at RunPodSandbox, DEL at StopPodSandbox).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::id::Id;
use crate::sandbox::SandboxConfig;

/// A failed network operation; the source says what the network module
/// reported.
#[derive(Debug, thiserror::Error)]
#[error("pod network: {op}")]
pub struct NetworkError {
    /// What was being done, e.g. "creating the network namespace".
    pub op: &'static str,
    /// The cause.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// What the network set up for a pod, persisted with the sandbox.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodNetworkState {
    /// The pod's IPs, primary first (without prefix length).
    pub ips: Vec<String>,
    /// The network module's own record (the CNI result and the exact config
    /// used), needed to undo it; `None` once torn down.
    pub record: Option<serde_json::Value>,
}

/// Creates and removes the pods' network namespaces and networks.
#[async_trait::async_trait]
pub trait PodNetworks: Send + Sync {
    /// Whether pod networks can be set up; the error is the reason shown in
    /// the NetworkReady condition.
    fn ready(&self) -> Result<(), String>;

    /// Creates the pod's named network namespace with loopback up.
    async fn create_netns(&self, id: &Id) -> Result<PathBuf, NetworkError>;

    /// Removes the pod's network namespace. Missing is fine.
    async fn remove_netns(&self, id: &Id) -> Result<(), NetworkError>;

    /// Attaches the pod to the node's network (CNI ADD). On error nothing
    /// it set up is left.
    async fn setup(
        &self,
        id: &Id,
        config: &SandboxConfig,
        netns: &Path,
    ) -> Result<PodNetworkState, NetworkError>;

    /// Detaches the pod (CNI DEL), from the recorded state when there is
    /// one, else from the current config (a run cut short before it could
    /// record). Idempotent; tolerates a missing netns.
    async fn teardown(
        &self,
        id: &Id,
        config: &SandboxConfig,
        state: Option<&PodNetworkState>,
        netns: Option<&Path>,
    ) -> Result<(), NetworkError>;
}

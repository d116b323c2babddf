//! The sandbox backend trait: what runs a pod's guest (a Firecracker VM, a
//! QEMU VM, or the agent in fresh namespaces on the host).
//!
//! The trait is small on purpose (see STYLE.md): boot, drives, the agent
//! connection, stop, destroy, and a liveness probe for recovery. A backend
//! keeps whatever it needs to find its sandbox again in a [`BackendHandle`]
//! that the core persists without reading.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::agent::{AgentClient, AgentError};
use crate::id::Id;
use crate::sizing::VmSize;

/// A backend's persisted state for one sandbox (opaque to the core).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BackendHandle(pub serde_json::Value);

impl BackendHandle {
    /// A handle holding a backend's own state.
    pub fn encode<T: Serialize>(state: &T) -> BackendHandle {
        BackendHandle(serde_json::to_value(state).expect("backend state serializes"))
    }

    /// The backend's own state back from a handle.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, BackendError> {
        serde_json::from_value(self.0.clone()).map_err(|e| BackendError::Handle(e.to_string()))
    }
}

/// The pod's cgroup as the backend needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodCgroupSpec {
    /// The cgroupfs-style parent, e.g. `/kubepods/burstable/pod1234`.
    pub parent: String,
    /// The `cgroup.procs` files a process writes itself into to join it
    /// (one per v1 hierarchy, or one on v2).
    pub procs_files: Vec<PathBuf>,
}

/// What a backend needs to boot one sandbox.
#[derive(Debug, Clone)]
pub struct BootSpec {
    /// Sandbox id.
    pub id: Id,
    /// VM size.
    pub size: VmSize,
    /// The pod's network namespace; `None` for the host network.
    pub netns: Option<PathBuf>,
    /// The pod's cgroup.
    pub cgroup: PodCgroupSpec,
    /// A directory for the sandbox's runtime files (sockets, jail, logs),
    /// created by the core and removed by it after `destroy`.
    pub run_dir: PathBuf,
    /// The pod's scratch disk (made before `boot`), for backends that must
    /// attach it at boot. The core still calls `attach_drive("scratch")`
    /// after the agent answers, to learn how the guest sees it.
    pub scratch: Option<PathBuf>,
    /// The pod's annotations (backend-specific knobs, e.g. the Firecracker
    /// placeholder-drive pool).
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// A block device to give the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drive {
    /// Stable name of the drive within the sandbox, e.g. `scratch`.
    pub id: String,
    /// The backing file on the host.
    pub path: PathBuf,
    /// Read-only for the guest.
    pub read_only: bool,
}

/// How the guest finds a drive the host attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceLocator {
    /// A device number (the namespaces backend's loop devices).
    Number {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A virtio-blk serial.
    Serial(String),
    /// A path in the guest, e.g. `/dev/vdb`.
    Path(String),
}

/// Whether a sandbox found in the store still runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// Its agent process (or VMM) runs.
    Alive,
    /// It is gone; the string says what was found.
    Gone(String),
}

/// Errors of backends.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend cannot run on this host; the string says why and how to
    /// fix it.
    #[error("backend {backend} cannot run here: {reason}")]
    Unavailable {
        /// Backend kind.
        backend: &'static str,
        /// Why, and what to do.
        reason: String,
    },
    /// A process could not be started.
    #[error("starting {what}")]
    Spawn {
        /// What was started.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file operation failed.
    #[error("{path}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The VMM refused the pod's configuration (e.g. a size it cannot
    /// run); the reason is the VMM's own message.
    #[error("{what} refused: {reason}")]
    Refused {
        /// What was refused.
        what: String,
        /// The VMM's message.
        reason: String,
    },
    /// The guest did not come up.
    #[error("agent not ready: {reason}")]
    AgentNotReady {
        /// Deadline passed, process exited, ... with details.
        reason: String,
    },
    /// Talking to the agent failed.
    #[error("agent")]
    Agent(#[from] AgentError),
    /// A drive could not be attached or detached.
    #[error("drive {drive}: {reason}")]
    Drive {
        /// Drive id.
        drive: String,
        /// What went wrong.
        reason: String,
    },
    /// The guest's network card could not be set up or removed (the tap
    /// in the pod's netns).
    #[error("{what}: {reason}")]
    Network {
        /// What was being done.
        what: String,
        /// The network module's error chain.
        reason: String,
    },
    /// The handle read back from the store is not this backend's.
    #[error("corrupt backend handle: {0}")]
    Handle(String),
}

impl BackendError {
    /// Wraps an io error with its path.
    pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackendError + '_ {
        move |source| BackendError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// Runs pod sandboxes. One implementation per backend kind.
#[async_trait::async_trait]
pub trait SandboxBackend: Send + Sync {
    /// The backend's kind, e.g. `namespaces`.
    fn kind(&self) -> &'static str;

    /// Whether this backend can run pods on this host. The error says why
    /// not and how to fix it.
    fn check(&self) -> Result<(), BackendError>;

    /// Whether a pod may share the host's network namespace. A VM has its
    /// own network stack, so only the namespaces backend can.
    fn supports_host_network(&self) -> bool {
        false
    }

    /// Whether privileged containers may run: in a VM they are root in the
    /// guest only; on the namespaces backend they would be root on the
    /// node, so that backend allows them only when configured to.
    fn allows_privileged(&self) -> bool {
        true
    }

    /// Boots the sandbox's guest with its agent. On error nothing the call
    /// started is left behind.
    async fn boot(&self, spec: &BootSpec) -> Result<BackendHandle, BackendError>;

    /// Connects to the sandbox's agent, waiting for it until `deadline`.
    async fn connect_agent(
        &self,
        handle: &BackendHandle,
        deadline: Duration,
    ) -> Result<AgentClient, BackendError>;

    /// Configures the guest's side of what `boot` gave it, once its agent
    /// answers and before the sandbox is set up: the VM backends send the
    /// guest NIC's addresses and routes (`ConfigureNetwork`). Called once
    /// per boot. The default has nothing to configure.
    async fn configure_guest(
        &self,
        _handle: &BackendHandle,
        _agent: &AgentClient,
    ) -> Result<(), BackendError> {
        Ok(())
    }

    /// Gives the guest a drive; returns how the guest finds it. The handle
    /// is updated with what must be undone later.
    async fn attach_drive(
        &self,
        handle: &mut BackendHandle,
        drive: &Drive,
    ) -> Result<DeviceLocator, BackendError>;

    /// Takes a drive away (the guest has unmounted it). Missing is fine.
    async fn detach_drive(
        &self,
        handle: &mut BackendHandle,
        drive_id: &str,
    ) -> Result<(), BackendError>;

    /// Waits up to `timeout` for the guest to end (the core has asked the
    /// agent to shut down), then forces it. Idempotent.
    async fn stop(&self, handle: &BackendHandle, timeout: Duration) -> Result<(), BackendError>;

    /// Frees everything the sandbox holds on the host (processes, drives,
    /// sockets, jail). Idempotent; safe after a crash at any step.
    async fn destroy(&self, handle: &BackendHandle) -> Result<(), BackendError>;

    /// Whether the sandbox still runs (used at start-up and by status).
    fn liveness(&self, handle: &BackendHandle) -> Liveness;

    /// What the running VM reports about itself now (e.g. the VMM's
    /// metrics), for PodSandboxStatus' verbose info. `None`: nothing.
    async fn live_info(&self, _handle: &BackendHandle) -> Option<serde_json::Value> {
        None
    }
}

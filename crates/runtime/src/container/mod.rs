//! Containers: their domain config, the state machine, the persisted
//! record, and [`ContainerManager`], the typed API the CRI front end calls.
//!
//! A container runs inside its pod's guest through the agent. The host
//! attaches the image's erofs file to the sandbox as a read-only drive
//! (once per image per pod), the agent mounts it and builds the rootfs as
//! an overlay on the pod's scratch disk. The host streams the container's
//! stdout/stderr from the agent into the CRI log file ([`cri_log`]).
//!
//! Layout: [`merge`] (image config + CRI config → the process), [`cri_log`]
//! (the CRI log format), `log_stream` (the agent's stream into the log
//! file), [`store`] (records on disk), [`volumes`] (the kubelet's volumes
//! carried into the guest), [`manager`].

pub mod cri_log;
mod log_stream;
pub mod manager;
pub mod merge;
pub mod store;
pub mod volumes;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::id::Id;

pub use manager::{ContainerManager, ExecResult};

/// Lifecycle of a container. `transition` is the only way to move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    /// CreateContainer done; nothing runs.
    Created,
    /// Its process runs.
    Running,
    /// Its process ended (or could not start).
    Exited,
}

/// A move that the container state machine does not allow.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("container cannot go from {from:?} to {to:?}")]
pub struct IllegalContainerTransition {
    /// Current state.
    pub from: ContainerState,
    /// Requested state.
    pub to: ContainerState,
}

impl ContainerState {
    /// Checks a move and returns the new state.
    pub fn transition(
        self,
        to: ContainerState,
    ) -> Result<ContainerState, IllegalContainerTransition> {
        use ContainerState::*;
        match (self, to) {
            (Created, Running) | (Created, Exited) | (Running, Exited) => Ok(to),
            _ => Err(IllegalContainerTransition { from: self, to }),
        }
    }
}

/// The user a container asks for (CRI `LinuxContainerSecurityContext`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSpec {
    /// `run_as_user`.
    pub uid: Option<u32>,
    /// `run_as_username`.
    pub username: String,
    /// `run_as_group`.
    pub gid: Option<u32>,
    /// `supplemental_groups`.
    pub supplemental_groups: Vec<u32>,
}

/// CRI `ContainerConfig`, as far as this slice supports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.attempt`.
    pub attempt: u32,
    /// The image as the kubelet named it.
    pub image: String,
    /// `command` (overrides the image's entrypoint).
    pub command: Vec<String>,
    /// `args` (override the image's cmd).
    pub args: Vec<String>,
    /// `working_dir` (empty: the image's, else `/`).
    pub working_dir: String,
    /// `envs`, in order.
    pub envs: Vec<(String, String)>,
    /// `labels`.
    pub labels: BTreeMap<String, String>,
    /// `annotations`.
    pub annotations: BTreeMap<String, String>,
    /// `log_path`, relative to the sandbox's log directory.
    pub log_path: String,
    /// The user (`None`: the image's).
    pub user: Option<UserSpec>,
    /// `readonly_rootfs`.
    pub read_only_rootfs: bool,
    /// `capabilities` (`None`: the default set).
    #[serde(default)]
    pub capabilities: Option<CapabilityChanges>,
    /// `mounts`, in order.
    #[serde(default)]
    pub mounts: Vec<MountConfig>,
    /// `linux.resources` (`None`: no limits of its own).
    #[serde(default)]
    pub resources: Option<Resources>,
    /// The rest of `linux.security_context`.
    #[serde(default)]
    pub security: SecurityConfig,
    /// `namespace_options.pid == POD`: share the pod's pid namespace.
    #[serde(default)]
    pub pod_pid_namespace: bool,
}

/// CRI `Mount`: a host path (one of the kubelet's volume directories)
/// at a path of the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountConfig {
    /// `container_path`.
    pub container_path: String,
    /// `host_path`.
    pub host_path: PathBuf,
    /// `readonly`.
    pub read_only: bool,
}

/// CRI `LinuxContainerResources` (0 / empty: not set).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// `cpu_period` (µs).
    pub cpu_period: i64,
    /// `cpu_quota` (µs).
    pub cpu_quota: i64,
    /// `cpu_shares`.
    pub cpu_shares: i64,
    /// `memory_limit_in_bytes`.
    pub memory_limit_bytes: i64,
    /// `memory_swap_limit_in_bytes`.
    pub memory_swap_limit_bytes: i64,
    /// `cpuset_cpus`.
    pub cpuset_cpus: String,
    /// `cpuset_mems`.
    pub cpuset_mems: String,
    /// `unified` (cgroup v2 files).
    pub unified: BTreeMap<String, String>,
}

/// The seccomp profile a container runs under.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompConfig {
    /// No filter.
    #[default]
    Unconfined,
    /// The runtime's default allow-list.
    RuntimeDefault,
    /// A Localhost profile: its file's path and contents (OCI / Docker
    /// JSON), read by hearthd at CreateContainer.
    Localhost {
        /// The profile file on the host.
        path: PathBuf,
        /// Its contents.
        json: String,
    },
}

/// What `linux.security_context` asks beyond user and capabilities.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityConfig {
    /// `privileged`.
    pub privileged: bool,
    /// `no_new_privs`.
    pub no_new_privs: bool,
    /// `masked_paths` (the runtime's defaults when the CRI sends none).
    pub masked_paths: Vec<String>,
    /// `readonly_paths` (likewise).
    pub readonly_paths: Vec<String>,
    /// `seccomp`.
    pub seccomp: SeccompConfig,
}

/// CRI `Capability`: changes to the default set (names as the kubelet
/// sends them; the agent checks them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityChanges {
    /// `add_capabilities`.
    pub add: Vec<String>,
    /// `drop_capabilities`.
    pub drop: Vec<String>,
}

/// What the core needs of an image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// Image id (`sha256:…`).
    pub id: String,
    /// What ContainerStatus reports as `image_ref` (a repo digest, or the id).
    pub image_ref: String,
    /// The erofs file on the host.
    pub erofs_path: PathBuf,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`, `KEY=value`.
    pub env: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: String,
    /// `User` as written (`user[:group]`).
    pub user: String,
    /// `StopSignal` (empty: SIGTERM).
    pub stop_signal: String,
}

/// Finds images (the image store, behind a small trait for tests).
pub trait ImageResolver: Send + Sync {
    /// The image `reference` (tag, digest, id or id prefix); `None` when
    /// the node does not have it.
    fn resolve(&self, reference: &str) -> Option<ImageInfo>;
}

/// One container as persisted (before every action).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Container id.
    pub id: Id,
    /// Its pod sandbox.
    pub sandbox_id: Id,
    /// State.
    pub state: ContainerState,
    /// The config as CreateContainer gave it.
    pub config: ContainerConfig,
    /// The image.
    pub image: ImageInfo,
    /// The process the agent runs (merged).
    pub process_args: Vec<String>,
    /// Its environment (merged).
    pub process_env: Vec<String>,
    /// Its working directory (merged).
    pub process_cwd: String,
    /// The signal StopContainer sends first.
    pub stop_signal: u32,
    /// The log file on the host (empty: no log).
    pub log_path: PathBuf,
    /// ns since the epoch.
    pub created_at_ns: i64,
    /// ns since the epoch (0: never started).
    pub started_at_ns: i64,
    /// ns since the epoch (0: not exited).
    pub finished_at_ns: i64,
    /// Exit code when exited.
    pub exit_code: i32,
    /// `Completed`, `Error`, `StartError`, ….
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
    /// The init's pid in the guest.
    pub pid: u32,
    /// The mounts as the guest does them (volumes::plan of `config.mounts`).
    #[serde(default)]
    pub volumes: Vec<volumes::VolumeMount>,
}

impl ContainerRecord {
    /// The key unique among a pod's containers.
    pub fn unique_name(&self) -> String {
        unique_name(&self.sandbox_id, &self.config.name, self.config.attempt)
    }
}

/// `<pod>_<name>_<attempt>`.
pub fn unique_name(pod: &Id, name: &str, attempt: u32) -> String {
    format!("{pod}_{name}_{attempt}")
}

/// Parses a stop signal as images write it (`SIGINT`, `INT`, `2`); `None`
/// for an unknown name.
pub fn parse_signal(s: &str) -> Option<u32> {
    let s = s.trim();
    if s.is_empty() {
        return Some(15);
    }
    if let Ok(n) = s.parse::<u32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = s.strip_prefix("SIG").unwrap_or(s).to_ascii_uppercase();
    let n = match name.as_str() {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        "TERM" => 15,
        "WINCH" => 28,
        "PWR" => 30,
        "STOP" => 19,
        _ => return None,
    };
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_machine() {
        use ContainerState::*;
        assert_eq!(Created.transition(Running), Ok(Running));
        assert_eq!(Running.transition(Exited), Ok(Exited));
        assert_eq!(Created.transition(Exited), Ok(Exited));
        assert!(Exited.transition(Running).is_err());
        assert!(Running.transition(Created).is_err());
        assert!(Exited.transition(Exited).is_err());
    }

    #[test]
    fn stop_signals() {
        assert_eq!(parse_signal(""), Some(15));
        assert_eq!(parse_signal("SIGINT"), Some(2));
        assert_eq!(parse_signal("quit"), Some(3));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("0"), None);
        assert_eq!(parse_signal("SIGBOGUS"), None);
    }
}

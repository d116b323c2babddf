//! The crate's error type.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong in `hearth-network`.
///
/// Messages are short, lowercase, and name the path, interface or plugin
/// involved; the underlying cause is in the `#[source]`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkError {
    /// A network namespace name that cannot be used as a file name.
    #[error("invalid network namespace name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A named network namespace with this path already exists.
    #[error("network namespace {} already exists", path.display())]
    NetnsExists {
        /// The namespace's bind-mount path.
        path: PathBuf,
    },
    /// A filesystem or syscall step on a path failed.
    #[error("{op} {}", path.display())]
    Io {
        /// What was being done ("create", "bind-mount netns onto", ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A step inside a network namespace failed.
    #[error("{op} in network namespace {}", path.display())]
    Netns {
        /// What was being done ("unshare", "bring lo up", ...).
        op: &'static str,
        /// The namespace's path (or the bind-mount target being created).
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The helper thread that works inside a namespace panicked or vanished.
    #[error("network namespace worker thread for {} died", path.display())]
    WorkerDied {
        /// The namespace's path.
        path: PathBuf,
    },
    /// The CNI conf dir has no network config.
    #[error("no CNI network config (*.conflist, *.conf, *.json) in {}", dir.display())]
    NoNetworkConfig {
        /// The conf dir.
        dir: PathBuf,
    },
    /// A CNI network config file is malformed.
    #[error("invalid CNI network config {}: {reason}", path.display())]
    InvalidNetworkConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A request field cannot be passed to CNI plugins.
    #[error("invalid {field}: {reason}")]
    InvalidRequest {
        /// The field ("sandbox_id", "pod_name", ...).
        field: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A plugin named by the config is in none of the bin dirs.
    #[error("CNI plugin {plugin:?} not found in {path}")]
    PluginNotFound {
        /// The plugin type.
        plugin: String,
        /// The search path (`CNI_PATH`).
        path: String,
    },
    /// A plugin binary could not be started or waited for.
    #[error("run CNI plugin {}", plugin.display())]
    PluginSpawn {
        /// The plugin binary.
        plugin: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A plugin did not finish within the configured time.
    #[error("CNI plugin {} {command} timed out after {timeout:?}", plugin.display())]
    PluginTimeout {
        /// The plugin binary.
        plugin: PathBuf,
        /// `ADD` or `DEL`.
        command: &'static str,
        /// The limit.
        timeout: Duration,
    },
    /// A plugin failed and said why (the CNI error object).
    #[error("CNI plugin {} {command} failed (code {code}): {msg}{}",
        plugin.display(), if details.is_empty() { String::new() } else { format!(": {details}") })]
    PluginFailed {
        /// The plugin binary.
        plugin: PathBuf,
        /// `ADD` or `DEL`.
        command: &'static str,
        /// The CNI error code.
        code: u32,
        /// The CNI error message.
        msg: String,
        /// The CNI error details.
        details: String,
    },
    /// A plugin failed without a CNI error object.
    #[error("CNI plugin {} {command} exited with {status}: {stderr}", plugin.display())]
    PluginExit {
        /// The plugin binary.
        plugin: PathBuf,
        /// `ADD` or `DEL`.
        command: &'static str,
        /// The exit status.
        status: String,
        /// The end of its stderr.
        stderr: String,
    },
    /// A plugin's result could not be used.
    #[error("malformed result from CNI plugin {}: {reason}", plugin.display())]
    MalformedResult {
        /// The plugin binary.
        plugin: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A netlink request failed.
    #[error("{op} {ifname}")]
    Netlink {
        /// What was being done ("add ingress qdisc on", ...).
        op: &'static str,
        /// The interface concerned.
        ifname: String,
        /// The underlying error.
        #[source]
        source: rtnetlink::Error,
    },
    /// An interface that should exist does not.
    #[error("interface {ifname} not found in network namespace {}", netns.display())]
    LinkNotFound {
        /// The interface name.
        ifname: String,
        /// The namespace searched.
        netns: PathBuf,
    },
}
impl NetworkError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        NetworkError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn netns(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        NetworkError::Netns {
            op,
            path: path.into(),
            source,
        }
    }
}

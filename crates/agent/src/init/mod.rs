//! Start-up of the two modes; both end in [`crate::lifecycle::Agent`].
//!
//! - [`vm`]: PID 1 of a guest (mounts, kernel modules, vsock, reboot).
//! - [`namespaces`]: the namespaces backend's launcher and its child, PID 1
//!   of a fresh pid namespace inside a private root.

pub mod namespaces;
pub mod vm;

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use thiserror::Error;

/// Errors of start-up.
#[derive(Debug, Error)]
pub enum InitError {
    /// mount(2) failed.
    #[error("cannot mount {fstype} on {}", target.display())]
    Mount {
        /// Filesystem type (or "bind").
        fstype: String,
        /// Where.
        target: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file, directory or node could not be made or written.
    #[error("cannot create {}", path.display())]
    Create {
        /// What.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `--root` is unusable.
    #[error("invalid root {}: {reason}", root.display())]
    Root {
        /// The root.
        root: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `--listen-fd` is not a listening socket.
    #[error("fd {fd} is not a listening socket")]
    ListenFd {
        /// The fd.
        fd: i32,
        /// Why, when a call failed.
        #[source]
        source: Option<io::Error>,
    },
    /// Joining the network namespace failed.
    #[error("cannot join the network namespace {}", path.display())]
    Netns {
        /// The namespace file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Joining a cgroup failed.
    #[error("cannot join the cgroup {}", path.display())]
    Cgroup {
        /// The `cgroup.procs` file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A namespace, process or root operation failed.
    #[error("{what} failed")]
    Sys {
        /// The operation.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The agent child failed its set-up (its message).
    #[error("agent set-up failed: {0}")]
    Child(String),
}

/// mkdir -p `target`, then mounts.
pub(crate) fn mount_fs(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), InitError> {
    std::fs::create_dir_all(target).map_err(|source| InitError::Create {
        path: target.to_owned(),
        source,
    })?;
    mount(Some(source), target, Some(fstype), flags, data).map_err(|e| InitError::Mount {
        fstype: fstype.to_owned(),
        target: target.to_owned(),
        source: e.into(),
    })
}

/// Flags for pseudo filesystems that hold no programs or devices.
pub(crate) fn pseudo() -> MsFlags {
    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC
}

/// The full chain of an error as one line.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

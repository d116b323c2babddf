//! Errors of the Firecracker client and process management.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong talking to or running Firecracker.
#[derive(Debug, thiserror::Error)]
pub enum FirecrackerError {
    /// Local I/O (files, sockets, FIFOs) failed.
    #[error("{op} {path}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The API request did not complete in time.
    #[error("{method} {path} timed out after {timeout:?}")]
    Timeout {
        /// HTTP method.
        method: &'static str,
        /// Request path.
        path: String,
        /// The limit.
        timeout: Duration,
    },
    /// The API socket did not answer `GET /` before the deadline.
    #[error("firecracker api at {socket} not ready after {waited:?}: {last}")]
    NotReady {
        /// The socket.
        socket: PathBuf,
        /// How long we waited.
        waited: Duration,
        /// The last failure seen.
        last: String,
    },
    /// Firecracker sent something that is not the HTTP we expect.
    #[error("bad http response: {0}")]
    Http(String),
    /// A response (headers or body) exceeded its size bound.
    #[error("response {what} larger than {limit} bytes")]
    TooLarge {
        /// `headers` or `body`.
        what: &'static str,
        /// The bound.
        limit: usize,
    },
    /// Firecracker refused the request; `fault_message` is its own words.
    #[error("{method} {path}: firecracker answered {status}: {fault_message}")]
    Api {
        /// HTTP method.
        method: &'static str,
        /// Request path.
        path: String,
        /// HTTP status (400 for a refused configuration).
        status: u16,
        /// Firecracker's `fault_message` (or the raw body, truncated).
        fault_message: String,
    },
    /// A body could not be (de)serialized.
    #[error("{0}: bad json")]
    Json(&'static str, #[source] serde_json::Error),
    /// An id or path is unusable (names the field).
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// Which field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// The Firecracker binary is older than Hearth supports.
    #[error(
        "firecracker {found} is too old: hearth needs >= 1.8 (ACPI for the debian cloud kernel)"
    )]
    TooOld {
        /// Version found.
        found: String,
    },
    /// `--version` output could not be understood.
    #[error("cannot read the version of {path}: {output:?}")]
    BadVersion {
        /// Binary.
        path: PathBuf,
        /// What it printed (truncated).
        output: String,
    },
    /// The jailer copies only the binary into the chroot: it must be static.
    #[error(
        "{0} is dynamically linked (has an ELF interpreter); the jailer needs a static firecracker"
    )]
    DynamicBinary(PathBuf),
    /// A program could not be started.
    #[error("spawn {0}")]
    Spawn(PathBuf, #[source] std::io::Error),
    /// The VMM process exited (before it became ready, or unexpectedly).
    #[error("firecracker exited: {0}")]
    Exited(String),
}

impl FirecrackerError {
    /// True when Firecracker rejected the request as invalid (HTTP 400):
    /// the daemon maps this to `InvalidArgument`.
    pub fn is_bad_request(&self) -> bool {
        matches!(self, FirecrackerError::Api { status: 400, .. })
    }

    /// Firecracker's fault message, when the error carries one.
    pub fn fault_message(&self) -> Option<&str> {
        match self {
            FirecrackerError::Api { fault_message, .. } => Some(fault_message),
            _ => None,
        }
    }

    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| FirecrackerError::Io { op, path, source }
    }
}

/// Result alias of this crate.
pub type Result<T, E = FirecrackerError> = std::result::Result<T, E>;

//! Errors of the guest bundle.

use std::path::PathBuf;

/// Everything that can go wrong while building the guest bundle.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// A file or directory could not be read or written.
    #[error("{op} {path}")]
    Io {
        /// What was attempted (`read`, `write`, `create`, ...).
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An external tool (`apt-get`, `apt-cache`, `dpkg`) failed.
    #[error("{tool} failed: {detail}")]
    Tool {
        /// The command that failed.
        tool: String,
        /// Exit status and the tail of its stderr.
        detail: String,
    },
    /// The kernel image is not a bzImage Hearth understands.
    #[error("bad bzImage: {0}")]
    BadBzImage(&'static str),
    /// The bzImage payload uses a compression Hearth detects but cannot undo.
    #[error("unsupported kernel compression {0}")]
    UnsupportedCompression(&'static str),
    /// The compressed payload is corrupt or larger than allowed.
    #[error("bad {compression} payload: {detail}")]
    Decompress {
        /// Which compression.
        compression: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The decompressed kernel is not an x86_64 ELF image.
    #[error("bad vmlinux: {0}")]
    BadElf(&'static str),
    /// The cpio archive being read is malformed.
    #[error("bad cpio archive: {0}")]
    BadCpio(String),
    /// A cpio entry name is unusable (empty, absolute, `..`, too long).
    #[error("bad cpio entry name {0:?}")]
    BadEntryName(String),
    /// A module the agent needs is neither built in nor in the package.
    #[error("kernel module {0} not found (neither built in nor in the package)")]
    ModuleNotFound(String),
    /// The module dependency data is malformed or cyclic.
    #[error("bad module dependencies: {0}")]
    BadModuleDeps(String),
    /// The unpacked kernel package does not have the expected layout.
    #[error("bad kernel package: {0}")]
    BadPackage(String),
    /// The manifest could not be serialized.
    #[error("manifest")]
    Manifest(#[source] serde_json::Error),
}

impl GuestError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| GuestError::Io { op, path, source }
    }
}

/// Result alias of this crate.
pub type Result<T, E = GuestError> = std::result::Result<T, E>;

//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the image store.
///
/// The variants are chosen so that the daemon can map them to gRPC status
/// codes without looking at messages; see the crate docs for the suggested
/// mapping.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// No image (or no manifest in the registry) matches the reference.
    #[error("image not found: {0}")]
    NotFound(String),
    /// The reference does not parse.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An image id prefix matches more than one image.
    #[error("image id prefix {0:?} is ambiguous")]
    AmbiguousId(String),
    /// The registry refused the credentials (or their absence).
    #[error("unauthorized: registry {registry} refused the credentials (or needs some)")]
    Unauthorized {
        /// The registry host.
        registry: String,
    },
    /// The registry could not be reached or answered with an error.
    #[error("registry {registry}: request failed")]
    Registry {
        /// The registry host (or mirror endpoint) that failed.
        registry: String,
        /// What the client reported.
        #[source]
        source: oci_client::errors::OciDistributionError,
    },
    /// A blob's content does not hash to its digest.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest the manifest promised.
        expected: String,
        /// The digest of the bytes received.
        actual: String,
    },
    /// A blob's length differs from its descriptor (truncated or padded).
    #[error("size mismatch for blob {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob's digest.
        digest: String,
        /// The size the manifest promised.
        expected: u64,
        /// The number of bytes received.
        actual: u64,
    },
    /// A manifest is larger than `max_manifest_bytes`.
    #[error(
        "manifest of {size} bytes exceeds the limit of {limit} bytes (registry.max_manifest_bytes)"
    )]
    ManifestTooLarge {
        /// The manifest's size.
        size: u64,
        /// The configured limit.
        limit: u64,
    },
    /// A descriptor uses a digest algorithm other than sha256, or a malformed digest.
    #[error("unsupported digest {0:?} (only sha256:<64 hex> is supported)")]
    UnsupportedDigest(String),
    /// A manifest, config or layer has a media type this crate cannot use.
    #[error("unsupported media type {0:?}")]
    UnsupportedMediaType(String),
    /// A manifest or config does not parse.
    #[error("invalid {what} {digest}: {reason}")]
    InvalidManifest {
        /// "manifest", "image index" or "image config".
        what: &'static str,
        /// The document's digest.
        digest: String,
        /// Why it was rejected.
        reason: String,
    },
    /// An image index has no linux/amd64 entry.
    #[error("no linux/amd64 image in the index for {reference} (available: {available})")]
    NoMatchingPlatform {
        /// The reference pulled.
        reference: String,
        /// The platforms the index offers, comma separated.
        available: String,
    },
    /// A layer entry would land outside the root filesystem.
    #[error("layer {layer}: unsafe path {path:?}: {reason}")]
    UnsafeLayerPath {
        /// The layer's digest.
        layer: String,
        /// The entry's path as written in the tarball.
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A layer holds a character or block device and the config forbids them.
    #[error("layer {layer}: device node {path:?} not allowed (set registry.allow_device_nodes = true to allow)")]
    DeviceNodeNotAllowed {
        /// The layer's digest.
        layer: String,
        /// The entry's path.
        path: String,
    },
    /// A layer is not a valid (compressed) tarball, or an entry could not be applied.
    #[error("layer {layer}: entry {path:?}")]
    Layer {
        /// The layer's digest.
        layer: String,
        /// The entry being applied (empty when the tarball itself is broken).
        path: String,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// The uncompressed layer does not match the config's `rootfs.diff_ids`.
    #[error("layer {layer}: uncompressed digest {actual} does not match diff_id {expected}")]
    DiffIdMismatch {
        /// The layer's digest.
        layer: String,
        /// The diff_id from the image config.
        expected: String,
        /// The digest of the uncompressed bytes.
        actual: String,
    },
    /// mkfs.erofs failed or could not be run.
    #[error("building the erofs image failed ({status}): {stderr}")]
    Erofs {
        /// The exit status, or why the command did not run.
        status: String,
        /// mkfs.erofs's standard error.
        stderr: String,
    },
    /// The registry configuration or credentials file is invalid.
    #[error("invalid registry configuration: {field}: {reason}")]
    Config {
        /// The offending field (or file).
        field: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A filesystem operation on the store failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A blocking task panicked or was cancelled.
    #[error("background task failed")]
    Task(#[source] tokio::task::JoinError),
}

impl ImageError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ImageError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;

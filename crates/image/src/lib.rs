//! OCI image pull, content store and erofs build for Hearth.
//!
//! [`ImageStore`] pulls images from OCI registries (Docker v2 schema 2 and
//! OCI manifests, manifest lists and image indexes resolved to linux/amd64,
//! gzip, zstd and plain layers), keeps their blobs in a verified content
//! store, applies the layers with full OCI semantics and turns each image's
//! flattened rootfs into one erofs image (`mkfs.erofs -zlz4hc`), keyed by the
//! image id (the config digest). Guests get that file as a read-only drive.
//! CRI types stay out of this crate: the daemon converts at its edge.
//!
//! # Layout on disk (under the configured root)
//!
//! ```text
//! content/blobs/sha256/<hex>   manifests, indexes, configs, layers; verified before rename
//! content/tmp/                 downloads in flight (emptied on open)
//! erofs/<id-hex>.erofs         one erofs image per image id
//! images/<id-hex>.json         image records (atomic: temp + fsync + rename)
//! tmp/build-*/                 unpack directories in flight (emptied on open)
//! ```
//!
//! A crash leaves only temp files (removed on open) or complete, verified
//! files; an image exists only once its record is written, which is last.
//!
//! # Modules
//!
//! [`reference`] parses names; [`config`] is the `[registry]` table and
//! credentials; `content` the blob store with one download per digest;
//! `pull` registry access over `oci-client`; `unpack` layer application;
//! [`erofs`] the mkfs step; [`metadata`] records; `gc` removal, prune and
//! usage; `store` the orchestration.
//!
//! # API in one breath
//!
//! ```no_run
//! # async fn f() -> Result<(), hearth_image::ImageError> {
//! use hearth_image::{ImageStore, RegistryConfig};
//! let store = ImageStore::open("/var/lib/hearth/images".as_ref(), RegistryConfig::default())?;
//! let img = store.pull("busybox", None, None).await?; // docker.io/library/busybox:latest
//! let same = store.get(&img.id[..19])?;                 // id, id prefix, tag or digest reference
//! let usage = store.fs_info().await?;                    // ImageFsInfo
//! store.remove(&img.id).await?;                          // frees what no other image uses
//! # let _ = (same, usage); Ok(()) }
//! ```
//!
//! Pulls share one download per blob (a per-digest lock) and one erofs build
//! per image id. Removal and prune wait for pulls in flight (a store-wide
//! reader/writer lock), and a failed pull sweeps what it left once no other
//! pull is in flight. `remove` by a tag removes the whole image (all its
//! names), as CRI's RemoveImage does.
//!
//! A pull of an image already present is cheap: by digest it needs no
//! registry at all; by tag it costs one manifest request (the tag may have
//! moved, as containerd also checks) and stops at a manifest or index whose
//! digest is already recorded. Its record is rewritten only when its names
//! change. Registry clients (TLS setup, pooled connections, tokens) are kept
//! across pulls per endpoint and credentials.
//!
//! # Known limits
//!
//! - oci-client reads a manifest whole before this crate can check
//!   `max_manifest_bytes`: the limit rejects, but does not bound the
//!   allocation of, one response.
//! - Blobs are fetched from the endpoint that served the manifest (no
//!   per-blob fallback to the next mirror).
//! - An `identity_token` is sent as a bearer token; the OAuth2 refresh-token
//!   exchange is not implemented.
//! - Ownership is only applied when running as root (as hearthd does).
//!
//! # Suggested gRPC mapping of [`ImageError`]
//!
//! | variant | code |
//! | --- | --- |
//! | `NotFound` | `NOT_FOUND` |
//! | `InvalidReference`, `AmbiguousId`, `Config` (of an `auth` field) | `INVALID_ARGUMENT` |
//! | `Unauthorized` | `UNAUTHENTICATED` (kubelet shows ErrImagePull with the message) |
//! | `Registry` | `UNAVAILABLE` |
//! | `DigestMismatch`, `SizeMismatch`, `DiffIdMismatch`, `InvalidManifest`, `Layer` | `DATA_LOSS` |
//! | `ManifestTooLarge` | `RESOURCE_EXHAUSTED` |
//! | `UnsupportedMediaType`, `UnsupportedDigest`, `NoMatchingPlatform` | `FAILED_PRECONDITION` |
//! | `UnsafeLayerPath`, `DeviceNodeNotAllowed` | `FAILED_PRECONDITION` |
//! | `Erofs`, `Io`, `Task` | `INTERNAL` |
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod config;
mod content;
pub mod erofs;
mod error;
mod gc;
pub mod metadata;
mod pull;
pub mod reference;
mod store;
mod unpack;

pub use config::{Credentials, RegistryConfig};
pub use error::{ImageError, Result};
pub use gc::{FsUsage, PruneReport};
pub use metadata::{Image, ImageUser, LayerInfo, RuntimeConfig};
pub use reference::ImageReference;
pub use store::{ImageStore, ProgressSink, PullProgress};

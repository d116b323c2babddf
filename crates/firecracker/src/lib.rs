//! Typed Firecracker API client and process spawn (jailer or direct) for Hearth.
//!
//! Layout:
//!
//! - [`models`]: serde structs for the request/response bodies Hearth uses,
//!   written from Firecracker's `swagger/firecracker.yaml`.
//! - [`http`]: a small hand-written HTTP/1.1 client over a `UnixStream`, every
//!   length read off the wire bounded.
//! - [`client`]: [`FirecrackerClient`], one method per endpoint, readiness
//!   waits with deadlines, Firecracker's `fault_message` in every API error
//!   ([`FirecrackerError::is_bad_request`] for a refused configuration).
//! - [`binary`]: [`check_binary`] (version ≥ 1.8) and the static-binary check
//!   the jailer needs.
//! - [`spawn`]: [`JailerSpawn`] (production: chroot, uid/gid, netns, cgroups,
//!   seccomp filter) and [`VmmSpawn`] (development), both producing an exact
//!   argv, and the [`VmmProcess`] handle that owns the child, socket, FIFOs
//!   and jail.
//! - [`fifo`]: log and metrics FIFOs drained into `tracing`.
#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod binary;
pub mod client;
mod error;
pub mod fifo;
pub mod http;
mod jail;
pub mod models;
pub mod spawn;

pub use binary::{check_binary, check_static, FirecrackerVersion, MIN_VERSION};
pub use client::FirecrackerClient;
pub use error::{FirecrackerError, Result};
pub use fifo::FifoKind;
pub use models::*;
pub use spawn::{JailFile, JailerSpawn, VmmProcess, VmmSpawn};

//! Hearth's core: ids, sandbox state machines, persisted state, and the small
//! traits behind which the effects live (backends, network).
//!
//! Layout:
//! - [`manager`]: `SandboxManager`, the typed API the CRI front end calls.
//! - [`container`]: `ContainerManager`, containers in the pod's guest.
//! - [`sandbox`]: domain config, the state machine, the persisted record.
//! - [`sizing`]: VM size from the pod's resources, overhead, annotations.
//! - [`backend`] / [`network`]: the effect traits (with fakes in
//!   `hearth-test-support`).
//! - [`agent`]: the host's client of the guest agent (hybrid-vsock
//!   handshake, version check, deadlines on every call).
//! - [`store`], [`scratch`], [`cgroup`], [`sysctl`], [`id`], [`error`].
#![warn(missing_docs)]

pub mod agent;
pub mod backend;
pub mod cgroup;
pub mod container;
pub mod error;
pub mod id;
pub mod manager;
pub mod network;
pub mod sandbox;
pub mod scratch;
pub mod sizing;
pub mod store;
pub mod sysctl;

pub use container::ContainerManager;
pub use error::RuntimeError;
pub use id::Id;
pub use manager::{ManagerConfig, SandboxManager, SandboxView};

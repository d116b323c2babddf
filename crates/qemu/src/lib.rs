//! QMP client, QEMU and vhost-device-vsock supervision for Hearth's `qemu`
//! backend (QEMU `microvm`, one VM per pod, the same guest bundle as
//! Firecracker).
//!
//! Layout:
//! - [`argv`]: the QEMU and vhost-device-vsock command lines, built from a
//!   typed [`argv::VmArgs`] (pure, unit-tested).
//! - [`qmp`]: a typed QMP client over the VM's unix socket: deadlines on
//!   every call, bounded reads, QEMU's error class and text kept.
//! - [`spawn`]: starting the two processes in the pod's network namespace
//!   and cgroup, pid + start-time liveness, waiting for their sockets.
//!
//! The guest's vsock reaches the host through vhost-device-vsock, whose
//! unix socket speaks Firecracker's hybrid-vsock handshake, so the host's
//! agent client is the one every backend uses.
#![warn(missing_docs)]

pub mod argv;
pub mod qmp;
pub mod spawn;

pub use argv::{Accel, BootDrive, VmArgs};
pub use qmp::{Qmp, QmpError};
pub use spawn::{SpawnError, SpawnOptions};

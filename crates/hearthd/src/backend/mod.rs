//! Sandbox backends built into hearthd.
//!
//! - [`namespaces`]: the agent in fresh namespaces on the host.
//! - [`firecracker`]: a jailed Firecracker microVM per pod.
//! - [`qemu`]: a QEMU microvm per pod.
//! - [`loopdev`]: loop devices, the namespaces backend's drives.
//! - [`process`]: pid liveness and reaping of agents hearthd adopted.

pub mod firecracker;
pub mod loopdev;
pub mod namespaces;
pub mod process;
pub mod qemu;

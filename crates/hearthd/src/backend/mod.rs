//! Sandbox backends built into hearthd.
//!
//! - [`namespaces`]: the agent in fresh namespaces on the host.
//! - [`loopdev`]: loop devices, the namespaces backend's drives.
//! - [`process`]: pid liveness and reaping of agents hearthd adopted.

pub mod loopdev;
pub mod namespaces;
pub mod process;

//! The `qemu` backend (being built; until it is, hearthd has no such
//! backend and its handler answers UNIMPLEMENTED).

use std::sync::Arc;

use hearth_runtime::backend::SandboxBackend;
use serde::{Deserialize, Serialize};

/// Settings of the qemu backend (`[qemu]` in the config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QemuConfig {}

/// The qemu backends this hearthd runs, from the config.
pub fn backends(_config: &crate::config::Config) -> Vec<Arc<dyn SandboxBackend>> {
    Vec::new()
}

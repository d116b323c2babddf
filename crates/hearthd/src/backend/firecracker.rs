//! The `firecracker` backend (being built; until it is, hearthd has no such
//! backend and its handler answers UNIMPLEMENTED).

use std::sync::Arc;

use hearth_runtime::backend::SandboxBackend;
use serde::{Deserialize, Serialize};

/// Settings of the firecracker backend (`[firecracker]` in the config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FirecrackerConfig {}

/// The firecracker backends this hearthd runs, from the config.
pub fn backends(_config: &crate::config::Config) -> Vec<Arc<dyn SandboxBackend>> {
    Vec::new()
}

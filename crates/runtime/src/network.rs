//! The pod network effect: the pod's named network namespace (and, with the
//! networking issue, the CNI plugins run into it).

use std::path::PathBuf;

use crate::id::Id;

/// A failed network operation; the source says what the network module
/// reported.
#[derive(Debug, thiserror::Error)]
#[error("pod network: {op}")]
pub struct NetworkError {
    /// What was being done, e.g. "creating the network namespace".
    pub op: &'static str,
    /// The cause.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Creates and removes the pods' network namespaces.
#[async_trait::async_trait]
pub trait PodNetworks: Send + Sync {
    /// Whether pod networks can be set up; the error is the reason shown in
    /// the NetworkReady condition.
    fn ready(&self) -> Result<(), String>;

    /// Creates the pod's named network namespace with loopback up.
    async fn create_netns(&self, id: &Id) -> Result<PathBuf, NetworkError>;

    /// Removes the pod's network namespace. Missing is fine.
    async fn remove_netns(&self, id: &Id) -> Result<(), NetworkError>;
}

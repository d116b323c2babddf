//! The pod network effect on this host: named network namespaces through
//! `hearth-network`. CNI comes with the networking issue; until then pods
//! get a network namespace with loopback only, and NetworkReady says so.

use std::path::PathBuf;
use std::sync::Arc;

use hearth_network::NetnsManager;
use hearth_runtime::network::{NetworkError, PodNetworks};
use hearth_runtime::Id;

/// Pod networks on the host.
pub struct HostNetworks {
    netns: Arc<NetnsManager>,
}

impl HostNetworks {
    /// Namespaces are bind-mounted under `netns_dir`.
    pub fn new(netns_dir: PathBuf) -> HostNetworks {
        HostNetworks {
            netns: Arc::new(NetnsManager::new(netns_dir)),
        }
    }
}

/// The netns name of a sandbox.
pub fn netns_name(id: &Id) -> String {
    format!("hearth-{}", id.short())
}

async fn on_thread<T: Send + 'static>(
    op: &'static str,
    f: impl FnOnce() -> Result<T, hearth_network::NetworkError> + Send + 'static,
) -> Result<T, NetworkError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| NetworkError {
            op,
            source: Box::new(e),
        }),
        Err(e) => Err(NetworkError {
            op,
            source: Box::new(e),
        }),
    }
}

#[async_trait::async_trait]
impl PodNetworks for HostNetworks {
    fn ready(&self) -> Result<(), String> {
        Err("CNI is not supported yet: pods get a network namespace with loopback only".into())
    }

    async fn create_netns(&self, id: &Id) -> Result<PathBuf, NetworkError> {
        let netns = self.netns.clone();
        let name = netns_name(id);
        on_thread("creating the network namespace", move || {
            netns.create(&name)
        })
        .await
    }

    async fn remove_netns(&self, id: &Id) -> Result<(), NetworkError> {
        let netns = self.netns.clone();
        let name = netns_name(id);
        on_thread("removing the network namespace", move || {
            netns.remove(&name)
        })
        .await
    }
}

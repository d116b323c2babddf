//! The pod network effect on this host, through `hearth-network`: named
//! network namespaces, and the node's CNI plugins run into them (the first
//! config of the CNI conf dir, re-read on every ADD as containerd does).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hearth_network::{
    Bandwidth, Cni, CniConfig, NetnsManager, PodNetwork, PodNetworkRequest, PortMapping, Protocol,
};
use hearth_runtime::network::{NetworkError, PodNetworkState, PodNetworks};
use hearth_runtime::sandbox::SandboxConfig;
use hearth_runtime::Id;

/// Pod annotation: ingress bandwidth limit (a quantity, e.g. `10M`).
pub const INGRESS_BANDWIDTH: &str = "kubernetes.io/ingress-bandwidth";
/// Pod annotation: egress bandwidth limit.
pub const EGRESS_BANDWIDTH: &str = "kubernetes.io/egress-bandwidth";

/// Pod networks on the host.
pub struct HostNetworks {
    netns: Arc<NetnsManager>,
    cni: Arc<Cni>,
}

impl HostNetworks {
    /// Namespaces under `netns_dir`; CNI as configured.
    pub fn new(
        netns_dir: PathBuf,
        conf_dir: PathBuf,
        bin_dirs: Vec<PathBuf>,
        plugin_timeout: Duration,
    ) -> HostNetworks {
        let cni = CniConfig {
            conf_dir,
            bin_dirs,
            plugin_timeout,
            ..CniConfig::default()
        };
        HostNetworks {
            netns: Arc::new(NetnsManager::new(netns_dir)),
            cni: Arc::new(Cni::new(cni)),
        }
    }
}

/// The netns name of a sandbox.
pub fn netns_name(id: &Id) -> String {
    format!("hearth-{}", id.short())
}

fn failed(op: &'static str) -> impl FnOnce(hearth_network::NetworkError) -> NetworkError {
    move |e| NetworkError {
        op,
        source: Box::new(e),
    }
}

async fn on_thread<T: Send + 'static>(
    op: &'static str,
    f: impl FnOnce() -> Result<T, hearth_network::NetworkError> + Send + 'static,
) -> Result<T, NetworkError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(failed(op)),
        Err(e) => Err(NetworkError {
            op,
            source: Box::new(e),
        }),
    }
}

fn request(id: &Id, c: &SandboxConfig, netns: &Path) -> Result<PodNetworkRequest, NetworkError> {
    let invalid = |what: String| NetworkError {
        op: "reading the pod's network settings",
        source: what.into(),
    };
    let mut port_mappings = Vec::new();
    for p in &c.port_mappings {
        if p.host_port == 0 {
            continue; // not exposed on the host
        }
        let protocol = match p.protocol.as_str() {
            "udp" => Protocol::Udp,
            "sctp" => Protocol::Sctp,
            _ => Protocol::Tcp,
        };
        let host_ip = if p.host_ip.is_empty() {
            None
        } else {
            Some(p.host_ip.parse().map_err(|_| {
                invalid(format!(
                    "port_mappings host_ip {:?} is not an IP",
                    p.host_ip
                ))
            })?)
        };
        port_mappings.push(PortMapping {
            protocol,
            container_port: p.container_port as u16,
            host_port: p.host_port as u16,
            host_ip,
        });
    }
    let rate = |key: &str| -> Result<Option<u64>, NetworkError> {
        c.annotations
            .get(key)
            .map(|v| {
                quantity(v).ok_or_else(|| {
                    invalid(format!(
                        "annotation {key}: {v:?} is not a quantity like 10M"
                    ))
                })
            })
            .transpose()
    };
    let (ingress, egress) = (rate(INGRESS_BANDWIDTH)?, rate(EGRESS_BANDWIDTH)?);
    let bandwidth = (ingress.is_some() || egress.is_some()).then(|| Bandwidth {
        ingress_rate: ingress.unwrap_or(0),
        ingress_burst: if ingress.is_some() {
            i32::MAX as u64
        } else {
            0
        },
        egress_rate: egress.unwrap_or(0),
        egress_burst: if egress.is_some() { i32::MAX as u64 } else { 0 },
    });
    Ok(PodNetworkRequest {
        sandbox_id: id.to_string(),
        pod_name: c.metadata.name.clone(),
        pod_namespace: c.metadata.namespace.clone(),
        pod_uid: c.metadata.uid.clone(),
        netns_path: netns.to_owned(),
        port_mappings,
        bandwidth,
        dns: c.dns.as_ref().map(|d| hearth_network::DnsConfig {
            servers: d.servers.clone(),
            searches: d.searches.clone(),
            options: d.options.clone(),
        }),
    })
}

/// A Kubernetes quantity in bits per second: `10M`, `1Gi`, `500k`, `100`.
pub fn quantity(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        _ => return None,
    };
    let v = n * mult;
    (v.is_finite() && v >= 1.0 && v < u64::MAX as f64).then_some(v as u64)
}

#[async_trait::async_trait]
impl PodNetworks for HostNetworks {
    fn ready(&self) -> Result<(), String> {
        self.cni.status().map_err(|e| crate::cri::status::chain(&e))
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

    async fn setup(
        &self,
        id: &Id,
        config: &SandboxConfig,
        netns: &Path,
    ) -> Result<PodNetworkState, NetworkError> {
        let req = request(id, config, netns)?;
        let cni = self.cni.clone();
        // Spawned: the CNI chain must run to its end (or its rollback) even
        // if the RPC that asked for it is cancelled.
        let net = tokio::spawn(async move { cni.setup(&req).await })
            .await
            .map_err(|e| NetworkError {
                op: "running the CNI plugins (ADD)",
                source: Box::new(e),
            })?
            .map_err(failed("running the CNI plugins (ADD)"))?;
        let ips = net.ips().iter().map(|ip| ip.addr.to_string()).collect();
        let record = serde_json::to_value(&net).map_err(|e| NetworkError {
            op: "recording the CNI result",
            source: Box::new(e),
        })?;
        Ok(PodNetworkState {
            ips,
            record: Some(record),
        })
    }

    async fn teardown(
        &self,
        id: &Id,
        config: &SandboxConfig,
        state: Option<&PodNetworkState>,
        netns: Option<&Path>,
    ) -> Result<(), NetworkError> {
        let cni = self.cni.clone();
        let netns_path = netns.map(Path::to_path_buf).unwrap_or_default();
        match state.and_then(|s| s.record.clone()) {
            Some(record) => {
                let net: PodNetwork = serde_json::from_value(record).map_err(|e| NetworkError {
                    op: "reading the recorded CNI result",
                    source: Box::new(e),
                })?;
                tokio::spawn(async move { cni.teardown(&net, &netns_path).await })
                    .await
                    .map_err(|e| NetworkError {
                        op: "running the CNI plugins (DEL)",
                        source: Box::new(e),
                    })?
                    .map_err(failed("running the CNI plugins (DEL)"))
            }
            None => {
                // Nothing was recorded: with no usable config nothing can
                // have been set up either.
                if cni.status().is_err() {
                    return Ok(());
                }
                let req = request(id, config, &netns_path)?;
                tokio::spawn(async move { cni.teardown_unrecorded(&req).await })
                    .await
                    .map_err(|e| NetworkError {
                        op: "running the CNI plugins (DEL)",
                        source: Box::new(e),
                    })?
                    .map_err(failed("running the CNI plugins (DEL)"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(quantity("10M"), Some(10_000_000));
        assert_eq!(quantity("1Gi"), Some(1 << 30));
        assert_eq!(quantity("500k"), Some(500_000));
        assert_eq!(quantity("100"), Some(100));
        assert_eq!(quantity("1.5M"), Some(1_500_000));
        assert_eq!(quantity("lots"), None);
        assert_eq!(quantity("10X"), None);
        assert_eq!(quantity("0"), None);
    }
}

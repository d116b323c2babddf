//! CRI (prost) types ⇄ domain types, at the edge only.

use std::collections::{BTreeMap, HashMap};

use hearth_runtime::sandbox::{
    DnsConfig, Metadata, NamespaceMode, PortMapping, SandboxConfig, SandboxRecord, SandboxState,
};
use hearth_runtime::sizing::Resources;
use k8s_cri::v1 as cri;
use tonic::Status;

/// `PodSandboxConfig` → domain config. Missing metadata is refused here;
/// the core checks the rest.
pub fn sandbox_config(c: cri::PodSandboxConfig) -> Result<SandboxConfig, Status> {
    let m = c
        .metadata
        .ok_or_else(|| Status::invalid_argument("config.metadata is required"))?;
    let linux = c.linux.unwrap_or_default();
    let ns = linux
        .security_context
        .as_ref()
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    Ok(SandboxConfig {
        metadata: Metadata {
            name: m.name,
            uid: m.uid,
            namespace: m.namespace,
            attempt: m.attempt,
        },
        hostname: c.hostname,
        log_directory: c.log_directory,
        dns: c.dns_config.map(|d| DnsConfig {
            servers: d.servers,
            searches: d.searches,
            options: d.options,
        }),
        port_mappings: c
            .port_mappings
            .into_iter()
            .map(|p| PortMapping {
                protocol: match cri::Protocol::try_from(p.protocol) {
                    Ok(cri::Protocol::Udp) => "udp",
                    Ok(cri::Protocol::Sctp) => "sctp",
                    _ => "tcp",
                }
                .to_owned(),
                container_port: p.container_port,
                host_port: p.host_port,
                host_ip: p.host_ip,
            })
            .collect(),
        labels: sorted(c.labels),
        annotations: sorted(c.annotations),
        cgroup_parent: linux.cgroup_parent,
        sysctls: sorted(linux.sysctls),
        network: mode(ns.network, "network")?,
        pid: mode(ns.pid, "pid")?,
        ipc: mode(ns.ipc, "ipc")?,
        resources: linux.resources.map(resources),
        overhead: linux.overhead.map(resources),
    })
}

fn sorted(m: HashMap<String, String>) -> BTreeMap<String, String> {
    m.into_iter().collect()
}

fn resources(r: cri::LinuxContainerResources) -> Resources {
    Resources {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit_bytes: r.memory_limit_in_bytes,
    }
}

fn mode(v: i32, which: &str) -> Result<NamespaceMode, Status> {
    Ok(match cri::NamespaceMode::try_from(v) {
        Ok(cri::NamespaceMode::Pod) => NamespaceMode::Pod,
        Ok(cri::NamespaceMode::Container) => NamespaceMode::Container,
        Ok(cri::NamespaceMode::Node) => NamespaceMode::Node,
        Ok(cri::NamespaceMode::Target) => NamespaceMode::Target,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "linux.security_context.namespace_options.{which}: unknown mode {v}"
            )))
        }
    })
}

fn mode_to_cri(m: NamespaceMode) -> i32 {
    match m {
        NamespaceMode::Pod => cri::NamespaceMode::Pod as i32,
        NamespaceMode::Container => cri::NamespaceMode::Container as i32,
        NamespaceMode::Node => cri::NamespaceMode::Node as i32,
        NamespaceMode::Target => cri::NamespaceMode::Target as i32,
    }
}

/// The CRI state of a record.
pub fn state(s: SandboxState) -> i32 {
    match s {
        SandboxState::Ready => cri::PodSandboxState::SandboxReady as i32,
        _ => cri::PodSandboxState::SandboxNotready as i32,
    }
}

fn metadata(m: &Metadata) -> cri::PodSandboxMetadata {
    cri::PodSandboxMetadata {
        name: m.name.clone(),
        uid: m.uid.clone(),
        namespace: m.namespace.clone(),
        attempt: m.attempt,
    }
}

fn unsorted(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// A record as a `PodSandbox` list item.
pub fn pod_sandbox(r: &SandboxRecord) -> cri::PodSandbox {
    cri::PodSandbox {
        id: r.id.to_string(),
        metadata: Some(metadata(&r.config.metadata)),
        state: state(r.state),
        created_at: r.created_at_ns,
        labels: unsorted(&r.config.labels),
        annotations: unsorted(&r.config.annotations),
        runtime_handler: r.runtime_handler.clone(),
    }
}

/// A record as a `PodSandboxStatus`.
pub fn pod_sandbox_status(r: &SandboxRecord) -> cri::PodSandboxStatus {
    let c = &r.config;
    cri::PodSandboxStatus {
        id: r.id.to_string(),
        metadata: Some(metadata(&c.metadata)),
        state: state(r.state),
        created_at: r.created_at_ns,
        network: Some({
            let ips = r
                .network
                .as_ref()
                .map(|n| n.ips.as_slice())
                .unwrap_or_default();
            cri::PodSandboxNetworkStatus {
                ip: ips.first().cloned().unwrap_or_default(),
                additional_ips: ips
                    .iter()
                    .skip(1)
                    .map(|ip| cri::PodIp { ip: ip.clone() })
                    .collect(),
            }
        }),
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace {
                options: Some(cri::NamespaceOption {
                    network: mode_to_cri(c.network),
                    pid: mode_to_cri(c.pid),
                    ipc: mode_to_cri(c.ipc),
                    target_id: String::new(),
                    userns_options: None,
                }),
            }),
        }),
        labels: unsorted(&c.labels),
        annotations: unsorted(&c.annotations),
        runtime_handler: r.runtime_handler.clone(),
    }
}

/// The verbose `info` of PodSandboxStatus: backend, VM size and where each
/// number came from, the host resources the sandbox holds, and what the
/// running VM reports (`live`, e.g. Firecracker's metrics).
pub fn sandbox_info(r: &SandboxRecord, live: Option<serde_json::Value>) -> HashMap<String, String> {
    let info = serde_json::json!({
        "runtimeHandler": r.runtime_handler,
        "backend": r.backend,
        "vm": {
            "vcpus": r.size.vcpus,
            "memoryMiB": r.size.memory_mib,
            "vcpusSource": r.size.vcpus_source,
            "memorySource": r.size.memory_source,
            "clamped": r.size.clamped,
        },
        "netns": r.netns,
        "network": r.network,
        "scratchDisk": r.scratch,
        "cgroupParent": r.config.cgroup_parent,
        "backendState": r.backend_handle,
        "reason": r.reason,
        "config": r.config,
        "live": live,
    });
    HashMap::from([("info".to_owned(), info.to_string())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_metadata_is_invalid() {
        let e = sandbox_config(cri::PodSandboxConfig::default()).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("metadata"));
    }

    #[test]
    fn host_network_and_resources_convert() {
        let c = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "n".into(),
                uid: "u".into(),
                namespace: "ns".into(),
                attempt: 2,
            }),
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: cri::NamespaceMode::Node as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                resources: Some(cri::LinuxContainerResources {
                    cpu_quota: 5,
                    cpu_period: 10,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let d = sandbox_config(c).unwrap();
        assert!(d.host_network());
        assert_eq!(d.metadata.attempt, 2);
        assert_eq!(d.resources.unwrap().cpu_quota, 5);
        assert!(d.overhead.is_none());
    }

    #[test]
    fn bad_namespace_mode_is_invalid() {
        let c = cri::PodSandboxConfig {
            metadata: Some(Default::default()),
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        pid: 42,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(sandbox_config(c).unwrap_err().message().contains("pid"));
    }
}

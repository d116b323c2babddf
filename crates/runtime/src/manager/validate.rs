//! Checks of a RunPodSandbox request that need no state, and the defaults
//! it gets.

use crate::error::RuntimeError;
use crate::sandbox::SandboxConfig;

pub(super) fn validate(config: &SandboxConfig) -> Result<(), RuntimeError> {
    let m = &config.metadata;
    for (field, value) in [
        ("metadata.name", &m.name),
        ("metadata.namespace", &m.namespace),
        ("metadata.uid", &m.uid),
    ] {
        if value.is_empty() {
            return Err(RuntimeError::InvalidArgument(format!(
                "{field} must not be empty"
            )));
        }
    }
    for (i, p) in config.port_mappings.iter().enumerate() {
        if !(1..=65535).contains(&p.container_port) || !(0..=65535).contains(&p.host_port) {
            return Err(RuntimeError::InvalidArgument(format!(
                "port_mappings[{i}]: container_port must be 1-65535 and host_port 0-65535 (got {} and {})",
                p.container_port, p.host_port
            )));
        }
        if !["tcp", "udp", "sctp"].contains(&p.protocol.as_str()) {
            return Err(RuntimeError::InvalidArgument(format!(
                "port_mappings[{i}].protocol {:?} must be TCP, UDP or SCTP",
                p.protocol
            )));
        }
    }
    if config.hostname.len() > 64 {
        return Err(RuntimeError::InvalidArgument(format!(
            "hostname {:?} is longer than 64 bytes",
            config.hostname
        )));
    }
    Ok(())
}

/// A valid hostname from a pod name: at most 63 characters of `[a-z0-9-]`.
pub(super) fn default_hostname(pod: &str) -> String {
    let h: String = pod
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let h = h.trim_matches('-');
    if h.is_empty() {
        "pod".to_owned()
    } else {
        h.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_from_pod_names() {
        assert_eq!(default_hostname("nginx-sandbox"), "nginx-sandbox");
        assert_eq!(default_hostname("My_Pod.v2"), "my-pod-v2");
        assert_eq!(default_hostname("__"), "pod");
        assert_eq!(default_hostname(&"a".repeat(100)).len(), 63);
    }

    #[test]
    fn port_mappings_are_checked() {
        let mut c = SandboxConfig::default();
        c.metadata.name = "n".into();
        c.metadata.namespace = "ns".into();
        c.metadata.uid = "u".into();
        assert!(validate(&c).is_ok());
        c.port_mappings.push(crate::sandbox::PortMapping {
            protocol: "tcp".into(),
            container_port: 0,
            host_port: 80,
            host_ip: String::new(),
        });
        assert!(validate(&c)
            .unwrap_err()
            .to_string()
            .contains("port_mappings[0]"));
        c.port_mappings[0].container_port = 80;
        c.port_mappings[0].protocol = "icmp".into();
        assert!(validate(&c).unwrap_err().to_string().contains("protocol"));
    }
}

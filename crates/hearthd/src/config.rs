//! hearthd's configuration: one typed TOML tree (`/etc/hearth/config.toml`
//! by default), `deny_unknown_fields`, then `validate()`. Every field is
//! documented in `config.example.toml`, which the tests parse.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hearth_runtime::sizing::SizingPolicy;
use serde::{Deserialize, Serialize};

/// Errors of loading or validating the config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this config.
    #[error("parsing {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said (names the key).
        message: String,
    },
    /// The values are inconsistent.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The whole config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The CRI socket.
    pub address: PathBuf,
    /// Persistent state (records, scratch disks, images).
    pub root: PathBuf,
    /// Runtime state (sockets, per-pod runtime dirs).
    pub state: PathBuf,
    /// Log filter (`info`, `debug`, `hearth=debug,info` ...).
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: String,
    /// Handler used when the kubelet sends none.
    pub default_runtime_handler: String,
    /// Runtime handler name → its settings.
    pub runtime_handlers: BTreeMap<String, HandlerConfig>,
    /// VM sizing.
    pub sizing: SizingPolicy,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// The per-pod scratch disk.
    pub scratch: ScratchConfig,
    /// The namespaces backend.
    pub namespaces: NamespacesConfig,
    /// Pod networking.
    pub network: NetworkConfig,
    /// Cgroups.
    pub cgroups: CgroupConfig,
    /// The firecracker backend.
    pub firecracker: crate::backend::firecracker::FirecrackerConfig,
    /// The qemu backend.
    pub qemu: crate::backend::qemu::QemuConfig,
    /// Registries: mirrors, plain-HTTP hosts, credentials.
    pub registry: hearth_image::RegistryConfig,
    /// The kubelet's volumes: where they are, which host paths may be
    /// copied into pods.
    pub volumes: hearth_runtime::container::volumes::VolumePolicy,
}

/// One runtime handler (RuntimeClass `handler`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerConfig {
    /// `firecracker`, `qemu` or `namespaces`.
    pub backend: String,
}

/// Timeouts, in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// How long a booting guest may take to answer its first call.
    pub boot_ms: u64,
    /// How long a stopping guest may take before it is forced.
    pub stop_ms: u64,
}

/// The scratch disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScratchConfig {
    /// Size (sparse) of each pod's scratch disk.
    pub size_mib: u64,
}

/// The namespaces backend.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NamespacesConfig {
    /// The static hearth-agent binary. Empty: `hearth-agent` beside the
    /// hearthd executable.
    pub agent_binary: PathBuf,
    /// Run privileged containers (off: there they would be root on the
    /// node, not in a VM).
    pub allow_privileged: bool,
}

/// Pod networking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Where the pods' named network namespaces are bind-mounted.
    pub netns_dir: PathBuf,
    /// The CNI network config directory (first `.conflist`/`.conf`/`.json`
    /// in lexical order, re-read on every pod).
    pub cni_conf_dir: PathBuf,
    /// Where the CNI plugin binaries are (searched in order).
    pub cni_bin_dirs: Vec<PathBuf>,
    /// How long one CNI plugin call may take.
    pub cni_plugin_timeout_ms: u64,
}

/// Cgroups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CgroupConfig {
    /// Where the host's cgroup filesystems are mounted.
    pub root: PathBuf,
    /// Parent of pods whose config names no cgroup_parent.
    pub default_parent: String,
}

impl Default for Config {
    fn default() -> Self {
        let handlers = ["firecracker", "namespaces", "qemu"]
            .into_iter()
            .map(|h| {
                (
                    h.to_owned(),
                    HandlerConfig {
                        backend: h.to_owned(),
                    },
                )
            })
            .collect();
        Config {
            address: "/run/hearth/hearth.sock".into(),
            root: "/var/lib/hearth".into(),
            state: "/run/hearth".into(),
            log_level: "info".into(),
            log_format: "text".into(),
            default_runtime_handler: "firecracker".into(),
            runtime_handlers: handlers,
            sizing: SizingPolicy::default(),
            timeouts: Timeouts::default(),
            scratch: ScratchConfig::default(),
            namespaces: NamespacesConfig::default(),
            network: NetworkConfig::default(),
            cgroups: CgroupConfig::default(),
            firecracker: Default::default(),
            qemu: Default::default(),
            registry: Default::default(),
            volumes: Default::default(),
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            boot_ms: 10_000,
            stop_ms: 10_000,
        }
    }
}

impl Default for ScratchConfig {
    fn default() -> Self {
        ScratchConfig {
            size_mib: 10 * 1024,
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            netns_dir: "/var/run/netns".into(),
            cni_conf_dir: "/etc/cni/net.d".into(),
            cni_bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
            cni_plugin_timeout_ms: 60_000,
        }
    }
}

impl Default for CgroupConfig {
    fn default() -> Self {
        CgroupConfig {
            root: "/sys/fs/cgroup".into(),
            default_parent: "/hearth".into(),
        }
    }
}

/// The backends this hearthd knows.
pub const BACKENDS: &[&str] = &["firecracker", "qemu", "namespaces"];

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values against each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if !self
            .runtime_handlers
            .contains_key(&self.default_runtime_handler)
        {
            return invalid(format!(
                "default_runtime_handler {:?} is not in runtime_handlers",
                self.default_runtime_handler
            ));
        }
        for (name, h) in &self.runtime_handlers {
            if !BACKENDS.contains(&h.backend.as_str()) {
                return invalid(format!(
                    "runtime_handlers.{name}.backend {:?} is not one of {BACKENDS:?}",
                    h.backend
                ));
            }
        }
        if !["text", "json"].contains(&self.log_format.as_str()) {
            return invalid(format!(
                "log_format {:?} must be text or json",
                self.log_format
            ));
        }
        if self.scratch.size_mib < 16 {
            return invalid("scratch.size_mib must be at least 16".into());
        }
        if self.timeouts.boot_ms == 0
            || self.timeouts.stop_ms == 0
            || self.network.cni_plugin_timeout_ms == 0
        {
            return invalid("timeouts must be above 0".into());
        }
        for (field, p) in [
            ("address", &self.address),
            ("root", &self.root),
            ("state", &self.state),
            ("network.netns_dir", &self.network.netns_dir),
        ] {
            if !p.is_absolute() {
                return invalid(format!("{field} must be an absolute path"));
            }
        }
        self.registry
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("registry: {e}")))?;
        self.volumes.validate().map_err(ConfigError::Invalid)?;
        self.sizing
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// The agent binary to run, resolving the empty default.
    pub fn agent_binary(&self) -> PathBuf {
        if !self.namespaces.agent_binary.as_os_str().is_empty() {
            return self.namespaces.agent_binary.clone();
        }
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("hearth-agent")))
            .unwrap_or_else(|| "hearth-agent".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_equals_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
        let config = Config::load(&path).unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = toml::from_str::<Config>("adress = \"/x\"").unwrap_err();
        assert!(err.to_string().contains("adress"), "{err}");
        let err = toml::from_str::<Config>("[sizing]\nmax_cpus = 3").unwrap_err();
        assert!(err.to_string().contains("max_cpus"), "{err}");
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = Config {
            default_runtime_handler: "kata".into(),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("kata"));
        c.default_runtime_handler = "namespaces".into();
        c.runtime_handlers.insert(
            "weird".into(),
            HandlerConfig {
                backend: "runc".into(),
            },
        );
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("runtime_handlers.weird"));
        c.runtime_handlers.remove("weird");
        c.root = "relative".into();
        assert!(c.validate().unwrap_err().to_string().contains("root"));
    }

    #[test]
    fn volume_policy_is_validated() {
        let mut c = Config::default();
        c.volumes.kubelet_root_dir = "kubelet".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("volumes.kubelet_root_dir"), "{err}");
        c.volumes.kubelet_root_dir = "/var/lib/kubelet".into();
        c.volumes.host_path_allow_list = vec!["/".into()];
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("host_path_allow_list"), "{err}");
        c.volumes.host_path_allow_list = vec!["/srv/shared".into()];
        c.volumes.max_volume_bytes = 64 << 20;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("max_volume_bytes"), "{err}");
        let err = toml::from_str::<Config>("[volumes]\nallow_list = []").unwrap_err();
        assert!(err.to_string().contains("allow_list"), "{err}");
    }
}

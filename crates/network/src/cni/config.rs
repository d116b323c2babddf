//! CNI configuration: where to look, and the network config list loaded from
//! the conf dir (first `.conflist` / `.conf` / `.json` in lexical order, like
//! containerd).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::NetworkError;

/// Where the CNI configuration and plugins are, and how long a plugin may run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniConfig {
    /// Directory holding network configs (`/etc/cni/net.d`).
    pub conf_dir: PathBuf,
    /// Directories searched for plugin binaries, in order (`CNI_PATH`).
    pub bin_dirs: Vec<PathBuf>,
    /// Time limit for one plugin invocation.
    pub plugin_timeout: Duration,
    /// Name of the pod's interface (`CNI_IFNAME`).
    pub ifname: String,
    /// Also run the `loopback` plugin (as its own network, before the main
    /// one, as containerd does). Not needed for namespaces made by
    /// [`crate::NetnsManager`], which already brings `lo` up.
    pub loopback: bool,
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
            plugin_timeout: Duration::from_secs(60),
            ifname: "eth0".to_string(),
            loopback: false,
        }
    }
}

/// A network config list: the exact configuration a chain was run with.
///
/// It is recorded in [`crate::PodNetwork`] so DEL uses the same config after
/// the conf dir changed or hearthd restarted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkConfigList {
    /// Network name.
    pub name: String,
    /// Spec version of the config.
    pub cni_version: String,
    /// Plugin configs in chain order; each has a string `type`.
    pub plugins: Vec<Value>,
    /// File it was loaded from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<PathBuf>,
}

impl NetworkConfigList {
    /// Parses a `.conflist` (or, with `single` set, a single-plugin `.conf`).
    pub fn parse(bytes: &[u8], path: &Path, single: bool) -> Result<Self, NetworkError> {
        let bad = |reason: String| NetworkError::InvalidNetworkConfig {
            path: path.to_path_buf(),
            reason,
        };
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        let Value::Object(obj) = value else {
            return Err(bad("not a JSON object".into()));
        };
        let string = |key: &str| -> Result<String, NetworkError> {
            match obj.get(key) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                _ => Err(bad(format!("{key:?} must be a non-empty string"))),
            }
        };
        let name = string("name")?;
        let cni_version = string("cniVersion")?;
        let plugins = if single {
            vec![Value::Object(obj.clone())]
        } else {
            match obj.get("plugins") {
                Some(Value::Array(p)) if !p.is_empty() => p.clone(),
                _ => return Err(bad("\"plugins\" must be a non-empty array".into())),
            }
        };
        for (i, p) in plugins.iter().enumerate() {
            match p.get("type") {
                Some(Value::String(t)) if valid_plugin_type(t) => {}
                _ => {
                    return Err(bad(format!(
                        "plugin {i} needs a \"type\" naming a plugin binary"
                    )))
                }
            }
        }
        Ok(NetworkConfigList {
            name,
            cni_version,
            plugins,
            source: Some(path.to_path_buf()),
        })
    }

    /// The plugin types, in chain order.
    pub fn plugin_types(&self) -> Vec<&str> {
        self.plugins
            .iter()
            .filter_map(|p| p.get("type").and_then(Value::as_str))
            .collect()
    }

    /// The built-in loopback network (`loopback` plugin only).
    pub fn loopback() -> Self {
        NetworkConfigList {
            name: "cni-loopback".to_string(),
            cni_version: "1.0.0".to_string(),
            plugins: vec![serde_json::json!({ "type": "loopback" })],
            source: None,
        }
    }

    /// The stdin config for plugin `index`: its own config plus the list's
    /// `name` and `cniVersion`, `prevResult` when given, and `runtimeConfig`
    /// restricted to the capabilities the plugin declares.
    pub(crate) fn plugin_stdin(
        &self,
        index: usize,
        prev_result: Option<&Value>,
        runtime_config: &Map<String, Value>,
    ) -> Vec<u8> {
        let mut conf = match self.plugins.get(index) {
            Some(Value::Object(o)) => o.clone(),
            _ => Map::new(),
        };
        conf.insert("name".into(), Value::String(self.name.clone()));
        conf.insert("cniVersion".into(), Value::String(self.cni_version.clone()));
        match prev_result {
            Some(prev) => {
                conf.insert("prevResult".into(), prev.clone());
            }
            None => {
                conf.remove("prevResult");
            }
        }
        let caps = conf
            .get("capabilities")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let rc: Map<String, Value> = runtime_config
            .iter()
            .filter(|(k, _)| caps.get(*k).and_then(Value::as_bool) == Some(true))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !rc.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(rc));
        }
        // Serialising a Map of Values cannot fail.
        serde_json::to_vec(&Value::Object(conf)).unwrap_or_default()
    }
}

/// Plugin types are file names in the bin dirs.
fn valid_plugin_type(t: &str) -> bool {
    !t.is_empty() && t != "." && t != ".." && !t.contains('/') && !t.contains('\0')
}

/// Loads the first network config in `conf_dir` (lexical order of
/// `*.conflist`, `*.conf`, `*.json`). Blocking (small reads).
pub fn load_network_config(conf_dir: &Path) -> Result<NetworkConfigList, NetworkError> {
    let entries = std::fs::read_dir(conf_dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            NetworkError::NoNetworkConfig {
                dir: conf_dir.to_path_buf(),
            }
        } else {
            NetworkError::io("read CNI conf dir", conf_dir, e)
        }
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conflist" | "conf" | "json")
            ) && p.is_file()
        })
        .collect();
    files.sort();
    let Some(first) = files.into_iter().next() else {
        return Err(NetworkError::NoNetworkConfig {
            dir: conf_dir.to_path_buf(),
        });
    };
    let bytes = std::fs::read(&first).map_err(|e| NetworkError::io("read", &first, e))?;
    let single = first.extension().and_then(|e| e.to_str()) != Some("conflist");
    NetworkConfigList::parse(&bytes, &first, single)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_file_in_lexical_order_wins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("20-b.conflist"),
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("10-a.conf"),
            r#"{"cniVersion":"0.4.0","name":"a","type":"ptp"}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("00-ignored.txt"), "x").unwrap();
        let list = load_network_config(dir.path()).unwrap();
        assert_eq!(list.name, "a");
        assert_eq!(list.plugin_types(), ["ptp"]);
        std::fs::remove_file(dir.path().join("10-a.conf")).unwrap();
        assert_eq!(load_network_config(dir.path()).unwrap().name, "b");
    }

    #[test]
    fn missing_or_empty_dir_is_no_config() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_network_config(dir.path()).unwrap_err();
        assert!(matches!(err, NetworkError::NoNetworkConfig { .. }), "{err}");
        let err = load_network_config(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(err, NetworkError::NoNetworkConfig { .. }), "{err}");
    }

    #[test]
    fn bad_configs_name_the_file() {
        let p = Path::new("/etc/cni/net.d/10-x.conflist");
        for bad in [
            "{",
            "[]",
            r#"{"cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}"#,
            r#"{"cniVersion":"1.0.0","name":"x","plugins":[]}"#,
            r#"{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"../sh"}]}"#,
            r#"{"cniVersion":"1.0.0","name":"x","plugins":[{}]}"#,
        ] {
            let err = NetworkConfigList::parse(bad.as_bytes(), p, false).unwrap_err();
            assert!(err.to_string().contains("10-x.conflist"), "{err}");
        }
    }

    #[test]
    fn stdin_filters_runtime_config_by_capability() {
        let list = NetworkConfigList::parse(
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[
                {"type":"bridge"},
                {"type":"portmap","capabilities":{"portMappings":true,"bandwidth":false}}]}"#,
            Path::new("x.conflist"),
            false,
        )
        .unwrap();
        let mut rc = Map::new();
        rc.insert("portMappings".into(), serde_json::json!([{"hostPort": 1}]));
        rc.insert("bandwidth".into(), serde_json::json!({}));
        let prev = serde_json::json!({"cniVersion":"1.0.0"});
        let first: Value = serde_json::from_slice(&list.plugin_stdin(0, None, &rc)).unwrap();
        assert_eq!(first["name"], "n");
        assert!(first.get("runtimeConfig").is_none());
        assert!(first.get("prevResult").is_none());
        let second: Value =
            serde_json::from_slice(&list.plugin_stdin(1, Some(&prev), &rc)).unwrap();
        assert_eq!(second["runtimeConfig"]["portMappings"][0]["hostPort"], 1);
        assert!(second["runtimeConfig"].get("bandwidth").is_none());
        assert_eq!(second["prevResult"]["cniVersion"], "1.0.0");
    }
}

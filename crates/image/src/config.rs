//! Registry configuration (the daemon's `[registry]` TOML table) and credentials.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::error::ImageError;

/// Default `max_manifest_bytes`: 4 MiB, as containerd.
pub const DEFAULT_MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// Registry settings, embedded by the daemon under `[registry]`.
///
/// ```toml
/// [registry]
/// insecure = ["registry.local:5000"]
/// credentials_file = "/etc/hearth/auth.json"
/// max_manifest_bytes = 4194304
/// allow_device_nodes = false
/// [registry.mirrors]
/// "docker.io" = ["https://mirror.example", "http://127.0.0.1:5001"]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Registry host → endpoints tried in order before the registry itself.
    /// An endpoint is `host[:port]`, optionally with `http://` (plain HTTP)
    /// or `https://` in front.
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Hosts (`host[:port]`) allowed to use plain HTTP. Registries on
    /// loopback addresses (127.0.0.0/8, ::1, localhost) always may.
    pub insecure: Vec<String>,
    /// A docker `config.json`-style file (`{"auths": {host: {auth|username+password|identitytoken|registrytoken}}}`)
    /// used when a pull comes without credentials.
    pub credentials_file: Option<PathBuf>,
    /// Largest manifest or index accepted, in bytes.
    pub max_manifest_bytes: u64,
    /// Whether layers may create character and block device nodes.
    pub allow_device_nodes: bool,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            mirrors: BTreeMap::new(),
            insecure: Vec::new(),
            credentials_file: None,
            max_manifest_bytes: DEFAULT_MAX_MANIFEST_BYTES,
            allow_device_nodes: false,
        }
    }
}

fn cfg_err(field: impl Into<String>, reason: impl Into<String>) -> ImageError {
    ImageError::Config {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A parsed mirror endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// `host[:port]`.
    pub host: String,
    /// Whether to speak plain HTTP.
    pub plain_http: bool,
}

impl RegistryConfig {
    /// Checks the values; the error names the field and the fix.
    pub fn validate(&self) -> Result<(), ImageError> {
        for (reg, eps) in &self.mirrors {
            if reg.is_empty() || reg.contains('/') {
                return Err(cfg_err(
                    format!("registry.mirrors.{reg:?}"),
                    "the key must be a registry host such as \"docker.io\"",
                ));
            }
            for ep in eps {
                parse_endpoint(ep).ok_or_else(|| {
                    cfg_err(
                        format!("registry.mirrors.{reg:?}"),
                        format!("endpoint {ep:?} must be host[:port] with an optional http:// or https:// prefix and no path"),
                    )
                })?;
            }
        }
        for h in &self.insecure {
            if h.is_empty() || h.contains('/') {
                return Err(cfg_err(
                    "registry.insecure",
                    format!("{h:?} must be host[:port]"),
                ));
            }
        }
        if self.max_manifest_bytes < 1024 {
            return Err(cfg_err(
                "registry.max_manifest_bytes",
                "must be at least 1024",
            ));
        }
        Ok(())
    }

    /// The endpoints to try for a registry: mirrors first, then the registry itself.
    pub(crate) fn endpoints(&self, registry: &str) -> Vec<Endpoint> {
        let mut out: Vec<Endpoint> = self
            .mirrors
            .get(registry)
            .into_iter()
            .flatten()
            .filter_map(|e| parse_endpoint(e))
            .map(|mut e| {
                e.plain_http = e.plain_http || self.allows_plain_http(&e.host);
                e
            })
            .collect();
        let host = if registry == crate::reference::DEFAULT_REGISTRY {
            "registry-1.docker.io".to_string()
        } else {
            registry.to_string()
        };
        out.push(Endpoint {
            plain_http: self.allows_plain_http(registry),
            host,
        });
        out
    }

    /// Whether plain HTTP is allowed for this host.
    pub(crate) fn allows_plain_http(&self, host: &str) -> bool {
        self.insecure.iter().any(|h| h == host) || is_loopback_host(host)
    }
}

fn parse_endpoint(s: &str) -> Option<Endpoint> {
    let (plain, rest) = if let Some(r) = s.strip_prefix("http://") {
        (true, r)
    } else if let Some(r) = s.strip_prefix("https://") {
        (false, r)
    } else {
        (false, s)
    };
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains('@') {
        return None;
    }
    Some(Endpoint {
        host: rest.to_string(),
        plain_http: plain,
    })
}

/// Whether `host[:port]` names a loopback address.
pub(crate) fn is_loopback_host(host_port: &str) -> bool {
    let host = if let Some(rest) = host_port.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host_port,
        }
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Credentials for one pull, as the CRI's `AuthConfig` carries them.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Username and password (HTTP basic, or exchanged for a bearer token).
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// A ready bearer token (`registry_token`; `identity_token` is sent the same way).
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credentials::Bearer(_) => write!(f, "Bearer(***)"),
        }
    }
}

impl Credentials {
    /// Builds credentials from the CRI `AuthConfig` fields (empty string = unset).
    /// Precedence: registry token, identity token, username/password, `auth`.
    pub fn from_auth_config(
        username: &str,
        password: &str,
        auth: &str,
        identity_token: &str,
        registry_token: &str,
    ) -> Result<Option<Credentials>, ImageError> {
        if !registry_token.is_empty() {
            return Ok(Some(Credentials::Bearer(registry_token.to_string())));
        }
        if !identity_token.is_empty() {
            return Ok(Some(Credentials::Bearer(identity_token.to_string())));
        }
        if !username.is_empty() {
            return Ok(Some(Credentials::Basic {
                username: username.to_string(),
                password: password.to_string(),
            }));
        }
        if !auth.is_empty() {
            return decode_auth(auth)
                .map(Some)
                .ok_or_else(|| cfg_err("auth", "must be base64 of \"username:password\""));
        }
        Ok(None)
    }

    pub(crate) fn to_registry_auth(&self) -> oci_client::secrets::RegistryAuth {
        match self {
            Credentials::Basic { username, password } => {
                oci_client::secrets::RegistryAuth::Basic(username.clone(), password.clone())
            }
            Credentials::Bearer(t) => oci_client::secrets::RegistryAuth::Bearer(t.clone()),
        }
    }
}

fn decode_auth(auth: &str) -> Option<Credentials> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some(Credentials::Basic {
        username: u.to_string(),
        password: p.to_string(),
    })
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
}

#[derive(Deserialize, Default)]
struct DockerAuth {
    #[serde(default)]
    auth: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    identitytoken: String,
    #[serde(default)]
    registrytoken: String,
}

/// Looks up `registry` in a docker `config.json`-style file.
pub(crate) fn credentials_from_file(
    path: &Path,
    registry: &str,
) -> Result<Option<Credentials>, ImageError> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ImageError::io("reading credentials file", path, e)),
    };
    let cfg: DockerConfig = serde_json::from_slice(&data).map_err(|e| {
        cfg_err(
            format!("registry.credentials_file ({})", path.display()),
            format!("not a docker config.json: {e}"),
        )
    })?;
    let key_matches = |k: &str| {
        let k = k
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let host = k.split('/').next().unwrap_or(k);
        host == registry
            || (registry == crate::reference::DEFAULT_REGISTRY
                && matches!(host, "index.docker.io" | "registry-1.docker.io"))
    };
    let Some((_, a)) = cfg.auths.iter().find(|(k, _)| key_matches(k)) else {
        return Ok(None);
    };
    Credentials::from_auth_config(
        &a.username,
        &a.password,
        &a.auth,
        &a.identitytoken,
        &a.registrytoken,
    )
    .map_err(|_| {
        cfg_err(
            format!("registry.credentials_file ({})", path.display()),
            format!("auths.{registry}.auth must be base64 of \"username:password\""),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        assert!(is_loopback_host("127.0.0.1:5000"));
        assert!(is_loopback_host("127.1.2.3"));
        assert!(is_loopback_host("localhost:80"));
        assert!(is_loopback_host("[::1]:5000"));
        assert!(!is_loopback_host("10.0.0.1:5000"));
        assert!(!is_loopback_host("docker.io"));
    }

    #[test]
    fn endpoints_mirrors_first() {
        let mut c = RegistryConfig::default();
        c.mirrors.insert(
            "docker.io".into(),
            vec!["http://127.0.0.1:5001".into(), "mirror.example".into()],
        );
        c.validate().unwrap();
        let e = c.endpoints("docker.io");
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].host, "127.0.0.1:5001");
        assert!(e[0].plain_http);
        assert!(!e[1].plain_http);
        assert_eq!(e[2].host, "registry-1.docker.io");
        c.mirrors.insert("x".into(), vec!["http://a/b".into()]);
        assert!(c.validate().is_err());
    }

    #[test]
    fn auth_config_precedence_and_auth_field() {
        let c = Credentials::from_auth_config("", "", "dTpw", "", "").unwrap();
        assert_eq!(
            c,
            Some(Credentials::Basic {
                username: "u".into(),
                password: "p".into()
            })
        );
        let c = Credentials::from_auth_config("u", "p", "", "id", "reg").unwrap();
        assert_eq!(c, Some(Credentials::Bearer("reg".into())));
        assert!(Credentials::from_auth_config("", "", "!!", "", "").is_err());
    }

    #[test]
    fn credentials_file_lookup() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("auth.json");
        std::fs::write(
            &p,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},"127.0.0.1:5000":{"username":"a","password":"b"}}}"#,
        )
        .unwrap();
        assert!(matches!(
            credentials_from_file(&p, "docker.io").unwrap(),
            Some(Credentials::Basic { username, .. }) if username == "u"
        ));
        assert!(matches!(
            credentials_from_file(&p, "127.0.0.1:5000").unwrap(),
            Some(Credentials::Basic { username, .. }) if username == "a"
        ));
        assert_eq!(credentials_from_file(&p, "other").unwrap(), None);
    }
}

//! CNI: load the network config, run the plugin chain for a pod, record what
//! was done so DEL works later, and tear it down again.
//!
//! - [`config`]: [`CniConfig`] and the network config list from the conf dir.
//! - `exec`: one plugin invocation (environment, stdin, timeout, errors).
//! - [`result`]: parsing CNI 0.3.x / 0.4.0 / 1.x results.

pub mod config;
pub(crate) mod exec;
pub mod result;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tracing::Instrument;

use self::config::{load_network_config, CniConfig, NetworkConfigList};
use self::exec::{Command, Invocation};
use self::result::{CniResult, IpNet};
use crate::error::NetworkError;
use crate::netns::is_nsfs;

/// Attempts for a DEL chain during teardown.
const DEL_ATTEMPTS: u32 = 3;

/// Transport protocol of a port mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

/// A host port forwarded to a pod port (the `portMappings` capability).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Protocol.
    pub protocol: Protocol,
    /// Port inside the pod.
    pub container_port: u16,
    /// Port on the host; 0 means "not mapped" (skipped, as in containerd).
    pub host_port: u16,
    /// Host address to bind; `None` means all addresses.
    pub host_ip: Option<IpAddr>,
}

/// Traffic shaping (the `bandwidth` capability), in bits per second / bits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bandwidth {
    /// Ingress rate, bits/s.
    pub ingress_rate: u64,
    /// Ingress burst, bits.
    pub ingress_burst: u64,
    /// Egress rate, bits/s.
    pub egress_rate: u64,
    /// Egress burst, bits.
    pub egress_burst: u64,
}

/// DNS settings passed to plugins (the `dns` capability).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    /// Name servers.
    pub servers: Vec<String>,
    /// Search domains.
    pub searches: Vec<String>,
    /// resolv.conf options.
    pub options: Vec<String>,
}

/// What [`Cni::setup`] needs to know about the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodNetworkRequest {
    /// Sandbox id (`CNI_CONTAINERID`, `K8S_POD_INFRA_CONTAINER_ID`).
    pub sandbox_id: String,
    /// Pod name.
    pub pod_name: String,
    /// Pod namespace.
    pub pod_namespace: String,
    /// Pod UID.
    pub pod_uid: String,
    /// The pod's bind-mounted network namespace.
    pub netns_path: PathBuf,
    /// Port mappings.
    pub port_mappings: Vec<PortMapping>,
    /// Traffic shaping.
    pub bandwidth: Option<Bandwidth>,
    /// DNS settings.
    pub dns: Option<DnsConfig>,
}

/// One network config list run against the pod, with its result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttachedNetwork {
    /// The exact config the chain ran with.
    pub config: NetworkConfigList,
    /// The chain's final result, parsed.
    pub result: CniResult,
    /// The same result as the last plugin printed it (DEL's `prevResult`).
    pub raw_result: Value,
}

/// Everything [`Cni::teardown`] needs, even after a config change or a
/// restart: the daemon persists this (serde) with the sandbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PodNetwork {
    /// `CNI_CONTAINERID`.
    pub sandbox_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`.
    pub cni_args: String,
    /// The `runtimeConfig` offered to plugins (DEL gets the same).
    pub runtime_config: Map<String, Value>,
    /// Networks in the order they were added (loopback first, if used).
    pub networks: Vec<AttachedNetwork>,
}

impl PodNetwork {
    /// The main network's result (the last network added).
    pub fn result(&self) -> Option<&CniResult> {
        self.networks.last().map(|n| &n.result)
    }

    /// The pod's IPs on its interface: the first is the primary pod IP, the
    /// rest are additional IPs (dual stack).
    pub fn ips(&self) -> Vec<IpNet> {
        self.result()
            .map(|r| r.pod_ips(&self.ifname))
            .unwrap_or_default()
    }
}

/// Runs CNI plugin chains for pods.
#[derive(Debug)]
pub struct Cni {
    config: CniConfig,
    /// The config last seen, to log when it changes.
    last_seen: std::sync::Mutex<Option<NetworkConfigList>>,
}

impl Cni {
    /// A CNI runner with this configuration. Nothing is read until used:
    /// the conf dir is re-read on every call, so config changes apply to the
    /// next pod (teardown uses the config recorded in [`PodNetwork`]).
    pub fn new(config: CniConfig) -> Self {
        Cni {
            config,
            last_seen: std::sync::Mutex::new(None),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CniConfig {
        &self.config
    }

    /// Whether pods can be networked now (CRI `NetworkReady`): a valid
    /// network config exists and every plugin it names is installed. The
    /// error's message is the reason to report. Blocking (small reads).
    pub fn status(&self) -> Result<(), NetworkError> {
        let list = load_network_config(&self.config.conf_dir)?;
        check_plugins(&self.config, &list)?;
        self.note_config(&list);
        Ok(())
    }

    /// Logs when the network config in use changes (the conf dir is read
    /// afresh on every call, so a change simply applies to the next pod).
    fn note_config(&self, list: &NetworkConfigList) {
        let mut last = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_ref() != Some(list) {
            tracing::info!(network = %list.name, source = ?list.source,
                plugins = ?list.plugin_types(), "using CNI network config");
            *last = Some(list.clone());
        }
    }

    /// Loads the network config list that the next [`Cni::setup`] would use.
    /// Blocking (small reads).
    pub fn load_network(&self) -> Result<NetworkConfigList, NetworkError> {
        load_network_config(&self.config.conf_dir)
    }

    /// Runs ADD for the pod (loopback first if configured, then the network
    /// from the conf dir). On failure every plugin that may have done
    /// something gets a DEL, and the error of the failed ADD is returned.
    ///
    /// Not cancel-safe: a dropped future kills the running plugin but skips
    /// the rollback. Run it in a spawned task, or follow a cancellation with
    /// [`Cni::teardown_unrecorded`].
    pub async fn setup(&self, req: &PodNetworkRequest) -> Result<PodNetwork, NetworkError> {
        let span = tracing::info_span!("cni_setup", pod_id = %req.sandbox_id);
        self.setup_inner(req).instrument(span).await
    }

    async fn setup_inner(&self, req: &PodNetworkRequest) -> Result<PodNetwork, NetworkError> {
        let cni_args = validate_request(req)?;
        // Small blocking reads (config, plugin stats, statfs): off the runtime.
        let netns = req.netns_path.clone();
        let config = self.config.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let list = load_network_config(&config.conf_dir)?;
            check_plugins(&config, &list)?;
            if !is_nsfs(&netns) {
                return Err(NetworkError::InvalidRequest {
                    field: "netns_path",
                    reason: format!("{} is not a network namespace", netns.display()),
                });
            }
            Ok(list)
        })
        .await
        .map_err(|_| NetworkError::WorkerDied {
            path: self.config.conf_dir.clone(),
        })?;
        let list = checked?;
        self.note_config(&list);

        let mut lists = Vec::new();
        if self.config.loopback {
            lists.push(NetworkConfigList::loopback());
        }
        lists.push(list);

        let mut record = PodNetwork {
            sandbox_id: req.sandbox_id.clone(),
            ifname: self.config.ifname.clone(),
            cni_args,
            runtime_config: runtime_config(req),
            networks: Vec::new(),
        };
        let netns = req.netns_path.to_string_lossy().into_owned();
        for list in lists {
            match self.add_chain(&record, &netns, &list).await {
                Ok(attached) => record.networks.push(attached),
                Err((err, prev)) => {
                    tracing::warn!(error = %err, network = %list.name,
                        "CNI ADD failed; rolling back");
                    let inv = self.invocation(&record, Command::Del, &netns);
                    if let Err(e) = del_chain(&inv, &list, prev.as_ref(), &record).await {
                        tracing::warn!(error = %e, network = %list.name, "rollback DEL failed");
                    }
                    for done in record.networks.iter().rev() {
                        if let Err(e) =
                            del_chain(&inv, &done.config, Some(&done.raw_result), &record).await
                        {
                            tracing::warn!(error = %e, network = %done.config.name,
                                "rollback DEL failed");
                        }
                    }
                    return Err(err);
                }
            }
        }
        tracing::info!(ips = ?record.ips(), "pod network set up");
        Ok(record)
    }

    /// ADD through the chain; on error also returns the last good result
    /// (for the rollback DEL's `prevResult`).
    async fn add_chain(
        &self,
        record: &PodNetwork,
        netns: &str,
        list: &NetworkConfigList,
    ) -> Result<AttachedNetwork, (NetworkError, Option<Value>)> {
        let inv = self.invocation(record, Command::Add, netns);
        let mut prev: Option<(CniResult, Value)> = None;
        for (i, plugin_type) in list.plugin_types().into_iter().enumerate() {
            let prev_raw = prev.as_ref().map(|(_, raw)| raw.clone());
            let stdin = list.plugin_stdin(i, prev_raw.as_ref(), &record.runtime_config);
            let (bin, out) = exec::run_plugin(&inv, plugin_type, stdin)
                .await
                .map_err(|e| (e, prev_raw.clone()))?;
            let parsed = CniResult::parse(&out).map_err(|reason| {
                (
                    NetworkError::MalformedResult {
                        plugin: bin.clone(),
                        reason,
                    },
                    prev_raw.clone(),
                )
            })?;
            prev = Some(parsed);
        }
        let Some((result, raw_result)) = prev else {
            // NetworkConfigList::parse guarantees at least one plugin.
            return Err((
                NetworkError::InvalidNetworkConfig {
                    path: list.source.clone().unwrap_or_default(),
                    reason: "no plugins".into(),
                },
                None,
            ));
        };
        Ok(AttachedNetwork {
            config: list.clone(),
            result,
            raw_result,
        })
    }

    /// Runs DEL for every network recorded in `net`, last added first, with
    /// the recorded configs. Idempotent; retried; a missing `netns_path` is
    /// tolerated (plugins get an empty `CNI_NETNS` and release what they
    /// hold outside it, such as IP allocations and iptables rules).
    pub async fn teardown(&self, net: &PodNetwork, netns_path: &Path) -> Result<(), NetworkError> {
        let span = tracing::info_span!("cni_teardown", pod_id = %net.sandbox_id);
        async {
            let netns = netns_arg(netns_path).await;
            let inv = self.invocation(net, Command::Del, &netns);
            let mut first_err = None;
            for attached in net.networks.iter().rev() {
                let res = with_retries(|| {
                    del_chain(&inv, &attached.config, Some(&attached.raw_result), net)
                })
                .await;
                if let Err(e) = res {
                    first_err.get_or_insert(e);
                }
            }
            match first_err {
                None => {
                    tracing::info!("pod network torn down");
                    Ok(())
                }
                Some(e) => Err(e),
            }
        }
        .instrument(span)
        .await
    }

    /// DEL with the *current* config, for a pod whose [`PodNetwork`] was
    /// never recorded (hearthd stopped during ADD). Same tolerance as
    /// [`Cni::teardown`].
    pub async fn teardown_unrecorded(&self, req: &PodNetworkRequest) -> Result<(), NetworkError> {
        let cni_args = validate_request(req)?;
        let conf_dir = self.config.conf_dir.clone();
        let list = tokio::task::spawn_blocking(move || load_network_config(&conf_dir))
            .await
            .map_err(|_| NetworkError::WorkerDied {
                path: self.config.conf_dir.clone(),
            })??;
        let mut networks = Vec::new();
        if self.config.loopback {
            networks.push(NetworkConfigList::loopback());
        }
        networks.push(list);
        let record = PodNetwork {
            sandbox_id: req.sandbox_id.clone(),
            ifname: self.config.ifname.clone(),
            cni_args,
            runtime_config: runtime_config(req),
            networks: Vec::new(),
        };
        let netns = netns_arg(&req.netns_path).await;
        let inv = self.invocation(&record, Command::Del, &netns);
        let mut first_err = None;
        for list in networks.iter().rev() {
            if let Err(e) = with_retries(|| del_chain(&inv, list, None, &record)).await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn invocation<'a>(
        &'a self,
        record: &'a PodNetwork,
        command: Command,
        netns: &'a str,
    ) -> Invocation<'a> {
        Invocation {
            command,
            container_id: &record.sandbox_id,
            netns,
            ifname: &record.ifname,
            args: &record.cni_args,
            bin_dirs: &self.config.bin_dirs,
            timeout: self.config.plugin_timeout,
        }
    }
}

/// Every plugin of `list` (and `loopback` if configured) is installed.
fn check_plugins(config: &CniConfig, list: &NetworkConfigList) -> Result<(), NetworkError> {
    let mut types = list.plugin_types();
    if config.loopback {
        types.push("loopback");
    }
    match exec::missing_plugins(&config.bin_dirs, &types).first() {
        None => Ok(()),
        Some(missing) => Err(NetworkError::PluginNotFound {
            plugin: missing.to_string(),
            path: exec::describe_dirs(&config.bin_dirs),
        }),
    }
}

/// `CNI_NETNS` for DEL: the path if it is still a namespace, else empty.
async fn netns_arg(path: &Path) -> String {
    let p = path.to_path_buf();
    let alive = tokio::task::spawn_blocking(move || is_nsfs(&p))
        .await
        .unwrap_or(false);
    if alive {
        path.to_string_lossy().into_owned()
    } else {
        tracing::info!(netns = %path.display(), "netns gone; DEL without CNI_NETNS");
        String::new()
    }
}

async fn with_retries<F, Fut>(mut f: F) -> Result<(), NetworkError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), NetworkError>>,
{
    let mut attempt = 1;
    loop {
        match f().await {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= DEL_ATTEMPTS => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, attempt, "CNI DEL failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                attempt += 1;
            }
        }
    }
}

/// DEL through the chain in reverse. Every plugin runs even if one fails;
/// the first error is returned.
async fn del_chain(
    inv: &Invocation<'_>,
    list: &NetworkConfigList,
    prev: Option<&Value>,
    record: &PodNetwork,
) -> Result<(), NetworkError> {
    let mut first_err = None;
    for (i, plugin_type) in list.plugin_types().into_iter().enumerate().rev() {
        let stdin = list.plugin_stdin(i, prev, &record.runtime_config);
        if let Err(e) = exec::run_plugin(inv, plugin_type, stdin).await {
            tracing::warn!(error = %e, plugin = plugin_type, "CNI DEL failed");
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Checks what goes into the environment and returns `CNI_ARGS`.
fn validate_request(req: &PodNetworkRequest) -> Result<String, NetworkError> {
    let id = &req.sandbox_id;
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(NetworkError::InvalidRequest {
            field: "sandbox_id",
            reason: format!("{id:?} must be non-empty [A-Za-z0-9_.-]"),
        });
    }
    let fields = [
        ("pod_namespace", "K8S_POD_NAMESPACE", &req.pod_namespace),
        ("pod_name", "K8S_POD_NAME", &req.pod_name),
        ("pod_uid", "K8S_POD_UID", &req.pod_uid),
    ];
    let mut args = String::from("IgnoreUnknown=1");
    for (field, key, value) in fields {
        if value.contains([';', '=', '\0']) {
            return Err(NetworkError::InvalidRequest {
                field,
                reason: format!("{value:?} must not contain ';', '=' or NUL"),
            });
        }
        args.push_str(&format!(";{key}={value}"));
        if key == "K8S_POD_NAME" {
            args.push_str(&format!(";K8S_POD_INFRA_CONTAINER_ID={id}"));
        }
    }
    Ok(args)
}

/// The `runtimeConfig` capabilities Hearth offers.
fn runtime_config(req: &PodNetworkRequest) -> Map<String, Value> {
    let mut rc = Map::new();
    let ports: Vec<Value> = req
        .port_mappings
        .iter()
        .filter(|p| p.host_port != 0)
        .map(|p| {
            let mut m = json!({
                "hostPort": p.host_port,
                "containerPort": p.container_port,
                "protocol": p.protocol,
            });
            if let Some(ip) = p.host_ip {
                m["hostIP"] = json!(ip.to_string());
            }
            m
        })
        .collect();
    if !ports.is_empty() {
        rc.insert("portMappings".into(), Value::Array(ports));
    }
    if let Some(b) = &req.bandwidth {
        rc.insert(
            "bandwidth".into(),
            json!({
                "ingressRate": b.ingress_rate, "ingressBurst": b.ingress_burst,
                "egressRate": b.egress_rate, "egressBurst": b.egress_burst,
            }),
        );
    }
    if let Some(d) = &req.dns {
        rc.insert(
            "dns".into(),
            json!({ "servers": d.servers, "searches": d.searches, "options": d.options }),
        );
    }
    rc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> PodNetworkRequest {
        PodNetworkRequest {
            sandbox_id: "abc123".into(),
            pod_name: "web".into(),
            pod_namespace: "default".into(),
            pod_uid: "u-1".into(),
            netns_path: "/run/netns/x".into(),
            port_mappings: vec![
                PortMapping {
                    protocol: Protocol::Tcp,
                    container_port: 80,
                    host_port: 8080,
                    host_ip: Some("127.0.0.1".parse().unwrap()),
                },
                PortMapping {
                    protocol: Protocol::Udp,
                    container_port: 53,
                    host_port: 0,
                    host_ip: None,
                },
            ],
            bandwidth: None,
            dns: Some(DnsConfig {
                servers: vec!["10.96.0.10".into()],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn cni_args_in_kubernetes_format() {
        assert_eq!(
            validate_request(&req()).unwrap(),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;\
             K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=u-1"
        );
    }

    #[test]
    fn bad_request_fields_are_named() {
        let mut r = req();
        r.pod_name = "a;b=c".into();
        assert!(validate_request(&r)
            .unwrap_err()
            .to_string()
            .contains("pod_name"));
        let mut r = req();
        r.sandbox_id = "../x".into();
        assert!(validate_request(&r)
            .unwrap_err()
            .to_string()
            .contains("sandbox_id"));
    }

    #[test]
    fn runtime_config_skips_unmapped_ports() {
        let rc = runtime_config(&req());
        assert_eq!(
            rc["portMappings"],
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}])
        );
        assert_eq!(rc["dns"]["servers"], json!(["10.96.0.10"]));
        assert!(!rc.contains_key("bandwidth"));
    }

    #[test]
    fn pod_network_round_trips_through_serde() {
        let (result, raw) = CniResult::parse(
            br#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/x"}],
                 "ips":[{"address":"10.0.0.2/24","interface":0}]}"#,
        )
        .unwrap();
        let net = PodNetwork {
            sandbox_id: "abc".into(),
            ifname: "eth0".into(),
            cni_args: "IgnoreUnknown=1".into(),
            runtime_config: Map::new(),
            networks: vec![AttachedNetwork {
                config: NetworkConfigList::loopback(),
                result,
                raw_result: raw,
            }],
        };
        let back: PodNetwork = serde_json::from_str(&serde_json::to_string(&net).unwrap()).unwrap();
        assert_eq!(back, net);
        assert_eq!(back.ips()[0].to_string(), "10.0.0.2/24");
    }
}

//! Kubernetes manifests for `hearthctl run`: a Pod (plus the Secrets and
//! ConfigMaps its volumes name) parsed with `k8s-openapi`, and the CRI
//! configs the kubelet would send for it: RunPodSandbox's PodSandboxConfig
//! and each container's ContainerConfig (without mounts: `kubelet` adds
//! those once the volumes are laid out).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSpec, Secret};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The kubelet's CFS period (`quotaPeriod`), in microseconds.
const CPU_PERIOD: i64 = 100_000;
/// The kubelet's bounds for cpu shares and quota (`MinShares`, `MaxShares`,
/// `MinQuotaPeriod`).
const MIN_SHARES: i64 = 2;
const MAX_SHARES: i64 = 262_144;
const MIN_QUOTA: i64 = 1_000;

/// The Pod and the objects its volumes may refer to.
#[derive(Debug, Default)]
pub struct Manifest {
    pub pod: Option<Pod>,
    pub secrets: BTreeMap<String, Secret>,
    pub config_maps: BTreeMap<String, ConfigMap>,
}

impl Manifest {
    /// Reads the pod's file and any files of further objects (`--objects`).
    pub fn load(pod_file: &Path, objects: &[impl AsRef<Path>]) -> Result<Manifest> {
        let mut manifest = Manifest::default();
        for path in std::iter::once(pod_file).chain(objects.iter().map(AsRef::as_ref)) {
            let text = if path == Path::new("-") {
                std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
            } else {
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?
            };
            manifest
                .add_documents(&text)
                .with_context(|| format!("manifest {}", path.display()))?;
        }
        if manifest.pod.is_none() {
            bail!(
                "{}: no `kind: Pod` document (hearthctl run takes a Pod manifest)",
                pod_file.display()
            );
        }
        Ok(manifest)
    }

    /// Adds every `---` separated document of `text`.
    pub fn add_documents(&mut self, text: &str) -> Result<()> {
        for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let what = || format!("document {}", index + 1);
            let mut value: serde_yaml::Value =
                serde::Deserialize::deserialize(doc).with_context(what)?;
            octal_modes(&mut value);
            if value.is_null() {
                continue;
            }
            let kind = value
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or_default()
                .to_string();
            match kind.as_str() {
                "Pod" => {
                    let pod: Pod = typed(value).with_context(what)?;
                    if self.pod.is_some() {
                        bail!("{}: a second Pod; give one Pod per run", what());
                    }
                    self.pod = Some(pod);
                }
                "Secret" => {
                    let secret: Secret = typed(value).with_context(what)?;
                    let name = secret.metadata.name.clone().unwrap_or_default();
                    self.secrets.insert(name, secret);
                }
                "ConfigMap" => {
                    let map: ConfigMap = typed(value).with_context(what)?;
                    let name = map.metadata.name.clone().unwrap_or_default();
                    self.config_maps.insert(name, map);
                }
                "" => bail!("{}: no `kind`", what()),
                other => bail!(
                    "{}: kind {other} is not supported (only Pod, Secret and ConfigMap)",
                    what()
                ),
            }
        }
        Ok(())
    }
}

/// File modes written the way Kubernetes manifests write them, `0400`, are
/// octal in YAML 1.1 (kubectl's) but strings in YAML 1.2 (serde_yaml's):
/// turn every `mode` / `defaultMode` string of octal digits into its number.
fn octal_modes(value: &mut serde_yaml::Value) {
    match value {
        serde_yaml::Value::Mapping(map) => {
            for (key, v) in map.iter_mut() {
                let is_mode = matches!(key.as_str(), Some("mode" | "defaultMode"));
                let octal = v.as_str().and_then(|text| {
                    let digits = text.strip_prefix("0o").or_else(|| text.strip_prefix('0'))?;
                    u32::from_str_radix(digits, 8).ok()
                });
                match octal {
                    Some(n) if is_mode => *v = serde_yaml::Value::from(n),
                    _ => octal_modes(v),
                }
            }
        }
        serde_yaml::Value::Sequence(items) => items.iter_mut().for_each(octal_modes),
        _ => {}
    }
}

/// Deserializes a document, naming the path of a bad field.
fn typed<T: serde::de::DeserializeOwned>(value: serde_yaml::Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        anyhow::Error::new(err.into_inner()).context(format!("at {path}"))
    })
}

/// The pod's spec (a Pod without one is refused when it is loaded).
pub fn spec(pod: &Pod) -> Result<&PodSpec> {
    let spec = pod.spec.as_ref().context("the Pod has no spec")?;
    if spec.containers.is_empty() {
        bail!("spec.containers is empty");
    }
    Ok(spec)
}

/// The pod's name and namespace (`default` when none is given).
pub fn name_and_namespace(pod: &Pod) -> Result<(String, String)> {
    let name = pod
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .context("metadata.name is required")?;
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into());
    Ok((name, namespace))
}

/// Parses a Kubernetes quantity and returns it times `scale`, rounded up
/// (`scale` 1000 gives millis: "250m" → 250, "1.5" → 1500; 1 gives units:
/// "64Mi" → 67108864). Negative or malformed quantities are errors.
pub fn quantity(q: &str, scale: u128) -> Result<u128> {
    let bad = || anyhow::anyhow!("invalid quantity {q:?}");
    let q = q.trim();
    let text = q.strip_prefix('+').unwrap_or(q);
    if text.starts_with('-') {
        bail!("negative quantity {q:?}");
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    let digits: u128 = format!("{whole}{frac}").parse().map_err(|_| bad())?;
    // value = digits * mul / 10^div
    let (mut mul, mut div): (u128, i32) = (1, frac.len() as i32);
    match suffix {
        "" => {}
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
            let power = "KMGTPE".find(&suffix[..1]).unwrap_or(0) as u32 + 1;
            mul = 1024u128.pow(power);
        }
        "n" => div += 9,
        "u" => div += 6,
        "m" => div += 3,
        "k" => div -= 3,
        "M" => div -= 6,
        "G" => div -= 9,
        "T" => div -= 12,
        "P" => div -= 15,
        "E" => div -= 18,
        s if s.starts_with(['e', 'E']) => {
            let exp: i32 = s[1..].parse().map_err(|_| bad())?;
            div -= exp;
        }
        _ => return Err(bad()),
    }
    let too_big = || anyhow::anyhow!("quantity {q:?} is too large");
    let mut value = digits
        .checked_mul(mul)
        .and_then(|v| v.checked_mul(scale))
        .ok_or_else(too_big)?;
    if div < 0 {
        value = value
            .checked_mul(10u128.checked_pow(div.unsigned_abs()).ok_or_else(too_big)?)
            .ok_or_else(too_big)?;
    } else if div > 0 {
        let d = 10u128.checked_pow(div as u32).unwrap_or(u128::MAX);
        value = value.div_ceil(d);
    }
    if value > i64::MAX as u128 {
        return Err(too_big());
    }
    Ok(value)
}

/// cpu (millicores) and memory (bytes) of one `requests` or `limits` map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Amounts {
    pub milli_cpu: Option<i64>,
    pub memory: Option<i64>,
}

impl Amounts {
    fn of(map: Option<&BTreeMap<String, Quantity>>, field: &str) -> Result<Amounts> {
        let get = |key: &str, scale: u128| -> Result<Option<i64>> {
            map.and_then(|m| m.get(key))
                .map(|q| {
                    quantity(&q.0, scale)
                        .map(|v| v as i64)
                        .with_context(|| format!("{field}.{key}"))
                })
                .transpose()
        };
        Ok(Amounts {
            milli_cpu: get("cpu", 1000)?,
            memory: get("memory", 1)?,
        })
    }

    fn add(self, other: Amounts) -> Amounts {
        let sum = |a: Option<i64>, b: Option<i64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.saturating_add(b)),
            (a, b) => a.or(b),
        };
        Amounts {
            milli_cpu: sum(self.milli_cpu, other.milli_cpu),
            memory: sum(self.memory, other.memory),
        }
    }

    fn max(self, other: Amounts) -> Amounts {
        let max = |a: Option<i64>, b: Option<i64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        Amounts {
            milli_cpu: max(self.milli_cpu, other.milli_cpu),
            memory: max(self.memory, other.memory),
        }
    }
}

/// A container's requests and limits, with the API server's defaulting (a
/// request left out while a limit is given equals the limit).
pub fn requests_and_limits(c: &Container) -> Result<(Amounts, Amounts)> {
    let r = c.resources.as_ref();
    let field = format!("container {}: resources", c.name);
    let limits = Amounts::of(
        r.and_then(|r| r.limits.as_ref()),
        &format!("{field}.limits"),
    )?;
    let mut requests = Amounts::of(
        r.and_then(|r| r.requests.as_ref()),
        &format!("{field}.requests"),
    )?;
    requests.milli_cpu = requests.milli_cpu.or(limits.milli_cpu);
    requests.memory = requests.memory.or(limits.memory);
    Ok((requests, limits))
}

/// The CRI resources the kubelet computes from a cpu request, a cpu limit
/// and a memory limit (`calculateLinuxResources`): shares from the request
/// (the limit when there is no request), quota over a 100 ms period from the
/// limit, the memory limit in bytes.
pub fn linux_resources(
    milli_request: Option<i64>,
    milli_limit: Option<i64>,
    memory_limit: Option<i64>,
) -> cri::LinuxContainerResources {
    let shares_from = match (milli_request, milli_limit) {
        (None | Some(0), Some(limit)) if limit > 0 => limit,
        (request, _) => request.unwrap_or(0),
    };
    let cpu_shares = if shares_from == 0 {
        MIN_SHARES
    } else {
        (shares_from * 1024 / 1000).clamp(MIN_SHARES, MAX_SHARES)
    };
    let cpu_quota = match milli_limit {
        None | Some(0) => 0,
        Some(limit) => (limit * CPU_PERIOD / 1000).max(MIN_QUOTA),
    };
    cri::LinuxContainerResources {
        cpu_period: CPU_PERIOD,
        cpu_quota,
        cpu_shares,
        memory_limit_in_bytes: memory_limit.unwrap_or(0),
        ..Default::default()
    }
}

/// The pod-level resources the kubelet sends in RunPodSandbox (≥ 1.23):
/// requests and limits summed over the containers, or the largest init
/// container's when that is more; and the RuntimeClass-style overhead.
pub fn pod_resources(
    spec: &PodSpec,
) -> Result<(
    cri::LinuxContainerResources,
    Option<cri::LinuxContainerResources>,
)> {
    let mut requests = Amounts::default();
    let mut limits = Amounts::default();
    for c in &spec.containers {
        let (r, l) = requests_and_limits(c)?;
        requests = requests.add(r);
        limits = limits.add(l);
    }
    for c in spec.init_containers.iter().flatten() {
        let (r, l) = requests_and_limits(c)?;
        requests = requests.max(r);
        limits = limits.max(l);
    }
    let overhead = match &spec.overhead {
        Some(o) => {
            let o = Amounts::of(Some(o), "spec.overhead")?;
            Some(linux_resources(o.milli_cpu, o.milli_cpu, o.memory))
        }
        None => None,
    };
    Ok((
        linux_resources(requests.milli_cpu, limits.milli_cpu, limits.memory),
        overhead,
    ))
}

fn namespace_mode(host: Option<bool>) -> i32 {
    if host == Some(true) {
        cri::NamespaceMode::Node as i32
    } else {
        cri::NamespaceMode::Pod as i32
    }
}

/// The pod's namespaces, as the kubelet sets them for the pod and each
/// container.
fn namespace_options(spec: &PodSpec) -> cri::NamespaceOption {
    let pid = if spec.host_pid == Some(true) {
        cri::NamespaceMode::Node
    } else if spec.share_process_namespace == Some(true) {
        cri::NamespaceMode::Pod
    } else {
        cri::NamespaceMode::Container
    };
    cri::NamespaceOption {
        network: namespace_mode(spec.host_network),
        pid: pid as i32,
        ipc: namespace_mode(spec.host_ipc),
        ..Default::default()
    }
}

/// The labels the kubelet puts on the sandbox and every container.
fn kubelet_labels(name: &str, namespace: &str, uid: &str) -> HashMap<String, String> {
    [
        ("io.kubernetes.pod.name", name),
        ("io.kubernetes.pod.namespace", namespace),
        ("io.kubernetes.pod.uid", uid),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// DNS for the pod: spec.dnsConfig, else (there is no cluster DNS here) the
/// host's resolv.conf, as dnsPolicy `Default` does.
fn dns_config(spec: &PodSpec, host_resolv_conf: &str) -> cri::DnsConfig {
    if let Some(d) = &spec.dns_config {
        return cri::DnsConfig {
            servers: d.nameservers.clone().unwrap_or_default(),
            searches: d.searches.clone().unwrap_or_default(),
            options: d
                .options
                .iter()
                .flatten()
                .filter_map(|o| {
                    let name = o.name.clone()?;
                    Some(match &o.value {
                        Some(v) => format!("{name}:{v}"),
                        None => name,
                    })
                })
                .collect(),
        };
    }
    let mut dns = cri::DnsConfig::default();
    for line in host_resolv_conf.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.servers.extend(words.next().map(String::from)),
            Some("search") => dns.searches = words.map(String::from).collect(),
            Some("options") => dns.options = words.map(String::from).collect(),
            _ => {}
        }
    }
    dns
}

/// RunPodSandbox's config for `pod`, with its fresh `uid`, logging under
/// `log_directory`.
pub fn sandbox_config(
    pod: &Pod,
    uid: &str,
    log_directory: &Path,
    host_resolv_conf: &str,
) -> Result<cri::PodSandboxConfig> {
    let spec = spec(pod)?;
    let (name, namespace) = name_and_namespace(pod)?;
    let mut labels: HashMap<String, String> = pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.extend(kubelet_labels(&name, &namespace, uid));
    let hostname = if spec.host_network == Some(true) {
        String::new()
    } else {
        let h = spec.hostname.clone().unwrap_or_else(|| name.clone());
        h.chars().take(63).collect()
    };
    let mut port_mappings = Vec::new();
    for c in &spec.containers {
        for p in c.ports.iter().flatten() {
            let Some(host_port) = p.host_port.filter(|p| *p > 0) else {
                continue;
            };
            let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => cri::Protocol::Tcp,
                "UDP" => cri::Protocol::Udp,
                "SCTP" => cri::Protocol::Sctp,
                other => bail!("container {}: unknown port protocol {other}", c.name),
            };
            port_mappings.push(cri::PortMapping {
                protocol: protocol as i32,
                container_port: p.container_port,
                host_port,
                host_ip: p.host_ip.clone().unwrap_or_default(),
            });
        }
    }
    let psc = spec.security_context.clone().unwrap_or_default();
    let (resources, overhead) = pod_resources(spec)?;
    Ok(cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name,
            uid: uid.to_string(),
            namespace,
            attempt: 0,
        }),
        hostname,
        log_directory: log_directory.to_string_lossy().into_owned(),
        dns_config: (spec.host_network != Some(true)).then(|| dns_config(spec, host_resolv_conf)),
        port_mappings,
        labels,
        annotations: pod
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: String::new(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(spec)),
                run_as_user: psc.run_as_user.map(|value| cri::Int64Value { value }),
                run_as_group: psc.run_as_group.map(|value| cri::Int64Value { value }),
                supplemental_groups: supplemental_groups(&psc),
                ..Default::default()
            }),
            sysctls: psc
                .sysctls
                .iter()
                .flatten()
                .map(|s| (s.name.clone(), s.value.clone()))
                .collect(),
            overhead,
            resources: Some(resources),
        }),
        windows: None,
    })
}

fn supplemental_groups(psc: &k8s_openapi::api::core::v1::PodSecurityContext) -> Vec<i64> {
    let mut groups = psc.supplemental_groups.clone().unwrap_or_default();
    if let Some(fs_group) = psc.fs_group {
        if !groups.contains(&fs_group) {
            groups.push(fs_group);
        }
    }
    groups
}

/// Expands `$(VAR)` references the kubelet's way: a defined variable is
/// replaced, `$$` is a literal `$`, anything else is left as written.
pub fn expand(text: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match vars.get(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The kubelet's default termination-message path.
pub const TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";

/// CreateContainer's config for container `c` of `pod` (mounts come later).
pub fn container_config(pod: &Pod, c: &Container, uid: &str) -> Result<cri::ContainerConfig> {
    let spec = spec(pod)?;
    let (name, namespace) = name_and_namespace(pod)?;
    let what = |field: &str| format!("container {}: {field}", c.name);
    let image = c
        .image
        .clone()
        .filter(|i| !i.is_empty())
        .with_context(|| what("image is required"))?;
    if c.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
        bail!(
            "{}: hearthctl run has no API server to read it from; give the variables as env values",
            what("envFrom is not supported")
        );
    }
    if c.stdin == Some(true) || c.tty == Some(true) {
        bail!("{}", what("stdin/tty are not supported (no attach yet)"));
    }
    let mut vars: HashMap<String, String> = HashMap::new();
    let mut envs = Vec::new();
    for e in c.env.iter().flatten() {
        if e.value_from.is_some() {
            bail!(
                "{}: valueFrom needs an API server (secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef); give a plain value instead",
                what(&format!("env {}", e.name))
            );
        }
        let value = expand(e.value.as_deref().unwrap_or_default(), &vars);
        vars.insert(e.name.clone(), value.clone());
        envs.push(cri::KeyValue {
            key: e.name.clone(),
            value,
        });
    }
    let (requests, limits) = requests_and_limits(c)?;
    let psc = spec.security_context.clone().unwrap_or_default();
    let sc = c.security_context.clone().unwrap_or_default();
    if sc.privileged == Some(true) {
        bail!("{}", what("privileged containers are refused by hearth"));
    }
    let capabilities = sc.capabilities.as_ref().map(|caps| cri::Capability {
        add_capabilities: cap_names(caps.add.as_deref()),
        drop_capabilities: cap_names(caps.drop.as_deref()),
        add_ambient_capabilities: Vec::new(),
    });
    let mut labels = kubelet_labels(&name, &namespace, uid);
    labels.insert("io.kubernetes.container.name".into(), c.name.clone());
    let termination_path = c
        .termination_message_path
        .clone()
        .unwrap_or_else(|| TERMINATION_MESSAGE_PATH.into());
    let annotations = [(
        "io.kubernetes.container.terminationMessagePath".to_string(),
        termination_path,
    )]
    .into();
    Ok(cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: c.name.clone(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image,
            ..Default::default()
        }),
        command: c
            .command
            .iter()
            .flatten()
            .map(|a| expand(a, &vars))
            .collect(),
        args: c.args.iter().flatten().map(|a| expand(a, &vars)).collect(),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs,
        labels,
        annotations,
        log_path: format!("{}/0.log", c.name),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(linux_resources(
                requests.milli_cpu,
                limits.milli_cpu,
                limits.memory,
            )),
            security_context: Some(cri::LinuxContainerSecurityContext {
                capabilities,
                namespace_options: Some(namespace_options(spec)),
                run_as_user: sc
                    .run_as_user
                    .or(psc.run_as_user)
                    .map(|value| cri::Int64Value { value }),
                run_as_group: sc
                    .run_as_group
                    .or(psc.run_as_group)
                    .map(|value| cri::Int64Value { value }),
                supplemental_groups: supplemental_groups(&psc),
                readonly_rootfs: sc.read_only_root_filesystem == Some(true),
                // The kubelet sets no_new_privs when privilege escalation is
                // explicitly disallowed.
                no_new_privs: sc.allow_privilege_escalation == Some(false),
                ..Default::default()
            }),
        }),
        ..Default::default()
    })
}

/// Kubernetes capability names (`NET_ADMIN`) as the CRI wants them
/// (`CAP_NET_ADMIN`); `ALL` stays as it is.
fn cap_names(caps: Option<&[String]>) -> Vec<String> {
    caps.unwrap_or_default()
        .iter()
        .map(|c| {
            let c = c.to_ascii_uppercase();
            if c == "ALL" || c.starts_with("CAP_") {
                c
            } else {
                format!("CAP_{c}")
            }
        })
        .collect()
}

/// When to pull a container's image (`imagePullPolicy`, defaulted as the API
/// server does: Always for `:latest` or no tag, else IfNotPresent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

pub fn pull_policy(c: &Container) -> Result<PullPolicy> {
    match c.image_pull_policy.as_deref() {
        Some("Always") => Ok(PullPolicy::Always),
        Some("IfNotPresent") => Ok(PullPolicy::IfNotPresent),
        Some("Never") => Ok(PullPolicy::Never),
        Some(other) => bail!(
            "container {}: imagePullPolicy {other:?} is not Always, IfNotPresent or Never",
            c.name
        ),
        None => {
            let image = c.image.as_deref().unwrap_or_default();
            let last = image.rsplit('/').next().unwrap_or(image);
            let tagged = last.contains(':') && !last.ends_with(":latest");
            if tagged || image.contains('@') {
                Ok(PullPolicy::IfNotPresent)
            } else {
                Ok(PullPolicy::Always)
            }
        }
    }
}

#[cfg(test)]
mod tests;

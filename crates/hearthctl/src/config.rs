//! Input files: pod and container configs in crictl's shape (JSON or YAML,
//! snake_case keys named after the CRI proto fields), parsed into our own
//! serde structs and converted to the `k8s-cri` types.
//!
//! The generated CRI types have no serde defaults, so a file that leaves out
//! any field would fail to parse with them; these structs default every field
//! and reject unknown keys, naming the key and where it is.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::Path;

use anyhow::{bail, Context, Result};
use k8s_cri::v1 as cri;
use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

type Map = HashMap<String, String>;

/// Reads a pod config (a CRI `PodSandboxConfig`) from a file, `-` for stdin.
pub fn load_pod_config(path: &Path) -> Result<cri::PodSandboxConfig> {
    let what = || format!("pod config {}", path.display());
    let config: PodConfig = load(path).with_context(what)?;
    config.into_cri().with_context(what)
}

/// Reads a container config (a CRI `ContainerConfig`) from a file, `-` for stdin.
pub fn load_container_config(path: &Path) -> Result<cri::ContainerConfig> {
    let what = || format!("container config {}", path.display());
    let config: ContainerConfig = load(path).with_context(what)?;
    config.into_cri().with_context(what)
}

fn load<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?
    } else {
        std::fs::read_to_string(path).context("cannot read the file")?
    };
    parse(&text, Format::of(path))
}

/// The syntax of an input file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `.json` files: parsed as JSON, for JSON's error messages.
    Json,
    /// Everything else: YAML (a superset of JSON).
    Yaml,
}

impl Format {
    /// JSON for a `.json` file, YAML otherwise.
    pub fn of(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("json") => Format::Json,
            _ => Format::Yaml,
        }
    }
}

/// Parses `text`; errors name the path of the offending key
/// (`linux.security_context.namespace_options: unknown field ...`).
pub fn parse<T: DeserializeOwned>(text: &str, format: Format) -> Result<T> {
    Ok(match format {
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
                let path = err.path().to_string();
                let inner = anyhow::Error::new(err.into_inner());
                if path == "." {
                    inner
                } else {
                    inner.context(format!("at {path}"))
                }
            })?;
            de.end()?;
            value
        }
        // serde_yaml's errors already carry the key's path and position.
        Format::Yaml => serde_yaml::from_str(text)?,
    })
}

// ---------------------------------------------------------------------------
// Enums: the proto name (any case, prefix optional) or its number.

/// A CRI enum field written as its proto name or number.
pub trait CriEnum {
    /// What the field holds, for error messages.
    const WHAT: &'static str;
    /// A prefix the name may leave out (`PROPAGATION_`).
    const PREFIX: &'static str = "";
    /// The proto name of `value`, if it is one.
    fn name_of(value: i32) -> Option<&'static str>;
}

macro_rules! cri_enum {
    ($ty:ty, $what:literal, $prefix:literal) => {
        impl CriEnum for $ty {
            const WHAT: &'static str = $what;
            const PREFIX: &'static str = $prefix;
            fn name_of(value: i32) -> Option<&'static str> {
                <$ty>::try_from(value).ok().map(|e| e.as_str_name())
            }
        }
    };
}

cri_enum!(cri::NamespaceMode, "namespace mode", "");
cri_enum!(cri::Protocol, "protocol", "");
cri_enum!(cri::MountPropagation, "mount propagation", "PROPAGATION_");
cri_enum!(cri::security_profile::ProfileType, "profile type", "");
cri_enum!(
    cri::SupplementalGroupsPolicy,
    "supplemental groups policy",
    ""
);

/// The i32 the CRI types carry for an enum field.
#[derive(Debug, PartialEq, Eq)]
pub struct EnumValue<E>(pub i32, PhantomData<E>);

impl<E> Default for EnumValue<E> {
    fn default() -> Self {
        EnumValue(0, PhantomData)
    }
}

impl<E: CriEnum> EnumValue<E> {
    fn names() -> Vec<&'static str> {
        (0..32).filter_map(E::name_of).collect()
    }

    /// Looks a name up, ignoring case and an optional prefix.
    pub fn from_name(name: &str) -> Option<i32> {
        (0..32).find(|&v| {
            E::name_of(v).is_some_and(|n| {
                n.eq_ignore_ascii_case(name)
                    || n.strip_prefix(E::PREFIX)
                        .is_some_and(|short| short.eq_ignore_ascii_case(name))
            })
        })
    }
}

impl<'de, E: CriEnum> Deserialize<'de> for EnumValue<E> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<E>(PhantomData<E>);
        impl<E: CriEnum> Visitor<'_> for V<E> {
            type Value = EnumValue<E>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(
                    f,
                    "a {} (one of {})",
                    E::WHAT,
                    EnumValue::<E>::names().join(", ")
                )
            }
            fn visit_i64<Er: de::Error>(self, v: i64) -> Result<Self::Value, Er> {
                match i32::try_from(v).ok().filter(|&v| E::name_of(v).is_some()) {
                    Some(v) => Ok(EnumValue(v, PhantomData)),
                    None => Err(Er::custom(format!(
                        "invalid {} {v}: expected one of {} or its number",
                        E::WHAT,
                        EnumValue::<E>::names().join(", ")
                    ))),
                }
            }
            fn visit_u64<Er: de::Error>(self, v: u64) -> Result<Self::Value, Er> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_str<Er: de::Error>(self, v: &str) -> Result<Self::Value, Er> {
                match EnumValue::<E>::from_name(v) {
                    Some(v) => Ok(EnumValue(v, PhantomData)),
                    None => Err(Er::custom(format!(
                        "invalid {} {v:?}: expected one of {} or its number",
                        E::WHAT,
                        EnumValue::<E>::names().join(", ")
                    ))),
                }
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// An `Int64Value` written either as `{value: 1000}` (the proto shape crictl
/// uses) or as a bare `1000`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Int64(pub i64);

impl<'de> Deserialize<'de> for Int64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Int64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer or {value: <integer>}")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int64, E> {
                Ok(Int64(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int64, E> {
                i64::try_from(v)
                    .map(Int64)
                    .map_err(|_| E::custom("integer out of range"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Int64, A::Error> {
                let mut value = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "value" {
                        return Err(de::Error::unknown_field(&key, &["value"]));
                    }
                    value = Some(map.next_value::<i64>()?);
                }
                Ok(Int64(value.unwrap_or(0)))
            }
        }
        d.deserialize_any(V)
    }
}

impl From<Int64> for cri::Int64Value {
    fn from(v: Int64) -> Self {
        cri::Int64Value { value: v.0 }
    }
}

// ---------------------------------------------------------------------------
// Pod config (PodSandboxConfig).

/// A CRI `PodSandboxConfig` as crictl reads it.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PodConfig {
    pub metadata: PodMetadata,
    pub hostname: String,
    pub log_directory: String,
    pub dns_config: Option<DnsConfig>,
    pub port_mappings: Vec<PortMapping>,
    pub labels: Map,
    pub annotations: Map,
    pub linux: Option<LinuxPodConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PodMetadata {
    pub name: String,
    pub uid: String,
    pub namespace: String,
    pub attempt: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortMapping {
    pub protocol: EnumValue<cri::Protocol>,
    pub container_port: i32,
    pub host_port: i32,
    pub host_ip: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinuxPodConfig {
    pub cgroup_parent: String,
    pub security_context: Option<SandboxSecurityContext>,
    pub sysctls: Map,
    pub overhead: Option<Resources>,
    pub resources: Option<Resources>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxSecurityContext {
    pub namespace_options: Option<NamespaceOptions>,
    pub selinux_options: Option<SeLinuxOptions>,
    pub run_as_user: Option<Int64>,
    pub run_as_group: Option<Int64>,
    pub readonly_rootfs: bool,
    pub supplemental_groups: Vec<i64>,
    pub supplemental_groups_policy: EnumValue<cri::SupplementalGroupsPolicy>,
    pub privileged: bool,
    pub seccomp: Option<SecurityProfile>,
    pub apparmor: Option<SecurityProfile>,
    pub seccomp_profile_path: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceOptions {
    pub network: EnumValue<cri::NamespaceMode>,
    pub pid: EnumValue<cri::NamespaceMode>,
    pub ipc: EnumValue<cri::NamespaceMode>,
    pub target_id: String,
    pub userns_options: Option<UserNamespace>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserNamespace {
    pub mode: EnumValue<cri::NamespaceMode>,
    pub uids: Vec<IdMapping>,
    pub gids: Vec<IdMapping>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdMapping {
    pub host_id: u32,
    pub container_id: u32,
    pub length: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeLinuxOptions {
    pub user: String,
    pub role: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub level: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityProfile {
    pub profile_type: EnumValue<cri::security_profile::ProfileType>,
    pub localhost_ref: String,
}

/// `LinuxContainerResources`, used for pod resources and overhead as well.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Resources {
    pub cpu_period: i64,
    pub cpu_quota: i64,
    pub cpu_shares: i64,
    pub memory_limit_in_bytes: i64,
    pub oom_score_adj: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    pub hugepage_limits: Vec<HugepageLimit>,
    pub unified: Map,
    pub memory_swap_limit_in_bytes: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HugepageLimit {
    pub page_size: String,
    pub limit: u64,
}

impl PodConfig {
    /// Checks what CRI requires and converts.
    pub fn into_cri(self) -> Result<cri::PodSandboxConfig> {
        if self.metadata.name.is_empty() {
            bail!("metadata.name is required: give the pod a name");
        }
        let m = self.metadata;
        Ok(cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: m.name,
                uid: m.uid,
                namespace: m.namespace,
                attempt: m.attempt,
            }),
            hostname: self.hostname,
            log_directory: self.log_directory,
            dns_config: self.dns_config.map(|d| cri::DnsConfig {
                servers: d.servers,
                searches: d.searches,
                options: d.options,
            }),
            port_mappings: self
                .port_mappings
                .into_iter()
                .map(|p| cri::PortMapping {
                    protocol: p.protocol.0,
                    container_port: p.container_port,
                    host_port: p.host_port,
                    host_ip: p.host_ip,
                })
                .collect(),
            labels: self.labels,
            annotations: self.annotations,
            linux: self.linux.map(|l| cri::LinuxPodSandboxConfig {
                cgroup_parent: l.cgroup_parent,
                security_context: l.security_context.map(Into::into),
                sysctls: l.sysctls,
                overhead: l.overhead.map(Into::into),
                resources: l.resources.map(Into::into),
            }),
            windows: None,
        })
    }
}

// The deprecated profile path fields are still accepted: older crictl
// configs carry them, and it is the runtime's call to ignore them.
#[allow(deprecated)]
impl From<SandboxSecurityContext> for cri::LinuxSandboxSecurityContext {
    fn from(s: SandboxSecurityContext) -> Self {
        cri::LinuxSandboxSecurityContext {
            namespace_options: s.namespace_options.map(Into::into),
            selinux_options: s.selinux_options.map(Into::into),
            run_as_user: s.run_as_user.map(Into::into),
            run_as_group: s.run_as_group.map(Into::into),
            readonly_rootfs: s.readonly_rootfs,
            supplemental_groups: s.supplemental_groups,
            supplemental_groups_policy: s.supplemental_groups_policy.0,
            privileged: s.privileged,
            seccomp: s.seccomp.map(Into::into),
            apparmor: s.apparmor.map(Into::into),
            seccomp_profile_path: s.seccomp_profile_path,
        }
    }
}

impl From<NamespaceOptions> for cri::NamespaceOption {
    fn from(n: NamespaceOptions) -> Self {
        cri::NamespaceOption {
            network: n.network.0,
            pid: n.pid.0,
            ipc: n.ipc.0,
            target_id: n.target_id,
            userns_options: n.userns_options.map(|u| cri::UserNamespace {
                mode: u.mode.0,
                uids: u.uids.into_iter().map(Into::into).collect(),
                gids: u.gids.into_iter().map(Into::into).collect(),
            }),
        }
    }
}

impl From<IdMapping> for cri::IdMapping {
    fn from(m: IdMapping) -> Self {
        cri::IdMapping {
            host_id: m.host_id,
            container_id: m.container_id,
            length: m.length,
        }
    }
}

impl From<SeLinuxOptions> for cri::SeLinuxOption {
    fn from(s: SeLinuxOptions) -> Self {
        cri::SeLinuxOption {
            user: s.user,
            role: s.role,
            r#type: s.kind,
            level: s.level,
        }
    }
}

impl From<SecurityProfile> for cri::SecurityProfile {
    fn from(p: SecurityProfile) -> Self {
        cri::SecurityProfile {
            profile_type: p.profile_type.0,
            localhost_ref: p.localhost_ref,
        }
    }
}

impl From<Resources> for cri::LinuxContainerResources {
    fn from(r: Resources) -> Self {
        cri::LinuxContainerResources {
            cpu_period: r.cpu_period,
            cpu_quota: r.cpu_quota,
            cpu_shares: r.cpu_shares,
            memory_limit_in_bytes: r.memory_limit_in_bytes,
            oom_score_adj: r.oom_score_adj,
            cpuset_cpus: r.cpuset_cpus,
            cpuset_mems: r.cpuset_mems,
            hugepage_limits: r
                .hugepage_limits
                .into_iter()
                .map(|h| cri::HugepageLimit {
                    page_size: h.page_size,
                    limit: h.limit,
                })
                .collect(),
            unified: r.unified,
            memory_swap_limit_in_bytes: r.memory_swap_limit_in_bytes,
        }
    }
}

// ---------------------------------------------------------------------------
// Container config (ContainerConfig).

/// A CRI `ContainerConfig` as crictl reads it.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainerConfig {
    pub metadata: ContainerMetadata,
    pub image: ImageSpec,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub working_dir: String,
    pub envs: Vec<KeyValue>,
    pub mounts: Vec<Mount>,
    pub devices: Vec<Device>,
    pub labels: Map,
    pub annotations: Map,
    pub log_path: String,
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
    pub linux: Option<LinuxContainerConfig>,
    #[serde(rename = "CDI_devices", alias = "cdi_devices")]
    pub cdi_devices: Vec<CdiDevice>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainerMetadata {
    pub name: String,
    pub attempt: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageSpec {
    pub image: String,
    pub annotations: Map,
    pub user_specified_image: String,
    pub runtime_handler: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mount {
    pub container_path: String,
    pub host_path: String,
    pub readonly: bool,
    pub selinux_relabel: bool,
    pub propagation: EnumValue<cri::MountPropagation>,
    #[serde(rename = "uidMappings", alias = "uid_mappings")]
    pub uid_mappings: Vec<IdMapping>,
    #[serde(rename = "gidMappings", alias = "gid_mappings")]
    pub gid_mappings: Vec<IdMapping>,
    pub recursive_read_only: bool,
    pub image: Option<ImageSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Device {
    pub container_path: String,
    pub host_path: String,
    pub permissions: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CdiDevice {
    pub name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinuxContainerConfig {
    pub resources: Option<Resources>,
    pub security_context: Option<ContainerSecurityContext>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainerSecurityContext {
    pub capabilities: Option<Capabilities>,
    pub privileged: bool,
    pub namespace_options: Option<NamespaceOptions>,
    pub selinux_options: Option<SeLinuxOptions>,
    pub run_as_user: Option<Int64>,
    pub run_as_group: Option<Int64>,
    pub run_as_username: String,
    pub readonly_rootfs: bool,
    pub supplemental_groups: Vec<i64>,
    pub supplemental_groups_policy: EnumValue<cri::SupplementalGroupsPolicy>,
    pub no_new_privs: bool,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    pub seccomp: Option<SecurityProfile>,
    pub apparmor: Option<SecurityProfile>,
    pub apparmor_profile: String,
    pub seccomp_profile_path: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Capabilities {
    pub add_capabilities: Vec<String>,
    pub drop_capabilities: Vec<String>,
    pub add_ambient_capabilities: Vec<String>,
}

impl From<ImageSpec> for cri::ImageSpec {
    fn from(i: ImageSpec) -> Self {
        cri::ImageSpec {
            image: i.image,
            annotations: i.annotations,
            user_specified_image: i.user_specified_image,
            runtime_handler: i.runtime_handler,
        }
    }
}

impl ContainerConfig {
    /// Checks what CRI requires and converts.
    pub fn into_cri(self) -> Result<cri::ContainerConfig> {
        if self.metadata.name.is_empty() {
            bail!("metadata.name is required: give the container a name");
        }
        if self.image.image.is_empty() {
            bail!("image.image is required: name the image to run, e.g. docker.io/library/busybox:latest");
        }
        Ok(cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: self.metadata.name,
                attempt: self.metadata.attempt,
            }),
            image: Some(self.image.into()),
            command: self.command,
            args: self.args,
            working_dir: self.working_dir,
            envs: self
                .envs
                .into_iter()
                .map(|e| cri::KeyValue {
                    key: e.key,
                    value: e.value,
                })
                .collect(),
            mounts: self
                .mounts
                .into_iter()
                .map(|m| cri::Mount {
                    container_path: m.container_path,
                    host_path: m.host_path,
                    readonly: m.readonly,
                    selinux_relabel: m.selinux_relabel,
                    propagation: m.propagation.0,
                    uid_mappings: m.uid_mappings.into_iter().map(Into::into).collect(),
                    gid_mappings: m.gid_mappings.into_iter().map(Into::into).collect(),
                    recursive_read_only: m.recursive_read_only,
                    image: m.image.map(Into::into),
                })
                .collect(),
            devices: self
                .devices
                .into_iter()
                .map(|d| cri::Device {
                    container_path: d.container_path,
                    host_path: d.host_path,
                    permissions: d.permissions,
                })
                .collect(),
            labels: self.labels,
            annotations: self.annotations,
            log_path: self.log_path,
            stdin: self.stdin,
            stdin_once: self.stdin_once,
            tty: self.tty,
            linux: self.linux.map(|l| cri::LinuxContainerConfig {
                resources: l.resources.map(Into::into),
                security_context: l.security_context.map(Into::into),
            }),
            windows: None,
            cdi_devices: self
                .cdi_devices
                .into_iter()
                .map(|d| cri::CdiDevice { name: d.name })
                .collect(),
        })
    }
}

#[allow(deprecated)] // apparmor_profile, seccomp_profile_path: see above.
impl From<ContainerSecurityContext> for cri::LinuxContainerSecurityContext {
    fn from(s: ContainerSecurityContext) -> Self {
        cri::LinuxContainerSecurityContext {
            capabilities: s.capabilities.map(|c| cri::Capability {
                add_capabilities: c.add_capabilities,
                drop_capabilities: c.drop_capabilities,
                add_ambient_capabilities: c.add_ambient_capabilities,
            }),
            privileged: s.privileged,
            namespace_options: s.namespace_options.map(Into::into),
            selinux_options: s.selinux_options.map(Into::into),
            run_as_user: s.run_as_user.map(Into::into),
            run_as_group: s.run_as_group.map(Into::into),
            run_as_username: s.run_as_username,
            readonly_rootfs: s.readonly_rootfs,
            supplemental_groups: s.supplemental_groups,
            supplemental_groups_policy: s.supplemental_groups_policy.0,
            no_new_privs: s.no_new_privs,
            masked_paths: s.masked_paths,
            readonly_paths: s.readonly_paths,
            seccomp: s.seccomp.map(Into::into),
            apparmor: s.apparmor.map(Into::into),
            apparmor_profile: s.apparmor_profile,
            seccomp_profile_path: s.seccomp_profile_path,
        }
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;

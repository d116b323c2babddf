//! CRI (prost) types ⇄ the core's container types, at the edge only; and
//! the image store as the core's [`ImageResolver`]. What this slice does not
//! support yet is refused here with UNIMPLEMENTED naming the field, never
//! silently ignored.

use std::collections::HashMap;
use std::sync::Arc;

use hearth_runtime::container::{
    CapabilityChanges, ContainerConfig, ContainerRecord, ContainerState, ImageInfo, ImageResolver,
    MountConfig, Resources, SeccompConfig, SecurityConfig, UserSpec,
};
use k8s_cri::v1 as cri;
use tonic::Status;

/// The node's image store, as the core sees it.
pub struct StoreImages(pub Arc<hearth_image::ImageStore>);

impl ImageResolver for StoreImages {
    fn resolve(&self, reference: &str) -> Option<ImageInfo> {
        let img = self.0.get(reference).ok()?;
        let c = img.config;
        Some(ImageInfo {
            image_ref: img
                .repo_digests
                .first()
                .cloned()
                .unwrap_or_else(|| img.id.clone()),
            id: img.id,
            erofs_path: img.erofs_path,
            entrypoint: c.entrypoint,
            cmd: c.cmd,
            env: c.env,
            working_dir: c.working_dir,
            user: c.user,
            stop_signal: c.stop_signal,
        })
    }
}

fn later(field: &str, why: &str) -> Status {
    Status::unimplemented(format!(
        "{field} is not supported by hearth yet ({why}); remove it from the container spec"
    ))
}

fn id32(v: i64, field: &str) -> Result<u32, Status> {
    u32::try_from(v)
        .map_err(|_| Status::invalid_argument(format!("{field} {v} must be between 0 and 2^32-1")))
}

/// CRI `Mount` → domain mount. Where the host path may come from is the
/// core's decision (`hearth_runtime::container::volumes`); what can never
/// reach a guest is refused here.
fn mount(m: cri::Mount) -> Result<MountConfig, Status> {
    let at = |why: &str| {
        format!(
            "mount of {:?} at {:?}: {why}",
            m.host_path, m.container_path
        )
    };
    if m.image.is_some() {
        return Err(later("mounts.image", "image volumes are later work"));
    }
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        return Err(later(
            "mounts.uid_mappings/gid_mappings",
            "id-mapped mounts are later work",
        ));
    }
    if !m.container_path.starts_with('/') {
        return Err(Status::invalid_argument(at(
            "container_path must be an absolute path",
        )));
    }
    if !m.host_path.starts_with('/') {
        return Err(Status::invalid_argument(at(
            "host_path must be an absolute path",
        )));
    }
    match cri::MountPropagation::try_from(m.propagation) {
        Ok(cri::MountPropagation::PropagationBidirectional) => {
            return Err(Status::failed_precondition(at(
                "Bidirectional mount propagation cannot reach a pod's guest (no shared filesystem \
                 with the node); use None",
            )))
        }
        Ok(cri::MountPropagation::PropagationHostToContainer) => {
            tracing::debug!(host_path = %m.host_path, "HostToContainer propagation: the guest's copy is private");
        }
        Ok(cri::MountPropagation::PropagationPrivate) => {}
        Err(_) => {
            return Err(Status::invalid_argument(at(&format!(
                "unknown propagation {}",
                m.propagation
            ))))
        }
    }
    // selinux_relabel: nothing to relabel in a guest copy.
    Ok(MountConfig {
        container_path: m.container_path,
        host_path: m.host_path.into(),
        read_only: m.readonly,
    })
}

/// `ContainerConfig` → domain config.
// Older kubelets still send the string forms of seccomp and AppArmor.
#[allow(deprecated)]
pub fn container_config(c: cri::ContainerConfig) -> Result<ContainerConfig, Status> {
    let m = c
        .metadata
        .ok_or_else(|| Status::invalid_argument("config.metadata is required"))?;
    let image = c.image.map(|i| i.image).unwrap_or_default();
    let mounts = c
        .mounts
        .into_iter()
        .map(mount)
        .collect::<Result<Vec<_>, _>>()?;
    if !c.devices.is_empty() || !c.cdi_devices.is_empty() {
        return Err(Status::failed_precondition(
            "devices cannot be passed to a hearth pod (no device passthrough into the guest)",
        ));
    }
    if c.stdin || c.tty {
        return Err(later("stdin/tty", "attach is later work"));
    }
    let linux = c.linux.unwrap_or_default();
    let resources = linux.resources.map(resources);
    let sc = linux.security_context.unwrap_or_default();
    let capabilities = match sc.capabilities {
        Some(caps) if !caps.add_ambient_capabilities.is_empty() => {
            return Err(later(
                "security_context.capabilities.add_ambient_capabilities",
                "ambient capabilities are not passed on yet",
            ));
        }
        Some(caps) if !caps.add_capabilities.is_empty() || !caps.drop_capabilities.is_empty() => {
            Some(CapabilityChanges {
                add: caps.add_capabilities,
                drop: caps.drop_capabilities,
            })
        }
        _ => None,
    };
    let seccomp = seccomp(sc.seccomp.as_ref(), &sc.seccomp_profile_path)?;
    if let Some(a) = &sc.apparmor {
        if a.profile_type != cri::security_profile::ProfileType::Unconfined as i32 {
            return Err(Status::invalid_argument(
                "security_context.apparmor: there is no AppArmor in a hearth guest; use Unconfined",
            ));
        }
    }
    if !sc.apparmor_profile.is_empty() && sc.apparmor_profile != "unconfined" {
        return Err(Status::invalid_argument(format!(
            "security_context.apparmor_profile {:?}: there is no AppArmor in a hearth guest",
            sc.apparmor_profile
        )));
    }
    if sc.selinux_options.as_ref().is_some_and(|o| {
        !o.user.is_empty() || !o.role.is_empty() || !o.r#type.is_empty() || !o.level.is_empty()
    }) {
        return Err(Status::invalid_argument(
            "security_context.selinux_options: there is no SELinux in a hearth guest",
        ));
    }
    let pod_pid_namespace = match sc.namespace_options.as_ref().map(|ns| ns.pid) {
        None => false,
        Some(p) if p == cri::NamespaceMode::Container as i32 => false,
        Some(p) if p == cri::NamespaceMode::Pod as i32 => true,
        Some(p) if p == cri::NamespaceMode::Node as i32 => {
            return Err(Status::invalid_argument(
                "namespace_options.pid NODE (hostPID) cannot be given to a pod in its own VM",
            ))
        }
        Some(p) => {
            return Err(Status::invalid_argument(format!(
                "namespace_options.pid {p} is not a namespace mode"
            )))
        }
    };
    let security = SecurityConfig {
        privileged: sc.privileged,
        no_new_privs: sc.no_new_privs,
        masked_paths: if sc.masked_paths.is_empty() {
            DEFAULT_MASKED_PATHS.iter().map(|p| p.to_string()).collect()
        } else {
            sc.masked_paths
        },
        readonly_paths: if sc.readonly_paths.is_empty() {
            DEFAULT_READONLY_PATHS
                .iter()
                .map(|p| p.to_string())
                .collect()
        } else {
            sc.readonly_paths
        },
        seccomp,
    };
    let user = if sc.run_as_user.is_some()
        || !sc.run_as_username.is_empty()
        || sc.run_as_group.is_some()
        || !sc.supplemental_groups.is_empty()
    {
        Some(UserSpec {
            uid: sc
                .run_as_user
                .map(|v| id32(v.value, "run_as_user"))
                .transpose()?,
            username: sc.run_as_username,
            gid: sc
                .run_as_group
                .map(|v| id32(v.value, "run_as_group"))
                .transpose()?,
            supplemental_groups: sc
                .supplemental_groups
                .iter()
                .map(|g| id32(*g, "supplemental_groups"))
                .collect::<Result<_, _>>()?,
        })
    } else {
        None
    };
    Ok(ContainerConfig {
        name: m.name,
        attempt: m.attempt,
        image,
        command: c.command,
        args: c.args,
        working_dir: c.working_dir,
        envs: c.envs.into_iter().map(|kv| (kv.key, kv.value)).collect(),
        labels: c.labels.into_iter().collect(),
        annotations: c.annotations.into_iter().collect(),
        log_path: c.log_path,
        user,
        read_only_rootfs: sc.readonly_rootfs,
        capabilities,
        mounts,
        resources,
        security,
        pod_pid_namespace,
    })
}

/// Paths hidden in every unprivileged container when the CRI names none
/// (containerd's defaults).
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths read-only in every unprivileged container when the CRI names
/// none (containerd's defaults).
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Largest Localhost seccomp profile read.
const MAX_SECCOMP_PROFILE: u64 = 1 << 20;

/// The seccomp profile: `seccomp` (CRI ≥ 1.25), else the deprecated
/// `seccomp_profile_path` string. A Localhost profile is read here.
fn seccomp(profile: Option<&cri::SecurityProfile>, legacy: &str) -> Result<SeccompConfig, Status> {
    use cri::security_profile::ProfileType;
    let localhost = |path: &str| -> Result<SeccompConfig, Status> {
        let path = std::path::PathBuf::from(path);
        if !path.is_absolute() {
            return Err(Status::invalid_argument(format!(
                "seccomp Localhost profile {} must be an absolute path",
                path.display()
            )));
        }
        let mut json = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(
                std::fs::File::open(&path).map_err(|e| {
                    Status::invalid_argument(format!(
                        "cannot read the seccomp profile {}: {e}",
                        path.display()
                    ))
                })?,
                MAX_SECCOMP_PROFILE + 1,
            ),
            &mut json,
        )
        .map_err(|e| {
            Status::invalid_argument(format!(
                "cannot read the seccomp profile {}: {e}",
                path.display()
            ))
        })?;
        if json.len() as u64 > MAX_SECCOMP_PROFILE {
            return Err(Status::invalid_argument(format!(
                "the seccomp profile {} is larger than {MAX_SECCOMP_PROFILE} bytes",
                path.display()
            )));
        }
        Ok(SeccompConfig::Localhost { path, json })
    };
    match profile {
        Some(p) if p.profile_type == ProfileType::RuntimeDefault as i32 => {
            Ok(SeccompConfig::RuntimeDefault)
        }
        Some(p) if p.profile_type == ProfileType::Localhost as i32 => localhost(&p.localhost_ref),
        Some(p) if p.profile_type == ProfileType::Unconfined as i32 => Ok(SeccompConfig::Unconfined),
        Some(p) => Err(Status::invalid_argument(format!(
            "seccomp profile type {} is unknown",
            p.profile_type
        ))),
        None => match legacy {
            "" | "unconfined" => Ok(SeccompConfig::Unconfined),
            "runtime/default" | "docker/default" => Ok(SeccompConfig::RuntimeDefault),
            l => match l.strip_prefix("localhost/") {
                Some(path) => localhost(path),
                None => Err(Status::invalid_argument(format!(
                    "seccomp_profile_path {l:?} is not unconfined, runtime/default or localhost/<path>"
                ))),
            },
        },
    }
}

/// CRI resources → domain.
fn resources(r: cri::LinuxContainerResources) -> Resources {
    Resources {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit_bytes: r.memory_limit_in_bytes,
        memory_swap_limit_bytes: r.memory_swap_limit_in_bytes,
        cpuset_cpus: r.cpuset_cpus,
        cpuset_mems: r.cpuset_mems,
        unified: r.unified.into_iter().collect(),
    }
}

/// Domain resources → CRI (ContainerStatus).
fn resources_cri(r: &Resources) -> cri::LinuxContainerResources {
    cri::LinuxContainerResources {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit_in_bytes: r.memory_limit_bytes,
        memory_swap_limit_in_bytes: r.memory_swap_limit_bytes,
        cpuset_cpus: r.cpuset_cpus.clone(),
        cpuset_mems: r.cpuset_mems.clone(),
        unified: r.unified.clone().into_iter().collect(),
        ..Default::default()
    }
}

/// `UpdateContainerResources`' resources → domain.
pub fn update_resources(r: Option<cri::LinuxContainerResources>) -> Result<Resources, Status> {
    r.map(resources).ok_or_else(|| {
        Status::invalid_argument(
            "linux resources are required (windows resources are not supported)",
        )
    })
}

/// Domain state → CRI.
pub fn state(s: ContainerState) -> i32 {
    match s {
        ContainerState::Created => cri::ContainerState::ContainerCreated as i32,
        ContainerState::Running => cri::ContainerState::ContainerRunning as i32,
        ContainerState::Exited => cri::ContainerState::ContainerExited as i32,
    }
}

fn metadata(r: &ContainerRecord) -> cri::ContainerMetadata {
    cri::ContainerMetadata {
        name: r.config.name.clone(),
        attempt: r.config.attempt,
    }
}

fn image_spec(r: &ContainerRecord) -> cri::ImageSpec {
    cri::ImageSpec {
        image: r.config.image.clone(),
        ..Default::default()
    }
}

fn map(m: &std::collections::BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// ListContainers' item.
pub fn container(r: &ContainerRecord) -> cri::Container {
    cri::Container {
        id: r.id.to_string(),
        pod_sandbox_id: r.sandbox_id.to_string(),
        metadata: Some(metadata(r)),
        image: Some(image_spec(r)),
        image_ref: r.image.image_ref.clone(),
        state: state(r.state),
        created_at: r.created_at_ns,
        labels: map(&r.config.labels),
        annotations: map(&r.config.annotations),
        image_id: r.image.id.clone(),
    }
}

/// ContainerStatus' status.
pub fn container_status(r: &ContainerRecord) -> cri::ContainerStatus {
    cri::ContainerStatus {
        id: r.id.to_string(),
        metadata: Some(metadata(r)),
        state: state(r.state),
        created_at: r.created_at_ns,
        started_at: r.started_at_ns,
        finished_at: r.finished_at_ns,
        exit_code: r.exit_code,
        image: Some(image_spec(r)),
        image_ref: r.image.image_ref.clone(),
        reason: r.reason.clone(),
        message: r.message.clone(),
        labels: map(&r.config.labels),
        annotations: map(&r.config.annotations),
        mounts: r
            .config
            .mounts
            .iter()
            .map(|m| cri::Mount {
                container_path: m.container_path.clone(),
                host_path: m.host_path.to_string_lossy().into_owned(),
                readonly: m.read_only,
                ..Default::default()
            })
            .collect(),
        log_path: r.log_path.to_string_lossy().into_owned(),
        resources: r
            .config
            .resources
            .as_ref()
            .map(|res| cri::ContainerResources {
                linux: Some(resources_cri(res)),
                ..Default::default()
            }),
        image_id: r.image.id.clone(),
        user: None,
    }
}

/// ContainerStatus' verbose `info`.
pub fn container_info(r: &ContainerRecord) -> HashMap<String, String> {
    let info = serde_json::json!({
        "pid": r.pid,
        "sandboxID": r.sandbox_id.to_string(),
        "process": { "args": r.process_args, "env": r.process_env, "cwd": r.process_cwd },
        "stopSignal": r.stop_signal,
        "erofsImage": r.image.erofs_path,
    });
    [("info".to_owned(), info.to_string())].into()
}

/// ListContainers' filter.
pub fn matches(r: &ContainerRecord, f: &cri::ContainerFilter) -> bool {
    (f.id.is_empty() || r.id.as_str().starts_with(&f.id))
        && (f.pod_sandbox_id.is_empty() || r.sandbox_id.as_str().starts_with(&f.pod_sandbox_id))
        && f.state.as_ref().is_none_or(|s| s.state == state(r.state))
        && f.label_selector
            .iter()
            .all(|(k, v)| r.config.labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: "c".into(),
                attempt: 1,
            }),
            image: Some(cri::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            envs: vec![cri::KeyValue {
                key: "A".into(),
                value: "b".into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn converts_the_supported_fields() {
        let mut c = base();
        c.linux = Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                run_as_user: Some(cri::Int64Value { value: 1000 }),
                supplemental_groups: vec![5],
                readonly_rootfs: true,
                ..Default::default()
            }),
            ..Default::default()
        });
        let d = container_config(c).unwrap();
        assert_eq!(d.name, "c");
        assert_eq!(d.attempt, 1);
        assert_eq!(d.image, "busybox");
        assert_eq!(d.envs, [("A".to_owned(), "b".to_owned())]);
        let u = d.user.unwrap();
        assert_eq!(u.uid, Some(1000));
        assert_eq!(u.supplemental_groups, [5]);
        assert!(d.read_only_rootfs);
        assert!(container_config(base()).unwrap().user.is_none());
    }

    fn with_security(sc: cri::LinuxContainerSecurityContext) -> cri::ContainerConfig {
        let mut c = base();
        c.linux = Some(cri::LinuxContainerConfig {
            security_context: Some(sc),
            ..Default::default()
        });
        c
    }

    #[test]
    fn security_settings_convert() {
        let d = container_config(base()).unwrap();
        assert_eq!(d.security.masked_paths.len(), DEFAULT_MASKED_PATHS.len());
        assert_eq!(d.security.seccomp, SeccompConfig::Unconfined);
        assert!(!d.pod_pid_namespace);

        let d = container_config(with_security(cri::LinuxContainerSecurityContext {
            privileged: true,
            no_new_privs: true,
            masked_paths: vec!["/proc/x".into()],
            seccomp: Some(cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                ..Default::default()
            }),
            namespace_options: Some(cri::NamespaceOption {
                pid: cri::NamespaceMode::Pod as i32,
                ..Default::default()
            }),
            ..Default::default()
        }))
        .unwrap();
        assert!(d.security.privileged && d.security.no_new_privs);
        assert_eq!(d.security.masked_paths, ["/proc/x"]);
        assert_eq!(d.security.seccomp, SeccompConfig::RuntimeDefault);
        assert!(d.pod_pid_namespace);

        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("p.json");
        std::fs::write(&profile, r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).unwrap();
        let localhost = |path: &std::path::Path| {
            container_config(with_security(cri::LinuxContainerSecurityContext {
                seccomp: Some(cri::SecurityProfile {
                    profile_type: cri::security_profile::ProfileType::Localhost as i32,
                    localhost_ref: path.to_string_lossy().into_owned(),
                }),
                ..Default::default()
            }))
        };
        match localhost(&profile).unwrap().security.seccomp {
            SeccompConfig::Localhost { json, .. } => assert!(json.contains("SCMP_ACT_ALLOW")),
            other => panic!("{other:?}"),
        }
        let e = localhost(&dir.path().join("missing.json")).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("missing.json"), "{}", e.message());
    }

    #[test]
    fn unsupported_fields_are_refused_by_name() {
        let c = with_security(cri::LinuxContainerSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                pid: cri::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        });
        let e = container_config(c).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("hostPID"), "{}", e.message());

        let c = with_security(cri::LinuxContainerSecurityContext {
            apparmor: Some(cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::Localhost as i32,
                localhost_ref: "p".into(),
            }),
            ..Default::default()
        });
        let e = container_config(c).unwrap_err();
        assert!(e.message().contains("AppArmor"), "{}", e.message());

        let mut c = base();
        c.metadata = None;
        assert_eq!(
            container_config(c).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}

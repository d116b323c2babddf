//! CRI (prost) types ⇄ the core's container types, at the edge only; and
//! the image store as the core's [`ImageResolver`]. What this slice does not
//! support yet is refused here with UNIMPLEMENTED naming the field, never
//! silently ignored.

use std::collections::HashMap;
use std::sync::Arc;

use hearth_runtime::container::{
    CapabilityChanges, ContainerConfig, ContainerRecord, ContainerState, ImageInfo, ImageResolver,
    UserSpec,
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

/// `ContainerConfig` → domain config.
pub fn container_config(c: cri::ContainerConfig) -> Result<ContainerConfig, Status> {
    let m = c
        .metadata
        .ok_or_else(|| Status::invalid_argument("config.metadata is required"))?;
    let image = c.image.map(|i| i.image).unwrap_or_default();
    if let Some(mount) = c.mounts.first() {
        return Err(later(
            "mounts",
            &format!(
                "volumes come with the containers issue's next slice; got {} at {}",
                mount.host_path, mount.container_path
            ),
        ));
    }
    if !c.devices.is_empty() || !c.cdi_devices.is_empty() {
        return Err(Status::failed_precondition(
            "devices cannot be passed to a hearth pod (no device passthrough into the guest)",
        ));
    }
    if c.stdin || c.tty {
        return Err(later("stdin/tty", "attach is later work"));
    }
    let linux = c.linux.unwrap_or_default();
    if linux.resources.is_some() {
        tracing::debug!(
            "container resources are not applied per container yet; the pod's VM size bounds them"
        );
    }
    let sc = linux.security_context.unwrap_or_default();
    if sc.privileged {
        return Err(Status::failed_precondition(
            "privileged containers are refused (on the namespaces backend this would be root on the node)",
        ));
    }
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
    if let Some(s) = &sc.seccomp {
        if s.profile_type != cri::security_profile::ProfileType::Unconfined as i32 {
            return Err(later(
                "security_context.seccomp",
                "only Unconfined is supported so far",
            ));
        }
    }
    if let Some(a) = &sc.apparmor {
        if a.profile_type != cri::security_profile::ProfileType::Unconfined as i32 {
            return Err(later(
                "security_context.apparmor",
                "no AppArmor in the guest",
            ));
        }
    }
    if sc.selinux_options.is_some() {
        return Err(later(
            "security_context.selinux_options",
            "no SELinux in the guest",
        ));
    }
    if sc.no_new_privs || !sc.masked_paths.is_empty() || !sc.readonly_paths.is_empty() {
        return Err(later(
            "security_context.no_new_privs/masked_paths/readonly_paths",
            "containers issue, next slice",
        ));
    }
    if let Some(ns) = &sc.namespace_options {
        if ns.pid != cri::NamespaceMode::Container as i32 {
            return Err(later(
                "namespace_options.pid",
                "every container has its own pid namespace so far",
            ));
        }
    }
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
        mounts: Vec::new(),
        log_path: r.log_path.to_string_lossy().into_owned(),
        resources: None,
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

    #[test]
    fn unsupported_fields_are_refused_by_name() {
        let mut c = base();
        c.mounts.push(cri::Mount {
            container_path: "/data".into(),
            host_path: "/var/lib/x".into(),
            ..Default::default()
        });
        let e = container_config(c).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented);
        assert!(e.message().contains("/var/lib/x"), "{}", e.message());

        let mut c = base();
        c.linux = Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                privileged: true,
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(
            container_config(c).unwrap_err().code(),
            tonic::Code::FailedPrecondition
        );

        let mut c = base();
        c.linux = Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                seccomp: Some(cri::SecurityProfile::default()),
                ..Default::default()
            }),
            ..Default::default()
        });
        let e = container_config(c).unwrap_err();
        assert!(e.message().contains("seccomp"), "{}", e.message());

        let mut c = base();
        c.metadata = None;
        assert_eq!(
            container_config(c).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}

//! The container domain's settings as the agent protocol takes them.

use hearth_agent_proto::v1 as proto;

/// The domain's security settings as the agent takes them.
pub(super) fn security_proto(s: &crate::container::SecurityConfig) -> proto::ContainerSecurity {
    use proto::seccomp_profile::Profile;
    let profile = match &s.seccomp {
        crate::container::SeccompConfig::Unconfined => None,
        crate::container::SeccompConfig::RuntimeDefault => Some(Profile::RuntimeDefault(true)),
        crate::container::SeccompConfig::Localhost { json, .. } => {
            Some(Profile::Json(json.clone().into()))
        }
    };
    proto::ContainerSecurity {
        privileged: s.privileged,
        no_new_privs: s.no_new_privs,
        masked_paths: s.masked_paths.clone(),
        readonly_paths: s.readonly_paths.clone(),
        seccomp: profile.map(|p| proto::SeccompProfile { profile: Some(p) }),
    }
}

/// The domain's resources as the agent takes them.
pub fn resources_proto(r: &crate::container::Resources) -> proto::ContainerResources {
    proto::ContainerResources {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit_bytes: r.memory_limit_bytes,
        memory_swap_limit_bytes: r.memory_swap_limit_bytes,
        cpuset_cpus: r.cpuset_cpus.clone(),
        cpuset_mems: r.cpuset_mems.clone(),
        unified: r.unified.clone().into_iter().collect(),
    }
}

/// `old` with the fields `new` sets (non-zero, non-empty) replaced.
pub(super) fn merge_resources(
    old: crate::container::Resources,
    new: crate::container::Resources,
) -> crate::container::Resources {
    let pick = |o: i64, n: i64| if n != 0 { n } else { o };
    let pick_s = |o: String, n: String| if n.is_empty() { o } else { n };
    let mut unified = old.unified;
    unified.extend(new.unified);
    crate::container::Resources {
        cpu_period: pick(old.cpu_period, new.cpu_period),
        cpu_quota: pick(old.cpu_quota, new.cpu_quota),
        cpu_shares: pick(old.cpu_shares, new.cpu_shares),
        memory_limit_bytes: pick(old.memory_limit_bytes, new.memory_limit_bytes),
        memory_swap_limit_bytes: pick(old.memory_swap_limit_bytes, new.memory_swap_limit_bytes),
        cpuset_cpus: pick_s(old.cpuset_cpus, new.cpuset_cpus),
        cpuset_mems: pick_s(old.cpuset_mems, new.cpuset_mems),
        unified,
    }
}

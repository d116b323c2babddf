//! Which sysctls a pod may set: only namespaced ones, and no `net.*` when
//! the pod shares the host's network namespace (that would change the
//! host).

use std::collections::BTreeMap;

use crate::error::RuntimeError;

const IPC_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
];

/// Checks sysctl names and values from `linux.sysctls`.
pub fn validate(
    sysctls: &BTreeMap<String, String>,
    host_network: bool,
) -> Result<(), RuntimeError> {
    for (key, value) in sysctls {
        let bad = |why: &str| {
            Err(RuntimeError::InvalidArgument(format!(
                "linux.sysctls[{key:?}]: {why}"
            )))
        };
        if key.is_empty()
            || key.contains("..")
            || key.starts_with('.')
            || key.ends_with('.')
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
        {
            return bad("not a sysctl name");
        }
        let name = key.replace('/', ".");
        let namespaced = IPC_SYSCTLS.contains(&name.as_str())
            || name.starts_with("fs.mqueue.")
            || name.starts_with("net.");
        if !namespaced {
            return bad("not a namespaced sysctl; only net.*, fs.mqueue.* and the IPC kernel.* sysctls can be set per pod");
        }
        if host_network && name.starts_with("net.") {
            return bad("net.* sysctls cannot be set on a pod that uses the host network");
        }
        if value.contains('\n') || value.len() > 256 {
            return bad("value must be one line of at most 256 bytes");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(k: &str, v: &str) -> BTreeMap<String, String> {
        [(k.to_owned(), v.to_owned())].into()
    }

    #[test]
    fn namespaced_sysctls_pass() {
        assert!(validate(&one("net.ipv4.ip_forward", "1"), false).is_ok());
        assert!(validate(&one("kernel.shm_rmid_forced", "1"), false).is_ok());
        assert!(validate(&one("fs.mqueue.msg_max", "10"), true).is_ok());
        assert!(validate(&one("net/ipv4/ip_unprivileged_port_start", "0"), false).is_ok());
    }

    #[test]
    fn others_are_refused_naming_the_key() {
        let e = validate(&one("kernel.panic", "1"), false).unwrap_err();
        assert!(e.to_string().contains("kernel.panic"), "{e}");
        assert!(validate(&one("net.ipv4.ip_forward", "1"), true).is_err());
        assert!(validate(&one("net.../../etc", "1"), false).is_err());
        assert!(validate(&one("net.core.somaxconn", "1\n2"), false).is_err());
    }
}

//! Pod-wide settings (the `SetupSandbox` RPC): hostname, `/etc/hostname`,
//! `/etc/hosts`, `/etc/resolv.conf` and namespaced sysctls.
//!
//! Everything is validated before anything is changed, so a bad request
//! leaves the sandbox as it was.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hearth_agent_proto::v1::SetupSandboxRequest;
use thiserror::Error;

/// Longest hostname the kernel accepts (`HOST_NAME_MAX`).
pub const MAX_HOSTNAME: usize = 64;
const MAX_SYSCTL_KEY: usize = 256;
const MAX_SYSCTL_VALUE: usize = 4096;

/// Sysctl prefixes that are per network / IPC namespace, hence per pod.
const NAMESPACED_PREFIXES: &[&str] = &["net.", "kernel.shm", "kernel.msg", "fs.mqueue."];
const NAMESPACED_EXACT: &[&str] = &["kernel.sem"];

/// Errors of `SetupSandbox`.
#[derive(Debug, Error)]
pub enum SandboxError {
    /// The hostname cannot be set.
    #[error("invalid hostname {hostname:?}: {reason}")]
    InvalidHostname {
        /// As requested (bounded).
        hostname: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A sysctl name is refused.
    #[error("invalid sysctl {key:?}: {reason}")]
    InvalidSysctl {
        /// As requested (bounded).
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The kernel has no such sysctl.
    #[error("unknown sysctl {key:?}")]
    UnknownSysctl {
        /// As requested.
        key: String,
    },
    /// Writing a sysctl failed.
    #[error("cannot set sysctl {key:?} to {value:?}")]
    WriteSysctl {
        /// The sysctl.
        key: String,
        /// The value.
        value: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// sethostname failed.
    #[error("cannot set the hostname to {hostname:?}")]
    SetHostname {
        /// The hostname.
        hostname: String,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// Writing one of the files in /etc failed.
    #[error("cannot write {}", path.display())]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Where the settings go (the real paths, or a temp dir in tests).
#[derive(Debug, Clone)]
pub struct Paths {
    /// Usually `/etc`.
    pub etc: PathBuf,
    /// Usually `/proc/sys`.
    pub proc_sys: PathBuf,
    /// Whether to call sethostname(2) (off in unit tests).
    pub set_uts_hostname: bool,
}

impl Default for Paths {
    fn default() -> Paths {
        Paths {
            etc: PathBuf::from("/etc"),
            proc_sys: PathBuf::from("/proc/sys"),
            set_uts_hostname: true,
        }
    }
}

/// Applies a `SetupSandbox` request. Blocking (file writes).
pub fn setup(req: &SetupSandboxRequest, paths: &Paths) -> Result<(), SandboxError> {
    // Validate all, then act.
    if !req.hostname.is_empty() {
        validate_hostname(&req.hostname)?;
    }
    let mut sysctls = Vec::with_capacity(req.sysctls.len());
    for (key, value) in &req.sysctls {
        let rel = sysctl_path(key)?;
        if value.len() > MAX_SYSCTL_VALUE || value.contains('\0') {
            return Err(SandboxError::InvalidSysctl {
                key: key.clone(),
                reason: "value is longer than 4096 bytes or holds a NUL",
            });
        }
        sysctls.push((key, value, paths.proc_sys.join(rel)));
    }
    // Stable order: the map's order is random and a failure should be
    // reproducible.
    sysctls.sort_by(|a, b| a.0.cmp(b.0));

    if !req.hostname.is_empty() {
        if paths.set_uts_hostname {
            nix::unistd::sethostname(&req.hostname).map_err(|source| {
                SandboxError::SetHostname {
                    hostname: req.hostname.clone(),
                    source,
                }
            })?;
        }
        write_etc(paths, "hostname", format!("{}\n", req.hostname).as_bytes())?;
    }
    if !req.hosts.is_empty() {
        write_etc(paths, "hosts", &req.hosts)?;
    }
    if !req.resolv_conf.is_empty() {
        write_etc(paths, "resolv.conf", &req.resolv_conf)?;
    }
    for (key, value, path) in sysctls {
        write_sysctl(key, value, &path)?;
    }
    Ok(())
}

fn write_etc(paths: &Paths, name: &str, contents: &[u8]) -> Result<(), SandboxError> {
    let path = paths.etc.join(name);
    write_atomic(&path, contents).map_err(|source| SandboxError::WriteFile { path, source })
}

fn write_sysctl(key: &str, value: &str, path: &Path) -> Result<(), SandboxError> {
    // O_WRONLY without O_CREAT: a missing file means an unknown sysctl.
    let res = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()));
    match res {
        Ok(()) => {
            tracing::info!(key, value, "sysctl set");
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SandboxError::UnknownSysctl {
            key: key.to_owned(),
        }),
        Err(source) => Err(SandboxError::WriteSysctl {
            key: key.to_owned(),
            value: value.to_owned(),
            source,
        }),
    }
}

/// Checks a hostname the way sethostname(2) and /etc/hostname need it.
pub fn validate_hostname(hostname: &str) -> Result<(), SandboxError> {
    let reason = if hostname.len() > MAX_HOSTNAME {
        Some("longer than 64 bytes")
    } else if hostname
        .bytes()
        .any(|b| b.is_ascii_control() || b.is_ascii_whitespace() || b == b'/')
    {
        Some("holds whitespace, a control character or '/'")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(SandboxError::InvalidHostname {
            hostname: bounded(hostname),
            reason,
        }),
    }
}

/// Checks a sysctl name and returns its path relative to `/proc/sys`.
///
/// Only sysctls that belong to the pod's own network or IPC namespace are
/// allowed: `net.*`, `kernel.shm*`, `kernel.msg*`, `kernel.sem`,
/// `fs.mqueue.*`.
pub fn sysctl_path(key: &str) -> Result<PathBuf, SandboxError> {
    let invalid = |reason| SandboxError::InvalidSysctl {
        key: bounded(key),
        reason,
    };
    if key.is_empty() || key.len() > MAX_SYSCTL_KEY {
        return Err(invalid("empty or longer than 256 bytes"));
    }
    if key.contains("..") || key.contains('/') {
        return Err(invalid("must not contain '..' or '/'"));
    }
    if key
        .bytes()
        .any(|b| !(b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'))
    {
        return Err(invalid("may hold only letters, digits, '.', '_' and '-'"));
    }
    if key.starts_with('.') || key.ends_with('.') {
        return Err(invalid("has an empty component"));
    }
    let namespaced = NAMESPACED_EXACT.contains(&key)
        || NAMESPACED_PREFIXES
            .iter()
            .any(|p| key.starts_with(p) && key.len() > p.len());
    if !namespaced {
        return Err(invalid(
            "not a namespaced sysctl (allowed: net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*)",
        ));
    }
    Ok(key.split('.').collect())
}

/// Writes `path` by writing a temporary file next to it and renaming it
/// over, so readers see the old or the new contents, never a mix.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".hearth-tmp");
    let tmp = dir.join(tmp_name);
    let res = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.set_permissions(fs::Permissions::from_mode(0o644))?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// A copy of peer input short enough to put in a message.
fn bounded(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_sysctls_are_accepted() {
        for (key, path) in [
            ("net.ipv4.ip_forward", "net/ipv4/ip_forward"),
            ("net.ipv4.conf.all.rp_filter", "net/ipv4/conf/all/rp_filter"),
            ("kernel.shmmax", "kernel/shmmax"),
            ("kernel.shm_rmid_forced", "kernel/shm_rmid_forced"),
            ("kernel.msgmnb", "kernel/msgmnb"),
            ("kernel.sem", "kernel/sem"),
            ("fs.mqueue.msg_max", "fs/mqueue/msg_max"),
        ] {
            assert_eq!(sysctl_path(key).unwrap(), PathBuf::from(path), "{key}");
        }
    }

    #[test]
    fn other_sysctls_are_refused_naming_the_key() {
        for key in [
            "",
            "kernel.hostname",
            "kernel.sem.x",
            "kernel.semx",
            "vm.overcommit_memory",
            "fs.file-max",
            "net",
            "net.",
            "fs.mqueue.",
            "kernel.shm",
            "net..ipv4",
            "net.ipv4/../../kernel",
            "net.ipv4.conf.eth0/1.rp_filter",
            ".net.ipv4",
            "net.ipv4.ip forward",
            "net.ipv4.ip_forward\n",
        ] {
            match sysctl_path(key) {
                Err(e @ SandboxError::InvalidSysctl { .. }) => {
                    assert!(e.to_string().contains(&format!("{key:?}")), "{e}");
                }
                other => panic!("{key:?}: {other:?}"),
            }
        }
        let long = format!("net.{}", "a".repeat(300));
        assert!(sysctl_path(&long).is_err());
    }

    #[test]
    fn hostnames_are_checked() {
        validate_hostname("pod-1.example").unwrap();
        validate_hostname(&"a".repeat(64)).unwrap();
        assert!(validate_hostname(&"a".repeat(65)).is_err());
        assert!(validate_hostname("a b").is_err());
        assert!(validate_hostname("a/b").is_err());
        assert!(validate_hostname("a\nb").is_err());
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        fs::write(&path, "old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn setup_writes_files_and_sysctls_after_validating_all() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc");
        let proc_sys = dir.path().join("sys");
        fs::create_dir_all(&etc).unwrap();
        fs::create_dir_all(proc_sys.join("net/ipv4")).unwrap();
        fs::write(proc_sys.join("net/ipv4/ip_forward"), "0").unwrap();
        let paths = Paths {
            etc: etc.clone(),
            proc_sys: proc_sys.clone(),
            set_uts_hostname: false,
        };
        let mut req = SetupSandboxRequest {
            hostname: "pod-a".into(),
            hosts: b"127.0.0.1 localhost\n".to_vec(),
            resolv_conf: b"nameserver 10.0.0.10\n".to_vec(),
            ..Default::default()
        };
        req.sysctls.insert("net.ipv4.ip_forward".into(), "1".into());
        setup(&req, &paths).unwrap();
        assert_eq!(fs::read_to_string(etc.join("hostname")).unwrap(), "pod-a\n");
        assert_eq!(
            fs::read_to_string(etc.join("resolv.conf")).unwrap(),
            "nameserver 10.0.0.10\n"
        );
        assert_eq!(
            fs::read_to_string(proc_sys.join("net/ipv4/ip_forward")).unwrap(),
            "1"
        );

        // A bad key anywhere: nothing is written.
        req.hostname = "pod-b".into();
        req.sysctls.insert("kernel.hostname".into(), "evil".into());
        assert!(matches!(
            setup(&req, &paths),
            Err(SandboxError::InvalidSysctl { .. })
        ));
        assert_eq!(fs::read_to_string(etc.join("hostname")).unwrap(), "pod-a\n");

        // A sysctl the kernel lacks.
        req.sysctls.clear();
        req.sysctls.insert("net.nope".into(), "1".into());
        assert!(matches!(
            setup(&req, &paths),
            Err(SandboxError::UnknownSysctl { .. })
        ));
    }
}

//! The host's cgroup filesystem: finding the hierarchies (v1 or v2) and
//! preparing a pod's cgroup (`LinuxPodSandboxConfig.cgroup_parent`,
//! cgroupfs syntax) so the backend can put the pod's processes into it.

use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::backend::PodCgroupSpec;

/// Errors of cgroup handling.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The cgroup parent is not a clean cgroupfs path.
    #[error("linux.cgroup_parent {0:?} must be a cgroupfs path without '..' (e.g. /kubepods/burstable/pod<uid>)")]
    BadParent(String),
    /// No cgroup filesystem found.
    #[error("no cgroup filesystem is mounted under {0}")]
    NotMounted(PathBuf),
    /// A cgroup file or directory operation failed.
    #[error("{path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Which cgroup version the host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// One hierarchy per controller (this project's development hosts).
    V1,
    /// The unified hierarchy (the guest; modern hosts).
    V2,
}

/// The host's cgroup hierarchies.
#[derive(Debug, Clone)]
pub struct CgroupFs {
    version: CgroupVersion,
    /// v2: the one mount point; v1: every hierarchy's mount point.
    hierarchies: Vec<PathBuf>,
}

impl CgroupFs {
    /// Reads the mounts of `/proc/self/mountinfo` under `root`
    /// (normally `/sys/fs/cgroup`).
    pub fn detect(root: &Path) -> Result<CgroupFs, CgroupError> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(io(Path::new("/proc/self/mountinfo")))?;
        Self::from_mountinfo(&mountinfo, root)
    }

    /// Parses mountinfo text (for tests and `detect`).
    pub fn from_mountinfo(mountinfo: &str, root: &Path) -> Result<CgroupFs, CgroupError> {
        let mut v1 = Vec::new();
        let mut v2 = None;
        for line in mountinfo.lines() {
            // id parent major:minor root mountpoint opts [optional...] - fstype source superopts
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mountpoint = left.split(' ').nth(4).map(unescape);
            let fstype = right.split(' ').next();
            let Some(mountpoint) = mountpoint else {
                continue;
            };
            let mp = PathBuf::from(mountpoint);
            if !mp.starts_with(root) {
                continue;
            }
            match fstype {
                Some("cgroup2") if mp == root => v2 = Some(mp),
                Some("cgroup") => v1.push(mp),
                _ => {}
            }
        }
        if let Some(mp) = v2 {
            return Ok(CgroupFs {
                version: CgroupVersion::V2,
                hierarchies: vec![mp],
            });
        }
        if v1.is_empty() {
            return Err(CgroupError::NotMounted(root.to_owned()));
        }
        v1.sort();
        v1.dedup();
        Ok(CgroupFs {
            version: CgroupVersion::V1,
            hierarchies: v1,
        })
    }

    /// The host's cgroup version.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// Creates the pod's cgroup in every hierarchy (parents included) and
    /// returns what the backend needs, plus the directories this call
    /// created (deepest last), which [`remove_created`] takes away later.
    pub fn prepare(&self, parent: &str) -> Result<(PodCgroupSpec, Vec<PathBuf>), CgroupError> {
        let rel = clean_parent(parent)?;
        let mut created = Vec::new();
        let mut procs_files = Vec::new();
        let result = (|| {
            for h in &self.hierarchies {
                let mut dir = h.clone();
                for part in rel.components() {
                    dir.push(part);
                    match fs::create_dir(&dir) {
                        Ok(()) => {
                            created.push(dir.clone());
                            if h.file_name()
                                .is_some_and(|n| n.to_string_lossy().contains("cpuset"))
                            {
                                inherit_cpuset(&dir)?;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(io(&dir)(e)),
                    }
                }
                procs_files.push(dir.join("cgroup.procs"));
            }
            Ok(())
        })();
        if let Err(e) = result {
            remove_created(&created);
            return Err(e);
        }
        Ok((
            PodCgroupSpec {
                parent: format!("/{}", rel.display()),
                procs_files,
            },
            created,
        ))
    }
}

/// Removes cgroup directories created by [`CgroupFs::prepare`], deepest
/// first; a directory still in use (EBUSY) or gone is left alone. The
/// pod's own cgroup (the deepest made in its hierarchy) loses its child
/// cgroups first: the agent's per-container cgroups on the namespaces
/// backend, empty once the pod's processes are gone.
pub fn remove_created(created: &[PathBuf]) {
    let mut dirs: Vec<&PathBuf> = created.iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        if !created.iter().any(|c| c != d && c.starts_with(d)) {
            remove_children(d);
        }
        match fs::remove_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // Still used by another sandbox of the pod (which removes it
            // when it goes), or by processes Hearth did not start.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::ENOTEMPTY)) => {
                tracing::debug!(dir = %d.display(), "cgroup directory still in use; kept");
            }
            Err(e) => {
                tracing::warn!(dir = %d.display(), error = %e, "cgroup directory not removed")
            }
        }
    }
}

/// Removes the child cgroups of `dir`, deepest first (best effort: one
/// that still has processes stays, and so does `dir` then).
fn remove_children(dir: &Path) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            let child = e.path();
            remove_children(&child);
            if let Err(e) = fs::remove_dir(&child) {
                tracing::debug!(dir = %child.display(), error = %e, "child cgroup not removed");
            }
        }
    }
}

fn clean_parent(parent: &str) -> Result<PathBuf, CgroupError> {
    let p = Path::new(parent.trim_start_matches('/'));
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return Err(CgroupError::BadParent(parent.to_owned())),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(CgroupError::BadParent(parent.to_owned()));
    }
    Ok(out)
}

// A new v1 cpuset cgroup starts with no cpus and mems; tasks cannot join
// it until they are set. Copy the parent's.
fn inherit_cpuset(dir: &Path) -> Result<(), CgroupError> {
    let parent = dir.parent().unwrap_or(dir);
    for f in ["cpuset.cpus", "cpuset.mems"] {
        let src = parent.join(f);
        let Ok(value) = fs::read_to_string(&src) else {
            continue;
        };
        let dst = dir.join(f);
        if fs::read_to_string(&dst)
            .map(|v| v.trim().is_empty())
            .unwrap_or(false)
        {
            fs::write(&dst, value.trim()).map_err(io(&dst))?;
        }
    }
    Ok(())
}

fn unescape(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) if b[i] == b'\\' => {
                let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "\
25 30 0:23 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
27 25 0:25 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
30 25 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
31 25 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
40 1 0:30 / /mnt/other rw - cgroup cgroup rw,pids
";

    const V2: &str = "25 30 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";

    #[test]
    fn finds_v1_hierarchies_under_the_root_only() {
        let fs = CgroupFs::from_mountinfo(V1, Path::new("/sys/fs/cgroup")).unwrap();
        assert_eq!(fs.version(), CgroupVersion::V1);
        assert_eq!(
            fs.hierarchies,
            vec![
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"),
                PathBuf::from("/sys/fs/cgroup/memory"),
                PathBuf::from("/sys/fs/cgroup/systemd"),
            ]
        );
    }

    #[test]
    fn finds_v2() {
        let fs = CgroupFs::from_mountinfo(V2, Path::new("/sys/fs/cgroup")).unwrap();
        assert_eq!(fs.version(), CgroupVersion::V2);
    }

    #[test]
    fn no_cgroups_is_an_error() {
        assert!(CgroupFs::from_mountinfo("", Path::new("/sys/fs/cgroup")).is_err());
    }

    #[test]
    fn parents_are_cleaned() {
        assert_eq!(
            clean_parent("/kubepods/pod1").unwrap(),
            PathBuf::from("kubepods/pod1")
        );
        assert_eq!(
            clean_parent("kubepods/./pod1").unwrap(),
            PathBuf::from("kubepods/pod1")
        );
        assert!(clean_parent("/kubepods/../../etc").is_err());
        assert!(clean_parent("/").is_err());
    }

    #[test]
    fn prepare_creates_and_removes_in_a_fake_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir_all(root.join("memory")).unwrap();
        fs::create_dir_all(root.join("cpuset")).unwrap();
        fs::write(root.join("cpuset/cpuset.cpus"), "0-1\n").unwrap();
        let cg = CgroupFs {
            version: CgroupVersion::V1,
            hierarchies: vec![root.join("cpuset"), root.join("memory")],
        };
        let (spec, created) = cg.prepare("/kubepods/pod-a").unwrap();
        assert_eq!(spec.parent, "/kubepods/pod-a");
        assert_eq!(
            spec.procs_files[1],
            root.join("memory/kubepods/pod-a/cgroup.procs")
        );
        assert_eq!(created.len(), 4);
        // A fake tree has no kernel-made files, so the cpuset copy only
        // happens where the file exists; a real one is tested end to end.
        // The agent's container cgroups inside the pod's go too.
        fs::create_dir_all(root.join("memory/kubepods/pod-a/containers/abc")).unwrap();
        remove_created(&created);
        assert!(!root.join("memory/kubepods").exists());
        assert!(root.join("memory").exists());
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }
}

//! The jailer's chroot as Hearth prepares and removes it: files hard-linked
//! (or bind-mounted) in, ownership and access checked, and the per-VM
//! cgroups the jailer creates removed after the VMM is gone.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{FirecrackerError, Result};

/// A jailer chroot owned by a [`VmmProcess`].
#[derive(Debug)]
pub(crate) struct Jail {
    pub(crate) instance_dir: PathBuf,
    pub(crate) root: PathBuf,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) bind_mounts: Vec<PathBuf>,
    /// `(parent, id)` of the per-VM cgroup the jailer creates when given
    /// `--cgroup` properties (`<mount>/<parent>/<id>` in every hierarchy).
    pub(crate) cgroup: Option<(String, String)>,
}

impl Jail {
    pub(crate) fn new(
        instance_dir: PathBuf,
        root: PathBuf,
        uid: u32,
        gid: u32,
        cgroup: Option<(String, String)>,
    ) -> Self {
        Jail {
            instance_dir,
            root,
            uid,
            gid,
            bind_mounts: Vec::new(),
            cgroup,
        }
    }

    pub(crate) fn host_path(&self, jail_path: &Path) -> PathBuf {
        self.root
            .join(jail_path.strip_prefix("/").unwrap_or(jail_path))
    }

    pub(crate) fn link(&mut self, host: &Path, jail_path: &Path, writable: bool) -> Result<()> {
        if !jail_path.is_absolute()
            || jail_path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(FirecrackerError::InvalidArgument {
                field: "jail path",
                reason: format!("{} must be absolute without '..'", jail_path.display()),
            });
        }
        let meta = std::fs::metadata(host).map_err(FirecrackerError::io("stat", host))?;
        let dst = self.host_path(jail_path);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(FirecrackerError::io("create", parent))?;
        }
        match std::fs::hard_link(host, &dst) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                std::fs::write(&dst, b"").map_err(FirecrackerError::io("create", &dst))?;
                let flags = nix::mount::MsFlags::MS_BIND;
                nix::mount::mount(Some(host), &dst, None::<&str>, flags, None::<&str>)
                    .map_err(|e| FirecrackerError::io("bind mount", &dst)(e.into()))?;
                self.bind_mounts.push(dst.clone());
            }
            Err(e) => return Err(FirecrackerError::io("hard link", &dst)(e)),
        }
        if writable {
            nix::unistd::chown(&dst, Some(self.uid.into()), Some(self.gid.into()))
                .map_err(|e| FirecrackerError::io("chown", &dst)(e.into()))?;
        } else if !readable_by(&meta, self.uid, self.gid) {
            return Err(FirecrackerError::InvalidArgument {
                field: "jail file",
                reason: format!(
                    "{} is not readable by uid {} gid {}",
                    host.display(),
                    self.uid,
                    self.gid
                ),
            });
        }
        Ok(())
    }

    pub(crate) fn remove(&mut self) {
        for m in self.bind_mounts.drain(..) {
            if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
                tracing::warn!(path = %m.display(), error = %e, "unmount jail file");
            }
        }
        if let Some((parent, id)) = self.cgroup.take() {
            remove_vm_cgroups(&parent, &id);
        }
        if let Err(e) = std::fs::remove_dir_all(&self.instance_dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.instance_dir.display(), error = %e, "remove jail");
            }
        }
    }
}

fn readable_by(meta: &std::fs::Metadata, uid: u32, gid: u32) -> bool {
    let mode = meta.mode();
    uid == 0
        || mode & 0o004 != 0
        || (meta.uid() == uid && mode & 0o400 != 0)
        || (meta.gid() == gid && mode & 0o040 != 0)
}

/// Mount points of every cgroup (v1) and cgroup2 hierarchy.
pub(crate) fn cgroup_mounts(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split_whitespace().next()?;
            let mount_point = pre.split_whitespace().nth(4)?;
            matches!(fstype, "cgroup" | "cgroup2")
                .then(|| PathBuf::from(mount_point.replace("\\040", " ")))
        })
        .collect()
}

/// Removes `<mount>/<parent>/<id>` in every hierarchy (the process must be
/// reaped; the kernel may need a moment to let go of an emptied cgroup).
fn remove_vm_cgroups(parent: &str, id: &str) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    for m in cgroup_mounts(&mountinfo) {
        let dir = m.join(parent).join(id);
        if !dir.is_dir() {
            continue;
        }
        let mut tries = 0;
        while let Err(e) = std::fs::remove_dir(&dir) {
            tries += 1;
            if tries > 20 || e.raw_os_error() != Some(libc::EBUSY) {
                tracing::warn!(path = %dir.display(), error = %e, "remove vm cgroup");
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup_mounts() {
        let mi = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                  32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                  40 31 0:35 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup_mounts(mi),
            [
                PathBuf::from("/sys/fs/cgroup/cpu"),
                PathBuf::from("/sys/fs/cgroup/unified")
            ]
        );
    }
}

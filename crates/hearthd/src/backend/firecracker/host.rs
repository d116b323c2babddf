//! Host-side pieces of a Firecracker sandbox that must work from the
//! persisted handle alone (after a hearthd restart the `VmmProcess` that
//! spawned the VM is gone): linking files into the jail, unmounting what
//! was bind-mounted there, removing the jailer's per-VM cgroups, and killing a pid checked by its start time.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Makes `host` visible at `jail_path` under `root`: a hard link, or a bind
/// mount when it lives on another filesystem. Writable files are chowned to
/// the VM's uid/gid; read-only ones must be readable by it.
pub(crate) fn link_into(
    root: &Path,
    host: &Path,
    jail_path: &Path,
    writable: bool,
    uid: u32,
    gid: u32,
) -> std::io::Result<PathBuf> {
    let rel = jail_path.strip_prefix("/").unwrap_or(jail_path);
    let dst = root.join(rel);
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent)?;
    }
    unlink_or_unmount(&dst)?;
    match std::fs::hard_link(host, &dst) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            std::fs::write(&dst, b"")?;
            nix::mount::mount(
                Some(host),
                &dst,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(std::io::Error::from)?;
        }
        Err(e) => return Err(e),
    }
    let meta = std::fs::metadata(host)?;
    if writable {
        nix::unistd::chown(&dst, Some(uid.into()), Some(gid.into()))
            .map_err(std::io::Error::from)?;
    } else {
        let mode = meta.mode();
        let readable = uid == 0
            || mode & 0o004 != 0
            || (meta.uid() == uid && mode & 0o400 != 0)
            || (meta.gid() == gid && mode & 0o040 != 0);
        if !readable {
            let _ = unlink_or_unmount(&dst);
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("{} is not readable by uid {uid} gid {gid}", host.display()),
            ));
        }
    }
    Ok(dst)
}

/// Removes a jail file, unmounting it first when it is a bind mount.
pub(crate) fn unlink_or_unmount(p: &Path) -> std::io::Result<()> {
    if mounts_under(p).iter().any(|m| m == p) {
        let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
    }
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Mount points at or under `dir` in this mount namespace, deepest first.
pub(crate) fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect();
    out.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    out.dedup();
    out
}

/// Unmounts everything under `dir` and removes it. Missing is fine.
pub(crate) fn remove_tree(dir: &Path) -> std::io::Result<()> {
    for m in mounts_under(dir) {
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes `<mount>/<parent>/<id>` in every cgroup hierarchy (the VMM must
/// be gone; an emptied cgroup may stay busy for a moment).
pub(crate) fn remove_vm_cgroups(parent: &str, id: &str) {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for l in text.lines() {
        let Some((pre, post)) = l.split_once(" - ") else {
            continue;
        };
        let fstype = post.split_whitespace().next().unwrap_or("");
        if !matches!(fstype, "cgroup" | "cgroup2") {
            continue;
        }
        let Some(mount) = pre.split_whitespace().nth(4) else {
            continue;
        };
        let dir = Path::new(mount).join(parent).join(id);
        let mut tries = 0;
        while dir.is_dir() {
            match std::fs::remove_dir(&dir) {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 40 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => {
                    tracing::warn!(path = %dir.display(), error = %e, "cannot remove vm cgroup");
                    break;
                }
            }
        }
    }
}

/// SIGKILLs `pid` if it still is the process that started at `started`.
pub(crate) fn kill_checked(pid: u32, started: u64) {
    if crate::backend::process::alive(pid, started) {
        // SAFETY: kill(2) on a pid whose start time we just checked.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_unlinks_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let src = dir.path().join("a.img");
        std::fs::write(&src, b"x").unwrap();
        let dst = link_into(&root, &src, Path::new("/d/a.img"), false, 0, 0).unwrap();
        assert_eq!(dst, root.join("d/a.img"));
        assert_eq!(
            std::fs::metadata(&dst).unwrap().ino(),
            std::fs::metadata(&src).unwrap().ino()
        );
        // Linking again over an existing link replaces it.
        link_into(&root, &src, Path::new("/d/a.img"), false, 0, 0).unwrap();
        unlink_or_unmount(&dst).unwrap();
        assert!(!dst.exists() && src.exists());
        unlink_or_unmount(&dst).unwrap();
        remove_tree(&root).unwrap();
        assert!(!root.exists());
    }
}

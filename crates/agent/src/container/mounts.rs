//! Mounts a container's init makes in its own mount namespace: guest paths
//! (volumes) bound into the rootfs, masked paths, read-only paths.
//!
//! A destination inside the rootfs is resolved like a path lookup rooted
//! there ([`secure_join`]): a symlink in the image cannot point a mount
//! outside the container.

use std::fs;
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, MsFlags};
use serde::{Deserialize, Serialize};

use super::helper::{ensure_dir, ensure_file, mnt_err};

/// Symlinks followed at most while resolving one destination.
const MAX_LINKS: usize = 40;

/// A guest path bound at a path of the container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// Absolute path in the guest (the agent's view).
    pub source: PathBuf,
    /// Absolute path in the container.
    pub destination: String,
    /// Read-only in the container.
    pub read_only: bool,
}

/// `root` joined with `unsafe_path`, every symlink resolved as if `root`
/// were `/` (`..` stops at `root`). Components that do not exist are kept
/// as they are.
pub fn secure_join(root: &Path, unsafe_path: &Path) -> Result<PathBuf, String> {
    let mut pending: Vec<PathBuf> = unsafe_path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect();
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == Path::new("..") {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        match fs::read_link(root.join(&candidate)) {
            Ok(target) => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(format!(
                        "too many symlinks resolving {} in the container",
                        unsafe_path.display()
                    ));
                }
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push(PathBuf::from(n)),
                        Component::ParentDir => pending.push(PathBuf::from("..")),
                        _ => {}
                    }
                }
            }
            Err(_) => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

/// Binds `source` on `target` (created as a file or directory like the
/// source), read-only when asked.
pub fn bind(source: &Path, target: &Path, read_only: bool) -> Result<(), String> {
    let meta = fs::metadata(source).map_err(|e| format!("{}: {e}", source.display()))?;
    if meta.is_dir() {
        ensure_dir(target)?;
    } else {
        ensure_file(target)?;
    }
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| mnt_err(&source.display().to_string(), target, e))?;
    if read_only {
        remount_read_only(target)?;
    }
    Ok(())
}

/// Remounts the bind mount at `target` read-only, keeping the flags it
/// has (a bind remount replaces them: nosuid, nodev and noexec would be
/// lost).
pub fn remount_read_only(target: &Path) -> Result<(), String> {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let have = statvfs(target)
        .map_err(|e| format!("statvfs {}: {e}", target.display()))?
        .flags();
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
    for (f, m) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if have.contains(f) {
            flags |= m;
        }
    }
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
        .map_err(|e| mnt_err("a read-only remount", target, e))
}

/// Binds `m` into the container whose root is `rootfs`.
pub fn bind_into(rootfs: &Path, m: &BindMount) -> Result<(), String> {
    let dest = Path::new(&m.destination);
    if !dest.is_absolute() {
        return Err(format!(
            "mount destination {:?} must be absolute",
            m.destination
        ));
    }
    let target = secure_join(rootfs, dest)?;
    bind(&m.source, &target, m.read_only)
}

/// Hides `path` (after the pivot): a directory under an empty read-only
/// tmpfs, a file under /dev/null. A path that does not exist is skipped.
pub fn mask(path: &Path) -> Result<(), String> {
    let Ok(meta) = fs::metadata(path) else {
        return Ok(());
    };
    if meta.is_dir() {
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0"),
        )
        .map_err(|e| mnt_err("an empty tmpfs", path, e))
    } else {
        mount(
            Some("/dev/null"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| mnt_err("/dev/null", path, e))
    }
}

/// Makes `path` read-only (after the pivot). A path that does not exist is
/// skipped.
pub fn read_only(path: &Path) -> Result<(), String> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| mnt_err("itself", path, e))?;
    remount_read_only(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn destinations_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("etc/sub")).unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        symlink("../../..", root.join("etc/sub/up")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        let j = |p: &str| secure_join(root, Path::new(p));
        assert_eq!(j("/etc/hosts").unwrap(), root.join("etc/hosts"));
        assert_eq!(j("/abs/passwd").unwrap(), root.join("etc/passwd"));
        assert_eq!(j("/etc/sub/up/x").unwrap(), root.join("x"));
        assert_eq!(j("/../../x").unwrap(), root.join("x"));
        assert_eq!(j("/new/dir").unwrap(), root.join("new/dir"));
        assert!(j("/loop1/x").unwrap_err().contains("too many symlinks"));
    }
}

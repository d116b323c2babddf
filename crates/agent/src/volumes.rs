//! Volumes in the guest (`SyncVolume`, `CreateEmptyDir`, `ReadVolumeFile`,
//! `RemoveVolume`): directories under [`VOLUME_DIR`] that containers mount.
//!
//! - A synced volume (secret, configMap, projected, downwardAPI, a copied
//!   file) is a directory on tmpfs (`/run` is a tmpfs in the VM and in the
//!   namespaces backend's private root). `SyncVolume` makes its tree equal
//!   to the one sent in three passes: directories and regular files (each
//!   file written to a temporary name and renamed over), then symlinks
//!   (each made under a temporary name and renamed over: the kubelet's
//!   atomic `..data` swap replayed), then whatever the tree no longer has
//!   (the old timestamped directory). A container sees either the old or
//!   the new `..data`, never a mix.
//! - An emptyDir is a directory on the scratch disk
//!   ([`SCRATCH_VOLUME_DIR`]`/<name>`), reached through a symlink
//!   `VOLUME_DIR/<name>`, or a tmpfs mounted at `VOLUME_DIR/<name>`.
//!
//! Every write walks the volume with `openat(O_NOFOLLOW)` from the
//! volume's root, so a symlink in the tree (sent by the host or planted by
//! a container in a writable volume) is never followed by the agent.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use hearth_agent_proto::v1::{
    file_entry::Kind, CreateEmptyDirRequest, ReadVolumeFileRequest, ReadVolumeFileResponse,
    SyncVolumeRequest,
};
use hearth_agent_proto::MAX_CHUNK_BYTES;
use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::{fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use thiserror::Error;

/// Where volumes live in the guest.
pub const VOLUME_DIR: &str = "/run/hearth/volumes";
/// Where emptyDirs live: on the pod's scratch disk.
pub const SCRATCH_VOLUME_DIR: &str = "/run/hearth/scratch/volumes";
/// Deepest path accepted in a tree.
const MAX_DEPTH: usize = 32;
/// Prefix of the temporary names a sync renames over the real ones.
const TMP_PREFIX: &str = ".hearth-sync-";

/// Errors of the volume RPCs.
#[derive(Debug, Error)]
pub enum VolumeError {
    /// The request is malformed.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// No such volume or file.
    #[error("{0}")]
    NotFound(String),
    /// A filesystem call failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(Errno) -> VolumeError {
    let what = what.into();
    move |e| VolumeError::Io {
        what,
        source: std::io::Error::from(e),
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> VolumeError {
    VolumeError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// The guest's volumes.
#[derive(Debug)]
pub struct Volumes {
    dir: PathBuf,
    scratch: PathBuf,
    /// Serialises the volume calls (a sync is a few passes over a tree).
    lock: Mutex<()>,
}

impl Default for Volumes {
    fn default() -> Volumes {
        Volumes::with_dirs(VOLUME_DIR.into(), SCRATCH_VOLUME_DIR.into())
    }
}

/// The kind of a tree entry, for the passes of a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    Dir,
    File,
    Symlink,
}

struct Stat {
    kind: Option<EntryKind>,
    mode: u32,
    uid: u32,
    gid: u32,
    size: i64,
}

fn stat_at(dir: RawFd, name: &OsStr) -> Result<Option<Stat>, Errno> {
    match fstatat(Some(dir), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => {
            let fmt = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
            let kind = if fmt == SFlag::S_IFDIR {
                Some(EntryKind::Dir)
            } else if fmt == SFlag::S_IFREG {
                Some(EntryKind::File)
            } else if fmt == SFlag::S_IFLNK {
                Some(EntryKind::Symlink)
            } else {
                None
            };
            Ok(Some(Stat {
                kind,
                mode: st.st_mode & 0o7777,
                uid: st.st_uid,
                gid: st.st_gid,
                size: st.st_size,
            }))
        }
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `openat` returning an owned fd (`dir` `None`: `path` is absolute).
fn openat_owned(
    dir: Option<RawFd>,
    path: &(impl nix::NixPath + ?Sized),
    flags: OFlag,
    mode: Mode,
) -> Result<OwnedFd, Errno> {
    let fd = openat(dir, path, flags, mode)?;
    // SAFETY: openat returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A close-on-exec duplicate of `fd` (a container helper cloned meanwhile
/// must not inherit it).
fn dup_cloexec(fd: RawFd) -> Result<OwnedFd, Errno> {
    let new = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(0))?;
    // SAFETY: fcntl returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

fn open_dir_at(dir: RawFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    openat_owned(
        Some(dir),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Removes `name` in `dir` (recursively for a directory) without following
/// any symlink. Absent is fine.
fn remove_at(dir: RawFd, name: &OsStr) -> Result<(), Errno> {
    let Some(st) = stat_at(dir, name)? else {
        return Ok(());
    };
    if st.kind == Some(EntryKind::Dir) {
        let sub = open_dir_at(dir, name)?;
        for child in list_at(&sub)? {
            remove_at(sub.as_raw_fd(), &child)?;
        }
        match unlinkat(Some(dir), name, UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e),
        }
    } else {
        match unlinkat(Some(dir), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The names in the directory `dir` (without `.` and `..`).
fn list_at(dir: &OwnedFd) -> Result<Vec<std::ffi::OsString>, Errno> {
    let fd = dup_cloexec(dir.as_raw_fd())?;
    let mut d = nix::dir::Dir::from_fd(std::os::fd::IntoRawFd::into_raw_fd(fd))?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e?;
        let name = e.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push(OsStr::from_bytes(name).to_owned());
        }
    }
    Ok(out)
}

/// Checks a tree path: relative, '/'-separated, only normal components.
fn check_path(p: &str) -> Result<&Path, VolumeError> {
    let path = Path::new(p);
    let ok = !p.is_empty()
        && !p.contains('\0')
        && !p.ends_with('/')
        && !p.contains("//")
        && path.components().count() <= MAX_DEPTH
        && path.components().all(|c| matches!(c, Component::Normal(_)))
        && !p.split('/').any(|c| c == "." || c.is_empty());
    if !ok {
        return Err(invalid(
            "entries.path",
            format!("{p:?} must be a relative path without '.', '..' or empty components"),
        ));
    }
    Ok(path)
}

impl Volumes {
    /// Volumes under `dir`, emptyDirs on scratch under `scratch` (tests
    /// use temp dirs).
    pub fn with_dirs(dir: PathBuf, scratch: PathBuf) -> Volumes {
        Volumes {
            dir,
            scratch,
            lock: Mutex::new(()),
        }
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn base(&self) -> Result<OwnedFd, VolumeError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| VolumeError::Io {
            what: format!("creating {}", self.dir.display()),
            source,
        })?;
        openat_owned(
            None,
            &self.dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err(format!("opening {}", self.dir.display())))
    }

    /// `SyncVolume` (blocking): the volume's tree becomes the one sent.
    pub fn sync(&self, req: &SyncVolumeRequest) -> Result<(), VolumeError> {
        validate_name(&req.name)?;
        let wanted = check_tree(req)?;
        let _g = self.guard();
        let base = self.base()?;
        let name = OsStr::new(&req.name);
        match stat_at(base.as_raw_fd(), name).map_err(io_err("stat of the volume"))? {
            None => {
                mkdirat(
                    Some(base.as_raw_fd()),
                    name,
                    Mode::from_bits_truncate(0o700),
                )
                .map_err(io_err(format!("creating volume {}", req.name)))?;
            }
            Some(st) if st.kind == Some(EntryKind::Dir) => {}
            Some(_) => {
                return Err(invalid(
                    "name",
                    format!("volume {} is an emptyDir, not a synced volume", req.name),
                ))
            }
        }
        let root = open_dir_at(base.as_raw_fd(), name)
            .map_err(io_err(format!("opening volume {}", req.name)))?;
        nix::sys::stat::fchmod(
            root.as_raw_fd(),
            Mode::from_bits_truncate(req.root_mode & 0o7777),
        )
        .map_err(io_err("chmod of the volume root"))?;
        // 1. Directories and files, parents first.
        for e in &req.entries {
            let path = Path::new(&e.path);
            let (parent, leaf) = self.parent_of(&root, path)?;
            let mode = Mode::from_bits_truncate(e.mode & 0o7777);
            match &e.kind {
                Some(Kind::Directory(_)) => {
                    let st = stat_at(parent.as_raw_fd(), leaf).map_err(io_err(&e.path))?;
                    match st.as_ref().and_then(|s| s.kind) {
                        Some(EntryKind::Dir) => {}
                        _ => {
                            if st.is_some() {
                                remove_at(parent.as_raw_fd(), leaf).map_err(io_err(&e.path))?;
                            }
                            mkdirat(
                                Some(parent.as_raw_fd()),
                                leaf,
                                Mode::from_bits_truncate(0o700),
                            )
                            .map_err(io_err(format!("creating {}", e.path)))?;
                        }
                    }
                    let d = open_dir_at(parent.as_raw_fd(), leaf).map_err(io_err(&e.path))?;
                    nix::unistd::fchown(
                        d.as_raw_fd(),
                        Some(Uid::from_raw(e.uid)),
                        Some(Gid::from_raw(e.gid)),
                    )
                    .map_err(io_err(format!("chown of {}", e.path)))?;
                    nix::sys::stat::fchmod(d.as_raw_fd(), mode)
                        .map_err(io_err(format!("chmod of {}", e.path)))?;
                }
                Some(Kind::File(data)) => {
                    write_file(&parent, leaf, data, e.mode & 0o7777, e.uid, e.gid)
                        .map_err(io_err(format!("writing {}", e.path)))?;
                }
                Some(Kind::Symlink(_)) | None => {}
            }
        }
        // 2. Symlinks, each swapped in atomically.
        for e in &req.entries {
            if let Some(Kind::Symlink(target)) = &e.kind {
                let (parent, leaf) = self.parent_of(&root, Path::new(&e.path))?;
                replace_symlink(&parent, leaf, target, e.uid, e.gid)
                    .map_err(io_err(format!("symlink {}", e.path)))?;
            }
        }
        // 3. What the tree no longer has.
        prune(&root, Path::new(""), &wanted).map_err(io_err("removing stale entries"))?;
        Ok(())
    }

    /// The directory holding `path` in the volume (walked without
    /// following symlinks) and the last component.
    fn parent_of<'p>(
        &self,
        root: &OwnedFd,
        path: &'p Path,
    ) -> Result<(OwnedFd, &'p OsStr), VolumeError> {
        let leaf = path
            .file_name()
            .ok_or_else(|| invalid("path", format!("{} has no name", path.display())))?;
        let mut fd = dup_cloexec(root.as_raw_fd()).map_err(io_err("dup"))?;
        if let Some(parent) = path.parent() {
            for c in parent.components() {
                fd = open_dir_at(fd.as_raw_fd(), c.as_os_str()).map_err(|e| match e {
                    Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP => VolumeError::NotFound(
                        format!("{} is not a directory of the volume", parent.display()),
                    ),
                    e => VolumeError::Io {
                        what: format!("opening {}", parent.display()),
                        source: e.into(),
                    },
                })?;
            }
        }
        Ok((fd, leaf))
    }

    /// `CreateEmptyDir` (blocking, idempotent).
    pub fn create_empty_dir(&self, req: &CreateEmptyDirRequest) -> Result<(), VolumeError> {
        validate_name(&req.name)?;
        let _g = self.guard();
        let base = self.base()?;
        let name = OsStr::new(&req.name);
        if stat_at(base.as_raw_fd(), name)
            .map_err(io_err("stat of the volume"))?
            .is_some()
        {
            return Ok(());
        }
        let target = self.dir.join(&req.name);
        if req.tmpfs_size_bytes > 0 || req.memory {
            mkdirat(
                Some(base.as_raw_fd()),
                name,
                Mode::from_bits_truncate(0o777),
            )
            .map_err(io_err(format!("creating {}", target.display())))?;
            let opts = match req.tmpfs_size_bytes {
                0 => "mode=0777".to_owned(),
                n => format!("mode=0777,size={n}"),
            };
            let mounted = nix::mount::mount(
                Some("tmpfs"),
                &target,
                Some("tmpfs"),
                nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                Some(opts.as_str()),
            );
            if let Err(e) = mounted {
                let _ = unlinkat(Some(base.as_raw_fd()), name, UnlinkatFlags::RemoveDir);
                return Err(io_err(format!("mounting a tmpfs on {}", target.display()))(
                    e,
                ));
            }
            return Ok(());
        }
        let scratch_root = self.scratch.parent().unwrap_or(Path::new("/"));
        if !scratch_root.is_dir() {
            return Err(VolumeError::NotFound(format!(
                "the scratch disk is not mounted at {}",
                scratch_root.display()
            )));
        }
        let dir = self.scratch.join(&req.name);
        let io = |what: &str| {
            let what = format!("{what} {}", dir.display());
            move |source| VolumeError::Io { what, source }
        };
        std::fs::create_dir_all(&dir).map_err(io("creating"))?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .map_err(io("chmod of"))?;
        symlinkat(&dir, Some(base.as_raw_fd()), name)
            .map_err(io_err(format!("linking {}", target.display())))?;
        Ok(())
    }

    /// `ReadVolumeFile` (blocking): at most `max_bytes` of a regular file.
    pub fn read_file(
        &self,
        req: &ReadVolumeFileRequest,
    ) -> Result<ReadVolumeFileResponse, VolumeError> {
        validate_name(&req.name)?;
        let path = check_path(&req.path)?;
        let max = match req.max_bytes as usize {
            0 => MAX_CHUNK_BYTES,
            n => n.min(MAX_CHUNK_BYTES),
        };
        let _g = self.guard();
        let base = self.base()?;
        let root = self.open_root(&base, &req.name)?;
        let (parent, leaf) = self.parent_of(&root, path)?;
        let fd = openat_owned(
            Some(parent.as_raw_fd()),
            leaf,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::ENOENT | Errno::ELOOP => {
                VolumeError::NotFound(format!("volume {} has no file {}", req.name, req.path))
            }
            e => io_err(format!("opening {}", req.path))(e),
        })?;
        let mut file = std::fs::File::from(fd);
        let meta = file.metadata().map_err(|source| VolumeError::Io {
            what: format!("stat of {}", req.path),
            source,
        })?;
        if !meta.is_file() {
            return Err(invalid(
                "path",
                format!("{} is not a regular file", req.path),
            ));
        }
        let mut data = Vec::new();
        (&mut file)
            .take(max as u64 + 1)
            .read_to_end(&mut data)
            .map_err(|source| VolumeError::Io {
                what: format!("reading {}", req.path),
                source,
            })?;
        let truncated = data.len() > max;
        data.truncate(max);
        Ok(ReadVolumeFileResponse { data, truncated })
    }

    /// The volume's root directory (an emptyDir's symlink is followed: the
    /// agent made it).
    fn open_root(&self, base: &OwnedFd, name: &str) -> Result<OwnedFd, VolumeError> {
        openat_owned(
            Some(base.as_raw_fd()),
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::ENOENT => VolumeError::NotFound(format!("no volume {name}")),
            e => io_err(format!("opening volume {name}"))(e),
        })
    }

    /// `RemoveVolume` (blocking, idempotent): unmounts a tmpfs, deletes the
    /// tree (and an emptyDir's directory on scratch).
    pub fn remove(&self, name: &str) -> Result<(), VolumeError> {
        validate_name(name)?;
        let _g = self.guard();
        let base = self.base()?;
        let os = OsStr::new(name);
        let Some(st) = stat_at(base.as_raw_fd(), os).map_err(io_err("stat of the volume"))? else {
            return Ok(());
        };
        let path = self.dir.join(name);
        if st.kind == Some(EntryKind::Symlink) {
            let dir = self.scratch.join(name);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(VolumeError::Io {
                        what: format!("removing {}", dir.display()),
                        source,
                    })
                }
            }
        } else if st.kind == Some(EntryKind::Dir) && is_mountpoint(&path) {
            nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH)
                .map_err(io_err(format!("unmounting {}", path.display())))?;
        }
        remove_at(base.as_raw_fd(), os).map_err(io_err(format!("removing {}", path.display())))
    }

    /// The guest path a container mount binds: the volume `name`, or
    /// `sub_path` inside it. The path must exist and must not lead out of
    /// the volume through a symlink.
    pub fn source(&self, name: &str, sub_path: &str) -> Result<PathBuf, VolumeError> {
        validate_name(name)?;
        let sub = Path::new(sub_path);
        if sub.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(VolumeError::Invalid {
                field: "sub_path",
                reason: format!("{sub_path:?} must be a relative path without '..'"),
            });
        }
        let p = self.dir.join(name).join(sub);
        if std::fs::symlink_metadata(&p).is_err() {
            return Err(VolumeError::NotFound(format!(
                "volume {name} has no {}",
                p.display()
            )));
        }
        if sub_path.is_empty() {
            return Ok(p);
        }
        // A symlink inside the volume (a configMap key → ..data/key) is
        // resolved, but only to a path inside the volume.
        let root = std::fs::canonicalize(self.dir.join(name));
        let real = std::fs::canonicalize(&p);
        match (root, real) {
            (Ok(root), Ok(real)) if real.starts_with(&root) => Ok(real),
            _ => Err(invalid(
                "sub_path",
                format!("{sub_path:?} leads out of volume {name}"),
            )),
        }
    }
}

fn is_mountpoint(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(m), Some(parent)) = (std::fs::symlink_metadata(path), path.parent()) else {
        return false;
    };
    std::fs::metadata(parent).is_ok_and(|p| p.dev() != m.dev())
}

/// Validates the tree: paths, parents before children, no duplicates.
fn check_tree(req: &SyncVolumeRequest) -> Result<HashMap<PathBuf, EntryKind>, VolumeError> {
    let mut wanted = HashMap::with_capacity(req.entries.len());
    for e in &req.entries {
        let path = check_path(&e.path)?;
        if path
            .as_os_str()
            .as_bytes()
            .starts_with(TMP_PREFIX.as_bytes())
            || path
                .file_name()
                .is_some_and(|n| n.as_bytes().starts_with(TMP_PREFIX.as_bytes()))
        {
            return Err(invalid(
                "entries.path",
                format!(
                    "{:?}: names starting with {TMP_PREFIX} are reserved",
                    e.path
                ),
            ));
        }
        let kind = match &e.kind {
            Some(Kind::Directory(_)) => EntryKind::Dir,
            Some(Kind::File(_)) => EntryKind::File,
            Some(Kind::Symlink(t)) => {
                if t.is_empty() || t.contains('\0') {
                    return Err(invalid(
                        "entries.symlink",
                        format!("{:?} has an empty or invalid target", e.path),
                    ));
                }
                EntryKind::Symlink
            }
            None => {
                return Err(invalid(
                    "entries.kind",
                    format!("{:?} is neither a file, a symlink nor a directory", e.path),
                ))
            }
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if wanted.get(parent) != Some(&EntryKind::Dir) {
                return Err(invalid(
                    "entries",
                    format!(
                        "{:?} comes before its parent directory (or its parent is not a directory)",
                        e.path
                    ),
                ));
            }
        }
        if wanted.insert(path.to_owned(), kind).is_some() {
            return Err(invalid("entries", format!("{:?} appears twice", e.path)));
        }
    }
    Ok(wanted)
}

/// Writes a file by a temporary name and renames it over `leaf`, unless
/// it already has this content and these attributes.
fn write_file(
    dir: &OwnedFd,
    leaf: &OsStr,
    data: &[u8],
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<(), Errno> {
    let dfd = dir.as_raw_fd();
    if let Some(st) = stat_at(dfd, leaf)? {
        if st.kind == Some(EntryKind::File)
            && st.mode == mode
            && st.uid == uid
            && st.gid == gid
            && st.size == data.len() as i64
            && read_at(dfd, leaf).is_ok_and(|old| old == data)
        {
            return Ok(());
        }
    }
    let tmp = tmp_name(leaf);
    remove_at(dfd, &tmp)?;
    let mut f = std::fs::File::from(openat_owned(
        Some(dfd),
        tmp.as_os_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?);
    let done = (|| {
        f.write_all(data)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        nix::unistd::fchown(
            f.as_raw_fd(),
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
        )?;
        nix::sys::stat::fchmod(f.as_raw_fd(), Mode::from_bits_truncate(mode))?;
        if stat_at(dfd, leaf)?.is_some_and(|s| s.kind == Some(EntryKind::Dir)) {
            remove_at(dfd, leaf)?;
        }
        renameat(Some(dfd), tmp.as_os_str(), Some(dfd), leaf)
    })();
    if done.is_err() {
        let _ = unlinkat(Some(dfd), tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
    }
    done
}

fn read_at(dir: RawFd, leaf: &OsStr) -> Result<Vec<u8>, Errno> {
    let mut f = std::fs::File::from(openat_owned(
        Some(dir),
        leaf,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?);
    let mut out = Vec::new();
    f.read_to_end(&mut out)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    Ok(out)
}

fn tmp_name(leaf: &OsStr) -> std::ffi::OsString {
    let mut s = std::ffi::OsString::from(TMP_PREFIX);
    s.push(leaf);
    s
}

/// Makes `leaf` a symlink to `target`, atomically (rename over).
fn replace_symlink(
    dir: &OwnedFd,
    leaf: &OsStr,
    target: &str,
    uid: u32,
    gid: u32,
) -> Result<(), Errno> {
    let dfd = dir.as_raw_fd();
    if let Some(st) = stat_at(dfd, leaf)? {
        if st.kind == Some(EntryKind::Symlink)
            && nix::fcntl::readlinkat(Some(dfd), leaf)?.as_bytes() == target.as_bytes()
        {
            return Ok(());
        }
        if st.kind == Some(EntryKind::Dir) {
            // rename(2) cannot put a symlink over a directory.
            remove_at(dfd, leaf)?;
        }
    }
    let tmp = tmp_name(leaf);
    remove_at(dfd, &tmp)?;
    symlinkat(target, Some(dfd), tmp.as_os_str())?;
    let done = fchownat(
        Some(dfd),
        tmp.as_os_str(),
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .and_then(|()| renameat(Some(dfd), tmp.as_os_str(), Some(dfd), leaf));
    if done.is_err() {
        let _ = unlinkat(Some(dfd), tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
    }
    done
}

/// Removes every entry under `dir` (at `prefix` in the tree) that the
/// tree does not have; descends into the directories it keeps.
fn prune(dir: &OwnedFd, prefix: &Path, wanted: &HashMap<PathBuf, EntryKind>) -> Result<(), Errno> {
    for name in list_at(dir)? {
        let rel = prefix.join(&name);
        match wanted.get(&rel) {
            Some(EntryKind::Dir) => {
                let is_dir = stat_at(dir.as_raw_fd(), &name)?
                    .is_some_and(|s| s.kind == Some(EntryKind::Dir));
                if is_dir {
                    let sub = open_dir_at(dir.as_raw_fd(), &name)?;
                    prune(&sub, &rel, wanted)?;
                }
            }
            Some(_) => {}
            None => remove_at(dir.as_raw_fd(), &name)?,
        }
    }
    Ok(())
}

/// Volume names: 1-64 characters of [a-z0-9-].
pub fn validate_name(name: &str) -> Result<(), VolumeError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-')
    {
        return Err(VolumeError::Invalid {
            field: "volume name",
            reason: format!("{name:?} must be 1-64 characters of [a-z0-9-]"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;

//! Named, bind-mounted network namespaces (what `ip netns add` makes).
//!
//! A namespace is created on a dedicated, short-lived `std::thread`: that
//! thread calls `unshare(CLONE_NEWNET)`, bind-mounts its own
//! `/proc/thread-self/ns/net` onto an empty file `<dir>/<name>`, brings `lo`
//! up with `SIOCSIFFLAGS`, and exits. The calling thread (and so a tokio
//! worker) never changes namespace. Like `ip netns`, `<dir>` is made a shared
//! mount point first (bind-mounted onto itself if it is not a mount point), so
//! that mount namespaces created later (containers, other daemons) receive the
//! unmount too and a removed namespace is really freed.
//!
//! All functions here block for a few syscalls and a thread join; async
//! callers should wrap them in `tokio::task::spawn_blocking`.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::error::NetworkError;

/// The directory `ip netns` uses; the default for [`NetnsManager`].
pub const DEFAULT_NETNS_DIR: &str = "/var/run/netns";

/// Creates and removes named network namespaces under one directory.
#[derive(Debug)]
pub struct NetnsManager {
    dir: PathBuf,
    /// Serialises the "make `dir` a shared mount point" step; true once this
    /// manager bind-mounted `dir` onto itself.
    prepare: Mutex<bool>,
    /// Test hook: fail after the bind mount, as if bringing `lo` up failed.
    #[cfg(test)]
    fail_after_mount: std::sync::atomic::AtomicBool,
}

impl Default for NetnsManager {
    fn default() -> Self {
        NetnsManager::new(PathBuf::from(DEFAULT_NETNS_DIR))
    }
}

impl NetnsManager {
    /// A manager for namespaces bind-mounted under `dir` (usually
    /// [`DEFAULT_NETNS_DIR`]). `dir` is created on first use; it must be on a
    /// filesystem where bind mounts work.
    pub fn new(dir: PathBuf) -> Self {
        NetnsManager {
            dir,
            prepare: Mutex::new(false),
            #[cfg(test)]
            fail_after_mount: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The directory holding the namespace files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path namespace `name` has (or would have).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Whether `name` is a mounted network namespace (not merely a file).
    pub fn exists(&self, name: &str) -> bool {
        validate_name(name).is_ok() && is_nsfs(&self.path(name))
    }

    /// Creates network namespace `name` with `lo` up and returns its path.
    ///
    /// On failure nothing is left behind: no file, no mount. A stale empty
    /// file (from a crash between creating the file and mounting onto it) is
    /// replaced; a mounted namespace of the same name is an error
    /// ([`NetworkError::NetnsExists`]) and is not touched.
    pub fn create(&self, name: &str) -> Result<PathBuf, NetworkError> {
        validate_name(name)?;
        let path = self.path(name);
        self.prepare_dir()?;
        create_mount_target(&path)?;
        match self.populate(&path) {
            Ok(()) => {
                tracing::debug!(netns = %path.display(), "created network namespace");
                Ok(path)
            }
            Err(err) => {
                if let Err(undo) = unmount_and_unlink(&path) {
                    tracing::warn!(netns = %path.display(), error = %undo,
                        "cleanup after failed netns create");
                }
                Err(err)
            }
        }
    }

    /// Removes network namespace `name`: lazy unmount, then unlink.
    /// A missing namespace is not an error.
    pub fn remove(&self, name: &str) -> Result<(), NetworkError> {
        validate_name(name)?;
        unmount_and_unlink(&self.path(name))
    }

    /// Makes `dir` exist and be a shared mount point, as `ip netns` does.
    fn prepare_dir(&self) -> Result<(), NetworkError> {
        let mut made_bind = self.prepare.lock().unwrap_or_else(|p| p.into_inner());
        fs::create_dir_all(&self.dir)
            .map_err(|e| NetworkError::io("create directory", &self.dir, e))?;
        let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
        match mount(None::<&str>, &self.dir, None::<&str>, shared, None::<&str>) {
            Ok(()) => return Ok(()),
            // EINVAL: not a mount point yet.
            Err(nix::errno::Errno::EINVAL) => {}
            Err(e) => return Err(NetworkError::io("make shared mount", &self.dir, e.into())),
        }
        mount(
            Some(&self.dir),
            &self.dir,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| NetworkError::io("bind-mount onto itself", &self.dir, e.into()))?;
        *made_bind = true;
        mount(None::<&str>, &self.dir, None::<&str>, shared, None::<&str>)
            .map_err(|e| NetworkError::io("make shared mount", &self.dir, e.into()))
    }

    /// Undoes the bind mount [`NetnsManager::create`] may have put on the
    /// directory itself (as `ip netns` does, it is left in place so later
    /// namespaces share it). Only a mount this manager made is touched, and
    /// any namespace still mounted below goes with it (lazy unmount).
    ///
    /// For tests and private directories, so a temp dir can be deleted;
    /// not needed for [`DEFAULT_NETNS_DIR`].
    pub fn unmount_dir(&self) -> Result<(), NetworkError> {
        let mut made_bind = self.prepare.lock().unwrap_or_else(|p| p.into_inner());
        if *made_bind {
            match umount2(&self.dir, MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => return Err(NetworkError::io("unmount", &self.dir, e.into())),
            }
            *made_bind = false;
        }
        Ok(())
    }

    /// On a fresh thread: new netns, bind-mount it onto `path`, `lo` up.
    fn populate(&self, path: &Path) -> Result<(), NetworkError> {
        #[cfg(test)]
        let fail = self
            .fail_after_mount
            .load(std::sync::atomic::Ordering::SeqCst);
        #[cfg(not(test))]
        let fail = false;
        let target = path.to_path_buf();
        let worker = std::thread::Builder::new()
            .name("hearth-netns".into())
            .spawn(move || -> Result<(), NetworkError> {
                // This thread leaves the process's network namespace for
                // good; it exits when this closure returns.
                unshare(CloneFlags::CLONE_NEWNET)
                    .map_err(|e| NetworkError::netns("unshare", &target, e.into()))?;
                mount(
                    Some("/proc/thread-self/ns/net"),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| NetworkError::io("bind-mount netns onto", &target, e.into()))?;
                if fail {
                    return Err(NetworkError::netns(
                        "bring lo up",
                        &target,
                        io::Error::other("injected failure"),
                    ));
                }
                set_link_up("lo").map_err(|e| NetworkError::netns("bring lo up", &target, e))
            })
            .map_err(|e| NetworkError::netns("spawn worker thread", path, e))?;
        worker.join().map_err(|_| NetworkError::WorkerDied {
            path: path.to_path_buf(),
        })?
    }

    #[cfg(test)]
    pub(crate) fn inject_failure_after_mount(&self, on: bool) {
        self.fail_after_mount
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Runs `f` on a fresh thread that has joined the network namespace at
/// `netns_path`, and returns its result. The calling thread's namespace is
/// never changed; the helper thread exits afterwards.
pub fn run_in_netns<T, F>(netns_path: &Path, f: F) -> Result<T, NetworkError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let ns: OwnedFd = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(netns_path)
        .map_err(|e| NetworkError::io("open netns", netns_path, e))?
        .into();
    if !is_nsfs(netns_path) {
        return Err(NetworkError::netns(
            "open",
            netns_path,
            io::Error::other("not a namespace file (nsfs)"),
        ));
    }
    let path = netns_path.to_path_buf();
    let worker = std::thread::Builder::new()
        .name("hearth-netns".into())
        .spawn(move || -> Result<T, NetworkError> {
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(|e| NetworkError::netns("setns", &path, e.into()))?;
            drop(ns);
            Ok(f())
        })
        .map_err(|e| NetworkError::netns("spawn worker thread", netns_path, e))?;
    worker.join().map_err(|_| NetworkError::WorkerDied {
        path: netns_path.to_path_buf(),
    })?
}

/// Sets `IFF_UP` on interface `ifname` in the calling thread's network
/// namespace (ioctl on a throwaway socket).
pub(crate) fn set_link_up(ifname: &str) -> io::Result<()> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let mut req = ifreq(ifname)?;
    // SAFETY: `sock` is an open socket and `req` a properly initialised
    // `ifreq` that outlives the call; SIOCGIFFLAGS only writes `ifru_flags`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS just filled the `ifru_flags` member.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; SIOCSIFFLAGS reads `ifr_name` and `ifru_flags`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A zeroed `ifreq` carrying `ifname`.
pub(crate) fn ifreq(ifname: &str) -> io::Result<libc::ifreq> {
    let bytes = ifname.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {ifname:?}"),
        ));
    }
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

fn validate_name(name: &str) -> Result<(), NetworkError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > 255 {
        "longer than 255 bytes"
    } else if name == "." || name == ".." {
        "not a file name"
    } else if name.contains('/') || name.contains('\0') {
        "contains '/' or NUL"
    } else {
        return Ok(());
    };
    Err(NetworkError::InvalidName {
        name: name.to_string(),
        reason,
    })
}

/// Creates the empty file the namespace is mounted onto.
fn create_mount_target(path: &Path) -> Result<(), NetworkError> {
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
    };
    match open() {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if is_nsfs(path) {
                return Err(NetworkError::NetnsExists {
                    path: path.to_path_buf(),
                });
            }
            // A leftover from an interrupted create: not a namespace.
            tracing::info!(netns = %path.display(), "replacing stale netns file");
            fs::remove_file(path).map_err(|e| NetworkError::io("remove stale", path, e))?;
            open()
                .map(drop)
                .map_err(|e| NetworkError::io("create", path, e))
        }
        Err(e) => Err(NetworkError::io("create", path, e)),
    }
}

/// Lazily unmounts `path` (if mounted) and unlinks it (if present).
fn unmount_and_unlink(path: &Path) -> Result<(), NetworkError> {
    // Loop: a namespace may have been mounted more than once onto the file.
    for _ in 0..16 {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => break,
            Err(e) => return Err(NetworkError::io("unmount", path, e.into())),
        }
    }
    match fs::remove_file(path) {
        Ok(()) => {
            tracing::debug!(netns = %path.display(), "removed network namespace");
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetworkError::io("remove", path, e)),
    }
}

/// Whether `path` is a file on nsfs (a bind-mounted namespace).
pub(crate) fn is_nsfs(path: &Path) -> bool {
    match nix::sys::statfs::statfs(path) {
        Ok(st) => st.filesystem_type() == nix::sys::statfs::NSFS_MAGIC,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for bad in ["", ".", "..", "a/b", "a\0b", &"x".repeat(256)] {
            assert!(
                matches!(validate_name(bad), Err(NetworkError::InvalidName { .. })),
                "{bad:?}"
            );
        }
        validate_name("hearth-0123abcd").unwrap();
    }

    #[test]
    fn invalid_name_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mgr = NetnsManager::new(dir.path().join("netns"));
        assert!(mgr.create("a/b").is_err());
        assert!(mgr.remove("..").is_err());
        assert!(!dir.path().join("netns").exists());
    }

    #[test]
    fn ifreq_rejects_long_names() {
        assert!(ifreq("0123456789abcdef").is_err());
        assert!(ifreq("").is_err());
        assert!(ifreq("eth0").is_ok());
    }

    #[test]
    fn failure_after_mount_leaves_nothing() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipping failure_after_mount_leaves_nothing: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let nsdir = dir.path().join("netns");
        let mgr = NetnsManager::new(nsdir.clone());
        let before = mounts_under(&nsdir);
        mgr.inject_failure_after_mount(true);
        let err = mgr.create("failing").unwrap_err();
        assert!(err.to_string().contains("failing"), "{err}");
        assert!(!mgr.path("failing").exists());
        assert!(!mgr.exists("failing"));
        // Only the directory's own (shared) bind mount may remain.
        let after: Vec<_> = mounts_under(&nsdir)
            .into_iter()
            .filter(|m| m != &nsdir)
            .collect();
        assert!(
            after.is_empty(),
            "leftover mounts {after:?} (before {before:?})"
        );
        mgr.unmount_dir().unwrap();
        assert!(mounts_under(&nsdir).is_empty(), "directory bind mount left");
        mgr.unmount_dir().unwrap();
    }

    fn mounts_under(dir: &Path) -> Vec<PathBuf> {
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
            .filter(|p| p.starts_with(dir))
            .collect()
    }
}

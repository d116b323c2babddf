//! Block devices the host attaches: `MountDrive` / `UnmountDrive`.
//!
//! The host names a device by something the guest can see
//! ([`Locator`]): its device number (the agent makes its own node under
//! `/dev/hearth/<major>:<minor>`, as a private root has no host `/dev`), its
//! virtio-blk serial (`/sys/block/*/serial`), or a path. [`Drives`] keeps what
//! it mounted so that `UnmountDrive` and shutdown can undo it.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use hearth_agent_proto::v1::{device_locator::By, DeviceLocator, MountDriveRequest};
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use thiserror::Error;

const MAX_MAJOR: u32 = (1 << 12) - 1;
const MAX_MINOR: u32 = (1 << 20) - 1;
const MAX_OPTIONS: usize = 4096;

/// Errors of the drive RPCs. Each names the device and/or mountpoint.
#[derive(Debug, Error)]
pub enum DriveError {
    /// The request is malformed.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The request field.
        field: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// No device matches the locator.
    #[error("no block device {device}")]
    NoDevice {
        /// The locator.
        device: String,
    },
    /// Creating the device node failed.
    #[error("cannot create device node {}", path.display())]
    Node {
        /// The node.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Creating the mountpoint failed.
    #[error("cannot create mountpoint {}", mountpoint.display())]
    Mountpoint {
        /// The mountpoint.
        mountpoint: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Something is already mounted there by this agent.
    #[error("{} is already mounted (from {})", mountpoint.display(), device.display())]
    AlreadyMounted {
        /// The mountpoint.
        mountpoint: PathBuf,
        /// What is mounted there.
        device: PathBuf,
    },
    /// mount(2) failed.
    #[error("cannot mount {} on {} as {fstype}", device.display(), mountpoint.display())]
    Mount {
        /// The device node.
        device: PathBuf,
        /// The mountpoint.
        mountpoint: PathBuf,
        /// The filesystem type.
        fstype: String,
        /// Why.
        #[source]
        source: Errno,
    },
    /// Nothing this agent mounted is there.
    #[error("nothing mounted on {}", mountpoint.display())]
    NotMounted {
        /// The mountpoint.
        mountpoint: PathBuf,
    },
    /// umount(2) failed.
    #[error("cannot unmount {} (from {})", mountpoint.display(), device.display())]
    Unmount {
        /// The mountpoint.
        mountpoint: PathBuf,
        /// The device mounted there.
        device: PathBuf,
        /// Why.
        #[source]
        source: Errno,
    },
}

/// How the host named the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Locator {
    /// By device number.
    Number {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// By virtio-blk serial.
    Serial(String),
    /// By path in the guest.
    Path(PathBuf),
}

impl Locator {
    /// Checks the protocol's locator.
    pub fn from_proto(locator: Option<&DeviceLocator>) -> Result<Locator, DriveError> {
        let invalid = |reason: &str| DriveError::Invalid {
            field: "device",
            reason: reason.to_owned(),
        };
        match locator.and_then(|l| l.by.as_ref()) {
            None => Err(invalid("missing: set number, serial or path")),
            Some(By::Number(n)) => {
                if n.major == 0 || n.major > MAX_MAJOR || n.minor > MAX_MINOR {
                    return Err(invalid(&format!(
                        "device number {}:{} out of range (major 1..=4095, minor 0..=1048575)",
                        n.major, n.minor
                    )));
                }
                Ok(Locator::Number {
                    major: n.major,
                    minor: n.minor,
                })
            }
            Some(By::Serial(s)) => {
                if s.is_empty()
                    || s.len() > 64
                    || !s.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
                {
                    return Err(invalid(
                        "serial must be 1 to 64 printable characters without '/' or spaces",
                    ));
                }
                Ok(Locator::Serial(s.clone()))
            }
            Some(By::Path(p)) => Ok(Locator::Path(clean_absolute(p).map_err(|r| {
                DriveError::Invalid {
                    field: "device.path",
                    reason: r.to_owned(),
                }
            })?)),
        }
    }
}

impl std::fmt::Display for Locator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Locator::Number { major, minor } => write!(f, "{major}:{minor}"),
            Locator::Serial(s) => write!(f, "with serial {s:?}"),
            Locator::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Checks that `path` is absolute and has no `..`, `.` or empty components.
pub fn clean_absolute(path: &str) -> Result<PathBuf, &'static str> {
    if path.len() > 4096 || path.contains('\0') {
        return Err("longer than 4096 bytes or holds a NUL");
    }
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err("must be an absolute path");
    }
    if p.components()
        .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
    {
        return Err("must not contain '.' or '..' components");
    }
    if path.contains("/./") || path.ends_with("/.") {
        return Err("must not contain '.' or '..' components");
    }
    Ok(p.components().collect())
}

/// Name of the node the agent makes for a device number.
pub fn node_name(major: u32, minor: u32) -> String {
    format!("{major}:{minor}")
}

/// Finds the block device whose `serial` attribute is `serial` (trailing
/// whitespace ignored) under `sys_block` (usually `/sys/block`). Returns its
/// name, e.g. `vdb`.
pub fn find_by_serial(sys_block: &Path, serial: &str) -> io::Result<Option<String>> {
    let mut names: Vec<String> = fs::read_dir(sys_block)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    for name in names {
        let attr = sys_block.join(&name).join("serial");
        // Devices without a serial (loop, ram) simply have no attribute.
        let Ok(contents) = fs::read(&attr) else {
            continue;
        };
        if contents.len() <= 256 && String::from_utf8_lossy(&contents).trim_end() == serial {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// The filesystem layout the drive code works in.
#[derive(Debug, Clone)]
pub struct DevPaths {
    /// Usually `/dev`.
    pub dev: PathBuf,
    /// Usually `/sys/block`.
    pub sys_block: PathBuf,
}

impl Default for DevPaths {
    fn default() -> DevPaths {
        DevPaths {
            dev: PathBuf::from("/dev"),
            sys_block: PathBuf::from("/sys/block"),
        }
    }
}

impl DevPaths {
    /// Where the agent makes its own device nodes.
    pub fn own_nodes(&self) -> PathBuf {
        self.dev.join("hearth")
    }

    /// Turns a locator into a device node path, making the node if the
    /// locator is a number. Returns the path and whether it is one of ours.
    pub fn resolve(&self, locator: &Locator) -> Result<(PathBuf, bool), DriveError> {
        match locator {
            Locator::Number { major, minor } => {
                let dir = self.own_nodes();
                let path = dir.join(node_name(*major, *minor));
                make_block_node(&dir, &path, *major, *minor).map_err(|source| {
                    DriveError::Node {
                        path: path.clone(),
                        source,
                    }
                })?;
                Ok((path, true))
            }
            Locator::Serial(serial) => {
                let no_device = || DriveError::NoDevice {
                    device: locator.to_string(),
                };
                let name = find_by_serial(&self.sys_block, serial)
                    .map_err(|_| no_device())?
                    .ok_or_else(no_device)?;
                let path = self.dev.join(name);
                check_block_device(&path, locator)?;
                Ok((path, false))
            }
            Locator::Path(path) => {
                check_block_device(path, locator)?;
                Ok((path.clone(), false))
            }
        }
    }
}

fn check_block_device(path: &Path, locator: &Locator) -> Result<(), DriveError> {
    match fs::metadata(path) {
        Ok(m) if m.file_type().is_block_device() => Ok(()),
        Ok(_) => Err(DriveError::Invalid {
            field: "device",
            reason: format!("{} is not a block device", path.display()),
        }),
        Err(_) => Err(DriveError::NoDevice {
            device: locator.to_string(),
        }),
    }
}

fn make_block_node(dir: &Path, path: &Path, major: u32, minor: u32) -> io::Result<()> {
    let rdev = makedev(u64::from(major), u64::from(minor));
    fs::create_dir_all(dir)?;
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_block_device() && m.rdev() == rdev => return Ok(()),
        Ok(_) => fs::remove_file(path)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    mknod(path, SFlag::S_IFBLK, Mode::from_bits_truncate(0o600), rdev)?;
    Ok(())
}

#[derive(Debug)]
struct Mounted {
    device: PathBuf,
    own_node: bool,
}

/// What this agent mounted, by mountpoint.
#[derive(Debug, Default)]
pub struct Drives {
    paths: DevPaths,
    mounted: Mutex<BTreeMap<PathBuf, Mounted>>,
}

impl Drives {
    /// An empty table working in `paths`.
    pub fn new(paths: DevPaths) -> Drives {
        Drives {
            paths,
            mounted: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<PathBuf, Mounted>> {
        self.mounted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `MountDrive`. Blocking (mount can take a while: journal replay).
    /// Returns the device node mounted.
    pub fn mount(&self, req: &MountDriveRequest) -> Result<PathBuf, DriveError> {
        let locator = Locator::from_proto(req.device.as_ref())?;
        let mountpoint = clean_absolute(&req.mountpoint).map_err(|r| DriveError::Invalid {
            field: "mountpoint",
            reason: r.to_owned(),
        })?;
        if mountpoint == Path::new("/") {
            return Err(DriveError::Invalid {
                field: "mountpoint",
                reason: "must not be /".to_owned(),
            });
        }
        validate_fstype(&req.fstype)?;
        if req.options.len() > MAX_OPTIONS || req.options.contains('\0') {
            return Err(DriveError::Invalid {
                field: "options",
                reason: "longer than 4096 bytes or holds a NUL".to_owned(),
            });
        }
        // One mount at a time: keeps the table and the nodes consistent.
        let mut mounted = self.lock();
        if let Some(m) = mounted.get(&mountpoint) {
            return Err(DriveError::AlreadyMounted {
                mountpoint,
                device: m.device.clone(),
            });
        }
        let (device, own_node) = self.paths.resolve(&locator)?;
        let node_in_use = mounted.values().any(|m| m.device == device);
        let forget_node = |device: &Path| {
            if own_node && !node_in_use {
                let _ = fs::remove_file(device);
            }
        };
        if let Err(source) = fs::create_dir_all(&mountpoint) {
            forget_node(&device);
            return Err(DriveError::Mountpoint { mountpoint, source });
        }
        let mut flags = MsFlags::empty();
        if req.read_only {
            flags |= MsFlags::MS_RDONLY;
        }
        let data = (!req.options.is_empty()).then_some(req.options.as_str());
        if let Err(source) = mount(
            Some(device.as_path()),
            &mountpoint,
            Some(req.fstype.as_str()),
            flags,
            data,
        ) {
            forget_node(&device);
            return Err(DriveError::Mount {
                device,
                mountpoint,
                fstype: req.fstype.clone(),
                source,
            });
        }
        tracing::info!(device = %device.display(), mountpoint = %mountpoint.display(),
            fstype = %req.fstype, read_only = req.read_only, "drive mounted");
        mounted.insert(
            mountpoint,
            Mounted {
                device: device.clone(),
                own_node,
            },
        );
        Ok(device)
    }

    /// `UnmountDrive`. Blocking.
    pub fn unmount(&self, mountpoint: &str) -> Result<(), DriveError> {
        let mountpoint = clean_absolute(mountpoint).map_err(|r| DriveError::Invalid {
            field: "mountpoint",
            reason: r.to_owned(),
        })?;
        let mut mounted = self.lock();
        let Some(m) = mounted.remove(&mountpoint) else {
            return Err(DriveError::NotMounted { mountpoint });
        };
        if let Err(source) = umount2(&mountpoint, MntFlags::empty()) {
            let device = m.device.clone();
            mounted.insert(mountpoint.clone(), m);
            return Err(DriveError::Unmount {
                mountpoint,
                device,
                source,
            });
        }
        tracing::info!(device = %m.device.display(), mountpoint = %mountpoint.display(), "drive unmounted");
        if m.own_node && !mounted.values().any(|o| o.device == m.device) {
            let _ = fs::remove_file(&m.device);
        }
        Ok(())
    }

    /// Shutdown: unmounts everything (lazily if busy), newest first.
    pub fn unmount_all(&self) {
        let mut mounted = self.lock();
        while let Some((mountpoint, m)) = mounted.pop_last() {
            let res = umount2(&mountpoint, MntFlags::empty())
                .or_else(|_| umount2(&mountpoint, MntFlags::MNT_DETACH));
            match res {
                Ok(()) => tracing::info!(mountpoint = %mountpoint.display(), "drive unmounted"),
                Err(err) => {
                    tracing::warn!(mountpoint = %mountpoint.display(), error = %err, "cannot unmount")
                }
            }
            if m.own_node {
                let _ = fs::remove_file(&m.device);
            }
        }
    }

    /// Mountpoints currently mounted by this agent.
    pub fn mountpoints(&self) -> Vec<PathBuf> {
        self.lock().keys().cloned().collect()
    }
}

fn validate_fstype(fstype: &str) -> Result<(), DriveError> {
    if fstype.is_empty()
        || fstype.len() > 32
        || !fstype
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(DriveError::Invalid {
            field: "fstype",
            reason: format!("{fstype:?} is not a filesystem type name such as ext4 or erofs"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_agent_proto::v1::DeviceNumber;

    fn by(b: By) -> DeviceLocator {
        DeviceLocator { by: Some(b) }
    }

    #[test]
    fn locators_are_validated() {
        assert_eq!(
            Locator::from_proto(Some(&by(By::Number(DeviceNumber { major: 7, minor: 3 }))))
                .unwrap(),
            Locator::Number { major: 7, minor: 3 }
        );
        for bad in [
            None,
            Some(DeviceLocator { by: None }),
            Some(by(By::Number(DeviceNumber { major: 0, minor: 1 }))),
            Some(by(By::Number(DeviceNumber {
                major: 4096,
                minor: 1,
            }))),
            Some(by(By::Number(DeviceNumber {
                major: 8,
                minor: 1 << 20,
            }))),
            Some(by(By::Serial(String::new()))),
            Some(by(By::Serial("a/b".into()))),
            Some(by(By::Serial("a b".into()))),
            Some(by(By::Path("dev/vda".into()))),
            Some(by(By::Path("/dev/../etc/passwd".into()))),
        ] {
            assert!(
                matches!(
                    Locator::from_proto(bad.as_ref()),
                    Err(DriveError::Invalid { .. })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            Locator::from_proto(Some(&by(By::Path("/dev//vdb/".into())))).unwrap(),
            Locator::Path(PathBuf::from("/dev/vdb"))
        );
    }

    #[test]
    fn paths_must_be_clean_and_absolute() {
        assert_eq!(clean_absolute("/mnt/a").unwrap(), PathBuf::from("/mnt/a"));
        for bad in ["", "mnt", "/mnt/../etc", "/mnt/./a", "/mnt/.", "/a\0b"] {
            assert!(clean_absolute(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn node_names_are_major_colon_minor() {
        assert_eq!(node_name(7, 12), "7:12");
    }

    #[test]
    fn serial_scan_finds_the_right_device() {
        let dir = tempfile::tempdir().unwrap();
        for (name, serial) in [
            ("vda", Some("scratch\n")),
            ("vdb", Some("img-1234 \n")),
            ("loop0", None),
        ] {
            let d = dir.path().join(name);
            fs::create_dir_all(&d).unwrap();
            if let Some(s) = serial {
                fs::write(d.join("serial"), s).unwrap();
            }
        }
        assert_eq!(
            find_by_serial(dir.path(), "img-1234").unwrap().as_deref(),
            Some("vdb")
        );
        assert_eq!(
            find_by_serial(dir.path(), "scratch").unwrap().as_deref(),
            Some("vda")
        );
        assert_eq!(find_by_serial(dir.path(), "img").unwrap(), None);
    }

    #[test]
    fn resolve_reports_missing_devices_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let paths = DevPaths {
            dev: dir.path().join("dev"),
            sys_block: dir.path().join("sys/block"),
        };
        fs::create_dir_all(&paths.sys_block).unwrap();
        let err = paths.resolve(&Locator::Serial("nope".into())).unwrap_err();
        assert_eq!(err.to_string(), "no block device with serial \"nope\"");
        let err = paths
            .resolve(&Locator::Path(dir.path().join("dev/vdz")))
            .unwrap_err();
        assert!(matches!(err, DriveError::NoDevice { .. }));
        // A regular file is not a device.
        fs::write(dir.path().join("file"), "").unwrap();
        let err = paths
            .resolve(&Locator::Path(dir.path().join("file")))
            .unwrap_err();
        assert!(matches!(err, DriveError::Invalid { .. }), "{err}");
    }

    #[test]
    fn bad_mount_requests_are_refused_before_acting() {
        let drives = Drives::new(DevPaths::default());
        let ok_device = Some(by(By::Number(DeviceNumber { major: 7, minor: 0 })));
        for (req, field) in [
            (
                MountDriveRequest {
                    device: ok_device.clone(),
                    mountpoint: "rel".into(),
                    fstype: "ext4".into(),
                    ..Default::default()
                },
                "mountpoint",
            ),
            (
                MountDriveRequest {
                    device: ok_device.clone(),
                    mountpoint: "/".into(),
                    fstype: "ext4".into(),
                    ..Default::default()
                },
                "mountpoint",
            ),
            (
                MountDriveRequest {
                    device: ok_device.clone(),
                    mountpoint: "/mnt/x".into(),
                    fstype: "".into(),
                    ..Default::default()
                },
                "fstype",
            ),
            (
                MountDriveRequest {
                    device: ok_device,
                    mountpoint: "/mnt/x".into(),
                    fstype: "ext4,x".into(),
                    ..Default::default()
                },
                "fstype",
            ),
        ] {
            match drives.mount(&req) {
                Err(DriveError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{req:?}: {other:?}"),
            }
        }
        assert!(matches!(
            drives.unmount("/mnt/x"),
            Err(DriveError::NotMounted { .. })
        ));
    }
}

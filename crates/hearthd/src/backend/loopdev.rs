//! Loop devices through the kernel's ioctls (no `losetup` fork per drive):
//! attach a file with LOOP_CONFIGURE, detach with LOOP_CLR_FD after
//! checking the device is still backed by the same file (after a restart a
//! number may have been reused).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;
const LO_FLAGS_READ_ONLY: u32 = 1;

/// `struct loop_info64` (linux/loop.h).
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` (linux/loop.h, kernel ≥ 5.8).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

impl LoopInfo64 {
    fn zeroed() -> Self {
        LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: 0,
            lo_file_name: [0; 64],
            lo_crypt_name: [0; 64],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        }
    }
}

/// Errors of loop device handling.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// An operation on a path failed.
    #[error("{op} {path}")]
    Io {
        /// What was done.
        op: &'static str,
        /// The device or file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No free device could be had.
    #[error("no free loop device after {0} tries")]
    Exhausted(u32),
}

/// An attached loop device, as persisted in a backend handle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopDevice {
    /// `/dev/loopN`.
    pub path: PathBuf,
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// Backing file's device and inode, to recognise it later.
    pub backing_dev: u64,
    /// Backing file's inode.
    pub backing_ino: u64,
}

fn err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> LoopError + 'a {
    move |source| LoopError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Attaches `file` to a free loop device.
pub fn attach(file: &Path, read_only: bool) -> Result<LoopDevice, LoopError> {
    let backing = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(file)
        .map_err(err("opening", file))?;
    let meta = backing.metadata().map_err(err("stat", file))?;
    let ctl_path = Path::new("/dev/loop-control");
    let ctl = File::open(ctl_path).map_err(err("opening", ctl_path))?;
    const TRIES: u32 = 16;
    for _ in 0..TRIES {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(err("LOOP_CTL_GET_FREE", ctl_path)(
                std::io::Error::last_os_error(),
            ));
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(d) => d,
            // The node may appear a moment after the control device made it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(err("opening", &path)(e)),
        };
        let mut config = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            block_size: 0,
            info: LoopInfo64::zeroed(),
            reserved: [0; 8],
        };
        if read_only {
            config.info.lo_flags = LO_FLAGS_READ_ONLY;
        }
        // SAFETY: `config` is a valid loop_config that outlives the call.
        let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &config) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EBUSY) {
                continue; // another attach took it first
            }
            return Err(err("LOOP_CONFIGURE", &path)(e));
        }
        let rdev = dev.metadata().map_err(err("stat", &path))?.rdev();
        return Ok(LoopDevice {
            path,
            major: libc::major(rdev),
            minor: libc::minor(rdev),
            backing_dev: meta.dev(),
            backing_ino: meta.ino(),
        });
    }
    Err(LoopError::Exhausted(TRIES))
}

/// Detaches `dev` if it is still backed by the file it was attached to.
/// While the guest still has it mounted the kernel detaches it when the
/// last user lets go. A device that is gone or reused is left alone.
pub fn detach(dev: &LoopDevice) -> Result<(), LoopError> {
    let f = match OpenOptions::new().read(true).open(&dev.path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err("opening", &dev.path)(e)),
    };
    if !f
        .metadata()
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false)
    {
        return Ok(());
    }
    let mut info = LoopInfo64::zeroed();
    // SAFETY: `info` is a valid loop_info64 the kernel fills.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), LOOP_GET_STATUS64, &mut info) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENXIO) {
            return Ok(()); // not attached any more
        }
        return Err(err("LOOP_GET_STATUS64", &dev.path)(e));
    }
    if info.lo_device != dev.backing_dev || info.lo_inode != dev.backing_ino {
        tracing::warn!(device = %dev.path.display(), "loop device now backs another file; left alone");
        return Ok(());
    }
    // SAFETY: LOOP_CLR_FD takes no argument.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), LOOP_CLR_FD, 0) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENXIO) {
            return Err(err("LOOP_CLR_FD", &dev.path)(e));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn attach_and_detach_a_file() {
        if !root() || !Path::new("/dev/loop-control").exists() {
            eprintln!("skipped: needs root and /dev/loop-control");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let img = tmp.path().join("disk.img");
        std::fs::write(&img, vec![7u8; 1 << 20]).unwrap();
        let dev = attach(&img, true).unwrap();
        let sys = format!("/sys/block/loop{}/loop/backing_file", dev.minor);
        let backing = std::fs::read_to_string(&sys).unwrap();
        assert_eq!(backing.trim(), img.to_str().unwrap());
        let ro = std::fs::read_to_string(format!("/sys/block/loop{}/ro", dev.minor)).unwrap();
        assert_eq!(ro.trim(), "1");
        detach(&dev).unwrap();
        assert!(
            !Path::new(&sys).exists(),
            "loop{} still attached after detach",
            dev.minor
        );
        // Idempotent.
        detach(&dev).unwrap();
    }
}

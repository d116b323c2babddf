//! The per-pod scratch disk: a sparse ext4 image copied from a prepared
//! template (one mkfs per size, not one per pod). It holds the containers'
//! writable layers and emptyDirs inside the guest.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Errors of scratch disk handling.
#[derive(Debug, thiserror::Error)]
pub enum ScratchError {
    /// A file operation failed.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// mkfs.ext4 failed.
    #[error("mkfs.ext4 for {path} failed: {stderr}")]
    Mkfs {
        /// The template being made.
        path: PathBuf,
        /// What mkfs printed.
        stderr: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ScratchError + '_ {
    move |source| ScratchError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A prepared, empty ext4 image of one size.
#[derive(Debug, Clone)]
pub struct ScratchTemplate {
    path: PathBuf,
    size_bytes: u64,
}

impl ScratchTemplate {
    /// Makes the template in `dir` unless it exists already.
    pub fn ensure(dir: &Path, size_mib: u64) -> Result<ScratchTemplate, ScratchError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(format!("scratch-{size_mib}M.ext4"));
        let size_bytes = size_mib * 1024 * 1024;
        if !path.exists() {
            let tmp = dir.join(format!(".scratch-{size_mib}M.ext4.tmp"));
            let made = make_template(&tmp, size_bytes)
                .and_then(|()| fs::rename(&tmp, &path).map_err(io(&path)));
            if let Err(e) = made {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        }
        Ok(ScratchTemplate { path, size_bytes })
    }

    /// The template's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a copy of the template to `dest`, copying only the extents
    /// that hold data, so the copy is as sparse as the template.
    pub fn instantiate(&self, dest: &Path) -> Result<(), ScratchError> {
        let to = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dest)
            .map_err(io(dest))?;
        let result = sparse_copy(&self.path, &to, dest, self.size_bytes);
        if result.is_err() {
            let _ = fs::remove_file(dest);
        }
        result
    }
}

fn make_template(path: &Path, size_bytes: u64) -> Result<(), ScratchError> {
    let f = File::create(path).map_err(io(path))?;
    f.set_len(size_bytes).map_err(io(path))?;
    drop(f);
    // No journal: the disk dies with the pod. Lazy init keeps the template
    // (and so every copy) small.
    let out = Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-m",
            "0",
            "-O",
            "^has_journal",
            "-E",
            "lazy_itable_init=1,root_owner=0:0",
        ])
        .arg(path)
        .output()
        .map_err(io(Path::new("mkfs.ext4")))?;
    if !out.status.success() {
        return Err(ScratchError::Mkfs {
            path: path.to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

fn sparse_copy(src: &Path, to: &File, dest: &Path, size: u64) -> Result<(), ScratchError> {
    let from = File::open(src).map_err(io(src))?;
    to.set_len(size).map_err(io(dest))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos: i64 = 0;
    let end = size as i64;
    while pos < end {
        // SAFETY: lseek on an fd we own; no memory is passed.
        let data = unsafe { libc::lseek(from.as_raw_fd(), pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // no data after pos
            }
            return Err(io(src)(e));
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(from.as_raw_fd(), data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io(src)(std::io::Error::last_os_error()));
        }
        let mut off = data as u64;
        while off < hole as u64 {
            let n = ((hole as u64 - off) as usize).min(buf.len());
            from.read_exact_at(&mut buf[..n], off).map_err(io(src))?;
            to.write_all_at(&buf[..n], off).map_err(io(dest))?;
            off += n as u64;
        }
        pos = hole;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn have_mkfs() -> bool {
        Command::new("mkfs.ext4").arg("-V").output().is_ok()
    }

    #[test]
    fn copies_are_sparse_and_identical() {
        if !have_mkfs() {
            eprintln!("skipped: mkfs.ext4 not installed (Debian e2fsprogs)");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let t = ScratchTemplate::ensure(tmp.path(), 1024).unwrap();
        let again = ScratchTemplate::ensure(tmp.path(), 1024).unwrap();
        assert_eq!(t.path(), again.path());
        let dest = tmp.path().join("pod.img");
        t.instantiate(&dest).unwrap();
        let (a, b) = (fs::read(t.path()).unwrap(), fs::read(&dest).unwrap());
        assert_eq!(a.len(), 1 << 30);
        assert!(a == b, "copy differs from the template");
        let used = fs::metadata(&dest).unwrap().blocks() * 512;
        assert!(
            used < 64 << 20,
            "copy is not sparse: {used} bytes allocated"
        );
        // A second instantiate onto an existing file refuses to clobber it.
        assert!(t.instantiate(&dest).is_err());
        assert!(
            dest.exists(),
            "a refused copy must not delete the existing file"
        );
    }
}

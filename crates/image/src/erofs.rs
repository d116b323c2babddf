//! Building the erofs image of a flattened rootfs with `mkfs.erofs`.
//!
//! Debian bookworm ships erofs-utils 1.5: no `--tar`, only lz4/lz4hc, so the
//! layers are unpacked to a directory first. Blocking: call from
//! `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{ImageError, Result};

/// The mkfs.erofs binary: `$HEARTH_MKFS_EROFS` or `mkfs.erofs` on `PATH`.
pub fn mkfs_erofs_binary() -> PathBuf {
    std::env::var_os("HEARTH_MKFS_EROFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("mkfs.erofs"))
}

/// Builds `out` (a file that must not exist yet) from `dir`, then fsyncs it.
pub(crate) fn build(dir: &Path, out: &Path) -> Result<()> {
    let bin = mkfs_erofs_binary();
    let output = Command::new(&bin)
        .arg("-zlz4hc")
        .arg(out)
        .arg(dir)
        .output()
        .map_err(|e| ImageError::Erofs {
            status: format!("cannot run {}: {e}", bin.display()),
            stderr: String::new(),
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        // Keep the tail: that is where mkfs says what went wrong.
        let tail: String = stderr
            .chars()
            .rev()
            .take(4000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(ImageError::Erofs {
            status: output.status.to_string(),
            stderr: tail.trim().to_string(),
        });
    }
    let f = std::fs::File::open(out).map_err(|e| ImageError::io("opening", out, e))?;
    f.sync_all()
        .map_err(|e| ImageError::io("syncing", out, e))?;
    Ok(())
}

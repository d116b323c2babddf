//! Removal, garbage collection and usage of the store.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{ImageError, Result};
use crate::store::ImageStore;

/// Real usage of the image store's filesystem tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsUsage {
    /// Bytes allocated on disk (st_blocks × 512) under the root, hard links counted once.
    pub used_bytes: u64,
    /// Inodes under the root, hard links counted once.
    pub inodes_used: u64,
    /// The store's root directory (what ImageFsInfo reports as the mountpoint).
    pub mountpoint: PathBuf,
    /// When it was measured (Unix nanoseconds).
    pub timestamp_nanos: i64,
}

/// What a prune or a removal freed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Blobs removed.
    pub blobs_removed: usize,
    /// erofs images removed.
    pub erofs_removed: usize,
    /// Bytes freed (file sizes).
    pub bytes_freed: u64,
}

fn file_len(p: &Path) -> u64 {
    std::fs::symlink_metadata(p).map(|m| m.len()).unwrap_or(0)
}

impl ImageStore {
    /// Removes an image (all its tags) by id, id prefix, tag or digest, then
    /// frees blobs and erofs images no other image uses. An erofs image a
    /// running container has open stays valid through its open file.
    pub async fn remove(&self, reference_or_id: &str) -> Result<PruneReport> {
        let _excl = self.gc_lock.write().await;
        let img = self.get(reference_or_id)?;
        self.meta.delete(&img.id)?;
        self.images().remove(&img.id);
        tracing::info!(id = %img.id, "image removed");
        self.collect()
    }

    /// Frees blobs and erofs images that no image references (e.g. left by
    /// a failed pull).
    pub async fn prune(&self) -> Result<PruneReport> {
        let _excl = self.gc_lock.write().await;
        self.collect()
    }

    /// Sweeps unreferenced content. Caller holds the gc lock exclusively.
    fn collect(&self) -> Result<PruneReport> {
        let images: Vec<_> = self.images().values().cloned().collect();
        let mut keep_blobs: HashSet<String> = HashSet::new();
        let mut keep_erofs: HashSet<PathBuf> = HashSet::new();
        for img in &images {
            keep_blobs.insert(img.id.clone());
            keep_blobs.insert(img.manifest_digest.clone());
            for d in &img.repo_digests {
                if let Some((_, dg)) = d.rsplit_once('@') {
                    keep_blobs.insert(dg.to_string());
                }
            }
            for l in &img.layers {
                keep_blobs.insert(l.digest.clone());
            }
            keep_erofs.insert(img.erofs_path.clone());
        }
        let mut report = PruneReport::default();
        for d in self.content.list()? {
            if !keep_blobs.contains(&d) {
                let p = self.content.path(&d)?;
                report.bytes_freed += file_len(&p);
                self.content.remove(&d)?;
                report.blobs_removed += 1;
            }
        }
        let rd = std::fs::read_dir(&self.erofs_dir)
            .map_err(|e| ImageError::io("listing", &self.erofs_dir, e))?;
        for e in rd {
            let p = e
                .map_err(|e| ImageError::io("listing", &self.erofs_dir, e))?
                .path();
            if !keep_erofs.contains(&p) {
                report.bytes_freed += file_len(&p);
                std::fs::remove_file(&p).map_err(|e| ImageError::io("removing", &p, e))?;
                report.erofs_removed += 1;
            }
        }
        Ok(report)
    }

    /// Measures the store's real disk usage (blocks and inodes, walking the tree).
    pub async fn fs_info(&self) -> Result<FsUsage> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let mut seen = HashSet::new();
            let mut used = 0u64;
            let mut stack = vec![root.clone()];
            while let Some(p) = stack.pop() {
                let m = match std::fs::symlink_metadata(&p) {
                    Ok(m) => m,
                    // Something removed concurrently: not in use any more.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(ImageError::io("stat", &p, e)),
                };
                if seen.insert((m.dev(), m.ino())) {
                    used += m.blocks() * 512;
                }
                if m.is_dir() {
                    let rd = match std::fs::read_dir(&p) {
                        Ok(rd) => rd,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(ImageError::io("listing", &p, e)),
                    };
                    for e in rd.flatten() {
                        stack.push(e.path());
                    }
                }
            }
            let timestamp_nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
                .unwrap_or(0);
            Ok(FsUsage {
                used_bytes: used,
                inodes_used: seen.len() as u64,
                mountpoint: root,
                timestamp_nanos,
            })
        })
        .await
        .map_err(ImageError::Task)?
    }
}

//! Content-addressed blob store: `content/blobs/sha256/<hex>`.
//!
//! A blob reaches its final name only after its size and sha256 were checked
//! while streaming, the temp file was fsynced and renamed. Temp files live in
//! `content/tmp/` and are removed on [`ContentStore::open`], so a crash
//! mid-download leaves nothing that is later trusted. One download per
//! digest at a time: concurrent fetches of the same blob wait on a per-digest
//! lock and then find the blob present.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use futures::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::{ImageError, Result};
use crate::reference::is_sha256_digest;

/// Per-key async locks, dropped when nobody holds them.
#[derive(Default)]
pub(crate) struct KeyedLocks {
    map: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    pub(crate) async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|_, w| w.strong_count() > 0);
            match map.get(key).and_then(Weak::upgrade) {
                Some(m) => m,
                None => {
                    let m = Arc::new(tokio::sync::Mutex::new(()));
                    map.insert(key.to_string(), Arc::downgrade(&m));
                    m
                }
            }
        };
        m.lock_owned().await
    }
}

/// What the store expects of a blob.
#[derive(Debug, Clone)]
pub(crate) struct BlobSpec {
    pub digest: String,
    pub size: u64,
}

/// The blob store.
pub(crate) struct ContentStore {
    blobs: PathBuf,
    tmp: PathBuf,
    locks: KeyedLocks,
    downloads: AtomicU64,
}

pub(crate) fn hex_of(digest: &str) -> Result<&str> {
    if !is_sha256_digest(digest) {
        return Err(ImageError::UnsupportedDigest(digest.to_string()));
    }
    Ok(&digest[7..])
}

pub(crate) fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

impl ContentStore {
    /// Opens (creating) `dir`, removing leftovers of interrupted downloads.
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        let blobs = dir.join("blobs").join("sha256");
        let tmp = dir.join("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| ImageError::io("cleaning", &tmp, e))?;
        }
        for d in [&blobs, &tmp] {
            std::fs::create_dir_all(d).map_err(|e| ImageError::io("creating", d, e))?;
        }
        Ok(ContentStore {
            blobs,
            tmp,
            locks: KeyedLocks::default(),
            downloads: AtomicU64::new(0),
        })
    }

    /// Path of a blob (whether or not present).
    pub(crate) fn path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.blobs.join(hex_of(digest)?))
    }

    /// Number of blob downloads started since open (for tests and metrics).
    pub(crate) fn downloads(&self) -> u64 {
        self.downloads.load(Ordering::Relaxed)
    }

    /// All blob digests present.
    pub(crate) fn list(&self) -> Result<Vec<String>> {
        let rd = std::fs::read_dir(&self.blobs)
            .map_err(|e| ImageError::io("listing", &self.blobs, e))?;
        let mut out = Vec::new();
        for e in rd {
            let e = e.map_err(|e| ImageError::io("listing", &self.blobs, e))?;
            if let Some(n) = e.file_name().to_str() {
                out.push(format!("sha256:{n}"));
            }
        }
        Ok(out)
    }

    /// Removes a blob; absent is fine.
    pub(crate) fn remove(&self, digest: &str) -> Result<()> {
        let p = self.path(digest)?;
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(ImageError::io("removing blob", p, e))
            }
            _ => Ok(()),
        }
    }

    /// Stores bytes already in memory after checking their digest.
    pub(crate) fn put(&self, digest: &str, data: &[u8]) -> Result<PathBuf> {
        let actual = sha256_digest(data);
        if actual != digest {
            return Err(ImageError::DigestMismatch {
                expected: digest.to_string(),
                actual,
            });
        }
        let dest = self.path(digest)?;
        if dest.is_file() {
            return Ok(dest);
        }
        let mut tmp = tempfile::Builder::new()
            .prefix("put-")
            .tempfile_in(&self.tmp)
            .map_err(|e| ImageError::io("creating temp file in", &self.tmp, e))?;
        tmp.write_all(data)
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(|e| ImageError::io("writing", tmp.path(), e))?;
        tmp.persist(&dest)
            .map_err(|e| ImageError::io("renaming blob to", &dest, e.error))?;
        Ok(dest)
    }

    /// Fetches a blob unless present; verifies size and sha256 while streaming.
    ///
    /// `open` starts the download (called at most once, under the per-digest
    /// lock); `progress` gets the bytes done so far.
    pub(crate) async fn fetch<F, Fut>(
        &self,
        spec: &BlobSpec,
        open: F,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<(PathBuf, bool)>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<oci_client::client::SizedStream>>,
    {
        let dest = self.path(&spec.digest)?;
        let _guard = self.locks.lock(&spec.digest).await;
        if dest.is_file() {
            return Ok((dest, false));
        }
        self.downloads.fetch_add(1, Ordering::Relaxed);
        let tmp = tempfile::Builder::new()
            .prefix("dl-")
            .tempfile_in(&self.tmp)
            .map_err(|e| ImageError::io("creating temp file in", &self.tmp, e))?;
        let std_file = tmp
            .reopen()
            .map_err(|e| ImageError::io("opening", tmp.path(), e))?;
        let mut file = tokio::fs::File::from_std(std_file);
        let mut stream = open().await?;
        if let Some(len) = stream.content_length {
            if len > spec.size {
                return Err(ImageError::SizeMismatch {
                    digest: spec.digest.clone(),
                    expected: spec.size,
                    actual: len,
                });
            }
        }
        let mut hasher = Sha256::new();
        let mut done: u64 = 0;
        let mut stream_err = None;
        while let Some(chunk) = stream.stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    stream_err = Some(e);
                    break;
                }
            };
            done += chunk.len() as u64;
            if done > spec.size {
                return Err(ImageError::SizeMismatch {
                    digest: spec.digest.clone(),
                    expected: spec.size,
                    actual: done,
                });
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| ImageError::io("writing", tmp.path(), e))?;
            progress(done);
        }
        // Our own checks come first: the client's verifying stream reports a
        // bad digest only as an opaque I/O error at the end.
        if done != spec.size {
            return Err(ImageError::SizeMismatch {
                digest: spec.digest.clone(),
                expected: spec.size,
                actual: done,
            });
        }
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != spec.digest {
            return Err(ImageError::DigestMismatch {
                expected: spec.digest.clone(),
                actual,
            });
        }
        if let Some(e) = stream_err {
            return Err(ImageError::io("downloading blob", tmp.path(), e));
        }
        file.flush()
            .await
            .map_err(|e| ImageError::io("writing", tmp.path(), e))?;
        file.sync_all()
            .await
            .map_err(|e| ImageError::io("syncing", tmp.path(), e))?;
        drop(file);
        tmp.persist(&dest)
            .map_err(|e| ImageError::io("renaming blob to", &dest, e.error))?;
        Ok((dest, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_checks_digest_and_open_cleans_tmp() {
        let d = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(d.path()).unwrap();
        let data = b"hello";
        let dg = sha256_digest(data);
        cs.put(&dg, data).unwrap();
        assert!(cs.path(&dg).unwrap().is_file());
        let bad = sha256_digest(b"other");
        assert!(matches!(
            cs.put(&bad, data),
            Err(ImageError::DigestMismatch { .. })
        ));
        assert!(!cs.path(&bad).unwrap().exists());
        std::fs::write(d.path().join("tmp/dl-leftover"), b"x").unwrap();
        let cs = ContentStore::open(d.path()).unwrap();
        assert_eq!(std::fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
        assert_eq!(cs.list().unwrap(), vec![dg]);
    }
}

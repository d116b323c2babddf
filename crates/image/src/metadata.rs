//! Persisted image records: `images/<id-hex>.json`, written atomically
//! (temp file, fsync, rename, fsync of the directory).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{ImageError, Result};

/// The user an image runs as, from its config's `User`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageUser {
    /// A numeric uid (the kubelet's runAsNonRoot check reads it).
    Uid(u64),
    /// A user name, resolved in the container.
    Name(String),
}

impl ImageUser {
    /// Parses `user[:group]`; `None` for an empty string (root by default).
    pub fn parse(user: &str) -> Option<ImageUser> {
        let u = user.split(':').next().unwrap_or("");
        if u.is_empty() {
            return None;
        }
        Some(match u.parse::<u64>() {
            Ok(n) => ImageUser::Uid(n),
            Err(_) => ImageUser::Name(u.to_string()),
        })
    }
}

/// What `CreateContainer` needs from the image config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`, `KEY=value`.
    pub env: Vec<String>,
    /// `WorkingDir` (empty: `/`).
    pub working_dir: String,
    /// `User` as written (`user[:group]`, may be empty).
    pub user: String,
    /// `ExposedPorts` keys (`80/tcp`).
    pub exposed_ports: Vec<String>,
    /// `Labels`.
    pub labels: BTreeMap<String, String>,
    /// `StopSignal` (empty: SIGTERM).
    pub stop_signal: String,
}

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// Compressed blob digest.
    pub digest: String,
    /// Compressed size in bytes.
    pub size: u64,
    /// Media type as in the manifest.
    pub media_type: String,
    /// Digest of the uncompressed tar.
    pub diff_id: String,
}

/// A pulled image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Image id: digest of the config blob (`sha256:…`).
    pub id: String,
    /// `registry/repo:tag` names pointing at this image.
    pub repo_tags: Vec<String>,
    /// `registry/repo@sha256:…` (manifest or index digest) names.
    pub repo_digests: Vec<String>,
    /// Bytes this image holds on disk: manifest, config and layer blobs plus the erofs image.
    pub size: u64,
    /// The image's user, `None` when unset (root).
    pub user: Option<ImageUser>,
    /// Layers, bottom first.
    pub layers: Vec<LayerInfo>,
    /// Digest of the platform manifest.
    pub manifest_digest: String,
    /// Manifest media type (docker schema2 or OCI).
    pub manifest_media_type: String,
    /// The erofs image of the flattened rootfs.
    pub erofs_path: PathBuf,
    /// Its size in bytes.
    pub erofs_size: u64,
    /// The runtime part of the image config.
    pub config: RuntimeConfig,
    /// Unix time (seconds) of the pull that stored the image or last changed
    /// its names; a re-pull that changes nothing leaves the record as it is.
    pub pulled_at: u64,
}

/// Writes `data` to `path` atomically.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| ImageError::io("creating temp file in", dir, e))?;
    tmp.write_all(data)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| ImageError::io("writing", tmp.path(), e))?;
    tmp.persist(path)
        .map_err(|e| ImageError::io("renaming to", path, e.error))?;
    sync_dir(dir)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ImageError::io("syncing directory", dir, e))
}

/// The directory of image records.
pub(crate) struct MetaStore {
    dir: PathBuf,
}

impl MetaStore {
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| ImageError::io("creating", dir, e))?;
        Ok(MetaStore {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir
            .join(format!("{}.json", id.trim_start_matches("sha256:")))
    }

    /// Loads every record; unreadable ones are skipped with a warning (the
    /// blobs they referenced become garbage for `prune`).
    pub(crate) fn load_all(&self) -> Result<Vec<Image>> {
        let rd =
            std::fs::read_dir(&self.dir).map_err(|e| ImageError::io("listing", &self.dir, e))?;
        let mut out = Vec::new();
        for e in rd {
            let e = e.map_err(|e| ImageError::io("listing", &self.dir, e))?;
            let p = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(".tmp-") {
                let _ = std::fs::remove_file(&p);
                continue;
            }
            if !name.ends_with(".json") {
                continue;
            }
            match std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|d| serde_json::from_slice::<Image>(&d).map_err(|e| e.to_string()))
            {
                Ok(img) => out.push(img),
                Err(e) => {
                    tracing::warn!(path = %p.display(), error = %e, "skipping unreadable image record")
                }
            }
        }
        Ok(out)
    }

    pub(crate) fn save(&self, img: &Image) -> Result<()> {
        let data = serde_json::to_vec_pretty(img).map_err(|e| {
            ImageError::io("encoding", self.path(&img.id), std::io::Error::other(e))
        })?;
        write_atomic(&self.path(&img.id), &data)
    }

    pub(crate) fn delete(&self, id: &str) -> Result<()> {
        let p = self.path(id);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(ImageError::io("removing", p, e))
            }
            _ => sync_dir(&self.dir),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_parsing() {
        assert_eq!(ImageUser::parse(""), None);
        assert_eq!(ImageUser::parse("1000"), Some(ImageUser::Uid(1000)));
        assert_eq!(ImageUser::parse("1000:1000"), Some(ImageUser::Uid(1000)));
        assert_eq!(
            ImageUser::parse("nobody:nogroup"),
            Some(ImageUser::Name("nobody".into()))
        );
    }
}

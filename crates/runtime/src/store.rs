//! Persisted sandbox records: one JSON file per sandbox, written atomically
//! (temp file, fsync, rename, fsync of the directory).
//!
//! Why files and not an embedded database: each record is small, written by
//! the one task that holds the sandbox's lock, and read whole at start-up; a
//! file per sandbox gives per-sandbox atomicity with nothing shared, can be
//! read with `cat` when debugging a node, and costs no dependency.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::id::Id;
use crate::sandbox::SandboxRecord;

/// Errors of the record store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A record could not be encoded.
    #[error("encoding the record of {id}")]
    Encode {
        /// Sandbox id.
        id: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The directory of sandbox records (`<root>/sandboxes`).
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating) the store under `root`.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let dir = root.join("sandboxes");
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(Store { dir })
    }

    /// The directory that holds one sandbox's persistent files.
    pub fn sandbox_dir(&self, id: &Id) -> PathBuf {
        self.dir.join(id.as_str())
    }

    /// Writes a record atomically.
    pub fn save(&self, record: &SandboxRecord) -> Result<(), StoreError> {
        let dir = self.sandbox_dir(&record.id);
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let data = serde_json::to_vec_pretty(record).map_err(|source| StoreError::Encode {
            id: record.id.to_string(),
            source,
        })?;
        write_atomic(&dir.join("sandbox.json"), &data)
    }

    /// Reads every record. A record that cannot be read is skipped with a
    /// warning and left in place for an operator to look at.
    pub fn load_all(&self) -> Result<Vec<SandboxRecord>, StoreError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            let path = entry.path().join("sandbox.json");
            let data = match fs::read(&path) {
                Ok(d) => d,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(path = %entry.path().display(), "sandbox directory without a record");
                    continue;
                }
                Err(e) => return Err(io(&path)(e)),
            };
            match serde_json::from_slice::<SandboxRecord>(&data) {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unreadable sandbox record skipped")
                }
            }
        }
        Ok(out)
    }

    /// Deletes a sandbox's record and its directory. Missing is fine.
    pub fn delete(&self, id: &Id) -> Result<(), StoreError> {
        let dir = self.sandbox_dir(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&dir)(e)),
        }
    }
}

/// Writes `data` to `path` so that readers see the old or the new content,
/// never a mix: temp file in the same directory, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("record")
    ));
    let result = (|| {
        let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(data).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, path).map_err(io(path))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

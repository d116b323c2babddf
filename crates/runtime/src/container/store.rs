//! Persisted container records: `<root>/containers/<id>.json`, written
//! atomically like the sandbox records.

use std::fs;
use std::path::{Path, PathBuf};

use super::ContainerRecord;
use crate::id::Id;
use crate::store::{write_atomic, StoreError};

/// The directory of container records.
#[derive(Debug, Clone)]
pub struct ContainerStore {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

impl ContainerStore {
    /// Opens (creating) the store under `root`.
    pub fn open(root: &Path) -> Result<ContainerStore, StoreError> {
        let dir = root.join("containers");
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(ContainerStore { dir })
    }

    fn path(&self, id: &Id) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Writes a record atomically.
    pub fn save(&self, r: &ContainerRecord) -> Result<(), StoreError> {
        let data = serde_json::to_vec_pretty(r).map_err(|source| StoreError::Encode {
            id: r.id.to_string(),
            source,
        })?;
        write_atomic(&self.path(&r.id), &data)
    }

    /// Deletes a record (missing is fine).
    pub fn delete(&self, id: &Id) -> Result<(), StoreError> {
        let p = self.path(id);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&p)(e)),
            _ => Ok(()),
        }
    }

    /// Every readable record (unreadable ones are logged and left).
    pub fn load_all(&self) -> Result<Vec<ContainerRecord>, StoreError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let path = entry.map_err(io(&self.dir))?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|d| serde_json::from_slice(&d).map_err(|e| e.to_string()))
            {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unreadable container record left in place")
                }
            }
        }
        Ok(out)
    }
}

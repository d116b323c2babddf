//! A fake pod network: "namespaces" are plain files in a directory.

use std::path::PathBuf;

use hearth_runtime::network::{NetworkError, PodNetworks};
use hearth_runtime::Id;

/// The fake.
pub struct FakeNetworks {
    dir: PathBuf,
}

impl FakeNetworks {
    /// Files go in `dir`.
    pub fn new(dir: PathBuf) -> FakeNetworks {
        FakeNetworks { dir }
    }

    /// How many namespaces exist.
    pub fn count(&self) -> usize {
        std::fs::read_dir(&self.dir).map(|d| d.count()).unwrap_or(0)
    }
}

#[async_trait::async_trait]
impl PodNetworks for FakeNetworks {
    fn ready(&self) -> Result<(), String> {
        Ok(())
    }

    async fn create_netns(&self, id: &Id) -> Result<PathBuf, NetworkError> {
        let p = self.dir.join(id.short());
        std::fs::write(&p, b"").map_err(|e| NetworkError {
            op: "creating the fake netns",
            source: Box::new(e),
        })?;
        Ok(p)
    }

    async fn remove_netns(&self, id: &Id) -> Result<(), NetworkError> {
        let _ = std::fs::remove_file(self.dir.join(id.short()));
        Ok(())
    }
}

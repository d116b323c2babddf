//! A fake pod network: "namespaces" are plain files in a directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use hearth_runtime::network::{NetworkError, PodNetworkState, PodNetworks};
use hearth_runtime::sandbox::SandboxConfig;
use hearth_runtime::Id;

/// The fake.
pub struct FakeNetworks {
    dir: PathBuf,
    attached: AtomicUsize,
}

impl FakeNetworks {
    /// Files go in `dir`.
    pub fn new(dir: PathBuf) -> FakeNetworks {
        FakeNetworks {
            dir,
            attached: AtomicUsize::new(0),
        }
    }

    /// How many pods are attached (setup without teardown).
    pub fn attached(&self) -> usize {
        self.attached.load(Ordering::SeqCst)
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

    async fn setup(
        &self,
        id: &Id,
        _: &SandboxConfig,
        _: &Path,
    ) -> Result<PodNetworkState, NetworkError> {
        self.attached.fetch_add(1, Ordering::SeqCst);
        Ok(PodNetworkState {
            ips: vec!["10.0.0.2".into()],
            record: Some(serde_json::json!({ "sandbox": id.as_str() })),
        })
    }

    async fn teardown(
        &self,
        _: &Id,
        _: &SandboxConfig,
        state: Option<&PodNetworkState>,
        _: Option<&Path>,
    ) -> Result<(), NetworkError> {
        if state.is_some_and(|s| s.record.is_some()) {
            self.attached.fetch_sub(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

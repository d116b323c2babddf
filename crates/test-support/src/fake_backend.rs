//! A fake sandbox backend: "boots" a [`FakeAgent`] on the sandbox's socket.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use hearth_runtime::agent::AgentClient;
use hearth_runtime::backend::{
    BackendError, BackendHandle, BootSpec, DeviceLocator, Drive, Liveness, SandboxBackend,
};

use crate::fake_agent::{Behaviour, FakeAgent};

/// The fake backend.
pub struct FakeBackend {
    behaviour: Behaviour,
    host_network: bool,
    kind: &'static str,
    agents: Mutex<HashMap<String, FakeAgent>>,
}

impl FakeBackend {
    /// A backend of `kind` whose agents behave as `behaviour`.
    pub fn new(kind: &'static str, behaviour: Behaviour) -> FakeBackend {
        FakeBackend {
            behaviour,
            host_network: true,
            kind,
            agents: Mutex::new(HashMap::new()),
        }
    }

    /// Makes it behave like a VM backend: no host network.
    pub fn vm(mut self) -> FakeBackend {
        self.host_network = false;
        self
    }

    /// The agents that are serving now.
    pub fn agents(&self) -> Vec<FakeAgent> {
        self.agents
            .lock()
            .expect("agents")
            .values()
            .cloned()
            .collect()
    }

    /// Agents that are still serving.
    pub fn running(&self) -> usize {
        self.agents.lock().expect("agents").len()
    }
}

fn socket(h: &BackendHandle) -> Result<String, BackendError> {
    h.0.get("socket")
        .and_then(|s| s.as_str())
        .map(str::to_owned)
        .ok_or_else(|| BackendError::Handle("no socket".into()))
}

#[async_trait::async_trait]
impl SandboxBackend for FakeBackend {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn check(&self) -> Result<(), BackendError> {
        Ok(())
    }

    fn supports_host_network(&self) -> bool {
        self.host_network
    }

    async fn boot(&self, spec: &BootSpec) -> Result<BackendHandle, BackendError> {
        let path = spec.run_dir.join("fake-agent.sock");
        let agent = FakeAgent::serve(&path, self.behaviour).map_err(BackendError::io(&path))?;
        let key = path.to_string_lossy().into_owned();
        self.agents
            .lock()
            .expect("agents")
            .insert(key.clone(), agent);
        Ok(BackendHandle(
            serde_json::json!({ "socket": key, "drives": [] }),
        ))
    }

    async fn connect_agent(
        &self,
        handle: &BackendHandle,
        deadline: Duration,
    ) -> Result<AgentClient, BackendError> {
        let s = socket(handle)?;
        Ok(AgentClient::connect(s.as_ref(), hearth_agent_proto::AGENT_PORT, deadline).await?)
    }

    async fn attach_drive(
        &self,
        _: &mut BackendHandle,
        drive: &Drive,
    ) -> Result<DeviceLocator, BackendError> {
        Ok(DeviceLocator::Path(format!("/dev/fake-{}", drive.id)))
    }

    async fn detach_drive(&self, _: &mut BackendHandle, _: &str) -> Result<(), BackendError> {
        Ok(())
    }

    async fn stop(&self, handle: &BackendHandle, _: Duration) -> Result<(), BackendError> {
        self.destroy(handle).await
    }

    async fn destroy(&self, handle: &BackendHandle) -> Result<(), BackendError> {
        let s = socket(handle)?;
        if let Some(a) = self.agents.lock().expect("agents").remove(&s) {
            a.stop();
        }
        let _ = std::fs::remove_file(&s);
        Ok(())
    }

    fn liveness(&self, handle: &BackendHandle) -> Liveness {
        match socket(handle) {
            Ok(s) if self.agents.lock().expect("agents").contains_key(&s) => Liveness::Alive,
            _ => Liveness::Gone("fake agent stopped".into()),
        }
    }
}

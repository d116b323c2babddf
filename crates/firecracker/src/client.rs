//! [`FirecrackerClient`]: one typed method per API endpoint Hearth uses.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{FirecrackerError, Result};
use crate::http::{self, truncate};
use crate::models::*;

/// Default limit for one API exchange.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A client for one Firecracker API socket.
#[derive(Debug, Clone)]
pub struct FirecrackerClient {
    socket: PathBuf,
    timeout: Duration,
}

/// Ids that go into a URL path: Firecracker accepts alphanumerics and `_`.
pub fn check_id(field: &'static str, id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(FirecrackerError::InvalidArgument {
            field,
            reason: format!(
                "{:?} must be 1-64 ascii letters, digits or '_'",
                truncate(id)
            ),
        });
    }
    Ok(())
}

impl FirecrackerClient {
    /// A client for the API socket at `socket_path` (nothing is connected yet).
    pub fn new(socket_path: impl Into<PathBuf>) -> Self {
        FirecrackerClient {
            socket: socket_path.into(),
            timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Sets the limit for each API exchange.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The API socket path.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// Waits until the socket exists and `GET /` answers, or `deadline`
    /// passes. Polls with a short, growing interval; each attempt is itself
    /// bounded by the remaining time.
    pub async fn wait_ready(&self, deadline: Duration) -> Result<InstanceInfo> {
        self.wait_ready_until(Instant::now() + deadline, || Ok(()))
            .await
    }

    /// Like [`wait_ready`](Self::wait_ready) with an absolute deadline and a
    /// check run between attempts (e.g. "has the process exited?").
    pub async fn wait_ready_until(
        &self,
        deadline: Instant,
        mut alive: impl FnMut() -> Result<()>,
    ) -> Result<InstanceInfo> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(5);
        let mut last = String::from("socket not created yet");
        loop {
            alive()?;
            let now = Instant::now();
            if now >= deadline {
                return Err(FirecrackerError::NotReady {
                    socket: self.socket.clone(),
                    waited: now - start,
                    last,
                });
            }
            if self.socket.exists() {
                let attempt = self
                    .clone()
                    .with_timeout((deadline - now).min(self.timeout));
                match attempt.instance_info().await {
                    Ok(info) => return Ok(info),
                    Err(e) => last = error_chain(&e),
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// `GET /`: instance id, state and `vmm_version`.
    pub async fn instance_info(&self) -> Result<InstanceInfo> {
        self.get("/").await
    }

    /// `GET /vm/config`: the whole configuration as Firecracker sees it.
    pub async fn vm_config(&self) -> Result<FullVmConfiguration> {
        self.get("/vm/config").await
    }

    /// `PUT /machine-config`. A refused size is a 400 ([`FirecrackerError::is_bad_request`]).
    pub async fn put_machine_config(&self, config: &MachineConfig) -> Result<()> {
        self.send("PUT", "/machine-config", config).await
    }

    /// `PUT /boot-source`.
    pub async fn put_boot_source(&self, boot: &BootSource) -> Result<()> {
        self.send("PUT", "/boot-source", boot).await
    }

    /// `PUT /drives/{drive_id}`.
    pub async fn put_drive(&self, drive: &Drive) -> Result<()> {
        check_id("drive_id", &drive.drive_id)?;
        self.send("PUT", &format!("/drives/{}", drive.drive_id), drive)
            .await
    }

    /// `PATCH /drives/{drive_id}`: point a drive at another file (works
    /// before and after boot) or change its rate limiter.
    pub async fn patch_drive(&self, drive: &PartialDrive) -> Result<()> {
        check_id("drive_id", &drive.drive_id)?;
        self.send("PATCH", &format!("/drives/{}", drive.drive_id), drive)
            .await
    }

    /// `PUT /vsock`.
    pub async fn put_vsock(&self, vsock: &Vsock) -> Result<()> {
        self.send("PUT", "/vsock", vsock).await
    }

    /// `PUT /network-interfaces/{iface_id}`.
    pub async fn put_network_interface(&self, iface: &NetworkInterface) -> Result<()> {
        check_id("iface_id", &iface.iface_id)?;
        self.send(
            "PUT",
            &format!("/network-interfaces/{}", iface.iface_id),
            iface,
        )
        .await
    }

    /// `PUT /logger`.
    pub async fn put_logger(&self, logger: &Logger) -> Result<()> {
        self.send("PUT", "/logger", logger).await
    }

    /// `PUT /metrics`.
    pub async fn put_metrics(&self, metrics: &Metrics) -> Result<()> {
        self.send("PUT", "/metrics", metrics).await
    }

    /// `PUT /entropy`.
    pub async fn put_entropy(&self, entropy: &EntropyDevice) -> Result<()> {
        self.send("PUT", "/entropy", entropy).await
    }

    /// `PUT /balloon`.
    pub async fn put_balloon(&self, balloon: &Balloon) -> Result<()> {
        self.send("PUT", "/balloon", balloon).await
    }

    /// `PUT /actions {InstanceStart}`: boots the configured VM.
    pub async fn instance_start(&self) -> Result<()> {
        self.action(ActionType::InstanceStart).await
    }

    /// `PUT /actions {SendCtrlAltDel}`: the agent sees SIGINT and reboots.
    pub async fn send_ctrl_alt_del(&self) -> Result<()> {
        self.action(ActionType::SendCtrlAltDel).await
    }

    /// `PUT /actions` with any action.
    pub async fn action(&self, action_type: ActionType) -> Result<()> {
        self.send("PUT", "/actions", &InstanceActionInfo { action_type })
            .await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = http::request(&self.socket, "GET", path, None, self.timeout).await?;
        check_status("GET", path, &resp)?;
        serde_json::from_slice(&resp.body).map_err(|e| FirecrackerError::Json("response", e))
    }

    async fn send<B: Serialize>(&self, method: &'static str, path: &str, body: &B) -> Result<()> {
        let body = serde_json::to_vec(body).map_err(|e| FirecrackerError::Json("request", e))?;
        tracing::debug!(method, path, "firecracker api");
        let resp = http::request(&self.socket, method, path, Some(&body), self.timeout).await?;
        check_status(method, path, &resp)
    }
}

/// `error: cause: cause` for messages that must carry the root cause.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Turns a non-2xx response into [`FirecrackerError::Api`] carrying the
/// `fault_message` (or the raw body when it is not the documented shape).
pub fn check_status(method: &'static str, path: &str, resp: &http::Response) -> Result<()> {
    if (200..300).contains(&resp.status) {
        return Ok(());
    }
    let fault_message = match serde_json::from_slice::<ApiError>(&resp.body) {
        Ok(e) => e.fault_message,
        Err(_) => truncate(&String::from_utf8_lossy(&resp.body)),
    };
    Err(FirecrackerError::Api {
        method,
        path: path.to_string(),
        status: resp.status,
        fault_message,
    })
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;

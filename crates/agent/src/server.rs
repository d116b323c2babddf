//! The gRPC service (`hearth.agent.v1.Agent`) and the one place where the
//! agent's errors become `tonic::Status`.
//!
//! Handlers validate, then run blocking work (mount, file writes) on the
//! blocking pool. `Shutdown` only signals: the reply goes out first, the
//! lifecycle code ([`crate::lifecycle`]) drains the server and then tears the
//! sandbox down.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use hearth_agent_proto::v1;
use hearth_agent_proto::v1::agent_server::{Agent, AgentServer};
use hearth_agent_proto::v1::{
    HealthRequest, HealthResponse, HelloRequest, HelloResponse, MountDriveRequest,
    MountDriveResponse, SetupSandboxRequest, SetupSandboxResponse, ShutdownRequest,
    ShutdownResponse, UnmountDriveRequest, UnmountDriveResponse,
};
use hearth_agent_proto::{MAX_MESSAGE_BYTES, PROTOCOL_VERSION};
use nix::errno::Errno;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::container::{ContainerError, Containers};
use crate::drives::{DriveError, Drives};
use crate::init::chain;
use crate::listen::Conn;
use crate::net::NetError;
use crate::reaper::Reaper;
use crate::sandbox::{self, SandboxError};
use crate::volumes::{VolumeError, Volumes};

/// Where the agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// PID 1 of a guest VM.
    Vm,
    /// PID 1 of a private pid namespace on the host.
    Namespaces,
}

impl Mode {
    /// The name `Hello` reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Vm => "vm",
            Mode::Namespaces => "namespaces",
        }
    }
}

/// The agent's state shared by all handlers.
pub struct AgentService {
    mode: Mode,
    started: Instant,
    drives: Arc<Drives>,
    sandbox_paths: sandbox::Paths,
    shutdown: watch::Sender<bool>,
    // Held for the container runtime (it starts processes through it).
    #[allow(dead_code)]
    reaper: Reaper,
    containers: Arc<Containers>,
    volumes: Arc<Volumes>,
}

impl AgentService {
    /// A service; `shutdown` is set to `true` by the `Shutdown` RPC.
    pub fn new(
        mode: Mode,
        drives: Arc<Drives>,
        reaper: Reaper,
        shutdown: watch::Sender<bool>,
    ) -> AgentService {
        let volumes = Arc::new(Volumes::default());
        AgentService {
            mode,
            started: Instant::now(),
            drives,
            sandbox_paths: sandbox::Paths::default(),
            shutdown,
            containers: Arc::new(Containers::new(
                reaper.clone(),
                crate::container::Paths::default(),
                volumes.clone(),
            )),
            volumes,
            reaper,
        }
    }
}

impl AgentService {
    /// Runs a volume operation on the request off the async thread.
    async fn on_volumes<R, T, F>(&self, req: Request<R>, f: F) -> Result<T, Status>
    where
        R: Send + 'static,
        T: Send + 'static,
        F: FnOnce(&Volumes, R) -> Result<T, VolumeError> + Send + 'static,
    {
        let req = req.into_inner();
        let volumes = self.volumes.clone();
        blocking(move || f(&volumes, req).map_err(volume_status)).await
    }
}

/// Runs blocking work off the async thread.
async fn blocking<T, F>(f: F) -> Result<T, Status>
where
    F: FnOnce() -> Result<T, Status> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("agent task failed: {e}")))?
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn hello(&self, req: Request<HelloRequest>) -> Result<Response<HelloResponse>, Status> {
        let host = req.get_ref().protocol_version;
        if host != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "protocol version mismatch: host speaks {host}, agent speaks {PROTOCOL_VERSION}"
            )));
        }
        let kernel_release = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Response::new(HelloResponse {
            protocol_version: PROTOCOL_VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            kernel_release,
            mode: self.mode.as_str().to_owned(),
        }))
    }

    async fn health(
        &self,
        _req: Request<HealthRequest>,
    ) -> Result<Response<HealthResponse>, Status> {
        Ok(Response::new(HealthResponse {
            uptime_seconds: self.started.elapsed().as_secs(),
        }))
    }

    async fn setup_sandbox(
        &self,
        req: Request<SetupSandboxRequest>,
    ) -> Result<Response<SetupSandboxResponse>, Status> {
        let req = req.into_inner();
        let paths = self.sandbox_paths.clone();
        blocking(move || sandbox::setup(&req, &paths).map_err(sandbox_status)).await?;
        Ok(Response::new(SetupSandboxResponse {}))
    }

    async fn mount_drive(
        &self,
        req: Request<MountDriveRequest>,
    ) -> Result<Response<MountDriveResponse>, Status> {
        let req = req.into_inner();
        let drives = self.drives.clone();
        let device = blocking(move || drives.mount(&req).map_err(drive_status)).await?;
        Ok(Response::new(MountDriveResponse {
            device_path: device.to_string_lossy().into_owned(),
        }))
    }

    async fn unmount_drive(
        &self,
        req: Request<UnmountDriveRequest>,
    ) -> Result<Response<UnmountDriveResponse>, Status> {
        let mountpoint = req.into_inner().mountpoint;
        let drives = self.drives.clone();
        blocking(move || drives.unmount(&mountpoint).map_err(drive_status)).await?;
        Ok(Response::new(UnmountDriveResponse {}))
    }

    async fn shutdown(
        &self,
        _req: Request<ShutdownRequest>,
    ) -> Result<Response<ShutdownResponse>, Status> {
        tracing::info!("shutdown requested");
        // The lifecycle waits for this reply to be sent before acting.
        self.shutdown.send_replace(true);
        Ok(Response::new(ShutdownResponse {}))
    }

    async fn create_container(
        &self,
        req: Request<v1::CreateContainerRequest>,
    ) -> Result<Response<v1::CreateContainerResponse>, Status> {
        let req = req.into_inner();
        let containers = self.containers.clone();
        blocking(move || containers.create(req).map_err(container_status)).await?;
        Ok(Response::new(v1::CreateContainerResponse {}))
    }

    async fn start_container(
        &self,
        req: Request<v1::StartContainerRequest>,
    ) -> Result<Response<v1::StartContainerResponse>, Status> {
        let id = req.into_inner().container_id;
        let (pid, started) = self.containers.start(&id).await.map_err(container_status)?;
        Ok(Response::new(v1::StartContainerResponse {
            pid: pid as u32,
            started_at_ns: started,
        }))
    }

    async fn signal_container(
        &self,
        req: Request<v1::SignalContainerRequest>,
    ) -> Result<Response<v1::SignalContainerResponse>, Status> {
        let req = req.into_inner();
        self.containers
            .signal(&req.container_id, req.signal)
            .map_err(container_status)?;
        Ok(Response::new(v1::SignalContainerResponse {}))
    }

    async fn wait_container(
        &self,
        req: Request<v1::WaitContainerRequest>,
    ) -> Result<Response<v1::WaitContainerResponse>, Status> {
        let req = req.into_inner();
        let timeout = std::time::Duration::from_millis(u64::from(req.timeout_ms));
        let r = self
            .containers
            .wait(&req.container_id, timeout)
            .await
            .map_err(container_status)?;
        Ok(Response::new(r))
    }

    async fn remove_container(
        &self,
        req: Request<v1::RemoveContainerRequest>,
    ) -> Result<Response<v1::RemoveContainerResponse>, Status> {
        let id = req.into_inner().container_id;
        self.containers
            .remove(&id)
            .await
            .map_err(container_status)?;
        Ok(Response::new(v1::RemoveContainerResponse {}))
    }

    async fn exec_sync(
        &self,
        req: Request<v1::ExecSyncRequest>,
    ) -> Result<Response<tonic::codegen::BoxStream<v1::ExecSyncChunk>>, Status> {
        let out = self
            .containers
            .exec_sync(req.into_inner())
            .await
            .map_err(container_status)?;
        let chunks: Vec<Result<v1::ExecSyncChunk, Status>> =
            out.into_chunks().into_iter().map(Ok).collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn container_logs(
        &self,
        req: Request<v1::ContainerLogsRequest>,
    ) -> Result<Response<tonic::codegen::BoxStream<v1::LogChunk>>, Status> {
        let id = req.into_inner().container_id;
        let c = self.containers.get(&id).map_err(container_status)?;
        Ok(Response::new(c.logs().stream()))
    }

    async fn update_container_resources(
        &self,
        req: Request<v1::UpdateContainerResourcesRequest>,
    ) -> Result<Response<v1::UpdateContainerResourcesResponse>, Status> {
        let req = req.into_inner();
        let containers = self.containers.clone();
        blocking(move || {
            containers
                .update_resources(&req.container_id, req.resources.unwrap_or_default())
                .map_err(container_status)
        })
        .await?;
        Ok(Response::new(v1::UpdateContainerResourcesResponse {}))
    }

    async fn sync_volume(
        &self,
        req: Request<v1::SyncVolumeRequest>,
    ) -> Result<Response<v1::SyncVolumeResponse>, Status> {
        self.on_volumes(req, |v, r| v.sync(&r)).await?;
        Ok(Response::new(v1::SyncVolumeResponse {}))
    }

    async fn create_empty_dir(
        &self,
        req: Request<v1::CreateEmptyDirRequest>,
    ) -> Result<Response<v1::CreateEmptyDirResponse>, Status> {
        self.on_volumes(req, |v, r| v.create_empty_dir(&r)).await?;
        Ok(Response::new(v1::CreateEmptyDirResponse {}))
    }

    async fn read_volume_file(
        &self,
        req: Request<v1::ReadVolumeFileRequest>,
    ) -> Result<Response<v1::ReadVolumeFileResponse>, Status> {
        let r = self.on_volumes(req, |v, r| v.read_file(&r)).await?;
        Ok(Response::new(r))
    }

    async fn remove_volume(
        &self,
        req: Request<v1::RemoveVolumeRequest>,
    ) -> Result<Response<v1::RemoveVolumeResponse>, Status> {
        self.on_volumes(req, |v, r| v.remove(&r.name)).await?;
        Ok(Response::new(v1::RemoveVolumeResponse {}))
    }

    async fn configure_network(
        &self,
        req: Request<v1::ConfigureNetworkRequest>,
    ) -> Result<Response<v1::ConfigureNetworkResponse>, Status> {
        if self.mode == Mode::Namespaces {
            return Err(Status::failed_precondition(
                "the namespaces backend's network is configured on the host",
            ));
        }
        crate::net::configure(req.into_inner())
            .await
            .map_err(net_status)?;
        Ok(Response::new(v1::ConfigureNetworkResponse {}))
    }
}

fn volume_status(err: VolumeError) -> Status {
    let msg = chain(&err);
    match err {
        VolumeError::Invalid { .. } => Status::invalid_argument(msg),
        VolumeError::NotFound(_) => Status::not_found(msg),
        VolumeError::Io { .. } => Status::internal(msg),
    }
}

fn net_status(err: NetError) -> Status {
    let msg = chain(&err);
    match err {
        NetError::Invalid { .. } => Status::invalid_argument(msg),
        NetError::NoInterface(_) => Status::failed_precondition(msg),
        NetError::System { .. } => Status::internal(msg),
    }
}

fn container_status(err: ContainerError) -> Status {
    let msg = chain(&err);
    match err {
        ContainerError::Invalid { .. } => Status::invalid_argument(msg),
        ContainerError::NotFound(_) => Status::not_found(msg),
        ContainerError::Exists(_) => Status::already_exists(msg),
        ContainerError::State { .. } | ContainerError::Start { .. } => {
            Status::failed_precondition(msg)
        }
        ContainerError::Io { .. } => Status::internal(msg),
    }
}

/// Serves the agent on `incoming` until `signal` resolves, then drains.
pub async fn serve<I, F>(
    service: AgentService,
    incoming: I,
    signal: F,
) -> Result<(), tonic::transport::Error>
where
    I: tokio_stream::Stream<Item = std::io::Result<Conn>>,
    F: Future<Output = ()>,
{
    let svc = AgentServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, signal)
        .await
}

fn sandbox_status(err: SandboxError) -> Status {
    let msg = chain(&err);
    match err {
        SandboxError::InvalidHostname { .. }
        | SandboxError::InvalidSysctl { .. }
        | SandboxError::UnknownSysctl { .. } => Status::invalid_argument(msg),
        SandboxError::WriteSysctl { ref source, .. }
            if source.kind() == std::io::ErrorKind::InvalidInput =>
        {
            Status::invalid_argument(msg)
        }
        SandboxError::WriteSysctl { .. }
        | SandboxError::SetHostname { .. }
        | SandboxError::WriteFile { .. } => Status::internal(msg),
    }
}

fn drive_status(err: DriveError) -> Status {
    let msg = chain(&err);
    match err {
        DriveError::Invalid { .. } => Status::invalid_argument(msg),
        DriveError::NoDevice { .. } | DriveError::NotMounted { .. } => Status::not_found(msg),
        DriveError::AlreadyMounted { .. } => Status::already_exists(msg),
        DriveError::Mount { source, .. } => match source {
            // Unknown filesystem type, bad superblock or options.
            Errno::ENODEV | Errno::EINVAL => Status::invalid_argument(msg),
            Errno::ENXIO | Errno::ENOENT => Status::not_found(msg),
            _ => Status::internal(msg),
        },
        DriveError::Unmount {
            source: Errno::EBUSY,
            ..
        } => Status::failed_precondition(msg),
        DriveError::Node { .. } | DriveError::Mountpoint { .. } | DriveError::Unmount { .. } => {
            Status::internal(msg)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn errors_keep_their_code_and_chain() {
        let s = drive_status(DriveError::Mount {
            device: "/dev/hearth/7:0".into(),
            mountpoint: "/mnt/a".into(),
            fstype: "ext4".into(),
            source: Errno::EINVAL,
        });
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(
            s.message(),
            "cannot mount /dev/hearth/7:0 on /mnt/a as ext4: EINVAL: Invalid argument"
        );
        let s = sandbox_status(SandboxError::InvalidSysctl {
            key: "kernel.hostname".into(),
            reason: "x",
        });
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("kernel.hostname"));
    }

    #[tokio::test]
    async fn hello_checks_the_version() {
        let (tx, _rx) = watch::channel(false);
        let svc = AgentService::new(
            Mode::Namespaces,
            Arc::new(Drives::default()),
            Reaper::new(),
            tx,
        );
        let err = svc
            .hello(Request::new(HelloRequest {
                protocol_version: PROTOCOL_VERSION + 1,
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert!(err
            .message()
            .contains(&format!("host speaks {}", PROTOCOL_VERSION + 1)));
        assert!(err
            .message()
            .contains(&format!("agent speaks {PROTOCOL_VERSION}")));
        let ok = svc
            .hello(Request::new(HelloRequest {
                protocol_version: PROTOCOL_VERSION,
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ok.mode, "namespaces");
        assert_eq!(ok.pid, std::process::id());
        assert!(!ok.kernel_release.is_empty());
    }

    #[tokio::test]
    async fn the_namespaces_agent_leaves_the_network_to_the_host() {
        let (tx, _rx) = watch::channel(false);
        let svc = AgentService::new(
            Mode::Namespaces,
            Arc::new(Drives::default()),
            Reaper::new(),
            tx,
        );
        let err = svc
            .configure_network(Request::new(v1::ConfigureNetworkRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert!(err.message().contains("configured on the host"));
    }

    #[tokio::test]
    async fn shutdown_signals_after_replying() {
        let (tx, rx) = watch::channel(false);
        let svc = AgentService::new(Mode::Vm, Arc::new(Drives::default()), Reaper::new(), tx);
        svc.shutdown(Request::new(ShutdownRequest {}))
            .await
            .unwrap();
        assert!(*rx.borrow());
    }
}

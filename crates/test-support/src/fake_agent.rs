//! An in-process fake of the guest agent, served on a unix socket behind
//! the hybrid-vsock handshake, for tests of the host's logic (and of how
//! it copes with a guest that misbehaves).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use hearth_agent_proto::v1 as proto;
use hearth_agent_proto::v1::agent_server::{Agent, AgentServer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tonic::{Request, Response, Status};

/// How the fake behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers like a real agent.
    Normal,
    /// Replies junk to the handshake.
    Garbage,
    /// Accepts connections and never answers.
    Hang,
    /// Completes the handshake, then writes junk instead of HTTP/2.
    GarbageAfterHandshake,
}

/// What the fake was asked to do.
#[derive(Debug, Default)]
pub struct Calls {
    /// SetupSandbox requests.
    pub setups: Vec<proto::SetupSandboxRequest>,
    /// MountDrive requests.
    pub mounts: Vec<proto::MountDriveRequest>,
}

/// A running fake agent.
#[derive(Clone)]
pub struct FakeAgent {
    /// Calls received.
    pub calls: Arc<Mutex<Calls>>,
    shut_down: Arc<AtomicBool>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl FakeAgent {
    /// Serves on `socket` (which must not exist).
    pub fn serve(socket: &Path, behaviour: Behaviour) -> std::io::Result<FakeAgent> {
        let listener = UnixListener::bind(socket)?;
        let calls = Arc::new(Mutex::new(Calls::default()));
        let shut_down = Arc::new(AtomicBool::new(false));
        let svc = Service {
            calls: calls.clone(),
            shut_down: shut_down.clone(),
        };
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let svc = svc.clone();
                tokio::spawn(async move {
                    let _ = handle(stream, behaviour, svc).await;
                });
            }
        });
        Ok(FakeAgent {
            calls,
            shut_down,
            task: Arc::new(task),
        })
    }

    /// Whether Shutdown was called.
    pub fn was_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::SeqCst)
    }

    /// Stops serving.
    pub fn stop(&self) {
        self.task.abort();
    }
}

async fn handle(
    stream: tokio::net::UnixStream,
    behaviour: Behaviour,
    svc: Service,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    match behaviour {
        Behaviour::Hang => {
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            return Ok(());
        }
        Behaviour::Garbage => {
            reader.read_line(&mut line).await?;
            reader.get_mut().write_all(b"HELLO THERE\n").await?;
            return Ok(());
        }
        _ => {}
    }
    reader.read_line(&mut line).await?;
    let port = line
        .trim()
        .strip_prefix("CONNECT ")
        .unwrap_or("0")
        .to_owned();
    let mut stream = reader.into_inner();
    stream.write_all(format!("OK {port}\n").as_bytes()).await?;
    if behaviour == Behaviour::GarbageAfterHandshake {
        stream.write_all(&[0xff; 64]).await?;
        return Ok(());
    }
    let incoming = tokio_stream::once(Ok::<_, std::io::Error>(stream));
    let _ = tonic::transport::Server::builder()
        .add_service(AgentServer::new(svc))
        .serve_with_incoming(incoming)
        .await;
    Ok(())
}

#[derive(Clone)]
struct Service {
    calls: Arc<Mutex<Calls>>,
    shut_down: Arc<AtomicBool>,
}

#[tonic::async_trait]
impl Agent for Service {
    async fn hello(
        &self,
        r: Request<proto::HelloRequest>,
    ) -> Result<Response<proto::HelloResponse>, Status> {
        let v = r.into_inner().protocol_version;
        if v != hearth_agent_proto::PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "protocol {v} not spoken"
            )));
        }
        Ok(Response::new(proto::HelloResponse {
            protocol_version: hearth_agent_proto::PROTOCOL_VERSION,
            agent_version: "fake".into(),
            pid: 1,
            kernel_release: "fake".into(),
            mode: "fake".into(),
        }))
    }

    async fn health(
        &self,
        _: Request<proto::HealthRequest>,
    ) -> Result<Response<proto::HealthResponse>, Status> {
        Ok(Response::new(proto::HealthResponse { uptime_seconds: 1 }))
    }

    async fn setup_sandbox(
        &self,
        r: Request<proto::SetupSandboxRequest>,
    ) -> Result<Response<proto::SetupSandboxResponse>, Status> {
        self.calls
            .lock()
            .expect("calls")
            .setups
            .push(r.into_inner());
        Ok(Response::new(proto::SetupSandboxResponse {}))
    }

    async fn mount_drive(
        &self,
        r: Request<proto::MountDriveRequest>,
    ) -> Result<Response<proto::MountDriveResponse>, Status> {
        self.calls
            .lock()
            .expect("calls")
            .mounts
            .push(r.into_inner());
        Ok(Response::new(proto::MountDriveResponse {
            device_path: "/dev/fake".into(),
        }))
    }

    async fn unmount_drive(
        &self,
        _: Request<proto::UnmountDriveRequest>,
    ) -> Result<Response<proto::UnmountDriveResponse>, Status> {
        Ok(Response::new(proto::UnmountDriveResponse {}))
    }

    async fn shutdown(
        &self,
        _: Request<proto::ShutdownRequest>,
    ) -> Result<Response<proto::ShutdownResponse>, Status> {
        self.shut_down.store(true, Ordering::SeqCst);
        Ok(Response::new(proto::ShutdownResponse {}))
    }
}

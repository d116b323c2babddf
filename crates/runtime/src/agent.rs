//! The host's client of the guest agent (`hearth-agent`).
//!
//! One code path for every backend: the agent's vsock port is reached
//! through a unix socket and the hybrid-vsock handshake (write
//! `CONNECT <port>\n`, read `OK <n>\n`), whether Firecracker,
//! vhost-device-vsock (QEMU) or the namespaces agent itself answers it.
//! Then the stream carries gRPC (`hearth.agent.v1.Agent`), and [`Hello`]
//! checks the protocol version.
//!
//! The guest is untrusted: the handshake reply is read byte by byte, at most
//! [`MAX_REPLY_LINE`] bytes, under a deadline; messages are bounded by
//! [`MAX_MESSAGE_BYTES`]; every call has a timeout ([`AgentClient::call_timeout`]);
//! nothing here panics on what the guest sends.
//!
//! [`Hello`]: AgentClient::hello

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hearth_agent_proto::v1::agent_client::AgentClient as ProtoClient;
use hearth_agent_proto::v1::{
    exec_sync_chunk, ContainerLogsRequest, CreateContainerRequest, ExecSyncRequest, LogChunk,
    RemoveContainerRequest, SignalContainerRequest, StartContainerRequest, StartContainerResponse,
    WaitContainerRequest, WaitContainerResponse,
};
use hearth_agent_proto::v1::{
    HealthRequest, HealthResponse, HelloRequest, HelloResponse, MountDriveRequest,
    MountDriveResponse, SetupSandboxRequest, SetupSandboxResponse, ShutdownRequest,
    ShutdownResponse, UnmountDriveRequest, UnmountDriveResponse,
};
use hearth_agent_proto::{MAX_EXEC_OUTPUT_BYTES, MAX_MESSAGE_BYTES, PROTOCOL_VERSION};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// Timeout of each call unless [`AgentClient::with_call_timeout`] says
/// otherwise.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest handshake reply accepted, newline included. `OK ` and a u32 fit
/// with room to spare.
pub const MAX_REPLY_LINE: usize = 32;

/// Longest single connection attempt inside [`AgentClient::connect_until`].
const ATTEMPT_CAP: Duration = Duration::from_secs(2);

/// Errors talking to the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The unix socket could not be connected to (missing, refused, ...).
    #[error("cannot connect to {}", path.display())]
    Connect {
        /// The VMM's (or agent's) unix socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Writing `CONNECT` or reading the reply failed.
    #[error("handshake on {} failed", path.display())]
    HandshakeIo {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The peer closed the stream before a full reply line (e.g. nothing
    /// listens on the guest port yet).
    #[error("{} closed the connection during the handshake (read {read:?})", path.display())]
    HandshakeClosed {
        /// The socket.
        path: PathBuf,
        /// What was read before the close (at most [`MAX_REPLY_LINE`] bytes).
        read: String,
    },
    /// The reply is a line, but not `OK ...`.
    #[error("handshake on {} refused: {reply:?}", path.display())]
    HandshakeRefused {
        /// The socket.
        path: PathBuf,
        /// The reply (bounded).
        reply: String,
    },
    /// The reply is not a line of at most [`MAX_REPLY_LINE`] bytes.
    #[error("malformed handshake reply on {} (read {read:?})", path.display())]
    HandshakeMalformed {
        /// The socket.
        path: PathBuf,
        /// What was read (bounded).
        read: String,
    },
    /// A step took longer than allowed.
    #[error("{call} timed out after {after:?}")]
    Timeout {
        /// `connect`, `handshake` or the RPC's name.
        call: &'static str,
        /// The time allowed.
        after: Duration,
    },
    /// The agent speaks another protocol version.
    #[error("agent speaks protocol version {agent}, hearthd speaks {host}")]
    VersionMismatch {
        /// Ours.
        host: u32,
        /// The agent's.
        agent: u32,
    },
    /// The gRPC channel could not be set up over the stream.
    #[error("cannot start grpc over {}", path.display())]
    Channel {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The agent answered a call with an error status.
    #[error("{call} failed")]
    Rpc {
        /// The RPC's name.
        call: &'static str,
        /// The status (code and message from the agent).
        #[source]
        status: tonic::Status,
    },
}

impl AgentError {
    /// Whether trying again later may help (the agent may not be up yet).
    /// [`AgentClient::connect_until`] retries only these.
    pub fn is_retryable(&self) -> bool {
        match self {
            AgentError::Connect { .. }
            | AgentError::HandshakeIo { .. }
            | AgentError::HandshakeClosed { .. }
            | AgentError::HandshakeRefused { .. }
            | AgentError::Timeout { .. }
            | AgentError::Channel { .. } => true,
            AgentError::Rpc { status, .. } => status.code() == tonic::Code::Unavailable,
            AgentError::HandshakeMalformed { .. } | AgentError::VersionMismatch { .. } => false,
        }
    }

    /// The gRPC status, if the agent answered with one.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            AgentError::Rpc { status, .. } => Some(status),
            _ => None,
        }
    }
}

/// What a handshake reply line means.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// `OK <rest>`: the stream now reaches the guest port. Firecracker puts
    /// a host-side port in `<rest>`, vhost-device-vsock the guest port.
    Ok(String),
    /// Any other line.
    Refused(String),
}

/// Classifies one reply line (without its newline).
pub fn parse_reply(line: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(line).into_owned();
    match line.strip_prefix(b"OK ") {
        Some(rest) => Reply::Ok(String::from_utf8_lossy(rest).into_owned()),
        None => Reply::Refused(text),
    }
}

/// Connects to `path` and does the client side of the handshake for
/// `port`, all within `deadline`. Returns the stream, positioned right
/// after the reply's newline.
pub async fn open_stream(
    path: &Path,
    port: u32,
    deadline: Duration,
) -> Result<UnixStream, AgentError> {
    let timeout = |call| AgentError::Timeout {
        call,
        after: deadline,
    };
    let end = tokio::time::Instant::now() + deadline;
    let mut stream = tokio::time::timeout_at(end, UnixStream::connect(path))
        .await
        .map_err(|_| timeout("connect"))?
        .map_err(|source| AgentError::Connect {
            path: path.to_owned(),
            source,
        })?;
    tokio::time::timeout_at(end, handshake(&mut stream, path, port))
        .await
        .map_err(|_| timeout("handshake"))??;
    Ok(stream)
}

async fn handshake(stream: &mut UnixStream, path: &Path, port: u32) -> Result<(), AgentError> {
    let io_err = |source| AgentError::HandshakeIo {
        path: path.to_owned(),
        source,
    };
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(io_err)?;
    // Byte by byte: whatever follows the newline is gRPC and must stay in
    // the stream.
    let mut line = Vec::with_capacity(MAX_REPLY_LINE);
    loop {
        let byte = match stream.read_u8().await {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(AgentError::HandshakeClosed {
                    path: path.to_owned(),
                    read: String::from_utf8_lossy(&line).into_owned(),
                })
            }
            Err(e) => return Err(io_err(e)),
        };
        if byte == b'\n' {
            break;
        }
        line.push(byte);
        if line.len() >= MAX_REPLY_LINE {
            return Err(AgentError::HandshakeMalformed {
                path: path.to_owned(),
                read: String::from_utf8_lossy(&line).into_owned(),
            });
        }
    }
    match parse_reply(&line) {
        Reply::Ok(_) => Ok(()),
        Reply::Refused(reply) => Err(AgentError::HandshakeRefused {
            path: path.to_owned(),
            reply,
        }),
    }
}

/// A connected client of one agent. Cheap to clone (clones share the
/// connection).
#[derive(Debug, Clone)]
pub struct AgentClient {
    inner: ProtoClient<Channel>,
    call_timeout: Duration,
    hello: Arc<HelloResponse>,
}

impl AgentClient {
    /// Connects through the unix socket `uds_path` to the guest's `port`
    /// (normally [`hearth_agent_proto::AGENT_PORT`]), starts gRPC and checks
    /// the protocol version with `Hello`, all within `deadline`. One
    /// attempt: see [`AgentClient::connect_until`] to wait for an agent that
    /// is still starting.
    pub async fn connect(
        uds_path: &Path,
        port: u32,
        deadline: Duration,
    ) -> Result<AgentClient, AgentError> {
        let end = tokio::time::Instant::now() + deadline;
        let first = open_stream(uds_path, port, deadline).await?;

        // The channel's first connection is the stream just opened (so its
        // errors stay typed); reconnects, if any, redo the handshake.
        let first = Arc::new(Mutex::new(Some(first)));
        let path = Arc::new(uds_path.to_owned());
        let connector = tower::service_fn(move |_: Uri| {
            let first = first.clone();
            let path = path.clone();
            async move {
                let ready = first.lock().unwrap_or_else(|e| e.into_inner()).take();
                let stream = match ready {
                    Some(s) => s,
                    None => open_stream(&path, port, DEFAULT_CALL_TIMEOUT).await?,
                };
                Ok::<_, AgentError>(TokioIo::new(stream))
            }
        });
        // The URI is never resolved: the connector decides where to go.
        let channel = tokio::time::timeout_at(
            end,
            Endpoint::from_static("http://hearth-agent").connect_with_connector(connector),
        )
        .await
        .map_err(|_| AgentError::Timeout {
            call: "connect",
            after: deadline,
        })?
        .map_err(|source| AgentError::Channel {
            path: uds_path.to_owned(),
            source,
        })?;
        let inner = ProtoClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        let mut client = AgentClient {
            inner,
            call_timeout: left,
            hello: Arc::new(HelloResponse::default()),
        };
        let hello = client.hello().await?;
        client.hello = Arc::new(hello);
        client.call_timeout = DEFAULT_CALL_TIMEOUT;
        Ok(client)
    }

    /// Like [`AgentClient::connect`], but keeps trying until `deadline`
    /// while the error is retryable (no socket yet, handshake refused or
    /// closed because the agent is not listening yet, timeouts). Returns the
    /// last error once the deadline has passed.
    pub async fn connect_until(
        uds_path: &Path,
        port: u32,
        deadline: Instant,
    ) -> Result<AgentClient, AgentError> {
        let start = Instant::now();
        let mut backoff = Duration::from_millis(10);
        let mut last = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(last.unwrap_or(AgentError::Timeout {
                    call: "connect",
                    after: deadline.saturating_duration_since(start),
                }));
            }
            match AgentClient::connect(uds_path, port, left.min(ATTEMPT_CAP)).await {
                Ok(client) => return Ok(client),
                Err(err) if !err.is_retryable() => return Err(err),
                Err(err) => {
                    tracing::debug!(error = %err, "agent not ready yet");
                    last = Some(err);
                    let left = deadline.saturating_duration_since(Instant::now());
                    tokio::time::sleep(backoff.min(left)).await;
                    backoff = (backoff * 2).min(Duration::from_millis(250));
                }
            }
        }
    }

    /// The same client with another per-call timeout.
    pub fn with_call_timeout(mut self, timeout: Duration) -> AgentClient {
        self.call_timeout = timeout;
        self
    }

    /// The per-call timeout.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// What the agent said in the `Hello` of [`AgentClient::connect`]
    /// (mode, pid, kernel, versions).
    pub fn agent_info(&self) -> &HelloResponse {
        &self.hello
    }

    async fn call<T, F, Fut>(&self, name: &'static str, f: F) -> Result<T, AgentError>
    where
        F: FnOnce(ProtoClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let after = self.call_timeout;
        match tokio::time::timeout(after, f(self.inner.clone())).await {
            Err(_) => Err(AgentError::Timeout { call: name, after }),
            Ok(Err(status)) => Err(AgentError::Rpc { call: name, status }),
            Ok(Ok(response)) => Ok(response.into_inner()),
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        // No grpc-timeout header: tonic would enforce it as a Cancelled
        // status, racing our own timeout, which names the call.
        tonic::Request::new(message)
    }

    /// `Hello`: checks the protocol version; a mismatch is
    /// [`AgentError::VersionMismatch`].
    pub async fn hello(&self) -> Result<HelloResponse, AgentError> {
        let req = self.request(HelloRequest {
            protocol_version: PROTOCOL_VERSION,
        });
        let reply = self
            .call("Hello", |mut c| async move { c.hello(req).await })
            .await?;
        if reply.protocol_version != PROTOCOL_VERSION {
            return Err(AgentError::VersionMismatch {
                host: PROTOCOL_VERSION,
                agent: reply.protocol_version,
            });
        }
        Ok(reply)
    }

    /// `Health`: the agent's uptime.
    pub async fn health(&self) -> Result<HealthResponse, AgentError> {
        let req = self.request(HealthRequest {});
        self.call("Health", |mut c| async move { c.health(req).await })
            .await
    }

    /// `SetupSandbox`: hostname, /etc/hosts, /etc/resolv.conf, sysctls.
    pub async fn setup_sandbox(
        &self,
        req: SetupSandboxRequest,
    ) -> Result<SetupSandboxResponse, AgentError> {
        let req = self.request(req);
        self.call(
            "SetupSandbox",
            |mut c| async move { c.setup_sandbox(req).await },
        )
        .await
    }

    /// `ConfigureNetwork`: the guest NIC's name, MTU, addresses and routes
    /// (VM backends).
    pub async fn configure_network(
        &self,
        req: hearth_agent_proto::v1::ConfigureNetworkRequest,
    ) -> Result<(), AgentError> {
        let req = self.request(req);
        self.call("ConfigureNetwork", |mut c| async move {
            c.configure_network(req).await
        })
        .await
        .map(drop)
    }

    /// `MountDrive`: returns the guest's device node.
    pub async fn mount_drive(
        &self,
        req: MountDriveRequest,
    ) -> Result<MountDriveResponse, AgentError> {
        let req = self.request(req);
        self.call(
            "MountDrive",
            |mut c| async move { c.mount_drive(req).await },
        )
        .await
    }

    /// `UnmountDrive`.
    pub async fn unmount_drive(
        &self,
        req: UnmountDriveRequest,
    ) -> Result<UnmountDriveResponse, AgentError> {
        let req = self.request(req);
        self.call(
            "UnmountDrive",
            |mut c| async move { c.unmount_drive(req).await },
        )
        .await
    }

    /// `Shutdown`: the agent replies, then ends every process and itself
    /// (in a VM: reboots, so the VMM exits).
    pub async fn shutdown(&self) -> Result<ShutdownResponse, AgentError> {
        let req = self.request(ShutdownRequest {});
        self.call("Shutdown", |mut c| async move { c.shutdown(req).await })
            .await
    }

    /// `CreateContainer`: the rootfs overlay and the process spec.
    pub async fn create_container(&self, req: CreateContainerRequest) -> Result<(), AgentError> {
        let req = self.request(req);
        self.call("CreateContainer", |mut c| async move {
            c.create_container(req).await
        })
        .await
        .map(|_| ())
    }

    /// `StartContainer`: the init's pid (guest view).
    pub async fn start_container(&self, id: &str) -> Result<StartContainerResponse, AgentError> {
        let req = self.request(StartContainerRequest {
            container_id: id.to_owned(),
        });
        self.call("StartContainer", |mut c| async move {
            c.start_container(req).await
        })
        .await
    }

    /// `SignalContainer`.
    pub async fn signal_container(&self, id: &str, signal: u32) -> Result<(), AgentError> {
        let req = self.request(SignalContainerRequest {
            container_id: id.to_owned(),
            signal,
        });
        self.call("SignalContainer", |mut c| async move {
            c.signal_container(req).await
        })
        .await
        .map(|_| ())
    }

    /// `WaitContainer`: the state, after waiting up to `wait` for an exit
    /// (the call's own timeout is stretched by that much).
    pub async fn wait_container(
        &self,
        id: &str,
        wait: Duration,
    ) -> Result<WaitContainerResponse, AgentError> {
        let req = self.request(WaitContainerRequest {
            container_id: id.to_owned(),
            timeout_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
        });
        self.clone()
            .with_call_timeout(self.call_timeout + wait)
            .call("WaitContainer", |mut c| async move {
                c.wait_container(req).await
            })
            .await
    }

    /// `RemoveContainer` (kills, unmounts, deletes; unknown ids are fine).
    pub async fn remove_container(&self, id: &str) -> Result<(), AgentError> {
        let req = self.request(RemoveContainerRequest {
            container_id: id.to_owned(),
        });
        self.clone()
            .with_call_timeout(self.call_timeout + Duration::from_secs(10))
            .call("RemoveContainer", |mut c| async move {
                c.remove_container(req).await
            })
            .await
            .map(|_| ())
    }

    /// `UpdateContainerResources`: new cgroup limits for a created or
    /// running container.
    pub async fn update_container_resources(
        &self,
        id: &str,
        resources: hearth_agent_proto::v1::ContainerResources,
    ) -> Result<(), AgentError> {
        let req = self.request(hearth_agent_proto::v1::UpdateContainerResourcesRequest {
            container_id: id.to_owned(),
            resources: Some(resources),
        });
        self.call("UpdateContainerResources", |mut c| async move {
            c.update_container_resources(req).await
        })
        .await
        .map(drop)
    }

    /// `ExecSync`: collects the streamed output (each stream at most
    /// `req.max_output_bytes`, bounded by the protocol's cap) and the exit.
    /// The whole call is bounded by the exec's timeout plus the call
    /// timeout.
    pub async fn exec_sync(&self, req: ExecSyncRequest) -> Result<ExecSyncResult, AgentError> {
        let cap = req.max_output_bytes.min(MAX_EXEC_OUTPUT_BYTES) as usize;
        let after = self.call_timeout + Duration::from_millis(u64::from(req.timeout_ms));
        let req = self.request(req);
        let mut client = self.inner.clone();
        let run = async move {
            let mut stream = client
                .exec_sync(req)
                .await
                .map_err(|status| AgentError::Rpc {
                    call: "ExecSync",
                    status,
                })?
                .into_inner();
            let mut out = ExecSyncResult::default();
            while let Some(msg) = stream.message().await.map_err(|status| AgentError::Rpc {
                call: "ExecSync",
                status,
            })? {
                match msg.chunk {
                    Some(exec_sync_chunk::Chunk::Stdout(b)) => {
                        append_capped(&mut out.stdout, &b, cap)
                    }
                    Some(exec_sync_chunk::Chunk::Stderr(b)) => {
                        append_capped(&mut out.stderr, &b, cap)
                    }
                    Some(exec_sync_chunk::Chunk::Exit(e)) => {
                        out.exit_code = e.exit_code;
                        out.timed_out = e.timed_out;
                        return Ok(out);
                    }
                    None => {}
                }
            }
            Err(AgentError::Rpc {
                call: "ExecSync",
                status: tonic::Status::data_loss("the agent ended the exec stream without an exit"),
            })
        };
        tokio::time::timeout(after, run)
            .await
            .map_err(|_| AgentError::Timeout {
                call: "ExecSync",
                after,
            })?
    }

    /// `ContainerLogs`: the container's output stream (long-lived; only
    /// opening it is bounded by the call timeout).
    pub async fn container_logs(&self, id: &str) -> Result<tonic::Streaming<LogChunk>, AgentError> {
        let req = self.request(ContainerLogsRequest {
            container_id: id.to_owned(),
        });
        self.call("ContainerLogs", |mut c| async move {
            c.container_logs(req).await
        })
        .await
    }

    /// `SyncVolume`: makes the guest volume's tree equal to the one sent.
    pub async fn sync_volume(
        &self,
        req: hearth_agent_proto::v1::SyncVolumeRequest,
    ) -> Result<(), AgentError> {
        let req = self.request(req);
        self.call(
            "SyncVolume",
            |mut c| async move { c.sync_volume(req).await },
        )
        .await
        .map(drop)
    }

    /// `CreateEmptyDir` (idempotent).
    pub async fn create_empty_dir(
        &self,
        req: hearth_agent_proto::v1::CreateEmptyDirRequest,
    ) -> Result<(), AgentError> {
        let req = self.request(req);
        self.call("CreateEmptyDir", |mut c| async move {
            c.create_empty_dir(req).await
        })
        .await
        .map(drop)
    }

    /// `ReadVolumeFile`: at most `max_bytes` of a regular file of a volume.
    pub async fn read_volume_file(
        &self,
        req: hearth_agent_proto::v1::ReadVolumeFileRequest,
    ) -> Result<hearth_agent_proto::v1::ReadVolumeFileResponse, AgentError> {
        let req = self.request(req);
        self.call("ReadVolumeFile", |mut c| async move {
            c.read_volume_file(req).await
        })
        .await
    }

    /// `RemoveVolume` (idempotent).
    pub async fn remove_volume(&self, name: &str) -> Result<(), AgentError> {
        let req = self.request(hearth_agent_proto::v1::RemoveVolumeRequest {
            name: name.to_owned(),
        });
        self.call(
            "RemoveVolume",
            |mut c| async move { c.remove_volume(req).await },
        )
        .await
        .map(drop)
    }
}

/// What `ExecSync` returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecSyncResult {
    /// stdout (capped).
    pub stdout: Vec<u8>,
    /// stderr (capped).
    pub stderr: Vec<u8>,
    /// Exit code.
    pub exit_code: i32,
    /// Killed at its timeout.
    pub timed_out: bool,
}

fn append_capped(out: &mut Vec<u8>, data: &[u8], cap: usize) {
    let room = cap.saturating_sub(out.len());
    out.extend_from_slice(&data[..data.len().min(room)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_replies_are_accepted_whatever_the_port() {
        assert_eq!(
            parse_reply(b"OK 1073741824"),
            Reply::Ok("1073741824".into())
        );
        assert_eq!(parse_reply(b"OK 1024"), Reply::Ok("1024".into()));
        assert_eq!(parse_reply(b"OK x"), Reply::Ok("x".into()));
    }

    #[test]
    fn other_replies_are_refusals() {
        for line in [&b""[..], b"OK", b"ok 1024", b"NO", b"\xff\xfe", b"KO 1"] {
            assert!(matches!(parse_reply(line), Reply::Refused(_)), "{line:?}");
        }
    }

    #[test]
    fn retryable_errors() {
        let path = PathBuf::from("/x");
        assert!(AgentError::HandshakeClosed {
            path: path.clone(),
            read: String::new()
        }
        .is_retryable());
        assert!(!AgentError::VersionMismatch { host: 1, agent: 2 }.is_retryable());
        assert!(!AgentError::HandshakeMalformed {
            path,
            read: String::new()
        }
        .is_retryable());
        assert!(AgentError::Rpc {
            call: "Hello",
            status: tonic::Status::unavailable("x")
        }
        .is_retryable());
        assert!(!AgentError::Rpc {
            call: "Hello",
            status: tonic::Status::failed_precondition("x")
        }
        .is_retryable());
    }

    async fn serve_once(reply: &'static [u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vsock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 13];
            let _ = s.read_exact(&mut buf).await;
            let _ = s.write_all(reply).await;
            // Keep the stream open a while: the client must not wait for EOF.
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        (dir, path)
    }

    #[tokio::test]
    async fn handshake_keeps_bytes_after_the_newline() {
        let (_dir, path) = serve_once(b"OK 77\nREST").await;
        let mut s = open_stream(&path, 1024, Duration::from_secs(5))
            .await
            .unwrap();
        let mut rest = [0u8; 4];
        s.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"REST");
    }

    #[tokio::test]
    async fn handshake_bounds_the_reply() {
        let (_dir, path) = serve_once(&[b'A'; 200]).await;
        let err = open_stream(&path, 1024, Duration::from_secs(5))
            .await
            .unwrap_err();
        match err {
            AgentError::HandshakeMalformed { read, .. } => assert_eq!(read.len(), MAX_REPLY_LINE),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn handshake_reports_refusals() {
        let (_dir, path) = serve_once(b"FAILURE\n").await;
        let err = open_stream(&path, 1024, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(err, AgentError::HandshakeRefused { ref reply, .. } if reply == "FAILURE")
        );
    }
}

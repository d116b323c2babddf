//! The host's agent client against fake peers: a correct in-process agent,
//! and peers that misbehave (junk, silence, wrong version, slow calls).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_agent_proto::v1::agent_server::{Agent, AgentServer};
use hearth_agent_proto::v1::*;
use hearth_agent_proto::{AGENT_PORT, PROTOCOL_VERSION};
use hearth_runtime::agent::{AgentClient, AgentError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// A fake agent with a configurable protocol version and slow Health.
#[derive(Clone)]
struct FakeAgent {
    version: u32,
    health_delay: Duration,
}

#[tonic::async_trait]
impl Agent for FakeAgent {
    async fn hello(&self, _: Request<HelloRequest>) -> Result<Response<HelloResponse>, Status> {
        Ok(Response::new(HelloResponse {
            protocol_version: self.version,
            agent_version: "fake".into(),
            pid: 1,
            kernel_release: "fake".into(),
            mode: "fake".into(),
        }))
    }
    async fn health(&self, _: Request<HealthRequest>) -> Result<Response<HealthResponse>, Status> {
        tokio::time::sleep(self.health_delay).await;
        Ok(Response::new(HealthResponse { uptime_seconds: 7 }))
    }
    async fn setup_sandbox(
        &self,
        _: Request<SetupSandboxRequest>,
    ) -> Result<Response<SetupSandboxResponse>, Status> {
        Err(Status::invalid_argument(
            "invalid sysctl \"kernel.hostname\"",
        ))
    }
    async fn mount_drive(
        &self,
        _: Request<MountDriveRequest>,
    ) -> Result<Response<MountDriveResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn unmount_drive(
        &self,
        _: Request<UnmountDriveRequest>,
    ) -> Result<Response<UnmountDriveResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn shutdown(
        &self,
        _: Request<ShutdownRequest>,
    ) -> Result<Response<ShutdownResponse>, Status> {
        Ok(Response::new(ShutdownResponse {}))
    }
}

/// Serves `agent` on `path` behind the hybrid-vsock handshake (as
/// Firecracker would: `OK <host port>`).
fn serve_fake(path: &Path, agent: FakeAgent) {
    let listener = UnixListener::bind(path).unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<UnixStream>>(4);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut line = Vec::new();
                loop {
                    let b = s.read_u8().await.unwrap();
                    if b == b'\n' {
                        break;
                    }
                    line.push(b);
                }
                assert_eq!(line, format!("CONNECT {AGENT_PORT}").as_bytes());
                s.write_all(b"OK 1073741824\n").await.unwrap();
                let _ = tx.send(Ok(s)).await;
            });
        }
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AgentServer::new(agent))
            .serve_with_incoming(ReceiverStream::new(rx)),
    );
}

fn good() -> FakeAgent {
    FakeAgent {
        version: PROTOCOL_VERSION,
        health_delay: Duration::ZERO,
    }
}

/// A peer that reads the CONNECT line, then does `then` with the stream.
fn serve_raw(path: &Path, reply: Option<&'static [u8]>) {
    let listener = UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                let _ = s.read(&mut buf).await;
                match reply {
                    Some(r) => {
                        let _ = s.write_all(r).await;
                    }
                    // Never answer; hold the stream open.
                    None => tokio::time::sleep(Duration::from_secs(60)).await,
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            });
        }
    });
}

fn sock(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("agent.vsock")
}

#[tokio::test]
async fn talks_to_a_well_behaved_agent() {
    let dir = tempfile::tempdir().unwrap();
    serve_fake(&sock(&dir), good());
    let client = AgentClient::connect(&sock(&dir), AGENT_PORT, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(client.agent_info().agent_version, "fake");
    assert_eq!(
        client.call_timeout(),
        hearth_runtime::agent::DEFAULT_CALL_TIMEOUT
    );
    assert_eq!(client.health().await.unwrap().uptime_seconds, 7);
    // Clones share the connection.
    let other = client.clone();
    other.shutdown().await.unwrap();
}

#[tokio::test]
async fn agent_status_is_kept_as_source() {
    let dir = tempfile::tempdir().unwrap();
    serve_fake(&sock(&dir), good());
    let client = AgentClient::connect(&sock(&dir), AGENT_PORT, Duration::from_secs(5))
        .await
        .unwrap();
    let err = client
        .setup_sandbox(SetupSandboxRequest::default())
        .await
        .unwrap_err();
    let status = err.status().expect("an rpc status");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("kernel.hostname"));
    assert!(matches!(
        err,
        AgentError::Rpc {
            call: "SetupSandbox",
            ..
        }
    ));
    let source = std::error::Error::source(&err).unwrap();
    assert!(source.to_string().contains("kernel.hostname"), "{source}");
}

#[tokio::test]
async fn version_mismatch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    serve_fake(
        &sock(&dir),
        FakeAgent {
            version: PROTOCOL_VERSION + 1,
            health_delay: Duration::ZERO,
        },
    );
    let err = AgentClient::connect(&sock(&dir), AGENT_PORT, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(err, AgentError::VersionMismatch { host, agent } if host == PROTOCOL_VERSION && agent == PROTOCOL_VERSION + 1),
        "{err:?}"
    );
    // Not worth retrying: connect_until gives up at once.
    let start = Instant::now();
    let err = AgentClient::connect_until(
        &sock(&dir),
        AGENT_PORT,
        Instant::now() + Duration::from_secs(10),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, AgentError::VersionMismatch { .. }));
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn slow_calls_time_out_naming_the_call() {
    let dir = tempfile::tempdir().unwrap();
    serve_fake(
        &sock(&dir),
        FakeAgent {
            version: PROTOCOL_VERSION,
            health_delay: Duration::from_secs(30),
        },
    );
    let client = AgentClient::connect(&sock(&dir), AGENT_PORT, Duration::from_secs(5))
        .await
        .unwrap()
        .with_call_timeout(Duration::from_millis(200));
    let start = Instant::now();
    let err = client.health().await.unwrap_err();
    assert!(
        matches!(err, AgentError::Timeout { call: "Health", .. }),
        "{err:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn junk_handshake_reply_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    serve_raw(&sock(&dir), Some(b"HTTP/1.1 400 Bad Request\r\n\r\n"));
    let err = AgentClient::connect(&sock(&dir), AGENT_PORT, Duration::from_secs(5))
        .await
        .unwrap_err();
    match &err {
        AgentError::HandshakeRefused { reply, path } => {
            assert_eq!(reply, "HTTP/1.1 400 Bad Request\r");
            assert_eq!(path, &sock(&dir));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn endless_handshake_reply_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    serve_raw(&sock(&dir), Some(&[b'x'; 4096]));
    let err = AgentClient::connect(&sock(&dir), AGENT_PORT, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AgentError::HandshakeMalformed { read, .. } if read.len() == hearth_runtime::agent::MAX_REPLY_LINE),
        "{err:?}"
    );
}

#[tokio::test]
async fn silent_peer_times_out_quickly() {
    let dir = tempfile::tempdir().unwrap();
    serve_raw(&sock(&dir), None);
    let start = Instant::now();
    let err = AgentClient::connect(&sock(&dir), AGENT_PORT, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            AgentError::Timeout {
                call: "handshake",
                ..
            }
        ),
        "{err:?}"
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test]
async fn closing_peer_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    serve_raw(&sock(&dir), Some(b"OK"));
    // "OK" then (after 5 s) close: the line never completes; a short deadline.
    let err = AgentClient::connect(&sock(&dir), AGENT_PORT, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, AgentError::Timeout { .. }), "{err:?}");

    let dir2 = tempfile::tempdir().unwrap();
    let listener = UnixListener::bind(sock(&dir2)).unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 16];
        let _ = s.read(&mut buf).await;
        s.write_all(b"OK 1").await.unwrap();
        // dropped: closed mid-line
    });
    let err = AgentClient::connect(&sock(&dir2), AGENT_PORT, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AgentError::HandshakeClosed { read, .. } if read == "OK 1"),
        "{err:?}"
    );
}

#[tokio::test]
async fn missing_socket_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let err = AgentClient::connect(&sock(&dir), AGENT_PORT, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(&err, AgentError::Connect { path, .. } if path == &sock(&dir)));
    assert!(err.to_string().contains("agent.vsock"), "{err}");
}

#[tokio::test]
async fn connect_until_waits_for_a_late_agent() {
    let dir = tempfile::tempdir().unwrap();
    let path = Arc::new(sock(&dir));
    let p = path.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        serve_fake(&p, good());
    });
    let start = Instant::now();
    let client =
        AgentClient::connect_until(&path, AGENT_PORT, Instant::now() + Duration::from_secs(10))
            .await
            .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(400));
    client.health().await.unwrap();
}

#[tokio::test]
async fn connect_until_returns_the_last_error_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let err = AgentClient::connect_until(
        &sock(&dir),
        AGENT_PORT,
        Instant::now() + Duration::from_millis(300),
    )
    .await
    .unwrap_err();
    let took = start.elapsed();
    assert!(matches!(err, AgentError::Connect { .. }), "{err:?}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

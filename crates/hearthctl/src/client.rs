//! The connection to hearthd: a tonic channel over its unix socket, the two
//! CRI clients and hearthd's admin client on it, and deadlines on every call.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, Result};
use hearthd::admin::proto::admin_client::AdminClient;
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Request, Response, Status, TimeoutExpired};
use tower::service_fn;

use crate::output::format_duration;

/// Both CRI services on one connection, with the call deadline.
pub struct Cri {
    channel: Channel,
    timeout: Duration,
}

/// A failed call, printed as `<rpc>: <code>: <message>`.
#[derive(Debug)]
pub struct RpcError {
    /// The CRI method, e.g. `RunPodSandbox`.
    pub rpc: &'static str,
    /// What the server (or the deadline) answered.
    pub status: Status,
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {:?}", self.rpc, self.status.code())?;
        if !self.status.message().is_empty() {
            write!(f, ": {}", self.status.message())?;
        }
        if self.status.code() == Code::Unimplemented {
            write!(f, " (hearthd does not implement {} yet)", self.rpc)?;
        }
        Ok(())
    }
}

impl std::error::Error for RpcError {}

/// Connects to hearthd's socket at `path`, within `timeout`.
pub async fn connect(path: &Path, timeout: Duration) -> Result<Cri> {
    let unreachable = |err: &dyn std::fmt::Display| {
        anyhow!(
            "cannot connect to hearthd at {}: {err} (is hearthd running?)",
            path.display()
        )
    };
    // Connect once here so a missing socket gives a plain io error; the
    // channel takes this stream and dials again only if it must reconnect.
    let first = tokio::time::timeout(timeout, UnixStream::connect(path))
        .await
        .map_err(|_| unreachable(&format!("no answer within {}", format_duration(timeout))))?
        .map_err(|e| unreachable(&e))?;
    let first = Arc::new(Mutex::new(Some(first)));
    let socket: PathBuf = path.to_path_buf();
    let connector = service_fn(move |_: Uri| {
        let first = first.lock().ok().and_then(|mut s| s.take());
        let socket = socket.clone();
        async move {
            let stream = match first {
                Some(stream) => stream,
                None => UnixStream::connect(&socket).await?,
            };
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    // The authority is a placeholder: the connector ignores it.
    let channel = Endpoint::try_from("http://[::]:50051")?
        .connect_timeout(timeout)
        .connect_with_connector(connector)
        .await
        .map_err(|e| unreachable(&error_chain(&e)))?;
    Ok(Cri { channel, timeout })
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl Cri {
    /// The RuntimeService client.
    pub fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
    }

    /// The ImageService client.
    pub fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel.clone())
    }

    /// hearthd's own admin service (pull progress, prune).
    pub fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel.clone())
    }

    /// The deadline for one call (`--timeout`).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A request that carries the default deadline to the server.
    pub fn request<M>(&self, message: M) -> Request<M> {
        request_with(message, self.timeout)
    }

    /// Awaits a call for at most the default deadline.
    pub async fn call<T>(
        &self,
        rpc: &'static str,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, RpcError> {
        call_with(rpc, self.timeout, call).await
    }
}

/// A request that carries `timeout` to the server (`grpc-timeout`).
pub fn request_with<M>(message: M, timeout: Duration) -> Request<M> {
    let mut request = Request::new(message);
    request.set_timeout(timeout);
    request
}

/// Awaits a call for at most `timeout`; a late answer is DeadlineExceeded.
pub async fn call_with<T>(
    rpc: &'static str,
    timeout: Duration,
    call: impl Future<Output = Result<Response<T>, Status>>,
) -> Result<T, RpcError> {
    let late = || RpcError {
        rpc,
        status: Status::deadline_exceeded(format!(
            "no answer within {} (raise it with --timeout)",
            format_duration(timeout)
        )),
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) if is_client_timeout(&status) => Err(late()),
        Ok(Err(status)) => Err(RpcError { rpc, status }),
        Err(_) => Err(late()),
    }
}

/// tonic enforces the request's grpc-timeout itself and reports it as
/// Cancelled "Timeout expired"; it is our deadline, so say so.
fn is_client_timeout(status: &Status) -> bool {
    status.code() == Code::Cancelled
        && (status.message() == TimeoutExpired(()).to_string()
            || std::error::Error::source(status).is_some_and(|s| s.is::<TimeoutExpired>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_errors_read_rpc_code_message() {
        let e = RpcError {
            rpc: "StopPodSandbox",
            status: Status::not_found("pod abc not found"),
        };
        assert_eq!(e.to_string(), "StopPodSandbox: NotFound: pod abc not found");
        let e = RpcError {
            rpc: "PullImage",
            status: Status::unimplemented("unknown method"),
        };
        assert_eq!(
            e.to_string(),
            "PullImage: Unimplemented: unknown method (hearthd does not implement PullImage yet)"
        );
        // tonic answers an unknown service with an empty message.
        let e = RpcError {
            rpc: "ListImages",
            status: Status::unimplemented(""),
        };
        assert_eq!(
            e.to_string(),
            "ListImages: Unimplemented (hearthd does not implement ListImages yet)"
        );
    }

    #[tokio::test]
    async fn missing_socket_says_so() {
        let err = match connect(
            Path::new("/nonexistent/hearth.sock"),
            Duration::from_secs(1),
        )
        .await
        {
            Ok(_) => panic!("connected to a socket that does not exist"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.starts_with("cannot connect to hearthd at /nonexistent/hearth.sock: "),
            "{err}"
        );
        assert!(err.ends_with("(is hearthd running?)"), "{err}");
    }

    #[tokio::test]
    async fn late_answers_become_deadline_exceeded() {
        let never = std::future::pending::<Result<Response<()>, Status>>();
        let err = call_with("Version", Duration::from_millis(10), never)
            .await
            .unwrap_err();
        assert_eq!(err.status.code(), Code::DeadlineExceeded);
        assert!(err
            .to_string()
            .starts_with("Version: DeadlineExceeded: no answer within 10ms"));

        // tonic's own enforcement of grpc-timeout reads the same.
        let cancelled =
            async { Err::<Response<()>, _>(Status::from_error(Box::new(TimeoutExpired(())))) };
        let err = call_with("Version", Duration::from_secs(5), cancelled)
            .await
            .unwrap_err();
        assert_eq!(err.status.code(), Code::DeadlineExceeded);
        // A server's own Cancelled stays what it is.
        let cancelled = async { Err::<Response<()>, _>(Status::cancelled("shutting down")) };
        let err = call_with("Version", Duration::from_secs(5), cancelled)
            .await
            .unwrap_err();
        assert_eq!(err.status.code(), Code::Cancelled);
    }
}

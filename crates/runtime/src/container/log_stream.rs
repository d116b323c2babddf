//! The host half of a container's log: the agent's `ContainerLogs` stream
//! written into the CRI log file by [`super::cri_log::CriLogWriter`].

use std::path::{Path, PathBuf};

use hearth_agent_proto::v1 as proto;

use super::cri_log::{CriLogWriter, Stream};
use crate::agent::AgentClient;
use crate::id::Id;

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Asks the log copy to reopen its file (CRI ReopenContainerLog); the
/// answer says whether the new file could be opened.
pub(super) type ReopenRequest = tokio::sync::oneshot::Sender<std::io::Result<()>>;

fn open(path: &Path) -> std::io::Result<std::fs::File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Copies the agent's output stream of `id` into the CRI log at `path`
/// (empty: drained and dropped) until the stream ends; reopens the file
/// at `path` on each request from `reopen` (after the kubelet rotated it).
pub(super) async fn copy_log(
    agent: AgentClient,
    id: Id,
    path: PathBuf,
    mut reopen: tokio::sync::mpsc::Receiver<ReopenRequest>,
) {
    let mut stream = match agent.container_logs(id.as_str()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "no log stream");
            return;
        }
    };
    let mut writer = if path.as_os_str().is_empty() {
        None
    } else {
        match open(&path) {
            Ok(f) => Some(CriLogWriter::new(f)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot open the container log; output is dropped");
                None
            }
        }
    };
    loop {
        let msg = tokio::select! {
            m = stream.message() => m,
            Some(ack) = reopen.recv() => {
                let res = match writer.as_mut() {
                    None => Ok(()),
                    Some(w) => open(&path).map(|f| {
                        w.set_output(f);
                    }),
                };
                let _ = ack.send(res);
                continue;
            }
        };
        match msg {
            Ok(Some(chunk)) => {
                let s = if chunk.stream == proto::LogStream::Stderr as i32 {
                    Stream::Stderr
                } else {
                    Stream::Stdout
                };
                let t = if chunk.time_ns > 0 {
                    chunk.time_ns
                } else {
                    now_ns()
                };
                if let Some(w) = writer.as_mut() {
                    if let Err(e) = w.write(t, s, &chunk.data) {
                        tracing::warn!(error = %e, "container log write failed");
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "log stream ended");
                break;
            }
        }
    }
    if let Some(w) = writer.as_mut() {
        let _ = w.finish(now_ns());
    }
}

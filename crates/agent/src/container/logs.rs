//! A container's stdout/stderr backlog: two pipe readers feed one bounded
//! channel; one `ContainerLogs` stream at a time drains it. When the
//! backlog is full the readers stop reading, so the container's writes
//! block: output is delayed, never dropped. A chunk a departed reader could
//! not take is kept for the next one.

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use hearth_agent_proto::v1::{LogChunk, LogStream};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::codegen::BoxStream;
use tonic::Status;

use super::{io_err, now_ns, ContainerError};

/// Stream number of stdout.
pub const STDOUT: LogStream = LogStream::Stdout;
/// Stream number of stderr.
pub const STDERR: LogStream = LogStream::Stderr;

/// Chunks held per container (each at most [`READ_SIZE`] bytes).
const BACKLOG_CHUNKS: usize = 64;
/// Bytes read from a pipe at a time.
const READ_SIZE: usize = 32 * 1024;

type Shared = Arc<tokio::sync::Mutex<(mpsc::Receiver<LogChunk>, Option<LogChunk>)>>;

/// One container's backlog.
pub struct LogQueue {
    tx: Mutex<Option<mpsc::Sender<LogChunk>>>,
    rx: Shared,
}

impl Default for LogQueue {
    fn default() -> Self {
        LogQueue::new()
    }
}

impl LogQueue {
    /// An empty backlog.
    pub fn new() -> LogQueue {
        let (tx, rx) = mpsc::channel(BACKLOG_CHUNKS);
        LogQueue {
            tx: Mutex::new(Some(tx)),
            rx: Arc::new(tokio::sync::Mutex::new((rx, None))),
        }
    }

    /// Reads `fd` (a pipe's read end) into the backlog until EOF.
    pub fn read_pipe(
        &self,
        fd: OwnedFd,
        stream: LogStream,
    ) -> Result<JoinHandle<()>, ContainerError> {
        let tx = self
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| ContainerError::State {
                id: String::new(),
                state: "closed",
            })?;
        let mut pipe =
            tokio::net::unix::pipe::Receiver::from_owned_fd(fd).map_err(io_err("log pipe"))?;
        Ok(tokio::spawn(async move {
            let mut buf = vec![0u8; READ_SIZE];
            loop {
                match pipe.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        let chunk = LogChunk {
                            stream: stream as i32,
                            data: buf[..n].to_vec(),
                            time_ns: now_ns(),
                        };
                        if tx.send(chunk).await.is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "log pipe read failed");
                        break;
                    }
                }
            }
        }))
    }

    /// No more readers will be added: the stream ends once they are done.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// A stream of the backlog; waits for an earlier stream to go away.
    pub fn stream(&self) -> BoxStream<LogChunk> {
        let shared = self.rx.clone();
        let (out_tx, out_rx) = mpsc::channel::<Result<LogChunk, Status>>(4);
        tokio::spawn(async move {
            let mut guard = tokio::select! {
                g = shared.lock_owned() => g,
                () = out_tx.closed() => return,
            };
            let (rx, pending) = &mut *guard;
            loop {
                let chunk = match pending.take() {
                    Some(c) => c,
                    None => tokio::select! {
                        c = rx.recv() => match c {
                            Some(c) => c,
                            None => return,
                        },
                        () = out_tx.closed() => return,
                    },
                };
                if let Err(mpsc::error::SendError(Ok(c))) = out_tx.send(Ok(chunk)).await {
                    *pending = Some(c);
                    return;
                }
            }
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(out_rx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio_stream::StreamExt;

    #[tokio::test]
    async fn chunks_survive_a_reader_that_leaves() {
        let q = LogQueue::new();
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let reader = q.read_pipe(r, STDOUT).unwrap();
        let mut w = std::fs::File::from(w);
        w.write_all(b"one\n").unwrap();
        let mut s = q.stream();
        let c = s.next().await.unwrap().unwrap();
        assert_eq!(c.data, b"one\n");
        drop(s);
        w.write_all(b"two\n").unwrap();
        drop(w);
        reader.await.unwrap();
        q.close();
        let all: Vec<u8> = q
            .stream()
            .map(|c| c.unwrap().data)
            .collect::<Vec<_>>()
            .await
            .concat();
        assert_eq!(all, b"two\n");
    }
}

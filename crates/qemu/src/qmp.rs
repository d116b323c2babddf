//! A typed QMP client (QEMU Machine Protocol, JSON lines over a unix
//! socket).
//!
//! QEMU is treated like the guest: every read is bounded ([`MAX_LINE`]),
//! every call has a deadline, and a reply that is not what QMP promises is
//! an error, never a panic. Asynchronous events interleaved with replies
//! are skipped (the last few are kept for error messages).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::time::{timeout_at, Instant};

/// Longest QMP line accepted (replies here are small; `query-*` of a
/// microvm are a few KiB).
pub const MAX_LINE: usize = 256 * 1024;

/// How many events are kept for diagnostics.
const KEEP_EVENTS: usize = 8;

/// Errors of the QMP client.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be connected to.
    #[error("cannot connect to QMP socket {}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file to hand to QEMU could not be opened.
    #[error("cannot open {} for QEMU", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing failed.
    #[error("QMP i/o")]
    Io(#[from] std::io::Error),
    /// QEMU closed the connection (it exits, or quit was accepted).
    #[error("QEMU closed the QMP connection")]
    Closed,
    /// No reply in time.
    #[error("QMP {what} took longer than {after:?}")]
    Timeout {
        /// The command (or `greeting`).
        what: String,
        /// The deadline.
        after: Duration,
    },
    /// A line longer than [`MAX_LINE`].
    #[error("QMP line longer than {MAX_LINE} bytes")]
    LineTooLong,
    /// A line that is not the JSON QMP promises.
    #[error("bad QMP message: {0}")]
    Protocol(String),
    /// QEMU refused the command.
    #[error("QMP {command} failed: {class}: {desc}")]
    Command {
        /// The command.
        command: String,
        /// QEMU's error class, e.g. `GenericError`.
        class: String,
        /// QEMU's message.
        desc: String,
    },
}

/// One QMP command as the line sent.
fn command_line(command: &str, arguments: Option<Value>) -> String {
    let mut msg = json!({ "execute": command });
    if let Some(a) = arguments {
        msg["arguments"] = a;
    }
    let mut line = msg.to_string();
    line.push('\n');
    line
}

#[derive(Deserialize)]
struct ErrorBody {
    class: String,
    desc: String,
}

/// A connected, capabilities-negotiated QMP session.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Events seen while waiting for replies (most recent last).
    events: Vec<Value>,
}

impl Qmp {
    /// Connects, reads the greeting and leaves negotiation mode, within
    /// `deadline`.
    pub async fn connect(path: &Path, deadline: Duration) -> Result<Qmp, QmpError> {
        let end = Instant::now() + deadline;
        let stream = timeout_at(end, UnixStream::connect(path))
            .await
            .map_err(|_| QmpError::Timeout {
                what: "connect".into(),
                after: deadline,
            })?
            .map_err(|source| QmpError::Connect {
                path: path.to_owned(),
                source,
            })?;
        let (r, w) = stream.into_split();
        let mut qmp = Qmp {
            reader: BufReader::with_capacity(16 * 1024, r),
            writer: w,
            events: Vec::new(),
        };
        let greeting = qmp.read_message(end, "greeting", deadline).await?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!(
                "expected the greeting, got {}",
                truncate(&greeting.to_string())
            )));
        }
        qmp.execute_until("qmp_capabilities", None, end, deadline)
            .await?;
        Ok(qmp)
    }

    /// Runs `command` with `arguments`; returns QEMU's `return` value.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        self.execute_until(command, arguments, Instant::now() + timeout, timeout)
            .await
    }

    async fn execute_until(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        end: Instant,
        after: Duration,
    ) -> Result<Value, QmpError> {
        let line = command_line(command, arguments);
        timeout_at(end, self.writer.write_all(line.as_bytes()))
            .await
            .map_err(|_| QmpError::Timeout {
                what: command.to_owned(),
                after,
            })??;
        self.reply(command, end, after).await
    }

    /// Reads up to the reply of `command`, keeping the events on the way.
    async fn reply(
        &mut self,
        command: &str,
        end: Instant,
        after: Duration,
    ) -> Result<Value, QmpError> {
        loop {
            let m = self.read_message(end, command, after).await?;
            if let Some(r) = m.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = m.get("error") {
                let e: ErrorBody = serde_json::from_value(e.clone())
                    .map_err(|e| QmpError::Protocol(e.to_string()))?;
                return Err(QmpError::Command {
                    command: command.to_owned(),
                    class: e.class,
                    desc: e.desc,
                });
            }
            if m.get("event").is_some() {
                if self.events.len() == KEEP_EVENTS {
                    self.events.remove(0);
                }
                self.events.push(m);
                continue;
            }
            return Err(QmpError::Protocol(format!(
                "unexpected message {}",
                truncate(&m.to_string())
            )));
        }
    }

    async fn read_message(
        &mut self,
        end: Instant,
        what: &str,
        after: Duration,
    ) -> Result<Value, QmpError> {
        let line = timeout_at(end, read_bounded_line(&mut self.reader))
            .await
            .map_err(|_| QmpError::Timeout {
                what: what.to_owned(),
                after,
            })??;
        serde_json::from_slice(&line).map_err(|e| QmpError::Protocol(e.to_string()))
    }

    /// Events seen so far (at most the last few).
    pub fn events(&self) -> &[Value] {
        &self.events
    }

    /// `query-status`: the run state, e.g. `running`, `paused`,
    /// `guest-panicked`.
    pub async fn status(&mut self, timeout: Duration) -> Result<String, QmpError> {
        let r = self.execute("query-status", None, timeout).await?;
        r.get("status")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| QmpError::Protocol("query-status without status".into()))
    }

    /// `quit`: QEMU exits at once (the guest gets no say). A connection
    /// closed before the reply counts as success.
    pub async fn quit(&mut self, timeout: Duration) -> Result<(), QmpError> {
        match self.execute("quit", None, timeout).await {
            Ok(_) | Err(QmpError::Closed) => Ok(()),
            Err(QmpError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `add-fd`: hands `fd` to QEMU (SCM_RIGHTS with the command) in a new
    /// fd set; returns the set's id (`/dev/fdset/<id>` opens it). A QEMU
    /// that dropped its privileges can use files it could not open.
    pub async fn add_fd(&mut self, fd: BorrowedFd<'_>, timeout: Duration) -> Result<u64, QmpError> {
        let end = Instant::now() + timeout;
        let line = command_line("add-fd", None);
        let sock = self.writer.as_ref();
        let sent = timeout_at(end, async {
            loop {
                sock.writable().await?;
                let res = sock.try_io(tokio::io::Interest::WRITABLE, || {
                    let iov = [std::io::IoSlice::new(line.as_bytes())];
                    let fds = [fd.as_raw_fd()];
                    let cmsg = [ControlMessage::ScmRights(&fds)];
                    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
                        .map_err(std::io::Error::from)
                });
                match res {
                    Ok(n) => return Ok::<usize, std::io::Error>(n),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
        })
        .await
        .map_err(|_| QmpError::Timeout {
            what: "add-fd".into(),
            after: timeout,
        })??;
        if sent != line.len() {
            return Err(QmpError::Protocol(format!(
                "add-fd: sent {sent} of {} bytes",
                line.len()
            )));
        }
        let r = self.reply("add-fd", end, timeout).await?;
        r.get("fdset-id")
            .and_then(Value::as_u64)
            .ok_or_else(|| QmpError::Protocol(format!("add-fd returned {r}")))
    }

    /// `blockdev-add` of a raw file: a `file` node `<id>-file` and a `raw`
    /// node `<id>` on top. The file is opened here (read-only or
    /// read-write) and passed to QEMU as an fd, so that a QEMU running as
    /// an unprivileged uid needs no access to it.
    pub async fn add_raw_file(
        &mut self,
        id: &str,
        path: &Path,
        read_only: bool,
        timeout: Duration,
    ) -> Result<(), QmpError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|source| QmpError::Open {
                path: path.to_owned(),
                source,
            })?;
        let fdset = self.add_fd(file.as_fd(), timeout).await?;
        let args = json!({
            "driver": "raw",
            "node-name": id,
            "read-only": read_only,
            "file": {
                "driver": "file",
                "node-name": format!("{id}-file"),
                "filename": format!("/dev/fdset/{fdset}"),
                "read-only": read_only,
            }
        });
        self.execute("blockdev-add", Some(args), timeout).await?;
        Ok(())
    }

    /// `device_add` with the given properties (must include `driver`, `id`).
    pub async fn device_add(&mut self, props: Value, timeout: Duration) -> Result<(), QmpError> {
        self.execute("device_add", Some(props), timeout).await?;
        Ok(())
    }

    /// `device_del`: asks the guest to release the device (PCIe hot-unplug
    /// completes asynchronously).
    pub async fn device_del(&mut self, id: &str, timeout: Duration) -> Result<(), QmpError> {
        self.execute("device_del", Some(json!({ "id": id })), timeout)
            .await?;
        Ok(())
    }

    /// `blockdev-del` of a node.
    pub async fn blockdev_del(&mut self, node: &str, timeout: Duration) -> Result<(), QmpError> {
        self.execute("blockdev-del", Some(json!({ "node-name": node })), timeout)
            .await?;
        Ok(())
    }

    /// Whether the guest driver of virtio device `id` (added with
    /// `device_add`) has set DRIVER_OK (`x-query-virtio-status`).
    pub async fn virtio_driver_ok(
        &mut self,
        id: &str,
        timeout: Duration,
    ) -> Result<bool, QmpError> {
        let r = self
            .execute(
                "x-query-virtio-status",
                Some(json!({ "path": format!("/machine/peripheral/{id}/virtio-backend") })),
                timeout,
            )
            .await?;
        Ok(r.get("status")
            .is_some_and(|s| s.to_string().contains("DRIVER_OK")))
    }
}

/// Reads one `\n`-terminated line of at most [`MAX_LINE`] bytes, without
/// the newline. EOF before any byte is [`QmpError::Closed`].
pub async fn read_bounded_line<R>(reader: &mut R) -> Result<Vec<u8>, QmpError>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    let mut line = Vec::new();
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Err(if line.is_empty() {
                QmpError::Closed
            } else {
                QmpError::Protocol("connection closed mid-line".into())
            });
        }
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > MAX_LINE + 1 {
            return Err(QmpError::LineTooLong);
        }
        line.extend_from_slice(&buf[..take]);
        reader.consume(take);
        if done {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(line);
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A fake QEMU: greets, then answers each line with the next reply.
    async fn fake(replies: Vec<&'static str>) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .await
                .unwrap();
            for reply in replies {
                let mut l = String::new();
                if r.read_line(&mut l).await.unwrap() == 0 {
                    return;
                }
                w.write_all(reply.as_bytes()).await.unwrap();
            }
            // Keep the connection open, silently, until the client is done.
            let mut l = String::new();
            while r.read_line(&mut l).await.is_ok_and(|n| n > 0) {}
        });
        (dir, path)
    }

    #[tokio::test]
    async fn negotiates_skips_events_and_returns_values() {
        let (_d, path) = fake(vec![
            "{\"return\": {}}\n",
            "{\"event\": \"RESUME\", \"timestamp\": {}}\n{\"return\": {\"status\": \"running\", \"running\": true}}\n",
        ])
        .await;
        let mut q = Qmp::connect(&path, Duration::from_secs(2)).await.unwrap();
        assert_eq!(q.status(Duration::from_secs(2)).await.unwrap(), "running");
        assert_eq!(q.events().len(), 1);
    }

    #[tokio::test]
    async fn errors_keep_qemus_class_and_text() {
        let (d, path) = fake(vec![
            "{\"return\": {}}\n",
            "{\"return\": {\"fdset-id\": 0, \"fd\": 9}}\n",
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"Duplicate node name\"}}\n",
        ])
        .await;
        let file = d.path().join("disk.img");
        std::fs::write(&file, b"").unwrap();
        let mut q = Qmp::connect(&path, Duration::from_secs(2)).await.unwrap();
        let err = q
            .add_raw_file("d", &file, true, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "QMP blockdev-add failed: GenericError: Duplicate node name"
        );
        // A file that cannot be opened never reaches QEMU.
        let err = q
            .add_raw_file(
                "e",
                Path::new("/nonexistent/x"),
                true,
                Duration::from_secs(2),
            )
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "cannot open /nonexistent/x for QEMU");
    }

    #[tokio::test]
    async fn a_silent_qemu_times_out() {
        let (_d, path) = fake(vec!["{\"return\": {}}\n"]).await;
        let mut q = Qmp::connect(&path, Duration::from_secs(2)).await.unwrap();
        let err = q
            .execute("query-status", None, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(err, QmpError::Timeout { .. }), "{err}");
    }

    #[tokio::test]
    async fn lines_are_bounded() {
        let long = vec![b'a'; MAX_LINE + 10];
        let mut r = BufReader::new(&long[..]);
        assert!(matches!(
            read_bounded_line(&mut r).await,
            Err(QmpError::LineTooLong)
        ));
        let mut r = BufReader::new(&b"{}\r\n"[..]);
        assert_eq!(read_bounded_line(&mut r).await.unwrap(), b"{}");
        assert!(matches!(
            read_bounded_line(&mut r).await,
            Err(QmpError::Closed)
        ));
    }
}

//! Firecracker's log and metrics through FIFOs that a task drains, so
//! nothing grows without bound on disk. Lines longer than [`MAX_LINE`] are
//! cut.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;

use crate::error::{FirecrackerError, Result};

/// Longest line forwarded; the rest of a longer line is dropped.
pub const MAX_LINE: usize = 64 << 10;

/// What a FIFO carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FifoKind {
    /// Human-readable log lines (`PUT /logger`), forwarded at info level.
    Log,
    /// JSON metrics lines (`PUT /metrics`), forwarded at trace level.
    Metrics,
}

/// Creates the FIFO at `path` (mode 0600, owned by `owner` when given) and
/// spawns a task forwarding its lines to `tracing`. The FIFO is opened
/// read-write so neither side blocks and the reader never sees EOF while
/// Firecracker reopens it.
pub fn create_and_drain(
    path: &Path,
    owner: Option<(u32, u32)>,
    vm: String,
    kind: FifoKind,
) -> Result<JoinHandle<()>> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| FirecrackerError::io("mkfifo", path)(e.into()))?;
    if let Some((uid, gid)) = owner {
        nix::unistd::chown(path, Some(uid.into()), Some(gid.into()))
            .map_err(|e| FirecrackerError::io("chown", path)(e.into()))?;
    }
    let rx = tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(path)
        .map_err(FirecrackerError::io("open fifo", path))?;
    Ok(tokio::spawn(drain_lines(rx, forward(path, vm, kind))))
}

/// Where the latest metrics line of the metrics FIFO `fifo` is kept: a
/// file next to it (`metrics.json`), replaced at every line.
pub fn latest_metrics(fifo: &Path) -> PathBuf {
    fifo.with_file_name("metrics.json")
}

/// What a drain does with each line of the FIFO at `path`: log lines go to
/// `tracing`; a metrics line also replaces [`latest_metrics`] (by rename,
/// so a reader never sees half a line).
pub fn forward(path: &Path, vm: String, kind: FifoKind) -> impl FnMut(&str) + Send + 'static {
    let latest = latest_metrics(path);
    let tmp = latest.with_extension("json.tmp");
    move |line| match kind {
        FifoKind::Log => tracing::info!(target: "firecracker", vm = %vm, "{line}"),
        FifoKind::Metrics => {
            tracing::trace!(target: "firecracker::metrics", vm = %vm, "{line}");
            if let Err(e) = replace_file(&tmp, &latest, line) {
                tracing::debug!(vm = %vm, error = %e, "latest metrics not kept");
            }
        }
    }
}

/// Writes `data` to a new `tmp` and renames it over `target`. The
/// directory may be the VM's (a jail): `tmp` is created exclusively and
/// never followed if it is a link, and the rename replaces `target`
/// itself, never what it points to.
fn replace_file(tmp: &Path, target: &Path, data: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(tmp)?;
    f.write_all(data.as_bytes())?;
    std::fs::rename(tmp, target)
}

/// The latest metrics line the drain of the metrics FIFO `fifo` kept, as
/// JSON; `None` when there is none yet (or it is not a regular file of
/// at most [`MAX_LINE`] bytes of JSON).
pub fn read_latest_metrics(fifo: &Path) -> Option<serde_json::Value> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(latest_metrics(fifo))
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut data = Vec::new();
    f.take(MAX_LINE as u64 + 1).read_to_end(&mut data).ok()?;
    if data.len() > MAX_LINE {
        return None;
    }
    serde_json::from_slice(&data).ok()
}

/// Reads `r` to EOF, calling `f` for every line (without the newline),
/// holding at most [`MAX_LINE`] bytes of a line in memory.
pub async fn drain_lines(mut r: impl AsyncRead + Unpin, mut f: impl FnMut(&str)) {
    let mut line: Vec<u8> = Vec::new();
    let mut overflow = false;
    let mut buf = [0u8; 8192];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for chunk in buf[..n].split_inclusive(|b| *b == b'\n') {
            let (body, ends) = match chunk.strip_suffix(b"\n") {
                Some(b) => (b, true),
                None => (chunk, false),
            };
            let room = MAX_LINE.saturating_sub(line.len());
            line.extend_from_slice(&body[..body.len().min(room)]);
            overflow |= body.len() > room;
            if ends {
                let mut s = String::from_utf8_lossy(&line).into_owned();
                if overflow {
                    s.push_str(" [truncated]");
                }
                f(&s);
                line.clear();
                overflow = false;
            }
        }
    }
    if !line.is_empty() {
        f(&String::from_utf8_lossy(&line));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn splits_lines_and_caps_long_ones() {
        let mut input = b"first\nsecond\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE + 100));
        input.extend_from_slice(b"\nlast");
        let mut got = Vec::new();
        drain_lines(&input[..], |l| got.push(l.to_string())).await;
        assert_eq!(got.len(), 4);
        assert_eq!(
            (got[0].as_str(), got[1].as_str(), got[3].as_str()),
            ("first", "second", "last")
        );
        assert!(got[2].ends_with(" [truncated]"));
        assert_eq!(got[2].len(), MAX_LINE + " [truncated]".len());
    }

    #[tokio::test]
    async fn the_latest_metrics_line_is_kept_beside_the_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("metrics.fifo");
        assert_eq!(read_latest_metrics(&fifo), None);
        let mut f = forward(&fifo, "t".into(), FifoKind::Metrics);
        f(r#"{"api_server":{"process_startup_time_us":5}}"#);
        f(r#"{"api_server":{"process_startup_time_us":7}}"#);
        let v = read_latest_metrics(&fifo).unwrap();
        assert_eq!(v["api_server"]["process_startup_time_us"], 7);
        // A link planted where the temp file goes is not written through.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("metrics.json.tmp")).unwrap();
        f(r#"{"x":1}"#);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        // Nor is a link at the kept file read.
        std::fs::remove_file(latest_metrics(&fifo)).unwrap();
        std::os::unix::fs::symlink(&victim, latest_metrics(&fifo)).unwrap();
        assert_eq!(read_latest_metrics(&fifo), None);
    }

    #[tokio::test]
    async fn fifo_is_created_and_drained() {
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.fifo");
        let task = create_and_drain(&path, None, "t".into(), FifoKind::Log).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(&meta.file_type()));
        // A writer that opens, writes and closes does not end the drain.
        for _ in 0..2 {
            let mut tx = tokio::net::unix::pipe::OpenOptions::new()
                .open_sender(&path)
                .unwrap();
            tx.write_all(b"hello\n").await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!task.is_finished());
        task.abort();
    }
}

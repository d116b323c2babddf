//! `ExecSync`: a command in a running container's pid and mount
//! namespaces (through the `container-exec` helper), its output capped per
//! stream, killed at the timeout.

use std::os::fd::OwnedFd;
use std::time::Duration;

use hearth_agent_proto::v1::{
    exec_sync_chunk::Chunk, ExecSyncChunk, ExecSyncExit, ExecSyncRequest,
};
use hearth_agent_proto::{MAX_CHUNK_BYTES, MAX_EXEC_OUTPUT_BYTES};
use nix::sys::signal::{kill, Signal};
use tokio::io::AsyncReadExt;

use super::{
    dev_null, helper, io_err, pipe, read_helper_error, spawn, user_args, validate_process,
    ContainerError, Containers,
};
use crate::reaper::ExitStatus;

/// How long output is still read after the process ended (a background
/// child may hold the pipes open).
const DRAIN: Duration = Duration::from_secs(1);

/// Numbers the exec spec files.
static EXEC_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What an exec produced.
#[derive(Debug, Default)]
pub struct ExecOutput {
    /// stdout, at most the cap.
    pub stdout: Vec<u8>,
    /// stderr, at most the cap.
    pub stderr: Vec<u8>,
    /// Exit code (128 + signal when killed).
    pub exit_code: i32,
    /// Killed at the timeout.
    pub timed_out: bool,
}

impl ExecOutput {
    /// As the stream's messages: chunks, then the exit.
    pub fn into_chunks(self) -> Vec<ExecSyncChunk> {
        let mut out = Vec::new();
        for c in self.stdout.chunks(MAX_CHUNK_BYTES) {
            out.push(ExecSyncChunk {
                chunk: Some(Chunk::Stdout(c.to_vec())),
            });
        }
        for c in self.stderr.chunks(MAX_CHUNK_BYTES) {
            out.push(ExecSyncChunk {
                chunk: Some(Chunk::Stderr(c.to_vec())),
            });
        }
        out.push(ExecSyncChunk {
            chunk: Some(Chunk::Exit(ExecSyncExit {
                exit_code: self.exit_code,
                timed_out: self.timed_out,
            })),
        });
        out
    }
}

async fn read_capped(fd: OwnedFd, cap: usize) -> Vec<u8> {
    let Ok(mut pipe) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => {
                let room = cap.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

impl Containers {
    /// Runs `req` in its container.
    pub async fn exec_sync(&self, req: ExecSyncRequest) -> Result<ExecOutput, ContainerError> {
        let c = self.get(&req.container_id)?;
        let mut process = req.process.clone().unwrap_or_default();
        validate_process(&process, false)?;
        let pid = c.running_pid().ok_or_else(|| ContainerError::State {
            id: req.container_id.clone(),
            state: "not running",
        })?;
        if process.cwd.is_empty() {
            process.cwd = c.process().cwd.clone();
        }
        if process.user.is_none() {
            process.user = c.process().user.clone();
        }
        if process.env.is_empty() {
            process.env = c.process().env.clone();
        }
        let cap = req.max_output_bytes.min(MAX_EXEC_OUTPUT_BYTES) as usize;
        let spec = helper::ExecSpec {
            pid,
            process: c.exec_spec(
                process.args.clone(),
                process.cwd.clone(),
                user_args(&process),
            ),
        };
        let spec_path = c.run_dir().join(format!(
            "exec-{}.json",
            EXEC_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        helper::write_spec(&spec_path, &spec)
            .map_err(io_err(format!("cannot write {}", spec_path.display())))?;
        let args = helper::exec_args(&spec_path);
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (fail_r, fail_w) = pipe()?;
        let null = dev_null()?;
        let reaper = self.reaper().clone();
        let env = process.env.clone();
        let (helper_pid, waiter, failure) = tokio::task::spawn_blocking(move || {
            let fds = spawn::ChildFds {
                stdin: &null,
                stdout: &out_w,
                stderr: &err_w,
                error: &fail_w,
            };
            let (pid, waiter) = reaper
                .spawn_watched(|| spawn::clone_helper(0, &args, &env, &fds))
                .map_err(|e| io_err("clone")(std::io::Error::other(e)))?;
            drop((null, out_w, err_w, fail_w));
            let failure = read_helper_error(fail_r);
            // The helper has read its spec (it exec'd or failed).
            let _ = std::fs::remove_file(&spec_path);
            Ok::<_, ContainerError>((pid, waiter, failure))
        })
        .await
        .map_err(|e| io_err("exec task")(std::io::Error::other(e)))??;
        let stdout = tokio::spawn(read_capped(out_r, cap));
        let stderr = tokio::spawn(read_capped(err_r, cap));
        if !failure.is_empty() {
            let _ = waiter.await;
            return Err(ContainerError::Start {
                id: req.container_id,
                message: failure,
            });
        }
        let timeout = match req.timeout_ms {
            0 => None,
            ms => Some(Duration::from_millis(u64::from(ms))),
        };
        let mut waiter = waiter;
        let (status, timed_out) = match timeout {
            None => (waiter.await.ok(), false),
            Some(t) => match tokio::time::timeout(t, &mut waiter).await {
                Ok(s) => (s.ok(), false),
                Err(_) => {
                    // The command dies with the helper (PDEATHSIG).
                    let _ = kill(helper_pid, Signal::SIGKILL);
                    (waiter.await.ok(), true)
                }
            },
        };
        let mut output = ExecOutput {
            exit_code: status.unwrap_or(ExitStatus::Signaled(9)).code(),
            timed_out,
            ..Default::default()
        };
        if let Ok(Ok(o)) = tokio::time::timeout(DRAIN, stdout).await {
            output.stdout = o;
        }
        if let Ok(Ok(e)) = tokio::time::timeout(DRAIN, stderr).await {
            output.stderr = e;
        }
        Ok(output)
    }
}

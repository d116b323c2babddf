//! Running one CNI plugin binary: environment, stdin, time limit, bounded
//! output, and the CNI error object on failure.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::result::CniErrorReply;
use crate::error::NetworkError;

/// Most bytes read from a plugin's stdout (results are a few KiB).
const MAX_STDOUT: u64 = 1 << 20;
/// Most bytes of stderr kept for error messages.
const MAX_STDERR: u64 = 4096;

/// `CNI_COMMAND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    Add,
    Del,
}

impl Command {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
        }
    }
}

/// Everything one invocation needs besides the stdin config.
pub(crate) struct Invocation<'a> {
    pub command: Command,
    pub container_id: &'a str,
    /// `CNI_NETNS`; empty when the namespace is gone (DEL only).
    pub netns: &'a str,
    pub ifname: &'a str,
    pub args: &'a str,
    pub bin_dirs: &'a [PathBuf],
    pub timeout: Duration,
}

/// Finds plugin `plugin_type` in the first bin dir that has it as an
/// executable file.
pub(crate) fn find_plugin(bin_dirs: &[PathBuf], plugin_type: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    bin_dirs.iter().map(|d| d.join(plugin_type)).find(|p| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

fn search_path(bin_dirs: &[PathBuf]) -> String {
    bin_dirs
        .iter()
        .map(|d| d.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

/// `PATH` for the plugin: ours, plus the sbin dirs plugins such as portmap
/// need for `iptables`.
fn plugin_path_env() -> String {
    let mut path = std::env::var("PATH").unwrap_or_default();
    for dir in ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        if !path.split(':').any(|p| p == dir) {
            if !path.is_empty() {
                path.push(':');
            }
            path.push_str(dir);
        }
    }
    path
}

/// Runs plugin `plugin_type`; on success returns its path and stdout.
pub(crate) async fn run_plugin(
    inv: &Invocation<'_>,
    plugin_type: &str,
    stdin: Vec<u8>,
) -> Result<(PathBuf, Vec<u8>), NetworkError> {
    let command = inv.command.as_str();
    let bin =
        find_plugin(inv.bin_dirs, plugin_type).ok_or_else(|| NetworkError::PluginNotFound {
            plugin: plugin_type.to_string(),
            path: search_path(inv.bin_dirs),
        })?;
    tracing::debug!(plugin = %bin.display(), command, container_id = inv.container_id,
        "running CNI plugin");
    let mut child = tokio::process::Command::new(&bin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_ARGS", inv.args)
        .env("CNI_PATH", search_path(inv.bin_dirs))
        .env("PATH", plugin_path_env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Own process group, so a timeout kills what the plugin started too.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| NetworkError::PluginSpawn {
            plugin: bin.clone(),
            source: e,
        })?;
    // Kills the plugin's process group if this future is dropped (timeout
    // or cancellation) before the plugin was reaped.
    let mut group = GroupGuard(child.id());
    let pid = group.0;
    let (mut cin, cout, cerr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());

    let work = async {
        let feed = async {
            if let Some(cin) = cin.as_mut() {
                // A plugin may exit without reading stdin: not our error.
                let _ = cin.write_all(&stdin).await;
            }
            drop(cin);
        };
        let read_out = read_bounded(cout, MAX_STDOUT + 1);
        let read_err = read_bounded(cerr, MAX_STDERR);
        let ((), out, err) = tokio::join!(feed, read_out, read_err);
        if out.len() as u64 > MAX_STDOUT {
            // It may be blocked writing more: stop it rather than wait.
            kill_group(pid);
        }
        let status = child.wait().await;
        (status, out, err)
    };
    let (status, out, err) = match tokio::time::timeout(inv.timeout, work).await {
        Ok(done) => {
            group.disarm();
            done
        }
        Err(_) => {
            // `group` kills the process group on return.
            return Err(NetworkError::PluginTimeout {
                plugin: bin,
                command,
                timeout: inv.timeout,
            });
        }
    };
    let status = status.map_err(|e| NetworkError::PluginSpawn {
        plugin: bin.clone(),
        source: e,
    })?;
    if out.len() as u64 > MAX_STDOUT {
        return Err(NetworkError::MalformedResult {
            plugin: bin,
            reason: format!("more than {MAX_STDOUT} bytes of output"),
        });
    }
    if status.success() {
        return Ok((bin, out));
    }
    let stderr = String::from_utf8_lossy(&err).trim().to_string();
    match serde_json::from_slice::<CniErrorReply>(&out) {
        Ok(reply) => Err(NetworkError::PluginFailed {
            plugin: bin,
            command,
            code: reply.code,
            msg: reply.msg,
            details: reply.details,
        }),
        Err(_) => Err(NetworkError::PluginExit {
            plugin: bin,
            command,
            status: status.to_string(),
            stderr,
        }),
    }
}

async fn read_bounded<R: tokio::io::AsyncRead + Unpin>(r: Option<R>, limit: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(r) = r {
        let _ = r.take(limit).read_to_end(&mut buf).await;
    }
    buf
}

/// Kills a plugin's process group on drop unless disarmed (after the
/// plugin was reaped: its pid may be reused from then on).
struct GroupGuard(Option<u32>);

impl GroupGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.0);
    }
}

fn kill_group(pid: Option<u32>) {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    // The child is the leader of its own group (process_group(0)).
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Whether every plugin of the chain is present (for NetworkReady).
pub(crate) fn missing_plugins<'a>(bin_dirs: &[PathBuf], types: &[&'a str]) -> Vec<&'a str> {
    types
        .iter()
        .copied()
        .filter(|t| find_plugin(bin_dirs, t).is_none())
        .collect()
}

/// Human-readable search path, for messages.
pub(crate) fn describe_dirs(bin_dirs: &[PathBuf]) -> String {
    search_path(bin_dirs)
}

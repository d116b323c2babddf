//! Fakes and fixtures for Hearth's tests (a dev-dependency only).
//!
//! Layout:
//! - [`fake_agent`]: an in-process agent server behind the hybrid-vsock
//!   handshake, that behaves well, answers garbage, or hangs.
//! - [`fake_backend`] / [`fake_network`]: the effect traits' fakes.
//! - [`leaks`]: snapshots of mounts, loop devices, netns, links,
//!   processes and fds, compared before and after a test.
//! - [`agent_binary`]: where the static agent is, for tests that run it.
#![warn(missing_docs)]

pub mod fake_agent;
pub mod fake_backend;
pub mod fake_network;
pub mod leaks;

/// A CRI client channel over a unix socket.
pub async fn cri_channel(
    socket: &std::path::Path,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let socket = socket.to_owned();
    tonic::transport::Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
}

use std::path::PathBuf;
use std::process::Command;

/// Whether the tests run as root (most real-part tests need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The static hearth-agent the tests run: `HEARTH_AGENT_BIN`, else built
/// with scripts/build-agent.sh (once per test binary).
pub fn agent_binary() -> Result<PathBuf, String> {
    static BIN: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("HEARTH_AGENT_BIN") {
            return Ok(PathBuf::from(p));
        }
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-agent.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    })
    .clone()
}

/// Prints why a test skips and returns true when it must.
pub fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        false
    } else {
        eprintln!("{test}: skipped: needs root (namespaces, mounts, loop devices)");
        true
    }
}

/// Writes an executable script. The file is written by a child process: a
/// file this (multi-threaded) test process held open for writing could be
/// inherited by a concurrent fork and make its exec fail with ETXTBSY.
pub fn write_executable(path: &std::path::Path, content: &str) {
    use std::io::Write;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("cat > \"$1\" && chmod 755 \"$1\"")
        .arg("sh")
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sh");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(content.as_bytes())
        .expect("writing the script");
    assert!(
        child.wait().expect("sh").success(),
        "writing {}",
        path.display()
    );
}

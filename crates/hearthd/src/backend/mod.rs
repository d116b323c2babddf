//! Sandbox backends built into hearthd.
//!
//! - [`namespaces`]: the agent in fresh namespaces on the host.
//! - [`firecracker`]: a jailed Firecracker microVM per pod.
//! - [`qemu`]: a QEMU microvm per pod.
//! - [`loopdev`]: loop devices, the namespaces backend's drives.
//! - [`process`]: pid liveness and reaping of agents hearthd adopted.

pub mod firecracker;
pub mod loopdev;
pub mod namespaces;
pub mod process;
pub mod qemu;

use std::path::Path;
use std::time::{Duration, Instant};

use hearth_agent_proto::AGENT_PORT;
use hearth_runtime::agent::AgentClient;
use hearth_runtime::backend::BackendError;

/// What a backend sees of its guest between two connection attempts.
pub(crate) enum GuestState {
    /// The guest (or its VMM, or the agent process) is gone: stop waiting.
    Gone(String),
    /// Still starting; the string says what is awaited.
    NotYet(String),
    /// Worth a connection attempt.
    Ready,
}

/// Connects to the agent behind the hybrid-vsock socket `socket`, trying
/// until `deadline` and giving up early when `probe` says the guest is
/// gone. At the deadline, `timed_out` gets the last reason and words the
/// error.
pub(crate) async fn connect_agent_until(
    socket: &Path,
    deadline: Duration,
    mut probe: impl FnMut() -> GuestState,
    timed_out: impl FnOnce(Option<String>) -> String,
) -> Result<AgentClient, BackendError> {
    let end = Instant::now() + deadline;
    let mut last: Option<String> = None;
    loop {
        let state = probe();
        if let GuestState::Gone(reason) = state {
            return Err(BackendError::AgentNotReady { reason });
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(BackendError::AgentNotReady {
                reason: timed_out(last),
            });
        }
        if let GuestState::NotYet(why) = state {
            last = Some(why);
        } else {
            match AgentClient::connect(socket, AGENT_PORT, left.min(Duration::from_secs(2))).await {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::trace!(error = %e, "agent not answering yet");
                    last = Some(crate::cri::status::chain(&e));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10).min(left)).await;
    }
}

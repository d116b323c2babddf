//! The protocol between hearthd (host) and hearth-agent (guest).
//!
//! Layout: `proto/agent.proto` is the contract; this crate holds the code
//! tonic generates from it and the constants both sides must agree on.
//! Transport (the hybrid-vsock handshake) lives with the host client in
//! `hearth-runtime` and with the server in `hearth-agent`.
#![forbid(unsafe_code)]
#![allow(missing_docs)] // generated code

/// Generated messages, client and server.
pub mod v1 {
    tonic::include_proto!("hearth.agent.v1");
}

/// Bumped on any change an older peer would misread. Both sides compare it
/// in `Hello` and refuse to go on when they differ.
pub const PROTOCOL_VERSION: u32 = 1;

/// The vsock port the agent listens on inside the guest.
pub const AGENT_PORT: u32 = 1024;

/// Largest gRPC message either side accepts (bounded before allocation).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Largest chunk of bytes in a streamed message (logs, exec output).
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;

/// Largest output per stream ExecSync returns (the CRI's cap).
pub const MAX_EXEC_OUTPUT_BYTES: u64 = 16 * 1024 * 1024;

//! hearth-agent: PID 1 of every Hearth pod, in a microVM or in the
//! namespaces backend's private pid namespace, serving the host's gRPC
//! protocol (`hearth-agent-proto`).
//!
//! Layout:
//! - [`cli`]: the command line (VM mode vs `namespaces`).
//! - [`init`]: start-up of each mode ([`init::vm`], [`init::namespaces`]).
//! - [`lifecycle`]: serve until shutdown, then tear down (both modes).
//! - [`listen`]: vsock / unix listeners and the accept loop.
//! - [`handshake`]: the server half of the hybrid-vsock handshake.
//! - [`server`]: the RPC handlers and the error → `Status` mapping.
//! - [`sandbox`]: hostname, /etc files, sysctls (`SetupSandbox`).
//! - [`drives`]: block devices (`MountDrive`, `UnmountDrive`).
//! - [`reaper`]: reaps every child; exit statuses for watched pids.
//! - [`container`]: containers (rootfs overlay, namespaces, exec, logs).
//! - [`volumes`]: the kubelet's volumes copied into the guest.
//! - [`net`]: the guest's network interfaces (VM mode).
//!
//! The binary (`main.rs`) only calls [`main`].
#![warn(missing_docs)]

pub mod cli;
pub mod container;
pub mod drives;
pub mod handshake;
pub mod init;
pub mod lifecycle;
pub mod listen;
pub mod net;
pub mod reaper;
pub mod sandbox;
pub mod server;
pub mod volumes;

use std::process::ExitCode;

use cli::Command;

/// Environment variable with the log filter (`info` by default).
pub const LOG_ENV: &str = "HEARTH_AGENT_LOG";

/// Logs to stderr (the console in a VM, hearthd's log file on the host).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(LOG_ENV)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    // The agent re-executes itself as a container's init or exec helper.
    container::helper::run_if_helper();
    let is_pid1 = std::process::id() == 1;
    let command = match cli::parse(std::env::args_os().skip(1).collect(), is_pid1) {
        Ok(c) => c,
        Err(err) => {
            eprintln!("hearth-agent: {err}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Vm => init::vm::main(),
        Command::Namespaces(args) => {
            init_logging();
            init::namespaces::main(args)
        }
        Command::Help => {
            print!("{}", cli::USAGE);
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("hearth-agent {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}

//! What both modes share after their start-up: serve until asked to stop,
//! then tear down (kill every other process, reap, unmount drives, sync).
//! Ending the process (exit or reboot) is the caller's.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::{getpid, Pid};
use thiserror::Error;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::drives::{DevPaths, Drives};
use crate::listen::{self, Listener};
use crate::reaper::{Reaper, ReaperError};
use crate::server::{self, AgentService, Mode};

/// How long open connections get to finish (the `Shutdown` reply among
/// them) once shutdown starts.
const DRAIN: Duration = Duration::from_secs(2);
/// How long the vsock transport gets to appear.
const VSOCK_PATIENCE: Duration = Duration::from_secs(3);
/// How long killed processes get to be reaped.
const REAP: Duration = Duration::from_secs(3);

/// Where to listen.
#[derive(Debug)]
pub enum ListenOn {
    /// `AF_VSOCK`, `VMADDR_CID_ANY:<port>` (VM mode).
    Vsock(u32),
    /// An inherited listening unix socket (namespaces mode).
    Unix(OwnedFd),
}

/// Errors that end the serving loop early.
#[derive(Debug, Error)]
pub enum LifecycleError {
    /// The async runtime could not start.
    #[error("cannot start the async runtime")]
    Runtime(#[source] io::Error),
    /// The listener could not be set up.
    #[error("cannot listen")]
    Listen(#[source] io::Error),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers")]
    Signals(#[source] io::Error),
    /// The reaper could not start.
    #[error(transparent)]
    Reaper(#[from] ReaperError),
    /// The gRPC server failed.
    #[error("server failed")]
    Serve(#[source] tonic::transport::Error),
}

/// The agent's long-lived parts.
pub struct Agent {
    mode: Mode,
    reaper: Reaper,
    drives: Arc<Drives>,
}

impl Agent {
    /// An agent for `mode` with nothing mounted.
    pub fn new(mode: Mode) -> Agent {
        Agent {
            mode,
            reaper: Reaper::new(),
            drives: Arc::new(Drives::new(DevPaths::default())),
        }
    }

    /// Serves until `Shutdown`, SIGINT or SIGTERM (Ctrl-Alt-Del arrives as
    /// SIGINT in a VM). Returns when it is time to tear down.
    pub fn serve(&self, listen: ListenOn) -> Result<(), LifecycleError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(4)
            .thread_keep_alive(Duration::from_secs(2))
            .build()
            .map_err(LifecycleError::Runtime)?;
        let res = rt.block_on(self.serve_async(listen));
        rt.shutdown_timeout(Duration::from_secs(1));
        res
    }

    async fn serve_async(&self, listen: ListenOn) -> Result<(), LifecycleError> {
        self.reaper.start()?;
        let (stop_tx, stop_rx) = watch::channel(false);

        let mut sigint = signal(SignalKind::interrupt()).map_err(LifecycleError::Signals)?;
        let mut sigterm = signal(SignalKind::terminate()).map_err(LifecycleError::Signals)?;
        let signal_tx = stop_tx.clone();
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = sigint.recv() => "SIGINT",
                _ = sigterm.recv() => "SIGTERM",
            };
            tracing::info!(signal = name, "shutting down");
            signal_tx.send_replace(true);
        });

        let listener = match listen {
            ListenOn::Vsock(port) => Listener::vsock(port, VSOCK_PATIENCE).await,
            ListenOn::Unix(fd) => Listener::from_unix(fd),
        }
        .map_err(LifecycleError::Listen)?;
        let service =
            AgentService::new(self.mode, self.drives.clone(), self.reaper.clone(), stop_tx);
        tracing::info!(mode = self.mode.as_str(), "agent serving");
        let server = server::serve(
            service,
            listen::incoming(listener),
            stopped(stop_rx.clone()),
        );
        tokio::pin!(server);
        tokio::select! {
            res = &mut server => res.map_err(LifecycleError::Serve),
            () = stopped(stop_rx) => match tokio::time::timeout(DRAIN, &mut server).await {
                Ok(res) => res.map_err(LifecycleError::Serve),
                Err(_) => {
                    tracing::warn!("connections still open after the drain time; going on");
                    Ok(())
                }
            },
        }
    }

    /// Tears down: kills every other process of the guest / pid namespace,
    /// reaps them, unmounts the drives and syncs. Blocking.
    pub fn teardown(&self) {
        if getpid() == Pid::from_raw(1) {
            // As PID 1, kill(-1) reaches every process of our pid namespace
            // (or the guest) but ourselves.
            match kill(Pid::from_raw(-1), Signal::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(err) => tracing::warn!(error = %err, "cannot kill the other processes"),
            }
        } else {
            // kill(-1) outside a private pid namespace would hit the host.
            tracing::warn!("not PID 1: leaving other processes alone");
        }
        if !self.reaper.reap_all_blocking(REAP) {
            tracing::warn!("some processes were not reaped in time");
        }
        self.drives.unmount_all();
        nix::unistd::sync();
        tracing::info!("teardown done");
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    // An error means every sender is gone: nobody can ask any more; stop.
    let _ = rx.wait_for(|stop| *stop).await;
}

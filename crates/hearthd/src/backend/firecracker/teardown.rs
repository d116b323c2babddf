//! Ending a VM: Ctrl-Alt-Del, then a checked SIGKILL; and adopting the
//! VMs a previous hearthd started (their log and metrics FIFOs).

use super::*;

impl FirecrackerBackend {
    pub(super) async fn wait_gone(h: &Handle, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while h.alive() {
            if Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Kills the VMM (after `grace` with Ctrl-Alt-Del first) and reaps it.
    pub(super) async fn terminate(&self, h: &Handle, grace: Duration) {
        if h.alive() && !grace.is_zero() {
            let c = h.client().with_timeout(grace.min(Duration::from_secs(1)));
            if let Err(e) = c.send_ctrl_alt_del().await {
                tracing::debug!(error = %e, "ctrl-alt-del not delivered");
            }
            Self::wait_gone(h, grace).await;
        }
        if h.alive() {
            host::kill_checked(h.pid, h.started);
            if !Self::wait_gone(h, Duration::from_secs(5)).await {
                tracing::warn!(pid = h.pid, "firecracker did not die after SIGKILL");
            }
        }
        if let Some(vm) = self.vms.lock().expect("vms lock").get_mut(&h.vm_id) {
            let _ = vm.try_exit();
        }
    }

    /// Re-opens the log and metrics FIFOs (next to the API socket) of a
    /// live VM this hearthd did not start, so Firecracker's writes keep a
    /// reader. Needs a tokio runtime; a no-op without one or when done.
    pub(super) fn adopt(&self, h: &Handle) {
        if self.vms.lock().expect("vms lock").contains_key(&h.vm_id) {
            return;
        }
        let mut adopted = self.adopted.lock().expect("adopted lock");
        if adopted.contains_key(&h.vm_id) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let _enter = rt.enter();
        let dir = h.api_socket.parent().unwrap_or(Path::new("/"));
        let mut tasks = Vec::new();
        for (name, kind) in [
            ("log.fifo", FifoKind::Log),
            ("metrics.fifo", FifoKind::Metrics),
        ] {
            let p = dir.join(name);
            let rx = match tokio::net::unix::pipe::OpenOptions::new()
                .read_write(true)
                .open_receiver(&p)
            {
                Ok(rx) => rx,
                Err(e) => {
                    tracing::debug!(pod_id = %h.vm_id, path = %p.display(), error = %e, "fifo not re-opened");
                    continue;
                }
            };
            tasks.push(rt.spawn(hearth_firecracker::fifo::drain_lines(
                rx,
                hearth_firecracker::fifo::forward(&p, h.vm_id.clone(), kind),
            )));
        }
        tracing::info!(pod_id = %h.vm_id, pid = h.pid, "adopted a running firecracker vm");
        adopted.insert(h.vm_id.clone(), tasks);
    }
}

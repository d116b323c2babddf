//! hearthd: Hearth's daemon. It serves the CRI (RuntimeService and
//! ImageService) on a unix socket over the core's typed API.
//!
//! Layout:
//! - [`config`]: the typed TOML config (`config.example.toml` documents it).
//! - [`cri`]: the CRI front end (convert, status mapping, services).
//! - [`backend`]: the sandbox backends built into this daemon.
//! - [`network`]: the pod network effect on the host.
//! - [`admin`]: Hearth's own admin service (pull progress, prune), served
//!   on the same socket.
//! - [`serve`] / [`build`]: what `main` (and the tests) call.
#![warn(missing_docs)]

pub mod admin;
pub mod backend;
pub mod config;
pub mod cri;
pub mod network;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hearth_runtime::backend::SandboxBackend;
use hearth_runtime::{ManagerConfig, SandboxManager};
use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::Config;

/// Largest CRI message accepted (the kubelet's own limit is 16 MiB).
pub const MAX_CRI_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// What `serve` serves: the sandbox manager and the image store.
#[derive(Clone)]
pub struct Runtime {
    /// Pod sandboxes.
    pub sandboxes: Arc<SandboxManager>,
    /// Images.
    pub images: Arc<hearth_image::ImageStore>,
    /// What may be mounted into containers (`[volumes]`).
    pub volumes: hearth_runtime::container::volumes::VolumePolicy,
}

/// Builds the core from the config: the image store, backends, network,
/// recovery of the sandboxes a previous hearthd left.
pub async fn build(config: &Config) -> anyhow::Result<Runtime> {
    let root = config.root.join("images");
    let registry = config.registry.clone();
    let images =
        tokio::task::spawn_blocking(move || hearth_image::ImageStore::open(&root, registry))
            .await??;
    Ok(Runtime {
        sandboxes: build_sandboxes(config).await?,
        images: Arc::new(images),
        volumes: config.volumes.clone(),
    })
}

async fn build_sandboxes(config: &Config) -> anyhow::Result<Arc<SandboxManager>> {
    let mut backends: Vec<Arc<dyn SandboxBackend>> =
        vec![Arc::new(backend::namespaces::NamespacesBackend::new(
            config.agent_binary(),
            config.namespaces.allow_privileged,
        ))];
    backends.extend(backend::firecracker::backends(config));
    backends.extend(backend::qemu::backends(config));
    let network = Arc::new(network::HostNetworks::new(
        config.network.netns_dir.clone(),
        config.network.cni_conf_dir.clone(),
        config.network.cni_bin_dirs.clone(),
        Duration::from_millis(config.network.cni_plugin_timeout_ms),
    ));
    let mgr_config = ManagerConfig {
        root: config.root.clone(),
        state: config.state.clone(),
        default_handler: config.default_runtime_handler.clone(),
        handlers: config
            .runtime_handlers
            .iter()
            .map(|(h, c)| (h.clone(), c.backend.clone()))
            .collect(),
        sizing: config.sizing.clone(),
        scratch_size_mib: config.scratch.size_mib,
        boot_timeout: Duration::from_millis(config.timeouts.boot_ms),
        stop_timeout: Duration::from_millis(config.timeouts.stop_ms),
        cgroup_root: config.cgroups.root.clone(),
        default_cgroup_parent: config.cgroups.default_parent.clone(),
        host_resolv_conf: "/etc/resolv.conf".into(),
    };
    Ok(SandboxManager::start(mgr_config, backends, network).await?)
}

/// Serves the CRI on `listener` until `shutdown` completes. Sandboxes keep
/// running when the server stops.
pub async fn serve(
    listener: UnixListener,
    runtime: Runtime,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let cri = cri::Cri::new(runtime.sandboxes, runtime.images, runtime.volumes);
    let admin = admin::server(&cri);
    let runtime = RuntimeServiceServer::from_arc(cri.clone())
        .max_decoding_message_size(MAX_CRI_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_CRI_MESSAGE_BYTES);
    let images = ImageServiceServer::from_arc(cri)
        .max_decoding_message_size(MAX_CRI_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_CRI_MESSAGE_BYTES);
    tonic::transport::Server::builder()
        .add_service(runtime)
        .add_service(images)
        .add_service(admin)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}

/// Binds the CRI socket, replacing a stale one left by a crash.
pub fn bind(path: &std::path::Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    Ok(UnixListener::bind(path)?)
}

//! The CRI front end: converts at the edge (`convert`), maps errors in one
//! place (`status`), and serves RuntimeService (`runtime`) and ImageService
//! (`image`) over the core's typed API.

pub mod container_convert;
pub mod convert;
mod image;
mod runtime;
pub mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hearth_runtime::{ContainerManager, SandboxManager};
use k8s_cri::v1 as cri;

pub use runtime::CRI_API_VERSION;

/// State shared by the CRI services.
pub struct Cri {
    /// The sandbox manager.
    pub sandboxes: Arc<SandboxManager>,
    /// The image store.
    pub images: Arc<hearth_image::ImageStore>,
    /// The container manager (an error when its store could not be opened).
    pub containers: Result<Arc<ContainerManager>, String>,
    /// The pod CIDR from UpdateRuntimeConfig.
    pub pod_cidr: Mutex<String>,
    /// Progress of the pulls in flight, for the admin service.
    pub pulls: Arc<crate::admin::PullEvents>,
}

impl Cri {
    /// Wraps the core.
    pub fn new(
        sandboxes: Arc<SandboxManager>,
        images: Arc<hearth_image::ImageStore>,
        volumes: hearth_runtime::container::volumes::VolumePolicy,
    ) -> Arc<Cri> {
        let resolver = Arc::new(container_convert::StoreImages(images.clone()));
        let containers =
            ContainerManager::open(sandboxes.clone(), resolver, volumes).map_err(|e| {
                let msg = status::chain(&e);
                tracing::error!(error = %msg, "containers unavailable");
                msg
            });
        Arc::new(Cri {
            containers,
            sandboxes,
            images,
            pod_cidr: Mutex::new(String::new()),
            pulls: Arc::default(),
        })
    }

    /// The container manager, or why there is none.
    pub fn containers(&self) -> Result<&Arc<ContainerManager>, tonic::Status> {
        self.containers.as_ref().map_err(|e| {
            tonic::Status::failed_precondition(format!("containers are unavailable: {e}"))
        })
    }

    /// The Status RPC's answer. RuntimeReady is true when at least one
    /// handler can run pods here (a handler that cannot run here does not
    /// make the whole runtime unready; its reason is in `info`).
    pub fn runtime_status(&self, verbose: bool) -> cri::StatusResponse {
        let handlers = self.sandboxes.handlers();
        let usable: Vec<&String> = handlers
            .iter()
            .filter(|(_, _, ok)| ok.is_ok())
            .map(|(h, _, _)| h)
            .collect();
        let runtime = if usable.is_empty() {
            condition(
                "RuntimeReady",
                Err((
                    "NoUsableRuntimeHandler",
                    handlers
                        .iter()
                        .map(|(h, _, ok)| format!("{h}: {}", ok.clone().err().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join("; "),
                )),
            )
        } else {
            condition("RuntimeReady", Ok(()))
        };
        let network = condition(
            "NetworkReady",
            self.sandboxes
                .network_ready()
                .map_err(|m| ("NetworkPluginNotReady", m)),
        );
        let mut info = HashMap::new();
        if verbose {
            let detail: serde_json::Value = handlers
                .iter()
                .map(|(h, kind, ok)| {
                    (
                        h.clone(),
                        serde_json::json!({
                            "backend": kind,
                            "usable": ok.is_ok(),
                            "reason": ok.clone().err(),
                        }),
                    )
                })
                .collect::<serde_json::Map<_, _>>()
                .into();
            info.insert("runtimeHandlers".to_owned(), detail.to_string());
            info.insert(
                "cgroupVersion".to_owned(),
                format!("{:?}", self.sandboxes.cgroup_version()),
            );
            info.insert(
                "podCIDR".to_owned(),
                self.pod_cidr.lock().expect("pod_cidr lock").clone(),
            );
        }
        cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![runtime, network],
            }),
            info,
            runtime_handlers: handlers
                .iter()
                .map(|(h, _, _)| cri::RuntimeHandler {
                    name: h.clone(),
                    features: Some(cri::RuntimeHandlerFeatures {
                        recursive_read_only_mounts: false,
                        user_namespaces: false,
                    }),
                })
                .collect(),
            features: None,
        }
    }
}

fn condition(kind: &str, state: Result<(), (&str, String)>) -> cri::RuntimeCondition {
    match state {
        Ok(()) => cri::RuntimeCondition {
            r#type: kind.to_owned(),
            status: true,
            reason: String::new(),
            message: String::new(),
        },
        Err((reason, message)) => cri::RuntimeCondition {
            r#type: kind.to_owned(),
            status: false,
            reason: reason.to_owned(),
            message,
        },
    }
}

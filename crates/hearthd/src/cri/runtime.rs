//! The CRI RuntimeService: sandboxes are served by the core's
//! `SandboxManager`, containers by its `ContainerManager`; RPCs whose issue
//! has not landed answer UNIMPLEMENTED.

use std::pin::Pin;
use std::time::Duration;

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::status::{to_status, unimplemented};
use super::Cri;
use super::{container_convert, convert};

/// The CRI API version Hearth speaks.
pub const CRI_API_VERSION: &str = "v1";

#[tonic::async_trait]
impl RuntimeService for Cri {
    async fn version(
        &self,
        _: Request<cri::VersionRequest>,
    ) -> Result<Response<cri::VersionResponse>, Status> {
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "hearth".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: CRI_API_VERSION.into(),
        }))
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<cri::RunPodSandboxRequest>,
    ) -> Result<Response<cri::RunPodSandboxResponse>, Status> {
        let r = request.into_inner();
        let config = convert::sandbox_config(
            r.config
                .ok_or_else(|| Status::invalid_argument("config is required"))?,
        )?;
        let id = self
            .sandboxes
            .run(config, &r.runtime_handler)
            .await
            .map_err(to_status)?;
        Ok(Response::new(cri::RunPodSandboxResponse {
            pod_sandbox_id: id.to_string(),
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<cri::StopPodSandboxRequest>,
    ) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        // The pod's containers end first (their exits are recorded).
        match self.containers() {
            Ok(c) => c.stop_pod(&id).await,
            Err(_) => self.sandboxes.stop(&id).await,
        }
        .map_err(to_status)?;
        Ok(Response::new(cri::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<cri::RemovePodSandboxRequest>,
    ) -> Result<Response<cri::RemovePodSandboxResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        // The pod's containers go first.
        match self.containers() {
            Ok(c) => c.remove_pod(&id).await,
            Err(_) => self.sandboxes.remove(&id).await,
        }
        .map_err(to_status)?;
        Ok(Response::new(cri::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        let r = request.into_inner();
        let view = self
            .sandboxes
            .status(&r.pod_sandbox_id)
            .await
            .map_err(to_status)?;
        let info = if r.verbose {
            let live = self.sandboxes.live_info(&r.pod_sandbox_id).await;
            convert::sandbox_info(&view.record, live)
        } else {
            Default::default()
        };
        Ok(Response::new(cri::PodSandboxStatusResponse {
            status: Some(convert::pod_sandbox_status(&view.record)),
            info,
            containers_statuses: Vec::new(),
            timestamp: 0,
        }))
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<cri::ListPodSandboxRequest>,
    ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        let filter = request.into_inner().filter.unwrap_or_default();
        let items = self
            .sandboxes
            .list()
            .into_iter()
            .map(|v| v.record)
            .filter(|r| filter.id.is_empty() || r.id.as_str().starts_with(&filter.id))
            .filter(|r| {
                filter
                    .state
                    .as_ref()
                    .is_none_or(|s| s.state == convert::state(r.state))
            })
            .filter(|r| {
                filter
                    .label_selector
                    .iter()
                    .all(|(k, v)| r.config.labels.get(k) == Some(v))
            })
            .map(|r| convert::pod_sandbox(&r))
            .collect();
        Ok(Response::new(cri::ListPodSandboxResponse { items }))
    }

    async fn update_runtime_config(
        &self,
        request: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Result<Response<cri::UpdateRuntimeConfigResponse>, Status> {
        let cidr = request
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        tracing::info!(pod_cidr = %cidr, "runtime config updated");
        *self.pod_cidr.lock().expect("pod_cidr lock") = cidr;
        Ok(Response::new(cri::UpdateRuntimeConfigResponse {}))
    }

    async fn status(
        &self,
        request: Request<cri::StatusRequest>,
    ) -> Result<Response<cri::StatusResponse>, Status> {
        Ok(Response::new(
            self.runtime_status(request.into_inner().verbose),
        ))
    }

    type GetContainerEventsStream =
        Pin<Box<dyn Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send>>;

    async fn get_container_events(
        &self,
        _: Request<cri::GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        Err(unimplemented(
            "GetContainerEvents",
            "no event stream yet: the kubelet's default (polling) PLEG works without it",
        ))
    }

    async fn runtime_config(
        &self,
        _: Request<cri::RuntimeConfigRequest>,
    ) -> Result<Response<cri::RuntimeConfigResponse>, Status> {
        Ok(Response::new(cri::RuntimeConfigResponse {
            linux: Some(cri::LinuxRuntimeConfiguration {
                cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
            }),
        }))
    }

    async fn create_container(
        &self,
        request: Request<cri::CreateContainerRequest>,
    ) -> Result<Response<cri::CreateContainerResponse>, Status> {
        let r = request.into_inner();
        let config = container_convert::container_config(
            r.config
                .ok_or_else(|| Status::invalid_argument("config is required"))?,
        )?;
        let id = self
            .containers()?
            .create(&r.pod_sandbox_id, config)
            .await
            .map_err(to_status)?;
        Ok(Response::new(cri::CreateContainerResponse {
            container_id: id.to_string(),
        }))
    }
    async fn start_container(
        &self,
        request: Request<cri::StartContainerRequest>,
    ) -> Result<Response<cri::StartContainerResponse>, Status> {
        let id = request.into_inner().container_id;
        self.containers()?.start(&id).await.map_err(to_status)?;
        Ok(Response::new(cri::StartContainerResponse {}))
    }
    async fn stop_container(
        &self,
        request: Request<cri::StopContainerRequest>,
    ) -> Result<Response<cri::StopContainerResponse>, Status> {
        let r = request.into_inner();
        let timeout = Duration::from_secs(r.timeout.max(0) as u64);
        self.containers()?
            .stop(&r.container_id, timeout)
            .await
            .map_err(to_status)?;
        Ok(Response::new(cri::StopContainerResponse {}))
    }
    async fn remove_container(
        &self,
        request: Request<cri::RemoveContainerRequest>,
    ) -> Result<Response<cri::RemoveContainerResponse>, Status> {
        let id = request.into_inner().container_id;
        self.containers()?.remove(&id).await.map_err(to_status)?;
        Ok(Response::new(cri::RemoveContainerResponse {}))
    }
    async fn list_containers(
        &self,
        request: Request<cri::ListContainersRequest>,
    ) -> Result<Response<cri::ListContainersResponse>, Status> {
        let filter = request.into_inner().filter.unwrap_or_default();
        let containers = self
            .containers()?
            .list()
            .iter()
            .filter(|r| container_convert::matches(r, &filter))
            .map(container_convert::container)
            .collect();
        Ok(Response::new(cri::ListContainersResponse { containers }))
    }
    async fn container_status(
        &self,
        request: Request<cri::ContainerStatusRequest>,
    ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        let r = request.into_inner();
        let record = self
            .containers()?
            .status(&r.container_id)
            .map_err(to_status)?;
        Ok(Response::new(cri::ContainerStatusResponse {
            status: Some(container_convert::container_status(&record)),
            info: if r.verbose {
                container_convert::container_info(&record)
            } else {
                Default::default()
            },
        }))
    }
    async fn update_container_resources(
        &self,
        request: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        let r = request.into_inner();
        let resources = container_convert::update_resources(r.linux)?;
        self.containers()?
            .update_resources(&r.container_id, resources)
            .await
            .map_err(to_status)?;
        Ok(Response::new(cri::UpdateContainerResourcesResponse {}))
    }
    async fn reopen_container_log(
        &self,
        request: Request<cri::ReopenContainerLogRequest>,
    ) -> Result<Response<cri::ReopenContainerLogResponse>, Status> {
        let id = request.into_inner().container_id;
        self.containers()?
            .reopen_log(&id)
            .await
            .map_err(to_status)?;
        Ok(Response::new(cri::ReopenContainerLogResponse {}))
    }
    async fn exec_sync(
        &self,
        request: Request<cri::ExecSyncRequest>,
    ) -> Result<Response<cri::ExecSyncResponse>, Status> {
        let r = request.into_inner();
        let timeout = Duration::from_secs(r.timeout.max(0) as u64);
        let out = self
            .containers()?
            .exec_sync(&r.container_id, r.cmd, timeout)
            .await
            .map_err(to_status)?;
        if out.timed_out {
            return Err(Status::deadline_exceeded(format!(
                "command timed out after {}s in container {}",
                r.timeout, r.container_id
            )));
        }
        Ok(Response::new(cri::ExecSyncResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        }))
    }
    async fn exec(
        &self,
        _: Request<cri::ExecRequest>,
    ) -> Result<Response<cri::ExecResponse>, Status> {
        Err(unimplemented("Exec", "streaming exec is later work"))
    }
    async fn attach(
        &self,
        _: Request<cri::AttachRequest>,
    ) -> Result<Response<cri::AttachResponse>, Status> {
        Err(unimplemented("Attach", "attach is later work"))
    }
    async fn port_forward(
        &self,
        _: Request<cri::PortForwardRequest>,
    ) -> Result<Response<cri::PortForwardResponse>, Status> {
        Err(unimplemented("PortForward", "port-forward is later work"))
    }
    async fn container_stats(
        &self,
        _: Request<cri::ContainerStatsRequest>,
    ) -> Result<Response<cri::ContainerStatsResponse>, Status> {
        Err(unimplemented("ContainerStats", "stats are later work"))
    }
    async fn list_container_stats(
        &self,
        _: Request<cri::ListContainerStatsRequest>,
    ) -> Result<Response<cri::ListContainerStatsResponse>, Status> {
        Err(unimplemented("ListContainerStats", "stats are later work"))
    }
    async fn pod_sandbox_stats(
        &self,
        _: Request<cri::PodSandboxStatsRequest>,
    ) -> Result<Response<cri::PodSandboxStatsResponse>, Status> {
        Err(unimplemented("PodSandboxStats", "stats are later work"))
    }
    async fn list_pod_sandbox_stats(
        &self,
        _: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Result<Response<cri::ListPodSandboxStatsResponse>, Status> {
        Err(unimplemented("ListPodSandboxStats", "stats are later work"))
    }
    async fn checkpoint_container(
        &self,
        _: Request<cri::CheckpointContainerRequest>,
    ) -> Result<Response<cri::CheckpointContainerResponse>, Status> {
        Err(unimplemented(
            "CheckpointContainer",
            "checkpointing is not planned",
        ))
    }
    async fn list_metric_descriptors(
        &self,
        _: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Result<Response<cri::ListMetricDescriptorsResponse>, Status> {
        Err(unimplemented(
            "ListMetricDescriptors",
            "metrics are later work",
        ))
    }
    async fn list_pod_sandbox_metrics(
        &self,
        _: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Result<Response<cri::ListPodSandboxMetricsResponse>, Status> {
        Err(unimplemented(
            "ListPodSandboxMetrics",
            "metrics are later work",
        ))
    }
}

//! Container commands: ps, create, start, stop, rm, inspect, exec.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Result};
use clap::Args;
use k8s_cri::v1 as cri;
use serde::Serialize;

use super::{for_each, needs_resolving, pods, resolve_ids};
use crate::client::{call_with, request_with, Cri, RpcError};
use crate::config::{load_container_config, load_pod_config};
use crate::output::{
    info_to_json, labels_match, parse_labels, print_structured, relative_time, short_id, write_out,
    Output, Table,
};

/// `ps`: list containers.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Show all containers (default: running only).
    #[arg(short, long)]
    pub all: bool,
    /// Only containers whose id starts with this.
    #[arg(long)]
    pub id: Option<String>,
    /// Only containers of this pod (id or prefix).
    #[arg(short, long)]
    pub pod: Option<String>,
    /// Only containers whose name contains this.
    #[arg(long)]
    pub name: Option<String>,
    /// Only containers in this state.
    #[arg(long, value_enum)]
    pub state: Option<ContainerState>,
    /// Only containers with this label (KEY=VALUE; repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Print only container ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Show full ids.
    #[arg(long)]
    pub no_trunc: bool,
}

/// A container state filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ContainerState {
    /// CONTAINER_CREATED.
    Created,
    /// CONTAINER_RUNNING.
    Running,
    /// CONTAINER_EXITED.
    Exited,
    /// CONTAINER_UNKNOWN.
    Unknown,
}

impl ContainerState {
    fn cri(self) -> cri::ContainerState {
        match self {
            ContainerState::Created => cri::ContainerState::ContainerCreated,
            ContainerState::Running => cri::ContainerState::ContainerRunning,
            ContainerState::Exited => cri::ContainerState::ContainerExited,
            ContainerState::Unknown => cri::ContainerState::ContainerUnknown,
        }
    }
}

/// `create`: create a container in a pod.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The pod to create it in (id or prefix).
    pub pod_id: String,
    /// A CRI ContainerConfig in crictl's shape (.json, .yaml).
    pub container_config: PathBuf,
    /// The pod's PodSandboxConfig, as given to runp.
    pub pod_config: PathBuf,
    /// Pull the image first.
    #[arg(long)]
    pub with_pull: bool,
}

/// `start`, `inspect`: containers by id (prefixes work).
#[derive(Args, Debug)]
pub struct IdsArgs {
    /// Container ids.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

/// `stop`: stop containers.
#[derive(Args, Debug)]
pub struct StopArgs {
    /// Container ids.
    #[arg(required = true)]
    pub ids: Vec<String>,
    /// Seconds to wait for a graceful stop before killing (0: at once).
    #[arg(short, long, default_value_t = 0)]
    pub timeout: i64,
}

/// `rm`: remove containers.
#[derive(Args, Debug)]
pub struct RemoveArgs {
    /// Container ids.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub ids: Vec<String>,
    /// Remove every container.
    #[arg(short, long)]
    pub all: bool,
    /// Stop each container before removing it.
    #[arg(short, long)]
    pub force: bool,
}

/// `exec`: run a command in a container and wait for it (ExecSync).
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// The container (id or prefix).
    pub id: String,
    /// Seconds the command may run (0: no limit but --timeout).
    #[arg(short, long, default_value_t = 0)]
    pub timeout: i64,
    /// The command and its arguments (after `--`).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
}

/// The table word for a container state, as crictl prints it.
pub fn state_name(state: i32) -> &'static str {
    match cri::ContainerState::try_from(state) {
        Ok(cri::ContainerState::ContainerCreated) => "Created",
        Ok(cri::ContainerState::ContainerRunning) => "Running",
        Ok(cri::ContainerState::ContainerExited) => "Exited",
        Ok(cri::ContainerState::ContainerUnknown) | Err(_) => "Unknown",
    }
}

async fn list_all(cri: &Cri) -> Result<Vec<cri::Container>> {
    let request = cri::ListContainersRequest { filter: None };
    let response = cri
        .call(
            "ListContainers",
            cri.runtime().list_containers(cri.request(request)),
        )
        .await?;
    Ok(response.containers)
}

/// Expands container id prefixes to full ids.
pub async fn resolve(cri: &Cri, ids: &[String]) -> Result<Vec<String>> {
    if !needs_resolving(ids) {
        return Ok(ids.to_vec());
    }
    let containers = list_all(cri).await?;
    let known: Vec<&str> = containers.iter().map(|c| c.id.as_str()).collect();
    resolve_ids("container", ids, &known)
}

pub async fn list(cri: &Cri, args: ListArgs, output: Output) -> Result<()> {
    let labels = parse_labels(&args.labels)?;
    let pod = match &args.pod {
        Some(pod) => pods::resolve(cri, std::slice::from_ref(pod)).await?.pop(),
        None => None,
    };
    // Like crictl: running containers unless -a or --state says otherwise.
    let state = match (args.state, args.all) {
        (Some(s), _) => Some(s.cri()),
        (None, false) => Some(cri::ContainerState::ContainerRunning),
        (None, true) => None,
    };
    let request = cri::ListContainersRequest {
        filter: Some(cri::ContainerFilter {
            id: String::new(),
            state: state.map(|s| cri::ContainerStateValue { state: s as i32 }),
            pod_sandbox_id: pod.clone().unwrap_or_default(),
            label_selector: labels.clone(),
        }),
    };
    let mut response = cri
        .call(
            "ListContainers",
            cri.runtime().list_containers(cri.request(request)),
        )
        .await?;
    response.containers.retain(|c| {
        let name = c.metadata.as_ref().map_or("", |m| m.name.as_str());
        args.id
            .as_ref()
            .is_none_or(|id| c.id.starts_with(id.as_str()))
            && pod
                .as_ref()
                .is_none_or(|p| c.pod_sandbox_id.starts_with(p.as_str()))
            && args.name.as_ref().is_none_or(|n| name.contains(n.as_str()))
            && state.is_none_or(|s| c.state == s as i32)
            && labels_match(&labels, &c.labels)
    });
    response
        .containers
        .sort_by_key(|p| std::cmp::Reverse(p.created_at));

    if args.quiet {
        for c in &response.containers {
            write_out(&format!("{}\n", c.id))?;
        }
        return Ok(());
    }
    if output != Output::Table {
        return print_structured(&response, output);
    }
    // Pod names are a nicety: a failed lookup leaves the column empty.
    let pod_names: HashMap<String, String> = pods::list_all(cri)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p.id, p.metadata.map(|m| m.name).unwrap_or_default()))
        .collect();
    write_out(&containers_table(
        &response.containers,
        &pod_names,
        args.no_trunc,
        SystemTime::now(),
    ))?;
    Ok(())
}

/// The `ps` table.
pub fn containers_table(
    containers: &[cri::Container],
    pod_names: &HashMap<String, String>,
    no_trunc: bool,
    now: SystemTime,
) -> String {
    let mut table = Table::new(&[
        "CONTAINER",
        "IMAGE",
        "CREATED",
        "STATE",
        "NAME",
        "ATTEMPT",
        "POD ID",
        "POD",
    ]);
    for c in containers {
        let meta = c.metadata.clone().unwrap_or_default();
        let image = c.image.as_ref().map_or("", |i| i.image.as_str());
        let image = if image.is_empty() {
            c.image_ref.as_str()
        } else {
            image
        };
        let image = if image.starts_with("sha256:") {
            short_id(image, no_trunc)
        } else {
            image.to_string()
        };
        table.push(vec![
            short_id(&c.id, no_trunc),
            image,
            relative_time(c.created_at, now),
            state_name(c.state).to_string(),
            meta.name,
            meta.attempt.to_string(),
            short_id(&c.pod_sandbox_id, no_trunc),
            pod_names
                .get(&c.pod_sandbox_id)
                .cloned()
                .unwrap_or_default(),
        ]);
    }
    table.render()
}

pub async fn create(cri: &Cri, args: CreateArgs, output: Output) -> Result<()> {
    let config = load_container_config(&args.container_config)?;
    let sandbox_config = load_pod_config(&args.pod_config)?;
    let pod_id = pods::resolve(cri, std::slice::from_ref(&args.pod_id))
        .await?
        .remove(0);
    if args.with_pull {
        let request = cri::PullImageRequest {
            image: config.image.clone(),
            auth: None,
            sandbox_config: Some(sandbox_config.clone()),
        };
        // Pulls take longer than the other calls; give them five minutes.
        let timeout = cri.timeout().max(Duration::from_secs(300));
        call_with(
            "PullImage",
            timeout,
            cri.images().pull_image(request_with(request, timeout)),
        )
        .await?;
    }
    let response = create_one(cri, pod_id, config, sandbox_config).await?;
    match output {
        Output::Table => write_out(&format!("{}\n", response.container_id))?,
        _ => print_structured(&response, output)?,
    }
    Ok(())
}

/// CreateContainer in pod `pod_id`.
pub async fn create_one(
    cri: &Cri,
    pod_id: String,
    config: cri::ContainerConfig,
    sandbox_config: cri::PodSandboxConfig,
) -> Result<cri::CreateContainerResponse, RpcError> {
    let request = cri::CreateContainerRequest {
        pod_sandbox_id: pod_id,
        config: Some(config),
        sandbox_config: Some(sandbox_config),
    };
    cri.call(
        "CreateContainer",
        cri.runtime().create_container(cri.request(request)),
    )
    .await
}

pub async fn start(cri: &Cri, args: IdsArgs) -> Result<()> {
    let ids = resolve(cri, &args.ids).await?;
    for_each(ids, |id| async move {
        start_one(cri, &id).await?;
        write_out(&format!("{id}\n"))?;
        Ok(())
    })
    .await
}

/// StartContainer for one whole id.
pub async fn start_one(cri: &Cri, id: &str) -> Result<()> {
    let request = cri::StartContainerRequest {
        container_id: id.to_string(),
    };
    cri.call(
        "StartContainer",
        cri.runtime().start_container(cri.request(request)),
    )
    .await?;
    Ok(())
}

/// StopContainer for one whole id, with `grace` seconds before the kill.
pub async fn stop_one(cri: &Cri, id: &str, grace: i64) -> Result<()> {
    let request = cri::StopContainerRequest {
        container_id: id.to_string(),
        timeout: grace,
    };
    // The call lasts up to the grace period; the deadline allows for it.
    let deadline = cri.timeout() + Duration::from_secs(grace.max(0) as u64);
    call_with(
        "StopContainer",
        deadline,
        cri.runtime()
            .stop_container(request_with(request, deadline)),
    )
    .await?;
    Ok(())
}

pub async fn stop(cri: &Cri, args: StopArgs) -> Result<()> {
    let ids = resolve(cri, &args.ids).await?;
    for_each(ids, |id| async move {
        stop_one(cri, &id, args.timeout).await?;
        write_out(&format!("{id}\n"))?;
        Ok(())
    })
    .await
}

pub async fn remove(cri: &Cri, args: RemoveArgs) -> Result<()> {
    let ids = if args.all {
        list_all(cri).await?.into_iter().map(|c| c.id).collect()
    } else if args.ids.is_empty() {
        bail!("give container ids, or --all");
    } else {
        resolve(cri, &args.ids).await?
    };
    for_each(ids, |id| async move {
        if args.force {
            stop_one(cri, &id, 0).await?;
        }
        remove_one(cri, &id).await?;
        write_out(&format!("{id}\n"))?;
        Ok(())
    })
    .await
}

/// RemoveContainer for one whole id.
pub async fn remove_one(cri: &Cri, id: &str) -> Result<()> {
    let request = cri::RemoveContainerRequest {
        container_id: id.to_string(),
    };
    cri.call(
        "RemoveContainer",
        cri.runtime().remove_container(cri.request(request)),
    )
    .await?;
    Ok(())
}

/// ContainerStatus with verbose info.
pub async fn status(cri: &Cri, id: &str) -> Result<cri::ContainerStatusResponse> {
    let request = cri::ContainerStatusRequest {
        container_id: id.to_string(),
        verbose: true,
    };
    Ok(cri
        .call(
            "ContainerStatus",
            cri.runtime().container_status(cri.request(request)),
        )
        .await?)
}

/// Whether the container has exited.
pub async fn has_exited(cri: &Cri, id: &str) -> Result<bool> {
    let state = status(cri, id)
        .await?
        .status
        .map_or(cri::ContainerState::ContainerUnknown as i32, |s| s.state);
    Ok(state == cri::ContainerState::ContainerExited as i32)
}

/// ContainerStatusResponse in proto order, its info values expanded.
#[derive(Serialize)]
struct ContainerInspect<'a> {
    status: &'a Option<cri::ContainerStatus>,
    info: serde_json::Value,
}

pub async fn inspect(cri: &Cri, args: IdsArgs, output: Output) -> Result<()> {
    let ids = resolve(cri, &args.ids).await?;
    for_each(ids, |id| async move {
        let response = status(cri, &id).await?;
        let inspected = ContainerInspect {
            status: &response.status,
            info: info_to_json(&response.info),
        };
        print_structured(&inspected, output)
    })
    .await
}

/// ExecSyncResponse with its output as (lossy UTF-8) text.
#[derive(Serialize)]
struct ExecOutput<'a> {
    stdout: std::borrow::Cow<'a, str>,
    stderr: std::borrow::Cow<'a, str>,
    exit_code: i32,
}

pub async fn exec(cri: &Cri, args: ExecArgs, output: Output) -> Result<ExitCode> {
    let id = resolve(cri, std::slice::from_ref(&args.id))
        .await?
        .remove(0);
    let request = cri::ExecSyncRequest {
        container_id: id,
        cmd: args.cmd,
        timeout: args.timeout,
    };
    let deadline = cri.timeout() + Duration::from_secs(args.timeout.max(0) as u64);
    let response = call_with(
        "ExecSync",
        deadline,
        cri.runtime().exec_sync(request_with(request, deadline)),
    )
    .await?;
    if output != Output::Table {
        // The output as text rather than the proto's byte arrays.
        let text = ExecOutput {
            stdout: String::from_utf8_lossy(&response.stdout),
            stderr: String::from_utf8_lossy(&response.stderr),
            exit_code: response.exit_code,
        };
        print_structured(&text, output)?;
    } else {
        std::io::stdout().write_all(&response.stdout)?;
        std::io::stdout().flush()?;
        std::io::stderr().write_all(&response.stderr)?;
    }
    Ok(exit_code(response.exit_code))
}

/// The process exit code for a command's exit code (outside 0..=255: 255).
pub fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(255))
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn ps_table_shows_crictl_columns() {
        let pod_id = "4f1a9b0c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c";
        let containers = vec![cri::Container {
            id: "c0ffee00112233445566778899aabbccddeeff00112233445566778899aabbcc".into(),
            pod_sandbox_id: pod_id.into(),
            metadata: Some(cri::ContainerMetadata {
                name: "hello".into(),
                attempt: 1,
            }),
            image: Some(cri::ImageSpec {
                image: "sha256:beae173ccac6ad749f76713cf4440fe3d21d1043fe616dfbe30775815d1d0f6a"
                    .into(),
                ..Default::default()
            }),
            state: cri::ContainerState::ContainerRunning as i32,
            created_at: 1_000 * 1_000_000_000,
            ..Default::default()
        }];
        let names = HashMap::from([(pod_id.to_string(), "demo".to_string())]);
        let now = UNIX_EPOCH + Duration::from_secs(1_000 + 7);
        let text = containers_table(&containers, &names, false, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "CONTAINER           IMAGE               CREATED             STATE               NAME                ATTEMPT             POD ID              POD"
        );
        assert_eq!(
            lines[1],
            "c0ffee0011223       beae173ccac6a       7 seconds ago       Running             hello               1                   4f1a9b0c2d3e4       demo"
        );
    }

    #[test]
    fn container_states_read_like_crictl() {
        assert_eq!(state_name(0), "Created");
        assert_eq!(state_name(1), "Running");
        assert_eq!(state_name(2), "Exited");
        assert_eq!(state_name(3), "Unknown");
        assert_eq!(state_name(42), "Unknown");
    }

    #[test]
    fn exit_codes_pass_through() {
        assert_eq!(exit_code(0), ExitCode::SUCCESS);
        assert_eq!(exit_code(3), ExitCode::from(3));
        assert_eq!(exit_code(-1), ExitCode::from(255));
        assert_eq!(exit_code(300), ExitCode::from(255));
    }
}

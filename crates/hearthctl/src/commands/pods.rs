//! Pod sandbox commands: runp, pods, inspectp, stopp, rmp.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{bail, Result};
use clap::Args;
use k8s_cri::v1 as cri;
use serde::Serialize;

use super::{for_each, needs_resolving, resolve_ids};
use crate::client::Cri;
use crate::config::load_pod_config;
use crate::output::{
    info_to_json, labels_match, parse_labels, print_structured, relative_time, short_id, write_out,
    Output, Table,
};

/// `runp`: start a pod sandbox (a microVM) from a config file.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// A CRI PodSandboxConfig in crictl's shape (.json, .yaml; `-` for stdin).
    pub config: PathBuf,
    /// The runtime handler (RuntimeClass) to run the pod with.
    #[arg(short = 'r', long)]
    pub runtime: Option<String>,
}

/// `pods`: list pod sandboxes.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only pods whose id starts with this.
    #[arg(long)]
    pub id: Option<String>,
    /// Only pods whose name contains this.
    #[arg(long)]
    pub name: Option<String>,
    /// Only pods whose namespace contains this.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only pods in this state.
    #[arg(long, value_enum)]
    pub state: Option<PodState>,
    /// Only pods with this label (KEY=VALUE; repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Print only pod ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Show full ids.
    #[arg(long)]
    pub no_trunc: bool,
}

/// A pod state filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PodState {
    /// SANDBOX_READY.
    Ready,
    /// SANDBOX_NOTREADY.
    #[value(alias = "not-ready")]
    Notready,
}

impl PodState {
    fn cri(self) -> cri::PodSandboxState {
        match self {
            PodState::Ready => cri::PodSandboxState::SandboxReady,
            PodState::Notready => cri::PodSandboxState::SandboxNotready,
        }
    }
}

/// `inspectp`, `stopp`: pods by id (prefixes as the table shows them work).
#[derive(Args, Debug)]
pub struct IdsArgs {
    /// Pod ids.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

/// `rmp`: remove pods.
#[derive(Args, Debug)]
pub struct RemoveArgs {
    /// Pod ids.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub ids: Vec<String>,
    /// Remove every pod.
    #[arg(short, long)]
    pub all: bool,
    /// Stop each pod before removing it.
    #[arg(short, long)]
    pub force: bool,
}

/// The table word for a sandbox state, as crictl prints it.
pub fn state_name(state: i32) -> &'static str {
    match cri::PodSandboxState::try_from(state) {
        Ok(cri::PodSandboxState::SandboxReady) => "Ready",
        Ok(cri::PodSandboxState::SandboxNotready) => "NotReady",
        Err(_) => "Unknown",
    }
}

pub async fn run(cri: &Cri, args: RunArgs, output: Output) -> Result<()> {
    let config = load_pod_config(&args.config)?;
    let request = cri::RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: args.runtime.unwrap_or_default(),
    };
    let response = cri
        .call(
            "RunPodSandbox",
            cri.runtime().run_pod_sandbox(cri.request(request)),
        )
        .await?;
    match output {
        Output::Table => write_out(&format!("{}\n", response.pod_sandbox_id))?,
        _ => print_structured(&response, output)?,
    }
    Ok(())
}

/// All pods, unfiltered (for id resolution and pod names).
pub async fn list_all(cri: &Cri) -> Result<Vec<cri::PodSandbox>> {
    let request = cri::ListPodSandboxRequest { filter: None };
    let response = cri
        .call(
            "ListPodSandbox",
            cri.runtime().list_pod_sandbox(cri.request(request)),
        )
        .await?;
    Ok(response.items)
}

/// Expands pod id prefixes to full ids (one ListPodSandbox call, if needed).
pub async fn resolve(cri: &Cri, ids: &[String]) -> Result<Vec<String>> {
    if !needs_resolving(ids) {
        return Ok(ids.to_vec());
    }
    let pods = list_all(cri).await?;
    let known: Vec<&str> = pods.iter().map(|p| p.id.as_str()).collect();
    resolve_ids("pod", ids, &known)
}

pub async fn list(cri: &Cri, args: ListArgs, output: Output) -> Result<()> {
    let labels = parse_labels(&args.labels)?;
    // The server gets the filters it understands; all of them are applied
    // here again, so a server that ignores some still gives the right list.
    let request = cri::ListPodSandboxRequest {
        filter: Some(cri::PodSandboxFilter {
            id: String::new(),
            state: args.state.map(|s| cri::PodSandboxStateValue {
                state: s.cri() as i32,
            }),
            label_selector: labels.clone(),
        }),
    };
    let mut response = cri
        .call(
            "ListPodSandbox",
            cri.runtime().list_pod_sandbox(cri.request(request)),
        )
        .await?;
    response.items.retain(|p| {
        let meta = p.metadata.clone().unwrap_or_default();
        args.id
            .as_ref()
            .is_none_or(|id| p.id.starts_with(id.as_str()))
            && args
                .name
                .as_ref()
                .is_none_or(|n| meta.name.contains(n.as_str()))
            && args
                .namespace
                .as_ref()
                .is_none_or(|n| meta.namespace.contains(n.as_str()))
            && args.state.is_none_or(|s| p.state == s.cri() as i32)
            && labels_match(&labels, &p.labels)
    });
    response
        .items
        .sort_by_key(|p| std::cmp::Reverse(p.created_at));

    if args.quiet {
        for pod in &response.items {
            write_out(&format!("{}\n", pod.id))?;
        }
        return Ok(());
    }
    if output != Output::Table {
        return print_structured(&response, output);
    }
    write_out(&pods_table(
        &response.items,
        args.no_trunc,
        SystemTime::now(),
    ))?;
    Ok(())
}

/// The `pods` table.
pub fn pods_table(pods: &[cri::PodSandbox], no_trunc: bool, now: SystemTime) -> String {
    let mut table = Table::new(&[
        "POD ID",
        "CREATED",
        "STATE",
        "NAME",
        "NAMESPACE",
        "ATTEMPT",
        "RUNTIME",
    ]);
    for pod in pods {
        let meta = pod.metadata.clone().unwrap_or_default();
        let runtime = if pod.runtime_handler.is_empty() {
            "(default)".to_string()
        } else {
            pod.runtime_handler.clone()
        };
        table.push(vec![
            short_id(&pod.id, no_trunc),
            relative_time(pod.created_at, now),
            state_name(pod.state).to_string(),
            meta.name,
            meta.namespace,
            meta.attempt.to_string(),
            runtime,
        ]);
    }
    table.render()
}

/// PodSandboxStatusResponse in proto order, its info values expanded.
#[derive(Serialize)]
struct PodInspect<'a> {
    status: &'a Option<cri::PodSandboxStatus>,
    info: serde_json::Value,
    containers_statuses: &'a [cri::ContainerStatus],
    timestamp: i64,
}

/// PodSandboxStatus of one whole id.
pub async fn status(cri: &Cri, id: &str, verbose: bool) -> Result<cri::PodSandboxStatusResponse> {
    let request = cri::PodSandboxStatusRequest {
        pod_sandbox_id: id.to_string(),
        verbose,
    };
    Ok(cri
        .call(
            "PodSandboxStatus",
            cri.runtime().pod_sandbox_status(cri.request(request)),
        )
        .await?)
}

pub async fn inspect(cri: &Cri, args: IdsArgs, output: Output) -> Result<()> {
    let ids = resolve(cri, &args.ids).await?;
    for_each(ids, |id| async move {
        let response = status(cri, &id, true).await?;
        let inspected = PodInspect {
            status: &response.status,
            info: info_to_json(&response.info),
            containers_statuses: &response.containers_statuses,
            timestamp: response.timestamp,
        };
        print_structured(&inspected, output)
    })
    .await
}

pub async fn stop(cri: &Cri, args: IdsArgs) -> Result<()> {
    let ids = resolve(cri, &args.ids).await?;
    for_each(ids, |id| async move {
        stop_one(cri, &id).await?;
        write_out(&format!("Stopped sandbox {id}\n"))?;
        Ok(())
    })
    .await
}

/// StopPodSandbox for one whole id.
pub async fn stop_one(cri: &Cri, id: &str) -> Result<()> {
    let request = cri::StopPodSandboxRequest {
        pod_sandbox_id: id.to_string(),
    };
    cri.call(
        "StopPodSandbox",
        cri.runtime().stop_pod_sandbox(cri.request(request)),
    )
    .await?;
    Ok(())
}

pub async fn remove(cri: &Cri, args: RemoveArgs) -> Result<()> {
    let ids = if args.all {
        let ids: Vec<String> = list_all(cri).await?.into_iter().map(|p| p.id).collect();
        if ids.is_empty() {
            eprintln!("no pods to remove");
        }
        ids
    } else if args.ids.is_empty() {
        bail!("give pod ids, or --all");
    } else {
        resolve(cri, &args.ids).await?
    };
    for_each(ids, |id| async move {
        if args.force {
            stop_one(cri, &id).await?;
        }
        remove_one(cri, &id).await?;
        write_out(&format!("Removed sandbox {id}\n"))?;
        Ok(())
    })
    .await
}

/// RemovePodSandbox for one whole id.
pub async fn remove_one(cri: &Cri, id: &str) -> Result<()> {
    let request = cri::RemovePodSandboxRequest {
        pod_sandbox_id: id.to_string(),
    };
    cri.call(
        "RemovePodSandbox",
        cri.runtime().remove_pod_sandbox(cri.request(request)),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn pods_table_shows_crictl_columns() {
        let created = 1_700_000_000i64;
        let pods = vec![
            cri::PodSandbox {
                id: "4f1a9b0c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c".into(),
                metadata: Some(cri::PodSandboxMetadata {
                    name: "demo".into(),
                    uid: "u".into(),
                    namespace: "default".into(),
                    attempt: 0,
                }),
                state: cri::PodSandboxState::SandboxReady as i32,
                created_at: created * 1_000_000_000,
                labels: HashMap::new(),
                annotations: HashMap::new(),
                runtime_handler: String::new(),
            },
            cri::PodSandbox {
                id: "99".into(),
                metadata: None,
                state: cri::PodSandboxState::SandboxNotready as i32,
                created_at: 0,
                runtime_handler: "hearth-qemu".into(),
                ..Default::default()
            },
        ];
        let now = UNIX_EPOCH + Duration::from_secs(created as u64 + 150);
        let text = pods_table(&pods, false, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "POD ID              CREATED             STATE               NAME                NAMESPACE           ATTEMPT             RUNTIME"
        );
        assert_eq!(
            lines[1],
            "4f1a9b0c2d3e4       2 minutes ago       Ready               demo                default             0                   (default)"
        );
        assert!(lines[2].starts_with("99                  unknown             NotReady"));
        assert!(lines[2].ends_with("hearth-qemu"));
        let full = pods_table(&pods, true, now);
        assert!(full.contains(&pods[0].id));
    }

    #[test]
    fn unknown_states_are_named_so() {
        assert_eq!(state_name(0), "Ready");
        assert_eq!(state_name(1), "NotReady");
        assert_eq!(state_name(9), "Unknown");
    }
}

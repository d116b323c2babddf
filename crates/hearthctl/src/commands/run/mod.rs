//! `run`: a Kubernetes Pod manifest through the CRI calls the kubelet would
//! make (PullImage, RunPodSandbox, CreateContainer + StartContainer per
//! container), with hearthctl in the kubelet's place for the host side: the
//! pod's directory under the kubelet root with its volumes and
//! termination-message files (`kubelet`), the CRI configs computed the
//! kubelet's way from the manifest (`manifest`).

mod kubelet;
mod manifest;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use clap::Args;
use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod};
use serde::Serialize;
use tonic::Code;

use super::containers::{self, exit_code};
use super::images::{self, PullArgs};
use super::logs::{print_log, LogOptions};
use super::pods;
use crate::client::Cri;
use crate::output::{parse_duration, print_structured, short_id, write_out, Output, Table};
use kubelet::PodDir;
use manifest::{Manifest, PullPolicy};

const HELP: &str = "\
What it does, in the kubelet's order:
  1. pulls each container's image (imagePullPolicy; Always for :latest or no tag);
  2. lays out the pod's directory under --kubelet-root-dir as the kubelet does,
     <root>/pods/<uid>/:
       volumes/kubernetes.io~secret/<volume>/     the atomic writer's layout:
       volumes/kubernetes.io~configmap/<volume>/  ..<timestamp>/ with the files,
                                                  ..data -> it, <key> -> ..data/<key>
       volumes/kubernetes.io~empty-dir/<volume>/  a directory (medium Memory: a tmpfs
                                                  of sizeLimit)
       containers/<container>/<hex>               the termination-message file
       volume-subpaths/<volume>/<container>/<n>   a copy of a volumeMount's subPath
     hearthd reads the volumes from there: give it the same root (its [volumes]
     kubelet_root_dir);
  3. RunPodSandbox (a fresh uid; the runtime handler from --runtime, else
     spec.runtimeClassName taken as the handler's name, else hearthd's default;
     logs under --log-root/<namespace>_<name>_<uid>/);
  4. init containers one after the other, each to a successful exit; then
     CreateContainer + StartContainer for every container;
  5. waits until every container has exited (or --timeout), then prints the
     pod's state and each container's logs (-f: prints the logs as they come).
     The exit code is the first non-zero exit code of a container.

There is no API server: a secret volume's data comes from a `kind: Secret`
document of the same name in the manifest (`---` separated; data is base64,
stringData plain), a configMap volume's from a `kind: ConfigMap` (data,
binaryData); --objects FILE adds the documents of another file. Supported
volumes: secret, configMap, emptyDir. env takes plain values (valueFrom and
envFrom are refused), $(VAR) references are expanded as the kubelet does.
resources become CRI resources the kubelet's way (cpu shares from requests,
quota over a 100 ms period from limits, the memory limit), for each container
and summed for the pod (which sizes its VM). restartPolicy is not applied.

Without --rm the pod is left as it is (remove it with `hearthctl rmp -f <id>`
and its directory under the kubelet root). With --rm, or when a step fails,
everything made is removed: containers, the pod, its directory (tmpfs
unmounted) and its log directory.";

/// `run`: run a Kubernetes Pod manifest through the CRI.
#[derive(Args, Debug)]
#[command(after_long_help = HELP)]
pub struct RunArgs {
    /// The Pod manifest (YAML, `-` for stdin), with the Secrets and
    /// ConfigMaps its volumes use as further `---` documents.
    pub manifest: PathBuf,
    /// More Secret and ConfigMap documents, from another file (repeatable).
    #[arg(long = "objects", value_name = "FILE")]
    pub objects: Vec<PathBuf>,
    /// The runtime handler (overrides spec.runtimeClassName).
    #[arg(short = 'r', long)]
    pub runtime: Option<String>,
    /// Print the containers' logs as they write them, until they exit.
    #[arg(short, long)]
    pub follow: bool,
    /// Remove the pod and everything made for it at the end.
    #[arg(long)]
    pub rm: bool,
    /// How long to wait for the containers to exit (0: do not wait).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// The kubelet's root directory, where the pod's volumes are laid out.
    #[arg(long, default_value = "/var/lib/kubelet", value_name = "DIR")]
    pub kubelet_root_dir: PathBuf,
    /// Where pod log directories go (the kubelet's /var/log/pods).
    #[arg(long, default_value = "/var/log/pods", value_name = "DIR")]
    pub log_root: PathBuf,
    /// Deadline for each image pull.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub pull_timeout: Duration,
}

/// How often container states are polled while waiting.
const POLL: Duration = Duration::from_millis(100);

/// Everything made for the pod so far, to undo.
struct Made {
    pod_dir: PodDir,
    log_dir: PathBuf,
    pod_id: Option<String>,
    containers: Vec<String>,
    /// The pod's terminationGracePeriodSeconds.
    grace: i64,
}

impl Made {
    /// Removes it all, going on past failures; says what failed.
    async fn remove(&self, cri: &Cri) -> bool {
        let mut ok = true;
        let mut report = |what: &str, result: Result<()>| {
            if let Err(err) = result {
                eprintln!("hearthctl: cleanup: {what}: {err:#}");
                ok = false;
            }
        };
        for id in &self.containers {
            report(
                "stop container",
                containers::stop_one(cri, id, self.grace).await,
            );
            report("remove container", containers::remove_one(cri, id).await);
        }
        if let Some(id) = &self.pod_id {
            report("stop pod", pods::stop_one(cri, id).await);
            report("remove pod", pods::remove_one(cri, id).await);
        }
        report("pod directory", self.pod_dir.remove());
        report(
            "log directory",
            match std::fs::remove_dir_all(&self.log_dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            },
        );
        ok
    }
}

/// A container to run: the manifest's and its CRI config.
struct Planned<'a> {
    spec: &'a Container,
    config: cri::ContainerConfig,
}

fn plan<'a>(pod: &Pod, list: &'a [Container], uid: &str) -> Result<Vec<Planned<'a>>> {
    list.iter()
        .map(|c| {
            Ok(Planned {
                spec: c,
                config: manifest::container_config(pod, c, uid)?,
            })
        })
        .collect()
}

pub async fn run(cri: &Cri, args: RunArgs, output: Output) -> Result<ExitCode> {
    let manifest = Manifest::load(&args.manifest, &args.objects)?;
    let pod = manifest.pod.as_ref().context("no Pod in the manifest")?;
    let spec = manifest::spec(pod)?;
    let (name, namespace) = manifest::name_and_namespace(pod)?;
    let uid = kubelet::new_uid()?;
    let log_dir = args.log_root.join(format!("{namespace}_{name}_{uid}"));
    let resolv_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let sandbox = manifest::sandbox_config(pod, &uid, &log_dir, &resolv_conf)?;
    let handler = args
        .runtime
        .clone()
        .or_else(|| spec.runtime_class_name.clone())
        .unwrap_or_default();
    // Every config first: bad input fails before anything is made.
    let init = plan(
        pod,
        spec.init_containers.as_deref().unwrap_or_default(),
        &uid,
    )?;
    let apps = plan(pod, &spec.containers, &uid)?;
    let mut pulled = std::collections::HashSet::new();
    for c in init.iter().chain(&apps) {
        if pulled.insert(c.spec.image.clone()) {
            ensure_image(cri, c.spec, &args, output).await?;
        }
    }

    let mut made = Made {
        pod_dir: PodDir::new(&args.kubelet_root_dir, &uid),
        log_dir,
        pod_id: None,
        containers: Vec::new(),
        grace: spec.termination_grace_period_seconds.unwrap_or(30),
    };
    let result = run_pod(
        cri, &args, &manifest, sandbox, handler, &init, &apps, &mut made, output,
    )
    .await;
    if args.rm || result.is_err() {
        if !made.remove(cri).await && result.is_ok() {
            bail!("the pod ran, but removing it failed");
        }
    } else if let Some(id) = &made.pod_id {
        eprintln!(
            "pod {} left in place; remove it with `hearthctl rmp -f {}` and `rm -r {}`",
            short_id(id, false),
            short_id(id, false),
            made.pod_dir.dir.display()
        );
    }
    result
}

/// Pulls the container's image as its imagePullPolicy says.
async fn ensure_image(cri: &Cri, c: &Container, args: &RunArgs, output: Output) -> Result<()> {
    let image = c.image.clone().unwrap_or_default();
    let policy = manifest::pull_policy(c)?;
    if policy != PullPolicy::Always {
        let present = images::status(cri, &image, false).await?.image.is_some();
        match (present, policy) {
            (true, _) => return Ok(()),
            (false, PullPolicy::Never) => bail!(
                "container {}: image {image} is not present and imagePullPolicy is Never",
                c.name
            ),
            _ => {}
        }
    }
    let pull = PullArgs {
        image,
        creds: None,
        auth: None,
        pod_config: None,
        pull_timeout: args.pull_timeout,
    };
    images::pull(cri, pull, output).await
}

#[allow(clippy::too_many_arguments)]
async fn run_pod(
    cri: &Cri,
    args: &RunArgs,
    manifest: &Manifest,
    sandbox: cri::PodSandboxConfig,
    handler: String,
    init: &[Planned<'_>],
    apps: &[Planned<'_>],
    made: &mut Made,
    output: Output,
) -> Result<ExitCode> {
    let pod = manifest.pod.as_ref().context("no Pod in the manifest")?;
    let spec = manifest::spec(pod)?;
    let volumes = made
        .pod_dir
        .prepare_volumes(spec.volumes.as_deref().unwrap_or_default(), manifest)?;
    std::fs::create_dir_all(&made.log_dir)
        .with_context(|| format!("cannot create {}", made.log_dir.display()))?;
    let request = cri::RunPodSandboxRequest {
        config: Some(sandbox.clone()),
        runtime_handler: handler.clone(),
    };
    let pod_id = cri
        .call(
            "RunPodSandbox",
            cri.runtime().run_pod_sandbox(cri.request(request)),
        )
        .await?
        .pod_sandbox_id;
    made.pod_id = Some(pod_id.clone());
    eprintln!(
        "pod {} ({}) is running, runtime handler {}",
        sandbox.metadata.as_ref().map_or("", |m| m.name.as_str()),
        short_id(&pod_id, false),
        if handler.is_empty() {
            "(default)"
        } else {
            &handler
        }
    );
    let deadline = Instant::now() + args.timeout;
    for c in init {
        let id = create_and_start(cri, &pod_id, &sandbox, c, &volumes, made).await?;
        let exited = tokio::select! {
            r = wait_exited(cri, std::slice::from_ref(&id), deadline) => r?,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        };
        let status = containers::status(cri, &id)
            .await?
            .status
            .unwrap_or_default();
        if !exited || status.exit_code != 0 {
            print_log(cri, &id, &LogOptions::default()).await?;
            bail!(
                "init container {} did not succeed ({})",
                c.spec.name,
                if exited {
                    format!("exit code {}", status.exit_code)
                } else {
                    "still running at --timeout".into()
                }
            );
        }
    }
    let mut ids = Vec::new();
    for c in apps {
        ids.push(create_and_start(cri, &pod_id, &sandbox, c, &volumes, made).await?);
    }

    let all_exited = if args.follow {
        let follow = futures::future::try_join_all(apps.iter().zip(&ids).map(|(c, id)| {
            let options = LogOptions {
                follow: true,
                prefix: format!("[{}] ", c.spec.name),
                ..Default::default()
            };
            async move { print_log(cri, id, &options).await }
        }));
        tokio::select! {
            r = tokio::time::timeout(args.timeout, follow) => match r {
                Ok(followed) => followed.map(|_| true)?,
                Err(_) => false,
            },
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        }
    } else {
        tokio::select! {
            r = wait_exited(cri, &ids, deadline) => r?,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        }
    };

    let statuses = report(cri, &pod_id, &ids, !args.follow, output).await?;
    if !all_exited && !args.timeout.is_zero() {
        eprintln!(
            "hearthctl: containers still running after {} (--timeout)",
            crate::output::format_duration(args.timeout)
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(statuses
        .iter()
        .map(|s| s.exit_code)
        .find(|code| *code != 0)
        .map_or(ExitCode::SUCCESS, exit_code))
}

/// CreateContainer (with the container's mounts) and StartContainer.
async fn create_and_start(
    cri: &Cri,
    pod_id: &str,
    sandbox: &cri::PodSandboxConfig,
    c: &Planned<'_>,
    volumes: &BTreeMap<String, kubelet::HostVolume>,
    made: &mut Made,
) -> Result<String> {
    let mut config = c.config.clone();
    config.mounts = made.pod_dir.mounts(c.spec, volumes)?;
    let only_termination_log = c.spec.volume_mounts.as_ref().is_none_or(Vec::is_empty);
    let created = match containers::create_one(
        cri,
        pod_id.to_string(),
        config.clone(),
        sandbox.clone(),
    )
    .await
    {
        // A hearthd without volume support refuses every mount; the
        // termination-message file is the kubelet's habit, not the pod's
        // need: go on without it, and say so.
        Err(err) if err.status.code() == Code::Unimplemented && only_termination_log => {
            eprintln!(
                "hearthctl: container {}: hearthd takes no mounts yet ({}); running it without its termination-message file",
                c.spec.name,
                err.status.message()
            );
            config.mounts.clear();
            containers::create_one(cri, pod_id.to_string(), config, sandbox.clone()).await
        }
        other => other,
    }
    .with_context(|| format!("container {}", c.spec.name))?;
    let id = created.container_id;
    made.containers.push(id.clone());
    containers::start_one(cri, &id)
        .await
        .with_context(|| format!("container {}", c.spec.name))?;
    Ok(id)
}

/// Waits until every container has exited; false at the deadline.
async fn wait_exited(cri: &Cri, ids: &[String], deadline: Instant) -> Result<bool> {
    loop {
        let mut all = true;
        for id in ids {
            all &= containers::has_exited(cri, id).await?;
        }
        if all {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The pod's state and its containers', for `-o json|yaml`.
#[derive(Serialize)]
struct RunReport {
    pod: Option<cri::PodSandboxStatus>,
    containers: Vec<cri::ContainerStatus>,
}

/// Prints the pod's state, its containers' states and (unless they were
/// followed) their logs; returns the containers' statuses.
async fn report(
    cri: &Cri,
    pod_id: &str,
    ids: &[String],
    logs: bool,
    output: Output,
) -> Result<Vec<cri::ContainerStatus>> {
    let pod = pods::status(cri, pod_id, false).await?.status;
    let mut statuses = Vec::new();
    for id in ids {
        statuses.extend(containers::status(cri, id).await?.status);
    }
    if output != Output::Table {
        print_structured(
            &RunReport {
                pod,
                containers: statuses.clone(),
            },
            output,
        )?;
        return Ok(statuses);
    }
    let pods = pods::list_all(cri).await?;
    let listed: Vec<cri::PodSandbox> = pods.into_iter().filter(|p| p.id == pod_id).collect();
    let mut text = String::from("\n");
    text.push_str(&pods::pods_table(&listed, false, SystemTime::now()));
    text.push('\n');
    text.push_str(&containers_table(&statuses));
    write_out(&text)?;
    if logs {
        for (id, s) in ids.iter().zip(&statuses) {
            let name = s.metadata.as_ref().map_or("", |m| m.name.as_str());
            write_out(&format!("\n==> logs of {name} <==\n"))?;
            print_log(cri, id, &LogOptions::default()).await?;
        }
    }
    Ok(statuses)
}

/// Each container's state, exit code and reason.
fn containers_table(statuses: &[cri::ContainerStatus]) -> String {
    let mut table = Table::new(&["CONTAINER", "NAME", "STATE", "EXIT CODE", "REASON"]);
    for s in statuses {
        let exited = s.state == cri::ContainerState::ContainerExited as i32;
        table.push(vec![
            short_id(&s.id, false),
            s.metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default(),
            containers::state_name(s.state).to_string(),
            if exited {
                s.exit_code.to_string()
            } else {
                String::new()
            },
            s.reason.clone(),
        ]);
    }
    table.render()
}

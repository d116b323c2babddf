//! Benchmark: containers on the namespaces backend, hearthd as its own
//! process, a busybox image from a registry on 127.0.0.1:
//! - CreateContainer+StartContainer and StopContainer+RemoveContainer
//!   latency (min, median, p95 over RUNS runs, 50 by default);
//! - the ExecSync round trip of `true`;
//! - log throughput: MB/s of a container writing lines to stdout, from
//!   StartContainer until the CRI log file holds every line;
//! - volume update propagation: a secret updated on the host the kubelet's
//!   way (new timestamped dir, `..data_tmp` renamed over `..data`) until an
//!   ExecSync `cat` in the container sees the new content (skipped, and
//!   said so, when hearthd takes no mounts).
//!
//! Run: `cargo bench -p hearthd --bench containers` (as root; needs
//! docker-registry, skopeo, mkfs.erofs; the static agent comes from
//! HEARTH_AGENT_BIN or scripts/build-agent.sh).
//! Targets: create+start median ≤ 60 ms, ExecSync of `true` ≤ 15 ms.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/containers.rs"]
mod ctr;
#[path = "../tests/common/kubelet.rs"]
mod kubelet;
#[path = "../../image/tests/common/mod.rs"]
mod registry;
mod support;

use std::time::{Duration, Instant};

use ctr::{container, create, exec, wait_state, EXITED};
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use support::{ms_since, print_row, Hearthd};
use tonic::Code;

type Client = RuntimeServiceClient<tonic::transport::Channel>;

/// Bytes the logging container writes: lines of 100 characters.
const LINE: usize = 101;
const LOG_LINES: usize = 320_000;
/// What the watcher runs to read the secret.
const CAT: [&str; 3] = ["/bin/busybox", "cat", "/etc/token/key"];
/// Secret updates timed.
const UPDATES: usize = 20;

fn main() {
    if let Some(why) = support::cannot_run() {
        println!("containers bench: skipped: {why}");
        return;
    }
    if let Some(why) = registry::need(&["docker-registry", "skopeo", "mkfs.erofs"], true) {
        println!("containers bench: skipped: {why}");
        return;
    }
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(50);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(runs));
}

/// A container of the test image running `command`.
fn with_command(name: &str, image: &str, command: &[&str]) -> cri::ContainerConfig {
    let mut config = container(name, image);
    config.command = command.iter().map(|s| s.to_string()).collect();
    config
}

async fn start(c: &mut Client, id: &str) {
    c.start_container(cri::StartContainerRequest {
        container_id: id.into(),
    })
    .await
    .unwrap();
}

async fn stop_remove(c: &mut Client, id: &str) {
    c.stop_container(cri::StopContainerRequest {
        container_id: id.into(),
        timeout: 0,
    })
    .await
    .unwrap();
    c.remove_container(cri::RemoveContainerRequest {
        container_id: id.into(),
    })
    .await
    .unwrap();
}

async fn run(runs: usize) {
    let (_registry, image) = ctr::registry_with_busybox();
    let (dir, mut config) = support::config("hearth-bench-ctr");
    let kubelet_root = dir.path().join("kubelet");
    config.volumes.kubelet_root_dir = kubelet_root.clone();
    let hearthd = Hearthd::spawn(dir.path(), &config);
    let channel = hearthd.connect().await;
    let mut c = RuntimeServiceClient::new(channel.clone());
    ImageServiceClient::new(channel)
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let logs = dir.path().join("logs");
    let mut sandbox = support::pod("ctr", 0);
    sandbox.log_directory = logs.to_string_lossy().into_owned();
    let uid = sandbox.metadata.as_ref().unwrap().uid.clone();
    let pod = c
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(sandbox.clone()),
            runtime_handler: "namespaces".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    println!("Hearth container benchmark: namespaces backend, one pod, {runs} runs, image {image}");

    // Create+start and stop+remove of `sleep` containers, one at a time.
    let mut create_start = Vec::new();
    let mut stop_rm = Vec::new();
    for i in 0..runs + 2 {
        let cfg = with_command(&format!("c{i}"), &image, &["sleep", "3600"]);
        let t = Instant::now();
        let id = create(&mut c, &pod, cfg, &sandbox).await.unwrap();
        start(&mut c, &id).await;
        let a = ms_since(t);
        let t = Instant::now();
        stop_remove(&mut c, &id).await;
        // The first two warm up caches.
        if i >= 2 {
            create_start.push(a);
            stop_rm.push(ms_since(t));
        }
    }

    // ExecSync round trips.
    let sleeper = create(
        &mut c,
        &pod,
        with_command("sleeper", &image, &["sleep", "3600"]),
        &sandbox,
    )
    .await
    .unwrap();
    start(&mut c, &sleeper).await;
    let mut execs = Vec::new();
    for i in 0..runs * 2 + 3 {
        let t = Instant::now();
        let r = exec(&mut c, &sleeper, &["/bin/busybox", "true"], 10)
            .await
            .unwrap();
        assert_eq!(r.exit_code, 0);
        if i >= 3 {
            execs.push(ms_since(t));
        }
    }
    stop_remove(&mut c, &sleeper).await;

    // Log throughput.
    let bytes = LINE * LOG_LINES;
    // awk rather than `yes | head`: a writer that must die of SIGPIPE would
    // not here (the container inherits SIGPIPE ignored from the agent).
    let script = format!(
        "busybox awk 'BEGIN {{ for (i = 0; i < {LOG_LINES}; i++) print \"{}\" }}'",
        "x".repeat(LINE - 1)
    );
    let logger = create(
        &mut c,
        &pod,
        with_command("logger", &image, &["/bin/sh", "-c", &script]),
        &sandbox,
    )
    .await
    .unwrap();
    let log_file = logs.join("logger/0.log");
    let t = Instant::now();
    start(&mut c, &logger).await;
    wait_state(&mut c, &logger, EXITED).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let log_secs = loop {
        let text = std::fs::read(&log_file).unwrap_or_default();
        let lines = text.iter().filter(|b| **b == b'\n').count();
        if lines >= LOG_LINES {
            break t.elapsed().as_secs_f64();
        }
        assert!(
            Instant::now() < deadline,
            "the log has {lines} of {LOG_LINES} lines"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    stop_remove(&mut c, &logger).await;

    // Volume update propagation.
    let secret = kubelet::volume_dir(&kubelet_root, &uid, "secret", "token");
    kubelet::write_atomic(&secret, &[("key", "v0")]);
    let mut watcher_cfg = with_command("watcher", &image, &["sleep", "3600"]);
    watcher_cfg.mounts = vec![cri::Mount {
        container_path: "/etc/token".into(),
        host_path: secret.to_string_lossy().into_owned(),
        readonly: true,
        ..Default::default()
    }];
    let mut propagation = Vec::new();
    let skipped = match create(&mut c, &pod, watcher_cfg, &sandbox).await {
        Err(s) if s.code() == Code::Unimplemented => Some(s.message().to_string()),
        Err(s) => panic!("CreateContainer with a secret mount: {s:?}"),
        Ok(watcher) => {
            start(&mut c, &watcher).await;
            let first = exec(&mut c, &watcher, &CAT, 10).await.unwrap();
            assert_eq!(String::from_utf8_lossy(&first.stdout), "v0");
            for i in 1..=UPDATES {
                let want = format!("v{i}");
                let t = Instant::now();
                kubelet::write_atomic(&secret, &[("key", &want)]);
                let limit = Instant::now() + Duration::from_secs(10);
                loop {
                    let r = exec(&mut c, &watcher, &CAT, 10).await.unwrap();
                    if r.stdout == want.as_bytes() {
                        break;
                    }
                    assert!(Instant::now() < limit, "{want} never reached the container");
                }
                propagation.push(ms_since(t));
            }
            stop_remove(&mut c, &watcher).await;
            None
        }
    };

    c.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .unwrap();
    c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await
    .unwrap();
    drop(c);
    drop(hearthd);

    println!();
    println!(
        "{:<40} {:>9} {:>9} {:>9}",
        "operation", "min ms", "median ms", "p95 ms"
    );
    print_row("CreateContainer+StartContainer", &create_start);
    print_row("StopContainer+RemoveContainer", &stop_rm);
    print_row("ExecSync `true`", &execs);
    match &skipped {
        None => print_row(
            &format!("secret update → seen in container ({UPDATES})"),
            &propagation,
        ),
        Some(why) => {
            println!("secret update propagation: skipped: hearthd takes no mounts yet ({why})")
        }
    }
    println!();
    println!(
        "log throughput: {:.1} MB in {:.2} s = {:.1} MB/s (start to the last line in the CRI log file)",
        bytes as f64 / 1e6,
        log_secs,
        bytes as f64 / 1e6 / log_secs
    );
    let (_, cs, _) = support::stats(&create_start);
    let (_, ex, _) = support::stats(&execs);
    println!(
        "targets: create+start median {cs:.1} ms (≤ 60: {}), ExecSync `true` median {ex:.1} ms (≤ 15: {})",
        if cs <= 60.0 { "met" } else { "MISSED" },
        if ex <= 15.0 { "met" } else { "MISSED" },
    );
}

//! Benchmark: containers in one pod (the namespaces handler, or with
//! `HANDLER=qemu` a QEMU guest, TCG on these machines), hearthd as its own
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
#[path = "../tests/common/qemu.rs"]
mod vm;

use std::time::{Duration, Instant};

use common::{run_pod_on, stop_and_remove_pod, Client};
use ctr::{
    container, create, create_and_start, exec, mount, start, stop_and_remove, wait_state, EXITED,
};
use k8s_cri::v1 as cri;
use support::{ms_since, print_row, Hearthd};
use tonic::Code;

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
    support::block_on(run(support::count("RUNS", 50)));
}

/// A container of the test image running `command`.
fn with_command(name: &str, image: &str, command: &[&str]) -> cri::ContainerConfig {
    let mut config = container(name, image);
    config.command = command.iter().map(|s| s.to_string()).collect();
    config
}

async fn run(runs: usize) {
    let (_registry, image) = ctr::registry_with_busybox();
    let (dir, mut config) = support::config("hearth-bench-ctr");
    let handler = std::env::var("HANDLER").unwrap_or_else(|_| "namespaces".into());
    if handler == vm::HANDLER {
        let Ok(bundle) = vm::prerequisites("containers bench") else {
            return;
        };
        config.qemu.kernel = bundle.kernel;
        config.qemu.initramfs = bundle.initramfs;
        config.qemu.accel = "auto".into();
        config.timeouts.boot_ms = 60_000;
    }
    let kubelet_root = dir.path().join("kubelet");
    config.volumes.kubelet_root_dir = kubelet_root.clone();
    let hearthd = Hearthd::spawn(dir.path(), &config);
    let channel = hearthd.connect().await;
    let mut c = Client::new(channel.clone());
    ctr::pull(&channel, &image).await;
    let logs = dir.path().join("logs");
    let mut sandbox = support::pod("ctr", 0);
    sandbox.log_directory = logs.to_string_lossy().into_owned();
    let uid = sandbox.metadata.as_ref().unwrap().uid.clone();
    let t = Instant::now();
    let pod = run_pod_on(&mut c, &sandbox, &handler).await;
    let pod_ms = ms_since(t);
    println!("Hearth container benchmark: {handler} handler, one pod, {runs} runs, image {image}");
    println!("RunPodSandbox of that pod: {pod_ms:.1} ms");

    // Create+start and stop+remove of `sleep` containers, one at a time.
    let mut create_start = Vec::new();
    let mut stop_rm = Vec::new();
    for i in 0..runs + 2 {
        let cfg = with_command(&format!("c{i}"), &image, &["sleep", "3600"]);
        let t = Instant::now();
        let id = create_and_start(&mut c, &pod, cfg, &sandbox).await;
        let a = ms_since(t);
        let t = Instant::now();
        stop_and_remove(&mut c, &id).await;
        // The first two warm up caches.
        if i >= 2 {
            create_start.push(a);
            stop_rm.push(ms_since(t));
        }
    }

    // ExecSync round trips.
    let sleeper = create_and_start(
        &mut c,
        &pod,
        with_command("sleeper", &image, &["sleep", "3600"]),
        &sandbox,
    )
    .await;
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
    stop_and_remove(&mut c, &sleeper).await;

    // Log throughput.
    let bytes = LINE * LOG_LINES;
    // Lines of a known count and length, written as fast as awk can.
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
    stop_and_remove(&mut c, &logger).await;

    // Volume update propagation.
    let secret = kubelet::volume_dir(&kubelet_root, &uid, "secret", "token");
    kubelet::write_atomic(&secret, &[("key", "v0")]);
    let mut watcher_cfg = with_command("watcher", &image, &["sleep", "3600"]);
    watcher_cfg.mounts = vec![mount(&secret, "/etc/token", true)];
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
            stop_and_remove(&mut c, &watcher).await;
            None
        }
    };

    stop_and_remove_pod(&mut c, &pod).await.unwrap();
    drop(c);
    drop(hearthd);

    println!();
    support::print_header();
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

//! Benchmark: RunPodSandbox and Stop+Remove latency (min, median, p95) over
//! 50 loopback-only pods (CNI: the loopback plugin alone), sequential and 8 in parallel, on the namespaces
//! backend, with hearthd as its own process; hearthd's RSS and the host
//! memory per sandbox (agent RSS + hearthd's growth per pod).
//!
//! Run: `cargo bench -p hearthd --bench sandbox` (as root; the static agent
//! comes from HEARTH_AGENT_BIN or scripts/build-agent.sh). `PODS=n` changes
//! the count.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::time::Instant;

use common::{agent_pid, run_pod_on, stop_and_remove_pod, Client};
use support::{ms_since, print_row, rss_kib, Hearthd};

fn main() {
    if let Some(why) = support::cannot_run() {
        println!("sandbox bench: skipped: {why}");
        return;
    }
    support::block_on(run(support::count("PODS", 50)));
}

async fn run(pods: usize) {
    let (dir, config) = support::config("hearth-bench");
    let hearthd = Hearthd::spawn(dir.path(), &config);
    let mut client = Client::new(hearthd.connect().await);
    let hearthd_pid = hearthd.pid();
    let idle_rss = rss_kib(hearthd_pid);

    println!("Hearth sandbox benchmark: namespaces backend, {pods} loopback-only pods, scratch disk {} MiB (sparse)", config.scratch.size_mib);
    // Warm-up: the scratch template and caches.
    let ids = run_pods(&client, "warm", 2, 1).await.1;
    stop_remove(&client, &ids, 1).await;

    let (run_seq, ids) = run_pods(&client, "seq", pods, 1).await;
    let agents: Vec<u32> = {
        let mut v = Vec::new();
        for id in &ids {
            v.push(agent_pid(&mut client, id).await);
        }
        v
    };
    let busy_rss = rss_kib(hearthd_pid);
    let agent_rss: Vec<u64> = agents.iter().map(|p| rss_kib(*p)).collect();
    let agent_mean = agent_rss.iter().sum::<u64>() as f64 / agent_rss.len() as f64;
    let hearthd_per_pod = (busy_rss.saturating_sub(idle_rss)) as f64 / pods as f64;
    let stop_seq = stop_remove(&client, &ids, 1).await;

    let (run_par, ids) = run_pods(&client, "par", pods, 8).await;
    let stop_par = stop_remove(&client, &ids, 8).await;

    println!();
    support::print_header();
    print_row("RunPodSandbox, sequential", &run_seq);
    print_row("Stop+RemovePodSandbox, sequential", &stop_seq);
    print_row("RunPodSandbox, 8 in parallel", &run_par);
    print_row("Stop+RemovePodSandbox, 8 parallel", &stop_par);
    println!();
    println!(
        "hearthd RSS idle: {:.1} MiB; with {pods} sandboxes: {:.1} MiB",
        idle_rss as f64 / 1024.0,
        busy_rss as f64 / 1024.0
    );
    println!(
        "per sandbox: agent RSS {:.2} MiB + hearthd growth {:.2} MiB = {:.2} MiB",
        agent_mean / 1024.0,
        hearthd_per_pod / 1024.0,
        (agent_mean + hearthd_per_pod) / 1024.0
    );

    drop(client);
    drop(hearthd);
}

/// Runs `n` pods named `<prefix>-<i>`, `parallel` at a time: the latency
/// of each RunPodSandbox (ms) and the pods' ids.
async fn run_pods(
    client: &Client,
    prefix: &str,
    n: usize,
    parallel: usize,
) -> (Vec<f64>, Vec<String>) {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..parallel {
        let mut c = client.clone();
        let next = next.clone();
        let prefix = prefix.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= n {
                    return out;
                }
                let t = Instant::now();
                let id = run_pod_on(&mut c, &support::pod(&prefix, i), "namespaces").await;
                out.push((ms_since(t), id));
            }
        }));
    }
    let mut samples = Vec::new();
    let mut ids = Vec::new();
    for t in tasks {
        for (ms, id) in t.await.unwrap() {
            samples.push(ms);
            ids.push(id);
        }
    }
    (samples, ids)
}

/// Stops and removes the pods `ids`, `parallel` at a time: the latency of
/// each Stop+Remove (ms).
async fn stop_remove(client: &Client, ids: &[String], parallel: usize) -> Vec<f64> {
    let chunks: Vec<Vec<String>> = ids
        .chunks(ids.len().div_ceil(parallel).max(1))
        .map(|c| c.to_vec())
        .collect();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for id in chunk {
                let t = Instant::now();
                stop_and_remove_pod(&mut c, &id).await.unwrap();
                out.push(ms_since(t));
            }
            out
        }));
    }
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await.unwrap());
    }
    samples
}

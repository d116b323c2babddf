//! Benchmark: RunPodSandbox and Stop+Remove latency (min, median, p95) over
//! 50 loopback-only pods (CNI: the loopback plugin alone), sequential and 8 in parallel, on the namespaces
//! backend, with hearthd as its own process; hearthd's RSS and the host
//! memory per sandbox (agent RSS + hearthd's growth per pod).
//!
//! Run: `cargo bench -p hearthd --bench sandbox` (as root; the static agent
//! comes from HEARTH_AGENT_BIN or scripts/build-agent.sh). `PODS=n` changes
//! the count.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

fn main() {
    if !hearth_test_support::is_root() {
        println!("sandbox bench: skipped: needs root");
        return;
    }
    let agent = match hearth_test_support::agent_binary() {
        Ok(a) => a,
        Err(e) => {
            println!("sandbox bench: skipped: no agent binary: {e}");
            return;
        }
    };
    let pods: usize = std::env::var("PODS")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(50);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(agent, pods));
}

async fn run(agent: std::path::PathBuf, pods: usize) {
    let dir = tempfile::Builder::new()
        .prefix("hearth-bench")
        .tempdir()
        .unwrap();
    let tag = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut config = hearthd::config::Config {
        address: dir.path().join("hearth.sock"),
        root: dir.path().join("root"),
        state: dir.path().join("state"),
        default_runtime_handler: "namespaces".into(),
        log_level: "warn".into(),
        ..Default::default()
    };
    config.namespaces.agent_binary = agent;
    config.network.netns_dir = dir.path().join("netns");
    config.cgroups.default_parent = format!("/{tag}");
    // Loopback-only pods: a CNI network of just the loopback plugin.
    let cni = dir.path().join("cni");
    std::fs::create_dir_all(&cni).unwrap();
    std::fs::write(
        cni.join("10-loopback.conflist"),
        r#"{"cniVersion": "1.0.0", "name": "bench-lo", "plugins": [{"type": "loopback"}]}"#,
    )
    .unwrap();
    config.network.cni_conf_dir = cni;
    config.network.cni_bin_dirs = vec!["/usr/lib/cni".into(), "/opt/cni/bin".into()];
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
    let mut hearthd = Command::new(env!("CARGO_BIN_EXE_hearthd"))
        .arg("--config")
        .arg(&config_path)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut client = connect(&config.address).await;
    let hearthd_pid = hearthd.id();
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
    println!(
        "{:<34} {:>9} {:>9} {:>9}",
        "operation", "min ms", "median ms", "p95 ms"
    );
    for (name, samples) in [
        ("RunPodSandbox, sequential", &run_seq),
        ("Stop+RemovePodSandbox, sequential", &stop_seq),
        ("RunPodSandbox, 8 in parallel", &run_par),
        ("Stop+RemovePodSandbox, 8 parallel", &stop_par),
    ] {
        let (min, med, p95) = stats(samples);
        println!("{name:<34} {min:>9.1} {med:>9.1} {p95:>9.1}");
    }
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
    // SAFETY: plain signal to our child.
    unsafe { libc::kill(hearthd_pid as i32, libc::SIGTERM) };
    let _ = hearthd.wait();
    let d =
        std::ffi::CString::new(config.network.netns_dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: umount2 with a valid C string.
    unsafe { libc::umount2(d.as_ptr(), libc::MNT_DETACH) };
}

async fn connect(socket: &std::path::Path) -> RuntimeServiceClient<Channel> {
    for _ in 0..400 {
        if let Ok(ch) = hearth_test_support::cri_channel(socket).await {
            let mut c = RuntimeServiceClient::new(ch);
            if c.version(cri::VersionRequest::default()).await.is_ok() {
                return c;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("hearthd did not come up");
}

fn pod(prefix: &str, i: usize) -> cri::RunPodSandboxRequest {
    cri::RunPodSandboxRequest {
        config: Some(cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: format!("{prefix}-{i}"),
                uid: format!("uid-{prefix}-{i}"),
                namespace: "bench".into(),
                attempt: 0,
            }),
            hostname: format!("{prefix}-{i}"),
            ..Default::default()
        }),
        runtime_handler: "namespaces".into(),
    }
}

async fn run_pods(
    client: &RuntimeServiceClient<Channel>,
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
                let id = c
                    .run_pod_sandbox(pod(&prefix, i))
                    .await
                    .unwrap()
                    .into_inner()
                    .pod_sandbox_id;
                out.push((t.elapsed().as_secs_f64() * 1000.0, id));
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

async fn stop_remove(
    client: &RuntimeServiceClient<Channel>,
    ids: &[String],
    parallel: usize,
) -> Vec<f64> {
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
                c.stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await
                .unwrap();
                c.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
                    .await
                    .unwrap();
                out.push(t.elapsed().as_secs_f64() * 1000.0);
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

async fn agent_pid(client: &mut RuntimeServiceClient<Channel>, id: &str) -> u32 {
    let r = client
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&r.info["info"]).unwrap();
    info["backendState"]["agent_pid"].as_u64().unwrap() as u32
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn stats(samples: &[f64]) -> (f64, f64, f64) {
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| s[((s.len() as f64 - 1.0) * q).round() as usize];
    (s[0], at(0.5), at(0.95))
}

//! Benchmark: the host-side cost of a Firecracker pod, from Hearth's own
//! trace event ("firecracker vm started", logged when InstanceStart is
//! accepted): time from RunPodSandbox to InstanceStart accepted, minus the
//! Firecracker API calls themselves (waiting for the API socket, the
//! configuration calls, InstanceStart), with the jailer spawn (which
//! copies the firecracker binary into the jail) and the manager's steps
//! before the backend (netns, CNI, cgroup, scratch disk) reported apart.
//!
//! hearthd runs in-process (the bench reads its trace events) with
//! loopback-only pods. On a PVM host the guest never boots: the bench sets
//! `allow_pvm` and a short agent deadline, and only the path up to
//! InstanceStart counts.
//!
//! Run: `cargo bench -p hearthd --bench firecracker` as root, with
//! HEARTH_FIRECRACKER / HEARTH_JAILER / HEARTH_SECCOMP_FILTER /
//! HEARTH_GUEST_DIR as for the tests (`tests/firecracker.rs`). `PODS=n`
//! changes the count (20).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/firecracker.rs"]
mod fcenv;
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tracing_subscriber::layer::SubscriberExt;

/// The fields of one "firecracker vm started" event and when it came.
#[derive(Debug, Default, Clone)]
struct Started {
    at: Option<Instant>,
    spawn_us: u64,
    ready_us: u64,
    config_us: u64,
    start_us: u64,
    total_us: u64,
    matched: bool,
}

impl tracing::field::Visit for Started {
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        match field.name() {
            "spawn_us" => self.spawn_us = value,
            "ready_us" => self.ready_us = value,
            "config_us" => self.config_us = value,
            "start_us" => self.start_us = value,
            "total_us" => self.total_us = value,
            _ => {}
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" && value == "firecracker vm started" {
            self.matched = true;
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" && format!("{value:?}") == "firecracker vm started" {
            self.matched = true;
        }
    }
}

/// Keeps every "firecracker vm started" event.
struct Capture(Arc<Mutex<Vec<Started>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut s = Started::default();
        event.record(&mut s);
        if s.matched {
            s.at = Some(Instant::now());
            self.0.lock().unwrap().push(s);
        }
    }
}

fn main() {
    if let Some(why) = support::cannot_run() {
        println!("firecracker bench: skipped: {why}");
        return;
    }
    let Some(fc) = fcenv::prerequisites("firecracker bench") else {
        return;
    };
    let pods = support::count("PODS", 20);
    let events = Arc::new(Mutex::new(Vec::new()));
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(Capture(events.clone())),
    )
    .unwrap();
    support::block_on(run(fc, pods, events));
}

async fn run(fc: fcenv::Fc, pods: usize, events: Arc<Mutex<Vec<Started>>>) {
    let (dir, mut config) = support::config("hearth-fc-bench");
    config.firecracker = fcenv::fc_config(&fc, true);
    config.timeouts.boot_ms = 2_000;
    let runtime = hearthd::build(&config).await.expect("build");
    let listener = hearthd::bind(&config.address).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(hearthd::serve(listener, runtime, async {
        let _ = stopped.await;
    }));
    let channel = hearth_test_support::cri_channel(&config.address)
        .await
        .unwrap();
    let mut client = RuntimeServiceClient::new(channel);

    let (mut host, mut before_backend, mut spawn, mut api) = (vec![], vec![], vec![], vec![]);
    for i in 0..pods {
        let seen = events.lock().unwrap().len();
        let t0 = Instant::now();
        // The guest cannot answer on a PVM host: the call fails after
        // InstanceStart, when the agent wait ends.
        let res = client
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(support::pod("fcbench", i)),
                runtime_handler: "firecracker".into(),
            })
            .await;
        let Some(e) = events.lock().unwrap().get(seen).cloned() else {
            println!("pod {i}: no InstanceStart ({res:?}); stopping");
            break;
        };
        let to_start = e.at.unwrap().duration_since(t0);
        let api_calls = Duration::from_micros(e.ready_us + e.config_us + e.start_us);
        host.push(to_start.saturating_sub(api_calls).as_secs_f64() * 1e3);
        before_backend.push(
            to_start
                .saturating_sub(Duration::from_micros(e.total_us))
                .as_secs_f64()
                * 1e3,
        );
        spawn.push(e.spawn_us as f64 / 1e3);
        api.push(api_calls.as_secs_f64() * 1e3);
        for p in common::list_pods(&mut client, None).await {
            let _ = common::stop_and_remove_pod(&mut client, &p.id).await;
        }
    }
    println!("firecracker bench: {} pods (jailed)", host.len());
    if host.is_empty() {
        return;
    }
    support::print_header();
    support::print_row("to InstanceStart minus API calls", &host);
    support::print_row("  of it: manager before the backend", &before_backend);
    support::print_row("  of it: jailer spawn (binary copy)", &spawn);
    support::print_row("API calls (socket wait, config, start)", &api);
    drop(client);
    let _ = stop.send(());
    let _ = server.await;
    support::unmount_netns_dir(&config.network.netns_dir);
    drop(dir);
}

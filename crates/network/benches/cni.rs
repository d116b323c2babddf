//! Benchmark: pod network setup + teardown per pod (CNI ADD + DEL of a
//! bridge + host-local chain into a fresh netns) through hearth-network,
//! beside the same plugin chain run directly by a shell script, reported as
//! a ratio. Needs root and Debian's containernetworking-plugins.
//!
//! Run: `cargo bench -p hearth-network --bench cni` (`PODS=n` to change the
//! count, default 30).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hearth_network::{Cni, CniConfig, NetnsManager, PodNetworkRequest};

const PLUGINS: &str = "/usr/lib/cni";

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !Path::new(PLUGINS).join("bridge").exists() {
        println!(
            "cni bench: skipped: needs root and {PLUGINS}/bridge (containernetworking-plugins)"
        );
        return;
    }
    let pods: usize = std::env::var("PODS")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(30);
    let dir = tempfile::Builder::new()
        .prefix("hearth-cni-bench")
        .tempdir()
        .unwrap();
    let bridge = format!("hbb{}", std::process::id() % 100_000);
    let conf_dir = dir.path().join("conf");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "bench",
        "plugins": [{
            "type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
            "ipam": { "type": "host-local", "ranges": [[{ "subnet": "10.211.0.0/16" }]],
                      "dataDir": dir.path().join("ipam") }
        }]
    });
    std::fs::write(conf_dir.join("10-bench.conflist"), conf.to_string()).unwrap();
    let netns = NetnsManager::new(dir.path().join("netns"));
    let cni = Cni::new(CniConfig {
        conf_dir,
        bin_dirs: vec![PathBuf::from(PLUGINS)],
        plugin_timeout: Duration::from_secs(30),
        ..CniConfig::default()
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // Hearth: ADD + DEL through the library (netns made outside the timing).
    let mut hearth = Vec::new();
    for i in 0..pods + 2 {
        let name = format!("bench-{i}");
        let path = netns.create(&name).unwrap();
        let req = PodNetworkRequest {
            sandbox_id: format!("{i:064x}"),
            pod_name: name.clone(),
            pod_namespace: "bench".into(),
            pod_uid: format!("uid-{i}"),
            netns_path: path.clone(),
            port_mappings: vec![],
            bandwidth: None,
            dns: None,
        };
        let t = Instant::now();
        let net = rt.block_on(cni.setup(&req)).unwrap();
        rt.block_on(cni.teardown(&net, &path)).unwrap();
        if i >= 2 {
            hearth.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        netns.remove(&name).unwrap();
    }

    // The same chain from a shell script: the plugin binary with the
    // network config (name and cniVersion added, as CNI asks) on stdin.
    let plugin_conf = {
        let mut p = conf["plugins"][0].clone();
        p["name"] = "bench".into();
        p["cniVersion"] = "1.0.0".into();
        p.to_string()
    };
    let script = dir.path().join("cni.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nset -e\nexport CNI_CONTAINERID=$1 CNI_NETNS=$2 CNI_IFNAME=eth0 CNI_PATH={PLUGINS}\n\
             echo '{plugin_conf}' | CNI_COMMAND=ADD {PLUGINS}/bridge >/dev/null\n\
             echo '{plugin_conf}' | CNI_COMMAND=DEL {PLUGINS}/bridge >/dev/null\n"
        ),
    )
    .unwrap();
    let mut script_ms = Vec::new();
    for i in 0..pods + 2 {
        let name = format!("script-{i}");
        let path = netns.create(&name).unwrap();
        let t = Instant::now();
        let ok = Command::new("sh")
            .arg(&script)
            .arg(format!("s{i:063x}"))
            .arg(&path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "the script's plugin chain failed");
        if i >= 2 {
            script_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        netns.remove(&name).unwrap();
    }
    let _ = netns.unmount_dir();
    let _ = Command::new("ip").args(["link", "del", &bridge]).status();

    let (hm, hp) = stats(&hearth);
    let (sm, sp) = stats(&script_ms);
    println!("CNI setup + teardown per pod (bridge + host-local), {pods} pods");
    println!("{:<28} {:>10} {:>10}", "", "median ms", "p95 ms");
    println!("{:<28} {:>10.1} {:>10.1}", "hearth-network", hm, hp);
    println!(
        "{:<28} {:>10.1} {:>10.1}",
        "shell script, same chain", sm, sp
    );
    println!("ratio (median): {:.2}", hm / sm);
}

fn stats(samples: &[f64]) -> (f64, f64) {
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| s[((s.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.95))
}

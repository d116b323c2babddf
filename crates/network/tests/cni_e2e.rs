//! CNI end to end with Debian's real plugins (bridge, host-local, portmap,
//! loopback) on a bridge the test creates, plus fake plugins for the failure
//! paths. Needs root and `containernetworking-plugins`; iptables checks run
//! when `iptables-save` exists.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{fetch, must, require, run, serve_once, unique, LinkGuard, Namespaces};
use hearth_network::{
    create_tap_redirect, remove_tap_redirect, run_in_netns, Cni, CniConfig, NetworkError,
    PodNetwork, PodNetworkRequest, PortMapping, Protocol, TapOwner,
};

const PLUGINS: &str = "/usr/lib/cni";

/// A conf dir, fake-plugin dir, IPAM data dir and bridge, all removed on
/// drop (the bridge via its guard).
struct Fixture {
    tmp: tempfile::TempDir,
    bridge: String,
    subnet_prefix: String,
    net_name: String,
    nss: Namespaces,
    _bridge_guard: LinkGuard,
}

impl Fixture {
    fn new(test: &str) -> Option<Fixture> {
        require(test, &[PLUGINS, "/usr/sbin/ip"])?;
        for p in ["bridge", "host-local", "portmap", "loopback"] {
            if !Path::new(PLUGINS).join(p).exists() {
                eprintln!("skipping {test}: {PLUGINS}/{p} missing (containernetworking-plugins)");
                return None;
            }
        }
        let tmp = tempfile::tempdir().unwrap();
        for d in ["conf", "bin", "ipam"] {
            std::fs::create_dir(tmp.path().join(d)).unwrap();
        }
        let bridge = unique("hbr");
        must(&["ip", "link", "add", "name", &bridge, "type", "bridge"]);
        let guard = LinkGuard(bridge.clone());
        must(&["ip", "link", "set", &bridge, "up"]);
        // A /24 unlikely to clash with anything else on the machine.
        let pid = std::process::id();
        let subnet_prefix = format!(
            "10.{}.{}",
            150 + pid % 100,
            bridge.as_bytes()[bridge.len() - 1]
        );
        Some(Fixture {
            net_name: format!("hearth-test-{bridge}"),
            tmp,
            bridge,
            subnet_prefix,
            nss: Namespaces::new(),
            _bridge_guard: guard,
        })
    }

    fn conf_dir(&self) -> PathBuf {
        self.tmp.path().join("conf")
    }

    fn ipam_dir(&self) -> PathBuf {
        self.tmp.path().join("ipam")
    }

    fn log(&self) -> PathBuf {
        self.tmp.path().join("fake.log")
    }

    fn cni(&self, timeout: Duration, loopback: bool) -> Cni {
        Cni::new(CniConfig {
            conf_dir: self.conf_dir(),
            bin_dirs: vec![self.tmp.path().join("bin"), PathBuf::from(PLUGINS)],
            plugin_timeout: timeout,
            ifname: "eth0".into(),
            loopback,
        })
    }

    /// Writes the conflist: bridge + host-local, portmap, then `extra`.
    fn write_conf(&self, extra: &[&str]) {
        let mut plugins = vec![
            serde_json::json!({
                "type": "bridge", "bridge": self.bridge, "isGateway": true,
                "ipMasq": false, "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": format!("{}.0/24", self.subnet_prefix)}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": self.ipam_dir(),
                }
            }),
            serde_json::json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}),
        ];
        plugins.extend(extra.iter().map(|t| serde_json::json!({ "type": t })));
        let conf = serde_json::json!({
            "cniVersion": "1.0.0", "name": self.net_name, "plugins": plugins,
        });
        std::fs::write(
            self.conf_dir().join("10-test.conflist"),
            serde_json::to_vec_pretty(&conf).unwrap(),
        )
        .unwrap();
    }

    /// A fake plugin: `add` is the shell run for ADD; DEL succeeds. Every
    /// call is logged.
    fn fake_plugin(&self, name: &str, add: &str) {
        let script = format!(
            "#!/bin/sh\necho \"$CNI_COMMAND {name}\" >> {log}\ncase \"$CNI_COMMAND\" in\n\
             ADD) {add} ;;\nDEL) exit 0 ;;\n\
             VERSION) echo '{{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[\"1.0.0\"]}}' ;;\nesac\n",
            log = self.log().display()
        );
        let path = self.tmp.path().join("bin").join(name);
        hearth_test_support::write_executable(&path, &script);
    }

    fn request(&mut self, host_port: Option<u16>) -> PodNetworkRequest {
        let id = unique("sb");
        let sandbox_id = format!("{id}0123456789abcdef");
        let netns_path = self.nss.create(&id);
        PodNetworkRequest {
            sandbox_id,
            pod_name: format!("pod-{id}"),
            pod_namespace: "default".into(),
            pod_uid: format!("uid-{id}"),
            netns_path,
            port_mappings: host_port
                .map(|hp| PortMapping {
                    protocol: Protocol::Tcp,
                    container_port: 8080,
                    host_port: hp,
                    host_ip: Some("127.0.0.1".parse().unwrap()),
                })
                .into_iter()
                .collect(),
            bandwidth: None,
            dns: None,
        }
    }

    /// Asserts nothing of `sandbox_id` is left on the host.
    fn assert_clean(&self, sandbox_id: &str) {
        let (_, veths) = run(&["ip", "-o", "link", "show", "master", &self.bridge]);
        assert!(
            veths.trim().is_empty(),
            "veths left on {}: {veths}",
            self.bridge
        );
        let dir = self.ipam_dir().join(&self.net_name);
        let leases: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            leases.is_empty(),
            "IPs still allocated in {}: {leases:?}",
            dir.display()
        );
        if let Some(rules) = iptables_save() {
            let left: Vec<&str> = rules.lines().filter(|l| l.contains(sandbox_id)).collect();
            assert!(left.is_empty(), "iptables rules left: {left:?}");
        }
    }
}

fn iptables_save() -> Option<String> {
    if !Path::new("/usr/sbin/iptables-save").exists() {
        return None;
    }
    Some(must(&["iptables-save"]))
}

/// The pod's primary IPv4 address.
fn ipv4(net: &PodNetwork) -> IpAddr {
    net.ips()[0].addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pods_reach_each_other_port_mapping_works_and_teardown_frees_all() {
    let Some(mut fx) = Fixture::new("two_pods_reach_each_other") else {
        return;
    };
    fx.write_conf(&[]);
    let cni = fx.cni(Duration::from_secs(30), true);
    cni.status().unwrap();

    let host_port = 20000 + (std::process::id() % 20000) as u16;
    let req_a = fx.request(Some(host_port));
    let req_b = fx.request(None);
    let net_a = cni.setup(&req_a).await.unwrap();
    let net_b = cni.setup(&req_b).await.unwrap();
    assert_eq!(net_a.networks.len(), 2, "loopback + main network");
    let (ip_a, ip_b) = (ipv4(&net_a), ipv4(&net_b));
    assert_ne!(ip_a, ip_b);
    for ip in [ip_a, ip_b] {
        assert!(
            ip.to_string()
                .starts_with(&format!("{}.", fx.subnet_prefix)),
            "{ip}"
        );
    }
    let result = net_a.result().unwrap();
    assert_eq!(result.cni_version, "1.0.0");
    assert!(result
        .interfaces
        .iter()
        .any(|i| i.name == "eth0" && i.in_sandbox()));

    // Pod A → pod B over the bridge, from a thread inside A's namespace.
    let server = serve_once(&req_b.netns_path, 9090, "pong");
    let reply = run_in_netns(&req_a.netns_path, move || {
        fetch(SocketAddr::new(ip_b, 9090))
    })
    .unwrap()
    .unwrap();
    assert_eq!(reply, "pong");
    server.join().unwrap();

    // Host 127.0.0.1:<host_port> → pod A :8080 through portmap.
    let server = serve_once(&req_a.netns_path, 8080, "hello");
    let reply = fetch(SocketAddr::from(([127, 0, 0, 1], host_port)));
    assert_eq!(
        reply.unwrap(),
        "hello",
        "port mapping 127.0.0.1:{host_port} → {ip_a}:8080"
    );
    server.join().unwrap();
    if let Some(rules) = iptables_save() {
        assert!(rules.contains(&req_a.sandbox_id), "portmap rules not found");
    }

    // The firecracker backend's tap on the CNI interface: what the guest
    // needs matches the CNI result.
    let info = create_tap_redirect(&req_a.netns_path, "eth0", "tap0", Some(TapOwner::uid(4242)))
        .await
        .unwrap();
    assert_eq!(info.ips, net_a.ips());
    let gw: IpAddr = format!("{}.1", fx.subnet_prefix).parse().unwrap();
    assert_eq!(info.gateway.map(IpAddr::V4), Some(gw));
    let eth0 = result.interfaces.iter().find(|i| i.name == "eth0").unwrap();
    assert_eq!(Some(&info.mac), eth0.mac.as_ref());
    remove_tap_redirect(&req_a.netns_path, "eth0", "tap0")
        .await
        .unwrap();

    // The record survives persistence and a config change: DEL uses it.
    let saved = serde_json::to_string(&net_a).unwrap();
    std::fs::remove_file(fx.conf_dir().join("10-test.conflist")).unwrap();
    assert!(cni.status().is_err());
    let restored: PodNetwork = serde_json::from_str(&saved).unwrap();
    cni.teardown(&restored, &req_a.netns_path).await.unwrap();
    cni.teardown(&restored, &req_a.netns_path).await.unwrap();
    let (_, links) = common::in_ns(&req_a.netns_path, &["ip", "-o", "link", "show"]);
    assert!(!links.contains("eth0"), "eth0 left in pod A: {links}");

    // Pod B's namespace disappears before teardown: DEL still frees its IP.
    fx.nss
        .mgr
        .remove(req_b.netns_path.file_name().unwrap().to_str().unwrap())
        .unwrap();
    cni.teardown(&net_b, &req_b.netns_path).await.unwrap();

    fx.assert_clean(&req_a.sandbox_id);
    fx.assert_clean(&req_b.sandbox_id);
}

#[tokio::test]
async fn no_config_means_not_ready_and_setup_fails_cleanly() {
    let Some(mut fx) = Fixture::new("no_config_means_not_ready") else {
        return;
    };
    let cni = fx.cni(Duration::from_secs(10), false);
    let reason = cni.status().unwrap_err().to_string();
    assert!(
        reason.contains("no CNI network config") && reason.contains("conf"),
        "{reason}"
    );
    let req = fx.request(None);
    let err = cni.setup(&req).await.unwrap_err();
    assert!(matches!(err, NetworkError::NoNetworkConfig { .. }), "{err}");
    fx.assert_clean(&req.sandbox_id);

    std::fs::write(fx.conf_dir().join("00-bad.conflist"), "{ not json").unwrap();
    let reason = cni.status().unwrap_err().to_string();
    assert!(reason.contains("00-bad.conflist"), "{reason}");
}

#[tokio::test]
async fn missing_plugin_means_not_ready_and_nothing_runs() {
    let Some(mut fx) = Fixture::new("missing_plugin") else {
        return;
    };
    fx.write_conf(&["hearth-no-such-plugin"]);
    let cni = fx.cni(Duration::from_secs(10), false);
    let reason = cni.status().unwrap_err().to_string();
    assert!(
        reason.contains("hearth-no-such-plugin") && reason.contains(PLUGINS),
        "{reason}"
    );
    let req = fx.request(Some(20001));
    let err = cni.setup(&req).await.unwrap_err();
    assert!(matches!(err, NetworkError::PluginNotFound { .. }), "{err}");
    fx.assert_clean(&req.sandbox_id);
}

#[tokio::test]
async fn plugin_error_is_surfaced_and_chain_rolled_back() {
    let Some(mut fx) = Fixture::new("plugin_error") else {
        return;
    };
    fx.fake_plugin(
        "fake-fail",
        r#"echo '{"cniVersion":"1.0.0","code":42,"msg":"no bananas","details":"the basket is empty"}'; exit 1"#,
    );
    fx.write_conf(&["fake-fail"]);
    let cni = fx.cni(Duration::from_secs(20), false);
    cni.status().unwrap();
    let req = fx.request(Some(20002));
    let err = cni.setup(&req).await.unwrap_err();
    match &err {
        NetworkError::PluginFailed {
            code,
            msg,
            details,
            command,
            ..
        } => {
            assert_eq!(
                (*code, msg.as_str(), details.as_str(), *command),
                (42, "no bananas", "the basket is empty", "ADD")
            );
        }
        other => panic!("unexpected error {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("fake-fail") && text.contains("no bananas") && text.contains("basket"),
        "{text}"
    );
    let log = std::fs::read_to_string(fx.log()).unwrap();
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        ["ADD fake-fail", "DEL fake-fail"]
    );
    fx.assert_clean(&req.sandbox_id);
}

#[tokio::test]
async fn hanging_plugin_times_out_is_killed_and_rolled_back() {
    let Some(mut fx) = Fixture::new("hanging_plugin") else {
        return;
    };
    let marker = format!("{}.25", 3000 + std::process::id() % 1000);
    fx.fake_plugin("fake-hang", &format!("sleep {marker}"));
    fx.write_conf(&["fake-hang"]);
    let cni = fx.cni(Duration::from_secs(2), false);
    let req = fx.request(Some(20003));
    let started = std::time::Instant::now();
    let err = cni.setup(&req).await.unwrap_err();
    assert!(
        matches!(err, NetworkError::PluginTimeout { command: "ADD", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("fake-hang"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(200));
    let survivors: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&marker))
        .collect();
    assert!(
        survivors.is_empty(),
        "the plugin's sleep survived: {survivors:?}"
    );
    fx.assert_clean(&req.sandbox_id);
}

#[tokio::test]
async fn malformed_result_is_rejected_and_rolled_back() {
    let Some(mut fx) = Fixture::new("malformed_result") else {
        return;
    };
    fx.fake_plugin("fake-garbage", "echo 'this is not json'");
    fx.write_conf(&["fake-garbage"]);
    let cni = fx.cni(Duration::from_secs(20), false);
    let req = fx.request(Some(20004));
    let err = cni.setup(&req).await.unwrap_err();
    assert!(matches!(err, NetworkError::MalformedResult { .. }), "{err}");
    assert!(err.to_string().contains("fake-garbage"), "{err}");
    fx.assert_clean(&req.sandbox_id);
}

#[tokio::test]
async fn bad_requests_are_refused_before_any_plugin_runs() {
    let Some(mut fx) = Fixture::new("bad_requests") else {
        return;
    };
    fx.fake_plugin("fake-ok", "exit 1");
    fx.write_conf(&["fake-ok"]);
    let cni = fx.cni(Duration::from_secs(10), false);
    let mut req = fx.request(None);
    req.pod_name = "evil;K8S_POD_NAME=x".into();
    let err = cni.setup(&req).await.unwrap_err();
    assert!(err.to_string().contains("pod_name"), "{err}");
    let mut req = fx.request(None);
    req.netns_path = fx.tmp.path().join("not-a-netns");
    let err = cni.setup(&req).await.unwrap_err();
    assert!(err.to_string().contains("not-a-netns"), "{err}");
    assert!(!fx.log().exists(), "a plugin ran");
    fx.assert_clean(&req.sandbox_id);
}

#[tokio::test]
async fn single_plugin_conf_with_cni_0_4_0() {
    let Some(mut fx) = Fixture::new("single_plugin_conf_with_cni_0_4_0") else {
        return;
    };
    let conf = serde_json::json!({
        "cniVersion": "0.4.0", "name": fx.net_name, "type": "bridge", "bridge": fx.bridge,
        "isGateway": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": format!("{}.0/24", fx.subnet_prefix)}]],
            "dataDir": fx.ipam_dir(),
        }
    });
    std::fs::write(fx.conf_dir().join("50-single.conf"), conf.to_string()).unwrap();
    let cni = fx.cni(Duration::from_secs(30), false);
    cni.status().unwrap();
    let req = fx.request(None);
    let net = cni.setup(&req).await.unwrap();
    assert_eq!(net.result().unwrap().cni_version, "0.4.0");
    let ip = ipv4(&net);
    assert!(
        ip.to_string()
            .starts_with(&format!("{}.", fx.subnet_prefix)),
        "{ip}"
    );
    cni.teardown(&net, &req.netns_path).await.unwrap();
    fx.assert_clean(&req.sandbox_id);
}

#[tokio::test]
async fn dual_stack_pod_has_ipv4_primary_and_ipv6_additional() {
    let Some(mut fx) = Fixture::new("dual_stack") else {
        return;
    };
    if !Path::new("/proc/sys/net/ipv6").exists() {
        eprintln!("skipping dual_stack: no IPv6 in this kernel");
        return;
    }
    let v6 = format!("fd00:4ea7:{:x}::", std::process::id() % 0xffff);
    let conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": fx.net_name,
        "plugins": [{
            "type": "bridge", "bridge": fx.bridge, "isGateway": true,
            "ipam": {
                "type": "host-local",
                "ranges": [
                    [{"subnet": format!("{v6}/64")}],
                    [{"subnet": format!("{}.0/24", fx.subnet_prefix)}],
                ],
                "dataDir": fx.ipam_dir(),
            }
        }]
    });
    std::fs::write(fx.conf_dir().join("10-dual.conflist"), conf.to_string()).unwrap();
    let cni = fx.cni(Duration::from_secs(30), false);
    let req = fx.request(None);
    let net = cni.setup(&req).await.unwrap();
    let ips = net.ips();
    assert_eq!(ips.len(), 2, "{ips:?}");
    assert!(ips[0].is_ipv4() && !ips[1].is_ipv4(), "{ips:?}");
    assert!(
        ips[1]
            .addr
            .to_string()
            .starts_with(v6.trim_end_matches(':')),
        "{ips:?}"
    );
    cni.teardown(&net, &req.netns_path).await.unwrap();
    fx.assert_clean(&req.sandbox_id);
}

#[tokio::test]
async fn unrecorded_teardown_uses_current_config() {
    let Some(mut fx) = Fixture::new("unrecorded_teardown") else {
        return;
    };
    fx.write_conf(&[]);
    let cni = fx.cni(Duration::from_secs(30), false);
    let req = fx.request(Some(20005));
    let net = cni.setup(&req).await.unwrap();
    assert!(!net.ips().is_empty());
    // hearthd "crashed" before persisting `net`: clean up from the request.
    cni.teardown_unrecorded(&req).await.unwrap();
    cni.teardown_unrecorded(&req).await.unwrap();
    fx.assert_clean(&req.sandbox_id);
}

#[tokio::test]
async fn bandwidth_capability_reaches_the_bandwidth_plugin() {
    let Some(mut fx) = Fixture::new("bandwidth_capability") else {
        return;
    };
    if !Path::new(PLUGINS).join("bandwidth").exists() || !Path::new("/usr/sbin/tc").exists() {
        eprintln!("skipping bandwidth_capability: needs {PLUGINS}/bandwidth and tc");
        return;
    }
    let conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": fx.net_name,
        "plugins": [
            {
                "type": "bridge", "bridge": fx.bridge, "isGateway": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": format!("{}.0/24", fx.subnet_prefix)}]],
                    "dataDir": fx.ipam_dir(),
                }
            },
            {"type": "bandwidth", "capabilities": {"bandwidth": true}}
        ]
    });
    std::fs::write(fx.conf_dir().join("10-bw.conflist"), conf.to_string()).unwrap();
    let cni = fx.cni(Duration::from_secs(30), false);
    let mut req = fx.request(None);
    req.bandwidth = Some(hearth_network::Bandwidth {
        ingress_rate: 8_000_000,
        ingress_burst: 800_000,
        egress_rate: 4_000_000,
        egress_burst: 400_000,
    });
    let net = cni.setup(&req).await.unwrap();
    assert_eq!(net.runtime_config["bandwidth"]["ingressRate"], 8_000_000);
    // The host-side veth got a token bucket: the plugin saw the capability.
    let host_veth = net
        .result()
        .unwrap()
        .interfaces
        .iter()
        .find(|i| !i.in_sandbox() && i.name != fx.bridge)
        .map(|i| i.name.clone())
        .expect("host veth in result");
    let qdiscs = must(&["tc", "qdisc", "show", "dev", &host_veth]);
    assert!(qdiscs.contains("tbf"), "no tbf on {host_veth}: {qdiscs}");
    cni.teardown(&net, &req.netns_path).await.unwrap();
    let (_, links) = run(&["ip", "-o", "link", "show"]);
    assert!(!links.contains(&host_veth), "{host_veth} left");
    fx.assert_clean(&req.sandbox_id);
}

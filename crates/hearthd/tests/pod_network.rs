//! Pod networking through hearthd with the real CNI plugins (bridge,
//! host-local, portmap) on a bridge the test made: two pods get distinct
//! IPs and reach each other, a host port reaches a pod, Stop releases the
//! IP and the veth, Remove the netns; a broken network fails RunPodSandbox
//! cleanly.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use hearth_network::run_in_netns;
use k8s_cri::v1 as cri;
use tonic::Code;

async fn run(
    c: &mut k8s_cri::v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    p: cri::PodSandboxConfig,
) -> (String, String, PathBuf) {
    let id = c
        .run_pod_sandbox(run_request(p))
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let st = c
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let ip = st.status.unwrap().network.unwrap().ip;
    let info: serde_json::Value = serde_json::from_str(&st.info["info"]).unwrap();
    let netns = PathBuf::from(info["netns"].as_str().unwrap());
    // The agent lives in that network namespace.
    let pid = info["backendState"]["agent_pid"].as_u64().unwrap();
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    assert_eq!(ino(&netns), ino(Path::new(&format!("/proc/{pid}/ns/net"))));
    (id, ip, netns)
}

fn listen_in(netns: &Path, addr: &str) -> TcpListener {
    let addr = addr.to_owned();
    run_in_netns(netns, move || TcpListener::bind(addr))
        .unwrap()
        .unwrap()
}

fn echo_once(l: TcpListener) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        s.write_all(&buf).unwrap();
    })
}

fn roundtrip(mut s: TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"hello").unwrap();
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_ips_reach_each_other_and_give_everything_back() {
    if hearth_test_support::skip_unless_root("pod_network") {
        return;
    }
    let env = Env::new();
    let before = env.snapshot();
    let daemon = Daemon::start(&env).await;
    let mut c = daemon.client.clone();

    let mut a = pod("net-a", &env.cgroup_parent);
    let host_port = 20000 + (std::process::id() % 20000) as i32;
    a.port_mappings = vec![cri::PortMapping {
        protocol: cri::Protocol::Tcp as i32,
        container_port: 8080,
        host_port,
        host_ip: "127.0.0.1".into(),
    }];
    let (id_a, ip_a, ns_a) = run(&mut c, a).await;
    let (id_b, ip_b, ns_b) = run(&mut c, pod("net-b", &env.cgroup_parent)).await;
    assert_ne!(ip_a, ip_b);
    let prefix = env.subnet.trim_end_matches("0/24");
    assert!(
        ip_a.starts_with(prefix) && ip_b.starts_with(prefix),
        "{ip_a} {ip_b} not in {}",
        env.subnet
    );

    // Pod A reaches pod B over TCP.
    let server = echo_once(listen_in(&ns_b, "0.0.0.0:7070"));
    let target = format!("{ip_b}:7070");
    let stream = run_in_netns(&ns_a, move || {
        TcpStream::connect_timeout(&target.parse().unwrap(), Duration::from_secs(5))
    })
    .unwrap()
    .unwrap();
    roundtrip(stream);
    server.join().unwrap();

    // The host's 127.0.0.1:<host_port> reaches pod A's port 8080.
    let server = echo_once(listen_in(&ns_a, "0.0.0.0:8080"));
    let stream = TcpStream::connect_timeout(
        &format!("127.0.0.1:{host_port}").parse().unwrap(),
        Duration::from_secs(5),
    )
    .unwrap();
    roundtrip(stream);
    server.join().unwrap();

    // Stop releases the IP (host-local's store) and the veth.
    let leases = env.path().join("ipam");
    let leased = |ip: &str| {
        walk(&leases)
            .iter()
            .any(|p| p.file_name().is_some_and(|n| n == ip))
    };
    assert!(leased(&ip_a));
    c.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: id_a.clone(),
    })
    .await
    .unwrap();
    assert!(
        !leased(&ip_a),
        "IP {ip_a} still allocated after StopPodSandbox"
    );
    let ports = std::fs::read_dir(format!("/sys/class/net/{}/brif", env.bridge))
        .unwrap()
        .count();
    assert_eq!(ports, 1, "pod A's veth still on the bridge");
    c.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: id_a.clone(),
    })
    .await
    .unwrap();
    // Remove deletes the netns.
    for id in [&id_a, &id_b] {
        c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .unwrap();
    }
    assert!(
        !ns_a.exists() && !ns_b.exists(),
        "netns left after RemovePodSandbox"
    );
    assert!(!leased(&ip_b));

    drop(c);
    daemon.shutdown().await;
    assert_eq!(before.leaked(&env.snapshot()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_network_fails_the_run_and_leaves_nothing() {
    if hearth_test_support::skip_unless_root("pod_network_broken") {
        return;
    }
    let mut env = Env::new();
    // A plugin after the bridge that fails with a CNI error.
    let bin = env.path().join("cni-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let plugin = bin.join("failing");
    hearth_test_support::write_executable(&plugin, "#!/bin/sh\nif [ \"$CNI_COMMAND\" = ADD ]; then\n  echo '{\"cniVersion\":\"1.0.0\",\"code\":42,\"msg\":\"no luck\",\"details\":\"on purpose\"}'\n  exit 1\nfi\necho '{}'\n",);
    let conf = env
        .config
        .network
        .cni_conf_dir
        .join("10-hearth-test.conflist");
    let mut list: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&conf).unwrap()).unwrap();
    list["plugins"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({ "type": "failing" }));
    std::fs::write(&conf, list.to_string()).unwrap();
    env.config.network.cni_bin_dirs.insert(0, bin);
    let before = env.snapshot();
    let daemon = Daemon::start(&env).await;
    let mut c = daemon.client.clone();
    let e = c
        .run_pod_sandbox(run_request(pod("broken", &env.cgroup_parent)))
        .await
        .unwrap_err();
    assert!(
        e.message().contains("no luck") && e.message().contains("on purpose"),
        "{e:?}"
    );
    assert!(
        walk(&env.path().join("ipam"))
            .iter()
            .all(|p| !p.to_string_lossy().contains("10.")),
        "IP left allocated"
    );
    assert_eq!(
        std::fs::read_dir(format!("/sys/class/net/{}/brif", env.bridge))
            .unwrap()
            .count(),
        0,
        "veth left"
    );

    // No CNI config at all: NetworkReady is false and pods fail clearly,
    // but host-network pods still run.
    std::fs::remove_file(&conf).unwrap();
    let e = c
        .run_pod_sandbox(run_request(pod("nonet", &env.cgroup_parent)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("pod network is not ready"), "{e:?}");
    let mut host = pod("hostnet", &env.cgroup_parent);
    host.hostname.clear();
    host.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(cri::NamespaceOption {
            network: cri::NamespaceMode::Node as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = c
        .run_pod_sandbox(run_request(host))
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let st = c
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap();
    assert_eq!(st.into_inner().status.unwrap().state, READY);
    c.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .unwrap();

    drop(c);
    daemon.shutdown().await;
    env.assert_clean(&before);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

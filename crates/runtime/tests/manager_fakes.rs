//! The sandbox manager against fakes: a guest that answers garbage or
//! hangs, what the agent is asked at RunPodSandbox, and recovery of
//! half-made and vanished sandboxes. No root needed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_runtime::backend::SandboxBackend;
use hearth_runtime::sandbox::{DnsConfig, Metadata, SandboxConfig, SandboxRecord, SandboxState};
use hearth_runtime::sizing::SizingPolicy;
use hearth_runtime::store::Store;
use hearth_runtime::{Id, ManagerConfig, RuntimeError, SandboxManager};
use hearth_test_support::fake_agent::Behaviour;
use hearth_test_support::fake_backend::FakeBackend;
use hearth_test_support::fake_network::FakeNetworks;

fn have_mkfs() -> bool {
    let ok = std::process::Command::new("mkfs.ext4")
        .arg("-V")
        .output()
        .is_ok();
    if !ok {
        eprintln!("skipped: mkfs.ext4 not installed (Debian e2fsprogs)");
    }
    ok
}

fn config(dir: &Path, boot_timeout: Duration) -> ManagerConfig {
    ManagerConfig {
        root: dir.join("root"),
        state: dir.join("state"),
        default_handler: "fake".into(),
        handlers: BTreeMap::from([("fake".to_string(), "fake".to_string())]),
        sizing: SizingPolicy::default(),
        scratch_size_mib: 16,
        boot_timeout,
        stop_timeout: Duration::from_secs(1),
        cgroup_root: dir.join("no-cgroups"),
        default_cgroup_parent: "/hearth".into(),
        host_resolv_conf: dir.join("host-resolv.conf"),
    }
}

fn pod(name: &str) -> SandboxConfig {
    SandboxConfig {
        metadata: Metadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        },
        hostname: format!("{name}-host"),
        dns: Some(DnsConfig {
            servers: vec!["10.0.0.10".into()],
            ..Default::default()
        }),
        sysctls: BTreeMap::from([("net.ipv4.ip_forward".to_string(), "1".to_string())]),
        ..Default::default()
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    backend: Arc<FakeBackend>,
    network: Arc<FakeNetworks>,
    mgr: Arc<SandboxManager>,
}

async fn fixture(behaviour: Behaviour, boot_timeout: Duration) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("netns")).unwrap();
    let backend = Arc::new(FakeBackend::new("fake", behaviour));
    let network = Arc::new(FakeNetworks::new(dir.path().join("netns")));
    let mgr = SandboxManager::start(
        config(dir.path(), boot_timeout),
        vec![backend.clone() as Arc<dyn SandboxBackend>],
        network.clone(),
    )
    .await
    .unwrap();
    Fixture {
        dir,
        backend,
        network,
        mgr,
    }
}

fn assert_nothing_left(f: &Fixture) {
    assert_eq!(f.backend.running(), 0, "fake agents left running");
    assert_eq!(f.network.count(), 0, "netns left");
    assert_eq!(f.network.attached(), 0, "pod networks left attached");
    let records = std::fs::read_dir(f.dir.path().join("root/sandboxes"))
        .unwrap()
        .count();
    assert_eq!(records, 0, "records left");
    let run = std::fs::read_dir(f.dir.path().join("state/sandboxes"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(run, 0, "run dirs left");
    assert!(f.mgr.list().is_empty());
}

#[tokio::test]
async fn the_agent_is_asked_to_mount_the_scratch_disk_and_set_the_pod_up() {
    if !have_mkfs() {
        return;
    }
    let f = fixture(Behaviour::Normal, Duration::from_secs(5)).await;
    let id = f.mgr.run(pod("web"), "").await.unwrap();
    let view = f.mgr.status(&id.as_str()[..6]).await.unwrap();
    assert_eq!(view.record.state, SandboxState::Ready);
    assert_eq!(view.record.runtime_handler, "fake");
    let agent = f.mgr.agent(&id).await.unwrap();
    assert_eq!(agent.hello().await.unwrap().mode, "fake");
    // The same name again is refused while the first lives.
    assert!(matches!(
        f.mgr.run(pod("web"), "").await,
        Err(RuntimeError::AlreadyExists { .. })
    ));
    let fake = f.backend.agents().pop().unwrap();
    {
        let calls = fake.calls.lock().unwrap();
        let setup = &calls.setups[0];
        assert_eq!(setup.hostname, "web-host");
        assert!(String::from_utf8_lossy(&setup.hosts).contains("127.0.0.1\tlocalhost"));
        assert_eq!(
            String::from_utf8_lossy(&setup.resolv_conf),
            "nameserver 10.0.0.10\n"
        );
        assert_eq!(setup.sysctls["net.ipv4.ip_forward"], "1");
        let mount = &calls.mounts[0];
        assert_eq!(mount.mountpoint, "/run/hearth/scratch");
        assert_eq!(mount.fstype, "ext4");
        assert!(!mount.read_only);
    }
    f.mgr.stop(id.as_str()).await.unwrap();
    assert!(
        fake.was_shut_down(),
        "stop did not ask the agent to shut down"
    );
    assert_eq!(
        f.mgr.status(id.as_str()).await.unwrap().record.state,
        SandboxState::NotReady
    );
    f.mgr.remove(id.as_str()).await.unwrap();
    assert_nothing_left(&f);
}

#[tokio::test]
async fn a_guest_that_answers_garbage_fails_the_run_cleanly() {
    if !have_mkfs() {
        return;
    }
    for behaviour in [Behaviour::Garbage, Behaviour::GarbageAfterHandshake] {
        let f = fixture(behaviour, Duration::from_secs(2)).await;
        let err = f.mgr.run(pod("web"), "").await.unwrap_err();
        let text = chain(&err);
        assert!(
            text.contains("agent")
                && (text.contains("handshake")
                    || text.contains("HELLO")
                    || text.contains("transport")
                    || text.contains("h2")),
            "{behaviour:?}: {text}"
        );
        assert_nothing_left(&f);
        // The name is free again.
        assert!(f.mgr.list().is_empty());
    }
}

#[tokio::test]
async fn a_guest_that_hangs_fails_the_run_at_the_deadline() {
    if !have_mkfs() {
        return;
    }
    let f = fixture(Behaviour::Hang, Duration::from_millis(500)).await;
    let started = Instant::now();
    let err = f.mgr.run(pod("web"), "").await.unwrap_err();
    let text = chain(&err);
    assert!(
        text.contains("timed out") || text.contains("deadline") || text.contains("within"),
        "{text}"
    );
    // Generous bound: the point is that it does not hang for ever.
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_nothing_left(&f);
}

#[tokio::test]
async fn recovery_cleans_up_half_made_and_marks_vanished_sandboxes() {
    if !have_mkfs() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("netns")).unwrap();
    let store = Store::open(&dir.path().join("root")).unwrap();
    let record = |state: SandboxState, name: &str| SandboxRecord {
        id: Id::generate(),
        state,
        created_at_ns: 1,
        runtime_handler: "fake".into(),
        backend: "fake".into(),
        config: pod(name),
        size: SizingPolicy::default().size(&Default::default()).unwrap(),
        netns: None,
        network: None,
        scratch: None,
        cgroups_created: vec![],
        backend_handle: Some(hearth_runtime::backend::BackendHandle(
            serde_json::json!({"socket": "/nonexistent"}),
        )),
        reason: None,
    };
    let half = record(SandboxState::Creating, "half");
    let vanished = record(SandboxState::Ready, "vanished");
    store.save(&half).unwrap();
    store.save(&vanished).unwrap();
    let backend = Arc::new(FakeBackend::new("fake", Behaviour::Normal));
    let network = Arc::new(FakeNetworks::new(dir.path().join("netns")));
    let mgr = SandboxManager::start(
        config(dir.path(), Duration::from_secs(1)),
        vec![backend as Arc<dyn SandboxBackend>],
        network,
    )
    .await
    .unwrap();
    let list = mgr.list();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].record.id, vanished.id);
    assert_eq!(list[0].record.state, SandboxState::NotReady);
    assert!(list[0]
        .record
        .reason
        .as_deref()
        .unwrap_or("")
        .contains("stopped"));
    assert!(
        !store.sandbox_dir(&half.id).exists(),
        "half-made record not cleaned up"
    );
    mgr.remove(vanished.id.as_str()).await.unwrap();
    assert!(mgr.list().is_empty());
}

#[tokio::test]
async fn vm_backends_refuse_host_network_pods() {
    if !have_mkfs() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("netns")).unwrap();
    let backend = Arc::new(FakeBackend::new("fake", Behaviour::Normal).vm());
    let network = Arc::new(FakeNetworks::new(dir.path().join("netns")));
    let mgr = SandboxManager::start(
        config(dir.path(), Duration::from_secs(1)),
        vec![backend.clone() as Arc<dyn SandboxBackend>],
        network,
    )
    .await
    .unwrap();
    let mut host = pod("node-agent");
    host.network = hearth_runtime::sandbox::NamespaceMode::Node;
    host.sysctls.clear();
    let err = mgr.run(host, "").await.unwrap_err();
    assert!(
        matches!(err, RuntimeError::FailedPrecondition(_)),
        "{err:?}"
    );
    assert!(err.to_string().contains("namespaces RuntimeClass"), "{err}");
    assert_eq!(backend.running(), 0);
    assert!(mgr.list().is_empty());
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut s = e.source();
    while let Some(x) = s {
        out.push_str(": ");
        out.push_str(&x.to_string());
        s = x.source();
    }
    out
}

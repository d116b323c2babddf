//! Bad input from the kubelet gets a clear error with the right code, and
//! leaves nothing behind.

mod common;

use common::*;
use k8s_cri::v1 as cri;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_leave_nothing() {
    if hearth_test_support::skip_unless_root("bad_input") {
        return;
    }
    let env = Env::new();
    let before = env.snapshot();
    let daemon = Daemon::start(&env).await;
    let mut c = daemon.client.clone();
    let runner = c.clone();
    let run = |req: cri::RunPodSandboxRequest| {
        let mut c = runner.clone();
        async move {
            c.run_pod_sandbox(req)
                .await
                .map(|r| r.into_inner().pod_sandbox_id)
        }
    };
    let expect = |r: Result<String, tonic::Status>, code: Code, needle: &str| {
        let e = r.expect_err("must fail");
        assert_eq!(e.code(), code, "{e:?}");
        assert!(
            e.message().contains(needle),
            "{needle:?} not in {:?}",
            e.message()
        );
    };

    // Missing config and metadata.
    expect(
        run(cri::RunPodSandboxRequest::default()).await,
        Code::InvalidArgument,
        "config",
    );
    let mut no_meta = pod("x", &env.cgroup_parent);
    no_meta.metadata = None;
    expect(
        run(run_request(no_meta)).await,
        Code::InvalidArgument,
        "metadata",
    );
    let mut no_name = pod("x", &env.cgroup_parent);
    no_name.metadata.as_mut().unwrap().name.clear();
    expect(
        run(run_request(no_name)).await,
        Code::InvalidArgument,
        "metadata.name",
    );

    // Unknown handler.
    let mut req = run_request(pod("x", &env.cgroup_parent));
    req.runtime_handler = "kata".into();
    expect(run(req).await, Code::InvalidArgument, "kata");
    // A handler whose backend cannot run on this host says why.
    let mut req = run_request(pod("x", &env.cgroup_parent));
    req.runtime_handler = "firecracker".into();
    expect(
        run(req).await,
        Code::FailedPrecondition,
        "backend firecracker cannot run here",
    );

    // A hostNetwork pod on a VM handler: refused, whatever the host has.
    let mut host = pod("x", &env.cgroup_parent);
    host.hostname.clear();
    host.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext {
        namespace_options: Some(cri::NamespaceOption {
            network: cri::NamespaceMode::Node as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    let mut req = run_request(host);
    req.runtime_handler = "firecracker".into();
    expect(
        run(req).await,
        Code::FailedPrecondition,
        "namespaces RuntimeClass",
    );

    // Malformed sizing names the field.
    let mut neg = pod("x", &env.cgroup_parent);
    neg.linux
        .as_mut()
        .unwrap()
        .resources
        .as_mut()
        .unwrap()
        .cpu_quota = -1;
    expect(
        run(run_request(neg)).await,
        Code::InvalidArgument,
        "linux.resources.cpu_quota",
    );
    let mut no_period = pod("x", &env.cgroup_parent);
    no_period
        .linux
        .as_mut()
        .unwrap()
        .resources
        .as_mut()
        .unwrap()
        .cpu_period = 0;
    expect(
        run(run_request(no_period)).await,
        Code::InvalidArgument,
        "cpu_period",
    );

    // A sysctl that is not namespaced; a cgroup parent that escapes.
    let mut sysctl = pod("x", &env.cgroup_parent);
    sysctl
        .linux
        .as_mut()
        .unwrap()
        .sysctls
        .insert("kernel.panic".into(), "1".into());
    expect(
        run(run_request(sysctl)).await,
        Code::InvalidArgument,
        "kernel.panic",
    );
    let mut escape = pod("x", &env.cgroup_parent);
    escape.linux.as_mut().unwrap().cgroup_parent = "/../../etc".into();
    expect(
        run(run_request(escape)).await,
        Code::InvalidArgument,
        "cgroup_parent",
    );

    // Oversized request.
    let mut big = pod("x", &env.cgroup_parent);
    big.annotations.insert("big".into(), "x".repeat(17 << 20));
    let e = run(run_request(big)).await.unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    assert!(e.message().contains("limit is: 16777216"), "{e:?}");

    // Duplicate name + namespace + uid + attempt: AlreadyExists. containerd
    // 1.6.20 answers Unknown ("failed to reserve sandbox name"); Hearth gives
    // the code a client can act on (see containerd_reference.rs).
    let id = run(run_request(pod("dup", &env.cgroup_parent)))
        .await
        .unwrap();
    expect(
        run(run_request(pod("dup", &env.cgroup_parent))).await,
        Code::AlreadyExists,
        &id,
    );
    // A new attempt is a new name.
    let mut again = pod("dup", &env.cgroup_parent);
    again.metadata.as_mut().unwrap().attempt = 1;
    let id2 = run(run_request(again)).await.unwrap();

    // Unknown ids: status NotFound, stop/remove idempotent.
    let e = c
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: "feedbeef".into(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    c.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: "feedbeef".into(),
    })
    .await
    .unwrap();
    c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: "feedbeef".into(),
    })
    .await
    .unwrap();
    // An ambiguous prefix is refused rather than guessed ("" matches all).
    let e = c
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: String::new(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // Remove a running sandbox directly (it is stopped first).
    for i in [id, id2] {
        c.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: i })
            .await
            .unwrap();
    }
    // Garbage on the socket: the connection is dropped, the server stays.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut raw = tokio::net::UnixStream::connect(&env.config.address)
            .await
            .unwrap();
        raw.write_all(&[
            0x16, 0x03, 0x01, 0xff, 0xff, b'g', b'a', b'r', b'b', b'a', b'g', b'e',
        ])
        .await
        .unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            raw.read_to_end(&mut buf),
        )
        .await;
        assert!(read.is_ok(), "hearthd kept a garbage connection open");
        let v = c
            .version(cri::VersionRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(v.runtime_name, "hearth");
    }
    // Other RPCs say they are not there yet.
    let e = c
        .container_stats(cri::ContainerStatsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    assert!(e.message().contains("ContainerStats"));

    drop(c);
    drop(runner);
    daemon.shutdown().await;
    env.assert_clean(&before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_rolls_back_every_step() {
    if hearth_test_support::skip_unless_root("failed_run_rolls_back") {
        return;
    }
    // An agent binary that is not an agent: the launch fails after the
    // cgroup, netns, scratch disk and run dir were made.
    let mut env = Env::new();
    let fake = env.path().join("not-an-agent");
    hearth_test_support::write_executable(&fake, "#!/bin/sh\necho nonsense\nexit 3\n");
    env.config.namespaces.agent_binary = fake;
    let before = env.snapshot();
    let daemon = Daemon::start(&env).await;
    let mut c = daemon.client.clone();
    let e = c
        .run_pod_sandbox(run_request(pod("broken", &env.cgroup_parent)))
        .await
        .unwrap_err();
    assert!(e.message().contains("agent launcher exited"), "{e:?}");
    assert!(e.message().contains("nonsense"), "{e:?}");
    let list = c
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(list.items.is_empty());
    drop(c);
    daemon.shutdown().await;
    env.assert_clean(&before);
    assert_eq!(
        std::fs::read_dir(env.config.root.join("sandboxes"))
            .unwrap()
            .count(),
        0
    );
}

//! Containers end to end through the CRI on the namespaces backend: a real
//! registry on 127.0.0.1, a busybox image pulled through hearthd, a pod,
//! and containers that exit 0 / exit 3 / ignore SIGTERM / cannot start,
//! ExecSync, the CRI log file, ListContainers filters, bad input, and no
//! leaks after RemovePodSandbox.

mod common;
#[path = "common/containers.rs"]
mod ctr;
#[path = "common/kubelet.rs"]
mod kubelet;
#[path = "../../image/tests/common/mod.rs"]
mod registry;

use std::time::{Duration, Instant};

use common::*;
use ctr::*;
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;
use tonic::Code;

/// Checks one CRI log line and returns (stream, tag, text).
fn parse_log_line(line: &str) -> (String, String, String) {
    let mut parts = line.splitn(4, ' ');
    let (ts, stream, tag, text) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap_or(""),
    );
    // 2026-11-28T17:00:00.123456789Z
    let b = ts.as_bytes();
    assert!(ts.len() >= 20 && ts.ends_with('Z'), "timestamp {ts:?}");
    for (i, c) in b.iter().enumerate().take(19) {
        let want_digit = ![4, 7, 10, 13, 16].contains(&i);
        assert_eq!(c.is_ascii_digit(), want_digit, "timestamp {ts:?}");
    }
    assert_eq!(&ts[4..5], "-");
    assert_eq!(&ts[10..11], "T");
    if ts.len() > 20 {
        assert_eq!(&ts[19..20], ".", "timestamp {ts:?}");
        let frac = &ts[20..ts.len() - 1];
        assert!(
            (1..=9).contains(&frac.len()) && frac.bytes().all(|c| c.is_ascii_digit()),
            "timestamp {ts:?}"
        );
    }
    assert!(stream == "stdout" || stream == "stderr", "{line}");
    assert!(tag == "F" || tag == "P", "{line}");
    (stream.into(), tag.into(), text.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_through_the_cri() {
    if skip_without_registry("containers") {
        return;
    }
    let (_reg, image) = registry_with_busybox();
    let env = Env::new();
    let daemon = Daemon::start(&env).await;
    let image_id = pull(&daemon.channel, &image).await;
    let mut c = daemon.client.clone();
    let before = env.snapshot();

    let (pod_id, pod_config, logs) = run_pod_with_logs(&mut c, &env, "ctr", &handler()).await;

    // 1. The image's entrypoint + args (args override cmd), its env merged
    //    with the CRI's, its workdir and user; output to both streams.
    let mut hello = container("hello", &image);
    hello.args = vec![
        "echo hello; echo A=$A X=$X; pwd; /bin/busybox id -u; echo oops >&2; printf 'no newline'"
            .into(),
    ];
    hello.envs = vec![cri::KeyValue {
        key: "X".into(),
        value: "y".into(),
    }];
    let hello_id = create(&mut c, &pod_id, hello, &pod_config).await.unwrap();
    let s = status(&mut c, &hello_id).await;
    assert_eq!(s.state, cri::ContainerState::ContainerCreated as i32);
    assert!(s.created_at > 0 && s.started_at == 0);
    start(&mut c, &hello_id).await;
    let s = wait_state(&mut c, &hello_id, EXITED).await;
    assert_eq!(s.exit_code, 0, "{s:?}");
    assert_eq!(s.reason, "Completed");
    assert!(
        s.started_at >= s.created_at && s.finished_at >= s.started_at,
        "{s:?}"
    );
    assert_eq!(s.image.as_ref().unwrap().image, image);
    assert_eq!(s.image_id, image_id);
    assert!(
        s.image_ref.contains("demo/busybox@sha256:"),
        "image_ref {}",
        s.image_ref
    );
    assert_eq!(s.labels["container"], "hello");
    assert_eq!(s.annotations["note"], "about hello");
    let log_file = logs.join("hello/0.log");
    assert_eq!(s.log_path, log_file.to_string_lossy());
    let text = std::fs::read_to_string(&log_file).unwrap();
    let entries: Vec<(String, String, String)> = text.lines().map(parse_log_line).collect();
    let stdout: Vec<&str> = entries
        .iter()
        .filter(|e| e.0 == "stdout")
        .map(|e| {
            assert_eq!(e.1, "F");
            e.2.as_str()
        })
        .collect();
    assert_eq!(
        stdout,
        ["hello", "A=b X=y", "/work", "1000", "no newline"],
        "{text}"
    );
    let stderr: Vec<&str> = entries
        .iter()
        .filter(|e| e.0 == "stderr")
        .map(|e| e.2.as_str())
        .collect();
    assert_eq!(stderr, ["oops"], "{text}");

    // 2. Command overrides the entrypoint; a failing exit is an Error.
    let mut fail = container("fail", &image);
    fail.command = vec!["/bin/sh".into(), "-c".into(), "exit 3".into()];
    let (fail_id, s) = run_to_exit(&mut c, &pod_id, fail, &pod_config).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (3, "Error"), "{s:?}");

    // 2b. A 40000-byte line is split at 16 KiB: P, P, F.
    let mut long = container("long", &image);
    long.command = vec![
        "/bin/sh".into(),
        "-c".into(),
        "/bin/busybox head -c 40000 /dev/zero | /bin/busybox tr '\\0' x; echo; echo after".into(),
    ];
    let (_, s) = run_to_exit(&mut c, &pod_id, long, &pod_config).await;
    assert_eq!(s.exit_code, 0, "{s:?}");
    let text = std::fs::read_to_string(logs.join("long/0.log")).unwrap();
    let entries: Vec<(String, String, String)> = text.lines().map(parse_log_line).collect();
    let shape: Vec<(&str, usize)> = entries
        .iter()
        .map(|e| {
            assert!(e.2.bytes().all(|b| b == b'x') || e.2 == "after", "{e:?}");
            (e.1.as_str(), e.2.len())
        })
        .collect();
    assert_eq!(
        shape,
        [
            ("P", 16384),
            ("P", 16384),
            ("F", 40000 - 2 * 16384),
            ("F", 5)
        ]
    );

    // 2c. Log rotation: the kubelet renames the file and asks for a new one.
    let mut rotate = container("rotate", &image);
    rotate.command = vec![
        "/bin/sh".into(),
        "-c".into(),
        "echo before; while [ ! -e /tmp/go ]; do /bin/busybox sleep 0.05; done; echo after".into(),
    ];
    rotate.linux = Some(run_as_root());
    let rotate_id = create(&mut c, &pod_id, rotate, &pod_config).await.unwrap();
    let e = c
        .reopen_container_log(cri::ReopenContainerLogRequest {
            container_id: rotate_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    start(&mut c, &rotate_id).await;
    let rotate_log = logs.join("rotate/0.log");
    let end = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&rotate_log)
        .unwrap_or_default()
        .contains("before")
    {
        assert!(Instant::now() < end, "no output from the rotate container");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rotated = logs.join("rotate/0.log.20261128-000000");
    std::fs::rename(&rotate_log, &rotated).unwrap();
    c.reopen_container_log(cri::ReopenContainerLogRequest {
        container_id: rotate_id.clone(),
    })
    .await
    .unwrap();
    assert!(rotate_log.exists(), "ReopenContainerLog made no new file");
    let r = exec(&mut c, &rotate_id, &["/bin/sh", "-c", ": > /tmp/go"], 5)
        .await
        .unwrap();
    assert_eq!(r.exit_code, 0);
    wait_state(&mut c, &rotate_id, EXITED).await;
    let old: Vec<String> = std::fs::read_to_string(&rotated)
        .unwrap()
        .lines()
        .map(|l| parse_log_line(l).2)
        .collect();
    let new: Vec<String> = std::fs::read_to_string(&rotate_log)
        .unwrap()
        .lines()
        .map(|l| parse_log_line(l).2)
        .collect();
    assert_eq!(
        (old, new),
        (vec!["before".to_owned()], vec!["after".to_owned()])
    );
    remove(&mut c, rotate_id.clone()).await;

    // 2d. A dropped capability is enforced (root without CAP_CHOWN); an
    //     unknown one is refused.
    let root_without = |drop: &str| {
        Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                run_as_user: Some(cri::Int64Value { value: 0 }),
                capabilities: Some(cri::Capability {
                    drop_capabilities: vec![drop.into()],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
    };
    let mut nochown = container("nochown", &image);
    nochown.command = vec![
        "/bin/sh".into(),
        "-c".into(),
        ": > /tmp/f && /bin/busybox chown 1000 /tmp/f".into(),
    ];
    nochown.linux = root_without("CAP_CHOWN");
    let (nochown_id, s) = run_to_exit(&mut c, &pod_id, nochown, &pod_config).await;
    assert_eq!(s.exit_code, 1, "{s:?}");
    let text = std::fs::read_to_string(logs.join("nochown/0.log")).unwrap();
    assert!(text.contains("Operation not permitted"), "{text}");
    remove(&mut c, nochown_id).await;
    // 2e. A read-only rootfs is enforced (the pod's /etc files stay).
    let mut ro = container("ro", &image);
    ro.command = vec![
        "/bin/sh".into(),
        "-c".into(),
        "/bin/busybox cat /etc/hostname; : > /x".into(),
    ];
    ro.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 0 }),
            readonly_rootfs: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let (ro_id, s) = run_to_exit(&mut c, &pod_id, ro, &pod_config).await;
    assert_ne!(s.exit_code, 0, "{s:?}");
    let text = std::fs::read_to_string(logs.join("ro/0.log")).unwrap();
    assert!(text.contains("stdout F ctr-host"), "{text}");
    assert!(text.contains("Read-only file system"), "{text}");
    remove(&mut c, ro_id).await;
    let mut bogus = container("bogus", &image);
    bogus.linux = root_without("CAP_BOGUS");
    let e = create(&mut c, &pod_id, bogus, &pod_config)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("CAP_BOGUS"), "{e:?}");

    // 3. A command that does not exist: StartContainer fails and says why.
    let mut missing = container("missing", &image);
    missing.command = vec!["/bin/no-such-thing".into()];
    let missing_id = create(&mut c, &pod_id, missing, &pod_config).await.unwrap();
    let e = c
        .start_container(cri::StartContainerRequest {
            container_id: missing_id.clone(),
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("/bin/no-such-thing"), "{e:?}");
    let s = status(&mut c, &missing_id).await;
    assert_eq!(s.state, EXITED);
    assert_eq!(s.reason, "StartError");
    assert!(s.message.contains("/bin/no-such-thing"), "{s:?}");

    // 4. A container that ignores SIGTERM (and the image's SIGINT), as
    //    root in /tmp: ExecSync, then StopContainer kills it at the timeout.
    let mut stubborn = container("stubborn", &image);
    stubborn.command = vec![
        "/bin/sh".into(),
        "-c".into(),
        format!(
            "trap '' TERM INT; echo ready; /bin/busybox sleep {}",
            marker()
        ),
    ];
    stubborn.working_dir = "/tmp".into();
    stubborn.linux = Some(run_as_root());
    let stub_id = create_and_start(&mut c, &pod_id, stubborn, &pod_config).await;
    let s = status(&mut c, &stub_id).await;
    assert_eq!(s.state, RUNNING);

    let r = exec(&mut c, &stub_id, &["echo", "hi"], 0).await.unwrap();
    assert_eq!((r.stdout.as_slice(), r.exit_code), (&b"hi\n"[..], 0));
    let r = exec(
        &mut c,
        &stub_id,
        &[
            "/bin/sh",
            "-c",
            "echo $(pwd) $(/bin/busybox id -u); echo bad >&2; exit 4",
        ],
        5,
    )
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "/tmp 0\n");
    assert_eq!(String::from_utf8_lossy(&r.stderr), "bad\n");
    assert_eq!(r.exit_code, 4);
    // Root keeps the default capabilities (CAP_CHOWN among them).
    let r = exec(
        &mut c,
        &stub_id,
        &[
            "/bin/sh",
            "-c",
            ": > /tmp/g && /bin/busybox chown 1000 /tmp/g && echo ok",
        ],
        5,
    )
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "ok\n", "{r:?}");
    // Output is cut to what fits in the kubelet's 16 MiB message (the
    // exit still counts).
    let mut big =
        RuntimeServiceClient::new(daemon.channel.clone()).max_decoding_message_size(64 << 20);
    let r = exec(
        &mut big,
        &stub_id,
        &[
            "/bin/sh",
            "-c",
            "/bin/busybox head -c 17000000 /dev/zero; echo e >&2; exit 2",
        ],
        30,
    )
    .await
    .unwrap();
    assert_eq!(r.stdout.len(), (16 << 20) - (64 << 10));
    assert!(r.stdout.iter().all(|b| *b == 0));
    assert_eq!(r.exit_code, 2);
    drop(big);
    // The container sees only its own processes, never the agent.
    let r = exec(
        &mut c,
        &stub_id,
        &["/bin/busybox", "ps", "-o", "pid,args"],
        5,
    )
    .await
    .unwrap();
    let ps = String::from_utf8_lossy(&r.stdout);
    assert!(!ps.contains("hearth-agent"), "{ps}");
    assert!(ps.lines().any(|l| l.trim().starts_with("1 ")), "{ps}");
    // A fresh signal state (the agent ignores SIGPIPE; its processes must
    // not inherit that, or `yes | head` never ends).
    let r = exec(
        &mut c,
        &stub_id,
        &["/bin/busybox", "grep", "SigIgn", "/proc/self/status"],
        5,
    )
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&r.stdout).trim(),
        "SigIgn:\t0000000000000000"
    );
    let started = Instant::now();
    let e = exec(&mut c, &stub_id, &["/bin/busybox", "sleep", "30"], 1)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let e = exec(&mut c, &stub_id, &["no-such-command"], 5)
        .await
        .unwrap_err();
    assert!(e.message().contains("no-such-command"), "{e:?}");

    let started = Instant::now();
    c.stop_container(cri::StopContainerRequest {
        container_id: stub_id.clone(),
        timeout: 1,
    })
    .await
    .unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let s = status(&mut c, &stub_id).await;
    assert_eq!(s.state, EXITED);
    assert_eq!((s.exit_code, s.reason.as_str()), (137, "Error"), "{s:?}");
    // Stop again is fine; exec on a stopped container is refused.
    c.stop_container(cri::StopContainerRequest {
        container_id: stub_id.clone(),
        timeout: 1,
    })
    .await
    .unwrap();
    let e = exec(&mut c, &stub_id, &["echo", "hi"], 0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        marker_processes().is_empty(),
        "{:?}\nagent log:\n{}",
        marker_processes(),
        agent_logs(&env)
    );
    let text = std::fs::read_to_string(logs.join("stubborn/0.log")).unwrap();
    assert!(text.ends_with(" stdout F ready\n"), "{text}");

    // 5. ListContainers and its filters.
    let all = list_containers(&mut c, cri::ContainerFilter::default()).await;
    assert_eq!(all.len(), 5);
    let by_pod = list_containers(
        &mut c,
        cri::ContainerFilter {
            pod_sandbox_id: pod_id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_pod.len(), 5);
    let by_label = list_containers(
        &mut c,
        cri::ContainerFilter {
            label_selector: [("container".to_string(), "fail".to_string())].into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_label.len(), 1);
    assert_eq!(by_label[0].id, fail_id);
    assert_eq!(by_label[0].image_id, image_id);
    let by_id = list_containers(
        &mut c,
        cri::ContainerFilter {
            id: hello_id[..12].into(),
            state: Some(cri::ContainerStateValue { state: EXITED }),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_id.len(), 1);
    let running = list_containers(
        &mut c,
        cri::ContainerFilter {
            state: Some(cri::ContainerStateValue { state: RUNNING }),
            ..Default::default()
        },
    )
    .await;
    assert!(running.is_empty());

    // 6. Bad input.
    let e = create(
        &mut c,
        &"ab".repeat(32),
        container("x", &image),
        &pod_config,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = create(
        &mut c,
        &pod_id,
        container("x", "127.0.0.1:1/nothing/here:v9"),
        &pod_config,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("nothing/here:v9"), "{e:?}");
    let e = create(&mut c, &pod_id, container("hello", &image), &pod_config)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert!(e.message().contains(&hello_id), "{e:?}");
    let e = c
        .start_container(cri::StartContainerRequest {
            container_id: hello_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let e = c
        .container_status(cri::ContainerStatusRequest {
            container_id: "ab".repeat(32),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // 7. RemoveContainer (twice), then a container still running when the
    //    pod goes: RemovePodSandbox removes everything.
    for _ in 0..2 {
        c.remove_container(cri::RemoveContainerRequest {
            container_id: hello_id.clone(),
        })
        .await
        .unwrap();
    }
    assert_eq!(
        list_containers(&mut c, cri::ContainerFilter::default())
            .await
            .len(),
        4
    );
    let last = sleeping("last", &image, marker());
    let last_id = create_and_start(&mut c, &pod_id, last, &pod_config).await;
    assert_eq!(marker_processes().len(), 1, "{:?}", marker_processes());
    c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .unwrap();
    assert!(list_containers(&mut c, cri::ContainerFilter::default())
        .await
        .is_empty());
    let e = c
        .container_status(cri::ContainerStatusRequest {
            container_id: last_id.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    let end = Instant::now() + Duration::from_secs(5);
    while !marker_processes().is_empty() && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(marker_processes().is_empty(), "{:?}", marker_processes());
    let after = env.snapshot();
    assert_eq!(before.leaked(&after), Vec::<String>::new());
    let records = std::fs::read_dir(env.config.root.join("containers"))
        .unwrap()
        .count();
    assert_eq!(records, 0, "container records left");

    drop(c);
    daemon.shutdown().await;
}

fn spawn_hearthd(config: &std::path::Path, log: &std::path::Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_hearthd"))
        .arg("--config")
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

async fn connect(socket: &std::path::Path) -> Channel {
    for _ in 0..200 {
        if socket.exists() {
            if let Ok(ch) = hearth_test_support::cri_channel(socket).await {
                let mut c = RuntimeServiceClient::new(ch.clone());
                if c.version(cri::VersionRequest::default()).await.is_ok() {
                    return ch;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("hearthd did not come up on {}", socket.display());
}

/// hearthd is SIGKILLed while a container runs and writes: a new hearthd
/// picks the container up, its later output reaches the same log (the
/// agent held it meanwhile) and its exit is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_container_survives_a_hearthd_restart() {
    if skip_without_registry("containers restart") {
        return;
    }
    let (_reg, image) = registry_with_busybox();
    let mut env = Env::new();
    let kubelet_root = env.path().join("kubelet");
    env.config.volumes.kubelet_root_dir = kubelet_root.clone();
    let config = env.write_config();
    let mut hearthd = spawn_hearthd(&config, &env.path().join("hearthd-1.log"));
    let ch = connect(&env.config.address).await;
    pull(&ch, &image).await;
    let before = env.snapshot();
    let mut c = RuntimeServiceClient::new(ch);
    let (pod_id, pod_config, logs) = run_pod_with_logs(&mut c, &env, "restart", &handler()).await;
    let mut cfg = container("writer", &image);
    cfg.command = vec![
        "/bin/sh".into(),
        "-c".into(),
        "echo one; /bin/busybox sleep 3; echo two; exit 5".into(),
    ];
    let id = create_and_start(&mut c, &pod_id, cfg, &pod_config).await;
    // A container reading a secret: its watcher must come back with hearthd.
    let uid = pod_config.metadata.as_ref().unwrap().uid.clone();
    let secret = kubelet::volume_dir(&kubelet_root, &uid, "secret", "token");
    kubelet::write_atomic(&secret, &[("key", "before")]);
    let mut reader = sleeping("reader", &image, "600");
    reader.mounts = vec![mount(&secret, "/secret", true)];
    let reader_id = create_and_start(&mut c, &pod_id, reader, &pod_config).await;
    let log = logs.join("writer/0.log");
    let end = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("stdout F one")
    {
        assert!(Instant::now() < end, "no output before the restart");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    hearthd.kill().unwrap();
    hearthd.wait().unwrap();
    drop(c);
    kubelet::write_atomic(&secret, &[("key", "during")]);

    let mut hearthd = spawn_hearthd(&config, &env.path().join("hearthd-2.log"));
    let mut c = RuntimeServiceClient::new(connect(&env.config.address).await);
    let s = wait_state(&mut c, &id, EXITED).await;
    assert_eq!((s.exit_code, s.reason.as_str()), (5, "Error"), "{s:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<String> = text.lines().map(|l| parse_log_line(l).2).collect();
    assert_eq!(lines, ["one", "two"], "{text}");
    // An update made while hearthd was away, and one after: both arrive.
    let cat = ["/bin/busybox", "cat", "/secret/key"];
    wait_output(&mut c, &reader_id, &cat, "during").await;
    kubelet::write_atomic(&secret, &[("key", "after")]);
    wait_output(&mut c, &reader_id, &cat, "after").await;

    c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .unwrap();
    drop(c);
    hearthd.kill().unwrap();
    hearthd.wait().unwrap();
    assert_eq!(before.leaked(&env.snapshot()), Vec::<String>::new());
}

//! hearthd SIGKILLed while three sandboxes run: a new hearthd lists them
//! READY; one whose agent was killed meanwhile is NOTREADY and removes
//! cleanly; nothing is left at the end.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;

fn spawn_hearthd(config: &std::path::Path, log: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_hearthd"))
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

async fn connect(socket: &std::path::Path) -> Client {
    for _ in 0..200 {
        if socket.exists() {
            if let Ok(ch) = hearth_test_support::cri_channel(socket).await {
                let mut c = RuntimeServiceClient::new(ch);
                if c.version(cri::VersionRequest::default()).await.is_ok() {
                    return c;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("hearthd did not come up on {}", socket.display());
}

async fn states(c: &mut Client) -> Vec<(String, i32)> {
    let mut v: Vec<(String, i32)> = list_pods(c, None)
        .await
        .into_iter()
        .map(|p| (p.id, p.state))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_hearthd_finds_its_sandboxes() {
    if hearth_test_support::skip_unless_root("restart") {
        return;
    }
    let env = Env::new();
    let before = env.snapshot();
    let config = env.write_config();
    let mut first = spawn_hearthd(&config, &env.path().join("hearthd-1.log"));
    let mut c = connect(&env.config.address).await;
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        let id = c
            .run_pod_sandbox(run_request(pod(name, &env.cgroup_parent)))
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id;
        ids.push(id);
    }
    let victim_pid = agent_pid(&mut c, &ids[2]).await as i32;
    drop(c);

    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    // SAFETY: kill with a pid read from hearthd's status of our sandbox.
    unsafe { libc::kill(victim_pid, libc::SIGKILL) };

    let mut second = spawn_hearthd(&config, &env.path().join("hearthd-2.log"));
    let mut c = connect(&env.config.address).await;
    let mut want: Vec<(String, i32)> = vec![
        (ids[0].clone(), READY),
        (ids[1].clone(), READY),
        (ids[2].clone(), NOTREADY),
    ];
    want.sort();
    // The victim may take a moment to be reaped and seen gone.
    let mut got = states(&mut c).await;
    for _ in 0..100 {
        if got == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        got = states(&mut c).await;
    }
    assert_eq!(got, want);
    let (state, info) = common::info(&mut c, &ids[2]).await;
    assert_eq!(state, NOTREADY);
    assert!(
        info["reason"].as_str().unwrap_or("").contains("gone"),
        "{info}"
    );
    // SIGTERM: hearthd exits cleanly and the sandboxes keep running; a
    // third hearthd finds them READY again.
    let survivors: Vec<u32> = {
        let mut v = Vec::new();
        for id in &ids[..2] {
            v.push(agent_pid(&mut c, id).await);
        }
        v
    };
    drop(c);
    // SAFETY: plain signal to our child.
    unsafe { libc::kill(second.id() as i32, libc::SIGTERM) };
    let status = second.wait().unwrap();
    assert!(
        status.success(),
        "hearthd did not stop cleanly on SIGTERM: {status}"
    );
    for pid in &survivors {
        assert!(
            std::path::Path::new(&format!("/proc/{pid}/root/etc")).exists(),
            "agent {pid} did not survive hearthd's SIGTERM"
        );
    }
    let mut second = spawn_hearthd(&config, &env.path().join("hearthd-3.log"));
    let mut c = connect(&env.config.address).await;
    assert_eq!(states(&mut c).await, want);
    // The survivors' agents still answer through the new hearthd: stopping
    // goes through the agent's Shutdown.
    for id in &ids {
        stop_and_remove_pod(&mut c, id).await.unwrap();
    }
    assert!(states(&mut c).await.is_empty());
    drop(c);

    // SAFETY: plain signal to our child.
    unsafe { libc::kill(second.id() as i32, libc::SIGTERM) };
    let status = second.wait().unwrap();
    assert!(
        status.success(),
        "hearthd did not stop cleanly on SIGTERM: {status}"
    );
    reap_orphans();
    env.assert_clean(&before);
}

/// Agents orphaned by the killed hearthd are reparented to this test
/// process when it is a subreaper; reap what has exited.
fn reap_orphans() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
    }
}

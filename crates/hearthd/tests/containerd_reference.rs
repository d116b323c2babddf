//! Hearth against a reference: the same CRI request sequence is sent to a
//! private containerd 1.6 (Debian's, with its CRI plugin and runc) and to an
//! in-process hearthd, and the gRPC status codes and results are compared
//! step by step. Where Hearth differs on purpose the difference is listed in
//! [`DIFFERENCES`] with its reason; every other step must be equal, and a
//! listed step must still give exactly the listed codes, so a behaviour
//! change on either side fails the test.
//!
//! Layout: the containerd fixture ([`Containerd`]: config from
//! `fixtures/containerd/config.toml`, a pause image built from busybox-static
//! and imported with `ctr`, forced cleanup on drop), the scenario
//! ([`scenario`], run once per side), then the comparison.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

/// Where Hearth deliberately answers differently from Debian's containerd
/// 1.6.20, one row each: step | containerd | hearthd | why. The CRI proto
/// comments are the contract; containerd 1.6 maps every error that is not
/// one of its errdefs to Unknown.
const DIFFERENCES: &str = "
stop(unknown id)     | NotFound | OK              | CRI: Stop is idempotent; containerd too since PR #10520 (2024)
stop(b) removed      | NotFound | OK              | the same: a removed sandbox is an unknown one
run(no config)       | Unknown  | InvalidArgument | bad input names the field (containerd: a plain error)
run(no metadata)     | Unknown  | InvalidArgument | bad input names the field (containerd: a plain error)
run(unknown handler) | Unknown  | InvalidArgument | bad input names the handler (containerd: a plain error)
run(a) again         | Unknown  | AlreadyExists   | the name is taken: AlreadyExists (containerd: a plain error)
status(empty id)     | Unknown  | NotFound        | \"\" names no sandbox, as an unknown id (containerd: a plain error)
";

/// [`DIFFERENCES`] as (step, containerd, hearthd, why) rows.
fn differences() -> Vec<Vec<&'static str>> {
    DIFFERENCES
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('|').map(str::trim).collect::<Vec<_>>())
        .inspect(|row| assert_eq!(row.len(), 4, "DIFFERENCES row {row:?}"))
        .collect()
}

/// The sandbox image containerd runs (imported, never pulled).
const SANDBOX_IMAGE: &str = "hearth.test/pause:1";
/// A well-formed sandbox id that no runtime knows.
const UNKNOWN_ID: &str = "feedbeeffeedbeeffeedbeeffeedbeeffeedbeeffeedbeeffeedbeeffeedbeef";
/// Where containerd 1.6's shims put their sockets, whatever the config says.
const SHIM_SOCKETS: &str = "/run/containerd/s";
/// Static busybox: the pause image's only binary.
const BUSYBOX: &str = "/bin/busybox";
/// How long a whole scenario may take on one side.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------------------
// The scenario.

/// One runtime under test, and what it answered.
struct Side {
    client: RuntimeServiceClient<Channel>,
    /// The runtime handler of the pods that must run.
    handler: String,
    cgroup_parent: String,
    /// Pod name → sandbox id, for pods that ran.
    ids: BTreeMap<String, String>,
    /// What each step gave, in order.
    log: Vec<Step>,
}

impl Side {
    fn new(client: RuntimeServiceClient<Channel>, handler: &str, cgroup_parent: &str) -> Side {
        Side {
            client,
            handler: handler.into(),
            cgroup_parent: cgroup_parent.into(),
            ids: BTreeMap::new(),
            log: Vec::new(),
        }
    }

    /// Records "OK ..." or the error's code (its message is kept for the
    /// report, not compared).
    fn record(&mut self, step: &'static str, r: Result<String, tonic::Status>) {
        let (outcome, message) = match r {
            Ok(o) => (o, String::new()),
            Err(e) => (format!("{:?}", e.code()), e.message().to_owned()),
        };
        self.log.push(Step {
            step,
            outcome,
            message,
        });
    }

    /// The pod config both runtimes get: the e2e pod, on the host network
    /// (pod networking is not compared), with a `tier` label to select on.
    /// No hostname, as the kubelet sends host-network pods (runc refuses
    /// to set one in the host's UTS namespace).
    fn pod(&self, name: &str, tier: &str) -> cri::PodSandboxConfig {
        let mut p = pod(name, &self.cgroup_parent);
        p.hostname.clear();
        p.labels.insert("tier".into(), tier.into());
        let linux = p.linux.get_or_insert_with(Default::default);
        linux
            .security_context
            .get_or_insert_with(Default::default)
            .namespace_options = Some(cri::NamespaceOption {
            network: cri::NamespaceMode::Node as i32,
            ..Default::default()
        });
        p
    }

    async fn run(&mut self, step: &'static str, config: Option<cri::PodSandboxConfig>) {
        let handler = self.handler.clone();
        self.run_on(step, config, &handler).await;
    }

    async fn run_on(
        &mut self,
        step: &'static str,
        config: Option<cri::PodSandboxConfig>,
        handler: &str,
    ) {
        // Attempts after the first are tracked as "name#attempt".
        let key = config.as_ref().and_then(|c| c.metadata.as_ref()).map(|m| {
            if m.attempt == 0 {
                m.name.clone()
            } else {
                format!("{}#{}", m.name, m.attempt)
            }
        });
        let r = self
            .client
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config,
                runtime_handler: handler.into(),
            })
            .await;
        let r = r.map(|r| {
            let id = r.into_inner().pod_sandbox_id;
            self.ids.insert(key.unwrap_or_default(), id);
            "OK".to_string()
        });
        self.record(step, r);
    }

    async fn status(&mut self, step: &'static str, id: &str) {
        let r = self
            .client
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: false,
            })
            .await;
        let r = r.map(|r| {
            let s = r.into_inner().status.unwrap_or_default();
            format!("OK {} {}", self.name_of(&s.id), state_name(s.state))
        });
        self.record(step, r);
    }

    async fn stop(&mut self, step: &'static str, id: &str) {
        let r = self
            .client
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await;
        self.record(step, r.map(|_| "OK".into()));
    }

    async fn remove(&mut self, step: &'static str, id: &str) {
        let r = self
            .client
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await;
        self.record(step, r.map(|_| "OK".into()));
    }

    async fn list(&mut self, step: &'static str, filter: Option<cri::PodSandboxFilter>) {
        let r = self
            .client
            .list_pod_sandbox(cri::ListPodSandboxRequest { filter })
            .await;
        let r = r.map(|r| {
            let pods: BTreeSet<String> = r
                .into_inner()
                .items
                .iter()
                .map(|p| format!("{}:{}", self.name_of(&p.id), state_name(p.state)))
                .collect();
            format!("OK [{}]", pods.into_iter().collect::<Vec<_>>().join(", "))
        });
        self.record(step, r);
    }

    /// The pod name of a full id; ids this side did not hand out are
    /// reported as such (they would be a bug on that side).
    fn name_of(&self, id: &str) -> String {
        self.ids
            .iter()
            .find(|(_, v)| *v == id)
            .map_or_else(|| format!("<unknown id {id}>"), |(k, _)| k.clone())
    }

    fn id(&self, name: &str) -> String {
        self.ids
            .get(name)
            .unwrap_or_else(|| panic!("pod {name} did not run: {:?}", self.log))
            .clone()
    }

    /// The shortest prefix (at least 5 characters) of `name`'s id that no
    /// other sandbox id on this side starts with.
    fn unique_prefix(&self, name: &str) -> String {
        let id = self.id(name);
        let others: Vec<&String> = self.ids.values().filter(|v| **v != id).collect();
        (5..id.len())
            .map(|n| &id[..n])
            .find(|p| !others.iter().any(|o| o.starts_with(p)))
            .unwrap_or(&id)
            .to_string()
    }
}

/// One step's result on one side.
#[derive(Debug)]
struct Step {
    step: &'static str,
    /// "OK ..." (with the result, ids given as pod names) or the gRPC code.
    outcome: String,
    /// The error message, if any (reported, not compared).
    message: String,
}

fn state_name(s: i32) -> &'static str {
    match s {
        READY => "READY",
        NOTREADY => "NOTREADY",
        _ => "?",
    }
}

fn by_id(id: &str) -> Option<cri::PodSandboxFilter> {
    Some(cri::PodSandboxFilter {
        id: id.into(),
        ..Default::default()
    })
}

fn by_state(state: i32) -> Option<cri::PodSandboxFilter> {
    Some(cri::PodSandboxFilter {
        state: Some(cri::PodSandboxStateValue { state }),
        ..Default::default()
    })
}

fn by_labels(labels: &[(&str, &str)]) -> Option<cri::PodSandboxFilter> {
    Some(cri::PodSandboxFilter {
        label_selector: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    })
}

/// The request sequence, identical on both sides except for the runtime
/// handler and the cgroup parent. Ends with no sandbox left.
async fn scenario(s: &mut Side) {
    // 1. Unknown ids.
    s.status("status(unknown id)", UNKNOWN_ID).await;
    s.stop("stop(unknown id)", UNKNOWN_ID).await;
    s.remove("remove(unknown id)", UNKNOWN_ID).await;

    // 2. Missing config or metadata.
    s.run("run(no config)", None).await;
    let mut no_meta = s.pod("nometa", "front");
    no_meta.metadata = None;
    s.run("run(no metadata)", Some(no_meta)).await;

    // 7. Unknown runtime handler.
    let p = s.pod("nohandler", "front");
    s.run_on("run(unknown handler)", Some(p), "no-such-handler")
        .await;

    // 3. Duplicate name + namespace + uid + attempt; a new attempt is new.
    let a = s.pod("a", "front");
    s.run("run(a)", Some(a.clone())).await;
    s.run("run(a) again", Some(a.clone())).await;
    let mut a1 = a.clone();
    a1.metadata.as_mut().unwrap().attempt = 1;
    s.run("run(a, attempt 1)", Some(a1)).await;
    let id = s.id("a");
    s.list("list(all) after duplicate", None).await;
    let a1_id = s.id("a#1");
    s.remove("remove(a#1) running", &a1_id).await;

    // 5. and 6. Filters: a and c ready, b stopped; a and b front, c back.
    s.run("run(b)", Some(s.pod("b", "front"))).await;
    s.run("run(c)", Some(s.pod("c", "back"))).await;
    let b = s.id("b");
    s.stop("stop(b)", &b).await;
    s.list("list(all)", None).await;
    s.list("list(id=a)", by_id(&id)).await;
    let prefix = s.unique_prefix("a");
    s.list("list(id=unique prefix of a)", by_id(&prefix)).await;
    s.list("list(id=unknown)", by_id(UNKNOWN_ID)).await;
    s.list("list(state=READY)", by_state(READY)).await;
    s.list("list(state=NOTREADY)", by_state(NOTREADY)).await;
    s.list("list(tier=front)", by_labels(&[("tier", "front")]))
        .await;
    s.list(
        "list(tier=front, app=b)",
        by_labels(&[("tier", "front"), ("app", "b")]),
    )
    .await;
    s.list("list(tier=none)", by_labels(&[("tier", "none")]))
        .await;
    s.list(
        "list(state=READY, tier=front)",
        Some(cri::PodSandboxFilter {
            state: Some(cri::PodSandboxStateValue { state: READY }),
            label_selector: [("tier".to_string(), "front".to_string())].into(),
            ..Default::default()
        }),
    )
    .await;
    s.status("status(a)", &id).await;
    s.status("status(b)", &b).await;
    s.status("status(unique prefix of a)", &prefix).await;
    s.status("status(empty id)", "").await;

    // 4. Idempotence: stop twice, remove twice; remove without stop.
    s.stop("stop(b) again", &b).await;
    s.remove("remove(b)", &b).await;
    s.remove("remove(b) again", &b).await;
    s.status("status(b) removed", &b).await;
    s.stop("stop(b) removed", &b).await;
    s.remove("remove(a) running", &id).await;
    s.status("status(a) removed", &id).await;
    s.list("list(all) after removes", None).await;
    let c = s.id("c");
    s.stop("stop(c)", &c).await;
    s.remove("remove(c)", &c).await;
    s.list("list(all) at the end", None).await;
}

// ---------------------------------------------------------------------------
// The private containerd.

/// Why the comparison cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    if !hearth_test_support::is_root() {
        return Some("needs root (containerd, runc, mounts)".into());
    }
    for bin in ["containerd", "ctr", "containerd-shim-runc-v2", "runc"] {
        if which(bin).is_none() {
            return Some(format!(
                "{bin} is not installed (apt-get install containerd)"
            ));
        }
    }
    if !Path::new(BUSYBOX).exists() {
        return Some(format!(
            "{BUSYBOX} is missing (apt-get install busybox-static)"
        ));
    }
    None
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// A containerd on its own socket, root and state under a temp dir. Drop
/// kills whatever is left (pause processes, shims, containerd), unmounts
/// what it mounted and removes its cgroups, so a failing test leaves
/// nothing; [`Containerd::shut_down`] is the orderly path the test asserts.
struct Containerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Pods' cgroup parent (cgroupfs driver: a path under every hierarchy).
    cgroup_parent: String,
    /// Whether /run/containerd existed before, and what /run/containerd/s
    /// held: shims put their sockets there whatever the config says (1.6
    /// hard-codes it), and a killed shim leaves its socket behind.
    had_run_dir: bool,
    shim_sockets_before: BTreeSet<String>,
}

impl Containerd {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("containerd.log")
    }

    /// Starts containerd and imports the sandbox image; returns once the
    /// CRI plugin lists that image.
    async fn start() -> Containerd {
        let (dir, tag) = temp_dir("hearth-cref");
        let mut me = Containerd {
            child: None,
            cgroup_parent: format!("/{tag}"),
            had_run_dir: Path::new("/run/containerd").exists(),
            shim_sockets_before: list_dir(Path::new(SHIM_SOCKETS)).into_iter().collect(),
            dir,
        };
        let d = me.dir.path();
        for sub in ["cni-bin", "cni-conf"] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        let config = include_str!("fixtures/containerd/config.toml")
            .replace("@DIR@", &d.to_string_lossy())
            .replace("@SANDBOX_IMAGE@", SANDBOX_IMAGE);
        std::fs::write(d.join("config.toml"), config).unwrap();
        let image = build_pause_image(d);

        let log = std::fs::File::create(me.log()).unwrap();
        me.child = Some(
            Command::new("containerd")
                .arg("--config")
                .arg(d.join("config.toml"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawning containerd"),
        );

        // The socket is served once every plugin has loaded.
        let deadline = Instant::now() + Duration::from_secs(30);
        let channel = loop {
            if let Some(status) = me.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("containerd exited: {status}\n{}", me.log_tail());
            }
            if me.socket().exists() {
                if let Ok(ch) = hearth_test_support::cri_channel(&me.socket()).await {
                    break ch;
                }
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not serve in 30 s\n{}",
                me.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };

        let out = tokio::process::Command::new("ctr")
            .arg("--address")
            .arg(me.socket())
            .args(["--namespace", "k8s.io", "images", "import"])
            .args(["--snapshotter", "overlayfs", "--platform", "linux/amd64"])
            .arg(&image)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "ctr images import: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        // The CRI plugin learns of the image from containerd's events.
        let mut images = ImageServiceClient::new(channel);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = images
                .image_status(cri::ImageStatusRequest {
                    image: Some(cri::ImageSpec {
                        image: SANDBOX_IMAGE.into(),
                        ..Default::default()
                    }),
                    verbose: false,
                })
                .await
                .unwrap()
                .into_inner();
            if r.image.is_some() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the CRI plugin does not see {SANDBOX_IMAGE}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        me
    }

    async fn client(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(
            hearth_test_support::cri_channel(&self.socket())
                .await
                .unwrap(),
        )
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The orderly end: removes every sandbox through CRI, stops
    /// containerd with SIGTERM and returns what is still left (processes,
    /// mounts, shim sockets) before Drop forces anything.
    async fn shut_down(&mut self, before: &hearth_test_support::leaks::Snapshot) -> Vec<String> {
        let mut c = self.client().await;
        let pods = c
            .list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await
            .unwrap()
            .into_inner()
            .items;
        for p in pods {
            c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: p.id,
            })
            .await
            .unwrap();
        }
        drop(c);
        let mut child = self.child.take().unwrap();
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                self.child = Some(child);
                return vec!["containerd ignored SIGTERM for 10 s".into()];
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut left = leaks(before, &self.watch());
        left.extend(
            cgroup_procs(&self.cgroup_parent)
                .into_iter()
                .map(|p| format!("process in {}: {p}", self.cgroup_parent)),
        );
        left.extend(
            self.new_shim_sockets()
                .into_iter()
                .map(|s| format!("shim socket: {SHIM_SOCKETS}/{s}")),
        );
        left
    }

    fn new_shim_sockets(&self) -> Vec<String> {
        list_dir(Path::new(SHIM_SOCKETS))
            .into_iter()
            .filter(|s| !self.shim_sockets_before.contains(s))
            .collect()
    }

    fn watch(&self) -> hearth_test_support::leaks::Watch {
        hearth_test_support::leaks::Watch {
            netns_dirs: vec![],
            process_names: vec![self.dir.path().to_string_lossy().into_owned()],
            paths: vec![self.dir.path().to_path_buf()],
            ..Default::default()
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("containerd's log (tail):\n{}", self.log_tail());
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The pause processes, the shims (their command line names our
        // socket), their mounts and the pods' cgroups (runc removes a
        // container's own cgroup; the parents are the kubelet's, here ours).
        force_clean(self.dir.path(), &self.cgroup_parent);
        for s in self.new_shim_sockets() {
            let _ = std::fs::remove_file(Path::new(SHIM_SOCKETS).join(s));
        }
        if !self.had_run_dir {
            let _ = std::fs::remove_dir(SHIM_SOCKETS);
            let _ = std::fs::remove_dir("/run/containerd");
        }
    }
}

/// What the in-process hearthd's pods hold (agents, mounts, loop devices,
/// cgroups), undone when the test ends, so that a failing test leaves
/// nothing either; on success the test has asserted there was nothing left.
struct HearthGuard {
    dir: PathBuf,
    cgroup_parent: String,
}

impl Drop for HearthGuard {
    fn drop(&mut self) {
        force_clean(&self.dir, &self.cgroup_parent);
    }
}

/// Kills every process in `cgroup_parent` or whose command line names
/// `dir`, unmounts what is mounted under `dir`, detaches loop devices
/// backed by files under it and removes the cgroups. Best effort.
fn force_clean(dir: &Path, cgroup_parent: &str) {
    let dir_s = dir.to_string_lossy().into_owned();
    let mut pids = cgroup_procs(cgroup_parent);
    pids.extend(pids_mentioning(&dir_s));
    for pid in pids {
        // SAFETY: kill(2) has no memory preconditions.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    // Deepest mounts first.
    let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| m.starts_with(&dir_s))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let c = std::ffi::CString::new(m).unwrap();
        // SAFETY: umount2 with a valid C string.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    for dev in list_dir(Path::new("/sys/block")) {
        let backing = Path::new("/sys/block").join(&dev).join("loop/backing_file");
        if std::fs::read_to_string(backing).is_ok_and(|b| b.starts_with(&dir_s)) {
            let _ = Command::new("losetup")
                .args(["-d", &format!("/dev/{dev}")])
                .status();
        }
    }
    // Killed processes leave their cgroups a moment later.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cgroup_dirs(cgroup_parent).is_empty() && Instant::now() < deadline {
        for d in cgroup_dirs(cgroup_parent) {
            let _ = std::fs::remove_dir(d);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Builds a docker-archive image whose one layer holds static busybox, run
/// as `busybox sleep infinity`: the pause container's whole job.
fn build_pause_image(dir: &Path) -> PathBuf {
    let work = dir.join("image");
    std::fs::create_dir_all(work.join("layer/bin")).unwrap();
    std::fs::copy(BUSYBOX, work.join("layer/bin/busybox")).unwrap();
    let sh = |script: &str| {
        let out = Command::new("sh")
            .args(["-ec", script])
            .current_dir(&work)
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let diff_id = sh(
        "tar --numeric-owner --owner=0 --group=0 --mtime=@0 -C layer -cf layer.tar bin
        sha256sum layer.tar",
    );
    let diff_id = diff_id.split_whitespace().next().unwrap();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": ["/bin/busybox", "sleep", "infinity"],
            "WorkingDir": "/",
        },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{diff_id}")] },
    });
    std::fs::write(work.join("config.json"), config.to_string()).unwrap();
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": [SANDBOX_IMAGE],
        "Layers": ["layer.tar"],
    }]);
    std::fs::write(work.join("manifest.json"), manifest.to_string()).unwrap();
    sh("tar -cf pause.tar manifest.json config.json layer.tar");
    work.join("pause.tar")
}

/// `parent` in every cgroup v1 hierarchy (and the v2 root), with all the
/// directories below it, deepest first.
fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), out);
            }
        }
        out.push(d.to_path_buf());
    }
    let rel = parent.trim_start_matches('/');
    let mut roots: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join(rel))
        .collect();
    roots.push(Path::new("/sys/fs/cgroup").join(rel));
    let mut out = Vec::new();
    for r in roots {
        if r.is_dir() && !out.contains(&r) {
            walk(&r, &mut out);
        }
    }
    out
}

fn cgroup_procs(parent: &str) -> BTreeSet<libc::pid_t> {
    cgroup_dirs(parent)
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .flat_map(|s| {
            s.lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn pids_mentioning(needle: &str) -> Vec<libc::pid_t> {
    let me = std::process::id() as libc::pid_t;
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: libc::pid_t = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            (pid != me && String::from_utf8_lossy(&cmd).contains(needle)).then_some(pid)
        })
        .collect()
}

fn list_dir(d: &Path) -> Vec<String> {
    std::fs::read_dir(d)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// What leaked since `before`, without the host's link table: host-network
/// pods make no links, and other tests on this machine do.
fn leaks(
    before: &hearth_test_support::leaks::Snapshot,
    watch: &hearth_test_support::leaks::Watch,
) -> Vec<String> {
    before
        .leaked(&hearth_test_support::leaks::Snapshot::take(watch))
        .into_iter()
        .filter(|l| !l.starts_with("link: "))
        .collect()
}

// ---------------------------------------------------------------------------
// The comparison.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hearth_answers_as_containerd_does_or_says_why_not() {
    if let Some(why) = skip_reason() {
        eprintln!("containerd_reference: skipped: {why}");
        return;
    }
    let started = Instant::now();

    // containerd (runc, handler "").
    let mut ctrd = Containerd::start().await;
    let ctrd_before = hearth_test_support::leaks::Snapshot::take(&ctrd.watch());
    let mut reference = Side::new(ctrd.client().await, "", &ctrd.cgroup_parent);
    tokio::time::timeout(SCENARIO_TIMEOUT, scenario(&mut reference))
        .await
        .expect("containerd scenario timed out");
    drop(reference.client);
    let ctrd_left = ctrd.shut_down(&ctrd_before).await;
    assert_eq!(ctrd_left, Vec::<String>::new(), "containerd left these");
    let ctrd_cgroups = ctrd.cgroup_parent.clone();
    drop(ctrd);
    // Empty, so Drop could remove them.
    assert_eq!(cgroup_dirs(&ctrd_cgroups), Vec::<PathBuf>::new());
    let ctrd_time = started.elapsed();

    // hearthd (namespaces backend).
    let env = Env::new();
    let _guard = HearthGuard {
        dir: env.path().to_path_buf(),
        cgroup_parent: env.cgroup_parent.clone(),
    };
    let before = env.snapshot();
    let daemon = Daemon::start(&env).await;
    let mut hearth = Side::new(daemon.client.clone(), &handler(), &env.cgroup_parent);
    tokio::time::timeout(SCENARIO_TIMEOUT, scenario(&mut hearth))
        .await
        .expect("hearthd scenario timed out");
    drop(hearth.client);
    daemon.shutdown().await;
    assert_eq!(leaks(&before, &env.watch()), Vec::<String>::new());
    assert!(
        env.leftover_cgroups().is_empty(),
        "cgroups left: {:?}",
        env.leftover_cgroups()
    );
    eprintln!(
        "containerd side {:.1?}, hearthd side {:.1?}",
        ctrd_time,
        started.elapsed() - ctrd_time
    );

    compare(&reference.log, &hearth.log);
}

/// Every step equal, or listed in [`DIFFERENCES`] with exactly those codes.
fn compare(reference: &[Step], hearth: &[Step]) {
    let steps: Vec<&str> = reference.iter().map(|s| s.step).collect();
    assert_eq!(
        steps,
        hearth.iter().map(|s| s.step).collect::<Vec<_>>(),
        "the two sides ran different steps"
    );
    let mut table = String::from("step | containerd 1.6 | hearthd | verdict\n");
    let mut messages = String::new();
    let mut wrong = Vec::new();
    let listed = differences();
    for (theirs, ours) in reference.iter().zip(hearth) {
        let (step, c, h) = (theirs.step, &theirs.outcome, &ours.outcome);
        let verdict = match listed
            .iter()
            .find(|d| d[0] == step)
            .map(|d| (d[1], d[2], d[3]))
        {
            Some((lc, lh, why)) if c == lc && h == lh => format!("documented: {why}"),
            Some((lc, lh, _)) => {
                wrong.push(format!(
                    "{step}: listed as containerd {lc} / hearthd {lh}, got {c} / {h}"
                ));
                "CHANGED".into()
            }
            None if c == h => "equal".into(),
            None => {
                wrong.push(format!("{step}: containerd {c}, hearthd {h}"));
                "DIFFERENT".into()
            }
        };
        table.push_str(&format!("{step} | {c} | {h} | {verdict}\n"));
        if c != h {
            messages.push_str(&format!(
                "{step}:\n  containerd: {:?}\n  hearthd:    {:?}\n",
                theirs.message, ours.message
            ));
        }
    }
    for d in &listed {
        if !steps.contains(&d[0]) {
            wrong.push(format!("{}: listed but never run", d[0]));
        }
    }
    eprintln!("{table}\n{messages}");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

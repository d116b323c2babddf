//! `hearthctl run` against a real hearthd (namespaces handler) and a real
//! registry on 127.0.0.1: a Pod manifest becomes a pod with containers, its
//! state and logs are printed, the exit code is the containers', `--rm` and
//! failures leave nothing behind; bad manifests are refused before anything
//! is made. The volume part (examples/demo-pod.yaml: an emptyDir shared by
//! two containers and a secret) runs when hearthd takes mounts; until then
//! it says that it skipped.

mod common;
#[path = "common/containers.rs"]
mod ctr;
#[path = "common/hearthctl.rs"]
mod hearthctl;
#[path = "../../image/tests/common/mod.rs"]
mod registry;

use std::path::{Path, PathBuf};

use common::*;
use hearthctl::{Hearthctl, Output};
use hearthd::config::Config;

/// The config with `[volumes] kubelet_root_dir` set, if this hearthd has
/// that setting.
fn with_kubelet_root(config: &Config, root: &Path) -> Option<Config> {
    let mut value = toml::Value::try_from(config).ok()?;
    let table = value.as_table_mut()?;
    let volumes = table
        .entry("volumes")
        .or_insert_with(|| toml::Value::Table(Default::default()));
    volumes.as_table_mut()?.insert(
        "kubelet_root_dir".into(),
        toml::Value::String(root.to_string_lossy().into_owned()),
    );
    value.try_into().ok()
}

/// hearthctl with this test's kubelet root and log root.
struct Ctl {
    cli: Hearthctl,
    kubelet_root: PathBuf,
    log_root: PathBuf,
}

impl Ctl {
    /// `hearthctl run <manifest> <extra>` with this test's directories.
    fn run_pod(&self, manifest: &Path, extra: &[&str]) -> Output {
        let mut args = vec![
            "run".to_string(),
            manifest.to_string_lossy().into_owned(),
            "--runtime".into(),
            "namespaces".into(),
            "--timeout".into(),
            "60s".into(),
            "--kubelet-root-dir".into(),
            self.kubelet_root.to_string_lossy().into_owned(),
            "--log-root".into(),
            self.log_root.to_string_lossy().into_owned(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.cli.run(&args)
    }

    fn pods(&self) -> String {
        self.cli.run(&["pods", "-q", "--no-trunc"]).stdout
    }

    /// Pod directories left under the kubelet root and log root.
    fn leftovers(&self) -> Vec<PathBuf> {
        [self.kubelet_root.join("pods"), self.log_root.clone()]
            .iter()
            .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
            .map(|e| e.path())
            .collect()
    }
}

const NO_VOLUMES: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: plain
  labels: {app: plain}
spec:
  containers:
  - name: hello
    image: IMAGE
    command: [/bin/sh, -c]
    args: ['echo "hello $(WHO) from $PWD as $(busybox id -u):$(busybox id -g)"']
    workingDir: /tmp
    env:
    - {name: WHO, value: world}
    resources:
      requests: {cpu: 250m, memory: 32Mi}
      limits: {cpu: "1", memory: 64Mi}
    securityContext: {runAsUser: 1234, runAsGroup: 5678}
  - name: failing
    image: IMAGE
    command: [/bin/sh, -c, 'echo bye >&2; exit 3']
    resources:
      limits: {cpu: 500m, memory: 64Mi}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hearthctl_runs_pod_manifests() {
    if ctr::skip_without_registry("hearthctl_run") {
        return;
    }
    let Some(bin) = hearthctl::binary("hearthctl_run") else {
        return;
    };
    let (_reg, image) = ctr::registry_with_busybox();
    let mut env = Env::new();
    let kubelet_root = env.path().join("kubelet");
    let volumes_configured = match with_kubelet_root(&env.config, &kubelet_root) {
        Some(config) => {
            env.config = config;
            true
        }
        None => false,
    };
    // Pulled once here, so that the leak snapshot does not count the image.
    let (daemon, _) = ctr::daemon_with_image(&env, &image).await;
    let before = env.snapshot();
    let ctl = Ctl {
        cli: Hearthctl {
            bin,
            socket: env.config.address.clone(),
        },
        kubelet_root,
        log_root: env.path().join("pod-logs"),
    };
    let dir = env.path().to_path_buf();
    let result = tokio::task::spawn_blocking(move || {
        let plain = dir.join("plain.yaml");
        std::fs::write(&plain, NO_VOLUMES.replace("IMAGE", &image)).unwrap();

        // 1. Without --rm: the pod stays, sized from the summed limits.
        let r = ctl.run_pod(&plain, &[]);
        assert_eq!(
            r.code, 3,
            "exit code of `failing`: {}\n{}",
            r.stdout, r.stderr
        );
        assert!(
            r.stdout.contains("hello world from /tmp as 1234:5678"),
            "{}\n{}",
            r.stdout,
            r.stderr
        );
        assert!(
            r.stderr.contains("bye"),
            "stderr of `failing`: {}",
            r.stderr
        );
        let state: Vec<&str> = r.stdout.lines().filter(|l| l.contains("Exited")).collect();
        assert_eq!(state.len(), 2, "{}", r.stdout);
        assert!(
            state
                .iter()
                .any(|l| l.contains("hello") && l.contains(" 0 ")),
            "{state:?}"
        );
        assert!(
            state
                .iter()
                .any(|l| l.contains("failing") && l.contains(" 3 ")),
            "{state:?}"
        );
        let pod_id = ctl.pods().trim().to_string();
        assert_eq!(pod_id.len(), 64, "one pod left: {pod_id:?}");
        let inspect = ctl.cli.run(&["inspectp", &pod_id]);
        let info: serde_json::Value = serde_json::from_str(&inspect.stdout).unwrap();
        // 1 + 0.5 cpu of limits: 2 vCPUs; 128 MiB of limits.
        assert_eq!(info["info"]["info"]["vm"]["vcpus"], 2, "{info}");
        assert_eq!(
            info["status"]["labels"]["io.kubernetes.pod.name"], "plain",
            "{info}"
        );
        let uid = info["status"]["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(uid.len(), 36, "{info}");
        let ps = ctl.cli.run(&["ps", "-a", "-q", "--pod", &pod_id]).stdout;
        assert_eq!(ps.lines().count(), 2, "{ps}");
        assert!(ctl.cli.run(&["rmp", "-f", &pod_id]).code == 0);
        for d in ctl.leftovers() {
            std::fs::remove_dir_all(d).unwrap();
        }

        // 2. With --rm and -f: the logs as they come, then nothing left.
        let r = ctl.run_pod(&plain, &["--rm", "-f"]);
        assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
        assert!(
            r.stdout
                .contains("[hello] hello world from /tmp as 1234:5678"),
            "{}",
            r.stdout
        );
        assert_eq!(ctl.pods().trim(), "");
        assert_eq!(ctl.leftovers(), Vec::<PathBuf>::new());

        // 3. Refused before anything is made.
        let bad = dir.join("bad.yaml");
        std::fs::write(
            &bad,
            NO_VOLUMES.replace("IMAGE", &image).replace(
                "- {name: WHO, value: world}",
                "- {name: WHO, valueFrom: {fieldRef: {fieldPath: metadata.name}}}",
            ),
        )
        .unwrap();
        let r = ctl.run_pod(&bad, &["--rm"]);
        assert_eq!(r.code, 1);
        assert!(
            r.stderr.contains("env WHO") && r.stderr.contains("valueFrom"),
            "{}",
            r.stderr
        );
        let missing_secret = dir.join("nosecret.yaml");
        let demo = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo-pod.yaml"),
        )
        .unwrap()
        .replace("127.0.0.1:5000/hearth/busybox:demo", &image)
        // The test image has fewer applets than the demo's.
        .replace("cat /", "busybox cat /");
        std::fs::write(&missing_secret, demo.split("\n---").next().unwrap()).unwrap();
        let r = ctl.run_pod(&missing_secret, &["--rm"]);
        assert_eq!(r.code, 1);
        assert!(
            r.stderr.contains("no Secret \"demo-secret\""),
            "{}",
            r.stderr
        );
        assert_eq!(ctl.pods().trim(), "");
        assert_eq!(ctl.leftovers(), Vec::<PathBuf>::new());

        // 4. The demo: an emptyDir shared by two containers, a secret.
        let demo_file = dir.join("demo.yaml");
        std::fs::write(&demo_file, &demo).unwrap();
        let r = ctl.run_pod(&demo_file, &["--rm"]);
        let volumes_ran = if r.stderr.contains("Unimplemented") && r.stderr.contains("mounts") {
            eprintln!(
                "hearthctl_run: volume assertions SKIPPED: hearthd does not take mounts yet: {}",
                r.stderr
            );
            false
        } else {
            eprintln!("hearthctl run demo-pod.yaml:\n{}{}", r.stdout, r.stderr);
            assert!(
                volumes_configured,
                "hearthd took mounts but has no [volumes] kubelet_root_dir?"
            );
            assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
            assert!(
                r.stdout
                    .contains("demo writer says: hello from a Kubernetes secret"),
                "{}\n{}",
                r.stdout,
                r.stderr
            );
            true
        };
        assert_eq!(ctl.pods().trim(), "");
        assert_eq!(ctl.leftovers(), Vec::<PathBuf>::new());
        volumes_ran
    })
    .await;
    daemon.shutdown().await;
    let volumes_ran = result.unwrap();
    env.assert_clean(&before);
    eprintln!("hearthctl_run: volume part ran: {volumes_ran}");
}

//! hearthctl against a real hearthd: version, info, runp, pods, inspectp,
//! stopp, rmp, in tables and `-o json`, and its errors.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

/// hearthctl's binary: HEARTHCTL_BIN (scripts/test.sh builds and sets it),
/// else target/debug/hearthctl if it was built.
fn hearthctl() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HEARTHCTL_BIN") {
        return Some(PathBuf::from(p));
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/hearthctl");
    p.exists().then_some(p)
}

struct Ctl {
    bin: PathBuf,
    socket: PathBuf,
}

impl Ctl {
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(&self.bin)
            .arg("--address")
            .arg(&self.socket)
            .args(args)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "hearthctl {args:?} failed: {err}");
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hearthctl_drives_a_pod_through_hearthd() {
    if hearth_test_support::skip_unless_root("hearthctl_cli") {
        return;
    }
    let Some(bin) = hearthctl() else {
        eprintln!("hearthctl_cli: skipped: no hearthctl binary (build it with cargo build -p hearthctl or set HEARTHCTL_BIN)");
        return;
    };
    let env = Env::new();
    let before = env.snapshot();
    let daemon = Daemon::start(&env).await;
    let ctl = Ctl {
        bin,
        socket: env.config.address.clone(),
    };
    // hearthctl is synchronous from here on: run it off the async threads.
    let env_ns = env.path().to_path_buf();
    let result = tokio::task::spawn_blocking(move || {
        let v = ctl.ok(&["version"]);
        assert!(v.contains("RuntimeName:") && v.contains("hearth"), "{v}");
        let info = ctl.ok(&["info"]);
        assert!(info.contains("RuntimeReady"), "{info}");

        let id = ctl
            .ok(&["runp", "examples/pod.yaml", "--runtime", "namespaces"])
            .trim()
            .to_owned();
        assert_eq!(id.len(), 64, "runp printed {id:?}");
        let table = ctl.ok(&["pods"]);
        let header = table.lines().next().unwrap();
        for col in [
            "POD ID",
            "CREATED",
            "STATE",
            "NAME",
            "NAMESPACE",
            "ATTEMPT",
            "RUNTIME",
        ] {
            assert!(header.contains(col), "{header}");
        }
        let row = table.lines().nth(1).expect("one pod");
        assert!(
            row.starts_with(&id[..13]) && row.contains("Ready") && row.contains("demo"),
            "{row}"
        );

        let json: serde_json::Value =
            serde_json::from_str(&ctl.ok(&["pods", "-o", "json"])).unwrap();
        assert_eq!(json["items"][0]["metadata"]["name"], "demo", "{json}");
        let inspect: serde_json::Value =
            serde_json::from_str(&ctl.ok(&["inspectp", &id[..12]])).unwrap();
        assert_eq!(inspect["status"]["id"], id.as_str(), "{inspect}");
        assert_eq!(inspect["info"]["info"]["vm"]["vcpus"], 1, "{inspect}");
        assert_eq!(
            inspect["info"]["info"]["backend"], "namespaces",
            "{inspect}"
        );

        ctl.ok(&["stopp", &id[..12]]);
        let notready = ctl.ok(&["pods", "--state", "notready", "-q", "--no-trunc"]);
        assert_eq!(notready.trim(), id);
        ctl.ok(&["rmp", &id[..12]]);
        assert_eq!(ctl.ok(&["pods", "-q"]).trim(), "");

        // Errors: exit 1 and the gRPC code, named.
        let (code, _, err) = ctl.run(&["inspectp", "feedfeedfeed"]);
        assert_eq!(code, 1);
        assert!(err.contains("NotFound"), "{err}");
        let (code, _, err) = ctl.run(&["runp", "examples/no-such-file.yaml"]);
        assert_eq!(code, 1, "{err}");
        let missing = Ctl {
            bin: ctl.bin.clone(),
            socket: env_ns.join("nothing.sock"),
        };
        let (code, _, err) = missing.run(&["version"]);
        assert_eq!(code, 1);
        assert!(err.contains("is hearthd running?"), "{err}");
    })
    .await;
    daemon.shutdown().await;
    result.unwrap();
    env.assert_clean(&before);
}

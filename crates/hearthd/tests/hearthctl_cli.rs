//! hearthctl against a real hearthd: version, info, runp, pods, inspectp,
//! stopp, rmp, in tables and `-o json`, and its errors.

mod common;
#[path = "common/hearthctl.rs"]
mod hearthctl;

use common::*;
use hearthctl::Hearthctl;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hearthctl_drives_a_pod_through_hearthd() {
    if hearth_test_support::skip_unless_root("hearthctl_cli") {
        return;
    }
    let Some(bin) = hearthctl::binary("hearthctl_cli") else {
        return;
    };
    let env = Env::new();
    let before = env.snapshot();
    let daemon = Daemon::start(&env).await;
    let ctl = Hearthctl {
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
        let r = ctl.run(&["inspectp", "feedfeedfeed"]);
        assert_eq!(r.code, 1);
        assert!(r.stderr.contains("NotFound"), "{}", r.stderr);
        let r = ctl.run(&["runp", "examples/no-such-file.yaml"]);
        assert_eq!(r.code, 1, "{}", r.stderr);
        let missing = Hearthctl {
            bin: ctl.bin.clone(),
            socket: env_ns.join("nothing.sock"),
        };
        let r = missing.run(&["version"]);
        assert_eq!(r.code, 1);
        assert!(r.stderr.contains("is hearthd running?"), "{}", r.stderr);
    })
    .await;
    daemon.shutdown().await;
    result.unwrap();
    env.assert_clean(&before);
}

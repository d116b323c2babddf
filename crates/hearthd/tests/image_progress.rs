//! hearthd's admin service against a real registry (Debian's
//! docker-registry on 127.0.0.1, images built and pushed with skopeo):
//! PullProgress follows a CRI PullImage layer by layer to Done, PruneImages
//! frees what no image references, and `hearthctl pull` / `images prune`
//! print them (when the hearthctl binary is built).

mod common;
#[path = "../../image/tests/common/mod.rs"]
mod registry;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use hearthd::admin::proto::admin_client::AdminClient;
use hearthd::admin::proto::pull_progress_event::Event;
use hearthd::admin::proto::{PruneImagesRequest, PullProgressRequest};
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use registry::{busybox_layer, noise, tar_of, Built, Comp, Layer, Layout, Registry, E};
use tonic::transport::Channel;
use tonic::Code;

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn skip() -> bool {
    if hearth_test_support::skip_unless_root("image_progress") {
        return true;
    }
    if let Some(why) = registry::need(&["docker-registry", "skopeo", "mkfs.erofs"], true) {
        eprintln!("image_progress: skipped: {why}");
        return true;
    }
    false
}

/// A registry with a two-layer image (busybox + 3 MB of noise, so the big
/// layer streams in several chunks) under `name:v1`.
fn registry_with_image(name: &str) -> (Registry, Built, String) {
    let reg = Registry::start(None);
    let mut layout = Layout::new();
    let big = tar_of(&[E::FileOwned("noise", noise(3 << 20, 7), 0o644, 0)]);
    let built = layout.image(
        &[
            Layer::new(busybox_layer(), Comp::Gzip),
            Layer::new(big, Comp::Gzip),
        ],
        "amd64",
        "",
        serde_json::json!({}),
    );
    layout.tag(&built.desc, "v1");
    reg.push(layout.path(), "v1", name, &[]);
    let reference = format!("{}/{name}:v1", reg.host());
    (reg, built, reference)
}

async fn pull(images: &mut ImageServiceClient<Channel>, reference: &str) -> String {
    images
        .pull_image(cri::PullImageRequest {
            image: spec(reference),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .image_ref
}

/// Every event of a PullProgress stream, until it ends.
async fn events(admin: &mut AdminClient<Channel>, reference: &str, since: u64) -> Vec<Event> {
    let mut stream = admin
        .pull_progress(PullProgressRequest {
            reference: reference.into(),
            since_unix_ms: since,
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(e) = stream.message().await.unwrap() {
        out.push(e.event.expect("an event"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_progress_follows_each_layer_to_done() {
    if skip() {
        return;
    }
    let (_reg, built, reference) = registry_with_image("progress/img");
    let env = Env::new();
    let daemon = Daemon::start(&env).await;
    let mut images = ImageServiceClient::new(daemon.channel.clone());
    let mut admin = AdminClient::new(daemon.channel.clone());

    // Subscribed before the pull starts.
    let since = now_ms();
    let mut sub = admin.clone();
    let r1 = reference.clone();
    let watcher = tokio::spawn(async move { events(&mut sub, &r1, since).await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let id = pull(&mut images, &reference).await;
    let seen = watcher.await.unwrap();

    // Resolved first, with the manifest's layers.
    let Some(Event::Resolved(r)) = seen.first() else {
        panic!("first event is not Resolved: {seen:?}")
    };
    assert_eq!(r.image_id, id);
    let digests: Vec<&str> = r.layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(digests, built.layer_digests);
    // Per layer: bytes only grow, reach the total, then the layer is done.
    let mut last: HashMap<&str, u64> = HashMap::new();
    let mut finished = Vec::new();
    let mut updates = 0;
    for e in &seen {
        match e {
            Event::Layer(p) => {
                let size = r.layers.iter().find(|l| l.digest == p.digest).unwrap().size;
                assert_eq!(p.total_bytes, size);
                let prev = last.insert(&p.digest, p.done_bytes).unwrap_or(0);
                assert!(p.done_bytes >= prev && p.done_bytes <= size, "{p:?}");
                assert!(!finished.contains(&p.digest), "progress after done");
                updates += 1;
            }
            Event::LayerDone(d) => {
                assert!(d.downloaded, "{d:?}");
                assert_eq!(
                    last.get(d.digest.as_str()).copied(),
                    r.layers
                        .iter()
                        .find(|l| l.digest == d.digest)
                        .map(|l| l.size),
                    "layer done before all its bytes"
                );
                finished.push(d.digest.clone());
            }
            _ => {}
        }
    }
    finished.sort();
    let mut all = built.layer_digests.clone();
    all.sort();
    assert_eq!(finished, all, "every layer done");
    assert!(
        updates > 2,
        "the 3 MB layer came in several updates: {updates}"
    );
    let n = seen.len();
    assert!(
        matches!(seen[n - 2], Event::Building(_)),
        "{:?}",
        seen[n - 2]
    );
    assert!(matches!(&seen[n - 1], Event::Done(d) if d.image_id == id));

    // A late subscriber gets the kept state at once: every layer complete, then Done.
    let late = events(&mut admin, &reference, 0).await;
    assert!(matches!(late.first(), Some(Event::Resolved(_))));
    assert!(matches!(late.last(), Some(Event::Done(d)) if d.image_id == id));
    for l in &r.layers {
        assert!(late.iter().any(
            |e| matches!(e, Event::Layer(p) if p.digest == l.digest && p.done_bytes == l.size)
        ));
    }

    // A re-pull of the present image: every layer already there.
    let since = now_ms();
    let mut sub = admin.clone();
    let r2 = reference.clone();
    let watcher = tokio::spawn(async move { events(&mut sub, &r2, since).await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(pull(&mut images, &reference).await, id);
    let again = watcher.await.unwrap();
    assert_eq!(again.len(), 2 + r.layers.len(), "{again:?}");
    assert!(again[1..=r.layers.len()]
        .iter()
        .all(|e| matches!(e, Event::LayerDone(d) if !d.downloaded)));
    assert!(matches!(again.last(), Some(Event::Done(d)) if d.image_id == id));

    // A failed pull ends its subscribers with the error PullImage returns.
    let bad = format!("{}/progress/absent:v1", _reg.host());
    let since = now_ms();
    let mut sub = admin.clone();
    let b2 = bad.clone();
    let watcher = tokio::spawn(async move { events(&mut sub, &b2, since).await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let e = images
        .pull_image(cri::PullImageRequest {
            image: spec(&bad),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let failed = watcher.await.unwrap();
    assert!(
        matches!(failed.as_slice(), [Event::Failed(f)] if f.code == Code::NotFound as i32),
        "{failed:?}"
    );

    // Bad input.
    let e = admin
        .pull_progress(PullProgressRequest {
            reference: "UPPER/case:bad".into(),
            since_unix_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    drop((images, admin));
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_images_frees_only_unreferenced_content() {
    if skip() {
        return;
    }
    let (_reg, _built, reference) = registry_with_image("prune/img");
    let env = Env::new();
    let daemon = Daemon::start(&env).await;
    let mut images = ImageServiceClient::new(daemon.channel.clone());
    let mut admin = AdminClient::new(daemon.channel.clone());
    let id = pull(&mut images, &reference).await;

    // What a crash can leave: a verified blob and an erofs image of no image.
    let store = env.config.root.join("images");
    let data = b"left behind by an interrupted pull".to_vec();
    let blob = store
        .join("content/blobs/sha256")
        .join(registry::sha(&data).trim_start_matches("sha256:"));
    std::fs::write(&blob, &data).unwrap();
    let erofs = store
        .join("erofs")
        .join(format!("{}.erofs", "ab".repeat(32)));
    std::fs::write(&erofs, vec![0u8; 4096]).unwrap();
    let kept: Vec<PathBuf> = walk(&store);

    let r = admin
        .prune_images(PruneImagesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.blobs_removed, r.erofs_removed), (1, 1), "{r:?}");
    assert_eq!(r.bytes_freed, data.len() as u64 + 4096);
    assert!(!blob.exists() && !erofs.exists());
    let left = walk(&store);
    assert_eq!(
        left,
        kept.into_iter()
            .filter(|p| *p != blob && *p != erofs)
            .collect::<Vec<_>>(),
        "nothing else removed"
    );
    // The image is intact; a second prune has nothing to do.
    let st = images
        .image_status(cri::ImageStatusRequest {
            image: spec(&reference),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.image.unwrap().id, id);
    let r = admin
        .prune_images(PruneImagesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.blobs_removed, r.erofs_removed, r.bytes_freed), (0, 0, 0));

    drop((images, admin));
    daemon.shutdown().await;
}

/// hearthctl's binary: HEARTHCTL_BIN, else target/debug/hearthctl if built.
fn hearthctl() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HEARTHCTL_BIN") {
        return Some(PathBuf::from(p));
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/hearthctl");
    p.exists().then_some(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hearthctl_pull_prints_layers_and_a_summary() {
    if skip() {
        return;
    }
    let Some(bin) = hearthctl() else {
        eprintln!("image_progress: skipped: no hearthctl binary (cargo build -p hearthctl or set HEARTHCTL_BIN)");
        return;
    };
    let (_reg, built, reference) = registry_with_image("ctl/img");
    let env = Env::new();
    let daemon = Daemon::start(&env).await;
    let socket = env.config.address.clone();
    let run = move |args: Vec<String>| {
        let out = std::process::Command::new(&bin)
            .arg("--address")
            .arg(&socket)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let r = reference.clone();
    let run2 = run.clone();
    // Not a terminal: plain final lines, no cursor moves.
    let out = tokio::task::spawn_blocking(move || run2(vec!["pull".into(), r]))
        .await
        .unwrap();
    assert!(!out.contains('\x1b'), "{out:?}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for (line, digest) in lines.iter().zip(&built.layer_digests) {
        let short = &digest["sha256:".len().."sha256:".len() + 12];
        assert!(
            line.starts_with(&format!("{short}  [####################]  ")),
            "{line}"
        );
    }
    let id = &built.config_digest["sha256:".len().."sha256:".len() + 13];
    let head = format!("Pulled {reference} ({id}): 2 layers, ");
    assert!(lines[2].starts_with(&head), "{}", lines[2]);
    assert!(
        lines[2].ends_with(" s") && lines[2].contains(" MB in "),
        "{}",
        lines[2]
    );

    let out = tokio::task::spawn_blocking(move || run(vec!["images".into(), "prune".into()]))
        .await
        .unwrap();
    assert_eq!(out, "Removed 0 blobs and 0 erofs images, freed 0B\n");
    daemon.shutdown().await;
}

fn walk(p: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

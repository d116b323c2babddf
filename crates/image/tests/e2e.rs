//! End to end against a real `docker-registry` on 127.0.0.1, with images the
//! tests build themselves and push with skopeo. Tests that lack a binary or
//! root print `SKIP` and why.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use common::*;
use hearth_image::{Credentials, ImageError, ImageStore, ImageUser, PullProgress, RegistryConfig};
use serde_json::json;

fn store(cfg: RegistryConfig) -> (tempfile::TempDir, ImageStore) {
    let d = tempfile::tempdir().unwrap();
    let s = ImageStore::open(&d.path().join("store"), cfg).unwrap();
    (d, s)
}

fn two_layer_image(layout: &mut Layout, tag: &str) -> Built {
    let b = layout.image(
        &[
            Layer::new(busybox_layer(), Comp::Gzip),
            Layer::new(changes_layer(), Comp::Zstd),
        ],
        "amd64",
        "1000",
        json!({}),
    );
    layout.tag(&b.desc, tag);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_by_tag_and_digest_matches_independent_unpack() {
    skip_unless!(&[BASE_BINS, &["python3", "mount"]].concat(), true);
    let reg = Registry::start(None);
    let mut layout = Layout::new();
    let built = two_layer_image(&mut layout, "v1");
    reg.push(layout.path(), "v1", "test/busybox", &[]);
    let (_d, store) = store(RegistryConfig::default());

    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let sink: hearth_image::ProgressSink = Arc::new(move |p| ev.lock().unwrap().push(p));
    let name = format!("{}/test/busybox", reg.host());
    let img = store
        .pull(&format!("{name}:v1"), None, Some(sink))
        .await
        .unwrap();

    assert_eq!(img.id, built.config_digest);
    assert_eq!(img.repo_tags, vec![format!("{name}:v1")]);
    assert_eq!(
        img.repo_digests,
        vec![format!("{name}@{}", built.manifest_digest)]
    );
    assert_eq!(img.user, Some(ImageUser::Uid(1000)));
    assert_eq!(img.config.entrypoint, vec!["/bin/sh", "-c"]);
    assert_eq!(img.config.cmd, vec!["echo hi"]);
    assert_eq!(img.config.env, vec!["PATH=/bin", "A=b"]);
    assert_eq!(img.config.working_dir, "/work");
    assert_eq!(img.config.exposed_ports, vec!["80/tcp"]);
    assert_eq!(img.config.labels.get("l").map(String::as_str), Some("v"));
    assert_eq!(img.config.stop_signal, "SIGINT");
    assert_eq!(img.layers.len(), 2);
    assert_eq!(
        img.layers[1].media_type,
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    assert_eq!(
        std::fs::metadata(&img.erofs_path).unwrap().len(),
        img.erofs_size
    );
    assert!(img.size > img.erofs_size);
    {
        let ev = events.lock().unwrap();
        for l in &img.layers {
            assert!(ev.contains(&PullProgress::Layer {
                digest: l.digest.clone(),
                done: l.size,
                total: l.size
            }));
            assert!(ev.contains(&PullProgress::LayerDone {
                digest: l.digest.clone(),
                downloaded: true
            }));
        }
        assert_eq!(ev.last(), Some(&PullProgress::Done { id: img.id.clone() }));
    }
    let downloads = store.blob_downloads();
    assert_eq!(downloads, 3, "config and two layers");

    // By digest: same image, nothing downloaded again.
    let by_digest = store
        .pull(&format!("{name}@{}", built.manifest_digest), None, None)
        .await
        .unwrap();
    assert_eq!(by_digest.id, img.id);
    assert_eq!(store.blob_downloads(), downloads);
    // Lookups by id, bare hex, prefix, tag and digest reference.
    for q in [
        img.id.clone(),
        img.id[7..].to_string(),
        img.id[7..19].to_string(),
        format!("{name}:v1"),
        format!("{name}@{}", built.manifest_digest),
    ] {
        assert_eq!(store.get(&q).unwrap().id, img.id, "{q}");
    }
    assert!(matches!(
        store.get("nothere:v1"),
        Err(ImageError::NotFound(_))
    ));
    // Records survive a reopen.
    let reopened = ImageStore::open(store.root(), RegistryConfig::default()).unwrap();
    assert_eq!(reopened.list(), store.list());

    // The erofs image holds exactly the flattened layers.
    let expected = python_manifest(&[busybox_layer(), changes_layer()]).unwrap();
    let mount = Mount::erofs(&img.erofs_path);
    let actual = dir_manifest(mount.dir.path());
    assert_eq!(actual, expected);
    assert!(!actual.contains_key("etc/gone") && !actual.contains_key("opq/old"));
    assert!(actual["etc/owned"].starts_with("file 4750 1000 1000"));
    let ino = |p: &str| std::fs::metadata(mount.dir.path().join(p)).unwrap().ino();
    assert_eq!(ino("etc/passwd"), ino("etc/passwd-link"), "hard link kept");
    let attr = xattr::get(mount.dir.path().join("data/attr"), "user.hearth").unwrap();
    assert_eq!(attr.as_deref(), Some(&b"yes"[..]), "xattr kept");
    let mountpoint = mount.dir.path().display().to_string();
    drop(mount);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(&mountpoint), "unmounted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_schema2_and_multi_arch_index() {
    skip_unless!(BASE_BINS, false);
    let reg = Registry::start(None);
    let mut layout = Layout::new();
    let amd = layout.image(
        &[Layer::new(busybox_layer(), Comp::Gzip)],
        "amd64",
        "nobody",
        json!({}),
    );
    layout.tag(&amd.desc, "single");
    let arm = layout.image(
        &[Layer::new(tar_of(&[E::File("arm", b"arm")]), Comp::Gzip)],
        "arm64",
        "",
        json!({}),
    );
    let index = layout.index(&[arm.desc.clone(), amd.desc.clone()]);
    layout.tag(&index, "multi");
    let arm_only = layout.index(std::slice::from_ref(&arm.desc));
    layout.tag(&arm_only, "armonly");
    reg.push(layout.path(), "single", "v2s2/img", &["--format", "v2s2"]);
    reg.push(layout.path(), "multi", "multi/img", &["--all"]);
    reg.push(layout.path(), "armonly", "multi/img", &["--all"]);
    let (_d, store) = store(RegistryConfig::default());

    let img = store
        .pull(&format!("{}/v2s2/img:single", reg.host()), None, None)
        .await
        .unwrap();
    assert_eq!(
        img.manifest_media_type,
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        img.layers[0].media_type,
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    assert_eq!(img.user, Some(ImageUser::Name("nobody".into())));

    let multi = store
        .pull(&format!("{}/multi/img:multi", reg.host()), None, None)
        .await
        .unwrap();
    assert_eq!(multi.id, amd.config_digest, "linux/amd64 chosen");
    // Same config as the v2s2 copy: one image (id = config digest), two names.
    assert_eq!(multi.id, img.id);
    assert_eq!(multi.repo_tags.len(), 2);
    let index_digest = index["digest"].as_str().unwrap();
    assert!(multi
        .repo_digests
        .contains(&format!("{}/multi/img@{index_digest}", reg.host())));

    let (_d2, fresh) = store_empty_after(
        format!("{}/multi/img:armonly", reg.host()),
        RegistryConfig::default(),
        |e| matches!(e, ImageError::NoMatchingPlatform { available, .. } if available == "linux/arm64"),
    )
    .await;
    drop(fresh);
}

/// Pulls `reference` into a fresh store, expects an error, and checks the store is empty.
async fn store_empty_after(
    reference: String,
    cfg: RegistryConfig,
    check: impl Fn(&ImageError) -> bool,
) -> (tempfile::TempDir, ImageStore) {
    let (d, s) = store(cfg);
    let err = s.pull(&reference, None, None).await.unwrap_err();
    assert!(
        check(&err),
        "unexpected error for {reference}: {err} ({err:?})"
    );
    eprintln!("{reference}: {err}");
    assert_store_empty(&s);
    (d, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_auth() {
    skip_unless!(BASE_BINS, false);
    let reg = Registry::start(Some(("alice", "s3cret")));
    let mut layout = Layout::new();
    let built = two_layer_image(&mut layout, "v1");
    reg.push(layout.path(), "v1", "private/img", &[]);
    let reference = format!("{}/private/img:v1", reg.host());
    // Without credentials, and with wrong ones.
    let (_a, s) = store_empty_after(reference.clone(), RegistryConfig::default(), |e| {
        matches!(e, ImageError::Unauthorized { registry } if registry.starts_with("127.0.0.1:"))
    })
    .await;
    let bad = Credentials::Basic {
        username: "alice".into(),
        password: "wrong".into(),
    };
    assert!(matches!(
        s.pull(&reference, Some(bad), None).await,
        Err(ImageError::Unauthorized { .. })
    ));
    assert_store_empty(&s);
    // CRI AuthConfig fields.
    let good = Credentials::from_auth_config("alice", "s3cret", "", "", "").unwrap();
    let img = s.pull(&reference, good.clone(), None).await.unwrap();
    assert_eq!(img.id, built.config_digest);
    // Once present, a tag is still resolved with the caller's credentials
    // (the client kept for alice is not lent to an anonymous pull).
    assert!(matches!(
        s.pull(&reference, None, None).await,
        Err(ImageError::Unauthorized { .. })
    ));
    assert_eq!(s.pull(&reference, good, None).await.unwrap().id, img.id);
    // The credentials file.
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("auth.json");
    std::fs::write(
        &file,
        json!({"auths": {reg.host(): {"auth": "YWxpY2U6czNjcmV0"}}}).to_string(),
    )
    .unwrap();
    let cfg = RegistryConfig {
        credentials_file: Some(file),
        ..Default::default()
    };
    let (_b, s2) = store(cfg);
    assert_eq!(
        s2.pull(&reference, None, None).await.unwrap().id,
        built.config_digest
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_serves_a_configured_registry() {
    skip_unless!(BASE_BINS, false);
    let reg = Registry::start(None);
    let mut layout = Layout::new();
    let built = two_layer_image(&mut layout, "1");
    reg.push(layout.path(), "1", "lib/app", &[]);
    let cfg: RegistryConfig = toml::from_str(&format!(
        "[mirrors]\n\"registry.invalid:5000\" = [\"http://{}\"]\n",
        reg.host()
    ))
    .unwrap();
    let (_d, s) = store(cfg);
    let img = s
        .pull("registry.invalid:5000/lib/app:1", None, None)
        .await
        .unwrap();
    assert_eq!(img.id, built.config_digest);
    assert_eq!(
        img.repo_tags,
        vec!["registry.invalid:5000/lib/app:1".to_string()]
    );
    assert!(
        reg.blob_gets(&built.layer_digests[0]) == 1,
        "served by the mirror"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_download_each_blob_once() {
    skip_unless!(BASE_BINS, false);
    let reg = Registry::start(None);
    let mut layout = Layout::new();
    let built = two_layer_image(&mut layout, "v1");
    reg.push(layout.path(), "v1", "conc/img", &[]);
    let (_d, s) = store(RegistryConfig::default());
    let s = Arc::new(s);
    let reference = format!("{}/conc/img:v1", reg.host());
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
            let r = reference.clone();
            tokio::spawn(async move { s.pull(&r, None, None).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().id, built.config_digest);
    }
    assert_eq!(s.blob_downloads(), 3, "config + 2 layers, once each");
    for l in &built.layer_digests {
        assert_eq!(reg.blob_gets(l), 1, "registry served {l} once");
    }
    assert_eq!(s.list().len(), 1);
}

fn du(path: &std::path::Path) -> (u64, u64) {
    let out = std::process::Command::new("du")
        .args(["-s", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    let bytes = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let out = std::process::Command::new("du")
        .args(["-s", "--inodes"])
        .arg(path)
        .output()
        .unwrap();
    let inodes = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (bytes, inodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_frees_unshared_content_and_fs_info_matches_disk() {
    skip_unless!(&[BASE_BINS, &["du"]].concat(), false);
    let reg = Registry::start(None);
    let mut layout = Layout::new();
    let a = two_layer_image(&mut layout, "a");
    let b = layout.image(
        &[
            Layer::new(busybox_layer(), Comp::Gzip),
            Layer::new(tar_of(&[E::File("only-b", b"b")]), Comp::Gzip),
        ],
        "amd64",
        "",
        json!({}),
    );
    layout.tag(&b.desc, "b");
    reg.push(layout.path(), "a", "gc/img", &[]);
    reg.push(layout.path(), "b", "gc/img", &[]);
    let (_d, s) = store(RegistryConfig::default());
    let ia = s
        .pull(&format!("{}/gc/img:a", reg.host()), None, None)
        .await
        .unwrap();
    let ib = s
        .pull(&format!("{}/gc/img:b", reg.host()), None, None)
        .await
        .unwrap();
    assert_eq!(a.layer_digests[0], b.layer_digests[0], "shared base layer");

    let usage = s.fs_info().await.unwrap();
    assert_eq!((usage.used_bytes, usage.inodes_used), du(s.root()));
    assert_eq!(usage.mountpoint, s.root());

    let blob = |d: &str| s.root().join("content/blobs/sha256").join(&d[7..]);
    let mut open_erofs = std::fs::File::open(&ia.erofs_path).unwrap();
    let report = s.remove(&format!("{}/gc/img:a", reg.host())).await.unwrap();
    assert_eq!(report.erofs_removed, 1);
    assert!(matches!(s.get(&ia.id), Err(ImageError::NotFound(_))));
    assert!(!ia.erofs_path.exists());
    assert!(!blob(&a.layer_digests[1]).exists() && !blob(&a.config_digest).exists());
    assert!(blob(&b.layer_digests[0]).exists(), "shared layer kept");
    assert!(ib.erofs_path.exists());
    // A container still attached to the removed image keeps reading it.
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut open_erofs, &mut data).unwrap();
    assert_eq!(data.len() as u64, ia.erofs_size);

    let usage2 = s.fs_info().await.unwrap();
    assert!(usage2.used_bytes < usage.used_bytes);
    assert_eq!((usage2.used_bytes, usage2.inodes_used), du(s.root()));

    s.remove(&ib.id[7..19]).await.unwrap();
    assert_store_empty(&s);
    assert_eq!(s.prune().await.unwrap(), Default::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_blobs_and_manifests_leave_nothing() {
    skip_unless!(BASE_BINS, false);
    let reg = Registry::start(None);
    let mut layout = Layout::new();
    let tampered = layout.image(
        &[Layer::new(
            tar_of(&[E::File("t", &[1u8; 5000])]),
            Comp::Gzip,
        )],
        "amd64",
        "",
        json!({}),
    );
    layout.tag(&tampered.desc, "tampered");
    let truncated = layout.image(
        &[Layer::new(
            tar_of(&[E::File("u", &[2u8; 5000])]),
            Comp::Gzip,
        )],
        "amd64",
        "",
        json!({}),
    );
    layout.tag(&truncated.desc, "truncated");
    let big = layout.image(
        &[Layer::new(tar_of(&[E::File("b", b"b")]), Comp::Gzip)],
        "amd64",
        "",
        json!({"annotations": {"padding": "x".repeat(5000)}}),
    );
    layout.tag(&big.desc, "big");
    let mut odd = Layer::new(tar_of(&[E::File("o", b"o")]), Comp::None);
    odd.media_type = Some("application/vnd.example.unknown".into());
    let unknown = layout.image(&[odd], "amd64", "", json!({}));
    layout.tag(&unknown.desc, "unknown");
    for t in ["tampered", "truncated", "big", "unknown"] {
        reg.push(layout.path(), t, "bad/img", &[]);
    }
    // Tamper with the registry's stored blob (same size), truncate another.
    let f = reg.blob_file(&tampered.layer_digests[0]);
    let mut data = std::fs::read(&f).unwrap();
    let n = data.len();
    data[n / 2] ^= 0xff;
    std::fs::write(&f, data).unwrap();
    let f = reg.blob_file(&truncated.layer_digests[0]);
    let data = std::fs::read(&f).unwrap();
    std::fs::write(&f, &data[..data.len() / 2]).unwrap();

    let h = reg.host();
    let want = tampered.layer_digests[0].clone();
    store_empty_after(
        format!("{h}/bad/img:tampered"),
        RegistryConfig::default(),
        |e| matches!(e, ImageError::DigestMismatch { expected, .. } if *expected == want),
    )
    .await;
    store_empty_after(
        format!("{h}/bad/img:truncated"),
        RegistryConfig::default(),
        |e| matches!(e, ImageError::SizeMismatch { .. }),
    )
    .await;
    let small = RegistryConfig {
        max_manifest_bytes: 4096,
        ..Default::default()
    };
    store_empty_after(format!("{h}/bad/img:big"), small, |e| {
        matches!(e, ImageError::ManifestTooLarge { limit: 4096, .. })
    })
    .await;
    store_empty_after(format!("{h}/bad/img:unknown"), RegistryConfig::default(), |e| {
        matches!(e, ImageError::UnsupportedMediaType(m) if m == "application/vnd.example.unknown")
    })
    .await;
    store_empty_after(
        format!("{h}/bad/img:absent"),
        RegistryConfig::default(),
        |e| matches!(e, ImageError::NotFound(_)),
    )
    .await;
    // Registry down: a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    store_empty_after(
        format!("127.0.0.1:{port}/x/y:z"),
        RegistryConfig::default(),
        |e| matches!(e, ImageError::Registry { .. }),
    )
    .await;
    // Invalid references never reach a registry.
    let (_d, s) = store(RegistryConfig::default());
    assert!(matches!(
        s.pull("Bad//Ref", None, None).await,
        Err(ImageError::InvalidReference { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_layers_are_refused() {
    skip_unless!(BASE_BINS, false);
    let reg = Registry::start(None);
    let mut layout = Layout::new();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot",
            tar_of(&[E::Dir("a/"), E::File("a/../../escaped", b"x")]),
        ),
        ("absolute", tar_of(&[E::File("/escaped", b"x")])),
        (
            "symlink",
            tar_of(&[
                E::Sym("link", "../../../../.."),
                E::File("link/tmp/escaped", b"x"),
            ]),
        ),
        ("device", tar_of(&[E::Dir("dev/"), E::Char("dev/null")])),
    ];
    let mut digests = BTreeMap::new();
    for (tag, tar) in &cases {
        let b = layout.image(
            &[
                Layer::new(busybox_layer(), Comp::Gzip),
                Layer::new(tar.clone(), Comp::Gzip),
            ],
            "amd64",
            "",
            json!({}),
        );
        layout.tag(&b.desc, tag);
        digests.insert(tag.to_string(), b.layer_digests[1].clone());
    }
    for (tag, _) in &cases {
        reg.push(layout.path(), tag, "unsafe/img", &[]);
    }
    let h = reg.host();
    for (tag, _) in &cases {
        let layer_digest = digests[*tag].clone();
        let (d, _s) = store_empty_after(
            format!("{h}/unsafe/img:{tag}"),
            RegistryConfig::default(),
            |e| match e {
                ImageError::UnsafeLayerPath { layer, path, .. } => {
                    *layer == layer_digest && path.contains("escaped")
                }
                ImageError::DeviceNodeNotAllowed { layer, path } => {
                    *tag == "device" && *layer == layer_digest && path == "dev/null"
                }
                _ => false,
            },
        )
        .await;
        let leaked: Vec<PathBuf> = walk(d.path())
            .into_iter()
            .filter(|p| p.ends_with("escaped"))
            .collect();
        assert!(leaked.is_empty(), "{leaked:?}");
    }
    assert!(!std::path::Path::new("/tmp/escaped").exists());
    // Allowed by config, the device node is created (mknod needs root).
    if let Some(why) = need(&[], true) {
        eprintln!("SKIP unsafe_layers_are_refused (allowed device part): {why}");
        return;
    }
    let (_d, s) = store(RegistryConfig {
        allow_device_nodes: true,
        ..Default::default()
    });
    let img = s
        .pull(&format!("{h}/unsafe/img:device"), None, None)
        .await
        .unwrap();
    assert!(img.erofs_size > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repull_of_a_present_image_writes_nothing_and_resolves_tags_remotely() {
    skip_unless!(BASE_BINS, false);
    let reg = Registry::start(None);
    let mut layout = Layout::new();
    let built = two_layer_image(&mut layout, "v1");
    reg.push(layout.path(), "v1", "re/pull", &[]);
    let (_d, s) = store(RegistryConfig::default());
    let name = format!("{}/re/pull", reg.host());
    let img = s.pull(&format!("{name}:v1"), None, None).await.unwrap();
    let record = s
        .root()
        .join("images")
        .join(format!("{}.json", &img.id[7..]));
    let written = std::fs::metadata(&record).unwrap().modified().unwrap();
    let downloads = s.blob_downloads();

    // By tag: resolved remotely, nothing fetched or written, the same events.
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let sink: hearth_image::ProgressSink = Arc::new(move |p| ev.lock().unwrap().push(p));
    let again = s
        .pull(&format!("{name}:v1"), None, Some(sink))
        .await
        .unwrap();
    assert_eq!(again, img, "the record is unchanged");
    assert_eq!(s.blob_downloads(), downloads);
    assert_eq!(
        std::fs::metadata(&record).unwrap().modified().unwrap(),
        written
    );
    let mut expected = vec![PullProgress::Resolved {
        id: img.id.clone(),
        layers: img
            .layers
            .iter()
            .map(|l| (l.digest.clone(), l.size))
            .collect(),
    }];
    expected.extend(img.layers.iter().map(|l| PullProgress::LayerDone {
        digest: l.digest.clone(),
        downloaded: false,
    }));
    expected.push(PullProgress::Done { id: img.id.clone() });
    assert_eq!(*events.lock().unwrap(), expected);

    // By digest: the same image.
    let digest_ref = format!("{name}@{}", built.manifest_digest);
    assert_eq!(s.pull(&digest_ref, None, None).await.unwrap().id, img.id);

    // With the registry gone, a digest still pulls (content addressed, no
    // network) but a tag does not: it may have moved.
    drop(reg);
    assert_eq!(s.pull(&digest_ref, None, None).await.unwrap().id, img.id);
    let e = s.pull(&format!("{name}:v1"), None, None).await.unwrap_err();
    assert!(matches!(e, ImageError::Registry { .. }), "{e:?}");
    assert_eq!(s.list().len(), 1, "a failed re-pull removes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retagging_moves_the_tag() {
    skip_unless!(BASE_BINS, false);
    let reg = Registry::start(None);
    let mut l1 = Layout::new();
    let a = l1.image(
        &[Layer::new(tar_of(&[E::File("a", b"a")]), Comp::Gzip)],
        "amd64",
        "",
        json!({}),
    );
    l1.tag(&a.desc, "t");
    let mut l2 = Layout::new();
    let b = l2.image(
        &[Layer::new(tar_of(&[E::File("b", b"b")]), Comp::Gzip)],
        "amd64",
        "",
        json!({}),
    );
    l2.tag(&b.desc, "t");
    let (_d, s) = store(RegistryConfig::default());
    let name = format!("{}/re/tag:t", reg.host());
    reg.push(l1.path(), "t", "re/tag", &[]);
    assert_eq!(s.pull(&name, None, None).await.unwrap().id, a.config_digest);
    reg.push(l2.path(), "t", "re/tag", &[]);
    assert_eq!(s.pull(&name, None, None).await.unwrap().id, b.config_digest);
    assert_eq!(s.get(&name).unwrap().id, b.config_digest);
    let old = s.get(&a.config_digest).unwrap();
    assert!(
        old.repo_tags.is_empty(),
        "tag moved away: {:?}",
        old.repo_tags
    );
    assert_eq!(old.repo_digests.len(), 1, "still reachable by digest");
    // Moved back to an image still present: nothing to fetch, the tag moves.
    reg.push(l1.path(), "t", "re/tag", &[]);
    let downloads = s.blob_downloads();
    assert_eq!(s.pull(&name, None, None).await.unwrap().id, a.config_digest);
    assert_eq!(s.blob_downloads(), downloads);
    assert_eq!(s.get(&name).unwrap().id, a.config_digest);
    assert!(s.get(&b.config_digest).unwrap().repo_tags.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_pull_leaves_nothing_trusted() {
    skip_unless!(BASE_BINS, false);
    let reg = Registry::start(None);
    let mut layout = Layout::new();
    let big = tar_of(&[E::FileOwned("big", noise(16 << 20, 7), 0o644, 0)]);
    let built = layout.image(&[Layer::new(big, Comp::None)], "amd64", "", json!({}));
    layout.tag(&built.desc, "big");
    reg.push(layout.path(), "big", "cut/img", &[]);
    let (_d, s) = store(RegistryConfig::default());
    let s = Arc::new(s);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let tx = Mutex::new(Some(tx));
    let sink: hearth_image::ProgressSink = Arc::new(move |p| {
        if let PullProgress::Layer { done, total, .. } = p {
            if done < total {
                if let Some(tx) = tx.lock().unwrap().take() {
                    let _ = tx.send(());
                }
            }
        }
    });
    let reference = format!("{}/cut/img:big", reg.host());
    let task = {
        let (s, r) = (s.clone(), reference.clone());
        tokio::spawn(async move { s.pull(&r, None, Some(sink)).await })
    };
    rx.await.expect("the download started");
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    // As after a crash: leftovers of a download and of a build.
    std::fs::write(s.root().join("content/tmp/dl-crash"), b"partial").unwrap();
    std::fs::create_dir_all(s.root().join("tmp/build-crash/rootfs")).unwrap();
    let layer_blob = s
        .root()
        .join("content/blobs/sha256")
        .join(&built.layer_digests[0][7..]);
    assert!(!layer_blob.exists(), "no partial blob under its final name");
    let reopened = ImageStore::open(s.root(), RegistryConfig::default()).unwrap();
    reopened.prune().await.unwrap();
    assert_store_empty(&reopened);
    let img = reopened.pull(&reference, None, None).await.unwrap();
    assert_eq!(img.id, built.config_digest);
}

fn walk(p: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(p.clone());
                }
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn registry_config_from_toml() {
    let cfg: RegistryConfig = toml::from_str(
        r#"
        insecure = ["registry.local:5000"]
        credentials_file = "/etc/hearth/auth.json"
        max_manifest_bytes = 1048576
        allow_device_nodes = true
        [mirrors]
        "docker.io" = ["https://mirror.example", "http://127.0.0.1:5001"]
        "#,
    )
    .unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.mirrors["docker.io"].len(), 2);
    assert!(toml::from_str::<RegistryConfig>("unknown = 1").is_err());
    let d: RegistryConfig = toml::from_str("").unwrap();
    assert_eq!(d, RegistryConfig::default());
    assert_eq!(d.max_manifest_bytes, 4 << 20);
    assert!(!d.allow_device_nodes);
}

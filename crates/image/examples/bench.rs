//! Pull + convert benchmark against a local `docker-registry`.
//!
//! `cargo run -p hearth-image --example bench --release`
//!
//! For a ~10 MiB and a ~100 MiB image (two layers of real binaries from the host),
//! measures `ImageStore::pull` into an empty store (download, verify, unpack,
//! mkfs.erofs), `skopeo copy` of the same image to a local `dir:`, their
//! ratio, and re-pulls of the present image (median of 9): by tag (one
//! manifest round trip to notice a moved tag) and by digest (no network).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::*;
use hearth_image::{ImageStore, PullProgress, RegistryConfig};
use serde_json::json;

/// A layer of real binaries (from /usr/bin, /usr/lib) up to `total` bytes:
/// content that compresses like real images do. `skip` picks other files.
fn image_tar(total: usize, skip: usize) -> Vec<u8> {
    let mut files: Vec<std::path::PathBuf> = ["/usr/bin", "/usr/lib/x86_64-linux-gnu"]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file() && m.len() < (8 << 20)))
        .collect();
    files.sort();
    let mut owned = Vec::new();
    let mut size = 0;
    for p in files.iter().skip(skip) {
        if size >= total {
            break;
        }
        let data = std::fs::read(p).unwrap();
        size += data.len();
        owned.push((format!("data{}", p.display()), data));
    }
    let mut entries = vec![
        E::Dir("data/"),
        E::Dir("data/usr/"),
        E::Dir("data/usr/bin/"),
        E::Dir("data/usr/lib/"),
        E::Dir("data/usr/lib/x86_64-linux-gnu/"),
    ];
    for (p, d) in &owned {
        entries.push(E::FileOwned(p, d.clone(), 0o755, 0));
    }
    tar_of(&entries)
}

/// The median time of 9 pulls of an image that is present.
async fn median_of_9(store: &ImageStore, reference: &str) -> std::time::Duration {
    let mut times = Vec::new();
    for _ in 0..9 {
        let t = Instant::now();
        store.pull(reference, None, None).await.unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    times[4]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if let Some(why) = need(BASE_BINS, false) {
        eprintln!("cannot run the benchmark: {why}");
        std::process::exit(1);
    }
    let reg = Registry::start(None);
    println!("| image | hearth pull+convert | of which fetch+verify | skopeo copy to dir | ratio | re-pull by tag | re-pull by digest | erofs size |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (label, size) in [("10MiB", 10usize << 20), ("100MiB", 100usize << 20)] {
        let mut layout = Layout::new();
        let half = image_tar(size / 2, 0);
        let other = image_tar(size / 2, 1100);
        let b = layout.image(
            &[Layer::new(half, Comp::Gzip), Layer::new(other, Comp::Zstd)],
            "amd64",
            "",
            json!({}),
        );
        layout.tag(&b.desc, label);
        reg.push(layout.path(), label, "bench/img", &[]);
        let reference = format!("{}/bench/img:{label}", reg.host());

        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&dir.path().join("store"), RegistryConfig::default()).unwrap();
        let building = Arc::new(Mutex::new(None));
        let b2 = building.clone();
        let sink: hearth_image::ProgressSink = Arc::new(move |p| {
            if p == PullProgress::Building {
                *b2.lock().unwrap() = Some(Instant::now());
            }
        });
        let t = Instant::now();
        let img = store.pull(&reference, None, Some(sink)).await.unwrap();
        let hearth = t.elapsed();
        let fetch = building.lock().unwrap().map(|b| b - t).unwrap_or_default();
        let by_digest = img.repo_digests[0].clone();
        let repull = median_of_9(&store, &reference).await;
        let repull_digest = median_of_9(&store, &by_digest).await;

        let out = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let st = std::process::Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--quiet",
                "--src-tls-verify=false",
            ])
            .arg(format!("docker://{reference}"))
            .arg(format!("dir:{}", out.path().join("img").display()))
            .status()
            .unwrap();
        assert!(st.success());
        let skopeo = t.elapsed();
        println!(
            "| {label} | {:.2} s | {:.2} s | {:.2} s | {:.2}x | {:.2} ms | {:.2} ms | {} bytes |",
            hearth.as_secs_f64(),
            fetch.as_secs_f64(),
            skopeo.as_secs_f64(),
            hearth.as_secs_f64() / skopeo.as_secs_f64(),
            repull.as_secs_f64() * 1e3,
            repull_digest.as_secs_f64() * 1e3,
            img.erofs_size
        );
    }
}

//! The image store: pull orchestration and lookups.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use oci_spec::image::{Arch, ImageConfiguration, Os};
use tracing::Instrument;

use crate::config::{credentials_from_file, Credentials, RegistryConfig};
use crate::content::{hex_of, BlobSpec, ContentStore, KeyedLocks};
use crate::error::{ImageError, Result};
use crate::metadata::{Image, ImageUser, LayerInfo, MetaStore, RuntimeConfig};
use crate::pull::{self, Resolution, CONFIG_TYPES, LAYER_TYPES};
use crate::reference::{is_sha256_digest, ImageReference};
use crate::unpack::{LayerFile, UnpackOptions};

/// Largest image config accepted.
const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// Layers downloaded at once per pull.
const PARALLEL_LAYERS: usize = 3;

/// Progress of one pull, for a bar per layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullProgress {
    /// The manifest was resolved; these layers (digest, compressed size) follow.
    Resolved {
        /// Image id (config digest).
        id: String,
        /// Layers, bottom first.
        layers: Vec<(String, u64)>,
    },
    /// Bytes of a layer downloaded so far.
    Layer {
        /// Layer digest.
        digest: String,
        /// Bytes done.
        done: u64,
        /// Bytes in total.
        total: u64,
    },
    /// A layer is in the store (`downloaded` false: it already was, or another pull fetched it).
    LayerDone {
        /// Layer digest.
        digest: String,
        /// Whether this pull downloaded it.
        downloaded: bool,
    },
    /// Unpacking layers and building the erofs image.
    Building,
    /// The image is ready.
    Done {
        /// Image id.
        id: String,
    },
}

/// Receives pull progress; called from the pulling task, keep it cheap.
pub type ProgressSink = Arc<dyn Fn(PullProgress) + Send + Sync>;

/// The image store. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct ImageStore {
    pub(crate) root: PathBuf,
    pub(crate) config: RegistryConfig,
    pub(crate) content: ContentStore,
    pub(crate) meta: MetaStore,
    pub(crate) erofs_dir: PathBuf,
    pub(crate) tmp_dir: PathBuf,
    /// Records by id. Never held across an await.
    pub(crate) images: Mutex<HashMap<String, Image>>,
    build_locks: KeyedLocks,
    /// Registry clients kept across pulls.
    clients: pull::Clients,
    /// Pulls share it, remove and prune take it exclusively.
    pub(crate) gc_lock: tokio::sync::RwLock<()>,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl ImageStore {
    /// Opens (creating) a store under `root`:
    /// `content/` (blobs), `erofs/`, `images/` (records), `tmp/`.
    /// Leftovers of interrupted pulls are removed.
    pub fn open(root: &Path, config: RegistryConfig) -> Result<ImageStore> {
        config.validate()?;
        std::fs::create_dir_all(root).map_err(|e| ImageError::io("creating", root, e))?;
        let root = root
            .canonicalize()
            .map_err(|e| ImageError::io("resolving", root, e))?;
        let content = ContentStore::open(&root.join("content"))?;
        let meta = MetaStore::open(&root.join("images"))?;
        let erofs_dir = root.join("erofs");
        let tmp_dir = root.join("tmp");
        if tmp_dir.exists() {
            std::fs::remove_dir_all(&tmp_dir)
                .map_err(|e| ImageError::io("cleaning", &tmp_dir, e))?;
        }
        for d in [&erofs_dir, &tmp_dir] {
            std::fs::create_dir_all(d).map_err(|e| ImageError::io("creating", d, e))?;
        }
        let mut images = HashMap::new();
        for img in meta.load_all()? {
            if img.erofs_path.is_file() {
                images.insert(img.id.clone(), img);
            } else {
                tracing::warn!(id = %img.id, "image record without its erofs image; dropped");
                meta.delete(&img.id)?;
            }
        }
        Ok(ImageStore {
            root,
            config,
            content,
            meta,
            erofs_dir,
            tmp_dir,
            images: Mutex::new(images),
            build_locks: KeyedLocks::default(),
            clients: pull::Clients::default(),
            gc_lock: tokio::sync::RwLock::new(()),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Blob downloads started since open (shared downloads count once).
    pub fn blob_downloads(&self) -> u64 {
        self.content.downloads()
    }

    pub(crate) fn images(&self) -> std::sync::MutexGuard<'_, HashMap<String, Image>> {
        self.images.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// All images, sorted by id.
    pub fn list(&self) -> Vec<Image> {
        let mut v: Vec<Image> = self.images().values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// ListImages with an optional filter (a reference or id, resolved as [`ImageStore::get`]).
    pub fn list_filtered(&self, filter: Option<&str>) -> Vec<Image> {
        match filter.map(str::trim) {
            None | Some("") => self.list(),
            Some(f) => self.get(f).into_iter().collect(),
        }
    }

    /// Finds an image by id (`sha256:…` or bare hex), unique id prefix,
    /// tag reference or digest reference.
    pub fn get(&self, reference_or_id: &str) -> Result<Image> {
        let images = self.images();
        let q = reference_or_id.trim();
        let full = if is_sha256_digest(q) {
            Some(q.to_string())
        } else if q.len() == 64 && q.bytes().all(|b| b.is_ascii_hexdigit()) {
            Some(format!("sha256:{q}"))
        } else {
            None
        };
        if let Some(id) = full {
            if let Some(img) = images.get(&id) {
                return Ok(img.clone());
            }
        }
        if let Ok(r) = ImageReference::parse(q) {
            let found = images.values().find(|img| {
                if let Some(d) = &r.digest {
                    let name = r.with_digest(d);
                    img.repo_digests.contains(&name)
                } else {
                    r.tagged().is_some_and(|t| img.repo_tags.contains(&t))
                }
            });
            if let Some(img) = found {
                return Ok(img.clone());
            }
        }
        let prefix = q.strip_prefix("sha256:").unwrap_or(q);
        if prefix.len() >= 3
            && prefix
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            let mut hits = images.values().filter(|i| i.id[7..].starts_with(prefix));
            if let Some(first) = hits.next() {
                if hits.next().is_some() {
                    return Err(ImageError::AmbiguousId(q.to_string()));
                }
                return Ok(first.clone());
            }
        }
        Err(ImageError::NotFound(q.to_string()))
    }

    /// Pulls an image (a no-op for blobs already present), builds its erofs
    /// image and records it. `auth` overrides the credentials file.
    pub async fn pull(
        &self,
        reference: &str,
        auth: Option<Credentials>,
        progress: Option<ProgressSink>,
    ) -> Result<Image> {
        let r = ImageReference::parse(reference)?;
        let span = tracing::info_span!("pull", reference = %r);
        let res = self.pull_inner(r, auth, progress).instrument(span).await;
        if let Err(e) = &res {
            // Nothing of a failed pull stays: verified blobs no image uses
            // are swept once no other pull is in flight.
            tracing::warn!(reference, error = %e, "pull failed");
            if let Err(ge) = self.prune().await {
                tracing::warn!(error = %ge, "cleaning up after a failed pull");
            }
        }
        res
    }

    async fn pull_inner(
        &self,
        r: ImageReference,
        auth: Option<Credentials>,
        progress: Option<ProgressSink>,
    ) -> Result<Image> {
        let emit = |p: PullProgress| {
            if let Some(s) = &progress {
                s(p)
            }
        };
        let creds = match (auth, &self.config.credentials_file) {
            (Some(c), _) => Some(c),
            (None, Some(f)) => credentials_from_file(f, &r.registry)?,
            (None, None) => None,
        };
        let _shared = self.gc_lock.read().await;
        // A digest names content: an image present by that digest needs no
        // registry. A tag is always resolved remotely (it may have moved),
        // but resolution stops at a manifest or index already present.
        if let Some(d) = &r.digest {
            if let Some(img) = self.present(&r, d) {
                return self.repulled(&r, d, img, &emit);
            }
        }
        let hit = Mutex::new(None);
        let known = |top: &str| match self.present(&r, top) {
            Some(img) => {
                *hit.lock().unwrap_or_else(|p| p.into_inner()) = Some(img);
                true
            }
            None => false,
        };
        let res =
            match pull::resolve(&self.config, &self.clients, &r, creds.as_ref(), &known).await? {
                Resolution::Fetched(res) => *res,
                Resolution::Known { top_digest } => {
                    let img = hit.into_inner().unwrap_or_else(|p| p.into_inner());
                    // Always set with Known; `remove` waits for the gc lock we hold.
                    let img = img.ok_or_else(|| ImageError::NotFound(r.to_string()))?;
                    return self.repulled(&r, &top_digest, img, &emit);
                }
            };
        let m = &res.manifest;
        let cfg_desc = m.config();
        let cfg_type = cfg_desc.media_type().to_string();
        if !CONFIG_TYPES.contains(&cfg_type.as_str()) {
            return Err(ImageError::UnsupportedMediaType(cfg_type));
        }
        for l in m.layers() {
            let t = l.media_type().to_string();
            if !LAYER_TYPES.contains(&t.as_str()) {
                return Err(ImageError::UnsupportedMediaType(t));
            }
        }
        let id = cfg_desc.digest().to_string();
        hex_of(&id)?;
        if cfg_desc.size() > MAX_CONFIG_BYTES {
            return Err(ImageError::InvalidManifest {
                what: "image config",
                digest: id,
                reason: format!("larger than {MAX_CONFIG_BYTES} bytes"),
            });
        }
        let cfg_spec = BlobSpec {
            digest: id.clone(),
            size: cfg_desc.size(),
        };
        let (cfg_path, _) = self
            .content
            .fetch(
                &cfg_spec,
                || res.source.blob(&id, cfg_spec.size, &cfg_type),
                &|_| {},
            )
            .await?;
        let cfg_raw = tokio::fs::read(&cfg_path)
            .await
            .map_err(|e| ImageError::io("reading", &cfg_path, e))?;
        let image_config: ImageConfiguration =
            serde_json::from_slice(&cfg_raw).map_err(|e| ImageError::InvalidManifest {
                what: "image config",
                digest: id.clone(),
                reason: e.to_string(),
            })?;
        if *image_config.os() != Os::Linux || *image_config.architecture() != Arch::Amd64 {
            return Err(ImageError::NoMatchingPlatform {
                reference: r.to_string(),
                available: format!("{}/{}", image_config.os(), image_config.architecture()),
            });
        }
        let diff_ids = image_config.rootfs().diff_ids();
        if diff_ids.len() != m.layers().len() {
            return Err(ImageError::InvalidManifest {
                what: "image config",
                digest: id.clone(),
                reason: format!(
                    "{} diff_ids for {} layers",
                    diff_ids.len(),
                    m.layers().len()
                ),
            });
        }
        let layers: Vec<LayerInfo> = m
            .layers()
            .iter()
            .zip(diff_ids)
            .map(|(l, d)| LayerInfo {
                digest: l.digest().to_string(),
                size: l.size(),
                media_type: l.media_type().to_string(),
                diff_id: d.clone(),
            })
            .collect();
        emit(PullProgress::Resolved {
            id: id.clone(),
            layers: layers.iter().map(|l| (l.digest.clone(), l.size)).collect(),
        });

        let sem = tokio::sync::Semaphore::new(PARALLEL_LAYERS);
        let fetches = layers.iter().map(|l| {
            let (sem, source, progress) = (&sem, &res.source, &progress);
            async move {
                // Never closed; `ok()` only to avoid a panic path.
                let _permit = sem.acquire().await.ok();
                self.fetch_layer(source, l, progress).await
            }
        });
        futures::future::try_join_all(fetches).await?;
        for (d, raw) in &res.documents {
            self.content.put(d, raw)?;
        }

        emit(PullProgress::Building);
        let (erofs_path, erofs_size) = self.build_erofs(&id, &layers).await?;

        let c = image_config.config().clone().unwrap_or_default();
        let config = RuntimeConfig {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().unwrap_or_default(),
            user: c.user().clone().unwrap_or_default(),
            exposed_ports: c.exposed_ports().clone().unwrap_or_default(),
            labels: c.labels().clone().unwrap_or_default().into_iter().collect(),
            stop_signal: c.stop_signal().clone().unwrap_or_default(),
        };
        let docs_size: u64 = res.documents.iter().map(|(_, d)| d.len() as u64).sum();
        let size =
            docs_size + cfg_spec.size + layers.iter().map(|l| l.size).sum::<u64>() + erofs_size;
        let image = self.record(
            &r,
            &res.top_digest,
            Image {
                id: id.clone(),
                repo_tags: Vec::new(),
                repo_digests: Vec::new(),
                size,
                user: ImageUser::parse(&config.user),
                layers: layers.clone(),
                manifest_digest: res.manifest_digest.clone(),
                manifest_media_type: res.manifest_media_type.clone(),
                erofs_path,
                erofs_size,
                config,
                pulled_at: now(),
            },
        )?;
        emit(PullProgress::Done { id: id.clone() });
        tracing::info!(id = %id, erofs_size, "image pulled");
        Ok(image)
    }

    /// The image recorded under `r`'s name at `digest` (a manifest or index
    /// digest), if its erofs image is in place.
    fn present(&self, r: &ImageReference, digest: &str) -> Option<Image> {
        let name = r.with_digest(digest);
        self.images()
            .values()
            .find(|i| i.repo_digests.contains(&name))
            .filter(|i| i.erofs_path.is_file())
            .cloned()
    }

    /// A pull of an image already present: its events, and its names.
    fn repulled(
        &self,
        r: &ImageReference,
        top_digest: &str,
        img: Image,
        emit: &dyn Fn(PullProgress),
    ) -> Result<Image> {
        emit(PullProgress::Resolved {
            id: img.id.clone(),
            layers: img
                .layers
                .iter()
                .map(|l| (l.digest.clone(), l.size))
                .collect(),
        });
        for l in &img.layers {
            emit(PullProgress::LayerDone {
                digest: l.digest.clone(),
                downloaded: false,
            });
        }
        let id = img.id.clone();
        let img = self.record(r, top_digest, img)?;
        emit(PullProgress::Done { id });
        tracing::debug!(id = %img.id, "image already present");
        Ok(img)
    }

    /// Records `fresh` (or the record of its id already there) under `r`'s
    /// tag and digest names, taking the tag from any other image. Records
    /// are written only when their names change: a re-pull of a present
    /// image writes nothing, as containerd's CRI does.
    fn record(&self, r: &ImageReference, top_digest: &str, fresh: Image) -> Result<Image> {
        let mut images = self.images();
        let tag = r.tagged();
        let digest_name = r.with_digest(top_digest);
        let before = images.get(&fresh.id).cloned();
        let mut img = before.clone().unwrap_or(fresh);
        if let Some(t) = &tag {
            if !img.repo_tags.contains(t) {
                img.repo_tags.push(t.clone());
            }
        }
        if !img.repo_digests.contains(&digest_name) {
            img.repo_digests.push(digest_name);
        }
        // A tag names one image: take it from any other.
        let mut changed = Vec::new();
        if let Some(t) = &tag {
            for other in images.values_mut() {
                if other.id != img.id && other.repo_tags.contains(t) {
                    other.repo_tags.retain(|x| x != t);
                    changed.push(other.clone());
                }
            }
        }
        for o in &changed {
            self.meta.save(o)?;
        }
        if before.as_ref() != Some(&img) {
            if before.is_some() {
                img.pulled_at = now();
            }
            self.meta.save(&img)?;
            images.insert(img.id.clone(), img.clone());
        }
        Ok(img)
    }

    async fn fetch_layer(
        &self,
        source: &pull::Source,
        l: &LayerInfo,
        progress: &Option<ProgressSink>,
    ) -> Result<()> {
        let spec = BlobSpec {
            digest: l.digest.clone(),
            size: l.size,
        };
        hex_of(&spec.digest)?;
        let report = |done: u64| {
            if let Some(s) = progress {
                s(PullProgress::Layer {
                    digest: l.digest.clone(),
                    done,
                    total: l.size,
                })
            }
        };
        let (_, downloaded) = self
            .content
            .fetch(
                &spec,
                || source.blob(&l.digest, l.size, &l.media_type),
                &report,
            )
            .await?;
        if let Some(s) = progress {
            s(PullProgress::LayerDone {
                digest: l.digest.clone(),
                downloaded,
            })
        }
        Ok(())
    }

    /// Path of the erofs image of an image id.
    pub(crate) fn erofs_path(&self, id: &str) -> Result<PathBuf> {
        Ok(self.erofs_dir.join(format!("{}.erofs", hex_of(id)?)))
    }

    async fn build_erofs(&self, id: &str, layers: &[LayerInfo]) -> Result<(PathBuf, u64)> {
        let out = self.erofs_path(id)?;
        let _g = self.build_locks.lock(id).await;
        if let Ok(m) = std::fs::metadata(&out) {
            return Ok((out, m.len()));
        }
        let files = layers
            .iter()
            .map(|l| {
                Ok(LayerFile {
                    digest: l.digest.clone(),
                    path: self.content.path(&l.digest)?,
                    diff_id: Some(l.diff_id.clone()),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let opts = UnpackOptions {
            allow_device_nodes: self.config.allow_device_nodes,
            chown: nix::unistd::geteuid().is_root(),
        };
        let tmp = self.tmp_dir.clone();
        let out2 = out.clone();
        let span = tracing::info_span!("build_erofs", id = %id);
        let size = tokio::task::spawn_blocking(move || {
            let _e = span.enter();
            build_blocking(&tmp, &files, opts, &out2)
        })
        .await
        .map_err(ImageError::Task)??;
        Ok((out, size))
    }
}

fn build_blocking(
    tmp: &Path,
    layers: &[LayerFile],
    opts: UnpackOptions,
    out: &Path,
) -> Result<u64> {
    let work = tempfile::Builder::new()
        .prefix("build-")
        .tempdir_in(tmp)
        .map_err(|e| ImageError::io("creating temp dir in", tmp, e))?;
    let rootfs = work.path().join("rootfs");
    std::fs::create_dir(&rootfs).map_err(|e| ImageError::io("creating", &rootfs, e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&rootfs, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| ImageError::io("chmod", &rootfs, e))?;
    }
    for l in layers {
        let _s = tracing::debug_span!("apply_layer", layer = %l.digest).entered();
        crate::unpack::apply_layer(&rootfs, l, opts)?;
    }
    let img = work.path().join("image.erofs");
    crate::erofs::build(&rootfs, &img)?;
    std::fs::rename(&img, out).map_err(|e| ImageError::io("renaming erofs image to", out, e))?;
    if let Some(d) = out.parent() {
        crate::metadata::sync_dir(d)?;
    }
    let size = std::fs::metadata(out)
        .map_err(|e| ImageError::io("stat", out, e))?
        .len();
    Ok(size)
}

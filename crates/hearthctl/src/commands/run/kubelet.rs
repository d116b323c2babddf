//! What the kubelet lays out on the host for a pod, done by `hearthctl run`
//! in its place: `<root>/pods/<uid>/` with the volumes
//! (`volumes/kubernetes.io~secret/<name>/` and `~configmap` in the atomic
//! writer's layout, `~empty-dir` as a directory or a tmpfs), the
//! termination-message files (`containers/<name>/<hex>`) and subPath copies
//! (`volume-subpaths/<volume>/<container>/<index>`); and the CRI mounts
//! that point at them. hearthd reads the same paths (its `[volumes]
//! kubelet_root_dir`), so the two must agree on the root.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, KeyToPath, Volume};
use k8s_openapi::ByteString;

use super::manifest::{quantity, Manifest, TERMINATION_MESSAGE_PATH};

/// The kubelet's default mode for secret and configMap files (0644).
const DEFAULT_MODE: u32 = 0o644;

/// `n` random bytes from the kernel.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom")?;
    Ok(bytes)
}

/// A fresh pod uid (a random UUID, as the API server makes).
pub fn new_uid() -> Result<String> {
    let mut b: [u8; 16] = random_bytes()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

/// One file of a secret or configMap volume: its path in the volume, its
/// content and mode.
#[derive(Debug, PartialEq, Eq)]
pub struct PayloadFile {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Path in the volume → file.
pub type Payload = BTreeMap<String, PayloadFile>;

/// A relative path that stays inside its volume.
fn check_relative(path: &str, what: &str) -> Result<()> {
    let p = Path::new(path);
    if path.is_empty()
        || p.is_absolute()
        || p.components().any(|c| !matches!(c, Component::Normal(_)))
        || path.starts_with("..")
    {
        bail!("{what} {path:?} must be a relative path without `..`");
    }
    Ok(())
}

/// The kubelet's payload for a volume over `data` (key → bytes): every key,
/// or only `items` (each at its own path and mode).
pub fn payload(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    what: &str,
) -> Result<Payload> {
    let mode = |m: Option<i32>| -> Result<u32> {
        match m.or(default_mode) {
            None => Ok(DEFAULT_MODE),
            Some(m) if (0..=0o777).contains(&m) => Ok(m as u32),
            Some(m) => bail!("{what}: mode {m} is not between 0 and 0777"),
        }
    };
    let mut out = Payload::new();
    match items {
        None => {
            for (key, bytes) in data {
                check_relative(key, &format!("{what}: key"))?;
                out.insert(
                    key.clone(),
                    PayloadFile {
                        data: bytes.clone(),
                        mode: mode(None)?,
                    },
                );
            }
        }
        Some(items) => {
            for item in items {
                let bytes = data
                    .get(&item.key)
                    .with_context(|| format!("{what}: no key {:?}", item.key))?;
                check_relative(&item.path, &format!("{what}: item path"))?;
                out.insert(
                    item.path.clone(),
                    PayloadFile {
                        data: bytes.clone(),
                        mode: mode(item.mode)?,
                    },
                );
            }
        }
    }
    Ok(out)
}

/// `..2026_11_28_19_00_00.` for `now` (UTC), as the kubelet names its
/// timestamped directories (`..2006_01_02_15_04_05.` in Go's layout).
fn timestamp_prefix(now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "..{year:04}_{month:02}_{day:02}_{:02}_{:02}_{:02}.",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Writes `payload` into `dir` the way the kubelet's atomic writer does: the
/// files in a new timestamped directory, `..data` pointing at it (swapped in
/// by renaming a `..data_tmp` symlink over it), and for each top-level name
/// a symlink `<name> -> ..data/<name>`. An older timestamped directory is
/// removed after the swap.
pub fn write_atomic(dir: &Path, payload: &Payload) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ts_name = loop {
        let suffix = u32::from_le_bytes(random_bytes()?) % 1_000_000_000;
        let name = format!("{}{suffix:09}", timestamp_prefix(SystemTime::now()));
        match fs::create_dir(dir.join(&name)) {
            Ok(()) => break name,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {name}")),
        }
    };
    let ts_dir = dir.join(&ts_name);
    fs::set_permissions(&ts_dir, fs::Permissions::from_mode(0o755))?;
    for (path, file) in payload {
        let target = ts_dir.join(path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&target, &file.data)
            .with_context(|| format!("cannot write {}", target.display()))?;
        fs::set_permissions(&target, fs::Permissions::from_mode(file.mode))?;
    }
    let old = fs::read_link(dir.join("..data")).ok();
    let tmp = dir.join("..data_tmp");
    let _ = fs::remove_file(&tmp);
    symlink(&ts_name, &tmp)?;
    fs::rename(&tmp, dir.join("..data"))?;
    let tops: Vec<_> = payload
        .keys()
        .filter_map(|p| Path::new(p).components().next())
        .map(|c| c.as_os_str().to_owned())
        .collect();
    for top in &tops {
        let link = dir.join(top);
        if fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("..data").join(top), &link)?;
        }
    }
    // User-visible links of names the payload no longer has.
    for entry in fs::read_dir(dir)?.flatten() {
        let name = entry.file_name();
        let stale = !name.to_string_lossy().starts_with("..")
            && !tops.contains(&name)
            && fs::read_link(entry.path()).is_ok_and(|t| t.starts_with("..data"));
        if stale {
            fs::remove_file(entry.path())?;
        }
    }
    if let Some(old) = old.filter(|o| o.as_os_str() != ts_name.as_str()) {
        let _ = fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

/// The key → bytes of a Secret (data, stringData) or a ConfigMap
/// (binaryData, data); the text keys win, as the API server merges them.
fn object_data(
    binary: Option<&BTreeMap<String, ByteString>>,
    text: Option<&BTreeMap<String, String>>,
) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = binary
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in text.into_iter().flatten() {
        data.insert(k.clone(), v.clone().into_bytes());
    }
    data
}

/// A secret or configMap volume: its object's data and where it goes.
struct Projected<'a> {
    kind: &'static str,
    name: String,
    /// None: no such object in the manifest.
    data: Option<BTreeMap<String, Vec<u8>>>,
    optional: bool,
    items: Option<&'a [KeyToPath]>,
    default_mode: Option<i32>,
    /// The kubelet's volume plugin directory.
    plugin: &'static str,
}

/// A volume laid out on the host.
#[derive(Debug)]
pub struct HostVolume {
    pub path: PathBuf,
    /// Secret and configMap volumes are always mounted read-only.
    pub read_only: bool,
}

/// The kubelet's directory of one pod.
#[derive(Debug, Clone)]
pub struct PodDir {
    pub dir: PathBuf,
}

impl PodDir {
    pub fn new(kubelet_root: &Path, uid: &str) -> PodDir {
        PodDir {
            dir: kubelet_root.join("pods").join(uid),
        }
    }

    /// Lays out every volume of the pod; returns name → host volume.
    pub fn prepare_volumes(
        &self,
        volumes: &[Volume],
        objects: &Manifest,
    ) -> Result<BTreeMap<String, HostVolume>> {
        let mut out = BTreeMap::new();
        for v in volumes {
            let what = format!("volume {}", v.name);
            check_relative(&v.name, "volume name")?;
            // Secret and configMap volumes differ only in where their data
            // comes from and where they go.
            let projected = if let Some(s) = &v.secret {
                let name = s.secret_name.clone().unwrap_or_default();
                let data = objects
                    .secrets
                    .get(&name)
                    .map(|o| object_data(o.data.as_ref(), o.string_data.as_ref()));
                Some(Projected {
                    kind: "Secret",
                    name,
                    data,
                    optional: s.optional == Some(true),
                    items: s.items.as_deref(),
                    default_mode: s.default_mode,
                    plugin: "kubernetes.io~secret",
                })
            } else {
                v.config_map.as_ref().map(|c| {
                    let data = objects
                        .config_maps
                        .get(&c.name)
                        .map(|o| object_data(o.binary_data.as_ref(), o.data.as_ref()));
                    Projected {
                        kind: "ConfigMap",
                        name: c.name.clone(),
                        data,
                        optional: c.optional == Some(true),
                        items: c.items.as_deref(),
                        default_mode: c.default_mode,
                        plugin: "kubernetes.io~configmap",
                    }
                })
            };
            let host = if let Some(p) = projected {
                let data = match p.data {
                    Some(data) => data,
                    None if p.optional => BTreeMap::new(),
                    None => bail!(
                        "{what}: no {kind} {name:?}: add a `kind: {kind}` document with that name to the manifest (or a file given with --objects)",
                        kind = p.kind,
                        name = p.name
                    ),
                };
                let files = payload(&data, p.items, p.default_mode, &what)?;
                let path = self.volume_dir(p.plugin, &v.name);
                write_atomic(&path, &files).with_context(|| what.clone())?;
                HostVolume {
                    path,
                    read_only: true,
                }
            } else if let Some(e) = &v.empty_dir {
                let path = self.volume_dir("kubernetes.io~empty-dir", &v.name);
                fs::create_dir_all(&path)
                    .with_context(|| format!("{what}: cannot create {}", path.display()))?;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o777))?;
                match e.medium.as_deref().unwrap_or_default() {
                    "" => {}
                    "Memory" => {
                        let size = e
                            .size_limit
                            .as_ref()
                            .map(|q| quantity(&q.0, 1))
                            .transpose()
                            .with_context(|| format!("{what}: sizeLimit"))?;
                        mount_tmpfs(&path, size).with_context(|| what.clone())?;
                    }
                    other => {
                        bail!("{what}: emptyDir medium {other:?} is not supported (\"\" or Memory)")
                    }
                }
                HostVolume {
                    path,
                    read_only: false,
                }
            } else {
                bail!(
                    "{what}: only secret, configMap and emptyDir volumes are supported by hearthctl run"
                );
            };
            out.insert(v.name.clone(), host);
        }
        Ok(out)
    }

    fn volume_dir(&self, plugin: &str, name: &str) -> PathBuf {
        self.dir.join("volumes").join(plugin).join(name)
    }

    /// The CRI mounts of container `c`: its volumeMounts (subPaths copied
    /// under `volume-subpaths/`) and its termination-message file.
    pub fn mounts(
        &self,
        c: &Container,
        volumes: &BTreeMap<String, HostVolume>,
    ) -> Result<Vec<cri::Mount>> {
        let mut mounts = Vec::new();
        for (index, m) in c.volume_mounts.iter().flatten().enumerate() {
            let what = format!("container {}: volumeMount {}", c.name, m.name);
            let volume = volumes
                .get(&m.name)
                .with_context(|| format!("{what}: no volume of that name in spec.volumes"))?;
            if m.sub_path_expr.as_ref().is_some_and(|s| !s.is_empty()) {
                bail!("{what}: subPathExpr is not supported");
            }
            if !m.mount_path.starts_with('/') {
                bail!("{what}: mountPath {:?} must be absolute", m.mount_path);
            }
            let host_path = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                None => volume.path.clone(),
                Some(sub) => {
                    check_relative(sub, &format!("{what}: subPath"))?;
                    let target = self
                        .dir
                        .join("volume-subpaths")
                        .join(&m.name)
                        .join(&c.name)
                        .join(index.to_string());
                    copy_subpath(&volume.path, sub, &target).with_context(|| what.clone())?;
                    target
                }
            };
            mounts.push(cri::Mount {
                container_path: m.mount_path.clone(),
                host_path: host_path.to_string_lossy().into_owned(),
                readonly: volume.read_only || m.read_only == Some(true),
                ..Default::default()
            });
        }
        let message_path = c
            .termination_message_path
            .clone()
            .unwrap_or_else(|| TERMINATION_MESSAGE_PATH.into());
        mounts.push(cri::Mount {
            container_path: message_path,
            host_path: self
                .termination_file(&c.name)?
                .to_string_lossy()
                .into_owned(),
            readonly: false,
            ..Default::default()
        });
        Ok(mounts)
    }

    /// `containers/<name>/<random hex>`: an empty file for the container's
    /// termination message, as the kubelet makes it.
    fn termination_file(&self, container: &str) -> Result<PathBuf> {
        let dir = self.dir.join("containers").join(container);
        fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{:08x}", u32::from_le_bytes(random_bytes()?)));
        fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666))?;
        Ok(path)
    }

    /// Unmounts whatever is mounted under the pod's directory (tmpfs
    /// emptyDirs), then removes it.
    pub fn remove(&self) -> Result<()> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut under: Vec<PathBuf> = mountinfo
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(unescape_mount_path)
            .filter(|p| p.starts_with(&self.dir))
            .collect();
        // Deepest first.
        under.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for path in under {
            nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH)
                .with_context(|| format!("cannot unmount {}", path.display()))?;
        }
        match fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove {}", self.dir.display()))
            }
            _ => Ok(()),
        }
    }
}

/// mountinfo escapes spaces and the like as `\040`.
fn unescape_mount_path(field: &str) -> PathBuf {
    let mut out = Vec::with_capacity(field.len());
    let b = field.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let code = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(code);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(String::from_utf8_lossy(&out).into_owned())
}

/// A tmpfs at `path` (emptyDir medium Memory), `size` bytes at most.
fn mount_tmpfs(path: &Path, size: Option<u128>) -> Result<()> {
    let mut options = String::from("mode=0777");
    if let Some(size) = size {
        options.push_str(&format!(",size={size}"));
    }
    nix::mount::mount(
        Some("tmpfs"),
        path,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .with_context(|| format!("cannot mount a tmpfs at {} (needs root)", path.display()))
}

/// Copies `<volume>/<sub>` (file or directory, symlinks inside the volume
/// followed) to `target`, where the kubelet would bind-mount it.
fn copy_subpath(volume: &Path, sub: &str, target: &Path) -> Result<()> {
    let volume = fs::canonicalize(volume)?;
    let source = volume.join(sub);
    if fs::symlink_metadata(&source).is_err() {
        // The kubelet creates a missing subPath as a directory.
        fs::create_dir_all(&source)?;
    }
    let source = fs::canonicalize(&source)?;
    if !source.starts_with(&volume) {
        bail!("subPath {sub:?} leaves the volume");
    }
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    copy_tree(&source, target)
}

fn copy_tree(source: &Path, target: &Path) -> Result<()> {
    let meta = fs::metadata(source)?;
    if meta.is_dir() {
        fs::create_dir_all(target)?;
        fs::set_permissions(target, meta.permissions())?;
        for entry in fs::read_dir(source)? {
            let entry = entry?;
            copy_tree(&entry.path(), &target.join(entry.file_name()))?;
        }
    } else {
        fs::copy(source, target).with_context(|| format!("cannot copy {}", source.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_read_like_the_kubelets() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_795_892_400);
        assert_eq!(timestamp_prefix(t), "..2026_11_28_19_00_00.");
        assert_eq!(timestamp_prefix(UNIX_EPOCH), "..1970_01_01_00_00_00.");
    }

    #[test]
    fn uids_are_uuids() {
        let uid = new_uid().unwrap();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
        assert_ne!(uid, new_uid().unwrap());
    }

    #[test]
    fn atomic_writer_layout_and_update() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("v");
        let data: BTreeMap<String, Vec<u8>> = [
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec()),
        ]
        .into();
        write_atomic(&vol, &payload(&data, None, None, "v").unwrap()).unwrap();
        let ts = fs::read_link(vol.join("..data")).unwrap();
        assert!(ts.to_string_lossy().starts_with("..20"), "{ts:?}");
        assert_eq!(fs::read_link(vol.join("a")).unwrap(), Path::new("..data/a"));
        assert_eq!(fs::read_to_string(vol.join("b")).unwrap(), "2");
        let mode = fs::metadata(vol.join("a")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);

        // Items: one key at a nested path, with its own mode.
        let items = [KeyToPath {
            key: "b".into(),
            path: "sub/file".into(),
            mode: Some(0o400),
        }];
        let p = payload(&data, Some(&items), Some(0o600), "v").unwrap();
        write_atomic(&vol, &p).unwrap();
        assert_eq!(fs::read_to_string(vol.join("sub/file")).unwrap(), "2");
        // The old timestamped dir and the link of the dropped key are gone.
        assert!(fs::symlink_metadata(vol.join("a")).is_err());
        let entries: Vec<String> = fs::read_dir(&vol)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..2"))
            .collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert!(payload(
            &data,
            Some(&[KeyToPath {
                key: "zz".into(),
                path: "x".into(),
                mode: None
            }]),
            None,
            "v"
        )
        .is_err());
        for bad in ["../x", "/abs", "a/../b", ""] {
            assert!(check_relative(bad, "p").is_err(), "{bad}");
        }
    }

    #[test]
    fn volumes_are_laid_out_as_the_kubelet_does() {
        let mut m = Manifest::default();
        m.add_documents(
            r#"
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  volumes:
  - {name: s, secret: {secretName: sec, defaultMode: 0400}}
  - {name: c, configMap: {name: cm, items: [{key: b, path: dir/b.txt}]}}
  - {name: o, secret: {secretName: nothing, optional: true}}
  - {name: e, emptyDir: {}}
  - {name: mem, emptyDir: {medium: Memory, sizeLimit: 1Mi}}
  containers:
  - name: app
    image: busybox
    terminationMessagePath: /dev/msg
    volumeMounts:
    - {name: s, mountPath: /s}
    - {name: c, mountPath: /c/b.txt, subPath: dir/b.txt}
    - {name: e, mountPath: /e, readOnly: true}
---
apiVersion: v1
kind: Secret
metadata: {name: sec}
data: {k: aGk=}
stringData: {t: text}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm}
data: {a: "1", b: "2"}
"#,
        )
        .unwrap();
        let root = tempfile::tempdir().unwrap();
        let dir = PodDir::new(root.path(), "u1");
        let pod = m.pod.as_ref().unwrap();
        let spec = pod.spec.as_ref().unwrap();
        let mut volumes = spec.volumes.clone().unwrap();
        // A tmpfs needs root.
        if !nix::unistd::geteuid().is_root() {
            volumes.pop();
        }
        let host = dir.prepare_volumes(&volumes, &m).unwrap();
        let vols = root.path().join("pods/u1/volumes");
        let secret = vols.join("kubernetes.io~secret/s");
        assert_eq!(host["s"].path, secret);
        assert!(host["s"].read_only && !host["e"].read_only);
        assert_eq!(fs::read_to_string(secret.join("k")).unwrap(), "hi");
        assert_eq!(fs::read_to_string(secret.join("t")).unwrap(), "text");
        let mode = fs::metadata(secret.join("k")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o400);
        let cm = vols.join("kubernetes.io~configmap/c");
        assert_eq!(fs::read_to_string(cm.join("dir/b.txt")).unwrap(), "2");
        assert!(fs::symlink_metadata(cm.join("a")).is_err());
        assert!(vols.join("kubernetes.io~secret/o/..data").exists());
        let empty = vols.join("kubernetes.io~empty-dir/e");
        assert_eq!(
            fs::metadata(&empty).unwrap().permissions().mode() & 0o777,
            0o777
        );

        let mounts = dir.mounts(&spec.containers[0], &host).unwrap();
        let paths: Vec<(&str, bool)> = mounts
            .iter()
            .map(|m| (m.container_path.as_str(), m.readonly))
            .collect();
        assert_eq!(
            paths,
            [
                ("/s", true),
                ("/c/b.txt", true),
                ("/e", true),
                ("/dev/msg", false)
            ]
        );
        let sub = root.path().join("pods/u1/volume-subpaths/c/app/1");
        assert_eq!(mounts[1].host_path, sub.to_string_lossy());
        assert_eq!(fs::read_to_string(&sub).unwrap(), "2");
        let message = Path::new(&mounts[3].host_path);
        assert!(message.starts_with(root.path().join("pods/u1/containers/app")));
        assert_eq!(fs::metadata(message).unwrap().len(), 0);

        // A missing, non-optional object is named.
        let err = dir
            .prepare_volumes(
                &[Volume {
                    name: "x".into(),
                    config_map: Some(k8s_openapi::api::core::v1::ConfigMapVolumeSource {
                        name: "absent".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                &m,
            )
            .unwrap_err();
        assert!(err.to_string().contains("no ConfigMap \"absent\""), "{err}");

        dir.remove().unwrap();
        assert!(!root.path().join("pods/u1").exists());
    }

    #[test]
    fn mount_paths_unescape() {
        assert_eq!(unescape_mount_path(r"/a\040b/c"), PathBuf::from("/a b/c"));
    }
}

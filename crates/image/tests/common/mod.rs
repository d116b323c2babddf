//! Test support: a real `docker-registry` on 127.0.0.1, OCI layouts built by
//! hand and pushed with `skopeo`, and an independent layer applier (python3).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Returns why a test must skip, if it must.
pub fn need(bins: &[&str], root: bool) -> Option<String> {
    for b in bins {
        let found = if b.starts_with('/') {
            Path::new(b).exists()
        } else {
            std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).any(|d| d.join(b).is_file()))
                .unwrap_or(false)
        };
        if !found {
            return Some(format!("{b} not found"));
        }
    }
    if root && !nix::unistd::geteuid().is_root() {
        return Some("needs root".into());
    }
    None
}

#[macro_export]
macro_rules! skip_unless {
    ($bins:expr, $root:expr) => {
        if let Some(why) = common::need($bins, $root) {
            let name = std::thread::current().name().unwrap_or("test").to_string();
            eprintln!("SKIP {name}: {why}");
            return;
        }
    };
}

pub const BASE_BINS: &[&str] = &[
    "/usr/bin/docker-registry",
    "skopeo",
    "mkfs.erofs",
    "/bin/busybox",
];

pub struct Registry {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub creds: Option<(String, String)>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    pub fn start(auth: Option<(&str, &str)>) -> Registry {
        Self::start_on(auth, free_port())
    }

    pub fn start_on(auth: Option<(&str, &str)>, port: u16) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("storage").display()
        );
        if let Some((u, p)) = auth {
            let hash = bcrypt::hash(p, 4).unwrap();
            let htp = dir.path().join("htpasswd");
            std::fs::write(&htp, format!("{u}:{hash}\n")).unwrap();
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                htp.display()
            ));
        }
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, yaml).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let r = Registry {
            child,
            port,
            dir,
            creds: auth.map(|(u, p)| (u.to_string(), p.to_string())),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not start: {}",
                r.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// GET requests for a blob that the registry answered.
    pub fn blob_gets(&self, digest: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| {
                l.contains("response completed")
                    && l.contains("http.request.method=GET")
                    && l.contains(&format!("/blobs/{digest}"))
            })
            .count()
    }

    /// The registry's own file for a blob.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = &digest[7..];
        self.dir.path().join(format!(
            "storage/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }

    /// Pushes `oci:<layout>:<tag>` to `<name>:<tag>` with skopeo.
    pub fn push(&self, layout: &Path, tag: &str, name: &str, extra: &[&str]) {
        let mut c = Command::new("skopeo");
        c.args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
        ]);
        c.args(extra);
        if let Some((u, p)) = &self.creds {
            c.arg("--dest-creds").arg(format!("{u}:{p}"));
        }
        c.arg(format!("oci:{}:{tag}", layout.display()));
        c.arg(format!("docker://{}/{name}:{tag}", self.host()));
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tar entry for [`tar_of`].
pub enum E<'a> {
    File(&'a str, &'a [u8]),
    FileOwned(&'a str, Vec<u8>, u32, u32),
    Dir(&'a str),
    Sym(&'a str, &'a str),
    Hard(&'a str, &'a str),
    Char(&'a str),
    /// A file with one extended attribute (pax `SCHILY.xattr.<name>`).
    Xattr(&'a str, &'a [u8], &'a str, &'a [u8]),
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = 3 + key.len() + value.len(); // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

/// Builds a tar, writing names raw (so bad ones can be made).
pub fn tar_of(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        let (path, kind, data, link, mode, uid): (
            &str,
            tar::EntryType,
            &[u8],
            Option<&str>,
            u32,
            u32,
        ) = match e {
            E::File(p, d) => (p, tar::EntryType::Regular, d, None, 0o644, 0),
            E::FileOwned(p, d, m, u) => (p, tar::EntryType::Regular, d.as_slice(), None, *m, *u),
            E::Dir(p) => (p, tar::EntryType::Directory, b"", None, 0o755, 0),
            E::Sym(p, t) => (p, tar::EntryType::Symlink, b"", Some(t), 0o777, 0),
            E::Hard(p, t) => (p, tar::EntryType::Link, b"", Some(t), 0o644, 0),
            E::Char(p) => (p, tar::EntryType::Char, b"", None, 0o666, 0),
            E::Xattr(p, d, k, v) => {
                let rec = pax_record(&format!("SCHILY.xattr.{k}"), v);
                let mut x = tar::Header::new_ustar();
                x.set_entry_type(tar::EntryType::XHeader);
                x.set_size(rec.len() as u64);
                x.set_mode(0o644);
                x.set_cksum();
                b.append(&x, rec.as_slice()).unwrap();
                (p, tar::EntryType::Regular, d, None, 0o644, 0)
            }
        };
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(t) = link {
            h.as_old_mut().linkname[..t.len()].copy_from_slice(t.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(uid.into());
        h.set_gid(uid.into());
        h.set_mtime(1_700_000_000);
        if kind == tar::EntryType::Char {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
}

pub struct Layer {
    pub tar: Vec<u8>,
    pub comp: Comp,
    pub media_type: Option<String>,
}

impl Layer {
    pub fn new(tar: Vec<u8>, comp: Comp) -> Layer {
        Layer {
            tar,
            comp,
            media_type: None,
        }
    }
}

/// A hand-written OCI image layout directory.
pub struct Layout {
    pub dir: tempfile::TempDir,
    tags: Vec<Value>,
}

pub struct Built {
    pub config_digest: String,
    pub manifest_digest: String,
    pub layer_digests: Vec<String>,
    pub desc: Value,
}

impl Layout {
    pub fn new() -> Layout {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
        std::fs::write(
            dir.path().join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        Layout {
            dir,
            tags: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn blob(&self, data: &[u8]) -> (String, u64) {
        let d = sha(data);
        std::fs::write(self.dir.path().join("blobs/sha256").join(&d[7..]), data).unwrap();
        (d, data.len() as u64)
    }

    /// Writes config, layers and manifest; returns the manifest descriptor.
    pub fn image(&self, layers: &[Layer], arch: &str, user: &str, manifest_extra: Value) -> Built {
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        let mut layer_digests = Vec::new();
        for l in layers {
            diff_ids.push(sha(&l.tar));
            let (data, mt) = match l.comp {
                Comp::None => (l.tar.clone(), "application/vnd.oci.image.layer.v1.tar"),
                Comp::Gzip => {
                    let mut e =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    e.write_all(&l.tar).unwrap();
                    (
                        e.finish().unwrap(),
                        "application/vnd.oci.image.layer.v1.tar+gzip",
                    )
                }
                Comp::Zstd => (
                    zstd::encode_all(&l.tar[..], 3).unwrap(),
                    "application/vnd.oci.image.layer.v1.tar+zstd",
                ),
            };
            let (d, s) = self.blob(&data);
            layer_digests.push(d.clone());
            descs.push(json!({"mediaType": l.media_type.clone().unwrap_or(mt.to_string()), "digest": d, "size": s}));
        }
        let config = json!({
            "architecture": arch, "os": "linux",
            "config": {
                "User": user, "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"],
                "Env": ["PATH=/bin", "A=b"], "WorkingDir": "/work",
                "ExposedPorts": {"80/tcp": {}}, "Labels": {"l": "v"}, "StopSignal": "SIGINT"
            },
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let (cd, cs) = self.blob(&serde_json::to_vec(&config).unwrap());
        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
            "layers": descs,
        });
        if let (Some(m), Some(extra)) = (manifest.as_object_mut(), manifest_extra.as_object()) {
            for (k, v) in extra {
                m.insert(k.clone(), v.clone());
            }
        }
        let (md, ms) = self.blob(&serde_json::to_vec(&manifest).unwrap());
        Built {
            config_digest: cd,
            manifest_digest: md.clone(),
            layer_digests,
            desc: json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
                         "platform": {"architecture": arch, "os": "linux"}}),
        }
    }

    /// Writes an image index blob over `manifests`; returns its descriptor.
    pub fn index(&self, manifests: &[Value]) -> Value {
        let idx = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
        let (d, s) = self.blob(&serde_json::to_vec(&idx).unwrap());
        json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": d, "size": s})
    }

    /// Names a descriptor in index.json.
    pub fn tag(&mut self, desc: &Value, tag: &str) {
        let mut d = desc.clone();
        d["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        self.tags.push(d);
        let idx = json!({"schemaVersion": 2, "manifests": self.tags});
        std::fs::write(
            self.dir.path().join("index.json"),
            serde_json::to_vec(&idx).unwrap(),
        )
        .unwrap();
    }
}

/// The busybox base layer: /bin/busybox plus applet symlinks, an /etc.
pub fn busybox_layer() -> Vec<u8> {
    let bb = std::fs::read("/bin/busybox").unwrap();
    tar_of(&[
        E::Dir("bin/"),
        E::FileOwned("bin/busybox", bb, 0o755, 0),
        E::Sym("bin/sh", "busybox"),
        E::Sym("bin/ls", "/bin/busybox"),
        E::Dir("etc/"),
        E::File(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
        ),
        E::File("etc/gone", b"removed by a whiteout"),
        E::Dir("opq/"),
        E::File("opq/old", b"hidden by an opaque whiteout"),
        E::Dir("work/"),
    ])
}

/// A second layer with whiteouts, an opaque dir, hard links and ownership.
pub fn changes_layer() -> Vec<u8> {
    tar_of(&[
        E::Dir("etc/"),
        E::File("etc/.wh.gone", b""),
        E::Dir("opq/"),
        // The layer's own file comes before its opaque marker: it must survive.
        E::File("opq/new", b"new"),
        E::File("opq/.wh..wh..opq", b""),
        E::FileOwned("etc/owned", b"by 1000".to_vec(), 0o4750, 1000),
        E::Hard("etc/passwd-link", "etc/passwd"),
        E::Dir("data/"),
        E::File("data/big", &[7u8; 100_000]),
        E::Xattr("data/attr", b"with an xattr", "user.hearth", b"yes"),
    ])
}

/// Applies uncompressed layer tars independently (python3's tarfile) and
/// returns a manifest: path → "type mode uid gid size sha256|target".
pub fn python_manifest(tars: &[Vec<u8>]) -> Option<std::collections::BTreeMap<String, String>> {
    need(&["python3"], false).is_none().then_some(())?;
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (i, t) in tars.iter().enumerate() {
        let p = dir.path().join(format!("{i}.tar"));
        std::fs::write(&p, t).unwrap();
        paths.push(p.display().to_string());
    }
    let script = r#"
import sys, tarfile, hashlib, json, posixpath
tree = {}
for path in sys.argv[1:]:
    added = set()
    with tarfile.open(path) as tf:
        for m in tf.getmembers():
            name = posixpath.normpath(m.name.lstrip('./')) if m.name not in ('.', './') else ''
            if not name or name == '.':
                continue
            d, b = posixpath.split(name)
            if b == '.wh..wh..opq':
                for k in [k for k in tree if k.startswith(d + '/') and k not in added]:
                    del tree[k]
                continue
            if b.startswith('.wh.'):
                t = posixpath.join(d, b[4:])
                for k in [k for k in tree if k == t or k.startswith(t + '/')]:
                    del tree[k]
                continue
            if m.isdir():
                tree[name] = 'dir %o %d %d' % (m.mode & 0o7777, m.uid, m.gid)
            elif m.issym():
                tree[name] = 'sym %s' % m.linkname
            elif m.islnk():
                tree[name] = tree[posixpath.normpath(m.linkname)]
            elif m.isfile():
                data = tf.extractfile(m).read()
                tree[name] = 'file %o %d %d %d %s' % (m.mode & 0o7777, m.uid, m.gid, len(data), hashlib.sha256(data).hexdigest())
            added.add(name)
print(json.dumps(tree))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(&paths)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

/// The same manifest, read from a directory (the mounted erofs).
pub fn dir_manifest(root: &Path) -> std::collections::BTreeMap<String, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let v = if m.file_type().is_symlink() {
                format!("sym {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                format!("dir {:o} {} {}", m.mode() & 0o7777, m.uid(), m.gid())
            } else {
                let mut data = Vec::new();
                std::fs::File::open(&p)
                    .unwrap()
                    .read_to_end(&mut data)
                    .unwrap();
                format!(
                    "file {:o} {} {} {} {}",
                    m.mode() & 0o7777,
                    m.uid(),
                    m.gid(),
                    data.len(),
                    hex::encode(Sha256::digest(&data))
                )
            };
            out.insert(rel, v);
        }
    }
    out
}

/// A read-only loop mount, unmounted on drop.
pub struct Mount {
    pub dir: tempfile::TempDir,
}

impl Mount {
    pub fn erofs(image: &Path) -> Mount {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-o", "loop,ro", "-t", "erofs"])
            .arg(image)
            .arg(dir.path())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mount { dir }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Asserts the store holds nothing: no images, blobs, erofs images or temp files.
pub fn assert_store_empty(store: &hearth_image::ImageStore) {
    assert!(store.list().is_empty(), "images left: {:?}", store.list());
    for sub in ["content/blobs/sha256", "content/tmp", "erofs", "tmp"] {
        let p = store.root().join(sub);
        let left: Vec<_> = std::fs::read_dir(&p)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(left.is_empty(), "left in {sub}: {left:?}");
    }
}

/// Minimal raw HTTP GET, returns the status code.
pub fn http_status(host: &str, path: &str) -> u16 {
    let mut s = TcpStream::connect(host).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Incompressible bytes (xorshift), for large layers.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

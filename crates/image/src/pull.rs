//! Talking to registries: endpoint choice (mirrors, plain HTTP), manifest
//! and index resolution (linux/amd64), and blob streams, over `oci-client`.
//!
//! Clients are kept across pulls ([`Clients`]): building one loads the TLS
//! root certificates (about 6 ms here), and a kept client reuses its pooled
//! connections and the tokens it obtained, so re-resolving a tag costs one
//! round trip.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol, SizedStream};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::{Arch, ImageIndex, ImageManifest, Os};

use crate::config::{Credentials, Endpoint, RegistryConfig};
use crate::content::sha256_digest;
use crate::error::{ImageError, Result};
use crate::reference::ImageReference;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const ACCEPT: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// Config media types accepted.
pub(crate) const CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// Layer media types accepted (compression is detected from the bytes).
pub(crate) const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// A registry endpoint bound to one pull.
pub(crate) struct Source {
    client: Arc<Client>,
    reference: Reference,
    /// The endpoint host, for errors.
    pub host: String,
}

/// Registry clients by endpoint and credentials (a client stores the
/// credentials and tokens it was used with, so clients are never shared
/// between different credentials).
#[derive(Default)]
pub(crate) struct Clients {
    map: Mutex<HashMap<ClientKey, Arc<Client>>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    host: String,
    plain_http: bool,
    /// sha256 of the credentials (not the secret itself).
    auth: String,
}

/// Clients kept at most; past it the cache starts over.
const MAX_CLIENTS: usize = 64;

impl ClientKey {
    fn new(ep: &Endpoint, auth: &RegistryAuth) -> ClientKey {
        let auth = match auth {
            RegistryAuth::Anonymous => "anonymous".to_string(),
            RegistryAuth::Basic(u, p) => sha256_digest(format!("basic\0{u}\0{p}").as_bytes()),
            RegistryAuth::Bearer(t) => sha256_digest(format!("bearer\0{t}").as_bytes()),
        };
        ClientKey {
            host: ep.host.clone(),
            plain_http: ep.plain_http,
            auth,
        }
    }
}

impl Clients {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<ClientKey, Arc<Client>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, key: &ClientKey, ep: &Endpoint) -> Arc<Client> {
        if let Some(c) = self.map().get(key) {
            return c.clone();
        }
        // Built outside the lock: it takes milliseconds.
        let client = Arc::new(client_for(ep));
        let mut map = self.map();
        if map.len() >= MAX_CLIENTS {
            map.clear();
        }
        map.entry(key.clone()).or_insert(client).clone()
    }

    /// Forgets a client whose credentials or tokens were refused.
    fn forget(&self, key: &ClientKey) {
        self.map().remove(key);
    }
}

/// How a reference resolved.
pub(crate) enum Resolution {
    /// The reference names a manifest or index already known (by its digest):
    /// nothing more was fetched.
    Known {
        /// The digest the reference resolved to.
        top_digest: String,
    },
    /// A platform manifest to pull.
    Fetched(Box<Resolved>),
}

/// A resolved platform manifest.
pub(crate) struct Resolved {
    pub source: Source,
    /// The digest the reference resolved to (index or manifest).
    pub top_digest: String,
    /// Raw documents to keep: (digest, bytes), index first if any.
    pub documents: Vec<(String, Vec<u8>)>,
    pub manifest_digest: String,
    pub manifest_media_type: String,
    pub manifest: ImageManifest,
}

fn client_for(ep: &Endpoint) -> Client {
    Client::new(ClientConfig {
        protocol: if ep.plain_http {
            ClientProtocol::HttpsExcept(vec![ep.host.clone()])
        } else {
            ClientProtocol::Https
        },
        platform_resolver: None,
        connect_timeout: Some(Duration::from_secs(10)),
        read_timeout: Some(Duration::from_secs(120)),
        ..ClientConfig::default()
    })
}

/// Maps an oci-client error to ours.
pub(crate) fn map_err(e: OciDistributionError, host: &str, reference: &str) -> ImageError {
    use OciDistributionError as E;
    let unauthorized = || ImageError::Unauthorized {
        registry: host.to_string(),
    };
    match e {
        E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => unauthorized(),
        E::ServerError {
            code: 401 | 403, ..
        } => unauthorized(),
        E::ServerError { code: 404, .. } | E::ImageManifestNotFoundError(_) => {
            ImageError::NotFound(reference.to_string())
        }
        E::RegistryError { ref envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                unauthorized()
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                        | OciErrorCode::BlobUnknown
                )
            }) {
                ImageError::NotFound(reference.to_string())
            } else {
                ImageError::Registry {
                    registry: host.to_string(),
                    source: e,
                }
            }
        }
        E::DigestError(oci_client::errors::DigestError::VerificationError { expected, actual }) => {
            ImageError::DigestMismatch { expected, actual }
        }
        other => ImageError::Registry {
            registry: host.to_string(),
            source: other,
        },
    }
}

fn media_type_of(raw: &[u8], digest: &str) -> Result<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "schemaVersion")]
        schema_version: Option<i64>,
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        layers: Option<serde_json::Value>,
    }
    let p: Probe = serde_json::from_slice(raw).map_err(|e| ImageError::InvalidManifest {
        what: "manifest",
        digest: digest.to_string(),
        reason: e.to_string(),
    })?;
    if p.schema_version == Some(1) {
        return Err(ImageError::UnsupportedMediaType(
            "application/vnd.docker.distribution.manifest.v1+json (schema 1)".into(),
        ));
    }
    Ok(match (p.media_type, p.manifests, p.layers) {
        (Some(m), _, _) => m,
        (None, Some(_), _) => OCI_INDEX.to_string(),
        (None, None, Some(_)) => OCI_MANIFEST.to_string(),
        (None, None, None) => {
            return Err(ImageError::InvalidManifest {
                what: "manifest",
                digest: digest.to_string(),
                reason: "neither mediaType, manifests nor layers".into(),
            })
        }
    })
}

impl Source {
    async fn manifest(
        &self,
        reference: &Reference,
        auth: &RegistryAuth,
        max: u64,
        shown: &str,
    ) -> Result<(String, Vec<u8>)> {
        let (body, _) = self
            .client
            .pull_manifest_raw(reference, auth, ACCEPT)
            .await
            .map_err(|e| map_err(e, &self.host, shown))?;
        // oci-client reads the whole body; the limit is enforced on what it returns.
        if body.len() as u64 > max {
            return Err(ImageError::ManifestTooLarge {
                size: body.len() as u64,
                limit: max,
            });
        }
        let digest = sha256_digest(&body);
        if let Some(want) = reference.digest() {
            if want != digest {
                return Err(ImageError::DigestMismatch {
                    expected: want.to_string(),
                    actual: digest,
                });
            }
        }
        Ok((digest, body.to_vec()))
    }

    /// Starts streaming a blob.
    pub(crate) async fn blob(
        &self,
        digest: &str,
        size: u64,
        media_type: &str,
    ) -> Result<SizedStream> {
        let desc = OciDescriptor {
            media_type: media_type.to_string(),
            digest: digest.to_string(),
            size: i64::try_from(size).unwrap_or(i64::MAX),
            ..OciDescriptor::default()
        };
        self.client
            .pull_blob_stream(&self.reference, &desc)
            .await
            .map_err(|e| map_err(e, &self.host, digest))
    }
}

/// Resolves `r` to a linux/amd64 image manifest, trying mirrors first.
/// When the document the reference points at has a digest for which
/// `known` is true, resolution stops there.
pub(crate) async fn resolve(
    config: &RegistryConfig,
    clients: &Clients,
    r: &ImageReference,
    creds: Option<&Credentials>,
    known: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Resolution> {
    let auth = creds
        .map(Credentials::to_registry_auth)
        .unwrap_or(RegistryAuth::Anonymous);
    let shown = r.to_string();
    let mut last_err = None;
    for ep in config.endpoints(&r.registry) {
        let reference = match (&r.digest, &r.tag) {
            (Some(d), _) => {
                Reference::with_digest(ep.host.clone(), r.repository.clone(), d.clone())
            }
            (None, Some(t)) => {
                Reference::with_tag(ep.host.clone(), r.repository.clone(), t.clone())
            }
            (None, None) => {
                Reference::with_tag(ep.host.clone(), r.repository.clone(), "latest".into())
            }
        };
        let key = ClientKey::new(&ep, &auth);
        let source = Source {
            client: clients.get(&key, &ep),
            reference,
            host: ep.host.clone(),
        };
        match resolve_at(source, &auth, config.max_manifest_bytes, &shown, known).await {
            Ok(res) => return Ok(res),
            Err(e) => {
                if matches!(e, ImageError::Unauthorized { .. }) {
                    clients.forget(&key);
                }
                tracing::debug!(endpoint = %ep.host, error = %e, "endpoint failed");
                last_err = Some(e);
            }
        }
    }
    Err(last_err.unwrap_or_else(|| ImageError::NotFound(shown)))
}

async fn resolve_at(
    source: Source,
    auth: &RegistryAuth,
    max: u64,
    shown: &str,
    known: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Resolution> {
    let (top_digest, top) = source.manifest(&source.reference, auth, max, shown).await?;
    if known(&top_digest) {
        return Ok(Resolution::Known { top_digest });
    }
    let mt = media_type_of(&top, &top_digest)?;
    let mut documents = vec![(top_digest.clone(), top.clone())];
    let (manifest_digest, raw, mt) = if mt == OCI_INDEX || mt == DOCKER_LIST {
        let index: ImageIndex =
            serde_json::from_slice(&top).map_err(|e| ImageError::InvalidManifest {
                what: "image index",
                digest: top_digest.clone(),
                reason: e.to_string(),
            })?;
        let mut available = Vec::new();
        let mut chosen = None;
        for d in index.manifests() {
            if let Some(p) = d.platform() {
                available.push(format!("{}/{}", p.os(), p.architecture()));
                if chosen.is_none() && *p.os() == Os::Linux && *p.architecture() == Arch::Amd64 {
                    chosen = Some(d.digest().to_string());
                }
            }
        }
        let Some(child) = chosen else {
            return Err(ImageError::NoMatchingPlatform {
                reference: shown.to_string(),
                available: available.join(", "),
            });
        };
        let child_ref = source.reference.clone_with_digest(child.clone());
        let (digest, raw) = source.manifest(&child_ref, auth, max, shown).await?;
        if digest != child {
            return Err(ImageError::DigestMismatch {
                expected: child,
                actual: digest,
            });
        }
        let mt = media_type_of(&raw, &digest)?;
        documents.push((digest.clone(), raw.clone()));
        (digest, raw, mt)
    } else {
        (top_digest.clone(), top, mt)
    };
    if mt != OCI_MANIFEST && mt != DOCKER_MANIFEST {
        return Err(ImageError::UnsupportedMediaType(mt));
    }
    let manifest: ImageManifest =
        serde_json::from_slice(&raw).map_err(|e| ImageError::InvalidManifest {
            what: "manifest",
            digest: manifest_digest.clone(),
            reason: e.to_string(),
        })?;
    Ok(Resolution::Fetched(Box::new(Resolved {
        source,
        top_digest,
        documents,
        manifest_digest,
        manifest_media_type: mt,
        manifest,
    })))
}

//! Pulling an image from a registry, the way containerd's CRI plugin does it:
//!
//! 1. The hosts for the registry come from `hosts.toml` (mirrors in order, then the server).
//!    A tag is resolved on hosts with the `resolve` capability, content (manifests by digest,
//!    blobs) is fetched from hosts with `pull`. A host that answers 404 is skipped; any other
//!    failure is remembered and the next host tried; when all fail, the first real failure is
//!    reported, else "not found" (containerd's resolver does the same).
//! 2. An index / manifest list is narrowed to this host's platform.
//! 3. Config and layers are fetched by digest into the content store, which verifies them; each
//!    layer is decompressed (gzip or zstd, detected from its bytes), checked against its diff
//!    id and unpacked into a snapshot once per chain id. A layer whose snapshot exists is not
//!    even downloaded.
//! 4. The image record is written; names move to it.
//!
//! HTTP, tokens and basic auth are oci-client's. One client is built per pull, because
//! oci-client remembers the first credentials it sees for a registry and a CRI pull brings its
//! own. Limits: hosts.toml `header` entries and path prefixes other than `/v2` are not
//! supported by oci-client; `skip_verify` and `ca` apply to every host of the pull; an
//! `identity_token` is sent as basic credentials `<token>:<identity token>` to the token
//! endpoint (Docker's convention) rather than as an OAuth refresh token.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use sha2::{Digest as _, Sha256};

use super::manifest::{self, ConfigFile, Document};
use super::store::digest;
use super::{ImageError, ImageRecord, ImageStore, LayerInfo};
use crate::content::{ContentStore, Digest};
use crate::pb::AuthConfig;
use crate::reference::Reference;
use crate::registry_config::{self, Capability, RegistryHost};
use crate::unpack::{self, Compression};

/// Layers downloaded at once.
const CONCURRENT_LAYERS: usize = 3;

/// A fingerprint of credentials, so that pulls with different credentials are not merged.
pub(super) fn auth_fingerprint(auth: Option<&AuthConfig>) -> String {
    match auth {
        None => String::new(),
        Some(a) => {
            let mut h = Sha256::new();
            for f in [
                &a.username,
                &a.password,
                &a.auth,
                &a.server_address,
                &a.identity_token,
                &a.registry_token,
            ] {
                h.update(f.as_bytes());
                h.update([0]);
            }
            format!("{:x}", h.finalize())
        }
    }
}

/// The credentials to send to `host` for `registry` from a CRI AuthConfig (none when the
/// AuthConfig names another server, as containerd's `ParseAuth` does).
fn registry_auth(
    auth: Option<&AuthConfig>,
    registry: &str,
    host: &str,
) -> Result<RegistryAuth, ImageError> {
    let Some(a) = auth else {
        return Ok(RegistryAuth::Anonymous);
    };
    if !a.server_address.is_empty() {
        let server = a
            .server_address
            .split("://")
            .last()
            .unwrap_or("")
            .split('/')
            .next()
            .unwrap_or("");
        let same = |x: &str| x == server || (x == "docker.io" && server == "index.docker.io");
        if !same(registry) && !same(host) {
            return Ok(RegistryAuth::Anonymous);
        }
    }
    if !a.registry_token.is_empty() {
        return Ok(RegistryAuth::Bearer(a.registry_token.clone()));
    }
    if !a.username.is_empty() {
        return Ok(RegistryAuth::Basic(a.username.clone(), a.password.clone()));
    }
    if !a.auth.is_empty() {
        let decoded = base64_decode(a.auth.trim()).ok_or_else(|| {
            ImageError::InvalidReference("auth config: `auth` is not valid base64".to_string())
        })?;
        let text = String::from_utf8(decoded).map_err(|_| {
            ImageError::InvalidReference("auth config: `auth` is not UTF-8".to_string())
        })?;
        let (user, pass) = text.split_once(':').ok_or_else(|| {
            ImageError::InvalidReference(
                "auth config: `auth` must encode \"username:password\"".to_string(),
            )
        })?;
        return Ok(RegistryAuth::Basic(user.to_string(), pass.to_string()));
    }
    if !a.identity_token.is_empty() {
        return Ok(RegistryAuth::Basic(
            "<token>".to_string(),
            a.identity_token.clone(),
        ));
    }
    Ok(RegistryAuth::Anonymous)
}

/// Standard base64 (padding optional).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = s.bytes().filter(|b| *b != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= val(*c)? << (18 - 6 * i);
        }
        out.push((acc >> 16) as u8);
        if chunk.len() > 2 {
            out.push((acc >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(acc as u8);
        }
    }
    Some(out)
}

/// Why one host did not deliver.
enum Miss {
    NotFound,
    Failed(ImageError),
}

fn classify(e: OciDistributionError, host: &str, reference: &str) -> Miss {
    let unauthorized = |message: String| {
        Miss::Failed(ImageError::Unauthorized {
            reference: reference.to_string(),
            host: host.to_string(),
            message,
        })
    };
    let registry = |message: String| {
        Miss::Failed(ImageError::Registry {
            host: host.to_string(),
            message,
        })
    };
    match e {
        OciDistributionError::RequestError(r) => {
            if r.is_connect() || r.is_timeout() {
                let mut message = r.to_string();
                let mut src = std::error::Error::source(&r);
                while let Some(s) = src {
                    message = format!("{message}: {s}");
                    src = s.source();
                }
                Miss::Failed(ImageError::Unreachable {
                    host: host.to_string(),
                    message,
                })
            } else {
                registry(r.to_string())
            }
        }
        OciDistributionError::UnauthorizedError { url } => {
            unauthorized(format!("401 Unauthorized from {url}"))
        }
        OciDistributionError::AuthenticationFailure(m) => {
            unauthorized(format!("authentication failed: {}", m.trim()))
        }
        OciDistributionError::RegistryError { envelope, url } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            let text = format!("{url}: {envelope}");
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                        | OciErrorCode::BlobUnknown
                )
            }) {
                Miss::NotFound
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                unauthorized(text)
            } else {
                registry(text)
            }
        }
        OciDistributionError::ServerError { code, url, message } => match code {
            404 => Miss::NotFound,
            401 | 403 => unauthorized(format!("{code} from {url}: {}", message.trim())),
            _ => registry(format!("{code} from {url}: {}", message.trim())),
        },
        OciDistributionError::DigestError(d) => Miss::Failed(ImageError::DigestMismatch {
            digest: reference.to_string(),
            message: d.to_string(),
        }),
        other => registry(other.to_string()),
    }
}

/// The registry side of one pull: the hosts to try, one oci-client, the credentials per host.
struct Remote {
    client: oci_client::Client,
    hosts: Vec<(RegistryHost, RegistryAuth)>,
    reference: Reference,
    shown: String,
}

impl Remote {
    fn new(
        reference: &Reference,
        hosts: Vec<RegistryHost>,
        auth: Option<&AuthConfig>,
    ) -> Result<Self, ImageError> {
        let mut usable = Vec::new();
        for h in hosts {
            if h.path != "/v2" {
                tracing::warn!(host = %h.base_url(), "skipping a registry host with a path prefix (not supported)");
                continue;
            }
            let a = registry_auth(auth, &reference.registry, &h.host)?;
            usable.push((h, a));
        }
        let mut certs = Vec::new();
        for (h, _) in &usable {
            for ca in &h.ca {
                let data = std::fs::read(ca).map_err(|e| {
                    ImageError::Config(format!("reading CA {} for {}: {e}", ca.display(), h.host))
                })?;
                certs.push(Certificate {
                    encoding: CertificateEncoding::Pem,
                    data,
                });
            }
        }
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(
                usable
                    .iter()
                    .filter(|(h, _)| h.scheme == "http")
                    .map(|(h, _)| h.host.clone())
                    .collect(),
            ),
            accept_invalid_certificates: usable.iter().any(|(h, _)| h.skip_verify),
            extra_root_certificates: certs,
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(15)),
            read_timeout: Some(Duration::from_secs(120)),
            ..ClientConfig::default()
        };
        let client = oci_client::Client::try_from(config)
            .map_err(|e| ImageError::Config(format!("building the registry client: {e}")))?;
        Ok(Remote {
            client,
            hosts: usable,
            reference: reference.clone(),
            shown: reference.to_string(),
        })
    }

    fn oci_ref(&self, host: &RegistryHost, target: &str) -> oci_client::Reference {
        if target.contains(':') {
            oci_client::Reference::with_digest(
                host.host.clone(),
                self.reference.repository.clone(),
                target.to_string(),
            )
        } else {
            oci_client::Reference::with_tag(
                host.host.clone(),
                self.reference.repository.clone(),
                target.to_string(),
            )
        }
    }

    /// Host indexes to try for `cap`, `preferred` first.
    fn order(&self, cap: Capability, preferred: Option<usize>) -> Vec<usize> {
        let mut out: Vec<usize> = preferred.into_iter().collect();
        out.extend(
            (0..self.hosts.len()).filter(|i| Some(*i) != preferred && self.hosts[*i].0.can(cap)),
        );
        out
    }

    fn give_up(&self, first: Option<ImageError>, tried: &[String]) -> ImageError {
        first.unwrap_or_else(|| ImageError::NotFound {
            reference: self.shown.clone(),
            detail: if tried.is_empty() {
                " (no registry host may serve it: check the capabilities in hosts.toml)".into()
            } else {
                format!(" (tried {})", tried.join(", "))
            },
        })
    }

    /// Fetches a manifest by tag or digest; returns its bytes, its digest (computed) and the host
    /// that served it.
    async fn manifest(
        &self,
        target: &str,
        cap: Capability,
        preferred: Option<usize>,
    ) -> Result<(Vec<u8>, String, usize), ImageError> {
        let mut first = None;
        let mut tried = Vec::new();
        for i in self.order(cap, preferred) {
            let (host, auth) = &self.hosts[i];
            let oref = self.oci_ref(host, target);
            tried.push(host.base_url());
            match self
                .client
                .pull_manifest_raw(&oref, auth, manifest::ACCEPTED_MANIFESTS)
                .await
            {
                Ok((bytes, _)) => {
                    let d = Digest::of(&bytes).to_string();
                    if target.contains(':') && d != target {
                        return Err(ImageError::DigestMismatch {
                            digest: target.to_string(),
                            message: format!("manifest from {} hashes to {d}", host.base_url()),
                        });
                    }
                    return Ok((bytes.to_vec(), d, i));
                }
                Err(e) => match classify(e, &host.base_url(), &self.shown) {
                    Miss::NotFound => {
                        tracing::debug!(host = %host.base_url(), "manifest not found, trying the next host")
                    }
                    Miss::Failed(err @ ImageError::DigestMismatch { .. }) => return Err(err),
                    Miss::Failed(err) => {
                        tracing::debug!(host = %host.base_url(), error = %err, "trying the next host");
                        first.get_or_insert(err);
                    }
                },
            }
        }
        Err(self.give_up(first, &tried))
    }

    /// Streams a blob into the content store (verified there).
    async fn blob(
        &self,
        d: &manifest::Descriptor,
        content: &ContentStore,
        preferred: usize,
    ) -> Result<(), ImageError> {
        let expected = digest(&d.digest)?;
        let mut first = None;
        let mut tried = Vec::new();
        for i in self.order(Capability::Pull, Some(preferred)) {
            let (host, auth) = &self.hosts[i];
            let oref = self.oci_ref(host, &d.digest);
            tried.push(host.base_url());
            self.client
                .store_auth_if_needed(oref.resolve_registry(), auth)
                .await;
            let mut stream = match self.client.pull_blob_stream(&oref, d.digest.as_str()).await {
                Ok(s) => s,
                Err(e) => match classify(e, &host.base_url(), &d.digest) {
                    Miss::NotFound => continue,
                    Miss::Failed(err) => {
                        first.get_or_insert(err);
                        continue;
                    }
                },
            };
            let mut ingest = content.ingest(&expected, (d.size > 0).then_some(d.size))?;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| {
                    let text = e.to_string();
                    if text.to_lowercase().contains("digest") {
                        ImageError::DigestMismatch {
                            digest: d.digest.clone(),
                            message: format!("from {}: {text}", host.base_url()),
                        }
                    } else {
                        ImageError::Registry {
                            host: host.base_url(),
                            message: format!("reading blob {}: {text}", d.digest),
                        }
                    }
                })?;
                ingest.write(&chunk)?;
            }
            ingest.commit()?;
            return Ok(());
        }
        Err(self.give_up(first, &tried))
    }
}

/// Decompresses a layer blob, unpacks it into `fs` and checks the uncompressed bytes against
/// `diff_id`.
pub(super) fn apply_verified(
    blob: impl Read,
    fs: &Path,
    layer_digest: &str,
    diff_id: &str,
) -> Result<(), ImageError> {
    let bad = |message: String| ImageError::BadLayer {
        digest: layer_digest.to_string(),
        message,
    };
    let mut buffered = BufReader::with_capacity(256 * 1024, blob);
    let head = buffered
        .fill_buf()
        .map_err(|e| bad(format!("reading: {e}")))?
        .to_vec();
    let reader: Box<dyn Read> = match Compression::detect(&head) {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered)
                .map_err(|e| bad(format!("zstd: {e}")))?,
        ),
        Compression::None => Box::new(buffered),
    };
    let mut hashing = HashingReader {
        inner: reader,
        hasher: Sha256::new(),
    };
    unpack::apply_layer(&mut hashing, fs).map_err(|e| bad(e.to_string()))?;
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(|e| bad(format!("reading: {e}")))?;
    let actual = format!("sha256:{:x}", hashing.hasher.finalize());
    if actual != diff_id {
        let _ = std::fs::remove_dir_all(fs);
        return Err(bad(format!(
            "the uncompressed layer hashes to {actual}, but the image config says {diff_id}"
        )));
    }
    Ok(())
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, ImageError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(ImageError::io("image store task", e)))
}

impl ImageStore {
    /// Unpacks every layer whose chain has no snapshot yet, from blobs in the content store.
    pub(super) fn unpack_layers(
        &self,
        lease: &super::store::Lease,
        layers: &[LayerInfo],
        chains: &[String],
    ) -> Result<(), ImageError> {
        for (layer, chain) in layers.iter().zip(chains) {
            self.unpack_one(lease, layer, chain)?;
        }
        Ok(())
    }

    fn unpack_one(
        &self,
        lease: &super::store::Lease,
        layer: &LayerInfo,
        chain: &str,
    ) -> Result<(), ImageError> {
        self.commit_layer(lease, chain, |fs| {
            let blob = self.content.open_blob(&digest(&layer.digest)?)?;
            apply_verified(blob, fs, &layer.digest, &layer.diff_id)
        })
        .map(|_| ())
    }

    /// The whole pull, once per reference at a time (see [`ImageStore::pull`]). A failed pull
    /// leaves nothing behind: what it stored is collected once its lease is gone.
    pub(super) async fn pull_uncached(
        self: &Arc<Self>,
        reference: Reference,
        auth: Option<AuthConfig>,
    ) -> Result<ImageRecord, ImageError> {
        let lease = Arc::new(self.new_lease()?);
        let result = self.pull_leased(reference, auth, lease.clone()).await;
        drop(lease);
        if result.is_err() {
            let store = self.clone();
            if let Err(e) = blocking(move || store.collect_now()).await {
                tracing::warn!(error = %e, "cleaning up after a failed pull");
            }
        }
        result
    }

    async fn pull_leased(
        self: &Arc<Self>,
        reference: Reference,
        auth: Option<AuthConfig>,
        lease: Arc<super::store::Lease>,
    ) -> Result<ImageRecord, ImageError> {
        let shown = reference.to_string();
        let hosts =
            registry_config::hosts_for(self.registry_config_dir.as_deref(), &reference.registry)
                .map_err(|e| ImageError::Config(e.to_string()))?;
        let remote = Remote::new(&reference, hosts, auth.as_ref())?;

        // 1. Resolve.
        let (target, cap) = match (&reference.digest, &reference.tag) {
            (Some(d), _) => (d.clone(), Capability::Pull),
            (None, Some(t)) => (t.clone(), Capability::Resolve),
            (None, None) => ("latest".to_string(), Capability::Resolve),
        };
        let (top_bytes, top_digest, host) = remote.manifest(&target, cap, None).await?;
        let mut documents = vec![(top_digest.clone(), top_bytes)];

        // 2. Platform.
        let unsupported = |m: String| ImageError::Unsupported(format!("{shown}: {m}"));
        let (manifest_digest, manifest) =
            match manifest::parse_document(&documents[0].1).map_err(unsupported)? {
                Document::Manifest(m) => (top_digest.clone(), m),
                Document::Index(index) => {
                    let (os, arch) = manifest::host_platform();
                    let entry =
                        manifest::select_platform(&index).ok_or_else(|| ImageError::NotFound {
                            reference: shown.clone(),
                            detail: format!(": no match for platform {os}/{arch} in manifest"),
                        })?;
                    let (bytes, d, _) = remote
                        .manifest(&entry.digest, Capability::Pull, Some(host))
                        .await?;
                    let m = match manifest::parse_document(&bytes).map_err(unsupported)? {
                        Document::Manifest(m) => m,
                        Document::Index(_) => {
                            return Err(ImageError::Unsupported(format!(
                                "{shown}: an index nested in an index is not supported"
                            )))
                        }
                    };
                    documents.push((d.clone(), bytes));
                    (d, m)
                }
            };
        let repo_tags: Vec<String> = reference
            .tag
            .iter()
            .map(|t| format!("{}:{t}", reference.name()))
            .collect();
        let repo_digests = vec![format!("{}@{top_digest}", reference.name())];

        // Already here with the same manifest: only the names change.
        self.refresh();
        let existing = self
            .state
            .read()
            .images
            .values()
            .find(|r| r.manifest_digest == manifest_digest)
            .cloned();
        if let Some(mut record) =
            existing.filter(|r| r.chain_ids.iter().all(|c| self.committed(c).is_some()))
        {
            let blobs: Vec<String> = documents.iter().map(|(d, _)| d.clone()).collect();
            {
                let (store, lease) = (self.clone(), lease.clone());
                let b = blobs.clone();
                blocking(move || store.extend_lease(&lease, [], b)).await?;
            }
            for (d, b) in &documents {
                self.content
                    .write(&digest(d)?, Some(b.len() as u64), b.as_slice())?;
            }
            record.repo_tags = repo_tags;
            record.repo_digests = repo_digests;
            record.blobs.extend(blobs);
            let store = self.clone();
            return blocking(move || store.put_record(record)).await;
        }

        // 3. Config and layers.
        let config_digest = digest(&manifest.config.digest)?;
        remote.blob(&manifest.config, &self.content, host).await?;
        let mut config_bytes = Vec::new();
        self.content
            .open_blob(&config_digest)?
            .read_to_end(&mut config_bytes)
            .map_err(|e| ImageError::io(format!("reading config {config_digest}"), e))?;
        let config: ConfigFile = serde_json::from_slice(&config_bytes).map_err(|e| {
            ImageError::InvalidImage(format!("{shown}: image config {config_digest}: {e}"))
        })?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::InvalidImage(format!(
                "{shown}: the manifest has {} layers but the config lists {} diff ids",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let chains = manifest::chain_ids(&config.rootfs.diff_ids);
        let layers: Vec<LayerInfo> = manifest
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(l, diff)| LayerInfo {
                digest: l.digest.clone(),
                size: l.size,
                media_type: l.media_type.clone(),
                diff_id: diff.clone(),
            })
            .collect();
        let mut blobs: BTreeSet<String> = documents.iter().map(|(d, _)| d.clone()).collect();
        blobs.insert(config_digest.to_string());
        blobs.extend(layers.iter().map(|l| l.digest.clone()));
        {
            let (store, lease) = (self.clone(), lease.clone());
            let (c, b) = (chains.clone(), blobs.clone());
            blocking(move || store.extend_lease(&lease, c, b)).await?;
        }
        for (d, b) in &documents {
            self.content
                .write(&digest(d)?, Some(b.len() as u64), b.as_slice())?;
        }

        let remote = &remote;
        futures::stream::iter(layers.iter().cloned().zip(chains.iter().cloned()))
            .map(|(layer, chain)| {
                let store = self.clone();
                let lease = lease.clone();
                async move {
                    if store.committed(&chain).is_some() {
                        return Ok(());
                    }
                    let layer_desc = manifest::Descriptor {
                        media_type: layer.media_type.clone(),
                        digest: layer.digest.clone(),
                        size: layer.size,
                        ..Default::default()
                    };
                    if !store.content.exists(&digest(&layer.digest)?) {
                        remote.blob(&layer_desc, &store.content, host).await?;
                    }
                    let s = store.clone();
                    blocking(move || s.unpack_one(&lease, &layer, &chain)).await
                }
            })
            .buffer_unordered(CONCURRENT_LAYERS)
            .try_collect::<Vec<()>>()
            .await?;

        // 4. Record.
        let size = documents.iter().map(|(_, b)| b.len() as u64).sum::<u64>()
            + config_bytes.len() as u64
            + layers.iter().map(|l| l.size).sum::<u64>();
        let record = ImageRecord {
            id: config_digest.to_string(),
            repo_tags,
            repo_digests,
            size,
            config: config.config.clone().unwrap_or_default(),
            pinned: false,
            manifest_digest,
            layers,
            chain_ids: chains,
            blobs,
            platform: format!("{}/{}", config.os, config.architecture),
            created: config.created.clone(),
        };
        let store = self.clone();
        blocking(move || store.put_record(record)).await
    }
}

/// For benchmarks: opens a store under `root` (which should be empty, for a cold pull) and
/// times one pull of `image`, including unpacking every layer.
pub async fn bench_pull(
    root: &Path,
    registry_config_dir: Option<PathBuf>,
    image: &str,
) -> Result<Duration, ImageError> {
    let store = ImageStore::open(root, registry_config_dir)?;
    let start = Instant::now();
    store.pull(image, None).await?;
    Ok(start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_the_cri_auth_config() {
        let a = AuthConfig {
            auth: "Y2Fwc3RhbjpzM2NyZXQ=".into(),
            ..Default::default()
        };
        assert!(matches!(
            registry_auth(Some(&a), "r", "h").unwrap(),
            RegistryAuth::Basic(u, p) if u == "capstan" && p == "s3cret"
        ));
        let t = AuthConfig {
            registry_token: "tok".into(),
            username: "x".into(),
            ..Default::default()
        };
        assert!(
            matches!(registry_auth(Some(&t), "r", "h").unwrap(), RegistryAuth::Bearer(x) if x == "tok")
        );
        let other = AuthConfig {
            username: "u".into(),
            password: "p".into(),
            server_address: "https://quay.io".into(),
            ..Default::default()
        };
        assert!(matches!(
            registry_auth(Some(&other), "docker.io", "127.0.0.1:5000").unwrap(),
            RegistryAuth::Anonymous
        ));
        assert!(matches!(
            registry_auth(Some(&other), "quay.io", "quay.io").unwrap(),
            RegistryAuth::Basic(..)
        ));
        let broken = AuthConfig {
            auth: "!!!".into(),
            ..Default::default()
        };
        assert!(registry_auth(Some(&broken), "r", "h").is_err());
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("YWI").unwrap(), b"ab");
        assert_ne!(auth_fingerprint(Some(&a)), auth_fingerprint(None));
    }
}

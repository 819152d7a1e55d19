//! Importing images from tarballs, for nodes without a registry (`capstan image import`, like
//! `ctr images import`):
//!
//! - an **OCI image layout** (`oci-layout`, `index.json`, `blobs/sha256/…`, as `skopeo copy …
//!   oci-archive:` writes it). Each entry of `index.json` is one image, named by its
//!   `io.containerd.image.name` annotation, else by `org.opencontainers.image.ref.name` when
//!   that is a full reference (a bare tag such as `latest` names nothing); an entry that is
//!   an index is narrowed to this host's platform.
//! - a **docker-archive** (`manifest.json` with `Config`, `RepoTags`, `Layers`, as `docker save`
//!   writes it). A Docker schema 2 manifest is made for it, as containerd does.
//!
//! The tarball is unpacked into scratch space first (members may come in any order), every
//! blob goes through the content store's digest check, and layers are unpacked as for a pull.
//! Only regular files are taken from the tarball; symlinks between members (docker save uses
//! them for repeated layers) are followed inside the archive only.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::Ordering;

use sha2::{Digest as _, Sha256};

use super::manifest::{self, ConfigFile, Descriptor, Document, Index, Manifest};
use super::store::{digest, Lease};
use super::{ImageError, ImageRecord, ImageStore, LayerInfo};
use crate::content::Digest;
use crate::reference::Reference;
use crate::unpack::Compression;

/// Scratch space removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The regular files of an archive, extracted, and its symlinks.
struct Extracted {
    dir: Scratch,
    links: HashMap<PathBuf, PathBuf>,
    file: PathBuf,
}

impl Extracted {
    fn invalid(&self, why: impl std::fmt::Display) -> ImageError {
        ImageError::InvalidImage(format!("{}: {why}", self.file.display()))
    }

    /// The extracted path of archive member `name`, following symlinks within the archive.
    fn member(&self, name: &str) -> Result<PathBuf, ImageError> {
        let mut rel = normalise(Path::new(name))
            .ok_or_else(|| self.invalid(format!("member {name:?} is outside the archive")))?;
        for _ in 0..16 {
            match self.links.get(&rel) {
                Some(target) => rel = target.clone(),
                None => {
                    let p = self.dir.0.join(&rel);
                    return if p.is_file() {
                        Ok(p)
                    } else {
                        Err(self.invalid(format!("member {name:?} is missing")))
                    };
                }
            }
        }
        Err(self.invalid(format!("member {name:?}: too many symlinks")))
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, ImageError> {
        let p = self.member(name)?;
        std::fs::read(&p).map_err(|e| self.invalid(format!("{name}: {e}")))
    }
}

/// `a/./b/../c` → `a/c`; `None` if it climbs out or is absolute.
fn normalise(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

fn hash_file(p: &Path) -> std::io::Result<(Digest, u64)> {
    let mut f = std::fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((
        Digest::parse(&format!("sha256:{:x}", h.finalize())).expect("a sha256 digest"),
        total,
    ))
}

/// One image found in an archive, its blobs already in the content store.
struct Found {
    names: Vec<String>,
    repo_digest: Option<String>,
    manifest_digest: String,
    manifest: Manifest,
    blobs: BTreeSet<String>,
}

impl ImageStore {
    pub(super) fn import_file(&self, file: &Path) -> Result<Vec<String>, ImageError> {
        let scratch = self.dir.join("tmp").join(format!(
            "{}-{}",
            std::process::id(),
            self.seq.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&scratch).map_err(|e| ImageError::io(scratch.display(), e))?;
        let mut x = Extracted {
            dir: Scratch(scratch),
            links: HashMap::new(),
            file: file.to_path_buf(),
        };
        let f = std::fs::File::open(file).map_err(|e| ImageError::io(file.display(), e))?;
        let mut head = [0u8; 4];
        let n = std::fs::File::open(file)
            .and_then(|mut g| g.read(&mut head))
            .unwrap_or(0);
        let reader: Box<dyn Read> = match Compression::detect(&head[..n]) {
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(f)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::new(f).map_err(|e| x.invalid(format!("zstd: {e}")))?,
            ),
            Compression::None => Box::new(f),
        };
        extract(reader, &mut x)?;

        let lease = self.new_lease()?;
        let found = if x.dir.0.join("index.json").is_file() {
            self.oci_layout(&x, &lease)?
        } else if x.dir.0.join("manifest.json").is_file() {
            self.docker_archive(&x, &lease)?
        } else {
            return Err(x.invalid(
                "neither an OCI image layout (index.json) nor a docker archive (manifest.json)",
            ));
        };
        let mut out = Vec::new();
        for image in found {
            out.extend(self.commit_import(&x, &lease, image)?);
        }
        Ok(out)
    }

    /// Stores a blob of the archive, verified against `d`.
    fn import_blob(&self, x: &Extracted, d: &Descriptor) -> Result<(), ImageError> {
        let dg = digest(&d.digest)?;
        let p = x.member(&format!("blobs/sha256/{}", dg.hex()))?;
        let f = std::fs::File::open(&p).map_err(|e| ImageError::io(p.display(), e))?;
        self.content
            .write(&dg, (d.size > 0).then_some(d.size), f)
            .map_err(ImageError::from)
            .map(|_| ())
    }

    fn oci_layout(&self, x: &Extracted, lease: &Lease) -> Result<Vec<Found>, ImageError> {
        let index: Index = serde_json::from_slice(&x.read("index.json")?)
            .map_err(|e| x.invalid(format!("index.json: {e}")))?;
        let mut out = Vec::new();
        for entry in &index.manifests {
            let ann = entry.annotations.clone().unwrap_or_default();
            let name = ann
                .get("io.containerd.image.name")
                .or_else(|| {
                    ann.get("org.opencontainers.image.ref.name")
                        .filter(|n| n.contains('/') || n.contains(':'))
                })
                .map(|n| {
                    Reference::parse(n).map_err(|e| x.invalid(format!("image name {n:?}: {e}")))
                })
                .transpose()?;
            let mut blobs = BTreeSet::new();
            let read_doc = |d: &Descriptor| -> Result<(Vec<u8>, Document), ImageError> {
                let dg = digest(&d.digest)?;
                let bytes = x.read(&format!("blobs/sha256/{}", dg.hex()))?;
                if Digest::of(&bytes) != dg {
                    return Err(ImageError::DigestMismatch {
                        digest: d.digest.clone(),
                        message: format!("{}: the blob's content differs", x.file.display()),
                    });
                }
                let doc = manifest::parse_document(&bytes).map_err(|e| x.invalid(e))?;
                Ok((bytes, doc))
            };
            blobs.insert(entry.digest.clone());
            let (manifest_digest, manifest) = match read_doc(entry)?.1 {
                Document::Manifest(m) => (entry.digest.clone(), m),
                Document::Index(idx) => {
                    let (os, arch) = manifest::host_platform();
                    let sel = manifest::select_platform(&idx).ok_or_else(|| {
                        x.invalid(format!(
                            "no image for platform {os}/{arch} in {}",
                            entry.digest
                        ))
                    })?;
                    blobs.insert(sel.digest.clone());
                    match read_doc(sel)?.1 {
                        Document::Manifest(m) => (sel.digest.clone(), m),
                        Document::Index(_) => return Err(x.invalid("nested index")),
                    }
                }
            };
            blobs.insert(manifest.config.digest.clone());
            blobs.extend(manifest.layers.iter().map(|l| l.digest.clone()));
            self.extend_lease(lease, [], blobs.iter().cloned())?;
            for d in blobs.iter() {
                let size = if *d == entry.digest { entry.size } else { 0 };
                self.import_blob(
                    x,
                    &Descriptor {
                        digest: d.clone(),
                        size,
                        ..Default::default()
                    },
                )?;
            }
            out.push(Found {
                names: name.iter().map(|r| r.to_string()).collect(),
                repo_digest: name
                    .as_ref()
                    .map(|r| format!("{}@{}", r.name(), entry.digest)),
                manifest_digest,
                manifest,
                blobs,
            });
        }
        Ok(out)
    }

    fn docker_archive(&self, x: &Extracted, lease: &Lease) -> Result<Vec<Found>, ImageError> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let entries: Vec<Entry> = serde_json::from_slice(&x.read("manifest.json")?)
            .map_err(|e| x.invalid(format!("manifest.json: {e}")))?;
        let mut out = Vec::new();
        for e in entries {
            let config = x.read(&e.config)?;
            let config_digest = Digest::of(&config);
            let mut layers = Vec::new();
            for l in &e.layers {
                let p = x.member(l)?;
                let (d, size) = hash_file(&p).map_err(|err| x.invalid(format!("{l}: {err}")))?;
                let mut head = [0u8; 4];
                let n = std::fs::File::open(&p)
                    .and_then(|mut f| f.read(&mut head))
                    .unwrap_or(0);
                let media_type = match Compression::detect(&head[..n]) {
                    Compression::Gzip => "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
                    Compression::None => manifest::DOCKER_LAYER_TAR,
                };
                layers.push((
                    p,
                    Descriptor {
                        media_type: media_type.to_string(),
                        digest: d.to_string(),
                        size,
                        ..Default::default()
                    },
                ));
            }
            let manifest = Manifest {
                schema_version: 2,
                media_type: Some(manifest::DOCKER_MANIFEST.to_string()),
                config: Descriptor {
                    media_type: manifest::DOCKER_CONFIG.to_string(),
                    digest: config_digest.to_string(),
                    size: config.len() as u64,
                    ..Default::default()
                },
                layers: layers.iter().map(|(_, d)| d.clone()).collect(),
                annotations: None,
            };
            let manifest_bytes =
                serde_json::to_vec(&manifest).map_err(|e| ImageError::io("manifest", e))?;
            let manifest_digest = Digest::of(&manifest_bytes);
            let mut blobs: BTreeSet<String> = BTreeSet::new();
            blobs.insert(manifest_digest.to_string());
            blobs.insert(config_digest.to_string());
            blobs.extend(layers.iter().map(|(_, d)| d.digest.clone()));
            self.extend_lease(lease, [], blobs.iter().cloned())?;
            self.content
                .write(&manifest_digest, None, manifest_bytes.as_slice())?;
            self.content
                .write(&config_digest, None, config.as_slice())?;
            for (p, d) in &layers {
                let f = std::fs::File::open(p).map_err(|e| ImageError::io(p.display(), e))?;
                self.content.write(&digest(&d.digest)?, Some(d.size), f)?;
            }
            let mut names = Vec::new();
            for t in e.repo_tags.unwrap_or_default() {
                let r = Reference::parse(&t)
                    .map_err(|err| x.invalid(format!("RepoTags {t:?}: {err}")))?;
                names.push(r.to_string());
            }
            out.push(Found {
                names,
                repo_digest: None,
                manifest_digest: manifest_digest.to_string(),
                manifest,
                blobs,
            });
        }
        Ok(out)
    }

    /// Unpacks the layers of an imported image and records it.
    fn commit_import(
        &self,
        x: &Extracted,
        lease: &Lease,
        found: Found,
    ) -> Result<Vec<String>, ImageError> {
        let m = &found.manifest;
        let config_digest = digest(&m.config.digest)?;
        let mut config_bytes = Vec::new();
        self.content
            .open_blob(&config_digest)?
            .read_to_end(&mut config_bytes)
            .map_err(|e| ImageError::io(format!("reading config {config_digest}"), e))?;
        let config: ConfigFile = serde_json::from_slice(&config_bytes)
            .map_err(|e| x.invalid(format!("image config {config_digest}: {e}")))?;
        if config.rootfs.diff_ids.len() != m.layers.len() {
            return Err(x.invalid(format!(
                "{} layers but the config lists {} diff ids",
                m.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let chains = manifest::chain_ids(&config.rootfs.diff_ids);
        self.extend_lease(lease, chains.iter().cloned(), [])?;
        let layers: Vec<LayerInfo> = m
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(l, diff)| LayerInfo {
                digest: l.digest.clone(),
                size: self
                    .content
                    .size(&Digest::parse(&l.digest).expect("checked"))
                    .unwrap_or(l.size),
                media_type: l.media_type.clone(),
                diff_id: diff.clone(),
            })
            .collect();
        self.unpack_layers(lease, &layers, &chains)?;
        let size = found
            .blobs
            .iter()
            .filter_map(|d| Digest::parse(d).ok())
            .filter_map(|d| self.content.size(&d).ok())
            .sum();
        let record = ImageRecord {
            id: config_digest.to_string(),
            repo_tags: found.names.clone(),
            repo_digests: found.repo_digest.into_iter().collect(),
            size,
            config: config.config.clone().unwrap_or_default(),
            pinned: false,
            manifest_digest: found.manifest_digest,
            layers,
            chain_ids: chains,
            blobs: found.blobs,
            platform: format!("{}/{}", config.os, config.architecture),
            created: config.created,
        };
        let id = record.id.clone();
        self.put_record(record)?;
        Ok(if found.names.is_empty() {
            vec![id]
        } else {
            found.names
        })
    }
}

/// Writes the archive's regular files under `x.dir` and notes its symlinks.
fn extract(reader: impl Read, x: &mut Extracted) -> Result<(), ImageError> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| x.invalid(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| x.invalid(format!("reading the archive: {e}")))?;
        let raw = entry
            .path()
            .map_err(|e| x.invalid(format!("reading the archive: {e}")))?
            .into_owned();
        let Some(rel) = normalise(&raw) else {
            return Err(x.invalid(format!("member {raw:?} would land outside the archive")));
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let dest = x.dir.0.join(&rel);
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| ImageError::io(parent.display(), e))?;
                }
                let mut f =
                    std::fs::File::create(&dest).map_err(|e| ImageError::io(dest.display(), e))?;
                std::io::copy(&mut entry, &mut f)
                    .map_err(|e| x.invalid(format!("reading {raw:?}: {e}")))?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let base = if entry.header().entry_type() == tar::EntryType::Symlink {
                    rel.parent().map(Path::to_path_buf).unwrap_or_default()
                } else {
                    PathBuf::new()
                };
                let Some(resolved) = normalise(&base.join(&target)) else {
                    return Err(x.invalid(format!(
                        "link {raw:?} → {target:?} points outside the archive"
                    )));
                };
                x.links.insert(rel, resolved);
            }
            _ => {}
        }
    }
    Ok(())
}

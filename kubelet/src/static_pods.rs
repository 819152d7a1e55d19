//! Static pods: the kubelet's file config source (upstream `pkg/kubelet/config/file.go`,
//! `file_linux.go` and `common.go`). Pods are read from `--pod-manifest-path` (a directory of
//! YAML or JSON Pod manifests, or a single file), defaulted as upstream's `applyDefaults` does
//! and handed to the pod manager as the full set of static pods whenever it changes.
//!
//! Defaulting (upstream's): the UID is a hash of the decoded manifest, the node name and the
//! file's path (so an edited manifest is a new pod, which restarts it); the name gets
//! `-<nodeName>` appended; an empty namespace becomes `default`; `spec.nodeName` is this node; a
//! NoExecute toleration for every taint is added; annotations `kubernetes.io/config.hash` (the
//! UID), `kubernetes.io/config.source` (`file`) and `kubernetes.io/config.seen` (when the pod was
//! first seen, kept across re-reads) are set.
//!
//! The directory is re-read on every inotify event (debounced; the `nix` crate's inotify, read
//! by a small blocking thread) and at least every
//! fileCheckFrequency (20 s) as a safety net, also while it does not exist (a missing directory
//! is not an error). Dotfiles and sub-directories are skipped; a file that does not parse or
//! validate is reported with its name and left out, the other files still count.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Toleration};
use k8s_openapi::jiff::Timestamp;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

/// `kubernetes.io/config.source`: where a pod came from (`file`, `api`).
pub const CONFIG_SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";
/// `kubernetes.io/config.hash`: a static pod's UID (the hash of its manifest).
pub const CONFIG_HASH_ANNOTATION: &str = "kubernetes.io/config.hash";
/// `kubernetes.io/config.seen`: when the kubelet first saw the pod.
pub const CONFIG_SEEN_ANNOTATION: &str = "kubernetes.io/config.seen";
/// `kubernetes.io/config.mirror`: on a mirror pod, the hash of the static pod it mirrors.
pub const CONFIG_MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// The config source of static pods read from files.
pub const FILE_SOURCE: &str = "file";
/// How long a burst of inotify events is gathered before the directory is re-read.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Why a manifest file was left out (upstream's messages where it has one).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: couldn't parse as pod({message}), please check config file", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: invalid pod: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

/// Whether a pod comes from a manifest file (upstream `IsStaticPod`).
pub fn is_static_pod(pod: &Pod) -> bool {
    annotation(pod, CONFIG_SOURCE_ANNOTATION) == Some(FILE_SOURCE)
}

/// Whether a pod in the API mirrors a static pod (upstream `IsMirrorPod`).
pub fn is_mirror_pod(pod: &Pod) -> bool {
    annotation(pod, CONFIG_MIRROR_ANNOTATION).is_some()
}

/// A pod's annotation `key`.
pub fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// `namespace/name`: how a static pod and its mirror pod find each other (upstream maps them by
/// full name; their UIDs differ).
pub fn full_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Decodes, defaults and validates one manifest read from `path` (upstream
/// `tryDecodeSinglePod` + `applyDefaults`). `config.seen` is left to the source.
pub fn parse_manifest(path: &Path, data: &[u8], node_name: &str) -> Result<Pod, ManifestError> {
    let parse = |message: String| ManifestError::Parse {
        path: path.to_path_buf(),
        message,
    };
    let value: serde_json::Value =
        serde_yaml::from_slice(data).map_err(|e| parse(e.to_string()))?;
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    let api_version = value
        .get("apiVersion")
        .and_then(|k| k.as_str())
        .unwrap_or("");
    if kind.is_empty() {
        return Err(parse("Object 'Kind' is missing".into()));
    }
    if kind != "Pod" || api_version != "v1" {
        return Err(ManifestError::Invalid {
            path: path.to_path_buf(),
            message: format!("expected a v1 Pod, got {api_version}/{kind}"),
        });
    }
    let mut pod: Pod = serde_json::from_value(value).map_err(|e| parse(e.to_string()))?;
    apply_defaults(&mut pod, path, node_name);
    validate(&pod).map_err(|message| ManifestError::Invalid {
        path: path.to_path_buf(),
        message,
    })?;
    Ok(pod)
}

/// The UID upstream derives for a static pod without one: a hash of the decoded pod, then
/// `host:<node>` and `file:<path>`; 128 bits in hex, the length of upstream's md5.
pub fn static_pod_uid(pod: &Pod, path: &Path, node_name: &str) -> String {
    let mut h = Sha256::new();
    // k8s-openapi serializes fields in a fixed order and maps sorted, so equal pods hash equally.
    h.update(serde_json::to_vec(pod).unwrap_or_default());
    h.update(format!("host:{node_name}"));
    h.update(format!("file:{}", path.display()));
    h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Upstream `applyDefaults` for the file source.
pub fn apply_defaults(pod: &mut Pod, path: &Path, node_name: &str) {
    let meta = &mut pod.metadata;
    if meta.uid.as_deref().unwrap_or("").is_empty() {
        let uid = static_pod_uid(pod, path, node_name);
        pod.metadata.uid = Some(uid);
    }
    let meta = &mut pod.metadata;
    let uid = meta.uid.clone().unwrap_or_default();
    meta.name = Some(format!(
        "{}-{}",
        meta.name.as_deref().unwrap_or_default(),
        node_name.to_lowercase()
    ));
    if meta.namespace.as_deref().unwrap_or("").is_empty() {
        meta.namespace = Some("default".into());
    }
    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(CONFIG_HASH_ANNOTATION.into(), uid);
    annotations.insert(CONFIG_SOURCE_ANNOTATION.into(), FILE_SOURCE.into());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node_name.to_string());
    // Static pods are not evicted for node problems: tolerate every NoExecute taint.
    let toleration = Toleration {
        operator: Some("Exists".into()),
        effect: Some("NoExecute".into()),
        ..Default::default()
    };
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    if !tolerations.contains(&toleration) {
        tolerations.push(toleration);
    }
    pod.status = Some(k8s_openapi::api::core::v1::PodStatus {
        phase: Some("Pending".into()),
        ..Default::default()
    });
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// The checks of upstream's ValidatePodCreate the kubelet cannot run without: names and the
/// containers it has to start.
fn validate(pod: &Pod) -> Result<(), String> {
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    if !is_dns1123_subdomain(name) {
        return Err(format!(
            "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        ));
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    if !is_dns1123_subdomain(ns) || ns.contains('.') {
        return Err(format!("metadata.namespace: Invalid value: {ns:?}"));
    }
    let spec = pod.spec.as_ref().ok_or("spec: Required value")?;
    if spec.containers.is_empty() {
        return Err("spec.containers: Required value".into());
    }
    let mut seen = std::collections::HashSet::new();
    for (i, c) in spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .enumerate()
    {
        if c.name.is_empty() {
            return Err(format!("spec.containers[{i}].name: Required value"));
        }
        if !seen.insert(c.name.as_str()) {
            return Err(format!(
                "spec.containers[{i}].name: Duplicate value: {:?}",
                c.name
            ));
        }
        if c.image.as_deref().unwrap_or("").is_empty() {
            return Err(format!("spec.containers[{i}].image: Required value"));
        }
    }
    Ok(())
}

/// The result of reading the manifest path once.
#[derive(Debug, Default)]
pub struct ManifestSet {
    /// Defaulted pods, in file-name order.
    pub pods: Vec<Pod>,
    /// The files left out, and why.
    pub errors: Vec<ManifestError>,
}

/// Reads `path` (a directory of manifests or one manifest file). A missing path is an empty set.
pub fn read_manifests(path: &Path, node_name: &str) -> ManifestSet {
    let mut set = ManifestSet::default();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return set,
        Err(source) => {
            set.errors.push(ManifestError::Read {
                path: path.to_path_buf(),
                source,
            });
            return set;
        }
    };
    let files = if meta.is_dir() {
        let entries = match std::fs::read_dir(path) {
            Ok(e) => e,
            Err(source) => {
                set.errors.push(ManifestError::Read {
                    path: path.to_path_buf(),
                    source,
                });
                return set;
            }
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            // Following symlinks; directories are not recursed into (upstream).
            .filter(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.is_file()))
            .map(|e| e.path())
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    for file in files {
        let result = std::fs::read(&file)
            .map_err(|source| ManifestError::Read {
                path: file.clone(),
                source,
            })
            .and_then(|data| parse_manifest(&file, &data, node_name));
        match result {
            Ok(pod) => set.pods.push(pod),
            Err(e) => set.errors.push(e),
        }
    }
    set
}

/// The static pods as last read: latest-wins for the pod manager.
pub type StaticPods = Arc<Vec<Pod>>;

/// Starts the file source for `path`: reads it now, then on changes and every `check_every`.
/// The receiver sees a new value whenever the set of pods (their UIDs) changes.
pub fn start(
    path: PathBuf,
    node_name: String,
    check_every: Duration,
) -> watch::Receiver<StaticPods> {
    let mut seen: HashMap<String, String> = HashMap::new();
    let first = read_and_report(&path, &node_name, &mut seen, &mut String::new());
    let (tx, rx) = watch::channel(Arc::new(first));
    tokio::spawn(async move {
        let mut last_errors = String::new();
        let mut tick = tokio::time::interval(check_every.max(Duration::from_secs(1)));
        tick.reset();
        let mut inotify: Option<mpsc::UnboundedReceiver<()>> = None;
        let mut watching = false;
        loop {
            if inotify.is_none() {
                inotify = watch_path(&path);
            }
            let just_watched = inotify.is_some() && !watching;
            watching = inotify.is_some();
            match inotify.as_mut() {
                // A new watch: re-read at once for what changed before it was in place.
                Some(_) if just_watched => {}
                Some(events) => {
                    tokio::select! {
                        ev = events.recv() => {
                            if ev.is_none() {
                                // The directory went away: the periodic check looks for it.
                                inotify = None;
                            }
                            tokio::time::sleep(DEBOUNCE).await;
                            if let Some(events) = inotify.as_mut() {
                                while events.try_recv().is_ok() {}
                            }
                        }
                        _ = tick.tick() => {}
                    }
                }
                None => {
                    tick.tick().await;
                }
            }
            let pods = read_and_report(&path, &node_name, &mut seen, &mut last_errors);
            let changed = {
                let cur = tx.borrow();
                uids(&cur) != uids(&pods)
            };
            if changed && tx.send(Arc::new(pods)).is_err() {
                return;
            }
        }
    });
    rx
}

fn uids(pods: &[Pod]) -> Vec<&str> {
    pods.iter()
        .map(|p| p.metadata.uid.as_deref().unwrap_or_default())
        .collect()
}

/// Reads the manifests, logs the bad ones (once per change of the error set) and stamps
/// `config.seen` with the time each UID was first seen.
fn read_and_report(
    path: &Path,
    node_name: &str,
    seen: &mut HashMap<String, String>,
    last_errors: &mut String,
) -> Vec<Pod> {
    let set = read_manifests(path, node_name);
    let errors: Vec<String> = set.errors.iter().map(|e| e.to_string()).collect();
    let joined = errors.join("\n");
    if joined != *last_errors {
        for e in &errors {
            tracing::warn!("static pod manifest left out: {e}");
        }
        *last_errors = joined;
    }
    let now = Timestamp::now().to_string();
    let mut live = HashMap::new();
    let mut pods = set.pods;
    for p in &mut pods {
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let at = seen.get(&uid).cloned().unwrap_or_else(|| now.clone());
        p.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(CONFIG_SEEN_ANNOTATION.into(), at.clone());
        live.insert(uid, at);
    }
    *seen = live;
    pods
}

/// Watches the manifest directory (or the directory of a manifest file) from a thread that
/// blocks in `read(2)` on the inotify descriptor and sends one message per batch of events. The
/// channel closes when the directory goes away; `None` while it does not exist, so the periodic
/// check keeps looking.
fn watch_path(path: &Path) -> Option<mpsc::UnboundedReceiver<()>> {
    let dir = if path.is_dir() { path } else { path.parent()? };
    let ino = Inotify::init(InitFlags::IN_CLOEXEC).ok()?;
    ino.add_watch(
        dir,
        AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF,
    )
    .ok()?;
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("static-pod-inotify".into())
        .spawn(move || loop {
            let Ok(events) = ino.read_events() else {
                return;
            };
            let gone = events.iter().any(|e| {
                e.mask.intersects(
                    AddWatchFlags::IN_DELETE_SELF
                        | AddWatchFlags::IN_MOVE_SELF
                        | AddWatchFlags::IN_IGNORED,
                )
            });
            if tx.send(()).is_err() || gone {
                return;
            }
        })
        .ok()?;
    Some(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: app
    image: busybox
"#;

    #[test]
    fn defaults_as_upstream() {
        let path = Path::new("/etc/kubernetes/manifests/web.yaml");
        let pod = parse_manifest(path, MANIFEST.as_bytes(), "Node-A").unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("web-node-a"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
        let uid = pod.metadata.uid.clone().unwrap();
        assert_eq!(uid.len(), 32);
        assert!(uid.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(annotation(&pod, CONFIG_HASH_ANNOTATION), Some(uid.as_str()));
        assert_eq!(annotation(&pod, CONFIG_SOURCE_ANNOTATION), Some("file"));
        assert!(is_static_pod(&pod) && !is_mirror_pod(&pod));
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("Node-A"));
        let tol = spec.tolerations.as_ref().unwrap();
        assert_eq!(tol.len(), 1);
        assert_eq!(tol[0].operator.as_deref(), Some("Exists"));
        assert_eq!(tol[0].effect.as_deref(), Some("NoExecute"));
        assert_eq!(
            pod.status.as_ref().unwrap().phase.as_deref(),
            Some("Pending")
        );
        assert_eq!(full_name(&pod), "default/web-node-a");
    }

    #[test]
    fn json_manifest_keeps_namespace_and_uid() {
        let json = r#"{"apiVersion":"v1","kind":"Pod",
            "metadata":{"name":"db","namespace":"kube-system","uid":"given-uid"},
            "spec":{"containers":[{"name":"c","image":"busybox"}]}}"#;
        let pod = parse_manifest(Path::new("/m/db.json"), json.as_bytes(), "n1").unwrap();
        assert_eq!(pod.metadata.namespace.as_deref(), Some("kube-system"));
        assert_eq!(pod.metadata.uid.as_deref(), Some("given-uid"));
        assert_eq!(pod.metadata.name.as_deref(), Some("db-n1"));
    }

    #[test]
    fn uid_hashes_manifest_node_and_path() {
        let p = Path::new("/m/web.yaml");
        let uid = |m: &str, node: &str, path: &Path| {
            parse_manifest(path, m.as_bytes(), node)
                .unwrap()
                .metadata
                .uid
                .unwrap()
        };
        let base = uid(MANIFEST, "n1", p);
        assert_eq!(base, uid(MANIFEST, "n1", p), "stable across reads");
        // Formatting does not matter, content does.
        let reformatted = MANIFEST.replace("labels: {app: web}", "labels:\n    app: web");
        assert_eq!(base, uid(&reformatted, "n1", p));
        assert_ne!(base, uid(&MANIFEST.replace("busybox", "nginx"), "n1", p));
        assert_ne!(base, uid(MANIFEST, "n2", p));
        assert_ne!(base, uid(MANIFEST, "n1", Path::new("/m/other.yaml")));
    }

    #[test]
    fn bad_manifests_name_the_file() {
        let p = Path::new("/m/bad.yaml");
        let cases = [
            ("{not yaml: [", "/m/bad.yaml: couldn't parse as pod("),
            ("apiVersion: v1\nmetadata: {name: x}\n", "Object 'Kind' is missing"),
            (
                "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n",
                "/m/bad.yaml: invalid pod: expected a v1 Pod, got v1/Service",
            ),
            (
                "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: []}\n",
                "invalid pod: spec.containers: Required value",
            ),
            (
                "apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\nspec: {containers: [{name: c, image: i}]}\n",
                "invalid pod: metadata.name: Invalid value",
            ),
            (
                "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: c}]}\n",
                "spec.containers[0].image: Required value",
            ),
        ];
        for (text, want) in cases {
            let err = parse_manifest(p, text.as_bytes(), "n1")
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{text:?}: got {err:?}, want {want:?}");
        }
    }

    #[test]
    fn reads_a_directory_skipping_dotfiles_dirs_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), MANIFEST).unwrap();
        std::fs::write(
            dir.path().join("b.json"),
            MANIFEST.replace("name: web", "name: api"),
        )
        .unwrap();
        std::fs::write(dir.path().join(".hidden.yaml"), MANIFEST).unwrap();
        std::fs::write(dir.path().join("broken.yaml"), "kind: [").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/c.yaml"), MANIFEST).unwrap();
        let set = read_manifests(dir.path(), "n1");
        let names: Vec<_> = set
            .pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["web-n1", "api-n1"]);
        assert_eq!(set.errors.len(), 1);
        assert!(set.errors[0].to_string().contains("broken.yaml"));

        let single = read_manifests(&dir.path().join("a.yaml"), "n1");
        assert_eq!(single.pods.len(), 1);
        let missing = read_manifests(&dir.path().join("nope"), "n1");
        assert!(missing.pods.is_empty() && missing.errors.is_empty());
    }

    #[test]
    fn seen_is_kept_per_uid() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), MANIFEST).unwrap();
        let mut seen = HashMap::new();
        let mut errs = String::new();
        let first = read_and_report(dir.path(), "n1", &mut seen, &mut errs);
        let at = annotation(&first[0], CONFIG_SEEN_ANNOTATION)
            .unwrap()
            .to_string();
        std::thread::sleep(Duration::from_millis(5));
        let again = read_and_report(dir.path(), "n1", &mut seen, &mut errs);
        assert_eq!(
            annotation(&again[0], CONFIG_SEEN_ANNOTATION),
            Some(at.as_str())
        );
    }

    #[tokio::test]
    async fn source_sees_changes_through_inotify() {
        let dir = tempfile::tempdir().unwrap();
        let mut rx = start(
            dir.path().to_path_buf(),
            "n1".into(),
            Duration::from_secs(3600),
        );
        assert!(rx.borrow().is_empty());
        std::fs::write(dir.path().join("a.yaml"), MANIFEST).unwrap();
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .expect("inotify reported the new manifest")
            .unwrap();
        assert_eq!(rx.borrow_and_update().len(), 1);
        std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .expect("inotify reported the removal")
            .unwrap();
        assert!(rx.borrow().is_empty());
    }
}

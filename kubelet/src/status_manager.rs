//! The status manager: the one writer of pod statuses to the API (upstream's status manager).
//! Pod workers hand it statuses; it keeps only the newest per pod (so an older status is never
//! sent after a newer one), skips statuses that did not change, and writes each as a merge patch
//! of `pods/<name>/status` carrying the pod's UID as a precondition. Failed writes stay pending
//! and are retried, so the API catches up once it is reachable again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::api::{Api, Patch, PatchParams};
use parking_lot::Mutex;
use tokio::sync::Notify;

#[derive(Clone)]
struct Pending {
    namespace: String,
    name: String,
    uid: String,
    /// A static pod: written to its mirror pod.
    is_static: bool,
    status: PodStatus,
}

/// The API object a static pod's status is written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// Cheap to clone; all clones feed the same writer task.
#[derive(Clone)]
pub struct StatusManager {
    inner: Arc<Inner>,
}

struct Inner {
    /// Newest status per pod UID not yet written.
    pending: Mutex<HashMap<String, Pending>>,
    /// The last status written per pod UID (to skip unchanged ones).
    written: Mutex<HashMap<String, PodStatus>>,
    /// The mirror pod of each static pod UID.
    mirrors: Mutex<HashMap<String, MirrorRef>>,
    wake: Notify,
}

impl StatusManager {
    /// Starts the writer task.
    pub fn start(client: kube::Client) -> StatusManager {
        let inner = Arc::new(Inner {
            pending: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
            mirrors: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        });
        let me = StatusManager {
            inner: inner.clone(),
        };
        tokio::spawn(async move { writer(client, inner).await });
        me
    }

    /// Records the newest status of `pod`; written soon unless it equals the last one written.
    pub fn set(&self, pod: &Pod, status: PodStatus) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if self.inner.written.lock().get(&uid) == Some(&status) {
            return;
        }
        self.inner.pending.lock().insert(
            uid.clone(),
            Pending {
                namespace: pod
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
                name: pod.metadata.name.clone().unwrap_or_default(),
                uid,
                is_static: crate::static_pods::is_static_pod(pod),
                status,
            },
        );
        self.inner.wake.notify_one();
    }

    /// Records (`Some`) or forgets (`None`) the mirror pod of the static pod `static_uid`. A new
    /// mirror gets the newest status again.
    pub fn set_mirror(&self, static_uid: &str, mirror: Option<MirrorRef>) {
        let mut mirrors = self.inner.mirrors.lock();
        let changed = match mirror {
            Some(m) => mirrors.insert(static_uid.to_string(), m.clone()) != Some(m),
            None => mirrors.remove(static_uid).is_some(),
        };
        drop(mirrors);
        if changed {
            if let Some(status) = self.inner.written.lock().remove(static_uid) {
                self.inner
                    .pending
                    .lock()
                    .entry(static_uid.to_string())
                    .or_insert_with(|| Pending {
                        namespace: String::new(),
                        name: String::new(),
                        uid: static_uid.to_string(),
                        is_static: true,
                        status,
                    });
            }
            self.inner.wake.notify_one();
        }
    }

    /// Forgets a pod (after its API object is gone).
    pub fn forget(&self, uid: &str) {
        self.inner.pending.lock().remove(uid);
        self.inner.written.lock().remove(uid);
    }
}

async fn writer(client: kube::Client, inner: Arc<Inner>) {
    loop {
        let batch: Vec<Pending> = inner.pending.lock().drain().map(|(_, p)| p).collect();
        let mut failed = false;
        for p in batch {
            let (namespace, name, target_uid) = if p.is_static {
                match inner.mirrors.lock().get(&p.uid) {
                    Some(m) => (m.namespace.clone(), m.name.clone(), m.uid.clone()),
                    None => {
                        // No mirror yet: wait for set_mirror.
                        inner.pending.lock().entry(p.uid.clone()).or_insert(p);
                        continue;
                    }
                }
            } else {
                (p.namespace.clone(), p.name.clone(), p.uid.clone())
            };
            let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
            let body = serde_json::json!({
                "metadata": { "uid": target_uid },
                "status": p.status,
            });
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
                .await
            {
                Ok(_) => {
                    inner.written.lock().insert(p.uid.clone(), p.status);
                }
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                    // The pod is gone (or was replaced): nothing to report any more. A static
                    // pod's mirror is re-created: its status waits for the new one.
                    if p.is_static {
                        inner.pending.lock().entry(p.uid.clone()).or_insert(p);
                    }
                }
                Err(e) => {
                    tracing::warn!("writing the status of pod {namespace}/{name}: {e}");
                    failed = true;
                    // Keep it unless a newer status arrived meanwhile.
                    inner.pending.lock().entry(p.uid.clone()).or_insert(p);
                }
            }
        }
        if failed {
            tokio::time::sleep(Duration::from_secs(1)).await;
        } else {
            inner.wake.notified().await;
        }
    }
}

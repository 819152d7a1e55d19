//! The kubelet's cache of the API objects pods read: ConfigMaps and Secrets (upstream's
//! watch-based configmap/secret managers, `pkg/kubelet/util/manager/watch_based_manager.go`),
//! Services (upstream's service informer, for the service-link environment variables), and the
//! PersistentVolumeClaims and PersistentVolumes of claim volumes (upstream's volume manager reads
//! them from the API).
//!
//! As upstream, each ConfigMap and Secret a pod references gets a watch of its own (a
//! kube-runtime reflector on `metadata.name=<name>` in its namespace, with re-list on expiry and
//! back-off on errors), registered when a worker of a pod that references it first syncs: the
//! Node authorizer lets a kubelet list and watch exactly those objects and nothing else. Services
//! are one cluster-wide reflector (nodes may read them all). Claims and their volumes are read
//! with a GET at each sync of a pod that uses them (a node may only get them, one at a time).
//! Pod workers read everything through [`CacheLookup`] without an API call. Every change to a
//! watched ConfigMap or Secret is reported on a channel as an [`ObjectKey`]; the pod manager wakes
//! the workers of the pods that reference it ([`references`]), whose next sync re-projects their
//! volumes — a `kubectl apply` reaches the files in a running container within moments.
//!
//! Deviation: a watch stays registered after the last pod that referenced it is gone (upstream
//! counts references and stops it); a node keeps one watch per distinct object its pods ever
//! used.
//!
//! Before an object's first list completes, a lookup waits briefly ([`ObjectCache::wait_synced`])
//! and then fails with upstream's message, so a pod is not started with a wrong "not found". As
//! upstream, only pods from the API wait for the Services to be listed; static pods go ahead
//! (they must run while the API is unreachable).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service,
};
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use tokio::sync::mpsc;

use crate::env::ObjectLookup;

/// The kinds the cache holds (PersistentVolumes are cluster-scoped: empty namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    ConfigMap,
    Secret,
    Service,
    PersistentVolumeClaim,
    PersistentVolume,
}

/// One changed object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    pub kind: ObjectKind,
    pub namespace: String,
    pub name: String,
}

/// What a reflector of the cache can hold.
pub trait Cached:
    Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> Cached for K where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// The per-object stores of one kind, by (namespace, name).
type Watched<K> = Arc<Mutex<HashMap<(String, String), Store<K>>>>;
/// Objects read with a GET at a pod's sync, by (namespace, name): `None` when not found.
type Fetched<K> = Arc<Mutex<HashMap<(String, String), Option<K>>>>;

/// Cheap to clone; all clones read the same stores.
#[derive(Clone)]
pub struct ObjectCache {
    client: kube::Client,
    changes: mpsc::UnboundedSender<ObjectKey>,
    config_maps: Watched<ConfigMap>,
    secrets: Watched<Secret>,
    services: Store<Service>,
    claims: Fetched<PersistentVolumeClaim>,
    volumes: Fetched<PersistentVolume>,
}

impl ObjectCache {
    /// Starts the Service reflector; the per-object watches start as pods reference objects.
    /// Changes arrive on the receiver.
    pub fn start(client: kube::Client) -> (ObjectCache, mpsc::UnboundedReceiver<ObjectKey>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let cache = ObjectCache {
            services: spawn_reflector(
                Api::all(client.clone()),
                watcher::Config::default(),
                ObjectKind::Service,
                &tx,
            ),
            client,
            changes: tx,
            config_maps: Default::default(),
            secrets: Default::default(),
            claims: Default::default(),
            volumes: Default::default(),
        };
        (cache, rx)
    }

    /// The store of the object `(ns, name)` of `kind`, its watch started when it has none.
    fn watched<K>(&self, map: &Watched<K>, kind: ObjectKind, ns: &str, name: &str) -> Store<K>
    where
        K: Cached + Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    {
        let mut map = map.lock().unwrap();
        map.entry((ns.to_string(), name.to_string()))
            .or_insert_with(|| {
                spawn_reflector(
                    Api::namespaced(self.client.clone(), ns),
                    watcher::Config::default().fields(&format!("metadata.name={name}")),
                    kind,
                    &self.changes,
                )
            })
            .clone()
    }

    /// Registers the watches of the objects `pod` references and reads its claims and their
    /// volumes, then waits up to `timeout` for what it reads to be listed once (upstream polls
    /// for a second before failing a lookup on an unsynced cache).
    pub async fn wait_synced(&self, pod: &Pod, timeout: Duration) {
        let needs_services = !crate::static_pods::is_static_pod(pod);
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut config_maps = Vec::new();
        let mut secrets = Vec::new();
        let mut claims = Vec::new();
        for key in referenced(pod) {
            match key.kind {
                ObjectKind::ConfigMap => {
                    config_maps.push(self.watched(&self.config_maps, key.kind, ns, &key.name))
                }
                ObjectKind::Secret => {
                    secrets.push(self.watched(&self.secrets, key.kind, ns, &key.name))
                }
                ObjectKind::PersistentVolumeClaim => claims.push(key.name),
                _ => {}
            }
        }
        let wait = async {
            for s in &config_maps {
                let _ = s.wait_until_ready().await;
            }
            for s in &secrets {
                let _ = s.wait_until_ready().await;
            }
            for c in &claims {
                self.fetch_claim(ns, c).await;
            }
            if needs_services {
                let _ = self.services.wait_until_ready().await;
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
    }

    /// GETs a claim and, when it is bound, its volume, into the fetched maps (left as they were
    /// when the API cannot be reached).
    async fn fetch_claim(&self, ns: &str, name: &str) {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        let Ok(claim) = claims.get_opt(name).await else {
            return;
        };
        let volume = claim
            .as_ref()
            .and_then(|c| c.spec.as_ref())
            .and_then(|s| s.volume_name.clone())
            .filter(|v| !v.is_empty());
        self.claims
            .lock()
            .unwrap()
            .insert((ns.to_string(), name.to_string()), claim);
        if let Some(v) = volume {
            let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
            if let Ok(pv) = volumes.get_opt(&v).await {
                self.volumes.lock().unwrap().insert((String::new(), v), pv);
            }
        }
    }

    /// The lookup a worker of `pod` uses.
    pub fn lookup(&self, pod: &Pod) -> CacheLookup {
        CacheLookup {
            cache: self.clone(),
            static_pod: crate::static_pods::is_static_pod(pod),
        }
    }
}

fn synced<K>(store: &Store<K>) -> bool
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}

fn spawn_reflector<K>(
    api: Api<K>,
    config: watcher::Config,
    kind: ObjectKind,
    tx: &mpsc::UnboundedSender<ObjectKey>,
) -> Store<K>
where
    K: Cached,
{
    let (reader, writer) = reflector::store();
    let tx = tx.clone();
    let stream = reflector::reflector(writer, watcher(api, config)).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            let obj = match ev {
                Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o))
                | Ok(watcher::Event::InitApply(o)) => o,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!("watching {kind:?}s for the object cache: {e}");
                    continue;
                }
            };
            if kind == ObjectKind::Service {
                // Service variables are fixed when a container starts (upstream): nothing to
                // wake.
                continue;
            }
            let meta = obj.meta();
            let key = ObjectKey {
                kind,
                namespace: meta.namespace.clone().unwrap_or_default(),
                name: meta.name.clone().unwrap_or_default(),
            };
            if tx.send(key).is_err() {
                return;
            }
        }
    });
    reader
}

/// [`ObjectLookup`] over the cache for one pod's worker (a cheap clone of the stores' handles).
pub struct CacheLookup {
    cache: ObjectCache,
    static_pod: bool,
}

fn not_synced(what: &str) -> String {
    format!("failed to sync {what} cache: timed out waiting for the condition")
}

fn get<K>(map: &Watched<K>, what: &str, ns: &str, name: &str) -> Result<Option<K>, String>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let store = map
        .lock()
        .unwrap()
        .get(&(ns.to_string(), name.to_string()))
        .cloned();
    let Some(store) = store.filter(synced) else {
        return Err(not_synced(what));
    };
    Ok(store
        .get(&ObjectRef::new(name).within(ns))
        .map(|o| o.as_ref().clone()))
}

fn fetched<K: Clone>(
    map: &Fetched<K>,
    what: &str,
    ns: &str,
    name: &str,
) -> Result<Option<K>, String> {
    map.lock()
        .unwrap()
        .get(&(ns.to_string(), name.to_string()))
        .cloned()
        .ok_or_else(|| not_synced(what))
}

impl ObjectLookup for CacheLookup {
    fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, String> {
        get(&self.cache.config_maps, "configmap", ns, name)
    }

    fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, String> {
        get(&self.cache.secrets, "secret", ns, name)
    }

    fn persistent_volume_claim(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<PersistentVolumeClaim>, String> {
        fetched(&self.cache.claims, "persistentvolumeclaim", ns, name)
    }

    fn persistent_volume(&self, name: &str) -> Result<Option<PersistentVolume>, String> {
        fetched(&self.cache.volumes, "persistentvolume", "", name)
    }

    fn services(&self) -> Result<Vec<Service>, String> {
        if !self.static_pod && !synced(&self.cache.services) {
            return Err(
                "services have not yet been read at least once, cannot construct envvars".into(),
            );
        }
        Ok(self
            .cache
            .services
            .state()
            .iter()
            .map(|s| s.as_ref().clone())
            .collect())
    }
}

/// Whether `pod` reads the ConfigMap, Secret or PersistentVolumeClaim `key` (volumes, projected
/// sources, env, envFrom, image pull secrets).
pub fn references(pod: &Pod, key: &ObjectKey) -> bool {
    pod.metadata.namespace.as_deref().unwrap_or("default") == key.namespace
        && referenced(pod).contains(key)
}

/// The ConfigMaps, Secrets and PersistentVolumeClaims `pod` reads, in its namespace.
pub fn referenced(pod: &Pod) -> Vec<ObjectKey> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut out = Vec::new();
    let Some(spec) = &pod.spec else {
        return out;
    };
    let mut add = |kind: ObjectKind, name: &str| {
        let key = ObjectKey {
            kind,
            namespace: ns.to_string(),
            name: name.to_string(),
        };
        if !name.is_empty() && !out.contains(&key) {
            out.push(key);
        }
    };
    use ObjectKind::*;
    for v in spec.volumes.iter().flatten() {
        if let Some(c) = &v.persistent_volume_claim {
            add(PersistentVolumeClaim, &c.claim_name);
        }
        if let Some(c) = &v.config_map {
            add(ConfigMap, &c.name);
        }
        if let Some(s) = &v.secret {
            add(Secret, s.secret_name.as_deref().unwrap_or_default());
        }
        for p in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(c) = &p.config_map {
                add(ConfigMap, &c.name);
            }
            if let Some(s) = &p.secret {
                add(Secret, &s.name);
            }
        }
    }
    for s in spec.image_pull_secrets.iter().flatten() {
        add(Secret, &s.name);
    }
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        for f in c.env_from.iter().flatten() {
            if let Some(r) = &f.config_map_ref {
                add(ConfigMap, &r.name);
            }
            if let Some(r) = &f.secret_ref {
                add(Secret, &r.name);
            }
        }
        for e in c.env.iter().flatten() {
            if let Some(from) = &e.value_from {
                if let Some(r) = &from.config_map_key_ref {
                    add(ConfigMap, &r.name);
                }
                if let Some(r) = &from.secret_key_ref {
                    add(Secret, &r.name);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn key(kind: ObjectKind, ns: &str, name: &str) -> ObjectKey {
        ObjectKey {
            kind,
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn finds_every_kind_of_reference() {
        let p = pod(r#"
metadata: {name: p, namespace: apps}
spec:
  imagePullSecrets: [{name: regcred}]
  volumes:
  - {name: a, configMap: {name: cm-vol}}
  - {name: b, secret: {secretName: sec-vol}}
  - name: c
    projected:
      sources:
      - configMap: {name: cm-proj}
      - secret: {name: sec-proj}
  initContainers:
  - name: i
    envFrom: [{configMapRef: {name: cm-from}}]
  containers:
  - name: c
    env:
    - name: X
      valueFrom: {secretKeyRef: {name: sec-env, key: k}}
    - name: Y
      value: plain
"#);
        use ObjectKind::*;
        for (kind, name) in [
            (ConfigMap, "cm-vol"),
            (Secret, "sec-vol"),
            (ConfigMap, "cm-proj"),
            (Secret, "sec-proj"),
            (ConfigMap, "cm-from"),
            (Secret, "sec-env"),
            (Secret, "regcred"),
        ] {
            assert!(references(&p, &key(kind, "apps", name)), "{kind:?} {name}");
        }
        // Same name, other kind or namespace: not referenced.
        assert!(!references(&p, &key(Secret, "apps", "cm-vol")));
        assert!(!references(&p, &key(ConfigMap, "other", "cm-vol")));
        assert!(!references(&p, &key(ConfigMap, "apps", "unrelated")));
        assert!(!references(&p, &key(Service, "apps", "cm-vol")));
        let with_claim = pod(r#"
metadata: {name: p, namespace: apps}
spec:
  volumes: [{name: d, persistentVolumeClaim: {claimName: data}}]
  containers: [{name: c}]
"#);
        assert!(references(
            &with_claim,
            &key(PersistentVolumeClaim, "apps", "data")
        ));
        assert!(!references(
            &with_claim,
            &key(PersistentVolumeClaim, "apps", "other")
        ));
    }
}

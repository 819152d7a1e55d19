//! The kubelet's cache of the API objects pods read: ConfigMaps and Secrets (upstream's
//! watch-based configmap/secret managers, `pkg/kubelet/util/manager/watch_based_manager.go`),
//! Services (upstream's service informer, for the service-link environment variables), and the
//! PersistentVolumeClaims and PersistentVolumes of claim volumes (upstream's volume manager reads
//! them from the API).
//!
//! Each kind is one kube-runtime reflector (a watch with re-list on expiry and back-off on
//! errors) feeding a [`Store`]; pod workers read it through [`CacheLookup`] without any API call,
//! so a sync costs no LIST any more. Every change to a ConfigMap or Secret is reported on a
//! channel as an [`ObjectKey`]; the pod manager wakes the workers of the pods that reference it
//! ([`references`]), whose next sync re-projects their volumes — a `kubectl apply` reaches the
//! files in a running container within moments rather than at the next resync.
//!
//! Deviation: upstream watches only the objects registered pods reference (one watch per object,
//! and the node authorizer forbids the rest); this cache watches each kind in all namespaces,
//! which is simpler and fine for a lab-sized cluster.
//!
//! Before a reflector's first list completes, a lookup waits briefly ([`ObjectCache::wait_synced`])
//! and then fails with upstream's message, so a pod is not started with a wrong "not found". As
//! upstream, only pods from the API wait for the Services to be listed; static pods go ahead
//! (they must run while the API is unreachable).

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

/// Cheap to clone; all clones read the same stores.
#[derive(Clone)]
pub struct ObjectCache {
    config_maps: Store<ConfigMap>,
    secrets: Store<Secret>,
    services: Store<Service>,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
}

impl ObjectCache {
    /// Starts one reflector per kind; changes arrive on the receiver.
    pub fn start(client: kube::Client) -> (ObjectCache, mpsc::UnboundedReceiver<ObjectKey>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let cache = ObjectCache {
            config_maps: spawn_reflector(Api::all(client.clone()), ObjectKind::ConfigMap, &tx),
            secrets: spawn_reflector(Api::all(client.clone()), ObjectKind::Secret, &tx),
            services: spawn_reflector(Api::all(client.clone()), ObjectKind::Service, &tx),
            claims: spawn_reflector(
                Api::all(client.clone()),
                ObjectKind::PersistentVolumeClaim,
                &tx,
            ),
            volumes: spawn_reflector(Api::all(client), ObjectKind::PersistentVolume, &tx),
        };
        (cache, rx)
    }

    /// Waits up to `timeout` for the kinds `pod` reads to be listed once (upstream polls for a
    /// second before failing a lookup on an unsynced cache).
    pub async fn wait_synced(&self, pod: &Pod, timeout: Duration) {
        let needs_services = !crate::static_pods::is_static_pod(pod);
        let needs_claims = pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .any(|v| v.persistent_volume_claim.is_some());
        let wait = async {
            let _ = self.config_maps.wait_until_ready().await;
            let _ = self.secrets.wait_until_ready().await;
            if needs_claims {
                let _ = self.claims.wait_until_ready().await;
                let _ = self.volumes.wait_until_ready().await;
            }
            if needs_services {
                let _ = self.services.wait_until_ready().await;
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
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
    kind: ObjectKind,
    tx: &mpsc::UnboundedSender<ObjectKey>,
) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let tx = tx.clone();
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
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
            if matches!(kind, ObjectKind::Service | ObjectKind::PersistentVolume) {
                // Service variables are fixed when a container starts (upstream), and a PV
                // matters through its claim: nothing to wake.
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

fn get<K>(store: &Store<K>, what: &str, ns: &str, name: &str) -> Result<Option<K>, String>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    if !synced(store) {
        return Err(format!(
            "failed to sync {what} cache: timed out waiting for the condition"
        ));
    }
    let key = if ns.is_empty() {
        ObjectRef::new(name)
    } else {
        ObjectRef::new(name).within(ns)
    };
    Ok(store.get(&key).map(|o| o.as_ref().clone()))
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
        get(&self.cache.claims, "persistentvolumeclaim", ns, name)
    }

    fn persistent_volume(&self, name: &str) -> Result<Option<PersistentVolume>, String> {
        get(&self.cache.volumes, "persistentvolume", "", name)
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
    if pod.metadata.namespace.as_deref().unwrap_or("default") != key.namespace {
        return false;
    }
    let Some(spec) = &pod.spec else {
        return false;
    };
    let name = key.name.as_str();
    if key.kind == ObjectKind::PersistentVolumeClaim {
        // A claim that turns Bound lets a waiting pod mount it.
        return spec.volumes.iter().flatten().any(|v| {
            v.persistent_volume_claim
                .as_ref()
                .is_some_and(|c| c.claim_name == name)
        });
    }
    let cm = |n: &str| key.kind == ObjectKind::ConfigMap && n == name;
    let secret = |n: &str| key.kind == ObjectKind::Secret && n == name;
    for v in spec.volumes.iter().flatten() {
        if v.config_map.as_ref().is_some_and(|c| cm(&c.name))
            || v.secret
                .as_ref()
                .is_some_and(|s| secret(s.secret_name.as_deref().unwrap_or_default()))
        {
            return true;
        }
        for p in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if p.config_map.as_ref().is_some_and(|c| cm(&c.name))
                || p.secret.as_ref().is_some_and(|s| secret(&s.name))
            {
                return true;
            }
        }
    }
    if spec
        .image_pull_secrets
        .iter()
        .flatten()
        .any(|s| secret(&s.name))
    {
        return true;
    }
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| {
            c.env_from.iter().flatten().any(|f| {
                f.config_map_ref.as_ref().is_some_and(|r| cm(&r.name))
                    || f.secret_ref.as_ref().is_some_and(|r| secret(&r.name))
            }) || c.env.iter().flatten().any(|e| {
                let Some(from) = &e.value_from else {
                    return false;
                };
                from.config_map_key_ref
                    .as_ref()
                    .is_some_and(|r| cm(&r.name))
                    || from
                        .secret_key_ref
                        .as_ref()
                        .is_some_and(|r| secret(&r.name))
            })
        })
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

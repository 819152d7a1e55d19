//! Shared informers: client-go's `SharedIndexInformer` and `SharedInformerFactory` on kube-runtime's
//! `watcher`.
//!
//! An [`Informer`] lists and watches one resource, keeps every object in a local store keyed as
//! client-go keys them (`namespace/name`, or `name` for cluster-scoped objects), and calls its
//! [`EventHandler`]s with add, update (old and new) and delete after the store has changed, as
//! client-go's `HandleDeltas` does. After a re-list (a watch that expired), objects that vanished
//! meanwhile are delivered as deletes, so a handler never misses one. Handlers run on the
//! informer's task and must only record (typically: queue a key); a handler added late is first
//! told about every object already in the store.
//!
//! [`InformerFactory`] hands out one informer per resource type, so the controllers of one
//! process share a single watch of pods (upstream's `SharedInformerFactory`).

use std::any::{Any, TypeId};
use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Resource;
use parking_lot::{Mutex, RwLock};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// What a watched resource needs to be.
pub trait Object:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static
{
}
impl<K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static>
    Object for K
{
}

/// Reacts to changes of the store. Every method defaults to doing nothing.
pub trait EventHandler<K>: Send + Sync {
    fn on_add(&self, _obj: &Arc<K>) {}
    fn on_update(&self, _old: &Arc<K>, _new: &Arc<K>) {}
    fn on_delete(&self, _obj: &Arc<K>) {}
}

/// A handler closure for one object.
pub type ObjectFn<K> = Box<dyn Fn(&Arc<K>) + Send + Sync>;
/// A handler closure for an update (old, new).
pub type UpdateFn<K> = Box<dyn Fn(&Arc<K>, &Arc<K>) + Send + Sync>;

/// An [`EventHandler`] from closures (client-go's `ResourceEventHandlerFuncs`).
pub struct HandlerFns<K> {
    pub add: Option<ObjectFn<K>>,
    pub update: Option<UpdateFn<K>>,
    pub delete: Option<ObjectFn<K>>,
}

impl<K> Default for HandlerFns<K> {
    fn default() -> Self {
        HandlerFns {
            add: None,
            update: None,
            delete: None,
        }
    }
}

impl<K: Send + Sync> EventHandler<K> for HandlerFns<K> {
    fn on_add(&self, obj: &Arc<K>) {
        if let Some(f) = &self.add {
            f(obj)
        }
    }
    fn on_update(&self, old: &Arc<K>, new: &Arc<K>) {
        if let Some(f) = &self.update {
            f(old, new)
        }
    }
    fn on_delete(&self, obj: &Arc<K>) {
        if let Some(f) = &self.delete {
            f(obj)
        }
    }
}

/// client-go's `MetaNamespaceKeyFunc`: `namespace/name`, or `name` without a namespace.
pub fn key_of<K: Resource>(obj: &K) -> String {
    let meta = obj.meta();
    let name = meta.name.as_deref().unwrap_or_default();
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    }
}

/// The inverse of [`key_of`]: `(namespace, name)`, the namespace empty for cluster-scoped keys.
pub fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

/// The store and the handlers, apart from the watch that feeds them.
struct Cache<K> {
    store: RwLock<HashMap<String, Arc<K>>>,
    handlers: Mutex<Vec<Arc<dyn EventHandler<K>>>>,
    synced: watch::Sender<bool>,
}

struct Inner<K> {
    api: Api<K>,
    config: watcher::Config,
    cache: Cache<K>,
    started: AtomicBool,
}

/// A shared informer for resource `K`; cheap to clone (all clones are one informer).
pub struct Informer<K: Object> {
    inner: Arc<Inner<K>>,
}

impl<K: Object> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Informer {
            inner: self.inner.clone(),
        }
    }
}

impl<K: Object> Informer<K> {
    /// An informer over `api` (not started yet: add handlers, then [`Informer::start`]).
    pub fn new(api: Api<K>, config: watcher::Config) -> Self {
        Informer {
            inner: Arc::new(Inner {
                api,
                config,
                cache: Cache::new(),
                started: AtomicBool::new(false),
            }),
        }
    }

    /// Adds a handler; it is first told about every object already in the store.
    pub fn add_handler(&self, handler: impl EventHandler<K> + 'static) {
        let handler: Arc<dyn EventHandler<K>> = Arc::new(handler);
        // Hold the handler list while replaying so that no event slips between replay and
        // registration (the informer task takes the same lock to dispatch).
        let mut handlers = self.inner.cache.handlers.lock();
        for obj in self.list() {
            handler.on_add(&obj);
        }
        handlers.push(handler);
    }

    /// Starts the list and watch on a task of its own (once; later calls do nothing). The task
    /// ends when the last clone of the informer is dropped.
    pub fn start(&self) {
        if self.inner.started.swap(true, Ordering::SeqCst) {
            return;
        }
        tokio::spawn(run(
            Arc::downgrade(&self.inner),
            self.inner.api.clone(),
            self.inner.config.clone(),
        ));
    }

    /// Whether the first list has been delivered (client-go's `HasSynced`).
    pub fn has_synced(&self) -> bool {
        *self.inner.cache.synced.borrow()
    }

    /// Waits for the first list.
    pub async fn wait_synced(&self) {
        let mut rx = self.inner.cache.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// The object under `key` ([`key_of`]).
    pub fn get_by_key(&self, key: &str) -> Option<Arc<K>> {
        self.inner.cache.store.read().get(key).cloned()
    }

    /// The object `name` in `namespace` (empty for cluster-scoped objects).
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        if namespace.is_empty() {
            self.get_by_key(name)
        } else {
            self.get_by_key(&format!("{namespace}/{name}"))
        }
    }

    /// Every object in the store.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.inner.cache.store.read().values().cloned().collect()
    }

    /// The objects of one namespace.
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.inner
            .cache
            .store
            .read()
            .values()
            .filter(|o| o.meta().namespace.as_deref() == Some(namespace))
            .cloned()
            .collect()
    }

    /// The objects `filter` keeps.
    pub fn list_filtered(&self, filter: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        self.inner
            .cache
            .store
            .read()
            .values()
            .filter(|o| filter(o))
            .cloned()
            .collect()
    }

    /// How many objects the store holds.
    pub fn len(&self) -> usize {
        self.inner.cache.store.read().len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Object> Cache<K> {
    fn new() -> Self {
        Cache {
            store: RwLock::new(HashMap::new()),
            handlers: Mutex::new(Vec::new()),
            synced: watch::channel(false).0,
        }
    }

    /// Applies one watcher event; `listing` tracks the keys of a (re-)list in progress.
    fn apply(&self, event: Event<K>, listing: &mut Option<HashSet<String>>) {
        match event {
            Event::Init => *listing = Some(HashSet::new()),
            Event::InitApply(obj) => {
                let key = self.upsert(obj);
                if let Some(seen) = listing.as_mut() {
                    seen.insert(key);
                }
            }
            Event::InitDone => {
                if let Some(seen) = listing.take() {
                    let gone: Vec<String> = self
                        .store
                        .read()
                        .keys()
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    for key in gone {
                        self.remove(&key, None);
                    }
                }
                self.synced.send_replace(true);
            }
            Event::Apply(obj) => {
                self.upsert(obj);
            }
            Event::Delete(obj) => {
                let key = key_of(&obj);
                self.remove(&key, Some(obj));
            }
        }
    }

    /// Stores `obj` and tells the handlers (add, or update when the resourceVersion changed).
    fn upsert(&self, obj: K) -> String {
        let key = key_of(&obj);
        let new = Arc::new(obj);
        let old = self.store.write().insert(key.clone(), new.clone());
        let handlers = self.handlers.lock();
        match old {
            None => handlers.iter().for_each(|h| h.on_add(&new)),
            Some(old) if old.meta().resource_version != new.meta().resource_version => {
                handlers.iter().for_each(|h| h.on_update(&old, &new))
            }
            Some(_) => {}
        }
        key
    }

    /// Removes `key` and tells the handlers, with `last` as the final state when known.
    fn remove(&self, key: &str, last: Option<K>) {
        let old = self.store.write().remove(key);
        let Some(gone) = last.map(Arc::new).or(old) else {
            return;
        };
        self.handlers.lock().iter().for_each(|h| h.on_delete(&gone));
    }
}

async fn run<K: Object>(weak: Weak<Inner<K>>, api: Api<K>, config: watcher::Config) {
    let stream = watcher::watcher(api, config).default_backoff();
    futures::pin_mut!(stream);
    // Keys seen during a (re-)list; the ones missing at its end were deleted meanwhile.
    let mut listing: Option<HashSet<String>> = None;
    while let Some(event) = stream.next().await {
        let Some(inner) = weak.upgrade() else { return };
        match event {
            Ok(event) => inner.cache.apply(event, &mut listing),
            Err(e) => tracing::warn!("watching {}: {e}", K::plural(&())),
        }
    }
}

trait Startable: Send + Sync {
    fn start(&self);
    fn has_synced(&self) -> bool;
    fn as_any(&self) -> &dyn Any;
}

impl<K: Object> Startable for Informer<K> {
    fn start(&self) {
        Informer::start(self)
    }
    fn has_synced(&self) -> bool {
        Informer::has_synced(self)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// One shared, cluster-wide informer per resource type (upstream's `SharedInformerFactory`).
#[derive(Clone)]
pub struct InformerFactory {
    client: kube::Client,
    informers: Arc<Mutex<HashMap<TypeId, Box<dyn Startable>>>>,
}

impl InformerFactory {
    pub fn new(client: kube::Client) -> Self {
        InformerFactory {
            client,
            informers: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The client the informers watch with.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// The informer for `K` over all namespaces, created on first use (not started: see
    /// [`InformerFactory::start`]).
    pub fn informer<K: Object>(&self) -> Informer<K> {
        let mut map = self.informers.lock();
        let entry = map.entry(TypeId::of::<K>()).or_insert_with(|| {
            Box::new(Informer::<K>::new(
                Api::all(self.client.clone()),
                watcher::Config::default(),
            ))
        });
        entry
            .as_any()
            .downcast_ref::<Informer<K>>()
            .expect("one informer type per TypeId")
            .clone()
    }

    /// Starts every informer created so far (ones created later are started by calling this
    /// again, or their own `start`).
    pub fn start(&self) {
        for i in self.informers.lock().values() {
            i.start();
        }
    }

    /// Waits until every informer created so far has synced.
    pub async fn wait_synced(&self) {
        loop {
            if self.informers.lock().values().all(|i| i.has_synced()) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMap, Node};

    fn cm(ns: &str, name: &str) -> ConfigMap {
        let mut c = ConfigMap::default();
        c.metadata.namespace = Some(ns.into());
        c.metadata.name = Some(name.into());
        c
    }

    #[test]
    fn keys_are_client_gos() {
        assert_eq!(key_of(&cm("ns1", "a")), "ns1/a");
        let mut n = Node::default();
        n.metadata.name = Some("node-1".into());
        assert_eq!(key_of(&n), "node-1");
        assert_eq!(split_key("ns1/a"), ("ns1", "a"));
        assert_eq!(split_key("node-1"), ("", "node-1"));
    }

    type Log = Arc<Mutex<Vec<String>>>;

    struct Recorder(Log);

    impl EventHandler<ConfigMap> for Recorder {
        fn on_add(&self, o: &Arc<ConfigMap>) {
            self.0.lock().push(format!("add {}", key_of(o.as_ref())));
        }
        fn on_update(&self, _: &Arc<ConfigMap>, n: &Arc<ConfigMap>) {
            self.0.lock().push(format!("update {}", key_of(n.as_ref())));
        }
        fn on_delete(&self, o: &Arc<ConfigMap>) {
            self.0.lock().push(format!("delete {}", key_of(o.as_ref())));
        }
    }

    fn rv(mut c: ConfigMap, rv: &str) -> ConfigMap {
        c.metadata.resource_version = Some(rv.into());
        c
    }

    #[test]
    fn handlers_see_adds_updates_and_deletes_including_ones_missed_across_a_relist() {
        let cache = Cache::<ConfigMap>::new();
        let log: Log = Default::default();
        cache.handlers.lock().push(Arc::new(Recorder(log.clone())));
        let mut listing = None;
        for e in [
            Event::Init,
            Event::InitApply(rv(cm("a", "x"), "1")),
            Event::InitApply(rv(cm("a", "y"), "2")),
            Event::InitDone,
        ] {
            cache.apply(e, &mut listing);
        }
        assert!(*cache.synced.borrow());
        cache.apply(Event::Apply(rv(cm("a", "x"), "3")), &mut listing);
        cache.apply(Event::Apply(rv(cm("a", "x"), "3")), &mut listing);
        cache.apply(Event::Delete(rv(cm("a", "x"), "4")), &mut listing);
        // The watch expired; the re-list no longer has y (deleted meanwhile) but has z.
        for e in [
            Event::Init,
            Event::InitApply(rv(cm("a", "z"), "7")),
            Event::InitDone,
        ] {
            cache.apply(e, &mut listing);
        }
        assert_eq!(
            *log.lock(),
            [
                "add a/x",
                "add a/y",
                "update a/x",
                "delete a/x",
                "add a/z",
                "delete a/y"
            ]
        );
        assert_eq!(cache.store.read().len(), 1);
    }
}

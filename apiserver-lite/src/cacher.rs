//! The watch cache (upstream's `Cacher` + `watchCache`): one per storage prefix, it lists the
//! store once, then follows the store's watch, keeping every current object in memory (decoded
//! and already serialized) and a window of recent events. Lists and watches are served from it
//! without touching SQLite.
//!
//! As upstream: a watch from a revision older than the window fails with 410 Expired; a watch
//! from a revision the cache has not reached waits up to 3 s for it; every watcher has a bounded
//! buffer, and a watcher whose buffer is full is closed (its client re-lists) rather than ever
//! blocking the dispatcher or the other watchers. A filtered watcher sees ADDED when an object
//! starts to match its selector and DELETED when it stops matching.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use parking_lot::RwLock;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::resources::ResourceInfo;
use crate::selectors::{field_set, FieldSet};
use crate::storage::{EventKind, KeyValue, Store, StoreError, WatchItem};

/// Events kept for watchers that resume from a revision.
pub const WINDOW: usize = 10_000;
/// Buffered events per watcher beyond its initial replay.
pub const WATCHER_BUFFER: usize = 1024;
/// How long a read or watch waits for the cache to reach a requested revision.
const FRESHNESS_WAIT: Duration = Duration::from_secs(3);

/// An object as the cache holds it: decoded, with `metadata.resourceVersion` set, encoded once
/// for every reader, and with its selectable fields computed once for every watcher's filter
/// (upstream's GetAttrs).
#[derive(Debug)]
pub struct CachedObject {
    pub key: String,
    pub value: Value,
    pub json: Bytes,
    pub revision: i64,
    pub fields: FieldSet,
}

impl CachedObject {
    /// Decodes a stored value of `info` and stamps it with `revision` as its resourceVersion.
    pub fn decode(info: &ResourceInfo, key: &str, bytes: &[u8], revision: i64) -> Option<Self> {
        let mut value: Value = serde_json::from_slice(bytes).ok()?;
        let fields = field_set(info, &value);
        let meta = value.get_mut("metadata").and_then(Value::as_object_mut)?;
        if meta.contains_key("resourceVersion") {
            return Some(Self::stamp(key, value, revision, fields));
        }
        // The stored bytes lack only the resourceVersion: splice it in instead of encoding the
        // whole object again.
        let rv = revision.to_string();
        meta.insert("resourceVersion".into(), Value::String(rv.clone()));
        let json = match splice_resource_version(bytes, &rv) {
            Some(j) => Bytes::from(j),
            None => Bytes::from(serde_json::to_vec(&value).unwrap_or_default()),
        };
        Some(CachedObject {
            key: key.to_string(),
            value,
            json,
            revision,
            fields,
        })
    }

    fn stamp(key: &str, mut value: Value, revision: i64, fields: FieldSet) -> Self {
        if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert(
                "resourceVersion".into(),
                Value::String(revision.to_string()),
            );
        }
        CachedObject {
            key: key.to_string(),
            json: Bytes::from(serde_json::to_vec(&value).unwrap_or_default()),
            value,
            revision,
            fields,
        }
    }

    /// The same object stamped with another revision (a DELETED event carries the delete's).
    pub fn restamped(&self, revision: i64) -> Self {
        Self::stamp(&self.key, self.value.clone(), revision, self.fields.clone())
    }

    /// Labels of the object.
    pub fn labels(&self) -> Option<&serde_json::Map<String, Value>> {
        self.value["metadata"]["labels"].as_object()
    }
}

/// Inserts `"resourceVersion":"<rv>"` at the start of the top-level `metadata` object of a JSON
/// document, scanning only the top level. None if there is no such object.
fn splice_resource_version(bytes: &[u8], rv: &str) -> Option<Vec<u8>> {
    let mut depth = 0usize;
    let mut i = 0;
    let mut key_start: Option<usize> = None;
    let mut last_key: &[u8] = b"";
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if depth == 1 {
                    key_start = Some(start);
                    last_key = bytes.get(start..i)?;
                }
            }
            b'{' | b'[' => {
                if depth == 1 && bytes[i] == b'{' && key_start.is_some() && last_key == b"metadata"
                {
                    let mut out = Vec::with_capacity(bytes.len() + rv.len() + 24);
                    out.extend_from_slice(&bytes[..=i]);
                    out.extend_from_slice(b"\"resourceVersion\":\"");
                    out.extend_from_slice(rv.as_bytes());
                    out.push(b'"');
                    if bytes.get(i + 1) != Some(&b'}') {
                        out.push(b',');
                    }
                    out.extend_from_slice(&bytes[i + 1..]);
                    return Some(out);
                }
                depth += 1;
            }
            b'}' | b']' => depth = depth.checked_sub(1)?,
            b',' if depth == 1 => key_start = None,
            _ => {}
        }
        i += 1;
    }
    None
}

/// The field upstream indexes watchers by for a resource (pods by `spec.nodeName`, so that each
/// kubelet's watch costs nothing for other nodes' pods).
pub fn index_field(info: &ResourceInfo) -> Option<&'static str> {
    (info.plural == "pods" && info.group.is_empty()).then_some("spec.nodeName")
}

/// The type of a watch event as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEventType {
    Added,
    Modified,
    Deleted,
}

impl WatchEventType {
    pub fn as_str(self) -> &'static str {
        match self {
            WatchEventType::Added => "ADDED",
            WatchEventType::Modified => "MODIFIED",
            WatchEventType::Deleted => "DELETED",
        }
    }
}

/// One change in the window.
#[derive(Debug)]
pub struct CacheEvent {
    pub kind: EventKind,
    pub object: Arc<CachedObject>,
    pub prev: Option<Arc<CachedObject>>,
    pub revision: i64,
}

/// What a watcher receives.
pub type WatchMessage = (WatchEventType, Arc<CachedObject>);

/// Decides whether an object is visible to a watcher or list (label/field selectors, namespace).
pub type Filter = Arc<dyn Fn(&CachedObject) -> bool + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("too old resource version: {requested} ({oldest})")]
    TooOld { requested: i64, oldest: i64 },
    #[error("Too large resource version: {requested}, current: {current}")]
    TooLarge { requested: i64, current: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Watcher {
    id: u64,
    filter: Filter,
    tx: mpsc::Sender<WatchMessage>,
}

/// Registered watchers: those whose selector pins the index field, by its value, and the rest.
#[derive(Default)]
struct Watchers {
    unindexed: Vec<Watcher>,
    indexed: HashMap<String, Vec<Watcher>>,
    /// Where each watcher is (None = unindexed), for removal.
    place: HashMap<u64, Option<String>>,
}

impl Watchers {
    fn len(&self) -> usize {
        self.place.len()
    }

    fn add(&mut self, index: Option<String>, w: Watcher) {
        self.place.insert(w.id, index.clone());
        match index {
            Some(v) => self.indexed.entry(v).or_default().push(w),
            None => self.unindexed.push(w),
        }
    }

    fn remove(&mut self, id: u64) {
        match self.place.remove(&id) {
            Some(Some(v)) => {
                if let Some(list) = self.indexed.get_mut(&v) {
                    list.retain(|w| w.id != id);
                    if list.is_empty() {
                        self.indexed.remove(&v);
                    }
                }
            }
            Some(None) => self.unindexed.retain(|w| w.id != id),
            None => {}
        }
    }
}

struct State {
    revision: i64,
    objects: BTreeMap<String, Arc<CachedObject>>,
    window: VecDeque<Arc<CacheEvent>>,
    /// Every event after this revision is in the window.
    window_start: i64,
    watchers: Watchers,
}

/// The cache of one storage prefix.
pub struct Cacher {
    info: &'static ResourceInfo,
    index_field: Option<&'static str>,
    prefix: String,
    store: Arc<dyn Store>,
    state: RwLock<State>,
    revision_tx: watch::Sender<i64>,
    next_id: AtomicU64,
    /// Watchers closed because they fell behind (for metrics and tests).
    pub closed_slow: AtomicU64,
}

/// A page of a list.
pub struct ListPage {
    pub items: Vec<Arc<CachedObject>>,
    pub revision: i64,
    /// Key of the last item returned when more remain.
    pub continue_after: Option<String>,
    pub remaining: i64,
}

impl Cacher {
    /// Lists the resource's storage prefix, then follows the store in a background task.
    pub async fn start(
        store: Arc<dyn Store>,
        info: &'static ResourceInfo,
    ) -> Result<Arc<Self>, StoreError> {
        let prefix = format!("{}/", info.storage_prefix);
        let list = store.list(&prefix, None, 0, 0).await?;
        let objects = list
            .kvs
            .iter()
            .filter_map(|kv| {
                CachedObject::decode(info, &kv.key, &kv.value, kv.mod_revision)
                    .map(|o| (kv.key.clone(), Arc::new(o)))
            })
            .collect();
        let (revision_tx, _) = watch::channel(list.revision);
        let cacher = Arc::new(Cacher {
            info,
            index_field: index_field(info),
            prefix: prefix.clone(),
            store: store.clone(),
            state: RwLock::new(State {
                revision: list.revision,
                objects,
                window: VecDeque::new(),
                window_start: list.revision,
                watchers: Watchers::default(),
            }),
            revision_tx,
            next_id: AtomicU64::new(1),
            closed_slow: AtomicU64::new(0),
        });
        let mut stream = store.watch(&prefix, list.revision).await?;
        let weak = Arc::downgrade(&cacher);
        tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                let Some(c) = weak.upgrade() else { return };
                c.apply(item);
            }
        });
        Ok(cacher)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The revision the cache has caught up to.
    pub fn revision(&self) -> i64 {
        self.state.read().revision
    }

    fn apply(&self, item: WatchItem) {
        let mut st = self.state.write();
        let ev = match item {
            WatchItem::Progress(rev) => {
                if rev > st.revision {
                    st.revision = rev;
                    drop(st);
                    self.revision_tx.send_replace(rev);
                }
                return;
            }
            WatchItem::Event(ev) => ev,
        };
        let rev = ev.kv.mod_revision;
        if rev <= st.revision {
            return;
        }
        let prev = st.objects.get(&ev.kv.key).cloned();
        let object = match ev.kind {
            EventKind::Deleted => {
                st.objects.remove(&ev.kv.key);
                match &prev {
                    Some(p) => Arc::new(p.restamped(rev)),
                    None => match CachedObject::decode(self.info, &ev.kv.key, &ev.kv.value, rev) {
                        Some(o) => Arc::new(o),
                        None => return,
                    },
                }
            }
            _ => {
                let Some(o) = CachedObject::decode(self.info, &ev.kv.key, &ev.kv.value, rev) else {
                    tracing::warn!(key = %ev.kv.key, "undecodable object in store");
                    return;
                };
                let o = Arc::new(o);
                st.objects.insert(ev.kv.key.clone(), o.clone());
                o
            }
        };
        let event = Arc::new(CacheEvent {
            kind: ev.kind,
            object,
            prev,
            revision: rev,
        });
        st.revision = rev;
        if st.window.len() == WINDOW {
            if let Some(old) = st.window.pop_front() {
                st.window_start = old.revision;
            }
        }
        st.window.push_back(event.clone());
        // Dispatch: never wait on a watcher; one whose buffer is full is closed. Watchers pinned
        // to an index value only see objects that have (or had) that value.
        let mut slow = 0;
        let mut gone = Vec::new();
        let mut offer = |w: &Watcher| {
            if let Some(msg) = event_for(&event, &w.filter) {
                match w.tx.try_send(msg) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        slow += 1;
                        gone.push(w.id);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => gone.push(w.id),
                }
            }
        };
        st.watchers.unindexed.iter().for_each(&mut offer);
        if let Some(field) = self.index_field {
            let now = event.object.fields.get(field).unwrap_or("");
            let before = event
                .prev
                .as_ref()
                .and_then(|p| p.fields.get(field))
                .unwrap_or("");
            for value in [now, before].into_iter().filter(|v| !v.is_empty()) {
                if let Some(list) = st.watchers.indexed.get(value) {
                    list.iter().for_each(&mut offer);
                }
                if now == before {
                    break;
                }
            }
        }
        for id in gone {
            st.watchers.remove(id);
        }
        drop(st);
        if slow > 0 {
            self.closed_slow.fetch_add(slow, Ordering::Relaxed);
            tracing::info!(prefix = %self.prefix, slow, "closed watchers that fell behind");
        }
        self.revision_tx.send_replace(rev);
    }

    /// Waits until the cache has seen `revision` (a consistent read waits for the store's
    /// current revision, as upstream's ConsistentListFromCache does).
    pub async fn wait_for(&self, revision: i64) -> Result<(), CacheError> {
        let mut rx = self.revision_tx.subscribe();
        let ok = tokio::time::timeout(FRESHNESS_WAIT, rx.wait_for(|r| *r >= revision)).await;
        match ok {
            Ok(Ok(_)) => Ok(()),
            _ => Err(CacheError::TooLarge {
                requested: revision,
                current: self.revision(),
            }),
        }
    }

    /// Waits until the cache reflects every write acknowledged so far.
    pub async fn wait_fresh(&self) -> Result<(), CacheError> {
        self.wait_for(self.store.current_revision()).await
    }

    /// One object by key.
    pub fn get(&self, key: &str) -> Option<Arc<CachedObject>> {
        self.state.read().objects.get(key).cloned()
    }

    /// Objects under `prefix` (a namespace or the whole resource) that pass `filter`, in key
    /// order, after `start_after`, at most `limit` (0 = all).
    pub fn list(
        &self,
        prefix: &str,
        filter: &Filter,
        start_after: Option<&str>,
        limit: usize,
    ) -> ListPage {
        let st = self.state.read();
        let lower = match start_after {
            Some(k) => Bound::Excluded(k.to_string()),
            None => Bound::Included(prefix.to_string()),
        };
        let mut page = ListPage {
            items: Vec::new(),
            revision: st.revision,
            continue_after: None,
            remaining: 0,
        };
        for (key, obj) in st.objects.range((lower, Bound::Unbounded)) {
            if !key.starts_with(prefix) {
                break;
            }
            if !filter(obj) {
                continue;
            }
            if limit > 0 && page.items.len() == limit {
                page.remaining += 1;
                continue;
            }
            page.items.push(obj.clone());
        }
        if page.remaining > 0 {
            page.continue_after = page.items.last().map(|o| o.key.clone());
        }
        page
    }

    /// Continues a paged list at `revision` (the first page's): from memory when nothing
    /// changed since, otherwise from the store's history at that revision, as upstream serves
    /// continuations from etcd.
    pub async fn list_at(
        &self,
        prefix: &str,
        filter: &Filter,
        start_after: &str,
        limit: usize,
        revision: i64,
    ) -> Result<ListPage, CacheError> {
        if self.revision() == revision {
            let page = self.list(prefix, filter, Some(start_after), limit);
            if page.revision == revision {
                return Ok(page);
            }
        }
        let mut page = ListPage {
            items: Vec::new(),
            revision,
            continue_after: None,
            remaining: 0,
        };
        let mut after = start_after.to_string();
        loop {
            let chunk = self
                .store
                .list(prefix, Some(&after), limit.max(500), revision)
                .await?;
            let more = chunk.more;
            for kv in &chunk.kvs {
                after = kv.key.clone();
                let Some(obj) = self.decode_kv(kv) else {
                    continue;
                };
                if !filter(&obj) {
                    continue;
                }
                if limit > 0 && page.items.len() == limit {
                    page.remaining += 1;
                    continue;
                }
                page.items.push(Arc::new(obj));
            }
            if !more {
                break;
            }
            if limit > 0 && page.items.len() == limit {
                // At least one more item may follow: count the rest cheaply from the store.
                page.remaining += chunk.remaining;
                break;
            }
        }
        if page.remaining > 0 {
            page.continue_after = page.items.last().map(|o| o.key.clone());
        }
        Ok(page)
    }

    /// Starts a watch. With `from` = 0 the watcher first gets every current object that passes
    /// the filter as ADDED; otherwise the events after `from` are replayed from the window.
    /// `index_value` is the value the watcher's selector requires for the resource's index field
    /// (see [`index_field`]), if it pins one.
    pub async fn watch(
        self: &Arc<Self>,
        prefix: &str,
        from: i64,
        filter: Filter,
        index_value: Option<String>,
    ) -> Result<WatchHandle, CacheError> {
        if from > self.revision() {
            self.wait_for(from).await?;
        }
        let mut st = self.state.write();
        let initial: Vec<WatchMessage> = if from == 0 {
            st.objects
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .filter(|(_, o)| filter(o))
                .map(|(_, o)| (WatchEventType::Added, o.clone()))
                .collect()
        } else {
            if from < st.window_start {
                return Err(CacheError::TooOld {
                    requested: from,
                    oldest: st.window_start,
                });
            }
            st.window
                .iter()
                .filter(|e| e.revision > from && e.object.key.starts_with(prefix))
                .filter_map(|e| event_for(e, &filter))
                .collect()
        };
        let (tx, rx) = mpsc::channel(initial.len() + WATCHER_BUFFER);
        for msg in initial {
            // Cannot fail: the channel has room for the whole replay.
            let _ = tx.try_send(msg);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let prefix_owned = prefix.to_string();
        let scoped: Filter = if prefix == self.prefix {
            filter
        } else {
            Arc::new(move |o: &CachedObject| o.key.starts_with(&prefix_owned) && filter(o))
        };
        let index_value = index_value.filter(|_| self.index_field.is_some());
        st.watchers.add(
            index_value,
            Watcher {
                id,
                filter: scoped,
                tx,
            },
        );
        Ok(WatchHandle {
            rx,
            id,
            cacher: self.clone(),
        })
    }

    /// How many watchers are registered.
    pub fn watcher_count(&self) -> usize {
        self.state.read().watchers.len()
    }

    fn remove_watcher(&self, id: u64) {
        self.state.write().watchers.remove(id);
    }

    /// The resource this cache holds.
    pub fn info(&self) -> &'static ResourceInfo {
        self.info
    }

    fn decode_kv(&self, kv: &KeyValue) -> Option<CachedObject> {
        CachedObject::decode(self.info, &kv.key, &kv.value, kv.mod_revision)
    }
}

/// What a watcher with `filter` sees of `event`, if anything.
fn event_for(event: &CacheEvent, filter: &Filter) -> Option<WatchMessage> {
    let now = filter(&event.object);
    let before = event.prev.as_ref().map(|p| filter(p)).unwrap_or(false);
    match event.kind {
        EventKind::Created if now => Some((WatchEventType::Added, event.object.clone())),
        EventKind::Deleted if now || before => {
            Some((WatchEventType::Deleted, event.object.clone()))
        }
        EventKind::Modified => match (before, now) {
            (true, true) => Some((WatchEventType::Modified, event.object.clone())),
            (false, true) => Some((WatchEventType::Added, event.object.clone())),
            (true, false) => {
                let prev = event.prev.as_ref()?;
                Some((
                    WatchEventType::Deleted,
                    Arc::new(prev.restamped(event.revision)),
                ))
            }
            (false, false) => None,
        },
        _ => None,
    }
}

/// A registered watch; dropping it unregisters the watcher.
pub struct WatchHandle {
    pub rx: mpsc::Receiver<WatchMessage>,
    id: u64,
    cacher: Arc<Cacher>,
}

impl WatchHandle {
    /// The cache's revision: every event up to it is already queued for this watcher.
    pub fn revision(&self) -> i64 {
        self.cacher.revision()
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.cacher.remove_watcher(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sqlite::SqliteStore;

    fn all() -> Filter {
        Arc::new(|_| true)
    }

    async fn setup() -> (tempfile::TempDir, Arc<dyn Store>, Arc<Cacher>) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("db")).unwrap());
        let info = crate::resources::find("", "v1", "configmaps").unwrap();
        let c = Cacher::start(store.clone(), info).await.unwrap();
        (dir, store, c)
    }

    fn cm(name: &str, v: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default", "labels": {"v": v}}
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn list_is_consistent_after_writes() {
        let (_d, store, c) = setup().await;
        for i in 0..5 {
            store
                .create(
                    &format!("/registry/configmaps/default/c{i}"),
                    cm("x", "1"),
                    0,
                )
                .await
                .unwrap();
        }
        c.wait_fresh().await.unwrap();
        let page = c.list("/registry/configmaps/default/", &all(), None, 2);
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.remaining, 3);
        assert_eq!(page.items[0].value["metadata"]["resourceVersion"], "1");
        let next = c
            .list_at(
                "/registry/configmaps/",
                &all(),
                page.continue_after.as_deref().unwrap(),
                2,
                page.revision,
            )
            .await
            .unwrap();
        assert_eq!(next.items[0].key, "/registry/configmaps/default/c2");
    }

    #[tokio::test]
    async fn filtered_watch_sees_added_and_deleted_on_selector_transitions() {
        let (_d, store, c) = setup().await;
        let key = "/registry/configmaps/default/a";
        let kv = store.create(key, cm("a", "1"), 0).await.unwrap();
        c.wait_fresh().await.unwrap();
        let only2: Filter = Arc::new(|o: &CachedObject| o.value["metadata"]["labels"]["v"] == "2");
        let mut w = c
            .watch("/registry/configmaps/", kv.mod_revision, only2, None)
            .await
            .unwrap();
        let kv = store
            .update(key, cm("a", "2"), kv.mod_revision, 0)
            .await
            .unwrap();
        store
            .update(key, cm("a", "3"), kv.mod_revision, 0)
            .await
            .unwrap();
        let (t1, o1) = w.rx.recv().await.unwrap();
        let (t2, o2) = w.rx.recv().await.unwrap();
        assert_eq!(t1, WatchEventType::Added);
        assert_eq!(o1.revision, 2);
        assert_eq!(t2, WatchEventType::Deleted);
        assert_eq!(o2.value["metadata"]["resourceVersion"], "3");
    }

    #[tokio::test]
    async fn watch_from_a_revision_before_the_window_is_expired() {
        let (_d, store, c) = setup().await;
        let key = "/registry/configmaps/default/a";
        let mut rev = store
            .create(key, cm("a", "0"), 0)
            .await
            .unwrap()
            .mod_revision;
        for i in 0..(WINDOW + 5) {
            rev = store
                .update(key, cm("a", &i.to_string()), rev, 0)
                .await
                .unwrap()
                .mod_revision;
        }
        c.wait_fresh().await.unwrap();
        match c.watch("/registry/configmaps/", 1, all(), None).await {
            Err(CacheError::TooOld { requested: 1, .. }) => {}
            Err(e) => panic!("expected too old, got {e}"),
            Ok(_) => panic!("expected too old, got a watch"),
        }
        assert!(c
            .watch("/registry/configmaps/", rev - 3, all(), None)
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn a_stalled_watcher_is_closed_and_others_keep_up() {
        let (_d, store, c) = setup().await;
        let stalled = c
            .watch("/registry/configmaps/", 0, all(), None)
            .await
            .unwrap();
        let mut live = c
            .watch("/registry/configmaps/", 0, all(), None)
            .await
            .unwrap();
        let reader = tokio::spawn(async move {
            let mut n = 0;
            while let Some(_m) = live.rx.recv().await {
                n += 1;
                if n == WATCHER_BUFFER + 100 {
                    return n;
                }
            }
            n
        });
        for i in 0..(WATCHER_BUFFER + 100) {
            store
                .create(
                    &format!("/registry/configmaps/default/c{i}"),
                    cm("x", "1"),
                    0,
                )
                .await
                .unwrap();
        }
        assert_eq!(reader.await.unwrap(), WATCHER_BUFFER + 100);
        assert_eq!(c.closed_slow.load(Ordering::Relaxed), 1);
        let mut stalled = stalled;
        let mut got = 0;
        while stalled.rx.recv().await.is_some() {
            got += 1;
        }
        assert_eq!(
            got, WATCHER_BUFFER,
            "the stalled watcher's buffer is bounded, then closed"
        );
    }

    #[tokio::test]
    async fn node_indexed_watchers_see_only_their_pods() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("db")).unwrap());
        let info = crate::resources::find("", "v1", "pods").unwrap();
        let c = Cacher::start(store.clone(), info).await.unwrap();
        let on = |node: &'static str| -> Filter {
            Arc::new(move |o: &CachedObject| o.fields.get("spec.nodeName") == Some(node))
        };
        let mut n1 = c
            .watch("/registry/pods/", 0, on("n1"), Some("n1".into()))
            .await
            .unwrap();
        let mut n2 = c
            .watch("/registry/pods/", 0, on("n2"), Some("n2".into()))
            .await
            .unwrap();
        let pod = |node: &str| {
            serde_json::to_vec(&serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "d"}, "spec": {"nodeName": node}}))
            .unwrap()
        };
        let key = "/registry/pods/d/p";
        let kv = store.create(key, pod("n1"), 0).await.unwrap();
        store
            .update(key, pod("n2"), kv.mod_revision, 0)
            .await
            .unwrap();
        assert_eq!(n1.rx.recv().await.unwrap().0, WatchEventType::Added);
        assert_eq!(
            n1.rx.recv().await.unwrap().0,
            WatchEventType::Deleted,
            "moved away from n1"
        );
        assert_eq!(
            n2.rx.recv().await.unwrap().0,
            WatchEventType::Added,
            "moved onto n2"
        );
        c.wait_fresh().await.unwrap();
        assert!(n1.rx.try_recv().is_err() && n2.rx.try_recv().is_err());
    }

    #[test]
    fn splicing_the_resource_version_matches_encoding() {
        let cases = [
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"},"data":{"metadata":"{"}}"#,
            r#"{"kind":"X","data":{"metadata":{"x":1}},"metadata":{}}"#,
            r#"{"a":"\"metadata\":{","metadata":{"name":"b","labels":{"k":"v"}}}"#,
        ];
        for c in cases {
            let spliced = splice_resource_version(c.as_bytes(), "42").unwrap();
            let got: Value = serde_json::from_slice(&spliced).unwrap();
            let mut want: Value = serde_json::from_str(c).unwrap();
            want["metadata"]["resourceVersion"] = "42".into();
            assert_eq!(got, want, "{c}");
        }
        assert!(splice_resource_version(br#"{"kind":"X"}"#, "1").is_none());
    }
}

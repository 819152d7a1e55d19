//! The watches of Services, EndpointSlices and (for `pods verified`) Pods into the record cache:
//! kube-runtime `watcher`s whose events only write the cache, as CoreDNS's informers feed its
//! `dnsController`. A (re)list is gathered whole and swapped in at its end, so a relist never
//! leaves a moment with the zone half empty; objects gone meanwhile drop out with it.
//!
//! [`Synced`] tells when every watch has listed once: the server starts answering only then
//! (CoreDNS waits up to 5 s for its caches before serving).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tokio::sync::Notify;

use crate::cache::{CacheState, Kind, RecordCache};

/// Counts the watches that have listed once; wakes waiters when they all have.
#[derive(Clone)]
pub struct Synced {
    pending: Arc<AtomicUsize>,
    notify: Arc<Notify>,
}

impl Synced {
    pub fn new(watches: usize) -> Self {
        Synced {
            pending: Arc::new(AtomicUsize::new(watches)),
            notify: Arc::new(Notify::new()),
        }
    }

    fn done(&self) {
        if self.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.notify.notify_waiters();
        }
    }

    pub fn is_synced(&self) -> bool {
        self.pending.load(Ordering::SeqCst) == 0
    }

    /// Resolves once every watch has listed.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_synced() {
                return;
            }
            notified.await;
        }
    }
}

/// A kind the cache takes.
trait Cached:
    kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static
{
    const KIND: Kind;
    fn apply(state: &mut CacheState, o: &Self);
    fn delete(state: &mut CacheState, o: &Self);
}

impl Cached for Service {
    const KIND: Kind = Kind::Services;
    fn apply(s: &mut CacheState, o: &Self) {
        s.apply_service(o)
    }
    fn delete(s: &mut CacheState, o: &Self) {
        s.delete_service(o)
    }
}

impl Cached for EndpointSlice {
    const KIND: Kind = Kind::EndpointSlices;
    fn apply(s: &mut CacheState, o: &Self) {
        s.apply_slice(o)
    }
    fn delete(s: &mut CacheState, o: &Self) {
        s.delete_slice(o)
    }
}

impl Cached for Pod {
    const KIND: Kind = Kind::Pods;
    fn apply(s: &mut CacheState, o: &Self) {
        s.apply_pod(o)
    }
    fn delete(s: &mut CacheState, o: &Self) {
        s.delete_pod(o)
    }
}

/// Watches one kind into the cache until the stream ends (never, short of the task's abort).
async fn watch<K>(api: Api<K>, config: watcher::Config, cache: RecordCache, synced: Synced)
where
    K: Cached,
    K::DynamicType: Default,
{
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut listing: Option<Vec<K>> = None;
    let mut listed_once = false;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => listing = Some(Vec::new()),
            Ok(Event::InitApply(o)) => match listing.as_mut() {
                Some(l) => l.push(o),
                None => cache.write(|s| K::apply(s, &o)),
            },
            Ok(Event::InitDone) => {
                let objects = listing.take().unwrap_or_default();
                cache.write(|s| {
                    s.clear(K::KIND);
                    for o in &objects {
                        K::apply(s, o);
                    }
                });
                tracing::debug!(kind = ?K::KIND, count = objects.len(), "listed");
                if !listed_once {
                    listed_once = true;
                    synced.done();
                }
            }
            Ok(Event::Apply(o)) => cache.write(|s| K::apply(s, &o)),
            Ok(Event::Delete(o)) => cache.write(|s| K::delete(s, &o)),
            Err(e) => tracing::warn!(kind = ?K::KIND, error = %e, "watch failed; retrying"),
        }
    }
}

/// Starts the watches; `pods` adds the Pod watch. Returns the tasks and their sync state.
pub fn spawn(
    client: Client,
    cache: RecordCache,
    pods: bool,
) -> (Vec<tokio::task::JoinHandle<()>>, Synced) {
    let synced = Synced::new(if pods { 3 } else { 2 });
    let mut tasks = vec![
        tokio::spawn(watch(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
            cache.clone(),
            synced.clone(),
        )),
        tokio::spawn(watch(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default().labels(crate::cache::SERVICE_NAME_LABEL),
            cache.clone(),
            synced.clone(),
        )),
    ];
    if pods {
        tasks.push(tokio::spawn(watch(
            Api::<Pod>::all(client),
            watcher::Config::default(),
            cache,
            synced.clone(),
        )));
    }
    (tasks, synced)
}

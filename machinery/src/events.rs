//! Kubernetes Events: upstream's `record.EventRecorder` with its `EventCorrelator` (client-go
//! `tools/record`), for every Capstan component.
//!
//! Callers (pod workers, probes, controllers, the scheduler) hand an event to
//! [`EventRecorder::event`], which never blocks: the event goes into a bounded queue (upstream's
//! broadcaster holds 1000; when it is full the event is dropped, as upstream's
//! `DropIfChannelFull`) and one background task writes it as a core/v1 Event in the involved
//! object's namespace with the component as `source.component` (`kubelet`,
//! `deployment-controller`, `default-scheduler`) and, for node components, the node name as
//! `source.host`. Identical events (same involved object and field path, type, reason and message)
//! are aggregated as upstream's `EventCorrelator` does: the first is created with `count: 1`, later
//! ones patch the same object's `count` and `lastTimestamp`. The correlation cache is bounded
//! (upstream's 4096-entry LRU: the oldest entry is forgotten). A write that fails is retried a few
//! times with a pause (upstream: 12 tries, 10 s apart), so a short API outage loses nothing.
//!
//! Each component keeps its upstream reasons as constants of its own (`kubelet::events::reason`).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Resource;
use tokio::sync::mpsc;

/// `Normal` or `Warning`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Upstream's broadcaster queue length (`maxQueuedEvents`).
pub const MAX_QUEUED_EVENTS: usize = 1000;
/// Upstream's correlator cache size (`maxLruCacheEntries`).
pub const MAX_CACHE_ENTRIES: usize = 4096;
/// How often a failed write is tried (upstream's `maxTriesPerEvent`).
const MAX_TRIES: u32 = 12;

/// A reference to any API object (upstream's `ref.GetReference`).
pub fn object_ref<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    let meta = obj.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    }
}

/// A reference to the pod (upstream's `ref.GetReference(pod)`).
pub fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(
            pod.metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
        ),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        field_path: None,
    }
}

/// A reference to one container of the pod (upstream's `kubecontainer.GenerateContainerRef`):
/// the pod with the field path `spec.containers{name}` / `spec.initContainers{name}`.
pub fn container_ref(pod: &Pod, c: &Container) -> ObjectReference {
    let spec = pod.spec.as_ref();
    let init = spec
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|ics| ics.iter().any(|i| i.name == c.name));
    let list = if init {
        "spec.initContainers"
    } else {
        "spec.containers"
    };
    ObjectReference {
        field_path: Some(format!("{list}{{{}}}", c.name)),
        ..pod_ref(pod)
    }
}

/// One event handed to the writer task.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    pub object: ObjectReference,
    pub type_: EventType,
    pub reason: String,
    pub message: String,
    pub at: Timestamp,
}

/// Records events without blocking; cheap to clone.
#[derive(Clone)]
pub struct EventRecorder {
    tx: Option<mpsc::Sender<Recorded>>,
}

impl EventRecorder {
    /// Starts the writer task for `component` (upstream's `EventSource.Component`); `host` is the
    /// node name for node components, empty for control-plane ones.
    pub fn start(client: kube::Client, component: &str, host: &str) -> EventRecorder {
        let (tx, rx) = mpsc::channel(MAX_QUEUED_EVENTS);
        let correlator = Correlator::new(component.into(), host.into(), MAX_CACHE_ENTRIES);
        tokio::spawn(writer(client, correlator, rx));
        EventRecorder { tx: Some(tx) }
    }

    /// A recorder whose events go to `tx` (tests).
    pub fn to_channel(tx: mpsc::Sender<Recorded>) -> EventRecorder {
        EventRecorder { tx: Some(tx) }
    }

    /// A recorder that drops everything.
    pub fn discard() -> EventRecorder {
        EventRecorder { tx: None }
    }

    /// Records an event about `object`; dropped when the queue is full.
    pub fn event(&self, object: ObjectReference, type_: EventType, reason: &str, message: String) {
        let Some(tx) = &self.tx else {
            return;
        };
        let ev = Recorded {
            object,
            type_,
            reason: reason.to_string(),
            message,
            at: Timestamp::now(),
        };
        if tx.try_send(ev).is_err() {
            tracing::debug!("event queue full or closed; event dropped");
        }
    }

    /// A Normal event about any API object.
    pub fn normal<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, message: String) {
        self.event(object_ref(obj), EventType::Normal, reason, message);
    }

    /// A Warning event about any API object.
    pub fn warning<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, message: String) {
        self.event(object_ref(obj), EventType::Warning, reason, message);
    }

    /// A Normal event about the pod.
    pub fn pod_normal(&self, pod: &Pod, reason: &str, message: String) {
        self.event(pod_ref(pod), EventType::Normal, reason, message);
    }

    /// A Warning event about the pod.
    pub fn pod_warning(&self, pod: &Pod, reason: &str, message: String) {
        self.event(pod_ref(pod), EventType::Warning, reason, message);
    }

    /// A Normal event about a container.
    pub fn container_normal(&self, pod: &Pod, c: &Container, reason: &str, message: String) {
        self.event(container_ref(pod, c), EventType::Normal, reason, message);
    }

    /// A Warning event about a container.
    pub fn container_warning(&self, pod: &Pod, c: &Container, reason: &str, message: String) {
        self.event(container_ref(pod, c), EventType::Warning, reason, message);
    }
}

/// What makes two events identical (upstream's `getEventKey` without the timestamp).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EventKey {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub field_path: String,
    pub type_: EventType,
    pub reason: String,
    pub message: String,
}

impl EventKey {
    pub fn of(e: &Recorded) -> EventKey {
        let o = &e.object;
        EventKey {
            // Events about cluster-scoped objects (nodes) go to `default`, as client-go's
            // recorder puts them.
            namespace: o
                .namespace
                .clone()
                .filter(|ns| !ns.is_empty())
                .unwrap_or_else(|| "default".into()),
            name: o.name.clone().unwrap_or_default(),
            uid: o.uid.clone().unwrap_or_default(),
            field_path: o.field_path.clone().unwrap_or_default(),
            type_: e.type_,
            reason: e.reason.clone(),
            message: e.message.clone(),
        }
    }
}

/// An event already written: its object name, count and first timestamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub name: String,
    pub count: i32,
    pub first: Timestamp,
}

/// What the writer does with an event (upstream's `EventCorrelator.EventCorrelate`).
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// Create this new Event.
    Create(Box<Event>),
    /// Patch the existing Event `name` to this count and last timestamp.
    Update {
        namespace: String,
        name: String,
        count: i32,
        last: Timestamp,
    },
}

/// The correlation cache: identical events aggregate into one object. Bounded: the oldest key
/// is forgotten past `capacity`.
pub struct Correlator {
    capacity: usize,
    seen: HashMap<EventKey, Seen>,
    order: VecDeque<EventKey>,
    component: String,
    host: String,
}

impl Correlator {
    pub fn new(component: String, host: String, capacity: usize) -> Correlator {
        Correlator {
            capacity,
            seen: HashMap::new(),
            order: VecDeque::new(),
            component,
            host,
        }
    }

    /// Decides the write for `e` and remembers it.
    pub fn correlate(&mut self, e: &Recorded) -> Write {
        let key = EventKey::of(e);
        if let Some(s) = self.seen.get_mut(&key) {
            s.count += 1;
            return Write::Update {
                namespace: key.namespace.clone(),
                name: s.name.clone(),
                count: s.count,
                last: e.at,
            };
        }
        // Upstream names events `<object name>.<unix nanoseconds in hex>`.
        let name = format!(
            "{}.{:x}",
            key.name,
            e.at.as_nanosecond().max(0) as u128 + self.order.len() as u128
        );
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(key.namespace.clone()),
                ..Default::default()
            },
            involved_object: e.object.clone(),
            reason: Some(e.reason.clone()),
            message: Some(e.message.clone()),
            type_: Some(e.type_.as_str().to_string()),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: (!self.host.is_empty()).then(|| self.host.clone()),
            }),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(if self.host.is_empty() {
                self.component.clone()
            } else {
                self.host.clone()
            }),
            count: Some(1),
            first_timestamp: Some(Time(e.at)),
            last_timestamp: Some(Time(e.at)),
            ..Default::default()
        };
        self.seen.insert(
            key.clone(),
            Seen {
                name,
                count: 1,
                first: e.at,
            },
        );
        self.order.push_back(key);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        Write::Create(Box::new(ev))
    }

    /// Forgets `e` (its object could not be written, or was deleted): the next identical event
    /// creates a new one.
    pub fn forget(&mut self, e: &Recorded) {
        let key = EventKey::of(e);
        self.seen.remove(&key);
        self.order.retain(|k| *k != key);
    }
}

async fn writer(
    client: kube::Client,
    mut correlator: Correlator,
    mut rx: mpsc::Receiver<Recorded>,
) {
    while let Some(e) = rx.recv().await {
        let write = correlator.correlate(&e);
        let mut tries = 0;
        loop {
            tries += 1;
            match apply(&client, &write).await {
                Ok(()) => break,
                // The aggregated object was deleted (TTL): start a new one.
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    correlator.forget(&e);
                    let again = correlator.correlate(&e);
                    if apply(&client, &again).await.is_err() {
                        correlator.forget(&e);
                    }
                    break;
                }
                Err(kube::Error::Api(s)) if s.code == 409 || s.code == 422 => {
                    tracing::debug!("event {} rejected: {}", e.reason, s.message);
                    break;
                }
                Err(err) if tries < MAX_TRIES => {
                    tracing::debug!("writing event {}: {err}; retrying", e.reason);
                    tokio::time::sleep(Duration::from_secs(u64::from(tries.min(10)))).await;
                }
                Err(err) => {
                    tracing::warn!("dropping event {} after {tries} tries: {err}", e.reason);
                    correlator.forget(&e);
                    break;
                }
            }
        }
    }
}

async fn apply(client: &kube::Client, w: &Write) -> Result<(), kube::Error> {
    match w {
        Write::Create(ev) => {
            let ns = ev.metadata.namespace.clone().unwrap_or_default();
            Api::<Event>::namespaced(client.clone(), &ns)
                .create(&PostParams::default(), ev)
                .await
                .map(|_| ())
        }
        Write::Update {
            namespace,
            name,
            count,
            last,
        } => {
            let patch = serde_json::json!({
                "count": count,
                "lastTimestamp": Time(*last),
            });
            Api::<Event>::namespaced(client.clone(), namespace)
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns1", "uid": "u1"},
            "spec": {
                "initContainers": [{"name": "init", "image": "busybox"}],
                "containers": [{"name": "app", "image": "busybox"}]
            }
        }))
        .unwrap()
    }

    fn rec(obj: ObjectReference, reason: &str, msg: &str, secs: i64) -> Recorded {
        Recorded {
            object: obj,
            type_: EventType::Warning,
            reason: reason.into(),
            message: msg.into(),
            at: Timestamp::from_second(1_700_000_000 + secs).unwrap(),
        }
    }

    #[test]
    fn container_refs_name_the_field_path() {
        let p = pod();
        let spec = p.spec.clone().unwrap();
        let r = container_ref(&p, &spec.containers[0]);
        assert_eq!(r.field_path.as_deref(), Some("spec.containers{app}"));
        assert_eq!(r.kind.as_deref(), Some("Pod"));
        assert_eq!(r.namespace.as_deref(), Some("ns1"));
        let r = container_ref(&p, &spec.init_containers.unwrap()[0]);
        assert_eq!(r.field_path.as_deref(), Some("spec.initContainers{init}"));
        assert_eq!(pod_ref(&p).field_path, None);
    }

    #[test]
    fn identical_events_aggregate_into_one_object() {
        let p = pod();
        let mut c = Correlator::new("kubelet".into(), "node-1".into(), 10);
        let Write::Create(first) = c.correlate(&rec(pod_ref(&p), "BackOff", "m", 0)) else {
            panic!("the first event is created");
        };
        assert_eq!(first.count, Some(1));
        assert_eq!(first.type_.as_deref(), Some("Warning"));
        assert_eq!(first.metadata.namespace.as_deref(), Some("ns1"));
        let src = first.source.clone().unwrap();
        assert_eq!(src.component.as_deref(), Some("kubelet"));
        assert_eq!(src.host.as_deref(), Some("node-1"));
        assert_eq!(first.first_timestamp, first.last_timestamp);
        let name = first.metadata.name.clone().unwrap();
        assert!(name.starts_with("web."), "{name}");

        match c.correlate(&rec(pod_ref(&p), "BackOff", "m", 5)) {
            Write::Update {
                name: n,
                count,
                last,
                ..
            } => {
                assert_eq!(n, name);
                assert_eq!(count, 2);
                assert_eq!(last, Timestamp::from_second(1_700_000_005).unwrap());
            }
            other => panic!("an identical event updates the first, got {other:?}"),
        }
        // Another message, reason or field path is another event.
        assert!(matches!(
            c.correlate(&rec(pod_ref(&p), "BackOff", "other", 6)),
            Write::Create(_)
        ));
        let app = p.spec.clone().unwrap().containers[0].clone();
        assert!(matches!(
            c.correlate(&rec(container_ref(&p, &app), "BackOff", "m", 7)),
            Write::Create(_)
        ));
    }

    #[test]
    fn the_cache_is_bounded_and_forgets_the_oldest() {
        let p = pod();
        let mut c = Correlator::new("kubelet".into(), "n".into(), 2);
        for m in ["a", "b", "c"] {
            assert!(matches!(
                c.correlate(&rec(pod_ref(&p), "R", m, 0)),
                Write::Create(_)
            ));
        }
        assert!(matches!(
            c.correlate(&rec(pod_ref(&p), "R", "a", 1)),
            Write::Create(_)
        ));
        assert!(matches!(
            c.correlate(&rec(pod_ref(&p), "R", "c", 1)),
            Write::Update { count: 2, .. }
        ));
    }

    #[tokio::test]
    async fn recording_never_blocks_and_drops_past_the_bound() {
        let (tx, mut rx) = mpsc::channel(2);
        let r = EventRecorder::to_channel(tx);
        let p = pod();
        for i in 0..5 {
            r.pod_normal(&p, "Pulling", format!("{i}"));
        }
        let mut got = Vec::new();
        while let Ok(e) = rx.try_recv() {
            got.push(e.message);
        }
        assert_eq!(got, vec!["0", "1"]);
        EventRecorder::discard().pod_warning(&p, "Failed", "x".into());
    }
}

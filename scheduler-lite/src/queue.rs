//! The scheduling queue (upstream `internal/queue/scheduling_queue.go`): pods waiting to be
//! scheduled, in three parts.
//!
//! - activeQ: ready to be tried, a heap ordered by the profile's QueueSort plugin.
//! - backoffQ: failed recently; each waits `initial × 2^(attempts−1)` (capped) before going back
//!   to activeQ, checked every second. When activeQ is empty, `pop` takes the backoffQ pod whose
//!   backoff ends first instead of idling (upstream's SchedulerPopFromBackoffQ, on by default in
//!   1.33), unless its last attempt failed with an error.
//! - unschedulable: rejected by plugins; moved back only by a cluster event that one of the
//!   rejecting plugins registered for (a node added, a pod deleted, …), never by polling — except
//!   upstream's safety net that flushes pods unschedulable for more than five minutes. Pods held
//!   by scheduling gates (PreEnqueue) wait here too, until an update removes the gates.
//!
//! A failure whose cycle overlapped a move request goes to backoffQ instead of unschedulable
//! (the event may have fixed it), as upstream's `moveRequestCycle`. The queue also keeps the
//! nominator: pods nominated to a node by preemption, which the filters count on that node.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use parking_lot::{Condvar, Mutex};

use crate::framework::{ClusterEvent, Framework, QueueSortPlugin};
use crate::nodeinfo::PodInfo;

/// Upstream `DefaultPodMaxInUnschedulablePodsDuration`.
pub const MAX_UNSCHEDULABLE_DURATION: Duration = Duration::from_secs(300);

/// A pod in the queue with its scheduling history.
#[derive(Clone)]
pub struct QueuedPod {
    pub info: Arc<PodInfo>,
    /// Queue order among equals (upstream: the time it was added).
    pub seq: u64,
    pub attempts: u32,
    pub first_attempt: Option<Instant>,
    pub unschedulable_plugins: HashSet<&'static str>,
    pub gated: bool,
    /// When the last attempt failed (backoff and the five-minute flush count from here).
    pub failed_at: Instant,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Where {
    Active,
    Backoff,
    Unschedulable,
    InFlight,
}

struct Entry {
    pod: QueuedPod,
    at: Where,
}

/// A binary heap of pod keys ordered by the QueueSort plugin.
struct Heap {
    items: Vec<(Arc<PodInfo>, u64, String)>,
}

impl Heap {
    fn less(
        sort: &dyn QueueSortPlugin,
        a: &(Arc<PodInfo>, u64, String),
        b: &(Arc<PodInfo>, u64, String),
    ) -> bool {
        sort.less((&a.0, a.1), (&b.0, b.1))
    }
    fn push(&mut self, sort: &dyn QueueSortPlugin, item: (Arc<PodInfo>, u64, String)) {
        self.items.push(item);
        let mut i = self.items.len() - 1;
        while i > 0 {
            let parent = (i - 1) / 2;
            if Self::less(sort, &self.items[i], &self.items[parent]) {
                self.items.swap(i, parent);
                i = parent;
            } else {
                break;
            }
        }
    }
    fn pop(&mut self, sort: &dyn QueueSortPlugin) -> Option<(Arc<PodInfo>, u64, String)> {
        if self.items.is_empty() {
            return None;
        }
        let last = self.items.len() - 1;
        self.items.swap(0, last);
        let top = self.items.pop();
        let n = self.items.len();
        let mut i = 0;
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut m = i;
            if l < n && Self::less(sort, &self.items[l], &self.items[m]) {
                m = l;
            }
            if r < n && Self::less(sort, &self.items[r], &self.items[m]) {
                m = r;
            }
            if m == i {
                break;
            }
            self.items.swap(i, m);
            i = m;
        }
        top
    }
}

struct Inner {
    entries: HashMap<String, Entry>,
    /// activeQ: entries whose `at` is Active (stale heap items are skipped).
    active: Heap,
    active_len: usize,
    seq: u64,
    scheduling_cycle: u64,
    move_request_cycle: u64,
    nominated: HashMap<String, Vec<Arc<PodInfo>>>,
    nominated_node_of: HashMap<String, String>,
    closed: bool,
}

/// Pending pods per queue, for `scheduler_pending_pods`.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Pending {
    pub active: usize,
    pub backoff: usize,
    pub unschedulable: usize,
    pub gated: usize,
}

pub struct SchedulingQueue {
    inner: Mutex<Inner>,
    ready: Condvar,
    sort: Arc<Framework>,
    frameworks: HashMap<String, Arc<Framework>>,
    initial_backoff: Duration,
    max_backoff: Duration,
}

impl SchedulingQueue {
    pub fn new(
        frameworks: HashMap<String, Arc<Framework>>,
        initial_backoff: Duration,
        max_backoff: Duration,
    ) -> Self {
        let sort = frameworks
            .values()
            .next()
            .expect("at least one profile")
            .clone();
        SchedulingQueue {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                active: Heap { items: Vec::new() },
                active_len: 0,
                seq: 0,
                scheduling_cycle: 0,
                move_request_cycle: 0,
                nominated: HashMap::new(),
                nominated_node_of: HashMap::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            sort,
            frameworks,
            initial_backoff,
            max_backoff,
        }
    }

    fn sorter(&self) -> &dyn QueueSortPlugin {
        self.sort
            .queue_sort
            .plugin
            .queue_sort()
            .expect("the queue sort plugin implements QueueSort")
    }

    fn backoff_of(&self, p: &QueuedPod) -> Duration {
        let mut d = self.initial_backoff;
        for _ in 1..p.attempts.max(1) {
            d = d.saturating_mul(2);
            if d >= self.max_backoff {
                return self.max_backoff;
            }
        }
        d.min(self.max_backoff)
    }

    fn backing_off(&self, p: &QueuedPod, now: Instant) -> bool {
        p.attempts > 0 && p.failed_at + self.backoff_of(p) > now
    }

    fn to_active(&self, inner: &mut Inner, key: &str) {
        if let Some(e) = inner.entries.get_mut(key) {
            e.at = Where::Active;
            let item = (e.pod.info.clone(), e.pod.seq, key.to_string());
            inner.active.push(self.sorter(), item);
            inner.active_len += 1;
            self.ready.notify_one();
        }
    }

    /// Runs PreEnqueue (scheduling gates) for the pod's profile.
    fn gated(&self, info: &PodInfo) -> bool {
        let name = info
            .spec()
            .scheduler_name
            .as_deref()
            .unwrap_or(crate::config::DEFAULT_SCHEDULER_NAME);
        self.frameworks
            .get(name)
            .is_some_and(|f| !f.run_pre_enqueue(info).is_success())
    }

    /// A new pending pod (informer add).
    pub fn add(&self, info: Arc<PodInfo>) {
        let mut inner = self.inner.lock();
        let key = info.key.clone();
        if inner.entries.contains_key(&key) {
            drop(inner);
            self.update(info);
            return;
        }
        self.record_nomination(&mut inner, &info);
        inner.seq += 1;
        let gated = self.gated(&info);
        let pod = QueuedPod {
            info,
            seq: inner.seq,
            attempts: 0,
            first_attempt: None,
            unschedulable_plugins: HashSet::new(),
            gated,
            failed_at: Instant::now(),
        };
        let at = if gated {
            Where::Unschedulable
        } else {
            Where::Backoff
        };
        inner.entries.insert(key.clone(), Entry { pod, at });
        if !gated {
            self.to_active(&mut inner, &key);
        }
    }

    /// A pod whose binding failed: back in backoffQ with its attempts so far.
    pub fn add_after_error(&self, info: Arc<PodInfo>, attempts: u32) {
        let mut inner = self.inner.lock();
        inner.seq += 1;
        let pod = QueuedPod {
            info: info.clone(),
            seq: inner.seq,
            attempts,
            first_attempt: None,
            unschedulable_plugins: HashSet::new(),
            gated: false,
            failed_at: Instant::now(),
        };
        inner.entries.insert(
            info.key.clone(),
            Entry {
                pod,
                at: Where::Backoff,
            },
        );
    }

    /// A pending pod changed (informer update).
    pub fn update(&self, info: Arc<PodInfo>) {
        let mut inner = self.inner.lock();
        let key = info.key.clone();
        self.record_nomination(&mut inner, &info);
        let gated_now = self.gated(&info);
        let now = Instant::now();
        let Some(e) = inner.entries.get_mut(&key) else {
            drop(inner);
            self.add(info);
            return;
        };
        let changed = pod_updated(&e.pod.info.pod, &info.pod);
        e.pod.info = info;
        match e.at {
            Where::Unschedulable => {
                let was_gated = e.pod.gated;
                e.pod.gated = gated_now;
                if gated_now {
                    return;
                }
                // Gates removed, or an update one of the rejecting plugins cares about. A
                // status-only update (such as our own PodScheduled=False) changes nothing a
                // plugin looks at, so the pod stays where it is (upstream's `isPodUpdated`).
                let interested = was_gated
                    || changed
                        && (e.pod.unschedulable_plugins.is_empty()
                            || e.pod.unschedulable_plugins.iter().any(|p| {
                                self.sort
                                    .events_of(p)
                                    .contains(&ClusterEvent::UnscheduledPodUpdate)
                            }));
                if interested {
                    let backing = self.backing_off(&e.pod, now);
                    if backing {
                        e.at = Where::Backoff;
                        self.ready.notify_one();
                    } else {
                        self.to_active(&mut inner, &key);
                    }
                }
            }
            Where::Active => {
                // Re-push so the heap sees the new priority; the old item goes stale.
                self.to_active(&mut inner, &key);
                inner.active_len -= 1;
            }
            Where::Backoff | Where::InFlight => {}
        }
    }

    /// The pod was deleted or got bound by someone else.
    pub fn delete(&self, key: &str) {
        let mut inner = self.inner.lock();
        if let Some(e) = inner.entries.remove(key) {
            if e.at == Where::Active {
                inner.active_len -= 1;
            }
        }
        Self::clear_nomination(&mut inner, key);
    }

    /// Blocks until a pod is ready (None once closed); it is in flight until `done`/requeue.
    pub fn pop(&self) -> Option<(QueuedPod, u64)> {
        let mut inner = self.inner.lock();
        loop {
            if inner.closed {
                return None;
            }
            while let Some((_, seq, key)) = inner.active.pop(self.sorter()) {
                let Some(e) = inner.entries.get(&key) else {
                    continue;
                };
                if e.at != Where::Active || e.pod.seq != seq {
                    continue;
                }
                inner.active_len -= 1;
                return Some(Self::take(&mut inner, &key));
            }
            // activeQ is empty: rather than idle until the backoff flush, try the pod whose
            // backoff ends first (upstream 1.33's SchedulerPopFromBackoffQ). Only pods that
            // plugins rejected; a pod that failed with an error waits its backoff out.
            let next = inner
                .entries
                .iter()
                .filter(|(_, e)| {
                    e.at == Where::Backoff
                        && !e.pod.gated
                        && !e.pod.unschedulable_plugins.is_empty()
                })
                .min_by_key(|(_, e)| (e.pod.failed_at + self.backoff_of(&e.pod), e.pod.seq))
                .map(|(key, _)| key.clone());
            if let Some(key) = next {
                return Some(Self::take(&mut inner, &key));
            }
            self.ready.wait(&mut inner);
        }
    }

    /// The pod at `key` leaves activeQ or backoffQ for a scheduling attempt.
    fn take(inner: &mut Inner, key: &str) -> (QueuedPod, u64) {
        inner.scheduling_cycle += 1;
        let e = inner.entries.get_mut(key).expect("a queued pod");
        e.at = Where::InFlight;
        e.pod.attempts += 1;
        e.pod.first_attempt.get_or_insert_with(Instant::now);
        (e.pod.clone(), inner.scheduling_cycle)
    }

    /// The attempt succeeded (the pod is assumed): it leaves the queue.
    pub fn done(&self, key: &str) {
        let mut inner = self.inner.lock();
        if inner
            .entries
            .get(key)
            .is_some_and(|e| e.at == Where::InFlight)
        {
            inner.entries.remove(key);
        }
    }

    /// The attempt failed: back to unschedulable (or backoff after an error, or when a move
    /// request came during the attempt).
    pub fn requeue(&self, key: &str, plugins: HashSet<&'static str>, cycle: u64, error: bool) {
        let mut inner = self.inner.lock();
        let move_cycle = inner.move_request_cycle;
        let Some(e) = inner.entries.get_mut(key) else {
            return;
        };
        if e.at != Where::InFlight {
            return;
        }
        e.pod.unschedulable_plugins = plugins;
        e.pod.failed_at = Instant::now();
        e.at = if error || move_cycle >= cycle {
            Where::Backoff
        } else {
            Where::Unschedulable
        };
        if e.at == Where::Backoff {
            // An idle `pop` may take it from backoffQ.
            self.ready.notify_one();
        }
    }

    /// A cluster event: move the unschedulable pods a rejecting plugin registered it for.
    pub fn on_event(&self, event: ClusterEvent) {
        let mut inner = self.inner.lock();
        inner.move_request_cycle = inner.scheduling_cycle;
        let now = Instant::now();
        let mut to_active = Vec::new();
        for (key, e) in inner.entries.iter_mut() {
            if e.at != Where::Unschedulable || e.pod.gated {
                continue;
            }
            let name = e
                .pod
                .info
                .spec()
                .scheduler_name
                .as_deref()
                .unwrap_or(crate::config::DEFAULT_SCHEDULER_NAME);
            let fwk = self.frameworks.get(name).unwrap_or(&self.sort);
            let interested = e.pod.unschedulable_plugins.is_empty()
                || e.pod
                    .unschedulable_plugins
                    .iter()
                    .any(|p| fwk.events_of(p).contains(&event));
            if !interested {
                continue;
            }
            if self.backing_off(&e.pod, now) {
                e.at = Where::Backoff;
                self.ready.notify_one();
            } else {
                to_active.push(key.clone());
            }
        }
        for key in to_active {
            self.to_active(&mut inner, &key);
        }
    }

    /// The periodic work: backoffQ → activeQ when the backoff ended (every second), and the
    /// five-minute safety flush of unschedulable pods.
    pub fn flush(&self) {
        let mut inner = self.inner.lock();
        let now = Instant::now();
        let mut ready = Vec::new();
        for (key, e) in inner.entries.iter() {
            match e.at {
                Where::Backoff if !self.backing_off(&e.pod, now) => ready.push(key.clone()),
                Where::Unschedulable
                    if !e.pod.gated
                        && now.duration_since(e.pod.failed_at) > MAX_UNSCHEDULABLE_DURATION =>
                {
                    ready.push(key.clone())
                }
                _ => {}
            }
        }
        for key in ready {
            self.to_active(&mut inner, &key);
        }
    }

    pub fn close(&self) {
        self.inner.lock().closed = true;
        self.ready.notify_all();
    }

    pub fn pending(&self) -> Pending {
        let inner = self.inner.lock();
        let mut p = Pending::default();
        for e in inner.entries.values() {
            match e.at {
                Where::Active => p.active += 1,
                Where::Backoff => p.backoff += 1,
                Where::Unschedulable if e.pod.gated => p.gated += 1,
                Where::Unschedulable => p.unschedulable += 1,
                Where::InFlight => {}
            }
        }
        p
    }

    fn record_nomination(&self, inner: &mut Inner, info: &Arc<PodInfo>) {
        let nominated = info
            .pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.clone())
            .filter(|n| !n.is_empty());
        match nominated {
            Some(node) => Self::nominate(inner, info.clone(), node),
            None => {
                // Keep an in-memory nomination until the status catches up.
                if let Some(node) = inner.nominated_node_of.get(&info.key).cloned() {
                    Self::nominate(inner, info.clone(), node);
                }
            }
        }
    }

    fn nominate(inner: &mut Inner, info: Arc<PodInfo>, node: String) {
        Self::clear_nomination(inner, &info.key);
        inner
            .nominated_node_of
            .insert(info.key.clone(), node.clone());
        inner.nominated.entry(node).or_default().push(info);
    }

    fn clear_nomination(inner: &mut Inner, key: &str) {
        if let Some(node) = inner.nominated_node_of.remove(key) {
            if let Some(v) = inner.nominated.get_mut(&node) {
                v.retain(|p| p.key != key);
                if v.is_empty() {
                    inner.nominated.remove(&node);
                }
            }
        }
    }

    /// Records that `info` was nominated to `node` by preemption.
    pub fn add_nominated(&self, info: Arc<PodInfo>, node: &str) {
        Self::nominate(&mut self.inner.lock(), info, node.to_string());
    }

    /// Removes a nomination (the pod got scheduled or its nomination was cleared).
    pub fn remove_nominated(&self, key: &str) {
        Self::clear_nomination(&mut self.inner.lock(), key);
    }

    /// The pods nominated to each node.
    pub fn nominated(&self) -> HashMap<String, Vec<Arc<PodInfo>>> {
        let inner = self.inner.lock();
        if inner.nominated.is_empty() {
            return HashMap::new();
        }
        inner.nominated.clone()
    }
}

/// Whether an update changed more than the pod's status and bookkeeping (upstream's
/// `isPodUpdated`: resourceVersion, generation, managedFields, finalizers and status do not count).
fn pod_updated(old: &Pod, new: &Pod) -> bool {
    let strip = |p: &Pod| {
        let mut m = p.metadata.clone();
        m.resource_version = None;
        m.generation = None;
        m.managed_fields = None;
        m.finalizers = None;
        m
    };
    old.spec != new.spec || strip(old) != strip(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::framework::Handle;
    use crate::plugins::testing::pod;

    fn queue() -> SchedulingQueue {
        queue_with_backoff(Duration::from_millis(1), Duration::from_millis(4))
    }

    fn queue_with_backoff(initial: Duration, max: Duration) -> SchedulingQueue {
        let c = Config::default();
        let mut reg = crate::plugins::registry();
        reg.get_mut("DefaultBinder").unwrap().factory = Arc::new(|_, _| {
            Ok(Arc::new(crate::plugins::NodeName) as Arc<dyn crate::framework::Plugin>)
        });
        let fwk = Framework::new(
            &c.profiles[0],
            &reg,
            &Handle {
                client: None,
                parallelism: 1,
            },
        )
        .unwrap();
        let mut m = HashMap::new();
        m.insert("default-scheduler".to_string(), Arc::new(fwk));
        SchedulingQueue::new(m, initial, max)
    }

    fn info(name: &str, priority: i32) -> Arc<PodInfo> {
        let mut p = pod(name);
        p.spec.as_mut().unwrap().priority = Some(priority);
        Arc::new(PodInfo::new(Arc::new(p)))
    }

    /// With activeQ empty, a pod still backing off after a plugin rejection is tried at once
    /// (SchedulerPopFromBackoffQ); one that failed with an error is not. Pods in activeQ come
    /// first.
    #[test]
    fn an_idle_queue_pops_rejected_pods_from_backoff_but_not_errors() {
        let q = Arc::new(queue_with_backoff(
            Duration::from_secs(60),
            Duration::from_secs(60),
        ));
        q.add(info("rejected", 0));
        q.add(info("errored", 0));
        let (a, ca) = q.pop().unwrap();
        let (b, cb) = q.pop().unwrap();
        // A move during both attempts: the rejected one goes to backoffQ, as does the error.
        q.on_event(ClusterEvent::NodeAdd);
        q.requeue(&a.info.key, ["NodeResourcesFit"].into(), ca, false);
        q.requeue(&b.info.key, HashSet::new(), cb, true);
        assert_eq!(q.pending().backoff, 2);
        q.add(info("new", 0));
        assert_eq!(q.pop().unwrap().0.info.name, "new", "activeQ first");
        let (again, _) = q.pop().unwrap();
        assert_eq!(
            again.info.name, a.info.name,
            "taken from backoffQ long before its 60 s"
        );
        assert_eq!(again.attempts, 2);
        // Only the errored pod is left, backing off: pop waits until something else arrives.
        let waiter = {
            let q = q.clone();
            std::thread::spawn(move || q.pop().map(|(p, _)| p.info.name.clone()))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !waiter.is_finished(),
            "an errored pod waits out its backoff"
        );
        q.add(info("late", 0));
        assert_eq!(waiter.join().unwrap().as_deref(), Some("late"));
        assert_eq!(q.pending().backoff, 1);
    }

    #[test]
    fn active_queue_orders_by_priority_then_arrival() {
        let q = queue();
        q.add(info("low", 1));
        q.add(info("high", 10));
        q.add(info("low2", 1));
        let order: Vec<String> = (0..3)
            .map(|_| q.pop().unwrap().0.info.name.clone())
            .collect();
        assert_eq!(order, ["high", "low", "low2"]);
    }

    #[test]
    fn unschedulable_pods_move_only_on_registered_events() {
        let q = queue();
        q.add(info("p", 0));
        let (p, cycle) = q.pop().unwrap();
        q.requeue(&p.info.key, ["NodeResourcesFit"].into(), cycle, false);
        assert_eq!(q.pending().unschedulable, 1);
        // ImageLocality registers nothing; a namespace change is not a Fit event.
        q.on_event(ClusterEvent::NamespaceChange);
        assert_eq!(q.pending().unschedulable, 1);
        std::thread::sleep(Duration::from_millis(5));
        q.on_event(ClusterEvent::NodeAdd);
        assert_eq!(q.pending().active, 1);
    }

    #[test]
    fn a_move_during_the_attempt_sends_the_pod_to_backoff() {
        let q = queue();
        q.add(info("p", 0));
        let (p, cycle) = q.pop().unwrap();
        q.on_event(ClusterEvent::NodeAdd);
        q.requeue(&p.info.key, ["NodeResourcesFit"].into(), cycle, false);
        assert_eq!(q.pending().backoff, 1);
        std::thread::sleep(Duration::from_millis(5));
        q.flush();
        assert_eq!(q.pending().active, 1);
    }

    #[test]
    fn gated_pods_wait_for_their_gates_to_go() {
        let q = queue();
        let mut p = pod("gated");
        p.spec.as_mut().unwrap().scheduling_gates =
            Some(vec![k8s_openapi::api::core::v1::PodSchedulingGate {
                name: "example.com/wait".into(),
            }]);
        q.add(Arc::new(PodInfo::new(Arc::new(p.clone()))));
        assert_eq!(q.pending().gated, 1);
        q.on_event(ClusterEvent::NodeAdd);
        assert_eq!(q.pending().gated, 1);
        p.spec.as_mut().unwrap().scheduling_gates = None;
        q.update(Arc::new(PodInfo::new(Arc::new(p))));
        assert_eq!(q.pending().active, 1);
    }

    #[test]
    fn a_status_only_update_leaves_an_unschedulable_pod_where_it_is() {
        let q = queue();
        q.add(info("p", 0));
        let (p, cycle) = q.pop().unwrap();
        q.requeue(&p.info.key, ["NodeResourcesFit"].into(), cycle, false);
        std::thread::sleep(Duration::from_millis(5));
        // Our own PodScheduled=False write comes back through the informer.
        let mut written = (*p.info.pod).clone();
        written.metadata.resource_version = Some("2".into());
        written.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Pending".into()),
            ..Default::default()
        });
        q.update(Arc::new(PodInfo::new(Arc::new(written.clone()))));
        assert_eq!(q.pending().unschedulable, 1, "status-only: not moved");
        // A change of what Fit looks at (the requests) moves it.
        written.spec.as_mut().unwrap().containers[0].resources = Some(Default::default());
        written.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
        q.update(Arc::new(PodInfo::new(Arc::new(written))));
        assert_eq!(q.pending().active, 1, "a spec change moves it");
    }
}

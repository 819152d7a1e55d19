//! The watches that feed the scheduler (upstream `eventhandlers.go`): nodes and assigned pods go
//! to the cache, unassigned pods of our profiles to the queue, and every change that may make an
//! unschedulable pod schedulable is turned into a `ClusterEvent` for the queue. Namespaces,
//! claims, volumes, storage classes, PDBs and the owners whose selectors feed PodTopologySpread's default
//! constraints are kept as snapshots-to-be in `ClusterObjects`.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{
    Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, ReplicationController, Service,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use machinery::informer::{HandlerFns, Informer, InformerFactory};

use crate::framework::ClusterEvent;
use crate::labels::Selector;
use crate::nodeinfo::PodInfo;
use crate::Scheduler;

fn assigned(p: &Pod) -> bool {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}

fn finished(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// Whether a node update can make a pod fit (upstream's node update QueueingHints): labels,
/// taints, allocatable, unschedulable or images changed; heartbeats do not count.
fn node_changed(old: &Node, new: &Node) -> bool {
    old.metadata.labels != new.metadata.labels
        || old.spec.as_ref().map(|s| (&s.taints, s.unschedulable))
            != new.spec.as_ref().map(|s| (&s.taints, s.unschedulable))
        || old.status.as_ref().map(|s| (&s.allocatable, &s.images))
            != new.status.as_ref().map(|s| (&s.allocatable, &s.images))
}

/// Registers every handler on `factory`'s informers (start the factory afterwards).
pub fn register(sched: &Arc<Scheduler>, factory: &InformerFactory) {
    let (s1, s2, s3) = (sched.clone(), sched.clone(), sched.clone());
    factory.informer::<Node>().add_handler(HandlerFns {
        add: Some(Box::new(move |n: &Arc<Node>| {
            s1.cache.add_node(n.clone());
            s1.queue.on_event(ClusterEvent::NodeAdd);
        })),
        update: Some(Box::new(move |old: &Arc<Node>, new: &Arc<Node>| {
            s2.cache.add_node(new.clone());
            if node_changed(old, new) {
                s2.queue.on_event(ClusterEvent::NodeUpdate);
            }
        })),
        delete: Some(Box::new(move |n: &Arc<Node>| {
            s3.cache
                .remove_node(n.metadata.name.as_deref().unwrap_or_default());
            s3.queue.on_event(ClusterEvent::NodeDelete);
        })),
    });

    let (s1, s2, s3) = (sched.clone(), sched.clone(), sched.clone());
    factory.informer::<Pod>().add_handler(HandlerFns {
        add: Some(Box::new(move |p: &Arc<Pod>| pod_add(&s1, p))),
        update: Some(Box::new(move |old: &Arc<Pod>, new: &Arc<Pod>| {
            if assigned(new) {
                let key = machinery::informer::key_of(new.as_ref());
                if !assigned(old) {
                    // Our binding (or someone else's) landed.
                    s2.queue.delete(&key);
                }
                if finished(new) {
                    s2.cache.remove_pod(&key);
                    s2.queue.on_event(ClusterEvent::AssignedPodDelete);
                    return;
                }
                s2.cache.add_or_update_pod(new.clone());
                if assigned(old) && old.metadata.labels != new.metadata.labels {
                    s2.queue.on_event(ClusterEvent::AssignedPodUpdate);
                } else if !assigned(old) {
                    s2.queue.on_event(ClusterEvent::AssignedPodAdd);
                }
            } else if s2.responsible_for(new) {
                if new.metadata.deletion_timestamp.is_some() {
                    s2.queue.delete(&machinery::informer::key_of(new.as_ref()));
                } else {
                    s2.queue.update(Arc::new(PodInfo::new(new.clone())));
                }
            }
        })),
        delete: Some(Box::new(move |p: &Arc<Pod>| {
            let key = machinery::informer::key_of(p.as_ref());
            if assigned(p) {
                s3.cache.remove_pod(&key);
                s3.queue.on_event(ClusterEvent::AssignedPodDelete);
            }
            s3.queue.delete(&key);
        })),
    });

    // Namespaces: their labels, for namespaceSelectors.
    let ns_inf = factory.informer::<Namespace>();
    let (s, inf) = (sched.clone(), ns_inf.clone());
    ns_inf.add_handler(on_any(move || {
        let map: HashMap<_, _> = inf
            .list()
            .iter()
            .map(|n| {
                (
                    n.metadata.name.clone().unwrap_or_default(),
                    n.metadata.labels.clone().unwrap_or_default(),
                )
            })
            .collect();
        *s.objects.namespaces.lock() = Arc::new(map);
        s.queue.on_event(ClusterEvent::NamespaceChange);
    }));

    // Claims, volumes and storage classes.
    let pvc = factory.informer::<PersistentVolumeClaim>();
    let pv = factory.informer::<PersistentVolume>();
    let sc = factory.informer::<StorageClass>();
    let refresh_volumes = {
        let (s, pvc, pv, sc) = (sched.clone(), pvc.clone(), pv.clone(), sc.clone());
        Arc::new(move |event: ClusterEvent| {
            let state = crate::plugins::volumes::VolumeState {
                claims: pvc
                    .list()
                    .into_iter()
                    .map(|c| (machinery::informer::key_of(c.as_ref()), c))
                    .collect(),
                volumes: pv
                    .list()
                    .into_iter()
                    .map(|v| (v.metadata.name.clone().unwrap_or_default(), v))
                    .collect(),
                classes: sc
                    .list()
                    .into_iter()
                    .map(|c| (c.metadata.name.clone().unwrap_or_default(), c))
                    .collect(),
            };
            *s.objects.volumes.lock() = Arc::new(state);
            s.queue.on_event(event);
        })
    };
    let r = refresh_volumes.clone();
    pvc.add_handler(on_any(move || r(ClusterEvent::PvcChange)));
    let r = refresh_volumes.clone();
    pv.add_handler(on_any(move || r(ClusterEvent::PvChange)));
    let r = refresh_volumes;
    sc.add_handler(on_any(move || r(ClusterEvent::StorageClassChange)));

    // PodDisruptionBudgets for preemption.
    let pdb = factory.informer::<PodDisruptionBudget>();
    let (s, inf) = (sched.clone(), pdb.clone());
    pdb.add_handler(on_any(move || {
        *s.objects.pdbs.lock() = Arc::new(inf.list());
        s.queue.on_event(ClusterEvent::PdbChange);
    }));

    // Owners' selectors for PodTopologySpread's default constraints.
    let svc = factory.informer::<Service>();
    let rs = factory.informer::<ReplicaSet>();
    let rc = factory.informer::<ReplicationController>();
    let ss = factory.informer::<StatefulSet>();
    let refresh_owners = {
        let (s, svc, rs, rc, ss) = (
            sched.clone(),
            svc.clone(),
            rs.clone(),
            rc.clone(),
            ss.clone(),
        );
        Arc::new(move || {
            let mut m: HashMap<String, Vec<Selector>> = HashMap::new();
            let mut add = |ns: Option<&String>, sel: Selector| {
                m.entry(ns.cloned().unwrap_or_default())
                    .or_default()
                    .push(sel);
            };
            for o in svc.list() {
                if let Some(sel) = o
                    .spec
                    .as_ref()
                    .and_then(|s| s.selector.as_ref())
                    .filter(|s| !s.is_empty())
                {
                    add(o.metadata.namespace.as_ref(), Selector::from_map(sel));
                }
            }
            for o in rc.list() {
                if let Some(sel) = o
                    .spec
                    .as_ref()
                    .and_then(|s| s.selector.as_ref())
                    .filter(|s| !s.is_empty())
                {
                    add(o.metadata.namespace.as_ref(), Selector::from_map(sel));
                }
            }
            for o in rs.list() {
                if let Some(spec) = o.spec.as_ref() {
                    add(
                        o.metadata.namespace.as_ref(),
                        Selector::from_label_selector(Some(&spec.selector)),
                    );
                }
            }
            for o in ss.list() {
                if let Some(spec) = o.spec.as_ref() {
                    add(
                        o.metadata.namespace.as_ref(),
                        Selector::from_label_selector(Some(&spec.selector)),
                    );
                }
            }
            *s.objects.owner_selectors.lock() = Arc::new(m);
        })
    };
    let r = refresh_owners.clone();
    svc.add_handler(on_any(move || r()));
    let r = refresh_owners.clone();
    rs.add_handler(on_any(move || r()));
    let r = refresh_owners.clone();
    rc.add_handler(on_any(move || r()));
    let r = refresh_owners;
    ss.add_handler(on_any(move || r()));
}

fn pod_add(s: &Arc<Scheduler>, p: &Arc<Pod>) {
    if assigned(p) {
        if finished(p) {
            return;
        }
        let key = machinery::informer::key_of(p.as_ref());
        s.queue.delete(&key);
        s.cache.add_or_update_pod(p.clone());
        s.queue.on_event(ClusterEvent::AssignedPodAdd);
    } else if s.responsible_for(p) && p.metadata.deletion_timestamp.is_none() {
        s.queue.add(Arc::new(PodInfo::new(p.clone())));
    }
}

/// A handler that runs `f` on any change of an informer's objects.
fn on_any<K: Send + Sync + 'static>(f: impl Fn() + Send + Sync + 'static) -> HandlerFns<K> {
    let f = Arc::new(f);
    let (a, u, d) = (f.clone(), f.clone(), f);
    HandlerFns {
        add: Some(Box::new(move |_: &Arc<K>| a())),
        update: Some(Box::new(move |_: &Arc<K>, _: &Arc<K>| u())),
        delete: Some(Box::new(move |_: &Arc<K>| d())),
    }
}

/// Keeps the informer type in scope for embedders that build their own factory.
pub type PodInformer = Informer<Pod>;

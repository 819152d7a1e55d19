//! The scheduler cache (upstream `internal/cache`): nodes and the pods placed on them, from the
//! informers, plus *assumed* pods — placed by this scheduler before the API has confirmed the
//! binding, so the next cycle already sees the node's resources as used. The binding's own
//! watch event confirms an assumed pod; a failed binding forgets it.
//!
//! Node infos are copy-on-write (`Arc::make_mut`), and the cache remembers which nodes changed
//! since the last snapshot, so `update_snapshot` replaces only those: a cycle on 5,000 nodes
//! copies pointers for the few that changed, not the cluster.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use parking_lot::Mutex;

use crate::nodeinfo::{NodeInfo, PodInfo, Snapshot};

struct PodState {
    node: String,
    assumed: bool,
}

#[derive(Default)]
struct Inner {
    nodes: HashMap<String, Arc<NodeInfo>>,
    /// Nodes (with a Node object) in the order they were added.
    order: Vec<String>,
    pods: HashMap<String, PodState>,
    dirty: HashSet<String>,
    structure_changed: bool,
    images_changed: bool,
}

#[derive(Default)]
pub struct Cache {
    inner: Mutex<Inner>,
}

impl Inner {
    fn node_mut(&mut self, name: &str) -> &mut NodeInfo {
        self.dirty.insert(name.to_string());
        let e = self.nodes.entry(name.to_string()).or_insert_with(|| {
            Arc::new(NodeInfo {
                name: name.to_string(),
                ..Default::default()
            })
        });
        Arc::make_mut(e)
    }

    fn add_pod(&mut self, info: Arc<PodInfo>, node: &str, assumed: bool) {
        let key = info.key.clone();
        self.node_mut(node).add_pod(info);
        self.pods.insert(
            key,
            PodState {
                node: node.to_string(),
                assumed,
            },
        );
    }

    fn remove_pod(&mut self, key: &str) -> Option<PodState> {
        let st = self.pods.remove(key)?;
        let node = st.node.clone();
        self.node_mut(&node).remove_pod(key);
        // A node info with neither a Node nor pods goes.
        if self
            .nodes
            .get(&node)
            .is_some_and(|n| n.node.is_none() && n.pods.is_empty())
        {
            self.nodes.remove(&node);
        }
        Some(st)
    }
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

impl Cache {
    pub fn new() -> Self {
        Cache::default()
    }

    pub fn add_node(&self, node: Arc<Node>) {
        let mut inner = self.inner.lock();
        let name = node.metadata.name.clone().unwrap_or_default();
        let had = inner.nodes.get(&name).is_some_and(|n| n.node.is_some());
        inner.node_mut(&name).set_node(node);
        if !had {
            inner.order.push(name);
            inner.structure_changed = true;
        }
        inner.images_changed = true;
    }

    pub fn remove_node(&self, name: &str) {
        let mut inner = self.inner.lock();
        inner.order.retain(|n| n != name);
        inner.structure_changed = true;
        inner.images_changed = true;
        let empty = {
            let n = inner.node_mut(name);
            n.node = None;
            n.pods.is_empty()
        };
        if empty {
            inner.nodes.remove(name);
        }
    }

    /// An assigned pod from the informer (add or update); confirms an assumed pod.
    pub fn add_or_update_pod(&self, pod: Arc<Pod>) {
        let Some(node) = node_of(&pod) else { return };
        let node = node.to_string();
        let info = Arc::new(PodInfo::new(pod));
        let mut inner = self.inner.lock();
        inner.remove_pod(&info.key.clone());
        inner.add_pod(info, &node, false);
    }

    pub fn remove_pod(&self, key: &str) {
        self.inner.lock().remove_pod(key);
    }

    /// Places `info` on `node` before the binding is confirmed.
    pub fn assume(&self, info: Arc<PodInfo>, node: &str) {
        let mut inner = self.inner.lock();
        if inner.pods.contains_key(&info.key) {
            return;
        }
        inner.add_pod(info, node, true);
    }

    /// The binding failed: drop an assumed pod.
    pub fn forget(&self, key: &str) {
        let mut inner = self.inner.lock();
        if inner.pods.get(key).is_some_and(|p| p.assumed) {
            inner.remove_pod(key);
        }
    }

    /// Whether the pod is placed (assumed or confirmed).
    pub fn has_pod(&self, key: &str) -> bool {
        self.inner.lock().pods.contains_key(key)
    }

    pub fn node_count(&self) -> usize {
        self.inner.lock().order.len()
    }

    /// Brings `snap` up to date, copying only the nodes that changed.
    pub fn update_snapshot(&self, snap: &mut Snapshot) {
        let mut inner = self.inner.lock();
        if inner.structure_changed {
            snap.nodes = inner
                .order
                .iter()
                .filter_map(|n| inner.nodes.get(n).cloned())
                .collect();
            snap.index = snap
                .nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (n.name.clone(), i))
                .collect();
            inner.structure_changed = false;
            inner.dirty.clear();
            snap.recompute_affinity_lists();
        } else if !inner.dirty.is_empty() {
            let mut affinity_changed = false;
            let dirty: Vec<String> = inner.dirty.drain().collect();
            for name in dirty {
                if let (Some(i), Some(n)) = (snap.index.get(&name), inner.nodes.get(&name)) {
                    let old = &snap.nodes[*i];
                    affinity_changed |= old.pods_with_affinity != n.pods_with_affinity
                        || old.pods_with_required_anti_affinity
                            != n.pods_with_required_anti_affinity;
                    snap.nodes[*i] = n.clone();
                }
            }
            if affinity_changed {
                snap.recompute_affinity_lists();
            }
        }
        if inner.images_changed {
            inner.images_changed = false;
            snap.recompute_images();
        }
    }
}

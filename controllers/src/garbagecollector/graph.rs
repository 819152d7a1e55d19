//! The owner graph (upstream `graph.go` and `graph_builder.go`): one node per object that the
//! garbage collector watches, with its owner references, and the reverse index from an owner's
//! UID to its dependents. It is fed by informer events and tells the collector what to look at:
//! a dependent whose owner is unknown or gone, an owner being deleted in the foreground, an owner
//! whose dependents must be orphaned.

use std::collections::{HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";

/// One object.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// `apiVersion` and `kind`.
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub owners: Vec<OwnerReference>,
    pub deleting: bool,
    pub finalizers: Vec<String>,
}

impl Node {
    pub fn from_meta(api_version: &str, kind: &str, meta: &ObjectMeta) -> Node {
        Node {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            owners: meta.owner_references.clone().unwrap_or_default(),
            deleting: meta.deletion_timestamp.is_some(),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
        }
    }

    /// Being deleted in the foreground: waits for its blocking dependents.
    pub fn deleting_dependents(&self) -> bool {
        self.deleting && self.finalizers.iter().any(|f| f == FOREGROUND)
    }

    /// Being deleted with its dependents orphaned.
    pub fn orphaning(&self) -> bool {
        self.deleting && self.finalizers.iter().any(|f| f == ORPHAN)
    }
}

/// What the graph asks the collector to do after a change.
#[derive(Debug, Default, PartialEq)]
pub struct Work {
    /// UIDs to check with `attemptToDelete`.
    pub delete: Vec<String>,
    /// UIDs of owners whose dependents are to be orphaned.
    pub orphan: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    pub fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The nodes that name `uid` as an owner.
    pub fn dependents(&self, uid: &str) -> Vec<Node> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| self.nodes.get(d).cloned())
            .collect()
    }

    /// An object was added or changed.
    pub fn upsert(&mut self, node: Node) -> Work {
        let mut work = Work::default();
        let uid = node.uid.clone();
        let old = self.nodes.get(&uid).cloned();
        if old.as_ref() == Some(&node) {
            return work;
        }
        let old_owners: HashSet<String> = old
            .iter()
            .flat_map(|o| o.owners.iter().map(|r| r.uid.clone()))
            .collect();
        let new_owners: HashSet<String> = node.owners.iter().map(|r| r.uid.clone()).collect();
        for gone in old_owners.difference(&new_owners) {
            if let Some(set) = self.dependents.get_mut(gone) {
                set.remove(&uid);
                if set.is_empty() {
                    self.dependents.remove(gone);
                }
            }
            // An owner waiting for its dependents may be done now.
            if self.nodes.get(gone).is_some_and(Node::deleting_dependents) {
                work.delete.push(gone.clone());
            }
        }
        for added in new_owners.difference(&old_owners) {
            self.dependents
                .entry(added.clone())
                .or_default()
                .insert(uid.clone());
        }
        // A dependent whose owner the graph does not know (yet): check it.
        if node.owners.iter().any(|r| !self.nodes.contains_key(&r.uid)) {
            work.delete.push(uid.clone());
        }
        if node.orphaning() {
            work.orphan.push(uid.clone());
        }
        if node.deleting_dependents() {
            work.delete.push(uid.clone());
            for d in self.dependents.get(&uid).into_iter().flatten() {
                work.delete.push(d.clone());
            }
        }
        // A dependent that started deleting releases a foreground owner later; check owners now
        // too, in case it had already gone.
        if node.deleting {
            for r in &node.owners {
                if self
                    .nodes
                    .get(&r.uid)
                    .is_some_and(Node::deleting_dependents)
                {
                    work.delete.push(r.uid.clone());
                }
            }
        }
        self.nodes.insert(uid, node);
        work
    }

    /// An object was deleted: its dependents may now be garbage, and a foreground owner of it may
    /// be able to finish.
    pub fn remove(&mut self, uid: &str) -> Work {
        let mut work = Work::default();
        let Some(node) = self.nodes.remove(uid) else {
            return work;
        };
        work.delete
            .extend(self.dependents.get(uid).into_iter().flatten().cloned());
        for r in &node.owners {
            if let Some(set) = self.dependents.get_mut(&r.uid) {
                set.remove(uid);
                if set.is_empty() {
                    self.dependents.remove(&r.uid);
                }
            }
            if self
                .nodes
                .get(&r.uid)
                .is_some_and(Node::deleting_dependents)
            {
                work.delete.push(r.uid.clone());
            }
        }
        work
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(uid: &str, owners: &[&str]) -> Node {
        Node {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: "ns".into(),
            name: uid.into(),
            uid: uid.into(),
            owners: owners
                .iter()
                .map(|o| OwnerReference {
                    uid: o.to_string(),
                    name: o.to_string(),
                    kind: "ConfigMap".into(),
                    api_version: "v1".into(),
                    block_owner_deletion: Some(true),
                    controller: None,
                })
                .collect(),
            deleting: false,
            finalizers: vec![],
        }
    }

    #[test]
    fn dependents_of_a_deleted_owner_are_checked() {
        let mut g = Graph::default();
        assert!(g.upsert(node("owner", &[])).delete.is_empty());
        assert!(
            g.upsert(node("dep", &["owner"])).delete.is_empty(),
            "owner known"
        );
        assert_eq!(g.dependents("owner").len(), 1);
        assert_eq!(g.remove("owner").delete, ["dep"]);
        // An owner the graph has never seen: the dependent is checked.
        assert_eq!(g.upsert(node("dep2", &["ghost"])).delete, ["dep2"]);
    }

    #[test]
    fn foreground_and_orphan_deletion_produce_work() {
        let mut g = Graph::default();
        g.upsert(node("owner", &[]));
        g.upsert(node("dep", &["owner"]));
        let mut deleting = node("owner", &[]);
        deleting.deleting = true;
        deleting.finalizers = vec![FOREGROUND.into()];
        let w = g.upsert(deleting);
        assert_eq!(w.delete, ["owner", "dep"]);
        // The dependent goes away: the owner is looked at again.
        assert_eq!(g.remove("dep").delete, ["owner"]);
        let mut orphaning = node("o2", &[]);
        orphaning.deleting = true;
        orphaning.finalizers = vec![ORPHAN.into()];
        assert_eq!(g.upsert(orphaning).orphan, ["o2"]);
    }
}

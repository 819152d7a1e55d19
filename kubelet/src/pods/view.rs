//! [`PodView`]: the pods the kubelet knows, by namespace and name, for readers outside the pod
//! manager (the kubelet server's `/containerLogs`, later `/pods`, `/exec`, `/attach`). Upstream's
//! server asks the pod manager (`GetPodByName`); here the manager is the one writer of a shared
//! map and readers get cheap clones of the pods.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use parking_lot::RwLock;

/// Pods by (namespace, name).
type PodsByName = HashMap<(String, String), Arc<Pod>>;

/// A shared, cloneable view of the pods bound to this node. Only the pod manager writes it.
#[derive(Clone, Debug, Default)]
pub struct PodView {
    pods: Arc<RwLock<PodsByName>>,
}

impl PodView {
    /// The pod `namespace/name`, as last seen.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        self.pods
            .read()
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Every pod known.
    pub fn all(&self) -> Vec<Arc<Pod>> {
        self.pods.read().values().cloned().collect()
    }

    /// Records the newest version of a pod (the pod manager's writer side).
    pub(crate) fn upsert(&self, pod: &Pod) {
        self.pods.write().insert(key(pod), Arc::new(pod.clone()));
    }

    /// Forgets a pod that is gone from its source.
    pub(crate) fn remove(&self, pod: &Pod) {
        self.pods.write().remove(&key(pod));
    }
}

fn key(pod: &Pod) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_the_writers_pods() {
        let view = PodView::default();
        let reader = view.clone();
        let mut pod = Pod::default();
        pod.metadata.namespace = Some("ns".into());
        pod.metadata.name = Some("p".into());
        view.upsert(&pod);
        assert!(reader.get("ns", "p").is_some());
        assert!(reader.get("ns", "q").is_none());
        assert_eq!(reader.all().len(), 1);
        view.remove(&pod);
        assert!(reader.get("ns", "p").is_none());
    }
}

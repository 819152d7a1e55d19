//! The pod garbage collector (upstream's pkg/controller/podgc). Every period it deletes:
//!
//! - terminated pods (Succeeded or Failed) above `--terminated-pod-gc-threshold`, oldest first
//!   (0 turns this off);
//! - pods terminating on a node that is not ready and carries the
//!   `node.kubernetes.io/out-of-service` taint (force-deleted: the node will not finish them);
//! - pods bound to a node that no longer exists, once the node has been missing for the
//!   quarantine time (20 s upstream; a lagging informer must not cost pods) and the API server
//!   confirms it is gone;
//! - unscheduled pods that are terminating (no kubelet will confirm them).
//!
//! Pods that are not terminal yet are first marked Failed with the DisruptionTarget condition
//! (reason DeletionByPodGC), as upstream, then deleted with a zero grace period.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use machinery::informer::Informer;

use crate::ControllerContext;

/// How often the collector runs and how long a missing node is waited for.
#[derive(Debug, Clone)]
pub struct Config {
    pub period: Duration,
    pub quarantine: Duration,
    pub terminated_threshold: usize,
}

/// Upstream's `gcCheckPeriod` and `quarantineTime`.
pub const GC_CHECK_PERIOD: Duration = Duration::from_secs(20);
pub const QUARANTINE_TIME: Duration = Duration::from_secs(40);
const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";

/// Runs the pod GC with upstream's timing.
pub async fn start(ctx: ControllerContext) -> anyhow::Result<()> {
    let config = Config {
        period: GC_CHECK_PERIOD,
        quarantine: QUARANTINE_TIME,
        terminated_threshold: ctx.options.terminated_pod_gc_threshold,
    };
    start_with(ctx, config).await
}

/// Runs the pod GC with explicit timing (tests use short ones).
pub async fn start_with(ctx: ControllerContext, config: Config) -> anyhow::Result<()> {
    let pods = ctx.informers.informer::<Pod>();
    let nodes = ctx.informers.informer::<Node>();
    ctx.informers.start();
    ctx.informers.wait_synced().await;
    let mut gc = PodGc {
        client: ctx.client.clone(),
        pods,
        nodes,
        config,
        missing_since: HashMap::new(),
    };
    loop {
        if let Err(e) = gc.run_once().await {
            tracing::warn!("podgc: {e}");
        }
        tokio::time::sleep(gc.config.period).await;
    }
}

struct PodGc {
    client: kube::Client,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    config: Config,
    /// Nodes that pods are bound to but the informer does not have, since when.
    missing_since: HashMap<String, Instant>,
}

fn is_terminated(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

fn node_name(p: &Pod) -> &str {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
}

/// Which terminated pods go to keep at most `threshold` (upstream orders evicted... then by
/// creation time, oldest first).
pub fn terminated_to_delete(pods: &[Arc<Pod>], threshold: usize) -> Vec<Arc<Pod>> {
    if threshold == 0 {
        return Vec::new();
    }
    let mut terminated: Vec<Arc<Pod>> = pods.iter().filter(|p| is_terminated(p)).cloned().collect();
    if terminated.len() <= threshold {
        return Vec::new();
    }
    let n = terminated.len() - threshold;
    terminated.sort_by(|a, b| {
        let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        created(a)
            .cmp(&created(b))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    terminated.truncate(n);
    terminated
}

impl PodGc {
    async fn run_once(&mut self) -> anyhow::Result<()> {
        let pods = self.pods.list();
        for p in terminated_to_delete(&pods, self.config.terminated_threshold) {
            self.delete(&p, None).await?;
        }
        // Terminating pods on out-of-service nodes that are not ready.
        for p in &pods {
            if p.metadata.deletion_timestamp.is_none() {
                continue;
            }
            let Some(node) = self.nodes.get("", node_name(p)) else {
                continue;
            };
            let out_of_service = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|t| {
                    t.iter()
                        .any(|t| t.key == OUT_OF_SERVICE_TAINT && t.effect == "NoExecute")
                });
            if out_of_service && !node_ready(&node) {
                self.delete(p, Some("PodGC: node is out of service"))
                    .await?;
            }
        }
        // Orphans: pods on nodes that no longer exist.
        let mut missing: HashSet<String> = HashSet::new();
        for p in &pods {
            let n = node_name(p);
            if !n.is_empty() && self.nodes.get("", n).is_none() {
                missing.insert(n.to_string());
            }
        }
        self.missing_since.retain(|n, _| missing.contains(n));
        let now = Instant::now();
        for n in &missing {
            self.missing_since.entry(n.clone()).or_insert(now);
        }
        let nodes_api = Api::<Node>::all(self.client.clone());
        let mut gone: HashSet<String> = HashSet::new();
        for (n, since) in &self.missing_since {
            if since.elapsed() < self.config.quarantine {
                continue;
            }
            if nodes_api.get_opt(n).await?.is_none() {
                gone.insert(n.clone());
            }
        }
        for p in &pods {
            if gone.contains(node_name(p)) {
                self.delete(p, Some("PodGC: node no longer exists")).await?;
            }
        }
        // Unscheduled pods being deleted.
        for p in &pods {
            if p.metadata.deletion_timestamp.is_some() && node_name(p).is_empty() {
                self.delete(p, None).await?;
            }
        }
        Ok(())
    }

    /// Deletes `pod` with a zero grace period; with `why`, a pod that is not terminal is first
    /// marked Failed with the DisruptionTarget condition.
    async fn delete(&self, pod: &Pod, why: Option<&str>) -> anyhow::Result<()> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let api = Api::<Pod>::namespaced(self.client.clone(), ns);
        if let (Some(why), false) = (why, is_terminated(pod)) {
            let now = crate::endpoints::rfc3339(k8s_openapi::jiff::Timestamp::now());
            let mut conditions: Vec<serde_json::Value> = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .filter(|c| c.type_ != "DisruptionTarget")
                .map(|c| serde_json::to_value(c).unwrap_or_default())
                .collect();
            conditions.push(serde_json::json!({"type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC", "message": why, "lastTransitionTime": now}));
            let patch =
                serde_json::json!({"status": {"phase": "Failed", "conditions": conditions}});
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        tracing::info!("podgc: deleting pod {ns}/{name}");
        match api
            .delete(name, &DeleteParams::default().grace_period(0))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(name: &str, phase: &str, age_s: i64) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        let t = k8s_openapi::jiff::Timestamp::now()
            - k8s_openapi::jiff::SignedDuration::from_secs(age_s);
        p.metadata.creation_timestamp = Some(Time(t));
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            ..Default::default()
        });
        Arc::new(p)
    }

    #[test]
    fn oldest_terminated_pods_above_the_threshold_go() {
        let pods = vec![
            pod("new-done", "Succeeded", 10),
            pod("old-done", "Succeeded", 100),
            pod("running", "Running", 1000),
            pod("mid-failed", "Failed", 50),
        ];
        let names = |v: Vec<Arc<Pod>>| -> Vec<String> {
            v.iter().map(|p| p.metadata.name.clone().unwrap()).collect()
        };
        assert_eq!(
            names(terminated_to_delete(&pods, 1)),
            ["old-done", "mid-failed"]
        );
        assert!(terminated_to_delete(&pods, 3).is_empty());
        assert!(terminated_to_delete(&pods, 0).is_empty(), "0 turns it off");
    }
}

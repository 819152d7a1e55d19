//! The ResourceQuota controller (upstream's pkg/controller/resourcequota with the core
//! evaluators of pkg/quota/v1/evaluator/core): every quota's `status.hard` mirrors
//! `spec.hard`, and `status.used` is recalculated from what the namespace holds — when the
//! quota changes, when an object it counts changes (upstream's replenishment), and in a full
//! resync every five minutes (`--resource-quota-sync-period`). The API server's quota
//! admission charges creates to `status.used` in between; this controller corrects the
//! charge (e.g. for deleted or finished pods, or creates that failed after admission).
//!
//! Tracked: `pods` (not terminal), `requests.cpu`/`cpu`, `requests.memory`/`memory`,
//! `requests.ephemeral-storage`, `limits.cpu`, `limits.memory`, `services`,
//! `services.loadbalancers`, `services.nodeports`, `configmaps`, `secrets`,
//! `persistentvolumeclaims`, `requests.storage`, `replicationcontrollers`, `resourcequotas` and
//! `count/<resource>` of those. Quota scopes are not implemented. The usage arithmetic is the
//! same as apiserver-lite's quota admission (`apiserver_lite::quota`), on typed objects.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, ReplicationController, ResourceQuota, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, PostParams};
use machinery::informer::{key_of, split_key, HandlerFns, Informer, Object};
use machinery::quantity::{format_quantity, parse_quantity, NANO};
use machinery::workqueue::{run_workers, WorkQueue};

use crate::ControllerContext;

/// Upstream's default `--resource-quota-sync-period`.
pub const RESYNC_PERIOD: Duration = Duration::from_secs(300);

/// Usage in nano-units per resource name.
pub type Usage = BTreeMap<String, i128>;

fn add(u: &mut Usage, k: &str, v: i128) {
    *u.entry(k.to_string()).or_default() += v;
}

fn q(v: Option<&Quantity>) -> i128 {
    v.and_then(|q| parse_quantity(&q.0)).unwrap_or(0)
}

/// Whether a pod is charged beyond its object count (upstream's `QuotaV1Pod`): not terminal,
/// and not stuck terminating past its grace period (a lost node must not hold quota).
fn charged(pod: &Pod, now: k8s_openapi::jiff::Timestamp) -> bool {
    if matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        return false;
    }
    match (
        &pod.metadata.deletion_timestamp,
        pod.metadata.deletion_grace_period_seconds,
    ) {
        (Some(t), Some(grace)) => now <= t.0 + k8s_openapi::jiff::SignedDuration::from_secs(grace),
        _ => true,
    }
}

/// A pod's usage: `count/pods` always, the rest while it is charged.
pub fn pod_usage(pod: &Pod, now: k8s_openapi::jiff::Timestamp) -> Usage {
    let mut u = Usage::new();
    add(&mut u, "count/pods", NANO);
    if !charged(pod, now) {
        return u;
    }
    add(&mut u, "pods", NANO);
    let spec = pod.spec.clone().unwrap_or_default();
    for (kind, prefix) in [("requests", "requests."), ("limits", "limits.")] {
        for res in ["cpu", "memory", "ephemeral-storage"] {
            let of = |c: &k8s_openapi::api::core::v1::Container| {
                let r = c.resources.as_ref();
                let m = if kind == "requests" {
                    r.and_then(|r| r.requests.as_ref())
                } else {
                    r.and_then(|r| r.limits.as_ref())
                };
                q(m.and_then(|m| m.get(res)))
            };
            let sum: i128 = spec.containers.iter().map(of).sum();
            let init = spec
                .init_containers
                .iter()
                .flatten()
                .map(of)
                .max()
                .unwrap_or(0);
            let v = sum.max(init);
            if v > 0 {
                add(&mut u, &format!("{prefix}{res}"), v);
                if kind == "requests" {
                    add(&mut u, res, v);
                }
            }
        }
    }
    u
}

pub fn service_usage(svc: &Service) -> Usage {
    let mut u = Usage::new();
    add(&mut u, "services", NANO);
    add(&mut u, "count/services", NANO);
    let spec = svc.spec.clone().unwrap_or_default();
    let t = spec.type_.as_deref().unwrap_or("ClusterIP");
    if t == "LoadBalancer" {
        add(&mut u, "services.loadbalancers", NANO);
    }
    if t == "NodePort" || t == "LoadBalancer" {
        add(
            &mut u,
            "services.nodeports",
            spec.ports.map_or(0, |p| p.len()) as i128 * NANO,
        );
    }
    u
}

pub fn pvc_usage(pvc: &PersistentVolumeClaim) -> Usage {
    let mut u = Usage::new();
    add(&mut u, "persistentvolumeclaims", NANO);
    add(&mut u, "count/persistentvolumeclaims", NANO);
    let storage = q(pvc
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage")));
    if storage > 0 {
        add(&mut u, "requests.storage", storage);
    }
    u
}

fn count_usage(plural: &str) -> Usage {
    let mut u = Usage::new();
    add(&mut u, plural, NANO);
    add(&mut u, &format!("count/{plural}"), NANO);
    u
}

/// `status.used` for `hard` from the namespace's total usage: every hard resource, 0 when
/// nothing uses it.
pub fn used_for(hard: &BTreeMap<String, Quantity>, total: &Usage) -> BTreeMap<String, Quantity> {
    hard.keys()
        .map(|k| {
            let v = total.get(k).copied().unwrap_or(0);
            (k.clone(), Quantity(format_quantity(k, v)))
        })
        .collect()
}

/// Whether two quantity maps hold the same amounts (however written).
fn same_amounts(a: &BTreeMap<String, Quantity>, b: &BTreeMap<String, Quantity>) -> bool {
    a.len() == b.len()
        && a.iter().all(|(k, v)| {
            b.get(k)
                .is_some_and(|w| v.0 == w.0 || parse_quantity(&v.0) == parse_quantity(&w.0))
        })
}

struct State {
    client: kube::Client,
    quotas: Informer<ResourceQuota>,
    pods: Informer<Pod>,
    services: Informer<Service>,
    configmaps: Informer<ConfigMap>,
    secrets: Informer<Secret>,
    pvcs: Informer<PersistentVolumeClaim>,
    rcs: Informer<ReplicationController>,
}

/// Queues every quota of the namespace an object of `K` changed in.
fn replenish<K: Object>(
    informer: &Informer<K>,
    quotas: &Informer<ResourceQuota>,
    queue: &WorkQueue<String>,
) {
    let enqueue = {
        let (quotas, queue) = (quotas.clone(), queue.clone());
        move |o: &K| {
            let ns = o.meta().namespace.as_deref().unwrap_or_default();
            for q in quotas.list_namespace(ns) {
                queue.add(key_of(q.as_ref()));
            }
        }
    };
    let (e1, e2, e3) = (enqueue.clone(), enqueue.clone(), enqueue);
    informer.add_handler(HandlerFns {
        add: Some(Box::new(move |o: &Arc<K>| e1(o))),
        update: Some(Box::new(move |_, o: &Arc<K>| e2(o))),
        delete: Some(Box::new(move |o: &Arc<K>| e3(o))),
    });
}

/// Runs the ResourceQuota controller.
pub async fn start(ctx: ControllerContext) -> anyhow::Result<()> {
    let queue: WorkQueue<String> = WorkQueue::new("resourcequota_primary");
    let f = &ctx.informers;
    let state = Arc::new(State {
        client: ctx.client.clone(),
        quotas: f.informer(),
        pods: f.informer(),
        services: f.informer(),
        configmaps: f.informer(),
        secrets: f.informer(),
        pvcs: f.informer(),
        rcs: f.informer(),
    });
    let (q1, q2) = (queue.clone(), queue.clone());
    state.quotas.add_handler(HandlerFns {
        add: Some(Box::new(move |r: &Arc<ResourceQuota>| {
            q1.add(key_of(r.as_ref()))
        })),
        update: Some(Box::new(
            move |old: &Arc<ResourceQuota>, new: &Arc<ResourceQuota>| {
                // Our own status writes come back as updates; only spec changes (or a status that
                // no longer mirrors the spec) need a sync.
                let hard = |r: &ResourceQuota| r.spec.as_ref().and_then(|s| s.hard.clone());
                let status_hard =
                    |r: &ResourceQuota| r.status.as_ref().and_then(|s| s.hard.clone());
                if hard(old) != hard(new) || status_hard(new) != hard(new) {
                    q2.add(key_of(new.as_ref()))
                }
            },
        )),
        delete: None,
    });
    replenish(&state.pods, &state.quotas, &queue);
    replenish(&state.services, &state.quotas, &queue);
    replenish(&state.configmaps, &state.quotas, &queue);
    replenish(&state.secrets, &state.quotas, &queue);
    replenish(&state.pvcs, &state.quotas, &queue);
    replenish(&state.rcs, &state.quotas, &queue);
    ctx.informers.start();
    ctx.informers.wait_synced().await;
    // The full resync.
    let resync = {
        let (state, queue) = (state.clone(), queue.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RESYNC_PERIOD).await;
                for q in state.quotas.list() {
                    queue.add(key_of(q.as_ref()));
                }
            }
        })
    };
    run_workers(
        queue,
        ctx.options.concurrent_resource_quota_syncs,
        move |key: String| {
            let state = state.clone();
            async move { state.sync(&key).await }
        },
    )
    .await;
    resync.abort();
    Ok(())
}

impl State {
    /// The namespace's total usage.
    fn usage(&self, ns: &str) -> Usage {
        let mut total = Usage::new();
        let mut merge = |u: Usage| {
            for (k, v) in u {
                add(&mut total, &k, v);
            }
        };
        let now = k8s_openapi::jiff::Timestamp::now();
        self.pods
            .list_namespace(ns)
            .iter()
            .for_each(|p| merge(pod_usage(p, now)));
        self.services
            .list_namespace(ns)
            .iter()
            .for_each(|s| merge(service_usage(s)));
        self.pvcs
            .list_namespace(ns)
            .iter()
            .for_each(|p| merge(pvc_usage(p)));
        for (plural, n) in [
            ("configmaps", self.configmaps.list_namespace(ns).len()),
            ("secrets", self.secrets.list_namespace(ns).len()),
            ("replicationcontrollers", self.rcs.list_namespace(ns).len()),
            ("resourcequotas", self.quotas.list_namespace(ns).len()),
        ] {
            for _ in 0..n {
                merge(count_usage(plural));
            }
        }
        total
    }

    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let (ns, name) = split_key(key);
        let Some(quota) = self.quotas.get(ns, name) else {
            return Ok(());
        };
        let hard = quota
            .spec
            .as_ref()
            .and_then(|s| s.hard.clone())
            .unwrap_or_default();
        let used = used_for(&hard, &self.usage(ns));
        let status = quota.status.clone().unwrap_or_default();
        if status.hard.as_ref().is_some_and(|h| same_amounts(h, &hard))
            && status.used.as_ref().is_some_and(|u| same_amounts(u, &used))
        {
            return Ok(());
        }
        let mut new = (*quota).clone();
        new.status = Some(k8s_openapi::api::core::v1::ResourceQuotaStatus {
            hard: Some(hard),
            used: Some(used),
        });
        match Api::<ResourceQuota>::namespaced(self.client.clone(), ns)
            .replace_status(name, &PostParams::default(), &new)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodStatus, ResourceRequirements};

    fn pod(cpu: &str, mem_limit: &str, phase: &str) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some(BTreeMap::from([("cpu".into(), Quantity(cpu.into()))])),
                        limits: Some(BTreeMap::from([(
                            "memory".into(),
                            Quantity(mem_limit.into()),
                        )])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn usage_math() {
        let mut total = Usage::new();
        for p in [
            pod("250m", "64Mi", "Running"),
            pod("1", "1Gi", "Pending"),
            pod("8", "8Gi", "Succeeded"),
        ] {
            for (k, v) in pod_usage(&p, k8s_openapi::jiff::Timestamp::now()) {
                add(&mut total, &k, v);
            }
        }
        let hard: BTreeMap<String, Quantity> = [
            "pods",
            "count/pods",
            "requests.cpu",
            "cpu",
            "limits.memory",
            "services",
        ]
        .iter()
        .map(|k| (k.to_string(), Quantity("10".into())))
        .collect();
        let used = used_for(&hard, &total);
        assert_eq!(used["pods"].0, "2", "terminal pods do not count");
        assert_eq!(used["count/pods"].0, "3", "but they exist");
        assert_eq!(used["requests.cpu"].0, "1250m");
        assert_eq!(used["cpu"].0, "1250m");
        assert_eq!(used["limits.memory"].0, "1088Mi");
        assert_eq!(used["services"].0, "0");
        assert!(same_amounts(
            &BTreeMap::from([("cpu".into(), Quantity("1000m".into()))]),
            &BTreeMap::from([("cpu".into(), Quantity("1".into()))])
        ));
    }
}

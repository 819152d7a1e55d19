//! The EndpointSlice controller (upstream's pkg/controller/endpointslice and the reconciler in
//! staging endpointslice): for every Service with a selector, EndpointSlices of at most
//! [`MAX_ENDPOINTS_PER_SLICE`] endpoints, one set per address family of the service, each slice
//! holding endpoints with one port set. Every endpoint carries the pod's address, its
//! ready/serving/terminating conditions, nodeName, zone (the node's
//! `topology.kubernetes.io/zone`), hostname and target reference. Slices are labelled
//! `kubernetes.io/service-name` and `endpointslice.kubernetes.io/managed-by`, and owned by the
//! Service (the garbage collector removes them with it).
//!
//! The [`reconcile`] placement is upstream's, for minimal churn: endpoints stay in the slice
//! they are in; slices that changed anyway are filled first; a small remainder goes into the
//! fullest unchanged slice that has room; only then are new slices created. A service without
//! endpoints keeps one empty placeholder slice.
//!
//! Writes go out before the informer sees them, so the controller remembers the slices it
//! wrote (upstream's `EndpointSliceTracker`) and waits for the informer to catch up before it
//! syncs that service again (else it would create twice).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, PostParams};
use machinery::informer::{split_key, HandlerFns, Informer};
use machinery::workqueue::{run_workers, WorkQueue};
use parking_lot::Mutex;

use crate::endpoints::{
    self, find_port, hostname, is_headless, is_managed, is_pod_ready, pod_ips, selects,
    should_pod_be_in_endpoints, target_ref, trigger_time, HEADLESS_LABEL, TRIGGER_TIME_ANNOTATION,
};
use crate::ControllerContext;

/// Upstream's default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The ports of a slice, as a comparable key.
type PortsKey = Vec<(String, i32, String)>;

fn ports_key(ports: &[EndpointPort]) -> PortsKey {
    let mut k: PortsKey = ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or(0),
                p.protocol.clone().unwrap_or_default(),
            )
        })
        .collect();
    k.sort();
    k
}

/// An endpoint's identity across syncs: its pod, else its first address.
fn endpoint_key(e: &Endpoint) -> String {
    e.target_ref
        .as_ref()
        .and_then(|r| r.uid.clone())
        .unwrap_or_else(|| e.addresses.first().cloned().unwrap_or_default())
}

/// The endpoints one service wants for one address family, by port set.
pub type Desired = BTreeMap<PortsKey, (Vec<EndpointPort>, Vec<Endpoint>)>;

/// The endpoint of `pod` in `svc` for `family` (IPv4/IPv6), with its ports; `None` when the pod
/// is not listed or has no address of that family.
pub fn pod_endpoint(
    svc: &Service,
    pod: &Pod,
    family: &str,
    zone: Option<String>,
) -> Option<(Vec<EndpointPort>, Endpoint)> {
    if !should_pod_be_in_endpoints(pod, true) {
        return None;
    }
    let ip = pod_ips(pod)
        .into_iter()
        .find(|ip| ip.contains(':') == (family == "IPv6"))?;
    let spec = svc.spec.clone().unwrap_or_default();
    let publish = spec.publish_not_ready_addresses.unwrap_or(false);
    let serving = publish || is_pod_ready(pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let ready = publish || (serving && !terminating);
    let ports: Vec<EndpointPort> = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|sp| {
            Some(EndpointPort {
                name: Some(sp.name.clone().unwrap_or_default()),
                port: Some(find_port(pod, sp)?),
                protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect();
    let endpoint = Endpoint {
        addresses: vec![ip],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: hostname(pod, svc),
        node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        zone,
        target_ref: Some(target_ref(pod)),
        ..Default::default()
    };
    Some((ports, endpoint))
}

/// What a reconcile asks for.
#[derive(Debug, Default)]
pub struct Plan {
    pub create: Vec<EndpointSlice>,
    pub update: Vec<EndpointSlice>,
    pub delete: Vec<EndpointSlice>,
}

/// Upstream's `reconcileByAddressType`: the changes that turn `existing` (the service's slices
/// of this address type) into slices holding `desired`, at most `max` endpoints per slice.
/// `template` is the metadata (labels, owner, generateName) new and updated slices get.
pub fn reconcile(
    template: &EndpointSlice,
    desired: &Desired,
    existing: &[EndpointSlice],
    max: usize,
) -> Plan {
    let mut plan = Plan::default();
    let mut by_ports: BTreeMap<PortsKey, Vec<EndpointSlice>> = BTreeMap::new();
    for s in existing {
        by_ports
            .entry(ports_key(s.ports.as_deref().unwrap_or_default()))
            .or_default()
            .push(s.clone());
    }
    let mut unchanged_total = 0;
    for (key, (ports, endpoints)) in desired {
        let slices = by_ports.remove(key).unwrap_or_default();
        let mut wanted: BTreeMap<String, Endpoint> = endpoints
            .iter()
            .map(|e| (endpoint_key(e), e.clone()))
            .collect();
        let mut to_update: Vec<EndpointSlice> = Vec::new();
        let mut unchanged: Vec<EndpointSlice> = Vec::new();
        // 1. Keep what is still wanted where it is; drop the rest.
        for mut slice in slices {
            let mut changed = !same_meta(&slice, template);
            let mut kept = Vec::new();
            for e in std::mem::take(&mut slice.endpoints) {
                match wanted.remove(&endpoint_key(&e)) {
                    Some(w) => {
                        changed |= w != e;
                        kept.push(w);
                    }
                    None => changed = true,
                }
            }
            slice.endpoints = kept;
            if slice.endpoints.is_empty() {
                plan.delete.push(slice);
            } else if changed {
                to_update.push(slice);
            } else {
                unchanged.push(slice);
            }
        }
        let mut left: Vec<Endpoint> = wanted.into_values().collect();
        // 2. Fill the slices that are written anyway, fullest first.
        to_update.sort_by_key(|s| std::cmp::Reverse(s.endpoints.len()));
        for slice in &mut to_update {
            while slice.endpoints.len() < max {
                let Some(e) = left.pop() else { break };
                slice.endpoints.push(e);
            }
        }
        // 3. A remainder that fits goes into the fullest unchanged slice with room.
        if !left.is_empty() && left.len() < max {
            let fit = unchanged
                .iter()
                .enumerate()
                .filter(|(_, s)| s.endpoints.len() + left.len() <= max)
                .max_by_key(|(_, s)| s.endpoints.len())
                .map(|(i, _)| i);
            if let Some(i) = fit {
                let mut slice = unchanged.remove(i);
                slice.endpoints.append(&mut left);
                to_update.push(slice);
            }
        }
        // 4. New slices for the rest.
        while !left.is_empty() {
            let n = left.len().min(max);
            let chunk: Vec<Endpoint> = left.drain(..n).collect();
            let mut slice = template.clone();
            slice.ports = Some(ports.clone());
            slice.endpoints = chunk;
            plan.create.push(slice);
        }
        unchanged_total += unchanged.len();
        for mut s in to_update {
            apply_meta(&mut s, template);
            plan.update.push(s);
        }
    }
    // Slices of port sets no longer wanted go.
    plan.delete.extend(by_ports.into_values().flatten());
    // Upstream keeps one empty placeholder slice when the service has no endpoints.
    if plan.create.is_empty() && plan.update.is_empty() && unchanged_total == 0 {
        let reusable = plan
            .delete
            .iter()
            .position(|s| s.endpoints.is_empty() && s.ports.as_ref().is_none_or(|p| p.is_empty()));
        match reusable {
            Some(i)
                if existing.iter().any(|e| {
                    e.metadata.name == plan.delete[i].metadata.name
                        && e.endpoints.is_empty()
                        && same_meta(e, template)
                }) =>
            {
                plan.delete.remove(i);
            }
            _ => {
                let mut placeholder = template.clone();
                placeholder.ports = None;
                placeholder.endpoints = Vec::new();
                plan.create.push(placeholder);
            }
        }
    }
    plan
}

fn same_meta(s: &EndpointSlice, template: &EndpointSlice) -> bool {
    s.metadata.labels == template.metadata.labels
        && s.metadata.owner_references == template.metadata.owner_references
}

fn apply_meta(s: &mut EndpointSlice, template: &EndpointSlice) {
    s.metadata.labels = template.metadata.labels.clone();
    s.metadata.owner_references = template.metadata.owner_references.clone();
}

/// The metadata every slice of `svc` carries.
pub fn slice_template(svc: &Service, address_type: &str) -> EndpointSlice {
    let name = svc.metadata.name.clone().unwrap_or_default();
    let mut labels: BTreeMap<String, String> = svc
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k != SERVICE_NAME_LABEL && k != MANAGED_BY_LABEL && k != HEADLESS_LABEL)
        .collect();
    labels.insert(SERVICE_NAME_LABEL.into(), name.clone());
    labels.insert(MANAGED_BY_LABEL.into(), CONTROLLER_NAME.into());
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    let mut s = EndpointSlice {
        address_type: address_type.into(),
        ..Default::default()
    };
    s.metadata.generate_name = Some(format!("{name}-"));
    s.metadata.namespace = svc.metadata.namespace.clone();
    s.metadata.labels = Some(labels);
    s.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name,
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    s
}

/// The address families the service's slices are kept for.
fn families(svc: &Service) -> Vec<String> {
    let f = svc
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.clone())
        .unwrap_or_default();
    if f.is_empty() {
        vec!["IPv4".into()]
    } else {
        f
    }
}

/// The slices the controller wrote and has not seen in its informer yet, per service: slice
/// name -> resourceVersion written (`None`: deleted), and when. An expectation older than
/// [`TRACKER_TTL`] is dropped (someone else changed the slice meanwhile).
#[derive(Default)]
struct Tracker(Mutex<HashMap<String, Pending>>);

/// Slice name -> (resourceVersion written or `None` for deleted, when).
type Pending = HashMap<String, (Option<u64>, Instant)>;

const TRACKER_TTL: Duration = Duration::from_secs(10);

impl Tracker {
    fn expect(&self, service: &str, slice: &EndpointSlice, deleted: bool) {
        let rv = slice
            .metadata
            .resource_version
            .as_deref()
            .and_then(|r| r.parse().ok());
        let name = slice.metadata.name.clone().unwrap_or_default();
        self.0.lock().entry(service.into()).or_default().insert(
            name,
            (
                if deleted { None } else { Some(rv.unwrap_or(0)) },
                Instant::now(),
            ),
        );
    }

    /// Whether the informer shows everything written for `service` (and forgets what it shows).
    fn caught_up(&self, service: &str, slices: &Informer<EndpointSlice>) -> bool {
        let mut map = self.0.lock();
        let Some(pending) = map.get_mut(service) else {
            return true;
        };
        let ns = split_key(service).0;
        pending.retain(|name, (rv, at)| {
            if at.elapsed() > TRACKER_TTL {
                return false;
            }
            let seen = slices.get(ns, name);
            match rv {
                None => seen.is_some(),
                Some(rv) => seen
                    .and_then(|s| s.metadata.resource_version.as_deref()?.parse::<u64>().ok())
                    .is_none_or(|seen| seen < *rv),
            }
        });
        let done = pending.is_empty();
        if done {
            map.remove(service);
        }
        done
    }
}

fn service_key_of_slice(s: &EndpointSlice) -> Option<String> {
    let labels = s.metadata.labels.as_ref()?;
    if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(CONTROLLER_NAME) {
        return None;
    }
    let svc = labels.get(SERVICE_NAME_LABEL)?;
    Some(format!(
        "{}/{svc}",
        s.metadata.namespace.as_deref().unwrap_or_default()
    ))
}

/// Runs the EndpointSlice controller.
pub async fn start(ctx: ControllerContext) -> anyhow::Result<()> {
    let queue: WorkQueue<String> = WorkQueue::new("endpoint_slice");
    endpoints::watch_services_and_pods(&ctx, &queue);
    let slices = ctx.informers.informer::<EndpointSlice>();
    // A slice changed or deleted by someone else is put back by the next sync.
    let (q1, q2) = (queue.clone(), queue.clone());
    slices.add_handler(HandlerFns {
        add: None,
        update: Some(Box::new(move |_, s: &Arc<EndpointSlice>| {
            if let Some(k) = service_key_of_slice(s) {
                q1.add(k)
            }
        })),
        delete: Some(Box::new(move |s: &Arc<EndpointSlice>| {
            if let Some(k) = service_key_of_slice(s) {
                q2.add(k)
            }
        })),
    });
    let services = ctx.informers.informer::<Service>();
    let pods = ctx.informers.informer::<Pod>();
    let nodes = ctx.informers.informer::<Node>();
    ctx.informers.start();
    ctx.informers.wait_synced().await;
    let state = Arc::new(State {
        client: ctx.client.clone(),
        services,
        pods,
        nodes,
        slices,
        tracker: Tracker::default(),
        max: MAX_ENDPOINTS_PER_SLICE,
        recorder: ctx.recorder("endpoint-slice-controller"),
    });
    run_workers(
        queue,
        ctx.options.concurrent_service_endpoint_syncs,
        move |key: String| {
            let state = state.clone();
            async move { state.sync(&key).await }
        },
    )
    .await;
    Ok(())
}

struct State {
    client: kube::Client,
    services: Informer<Service>,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    slices: Informer<EndpointSlice>,
    tracker: Tracker,
    max: usize,
    recorder: machinery::events::EventRecorder,
}

impl State {
    async fn sync(&self, key: &str) -> anyhow::Result<()> {
        let (ns, name) = split_key(key);
        let Some(svc) = self.services.get(ns, name) else {
            // The garbage collector deletes the slices through their owner reference.
            return Ok(());
        };
        if !is_managed(&svc) || svc.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        if !self.tracker.caught_up(key, &self.slices) {
            anyhow::bail!("the informer has not seen this controller's last writes yet");
        }
        let pods = self
            .pods
            .list_filtered(|p| p.metadata.namespace.as_deref() == Some(ns) && selects(&svc, p));
        let existing: Vec<EndpointSlice> = self
            .slices
            .list_namespace(ns)
            .into_iter()
            .filter(|s| service_key_of_slice(s).as_deref() == Some(key))
            .map(|s| (*s).clone())
            .collect();
        let pod_refs: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
        let trigger = trigger_time(&svc, &pod_refs).map(endpoints::rfc3339);
        let families = families(&svc);
        let mut plan = Plan::default();
        // Slices of address types the service no longer has go.
        for s in &existing {
            if !families.contains(&s.address_type) {
                plan.delete.push(s.clone());
            }
        }
        for family in &families {
            let mut desired: Desired = BTreeMap::new();
            for pod in &pods {
                let zone = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .and_then(|n| self.nodes.get("", n))
                    .and_then(|n| n.metadata.labels.as_ref()?.get(ZONE_LABEL).cloned());
                if let Some((ports, e)) = pod_endpoint(&svc, pod, family, zone) {
                    desired
                        .entry(ports_key(&ports))
                        .or_insert_with(|| (ports, Vec::new()))
                        .1
                        .push(e);
                }
            }
            for (_, eps) in desired.values_mut() {
                eps.sort_by(|a, b| a.addresses.cmp(&b.addresses));
            }
            let mine: Vec<EndpointSlice> = existing
                .iter()
                .filter(|s| &s.address_type == family)
                .cloned()
                .collect();
            let p = reconcile(&slice_template(&svc, family), &desired, &mine, self.max);
            plan.create.extend(p.create);
            plan.update.extend(p.update);
            plan.delete.extend(p.delete);
        }
        self.apply(key, &svc, plan, trigger).await
    }

    /// Writes a plan: creates and updates first, deletes last (so that consumers never see a
    /// service without its endpoints in between).
    async fn apply(
        &self,
        key: &str,
        svc: &Service,
        plan: Plan,
        trigger: Option<String>,
    ) -> anyhow::Result<()> {
        let ns = split_key(key).0;
        let api = Api::<EndpointSlice>::namespaced(self.client.clone(), ns);
        let stamp = |s: &mut EndpointSlice| {
            if let Some(t) = &trigger {
                s.metadata
                    .annotations
                    .get_or_insert_with(BTreeMap::new)
                    .insert(TRIGGER_TIME_ANNOTATION.into(), t.clone());
            }
        };
        let result: Result<(), kube::Error> = async {
            for mut s in plan.create {
                stamp(&mut s);
                let created = match api.create(&PostParams::default(), &s).await {
                    Ok(c) => c,
                    // The namespace is terminating.
                    Err(kube::Error::Api(e)) if e.code == 403 => return Ok(()),
                    Err(e) => return Err(e),
                };
                self.tracker.expect(key, &created, false);
            }
            for mut s in plan.update {
                stamp(&mut s);
                let name = s.metadata.name.clone().unwrap_or_default();
                let updated = api.replace(&name, &PostParams::default(), &s).await?;
                self.tracker.expect(key, &updated, false);
            }
            for s in plan.delete {
                let name = s.metadata.name.clone().unwrap_or_default();
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => self.tracker.expect(key, &s, true),
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = &result {
            self.recorder.warning(
                svc,
                "FailedToUpdateEndpointSlices",
                format!("Error updating Endpoint Slices for Service {key}: {e}"),
            );
        }
        Ok(result?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn svc() -> Service {
        let mut s = Service::default();
        s.metadata.name = Some("web".into());
        s.metadata.namespace = Some("ns".into());
        s.metadata.uid = Some("svc-uid".into());
        s.spec = Some(ServiceSpec {
            selector: Some(BTreeMap::from([("app".into(), "web".into())])),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::Int(8080)),
                ..Default::default()
            }]),
            ..Default::default()
        });
        s
    }

    fn ep(i: usize) -> Endpoint {
        let mut e = Endpoint {
            addresses: vec![format!("10.0.{}.{}", i / 200, i % 200)],
            ..Default::default()
        };
        e.target_ref = Some(k8s_openapi::api::core::v1::ObjectReference {
            uid: Some(format!("pod-{i}")),
            ..Default::default()
        });
        e
    }

    fn ports() -> Vec<EndpointPort> {
        vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            app_protocol: None,
        }]
    }

    fn desired(range: std::ops::Range<usize>) -> Desired {
        BTreeMap::from([(ports_key(&ports()), (ports(), range.map(ep).collect()))])
    }

    /// Applies a plan to a set of slices (names for the created ones).
    fn apply(existing: Vec<EndpointSlice>, plan: Plan, next: &mut usize) -> Vec<EndpointSlice> {
        let mut by_name: BTreeMap<String, EndpointSlice> = existing
            .into_iter()
            .map(|s| (s.metadata.name.clone().unwrap(), s))
            .collect();
        for s in plan.delete {
            by_name.remove(s.metadata.name.as_ref().unwrap());
        }
        for s in plan.update {
            by_name.insert(s.metadata.name.clone().unwrap(), s);
        }
        for mut s in plan.create {
            *next += 1;
            s.metadata.name = Some(format!("web-{next}"));
            by_name.insert(s.metadata.name.clone().unwrap(), s);
        }
        by_name.into_values().collect()
    }

    #[test]
    fn endpoints_are_packed_at_most_max_per_slice() {
        let t = slice_template(&svc(), "IPv4");
        let plan = reconcile(&t, &desired(0..250), &[], 100);
        let sizes: Vec<usize> = plan.create.iter().map(|s| s.endpoints.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
        let labels = plan.create[0].metadata.labels.as_ref().unwrap();
        assert_eq!(labels[SERVICE_NAME_LABEL], "web");
        assert_eq!(labels[MANAGED_BY_LABEL], CONTROLLER_NAME);
        assert_eq!(
            plan.create[0].metadata.owner_references.as_ref().unwrap()[0].kind,
            "Service"
        );
    }

    #[test]
    fn churn_is_minimal_and_existing_slices_are_filled_first() {
        let t = slice_template(&svc(), "IPv4");
        let mut n = 0;
        let slices = apply(vec![], reconcile(&t, &desired(0..150), &[], 100), &mut n);
        // Nothing changed: nothing to do.
        let plan = reconcile(&t, &desired(0..150), &slices, 100);
        assert!(plan.create.is_empty() && plan.update.is_empty() && plan.delete.is_empty());
        // Ten more: they go into the slice with room, no new slice.
        let plan = reconcile(&t, &desired(0..160), &slices, 100);
        assert!(plan.create.is_empty() && plan.delete.is_empty());
        assert_eq!(plan.update.len(), 1);
        assert_eq!(plan.update[0].endpoints.len(), 60);
        let slices = apply(slices, plan, &mut n);
        // Removing endpoints touches only their slice.
        let plan = reconcile(&t, &desired(5..160), &slices, 100);
        assert_eq!(
            (plan.create.len(), plan.update.len(), plan.delete.len()),
            (0, 1, 0)
        );
        // A changed condition updates that slice only.
        let mut d = desired(0..160);
        d.values_mut().next().unwrap().1[0].conditions = Some(EndpointConditions {
            ready: Some(false),
            serving: Some(false),
            terminating: Some(true),
        });
        let plan = reconcile(&t, &d, &slices, 100);
        assert_eq!(
            (plan.create.len(), plan.update.len(), plan.delete.len()),
            (0, 1, 0)
        );
    }

    #[test]
    fn no_endpoints_leaves_one_placeholder() {
        let t = slice_template(&svc(), "IPv4");
        let mut n = 0;
        let slices = apply(vec![], reconcile(&t, &desired(0..150), &[], 100), &mut n);
        let plan = reconcile(&t, &BTreeMap::new(), &slices, 100);
        assert_eq!(plan.delete.len(), 2);
        assert_eq!(plan.create.len(), 1);
        assert!(plan.create[0].endpoints.is_empty());
        let slices = apply(slices, plan, &mut n);
        let plan = reconcile(&t, &BTreeMap::new(), &slices, 100);
        assert!(plan.create.is_empty() && plan.update.is_empty() && plan.delete.is_empty());
    }

    #[test]
    fn endpoint_conditions_follow_readiness_and_termination() {
        let s = svc();
        let mut pod = crate::endpoints::tests::pod("a", "10.0.0.1", true);
        let (_, e) = pod_endpoint(&s, &pod, "IPv4", Some("z1".into())).unwrap();
        let c = e.conditions.unwrap();
        assert_eq!(
            (c.ready, c.serving, c.terminating),
            (Some(true), Some(true), Some(false))
        );
        assert_eq!(e.zone.as_deref(), Some("z1"));
        pod.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        let (_, e) = pod_endpoint(&s, &pod, "IPv4", None).unwrap();
        let c = e.conditions.unwrap();
        assert_eq!(
            (c.ready, c.serving, c.terminating),
            (Some(false), Some(true), Some(true))
        );
        assert!(pod_endpoint(&s, &pod, "IPv6", None).is_none());
    }
}

//! The Endpoints controller (upstream's pkg/controller/endpoint): for every Service with a
//! selector, an Endpoints object of the same name listing the selected pods' IPs, ready ones as
//! `addresses` and the others as `notReadyAddresses` (all as ready with
//! `publishNotReadyAddresses`), with the Service's ports resolved per pod (a named `targetPort`
//! is looked up among the pod's container ports), packed into subsets of identical port sets
//! (upstream's `RepackSubsets`). Past 1000 addresses the object is truncated, ready addresses
//! first, and annotated `endpoints.kubernetes.io/over-capacity: truncated`.
//!
//! The pod rules (which pods belong, readiness, the port lookup) are shared with the
//! EndpointSlice controller.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, PostParams};
use machinery::informer::{key_of, HandlerFns, Informer};
use machinery::workqueue::{run_workers, WorkQueue};

use crate::ControllerContext;

/// Upstream's cap on the addresses of one Endpoints object.
pub const MAX_CAPACITY: usize = 1000;
pub const OVER_CAPACITY_ANNOTATION: &str = "endpoints.kubernetes.io/over-capacity";
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// Whether the pod's Ready condition is True (upstream's `podutil.IsPodReady`).
pub fn is_pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether a pod is listed at all (upstream's `ShouldPodBeInEndpoints`): it has an IP, is not
/// terminal, and is not being deleted unless terminating endpoints are wanted.
pub fn should_pod_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    let status = pod.status.as_ref();
    let has_ip = status.is_some_and(|s| {
        s.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty())
            || s.pod_ips.as_ref().is_some_and(|ips| !ips.is_empty())
    });
    if !has_ip {
        return false;
    }
    if !include_terminating && pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    !matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Failed") | Some("Succeeded")
    )
}

/// The pod's IPs (status.podIPs, else status.podIP).
pub fn pod_ips(pod: &Pod) -> Vec<String> {
    let Some(s) = pod.status.as_ref() else {
        return Vec::new();
    };
    let ips: Vec<String> = s
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.clone())
        .filter(|ip| !ip.is_empty())
        .collect();
    if !ips.is_empty() {
        return ips;
    }
    s.pod_ip
        .iter()
        .filter(|ip| !ip.is_empty())
        .cloned()
        .collect()
}

/// The container port a service port reaches on `pod` (upstream's `podutil.FindPort`): a
/// numeric targetPort (or the port itself) as is, a name among the containers' ports of the
/// same protocol.
pub fn find_port(pod: &Pod, sp: &ServicePort) -> Option<i32> {
    let protocol = sp.protocol.as_deref().unwrap_or("TCP");
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(p)) => Some(*p),
        Some(IntOrString::String(name)) => {
            if let Ok(p) = name.parse::<i32>() {
                return Some(p);
            }
            let spec = pod.spec.as_ref()?;
            spec.containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

/// Whether the service selects `pod` (a selector of `key: value` pairs).
pub fn selects(svc: &Service, pod: &Pod) -> bool {
    let Some(sel) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    if sel.is_empty() {
        return false;
    }
    let labels = pod.metadata.labels.as_ref();
    sel.iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// Whether a service gets endpoints from this controller: it has a selector and is not an
/// ExternalName service.
pub fn is_managed(svc: &Service) -> bool {
    let Some(spec) = svc.spec.as_ref() else {
        return false;
    };
    spec.selector.as_ref().is_some_and(|s| !s.is_empty())
        && spec.type_.as_deref() != Some("ExternalName")
}

pub fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// The pod's target reference in endpoints.
pub fn target_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// The pod's DNS hostname in the service (spec.hostname when spec.subdomain is the service).
pub fn hostname(pod: &Pod, svc: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let h = spec.hostname.as_ref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == svc.metadata.name.as_deref()).then(|| h.clone())
}

/// When the service's endpoints last had reason to change: the newest of the service's
/// creation and, per pod, its creation and its Ready condition's last transition (the
/// controller's approximation of upstream's trigger-time tracker).
pub fn trigger_time(svc: &Service, pods: &[&Pod]) -> Option<k8s_openapi::jiff::Timestamp> {
    let mut t = svc.metadata.creation_timestamp.as_ref().map(|t| t.0);
    for pod in pods {
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .and_then(|c| c.last_transition_time.as_ref().map(|t| t.0));
        let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let deleted = pod.metadata.deletion_timestamp.as_ref().map(|t| t.0);
        for c in [ready, created, deleted].into_iter().flatten() {
            if t.is_none_or(|t| c > t) {
                t = Some(c);
            }
        }
    }
    t
}

/// Formats a timestamp as RFC 3339 with seconds (as upstream's annotations).
pub fn rfc3339(t: k8s_openapi::jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// One address with its readiness and ports, before packing.
struct Entry {
    address: EndpointAddress,
    ready: bool,
    ports: Vec<EndpointPort>,
}

/// The desired subsets for `svc` over `pods` (the pods the service selects), and whether they
/// were truncated.
pub fn desired_subsets(svc: &Service, pods: &[&Pod]) -> (Vec<EndpointSubset>, bool) {
    let spec = svc.spec.clone().unwrap_or_default();
    let tolerate_unready = spec.publish_not_ready_addresses.unwrap_or(false);
    let family = spec
        .ip_families
        .as_ref()
        .and_then(|f| f.first().cloned())
        .unwrap_or_else(|| "IPv4".into());
    let mut entries = Vec::new();
    for pod in pods {
        if !should_pod_be_in_endpoints(pod, tolerate_unready) {
            continue;
        }
        let ips = pod_ips(pod);
        let ip = ips
            .iter()
            .find(|ip| ip.contains(':') == (family == "IPv6"))
            .or(ips.first());
        let Some(ip) = ip else { continue };
        let address = EndpointAddress {
            ip: ip.clone(),
            hostname: hostname(pod, svc),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(target_ref(pod)),
        };
        let ready = tolerate_unready || is_pod_ready(pod);
        let service_ports = spec.ports.clone().unwrap_or_default();
        if service_ports.is_empty() {
            if is_headless(svc) {
                entries.push(Entry {
                    address,
                    ready,
                    ports: Vec::new(),
                });
            }
            continue;
        }
        for sp in &service_ports {
            let Some(port) = find_port(pod, sp) else {
                continue;
            };
            entries.push(Entry {
                address: address.clone(),
                ready,
                ports: vec![EndpointPort {
                    name: sp.name.clone().filter(|n| !n.is_empty()),
                    port,
                    protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: sp.app_protocol.clone(),
                }],
            });
        }
    }
    repack(entries)
}

fn port_key(p: &EndpointPort) -> PortKey {
    (
        p.name.clone().unwrap_or_default(),
        p.port,
        p.protocol.clone().unwrap_or_default(),
    )
}

fn address_key(a: &EndpointAddress) -> (String, String) {
    (
        a.ip.clone(),
        a.target_ref
            .as_ref()
            .and_then(|r| r.uid.clone())
            .unwrap_or_default(),
    )
}

type PortKey = (String, i32, String);
/// One address while packing: the address, whether ready, its ports.
type Packed = (EndpointAddress, bool, BTreeMap<PortKey, EndpointPort>);
/// One subset while packing: ports, ready and not-ready addresses.
type Subset = (
    Vec<EndpointPort>,
    Vec<EndpointAddress>,
    Vec<EndpointAddress>,
);

/// Upstream's `RepackSubsets`: every address gets the union of its ports; addresses with the
/// same port set share a subset; everything sorted. Truncated to [`MAX_CAPACITY`] addresses.
fn repack(entries: Vec<Entry>) -> (Vec<EndpointSubset>, bool) {
    let mut by_addr: BTreeMap<(String, String), Packed> = BTreeMap::new();
    for e in entries {
        let slot = by_addr
            .entry(address_key(&e.address))
            .or_insert_with(|| (e.address.clone(), e.ready, BTreeMap::new()));
        for p in e.ports {
            slot.2.insert(port_key(&p), p);
        }
    }
    let mut by_ports: BTreeMap<Vec<PortKey>, Subset> = BTreeMap::new();
    for (_, (addr, ready, ports)) in by_addr {
        let key: Vec<_> = ports.keys().cloned().collect();
        let slot = by_ports
            .entry(key)
            .or_insert_with(|| (ports.values().cloned().collect(), Vec::new(), Vec::new()));
        if ready {
            slot.1.push(addr);
        } else {
            slot.2.push(addr);
        }
    }
    let mut subsets: Vec<EndpointSubset> = by_ports
        .into_values()
        .map(|(ports, ready, not_ready)| EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: (!ports.is_empty()).then_some(ports),
        })
        .collect();
    let truncated = truncate(&mut subsets);
    (subsets, truncated)
}

fn count(s: &EndpointSubset) -> (usize, usize) {
    (
        s.addresses.as_ref().map_or(0, Vec::len),
        s.not_ready_addresses.as_ref().map_or(0, Vec::len),
    )
}

/// Upstream's `truncateEndpoints`: when over [`MAX_CAPACITY`], ready addresses are kept first,
/// each subset losing a share proportional to its size.
fn truncate(subsets: &mut [EndpointSubset]) -> bool {
    let (ready, not_ready): (usize, usize) = subsets
        .iter()
        .map(count)
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    if ready + not_ready <= MAX_CAPACITY {
        return false;
    }
    let keep_ready = ready.min(MAX_CAPACITY);
    let keep_not_ready = MAX_CAPACITY - keep_ready;
    let mut left_ready = keep_ready;
    let mut left_not_ready = keep_not_ready;
    let n = subsets.len();
    for (i, s) in subsets.iter_mut().enumerate() {
        let (r, nr) = count(s);
        let last = i + 1 == n;
        let take_r = if last {
            left_ready
        } else {
            (r * keep_ready).div_ceil(ready.max(1)).min(left_ready)
        };
        let take_nr = if last {
            left_not_ready
        } else {
            (nr * keep_not_ready)
                .div_ceil(not_ready.max(1))
                .min(left_not_ready)
        };
        left_ready -= take_r.min(r);
        left_not_ready -= take_nr.min(nr);
        if let Some(a) = s.addresses.as_mut() {
            a.truncate(take_r);
        }
        if let Some(a) = s.not_ready_addresses.as_mut() {
            a.truncate(take_nr);
        }
    }
    true
}

/// Queues the keys of every service (in the pod's namespace) that selects `pod`.
pub fn enqueue_services_of(services: &Informer<Service>, queue: &WorkQueue<String>, pod: &Pod) {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    for svc in services.list_namespace(ns) {
        if selects(&svc, pod) {
            queue.add(key_of(svc.as_ref()));
        }
    }
}

/// Service and pod handlers that queue service keys (shared with the EndpointSlice
/// controller).
pub fn watch_services_and_pods(ctx: &ControllerContext, queue: &WorkQueue<String>) {
    let services = ctx.informers.informer::<Service>();
    let pods = ctx.informers.informer::<Pod>();
    let (q1, q2, q3) = (queue.clone(), queue.clone(), queue.clone());
    services.add_handler(HandlerFns {
        add: Some(Box::new(move |s: &Arc<Service>| q1.add(key_of(s.as_ref())))),
        update: Some(Box::new(move |_, s: &Arc<Service>| {
            q2.add(key_of(s.as_ref()))
        })),
        delete: Some(Box::new(move |s: &Arc<Service>| q3.add(key_of(s.as_ref())))),
    });
    let (s1, s2, s3) = (services.clone(), services.clone(), services);
    let (q1, q2, q3) = (queue.clone(), queue.clone(), queue.clone());
    pods.add_handler(HandlerFns {
        add: Some(Box::new(move |p: &Arc<Pod>| {
            enqueue_services_of(&s1, &q1, p)
        })),
        update: Some(Box::new(move |old: &Arc<Pod>, new: &Arc<Pod>| {
            enqueue_services_of(&s2, &q2, new);
            if old.metadata.labels != new.metadata.labels {
                enqueue_services_of(&s2, &q2, old);
            }
        })),
        delete: Some(Box::new(move |p: &Arc<Pod>| {
            enqueue_services_of(&s3, &q3, p)
        })),
    });
}

/// Runs the Endpoints controller.
pub async fn start(ctx: ControllerContext) -> anyhow::Result<()> {
    let queue: WorkQueue<String> = WorkQueue::new("endpoint");
    watch_services_and_pods(&ctx, &queue);
    let services = ctx.informers.informer::<Service>();
    let pods = ctx.informers.informer::<Pod>();
    let endpoints = ctx.informers.informer::<Endpoints>();
    // Endpoints deleted by someone else are put back (upstream's `onEndpointsDelete`).
    let q = queue.clone();
    endpoints.add_handler(HandlerFns {
        add: None,
        update: None,
        delete: Some(Box::new(move |e: &Arc<Endpoints>| {
            q.add(key_of(e.as_ref()))
        })),
    });
    ctx.informers.start();
    ctx.informers.wait_synced().await;
    let client = ctx.client.clone();
    let recorder = Arc::new(ctx.recorder("endpoint-controller"));
    run_workers(
        queue,
        ctx.options.concurrent_endpoint_syncs,
        move |key: String| {
            let (services, pods, endpoints, client, recorder) = (
                services.clone(),
                pods.clone(),
                endpoints.clone(),
                client.clone(),
                recorder.clone(),
            );
            async move { sync(&client, &services, &pods, &endpoints, &recorder, &key).await }
        },
    )
    .await;
    Ok(())
}

async fn sync(
    client: &kube::Client,
    services: &Informer<Service>,
    pods: &Informer<Pod>,
    endpoints: &Informer<Endpoints>,
    recorder: &machinery::events::EventRecorder,
    key: &str,
) -> Result<(), kube::Error> {
    let (ns, name) = machinery::informer::split_key(key);
    let api = Api::<Endpoints>::namespaced(client.clone(), ns);
    let Some(svc) = services.get(ns, name) else {
        // The service is gone: so are its endpoints.
        return match api.delete(name, &DeleteParams::default()).await {
            Err(kube::Error::Api(e)) if e.code != 404 => Err(kube::Error::Api(e)),
            _ => Ok(()),
        };
    };
    if !is_managed(&svc) || svc.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let selected =
        pods.list_filtered(|p| p.metadata.namespace.as_deref() == Some(ns) && selects(&svc, p));
    let selected: Vec<&Pod> = selected.iter().map(|p| p.as_ref()).collect();
    let (subsets, truncated) = desired_subsets(&svc, &selected);
    let current = endpoints.get(ns, name);
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    if is_headless(&svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    if let Some(cur) = &current {
        let same_subsets = normalize(cur.subsets.clone().unwrap_or_default()) == subsets;
        let cur_labels = cur.metadata.labels.clone().unwrap_or_default();
        let cur_over = cur
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(OVER_CAPACITY_ANNOTATION));
        if same_subsets && cur_labels == labels && cur_over == truncated {
            return Ok(());
        }
    }
    let mut new = current.as_deref().cloned().unwrap_or_default();
    new.metadata.name = Some(name.into());
    new.metadata.labels = Some(labels);
    let annotations = new.metadata.annotations.get_or_insert_with(BTreeMap::new);
    if truncated {
        annotations.insert(OVER_CAPACITY_ANNOTATION.into(), "truncated".into());
    } else {
        annotations.remove(OVER_CAPACITY_ANNOTATION);
    }
    match trigger_time(&svc, &selected) {
        Some(t) => {
            annotations.insert(TRIGGER_TIME_ANNOTATION.into(), rfc3339(t));
        }
        None => {
            annotations.remove(TRIGGER_TIME_ANNOTATION);
        }
    }
    new.subsets = (!subsets.is_empty()).then_some(subsets);
    let result = if current.is_some() {
        api.replace(name, &PostParams::default(), &new).await
    } else {
        api.create(&PostParams::default(), &new).await
    };
    match result {
        Ok(_) => Ok(()),
        // The namespace is terminating: nothing to do.
        Err(kube::Error::Api(e)) if e.code == 403 && current.is_none() => Ok(()),
        Err(e) => {
            let (reason, verb) = if current.is_some() {
                ("FailedToUpdateEndpoint", "update")
            } else {
                ("FailedToCreateEndpoint", "create")
            };
            recorder.warning(
                svc.as_ref(),
                reason,
                format!("Failed to {verb} endpoint {ns}/{name}: {e}"),
            );
            Err(e)
        }
    }
}

/// Existing subsets in the packed, sorted form [`desired_subsets`] produces (for comparison).
fn normalize(subsets: Vec<EndpointSubset>) -> Vec<EndpointSubset> {
    let mut entries = Vec::new();
    for s in subsets {
        let ports = s.ports.clone().unwrap_or_default();
        for (list, ready) in [(s.addresses, true), (s.not_ready_addresses, false)] {
            for a in list.into_iter().flatten() {
                entries.push(Entry {
                    address: a,
                    ready,
                    ports: ports.clone(),
                });
            }
        }
    }
    repack(entries).0
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodIP, PodSpec, PodStatus, ServiceSpec,
    };

    pub fn pod(name: &str, ip: &str, ready: bool) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.namespace = Some("ns".into());
        p.metadata.uid = Some(format!("uid-{name}"));
        p.metadata.labels = Some(BTreeMap::from([("app".into(), "web".into())]));
        p.spec = Some(PodSpec {
            node_name: Some("n1".into()),
            containers: vec![Container {
                name: "c".into(),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: 8080,
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            ..Default::default()
        });
        p.status = Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some(ip.into()),
            pod_ips: Some(vec![PodIP { ip: ip.into() }]),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        p
    }

    fn svc(ports: Vec<ServicePort>) -> Service {
        let mut s = Service::default();
        s.metadata.name = Some("web".into());
        s.metadata.namespace = Some("ns".into());
        s.spec = Some(ServiceSpec {
            selector: Some(BTreeMap::from([("app".into(), "web".into())])),
            ports: Some(ports),
            ..Default::default()
        });
        s
    }

    fn port(name: &str, target: IntOrString) -> ServicePort {
        ServicePort {
            name: Some(name.into()),
            port: 80,
            target_port: Some(target),
            ..Default::default()
        }
    }

    #[test]
    fn ready_and_not_ready_pods_with_named_ports() {
        let s = svc(vec![port("http", IntOrString::String("http".into()))]);
        let (a, b, c) = (
            pod("a", "10.0.0.1", true),
            pod("b", "10.0.0.2", false),
            pod("c", "", true),
        );
        let (subsets, truncated) = desired_subsets(&s, &[&a, &b, &c]);
        assert!(!truncated);
        assert_eq!(subsets.len(), 1);
        let ss = &subsets[0];
        assert_eq!(ss.addresses.as_ref().unwrap()[0].ip, "10.0.0.1");
        assert_eq!(ss.not_ready_addresses.as_ref().unwrap()[0].ip, "10.0.0.2");
        assert_eq!(ss.ports.as_ref().unwrap()[0].port, 8080);
        // publishNotReadyAddresses makes everyone ready.
        let mut s2 = s.clone();
        s2.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let (subsets, _) = desired_subsets(&s2, &[&a, &b]);
        assert_eq!(subsets[0].addresses.as_ref().unwrap().len(), 2);
        assert!(subsets[0].not_ready_addresses.is_none());
    }

    #[test]
    fn pods_without_the_named_port_get_their_own_subset_or_none() {
        let s = svc(vec![
            port("http", IntOrString::String("http".into())),
            port("metrics", IntOrString::Int(9090)),
        ]);
        let a = pod("a", "10.0.0.1", true);
        let mut b = pod("b", "10.0.0.2", true);
        b.spec.as_mut().unwrap().containers[0].ports = None;
        let (subsets, _) = desired_subsets(&s, &[&a, &b]);
        assert_eq!(subsets.len(), 2);
        let ports: Vec<usize> = subsets
            .iter()
            .map(|s| s.ports.as_ref().unwrap().len())
            .collect();
        assert!(ports.contains(&1) && ports.contains(&2));
        // Packing is stable: existing subsets normalize to the same thing.
        assert_eq!(normalize(subsets.clone()), subsets);
    }

    #[test]
    fn over_capacity_truncates_keeping_ready_addresses() {
        let s = svc(vec![port("http", IntOrString::Int(80))]);
        let pods: Vec<Pod> = (0..1200)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    &format!("10.1.{}.{}", i / 250, i % 250),
                    i < 900,
                )
            })
            .collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let (subsets, truncated) = desired_subsets(&s, &refs);
        assert!(truncated);
        let (r, nr) = count(&subsets[0]);
        assert_eq!((r, nr), (900, 100));
    }

    #[test]
    fn terminating_and_terminal_pods_are_left_out() {
        let s = svc(vec![port("http", IntOrString::Int(80))]);
        let mut a = pod("a", "10.0.0.1", true);
        a.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        let mut b = pod("b", "10.0.0.2", true);
        b.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let (subsets, _) = desired_subsets(&s, &[&a, &b]);
        assert!(subsets.is_empty());
    }
}

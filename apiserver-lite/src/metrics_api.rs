//! `metrics.k8s.io/v1beta1` served by the API server itself, so that `kubectl top nodes|pods`
//! works with no metrics-server: NodeMetrics and PodMetrics (and their lists) in
//! metrics-server's shapes, from the kubelets' `/metrics/resource`.
//!
//! As metrics-server does, usage comes from two scrapes of a kubelet's cumulative counters: CPU
//! is the rate of `*_cpu_usage_seconds_total` between them (in nanocores; a container that
//! started after the older scrape is measured from its start time, as metrics-server does for
//! new pods), memory the newest working set; `timestamp` is the newer sample's time and
//! `window` the time between the two. Scrapes are cached per node ([`MetricsApi`]): a request
//! uses the two newest when the newest is at most [`FRESH`] old, otherwise it scrapes again
//! (a node never scraped is scraped twice, [`MIN_WINDOW`] apart). Only Ready nodes are scraped,
//! over HTTPS at the Node's address and kubelet port, with `pod_log`'s kubelet connection (the
//! kubelet's certificate is not verified yet: the security issue's job).
//!
//! Routes: `GET /apis/metrics.k8s.io/v1beta1/nodes[/{name}]`, `…/pods` (all namespaces),
//! `…/namespaces/{ns}/pods[/{name}]`, with `labelSelector`; discovery lists the group with the
//! `nodes` (cluster) and `pods` (namespaced) resources, verbs get and list.

pub mod scrape;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Response, StatusCode};
use chrono::{DateTime, SecondsFormat, Utc};
use http_body_util::BodyExt;
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::registry::Registry;
use crate::request::RequestInfo;
use crate::resources;
use crate::rest::{error_response, json_response, Query};
use crate::selectors::LabelSelector;
use crate::status::{ApiError, ApiResult};
use scrape::{ContainerPoints, Point, Scrape};

use crate::kubelet_client::KubeletClient;

pub use machinery::duration::format as go_duration;

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
/// A scrape younger than this is reused.
pub const FRESH: Duration = Duration::from_secs(10);
/// The least time between the two scrapes a rate is computed from.
pub const MIN_WINDOW: Duration = Duration::from_secs(1);
/// How long one scrape may take (metrics-server's default `--kubelet-request-timeout` is 10s).
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from a kubelet.
const MAX_SCRAPE_BYTES: usize = 16 << 20;

/// The two newest scrapes of one node.
#[derive(Default)]
struct NodeScrapes {
    prev: Option<Arc<Scrape>>,
    last: Option<Arc<Scrape>>,
}

/// The scrape cache, one entry per node; a node's entry is locked while it is scraped, so that
/// concurrent requests share one scrape.
#[derive(Default)]
pub struct MetricsApi {
    nodes: Mutex<HashMap<String, Arc<tokio::sync::Mutex<NodeScrapes>>>>,
}

impl MetricsApi {
    pub fn new() -> Self {
        MetricsApi::default()
    }

    /// The (older, newer) scrapes of a node, fresh enough; `None` when the kubelet cannot be
    /// scraped and nothing is cached.
    async fn pair(
        &self,
        kubelets: &KubeletClient,
        node: &str,
        addr: SocketAddr,
    ) -> Option<(Arc<Scrape>, Arc<Scrape>)> {
        let entry = self
            .nodes
            .lock()
            .entry(node.to_string())
            .or_default()
            .clone();
        let mut st = entry.lock().await;
        for _ in 0..3 {
            if let (Some(prev), Some(last)) = (&st.prev, &st.last) {
                if last.at.elapsed() < FRESH {
                    return Some((prev.clone(), last.clone()));
                }
            }
            if let Some(last) = &st.last {
                let age = last.at.elapsed();
                if age < MIN_WINDOW {
                    tokio::time::sleep(MIN_WINDOW - age).await;
                }
            }
            match scrape_kubelet(kubelets, addr).await {
                Ok(s) => {
                    st.prev = st.last.take();
                    st.last = Some(Arc::new(s));
                }
                Err(e) => {
                    tracing::debug!(node, "scraping {addr}: {e}");
                    // A stale pair is better than none.
                    return match (&st.prev, &st.last) {
                        (Some(p), Some(l)) => Some((p.clone(), l.clone())),
                        _ => None,
                    };
                }
            }
        }
        match (&st.prev, &st.last) {
            (Some(p), Some(l)) => Some((p.clone(), l.clone())),
            _ => None,
        }
    }

    /// Scrapes the given nodes at once.
    async fn pairs(
        &self,
        kubelets: &KubeletClient,
        nodes: Vec<(String, SocketAddr)>,
    ) -> HashMap<String, (Arc<Scrape>, Arc<Scrape>)> {
        let futs = nodes.into_iter().map(|(name, addr)| async move {
            let p = self.pair(kubelets, &name, addr).await;
            (name, p)
        });
        futures::future::join_all(futs)
            .await
            .into_iter()
            .filter_map(|(n, p)| Some((n, p?)))
            .collect()
    }

    /// Forgets nodes that are gone.
    fn retain(&self, nodes: &[String]) {
        self.nodes.lock().retain(|n, _| nodes.contains(n));
    }
}

/// One resource request of the group.
pub async fn handle(
    api: &MetricsApi,
    reg: &Registry,
    info: &RequestInfo,
    query: &Query,
) -> Response<Body> {
    match serve(api, reg, info, query).await {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => error_response(&e),
    }
}

async fn serve(
    api: &MetricsApi,
    reg: &Registry,
    info: &RequestInfo,
    query: &Query,
) -> ApiResult<Value> {
    if info.version != VERSION || !info.subresource.is_empty() {
        return Err(ApiError::not_found_generic());
    }
    let nodes_res = resources::find("", "v1", "nodes").expect("nodes are served");
    let pods_res = resources::find("", "v1", "pods").expect("pods are served");
    let selector = match query.get("labelSelector").filter(|s| !s.is_empty()) {
        Some(s) => LabelSelector::parse(s).map_err(ApiError::bad_request)?,
        None => LabelSelector::everything(),
    };
    match (info.resource.as_str(), info.verb.as_str()) {
        ("nodes", "get" | "list") if info.namespace.is_empty() => {}
        ("pods", "get" | "list") => {}
        ("nodes" | "pods", _) => {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ))
        }
        _ => return Err(ApiError::not_found_generic()),
    }
    for r in [nodes_res, pods_res] {
        reg.cacher(r)
            .wait_fresh()
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
    }
    let all_nodes: Vec<Value> = reg
        .cacher(nodes_res)
        .list(&Registry::key(nodes_res, "", ""), &no_filter(), None, 0)
        .items
        .iter()
        .map(|o| o.value.clone())
        .collect();
    api.retain(
        &all_nodes
            .iter()
            .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
            .collect::<Vec<_>>(),
    );
    let targets = |names: &dyn Fn(&str) -> bool| -> Vec<(String, SocketAddr)> {
        all_nodes
            .iter()
            .filter(|n| n["metadata"]["name"].as_str().is_some_and(names))
            .filter(|n| is_ready(n))
            .filter_map(|n| {
                Some((
                    n["metadata"]["name"].as_str()?.to_string(),
                    crate::pod_log::kubelet_address(n)?,
                ))
            })
            .collect()
    };
    let now = Utc::now();
    if info.resource == "nodes" {
        let wanted: Vec<&Value> = all_nodes
            .iter()
            .filter(|n| info.name.is_empty() || n["metadata"]["name"] == info.name.as_str())
            .filter(|n| selector.matches(n["metadata"]["labels"].as_object()))
            .collect();
        let names: Vec<&str> = wanted
            .iter()
            .filter_map(|n| n["metadata"]["name"].as_str())
            .collect();
        let pairs = api
            .pairs(&reg.kubelet_client(), targets(&|n| names.contains(&n)))
            .await;
        let items: Vec<Value> = wanted
            .iter()
            .filter_map(|n| {
                let name = n["metadata"]["name"].as_str()?;
                let (prev, last) = pairs.get(name)?;
                node_metrics(n, prev, last, now)
            })
            .collect();
        if !info.name.is_empty() {
            return items
                .into_iter()
                .next()
                .ok_or_else(|| ApiError::not_found(GROUP, "nodemetrics", &info.name));
        }
        return Ok(json!({
            "kind": "NodeMetricsList",
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "metadata": {},
            "items": items,
        }));
    }
    // Pods: the API's pods (namespace, name, labels) that run on a node.
    let prefix = Registry::key(pods_res, &info.namespace, "");
    let pods: Vec<Value> = reg
        .cacher(pods_res)
        .list(&prefix, &no_filter(), None, 0)
        .items
        .iter()
        .map(|o| o.value.clone())
        .filter(|p| info.name.is_empty() || p["metadata"]["name"] == info.name.as_str())
        .filter(|p| selector.matches(p["metadata"]["labels"].as_object()))
        .filter(|p| {
            p["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty())
        })
        .collect();
    let node_names: Vec<&str> = pods
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .collect();
    let pairs = api
        .pairs(&reg.kubelet_client(), targets(&|n| node_names.contains(&n)))
        .await;
    let items: Vec<Value> = pods
        .iter()
        .filter_map(|p| {
            let (prev, last) = pairs.get(p["spec"]["nodeName"].as_str()?)?;
            pod_metrics(p, prev, last, now)
        })
        .collect();
    if !info.name.is_empty() {
        return items.into_iter().next().ok_or_else(|| {
            ApiError::not_found(
                GROUP,
                "podmetrics",
                &format!("{}/{}", info.namespace, info.name),
            )
        });
    }
    Ok(json!({
        "kind": "PodMetricsList",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": {},
        "items": items,
    }))
}

fn no_filter() -> crate::cacher::Filter {
    Arc::new(|_| true)
}

fn is_ready(node: &Value) -> bool {
    node["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// A NodeMetrics from two scrapes of its kubelet.
pub fn node_metrics(
    node: &Value,
    prev: &Scrape,
    last: &Scrape,
    now: DateTime<Utc>,
) -> Option<Value> {
    let cpu = last.node_cpu?;
    let memory = last.node_memory?;
    let (rate, window_ms) = rate(prev.node_cpu?, cpu)?;
    Some(json!({
        "kind": "NodeMetrics",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": metadata(node, now),
        "timestamp": time_ms(cpu.ts_ms),
        "window": go_duration(Duration::from_millis(window_ms as u64)),
        "usage": {
            "cpu": cpu_quantity(rate),
            "memory": memory_quantity(memory.value as u64),
        },
    }))
}

/// A PodMetrics of the pod's containers found in the newer scrape.
pub fn pod_metrics(pod: &Value, prev: &Scrape, last: &Scrape, now: DateTime<Utc>) -> Option<Value> {
    let ns = pod["metadata"]["namespace"].as_str()?;
    let name = pod["metadata"]["name"].as_str()?;
    let mut containers: Vec<(&str, &ContainerPoints)> = last
        .containers
        .iter()
        .filter(|((n, p, _), _)| n == ns && p == name)
        .map(|((_, _, c), pts)| (c.as_str(), pts))
        .collect();
    if containers.is_empty() {
        return None;
    }
    containers.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = Vec::new();
    let mut ts = 0;
    let mut window = 0;
    for (c, pts) in containers {
        let cpu = pts.cpu?;
        let memory = pts.memory?;
        let key = (ns.to_string(), name.to_string(), c.to_string());
        let before = prev.containers.get(&key);
        // A counter to rate against: the older scrape's, unless the container restarted since
        // (then, as for a container new since that scrape, its start time with zero usage).
        let start = pts.start_time.map(|s| Point {
            value: 0.0,
            ts_ms: (s * 1000.0) as i64,
        });
        let base = match before.and_then(|b| b.cpu) {
            Some(b)
                if b.value <= cpu.value && before.and_then(|b| b.start_time) == pts.start_time =>
            {
                Some(b)
            }
            _ => start.filter(|s| s.ts_ms < cpu.ts_ms),
        };
        let (rate, w) = rate(base?, cpu)?;
        ts = ts.max(cpu.ts_ms);
        window = window.max(w);
        out.push(json!({
            "name": c,
            "usage": {"cpu": cpu_quantity(rate), "memory": memory_quantity(memory.value as u64)},
        }));
    }
    Some(json!({
        "kind": "PodMetrics",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": metadata(pod, now),
        "timestamp": time_ms(ts),
        "window": go_duration(Duration::from_millis(window as u64)),
        "containers": out,
    }))
}

/// Nanocores between two points of a cumulative CPU-seconds counter, and the window in ms.
fn rate(before: Point, after: Point) -> Option<(u64, i64)> {
    let dt = after.ts_ms - before.ts_ms;
    if dt <= 0 || after.value < before.value {
        return None;
    }
    let nanocores = (after.value - before.value) * 1e9 / (dt as f64 / 1000.0);
    Some((nanocores.round() as u64, dt))
}

fn metadata(obj: &Value, now: DateTime<Utc>) -> Value {
    let mut m = json!({
        "name": obj["metadata"]["name"],
        "creationTimestamp": now.to_rfc3339_opts(SecondsFormat::Secs, true),
    });
    if let Some(ns) = obj["metadata"]["namespace"].as_str() {
        m["namespace"] = json!(ns);
    }
    if let Some(l) = obj["metadata"]["labels"].as_object() {
        m["labels"] = json!(l);
    }
    m
}

fn time_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Nanocores as a canonical DecimalSI quantity (`123n`, `5m`, `2`), as `resource.Quantity`
/// prints `NewScaledQuantity(n, -9)`.
pub fn cpu_quantity(nanocores: u64) -> String {
    if nanocores == 0 {
        return "0".into();
    }
    for (div, suffix) in [(1_000_000_000, ""), (1_000_000, "m"), (1_000, "u")] {
        if nanocores.is_multiple_of(div) {
            return decimal_si(nanocores / div, suffix);
        }
    }
    format!("{nanocores}n")
}

/// A whole number with a decimal suffix, moved to larger suffixes while divisible by 1000.
fn decimal_si(mut n: u64, suffix: &str) -> String {
    const UP: &[&str] = &["n", "u", "m", "", "k", "M", "G", "T", "P", "E"];
    let mut i = UP.iter().position(|s| *s == suffix).unwrap_or(3);
    while n != 0 && n.is_multiple_of(1000) && i + 1 < UP.len() {
        n /= 1000;
        i += 1;
    }
    format!("{n}{}", UP[i])
}

/// Bytes as a canonical BinarySI quantity (`12Ki`, `5Mi`, `12345`), as `resource.Quantity`
/// prints `NewQuantity(n, BinarySI)` (below 1024 it falls back to DecimalSI).
pub fn memory_quantity(bytes: u64) -> String {
    if bytes < 1024 {
        return decimal_si(bytes, "");
    }
    let mut n = bytes;
    let mut i = 0;
    const SUFFIX: &[&str] = &["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    while n.is_multiple_of(1024) && i + 1 < SUFFIX.len() {
        n /= 1024;
        i += 1;
    }
    format!("{n}{}", SUFFIX[i])
}

/// `/apis/metrics.k8s.io` (APIGroup) and its entry in `/apis`.
pub fn api_group() -> Value {
    let gv = json!({"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION});
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": GROUP, "versions": [gv.clone()], "preferredVersion": gv})
}

/// `/apis/metrics.k8s.io/v1beta1` (APIResourceList).
pub fn api_resource_list() -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": [
            {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
            {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]},
        ],
    })
}

/// The group's item of the aggregated discovery document (`/apis`).
pub fn aggregated_item() -> Value {
    let res = |name: &str, kind: &str, scope: &str| {
        json!({
            "resource": name,
            "responseKind": {"group": GROUP, "version": VERSION, "kind": kind},
            "scope": scope,
            "singularResource": "",
            "verbs": ["get", "list"],
        })
    };
    json!({
        "metadata": {"name": GROUP, "creationTimestamp": null},
        "versions": [{
            "version": VERSION,
            "resources": [res("nodes", "NodeMetrics", "Cluster"), res("pods", "PodMetrics", "Namespaced")],
            "freshness": "Current",
        }],
    })
}

/// One GET of a kubelet's `/metrics/resource`.
async fn scrape_kubelet(kubelets: &KubeletClient, addr: SocketAddr) -> Result<Scrape, String> {
    let fut = async {
        let resp = crate::pod_log::kubelet_get(kubelets, addr, "/metrics/resource")
            .await
            .map_err(|e| e.to_string())?;
        if resp.status() != StatusCode::OK {
            return Err(format!("status {}", resp.status()));
        }
        let body = http_body_util::Limited::new(resp.into_body(), MAX_SCRAPE_BYTES)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Scrape::parse(
            &String::from_utf8_lossy(&body),
            Instant::now(),
        ))
    };
    tokio::time::timeout(SCRAPE_TIMEOUT, fut)
        .await
        .map_err(|_| "timed out".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_canonical() {
        assert_eq!(cpu_quantity(0), "0");
        assert_eq!(cpu_quantity(123), "123n");
        assert_eq!(cpu_quantity(5_000_000), "5m");
        assert_eq!(cpu_quantity(1_500_000), "1500u");
        assert_eq!(cpu_quantity(2_000_000_000), "2");
        assert_eq!(cpu_quantity(1_234_567_891), "1234567891n");
        assert_eq!(memory_quantity(12 * 1024), "12Ki");
        assert_eq!(memory_quantity(5 << 20), "5Mi");
        assert_eq!(memory_quantity(12_345_678), "12345678");
        assert_eq!(memory_quantity(1000), "1k");
        assert_eq!(memory_quantity(500), "500");
    }

    #[test]
    fn durations_as_go_prints_them() {
        assert_eq!(go_duration(Duration::from_secs(15)), "15s");
        assert_eq!(go_duration(Duration::from_millis(1004)), "1.004s");
        assert_eq!(go_duration(Duration::from_millis(60_500)), "1m0.5s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::from_secs(3661)), "1h1m1s");
    }

    fn scrape(node_cpu: f64, ts: i64, containers: &[(&str, f64, f64)]) -> Scrape {
        Scrape {
            at: Instant::now(),
            node_cpu: Some(Point {
                value: node_cpu,
                ts_ms: ts,
            }),
            node_memory: Some(Point {
                value: 4096.0,
                ts_ms: ts,
            }),
            containers: containers
                .iter()
                .map(|(c, cpu, start)| {
                    (
                        ("ns".to_string(), "p".to_string(), c.to_string()),
                        ContainerPoints {
                            cpu: Some(Point {
                                value: *cpu,
                                ts_ms: ts,
                            }),
                            memory: Some(Point {
                                value: 2048.0,
                                ts_ms: ts,
                            }),
                            start_time: Some(*start),
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn usage_is_the_rate_between_two_scrapes() {
        let node = json!({"metadata": {"name": "n1", "labels": {"a": "b"}}});
        let prev = scrape(100.0, 10_000, &[("old", 1.0, 1.0)]);
        let last = scrape(101.5, 12_000, &[("old", 1.5, 1.0), ("new", 0.25, 11.5)]);
        let now = Utc::now();
        let n = node_metrics(&node, &prev, &last, now).unwrap();
        assert_eq!(n["usage"]["cpu"], "750m");
        assert_eq!(n["usage"]["memory"], "4Ki");
        assert_eq!(n["window"], "2s");
        assert_eq!(n["timestamp"], "1970-01-01T00:00:12Z");
        assert_eq!(n["metadata"]["labels"]["a"], "b");
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"}});
        let p = pod_metrics(&pod, &prev, &last, now).unwrap();
        assert_eq!(p["kind"], "PodMetrics");
        // "new" started at 11.5 s, after the older scrape: measured from its start.
        assert_eq!(p["containers"][0]["name"], "new");
        assert_eq!(p["containers"][0]["usage"]["cpu"], "500m");
        assert_eq!(p["containers"][1]["usage"]["cpu"], "250m");
        assert_eq!(p["containers"][1]["usage"]["memory"], "2Ki");
        // A restarted container (new start time, counter back) rates from its start.
        let restarted = scrape(102.0, 14_000, &[("old", 0.5, 13.0)]);
        let p = pod_metrics(&pod, &last, &restarted, now).unwrap();
        assert_eq!(p["containers"][0]["usage"]["cpu"], "500m");
        let other = json!({"metadata": {"name": "q", "namespace": "ns"}});
        assert!(pod_metrics(&other, &prev, &last, now).is_none());
    }

    #[test]
    fn discovery_documents() {
        assert_eq!(api_resource_list()["resources"][1]["namespaced"], true);
        assert_eq!(api_group()["preferredVersion"]["version"], VERSION);
        assert_eq!(
            aggregated_item()["versions"][0]["resources"][0]["scope"],
            "Cluster"
        );
    }
}

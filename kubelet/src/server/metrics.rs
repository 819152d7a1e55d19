//! `GET /metrics` and `GET /metrics/resource`, in the Prometheus text format 0.0.4.
//!
//! `/metrics` is the kubelet's own registry ([`crate::metrics`]). `/metrics/resource` is
//! upstream's resource metrics collector (`pkg/kubelet/metrics/collectors/resource_metrics.go`),
//! what metrics-server scrapes: the node's, pods' and containers' cumulative CPU seconds and
//! working sets, each sample with the time its stats were read (milliseconds), containers' start
//! times, and `scrape_error` / `resource_scrape_error` (1 when the stats could not be gathered).
//! It is rendered from the same [`Summary`] as `/stats/summary`.

use std::fmt::Write as _;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, Response};

use super::ServerState;
use crate::metrics::{escape, format_float, metrics};
use crate::stats::v1alpha1::Time;
use crate::stats::Summary;

/// The exposition's content type.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`.
pub async fn kubelet_metrics() -> Response<Body> {
    text(metrics().render())
}

/// `GET /metrics/resource`.
pub async fn resource_metrics(State(state): State<ServerState>) -> Response<Body> {
    let summary = state.stats.summary().await;
    if let Err(e) = &summary {
        tracing::warn!("resource metrics: {e}");
    }
    text(render_resource_metrics(summary.as_ref().ok()))
}

fn text(body: String) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
    r
}

/// One family of the resource metrics being built.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: Vec<String>,
}

impl Family {
    fn new(name: &'static str, help: &'static str, kind: &'static str) -> Family {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, labels: &[(&str, &str)], value: f64, time: Option<Time>) {
        let mut s = self.name.to_string();
        if !labels.is_empty() {
            let l: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(s, "{{{}}}", l.join(","));
        }
        let _ = write!(s, " {}", format_float(value));
        if let Some(t) = time {
            let _ = write!(s, " {}", t.0.timestamp_millis());
        }
        self.samples.push(s);
    }

    fn render(mut self, out: &mut String, stability: &str) {
        if self.samples.is_empty() {
            return;
        }
        self.samples.sort();
        let _ = writeln!(out, "# HELP {} [{stability}] {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind);
        for s in self.samples {
            out.push_str(&s);
            out.push('\n');
        }
    }
}

/// The resource metrics of a summary (`None`: gathering failed, only the scrape errors say so).
pub fn render_resource_metrics(summary: Option<&Summary>) -> String {
    let mut node_cpu = Family::new(
        "node_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the node in core-seconds",
        "counter",
    );
    let mut node_mem = Family::new(
        "node_memory_working_set_bytes",
        "Current working set of the node in bytes",
        "gauge",
    );
    let mut pod_cpu = Family::new(
        "pod_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the pod in core-seconds",
        "counter",
    );
    let mut pod_mem = Family::new(
        "pod_memory_working_set_bytes",
        "Current working set of the pod in bytes",
        "gauge",
    );
    let mut c_cpu = Family::new(
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the container in core-seconds",
        "counter",
    );
    let mut c_mem = Family::new(
        "container_memory_working_set_bytes",
        "Current working set of the container in bytes",
        "gauge",
    );
    let mut c_start = Family::new(
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds",
        "gauge",
    );
    let seconds = |ns: u64| ns as f64 / 1e9;
    if let Some(s) = summary {
        if let Some(cpu) = &s.node.cpu {
            if let Some(u) = cpu.usage_core_nano_seconds {
                node_cpu.add(&[], seconds(u), Some(cpu.time));
            }
        }
        if let Some(m) = &s.node.memory {
            if let Some(ws) = m.working_set_bytes {
                node_mem.add(&[], ws as f64, Some(m.time));
            }
        }
        for p in &s.pods {
            let (pod, ns) = (p.pod_ref.name.as_str(), p.pod_ref.namespace.as_str());
            let pod_labels = [("namespace", ns), ("pod", pod)];
            if let Some(u) = p
                .cpu
                .as_ref()
                .and_then(|c| Some((c.usage_core_nano_seconds?, c.time)))
            {
                pod_cpu.add(&pod_labels, seconds(u.0), Some(u.1));
            }
            if let Some(m) = p
                .memory
                .as_ref()
                .and_then(|m| Some((m.working_set_bytes?, m.time)))
            {
                pod_mem.add(&pod_labels, m.0 as f64, Some(m.1));
            }
            for c in &p.containers {
                let labels = [
                    ("container", c.name.as_str()),
                    ("namespace", ns),
                    ("pod", pod),
                ];
                let start = c.start_time.0.timestamp_nanos_opt().unwrap_or(0);
                if start > 0 {
                    c_start.add(&labels, start as f64 / 1e9, None);
                }
                if let Some(u) = c
                    .cpu
                    .as_ref()
                    .and_then(|x| Some((x.usage_core_nano_seconds?, x.time)))
                {
                    c_cpu.add(&labels, seconds(u.0), Some(u.1));
                }
                if let Some(m) = c
                    .memory
                    .as_ref()
                    .and_then(|x| Some((x.working_set_bytes?, x.time)))
                {
                    c_mem.add(&labels, m.0 as f64, Some(m.1));
                }
            }
        }
    }
    let failed = if summary.is_some() { 0.0 } else { 1.0 };
    let mut resource_err = Family::new(
        "resource_scrape_error",
        "1 if there was an error while getting container metrics, 0 otherwise",
        "gauge",
    );
    resource_err.add(&[], failed, None);
    let mut scrape_err = Family::new(
        "scrape_error",
        "1 if there was an error while getting container metrics, 0 otherwise",
        "gauge",
    );
    scrape_err.add(&[], failed, None);
    let mut out = String::new();
    // Families sorted by name, as Go's gatherer writes them.
    c_cpu.render(&mut out, "STABLE");
    c_mem.render(&mut out, "STABLE");
    c_start.render(&mut out, "STABLE");
    node_cpu.render(&mut out, "STABLE");
    node_mem.render(&mut out, "STABLE");
    pod_cpu.render(&mut out, "STABLE");
    pod_mem.render(&mut out, "STABLE");
    resource_err.render(&mut out, "STABLE");
    scrape_err.render(&mut out, "ALPHA");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::v1alpha1::*;

    #[test]
    fn resource_metrics_as_upstream_writes_them() {
        // 2021-06-23 05:11:18.302091597 +0800, upstream's test timestamp.
        let t = Time::from_ns(1_624_396_278_302_091_597);
        let summary = Summary {
            node: NodeStats {
                cpu: Some(CpuStats {
                    time: t,
                    usage_core_nano_seconds: Some(10_000_000_000),
                    usage_nano_cores: None,
                }),
                memory: Some(MemoryStats {
                    time: t,
                    working_set_bytes: Some(1000),
                    ..Default::default()
                }),
                ..Default::default()
            },
            pods: vec![PodStats {
                pod_ref: PodReference {
                    name: "pod_a".into(),
                    namespace: "namespace_a".into(),
                    uid: "u".into(),
                },
                cpu: Some(CpuStats {
                    time: t,
                    usage_core_nano_seconds: Some(10_000_000_000),
                    usage_nano_cores: None,
                }),
                containers: vec![ContainerStats {
                    name: "container_a".into(),
                    start_time: Time::from_ns(1_624_396_248_302_091_597),
                    memory: Some(MemoryStats {
                        time: t,
                        working_set_bytes: Some(1000),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let out = render_resource_metrics(Some(&summary));
        assert_eq!(
            out,
            "# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container=\"container_a\",namespace=\"namespace_a\",pod=\"pod_a\"} 1000 1624396278302
# HELP container_start_time_seconds [STABLE] Start time of the container since unix epoch in seconds
# TYPE container_start_time_seconds gauge
container_start_time_seconds{container=\"container_a\",namespace=\"namespace_a\",pod=\"pod_a\"} 1.6243962483020916e+09
# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds
# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total 10 1624396278302
# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes
# TYPE node_memory_working_set_bytes gauge
node_memory_working_set_bytes 1000 1624396278302
# HELP pod_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the pod in core-seconds
# TYPE pod_cpu_usage_seconds_total counter
pod_cpu_usage_seconds_total{namespace=\"namespace_a\",pod=\"pod_a\"} 10 1624396278302
# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise
# TYPE resource_scrape_error gauge
resource_scrape_error 0
# HELP scrape_error [ALPHA] 1 if there was an error while getting container metrics, 0 otherwise
# TYPE scrape_error gauge
scrape_error 0
"
        );
        let failed = render_resource_metrics(None);
        assert!(
            failed.contains("\nresource_scrape_error 1\n") && failed.contains("\nscrape_error 1\n")
        );
        assert!(!failed.contains("node_cpu"));
    }
}

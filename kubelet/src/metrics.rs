//! The kubelet's own metrics (upstream's `pkg/kubelet/metrics`), served on `/metrics` in the
//! Prometheus text format 0.0.4 with upstream's names, help texts (with component-base's
//! `[ALPHA]` stability prefix), label names and histogram buckets.
//!
//! The metric types and the text format are the components' shared ones ([`machinery::metrics`]).
//! The registry is process-wide ([`metrics`]), as upstream's `legacyregistry`.

use std::sync::OnceLock;
use std::time::Duration;

pub use machinery::metrics::*;

/// Upstream's `podStartupDurationBuckets`.
pub const POD_STARTUP_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 240.0,
    300.0, 360.0, 480.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
];

/// `metrics.ExponentialBuckets(.005, 2.5, 14)`: the runtime operations' buckets.
pub fn runtime_operation_buckets() -> &'static [f64] {
    static B: OnceLock<Vec<f64>> = OnceLock::new();
    B.get_or_init(|| exponential_buckets(0.005, 2.5, 14))
}

/// The kubelet's metrics, with upstream's names.
pub struct KubeletMetrics {
    pub node_name: Family<Gauge>,
    pub pod_start_duration: Single<Histogram>,
    pub pod_worker_duration: Family<Histogram>,
    pub pleg_relist_duration: Single<Histogram>,
    pub pleg_relist_interval: Single<Histogram>,
    pub pleg_last_seen: Single<Gauge>,
    pub running_pods: Single<Gauge>,
    pub running_containers: Family<Gauge>,
    pub runtime_operations: Family<Counter>,
    pub runtime_operations_duration: Family<Histogram>,
    pub runtime_operations_errors: Family<Counter>,
    pub started_pods: Single<Counter>,
    pub started_pods_errors: Single<Counter>,
    pub started_containers: Family<Counter>,
    pub started_containers_errors: Family<Counter>,
}

/// The process-wide registry.
pub fn metrics() -> &'static KubeletMetrics {
    static M: OnceLock<KubeletMetrics> = OnceLock::new();
    M.get_or_init(KubeletMetrics::new)
}

impl KubeletMetrics {
    fn new() -> Self {
        KubeletMetrics {
            node_name: Family::new(
                info(
                    "kubelet_node_name",
                    "The node's name. The count is always 1.",
                    "gauge",
                ),
                "node",
            ),
            pod_start_duration: Single::new(histogram_info(
                "kubelet_pod_start_duration_seconds",
                "Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
                POD_STARTUP_BUCKETS,
            )),
            pod_worker_duration: Family::new(
                histogram_info(
                    "kubelet_pod_worker_duration_seconds",
                    "Duration in seconds to sync a single pod. Broken down by operation type: create, update, or sync",
                    DEF_BUCKETS,
                ),
                "operation_type",
            ),
            pleg_relist_duration: Single::new(histogram_info(
                "kubelet_pleg_relist_duration_seconds",
                "Duration in seconds for relisting pods in PLEG.",
                DEF_BUCKETS,
            )),
            pleg_relist_interval: Single::new(histogram_info(
                "kubelet_pleg_relist_interval_seconds",
                "Interval in seconds between relisting in PLEG.",
                DEF_BUCKETS,
            )),
            pleg_last_seen: Single::new(info(
                "kubelet_pleg_last_seen_seconds",
                "Timestamp in seconds when PLEG was last seen active.",
                "gauge",
            )),
            running_pods: Single::new(info(
                "kubelet_running_pods",
                "Number of pods that have a running pod sandbox",
                "gauge",
            )),
            running_containers: Family::new(
                info(
                    "kubelet_running_containers",
                    "Number of containers currently running",
                    "gauge",
                ),
                "container_state",
            ),
            runtime_operations: Family::new(
                info(
                    "kubelet_runtime_operations_total",
                    "Cumulative number of runtime operations by operation type.",
                    "counter",
                ),
                "operation_type",
            ),
            runtime_operations_duration: Family::new(
                histogram_info(
                    "kubelet_runtime_operations_duration_seconds",
                    "Duration in seconds of runtime operations. Broken down by operation type.",
                    runtime_operation_buckets(),
                ),
                "operation_type",
            ),
            runtime_operations_errors: Family::new(
                info(
                    "kubelet_runtime_operations_errors_total",
                    "Cumulative number of runtime operation errors by operation type.",
                    "counter",
                ),
                "operation_type",
            ),
            started_pods: Single::new(info(
                "kubelet_started_pods_total",
                "Cumulative number of pods started",
                "counter",
            )),
            started_pods_errors: Single::new(info(
                "kubelet_started_pods_errors_total",
                "Cumulative number of errors when starting pods",
                "counter",
            )),
            started_containers: Family::new(
                info(
                    "kubelet_started_containers_total",
                    "Cumulative number of containers started",
                    "counter",
                ),
                "container_type",
            ),
            started_containers_errors: Family::new(
                info(
                    "kubelet_started_containers_errors_total",
                    "Cumulative number of errors when starting containers",
                    "counter",
                ),
                "container_type",
            ),
        }
    }

    /// Records one CRI call (upstream's instrumented runtime service): its count, duration and,
    /// when it failed, its error.
    pub fn record_operation(&self, operation: &str, took: Duration, failed: bool) {
        self.runtime_operations.with(operation).inc();
        self.runtime_operations_duration
            .with(operation)
            .observe_duration(took);
        if failed {
            self.runtime_operations_errors.with(operation).inc();
        }
    }

    /// The whole exposition, families sorted by name (as Go's gatherer sorts them), followed by
    /// the process metrics.
    pub fn render(&self) -> String {
        let mut parts: Vec<(&'static str, String)> = Vec::new();
        macro_rules! add {
            ($($m:ident),*) => {$(
                let mut s = String::new();
                self.$m.render(&mut s);
                parts.push((self.$m.info.name, s));
            )*};
        }
        add!(
            node_name,
            pod_start_duration,
            pod_worker_duration,
            pleg_relist_duration,
            pleg_relist_interval,
            pleg_last_seen,
            running_pods,
            running_containers,
            runtime_operations,
            runtime_operations_duration,
            runtime_operations_errors,
            started_pods,
            started_pods_errors,
            started_containers,
            started_containers_errors
        );
        parts.push(("process_", process_metrics()));
        parts.sort_by(|a, b| a.0.cmp(b.0));
        parts.into_iter().map(|(_, s)| s).collect()
    }
}

/// Converts a CRI method name to upstream's operation_type (`run_pod_sandbox` →
/// `run_podsandbox`, as upstream's instrumented service names them).
pub fn operation_type(method: &'static str) -> &'static str {
    match method {
        "run_pod_sandbox" => "run_podsandbox",
        "stop_pod_sandbox" => "stop_podsandbox",
        "remove_pod_sandbox" => "remove_podsandbox",
        "pod_sandbox_status" => "podsandbox_status",
        "list_pod_sandbox" => "list_podsandbox",
        "pod_sandbox_stats" => "podsandbox_stats",
        "list_pod_sandbox_stats" => "list_podsandbox_stats",
        m => m,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_match_upstream() {
        let b = runtime_operation_buckets();
        assert_eq!(b.len(), 14);
        assert_eq!(b[0], 0.005);
        assert!((b[1] - 0.0125).abs() < 1e-12);
    }

    #[test]
    fn the_registry_has_upstreams_names() {
        let m = metrics();
        m.record_operation(
            operation_type("list_pod_sandbox"),
            Duration::from_millis(3),
            true,
        );
        m.node_name.with("n1").set(1);
        let text = m.render();
        for name in [
            "kubelet_pod_start_duration_seconds",
            "kubelet_pod_worker_duration_seconds",
            "kubelet_pleg_relist_duration_seconds",
            "kubelet_pleg_relist_interval_seconds",
            "kubelet_running_pods",
            "kubelet_running_containers",
            "kubelet_runtime_operations_total",
            "kubelet_runtime_operations_duration_seconds",
            "kubelet_runtime_operations_errors_total",
            "kubelet_started_pods_total",
            "kubelet_started_containers_total",
            "process_cpu_seconds_total",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} in\n{text}"
            );
        }
        assert!(text.contains("kubelet_node_name{node=\"n1\"} 1\n"));
        assert!(text.contains(
            "kubelet_runtime_operations_errors_total{operation_type=\"list_podsandbox\"} "
        ));
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "families sorted by name");
    }
}

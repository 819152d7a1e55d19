//! kube-proxy's metrics (upstream's `pkg/proxy/metrics`), served on `--metrics-bind-address` as
//! `/metrics` in the Prometheus text format with upstream's names, help texts and buckets. Like
//! the kubelet's, it is built from the shared metric types ([`machinery::metrics`]): a handful
//! of histograms, gauges and counters.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use machinery::metrics::{
    escape, exponential_buckets, format_float, header, Counter, FamilyInfo, FloatGauge, Histogram,
};
use parking_lot::Mutex;

/// Every metric of the proxy.
#[derive(Debug)]
pub struct ProxyMetrics {
    pub sync_proxy_rules_duration: Histogram,
    pub sync_full_proxy_rules_duration: Histogram,
    pub sync_partial_proxy_rules_duration: Histogram,
    pub sync_proxy_rules_last_timestamp: FloatGauge,
    pub sync_proxy_rules_last_queued_timestamp: FloatGauge,
    pub iptables_restore_failures: Counter,
    pub iptables_partial_restore_failures: Counter,
    pub endpoint_changes_pending: FloatGauge,
    pub endpoint_changes_total: Counter,
    pub service_changes_pending: FloatGauge,
    pub service_changes_total: Counter,
    pub iptables_total: Mutex<Vec<(String, usize)>>,
    pub no_local_endpoints: Mutex<(usize, usize)>,
}

/// The process-wide registry.
pub fn metrics() -> &'static ProxyMetrics {
    static M: OnceLock<ProxyMetrics> = OnceLock::new();
    M.get_or_init(|| {
        // Upstream: metrics.ExponentialBuckets(0.001, 2, 15).
        static BUCKETS: OnceLock<Vec<f64>> = OnceLock::new();
        let b = || {
            BUCKETS
                .get_or_init(|| exponential_buckets(0.001, 2.0, 15))
                .as_slice()
        };
        ProxyMetrics {
            sync_proxy_rules_duration: Histogram::new(b()),
            sync_full_proxy_rules_duration: Histogram::new(b()),
            sync_partial_proxy_rules_duration: Histogram::new(b()),
            sync_proxy_rules_last_timestamp: FloatGauge::default(),
            sync_proxy_rules_last_queued_timestamp: FloatGauge::default(),
            iptables_restore_failures: Counter::default(),
            iptables_partial_restore_failures: Counter::default(),
            endpoint_changes_pending: FloatGauge::default(),
            endpoint_changes_total: Counter::default(),
            service_changes_pending: FloatGauge::default(),
            service_changes_total: Counter::default(),
            iptables_total: Mutex::new(Vec::new()),
            no_local_endpoints: Mutex::new((0, 0)),
        }
    })
}

fn family_header(out: &mut String, name: &'static str, help: &'static str, kind: &'static str) {
    header(
        out,
        &FamilyInfo {
            name,
            help,
            kind,
            buckets: &[],
        },
    );
}

impl ProxyMetrics {
    /// The exposition, families sorted by name.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &'static str, help: &'static str, v: f64| {
            family_header(out, name, help, "gauge");
            let _ = writeln!(out, "{name} {}", format_float(v));
        };
        let counter = |out: &mut String, name: &'static str, help: &'static str, v: u64| {
            family_header(out, name, help, "counter");
            let _ = writeln!(out, "{name} {v}");
        };
        family_header(
            &mut out,
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for full resyncs",
            "histogram",
        );
        self.sync_full_proxy_rules_duration.render(
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            None,
            &mut out,
        );
        family_header(
            &mut out,
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs",
            "histogram",
        );
        self.sync_partial_proxy_rules_duration.render(
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            None,
            &mut out,
        );
        family_header(
            &mut out,
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            "histogram",
        );
        self.sync_proxy_rules_duration.render(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            None,
            &mut out,
        );
        gauge(
            &mut out,
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules Endpoint changes",
            self.endpoint_changes_pending.get(),
        );
        counter(
            &mut out,
            "kubeproxy_sync_proxy_rules_endpoint_changes_total",
            "Cumulative proxy rules Endpoint changes",
            self.endpoint_changes_total.get(),
        );
        counter(
            &mut out,
            "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total",
            "Cumulative proxy iptables partial restore failures",
            self.iptables_partial_restore_failures.get(),
        );
        counter(
            &mut out,
            "kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
            "Cumulative proxy iptables restore failures",
            self.iptables_restore_failures.get(),
        );
        family_header(
            &mut out,
            "kubeproxy_sync_proxy_rules_iptables_total",
            "Total number of iptables rules owned by kube-proxy",
            "gauge",
        );
        for (table, n) in self.iptables_total.lock().iter() {
            let _ = writeln!(
                out,
                "kubeproxy_sync_proxy_rules_iptables_total{{table=\"{}\"}} {n}",
                escape(table)
            );
        }
        gauge(
            &mut out,
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            self.sync_proxy_rules_last_queued_timestamp.get(),
        );
        gauge(
            &mut out,
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            self.sync_proxy_rules_last_timestamp.get(),
        );
        family_header(
            &mut out,
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints",
            "gauge",
        );
        let (internal, external) = *self.no_local_endpoints.lock();
        let _ = writeln!(out, "kubeproxy_sync_proxy_rules_no_local_endpoints_total{{traffic_policy=\"external\"}} {external}");
        let _ = writeln!(out, "kubeproxy_sync_proxy_rules_no_local_endpoints_total{{traffic_policy=\"internal\"}} {internal}");
        gauge(
            &mut out,
            "kubeproxy_sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes",
            self.service_changes_pending.get(),
        );
        counter(
            &mut out,
            "kubeproxy_sync_proxy_rules_service_changes_total",
            "Cumulative proxy rules Service changes",
            self.service_changes_total.get(),
        );
        out
    }
}

/// Serves /metrics until the task is dropped.
pub async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                metrics().render(),
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}

/// Keeps `Arc` in scope for callers sharing the registry.
pub type SharedMetrics = Arc<ProxyMetrics>;

#[cfg(test)]
mod tests {
    #[test]
    fn exposition_has_upstream_names() {
        let m = super::metrics();
        m.sync_proxy_rules_duration
            .observe_duration(std::time::Duration::from_millis(3));
        *m.iptables_total.lock() = vec![("filter".into(), 4), ("nat".into(), 10)];
        let text = m.render();
        assert!(
            text.contains("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.004\"} 1"),
            "{text}"
        );
        assert!(text.contains("kubeproxy_sync_proxy_rules_iptables_total{table=\"nat\"} 10"));
        assert!(text.contains("# TYPE kubeproxy_sync_proxy_rules_last_timestamp_seconds gauge"));
    }
}

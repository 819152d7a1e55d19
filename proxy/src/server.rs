//! Running the proxy (upstream's `cmd/kube-proxy/app/server.go` and the sync half of
//! `proxier.go`): watchers record Service and EndpointSlice events into the change trackers and
//! poke the [`BoundedFrequencyRunner`]; the runner's thread applies the pending changes and hands
//! them to the backend, then removes stale UDP conntrack entries, updates the health check node
//! ports and the metrics. The first sync waits until both watchers have listed everything.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Api;
use parking_lot::Mutex;

use crate::bounded_frequency_runner::{BoundedFrequencyRunner, RunHandle};
use crate::config::{Config, NodePortAddresses};
use crate::conntrack;
use crate::endpoints_change_tracker::{EndpointsChangeTracker, LABEL_SERVICE_NAME};
use crate::iptables::kernel::{Flavour, RealIptables};
use crate::iptables::rules::RenderContext;
use crate::iptables::IptablesProxier;
use crate::metrics::metrics;
use crate::proxier::{Proxier, ProxyState, SyncRequest};
use crate::proxier_health::ProxierHealth;
use crate::service_change_tracker::ServiceChangeTracker;
use crate::service_health::ServiceHealthServer;
use crate::service_port::NamespacedName;

/// How often a full resync happens even when nothing looks wrong (upstream's FullSyncPeriod).
pub const FULL_SYNC_PERIOD: Duration = Duration::from_secs(3600);
/// Upstream's burst of the sync runner.
pub const BURST_SYNCS: u32 = 2;

/// What the watchers write and the sync reads: the trackers and whether each cache has synced.
#[derive(Debug)]
pub struct Trackers {
    pub services: ServiceChangeTracker,
    pub endpoints: EndpointsChangeTracker,
    pub services_synced: bool,
    pub endpoints_synced: bool,
}

/// The sync side: the applied state and the backend.
pub struct SyncDriver {
    trackers: Arc<Mutex<Trackers>>,
    state: ProxyState,
    proxier: Box<dyn Proxier>,
    health: ProxierHealth,
    service_health: Option<ServiceHealthServer>,
    /// Changes of a failed sync, retried with the next one.
    carry: BTreeSet<NamespacedName>,
    force_full: bool,
    /// Set by the canary monitor when the kernel state was lost.
    state_lost: Arc<AtomicBool>,
    last_full: Option<Instant>,
    full_sync_period: Duration,
}

impl SyncDriver {
    pub fn new(
        trackers: Arc<Mutex<Trackers>>,
        proxier: Box<dyn Proxier>,
        health: ProxierHealth,
        service_health: Option<ServiceHealthServer>,
        state_lost: Arc<AtomicBool>,
    ) -> Self {
        SyncDriver {
            trackers,
            state: ProxyState::default(),
            proxier,
            health,
            service_health,
            carry: BTreeSet::new(),
            force_full: true,
            state_lost,
            last_full: None,
            full_sync_period: FULL_SYNC_PERIOD,
        }
    }

    /// Changes how often a full resync happens (tests).
    pub fn with_full_sync_period(mut self, period: Duration) -> Self {
        self.full_sync_period = period;
        self
    }

    /// One run of the runner.
    pub fn sync_once(&mut self) {
        let started = Instant::now();
        let (svc_result, ep_result) = {
            let mut t = self.trackers.lock();
            if !(t.services_synced && t.endpoints_synced) {
                tracing::debug!("not syncing: caches not synced yet");
                return;
            }
            let s = t.services.apply(&mut self.state.services);
            let e = t.endpoints.apply(&mut self.state.endpoints);
            (s, e)
        };
        let m = metrics();
        m.service_changes_pending.set(0.0);
        m.endpoint_changes_pending.set(0.0);
        if self.state_lost.swap(false, Ordering::Relaxed) {
            self.force_full = true;
        }
        if self
            .last_full
            .is_none_or(|t| t.elapsed() >= self.full_sync_period)
        {
            self.force_full = true;
        }
        let mut changed = std::mem::take(&mut self.carry);
        changed.extend(svc_result.updated_services.iter().cloned());
        changed.extend(ep_result.updated_services.iter().cloned());
        let full = self.force_full;
        let result = self.proxier.sync(SyncRequest {
            state: &self.state,
            changed: &changed,
            full,
        });
        let took = started.elapsed();
        match result {
            Ok(report) => {
                self.force_full = false;
                if report.full {
                    self.last_full = Some(Instant::now());
                    m.sync_full_proxy_rules_duration.observe_duration(took);
                } else {
                    m.sync_partial_proxy_rules_duration.observe_duration(took);
                }
                m.sync_proxy_rules_duration.observe_duration(took);
                m.sync_proxy_rules_last_timestamp.set(
                    SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs_f64(),
                );
                *m.iptables_total.lock() = report
                    .rules
                    .iter()
                    .map(|(t, n)| (t.to_string(), *n))
                    .collect();
                *m.no_local_endpoints.lock() = report.no_local_endpoints;
                self.health.updated();
                tracing::info!(
                    full = report.full,
                    changed = changed.len(),
                    bytes = report.bytes_written,
                    took_ms = took.as_millis() as u64,
                    "synced proxy rules"
                );
                self.clear_conntrack(&svc_result.deleted_udp_cluster_ips, &ep_result);
                self.update_health_check_ports();
            }
            Err(e) => {
                m.iptables_restore_failures.inc();
                if !full {
                    m.iptables_partial_restore_failures.inc();
                }
                tracing::error!(error = %e, "syncing proxy rules failed; retrying with a full sync");
                self.carry = changed;
                self.force_full = true;
            }
        }
    }

    fn clear_conntrack(
        &self,
        deleted_ips: &BTreeSet<IpAddr>,
        ep: &crate::endpoints_change_tracker::EndpointsUpdateResult,
    ) {
        let mut filters = Vec::new();
        for ip in deleted_ips {
            filters.push(conntrack::deleted_service_filter(*ip));
        }
        for (spn, e) in &ep.stale_endpoints {
            if let Some(svc) = self.state.services.get(spn) {
                filters.extend(conntrack::stale_endpoint_filters(svc, e));
            }
        }
        for spn in &ep.new_udp_service_ports {
            if let Some(svc) = self.state.services.get(spn) {
                filters.extend(conntrack::new_service_filters(svc));
            }
        }
        if !filters.is_empty() {
            conntrack::delete(&filters);
        }
    }

    fn update_health_check_ports(&mut self) {
        let Some(hs) = self.service_health.as_mut() else {
            return;
        };
        let mut wanted = BTreeMap::new();
        let mut local = BTreeMap::new();
        for (spn, info) in &self.state.services {
            if info.health_check_node_port == 0 {
                continue;
            }
            wanted.insert(spn.service.clone(), info.health_check_node_port);
            let n = self
                .state
                .endpoints
                .get(spn)
                .map(|eps| eps.iter().filter(|e| e.is_local && e.ready).count())
                .unwrap_or(0);
            let e = local.entry(spn.service.clone()).or_insert(0);
            *e = (*e).max(n);
        }
        hs.sync_services(&wanted);
        hs.sync_endpoints(&local);
    }
}

fn svc_key(s: &Service) -> NamespacedName {
    NamespacedName {
        namespace: s.metadata.namespace.clone().unwrap_or_default(),
        name: s.metadata.name.clone().unwrap_or_default(),
    }
}

fn slice_key(s: &EndpointSlice) -> Option<(NamespacedName, String)> {
    let svc = s.metadata.labels.as_ref()?.get(LABEL_SERVICE_NAME)?;
    Some((
        NamespacedName {
            namespace: s.metadata.namespace.clone().unwrap_or_default(),
            name: svc.clone(),
        },
        s.metadata.name.clone().unwrap_or_default(),
    ))
}

fn poke(changed: bool, runner: &RunHandle, health: &ProxierHealth) {
    if changed {
        health.queued_update();
        metrics().sync_proxy_rules_last_queued_timestamp.set(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        );
        runner.run();
    }
}

/// Records Service events (handlers only record, then poke the runner).
pub async fn watch_services(
    api: Api<Service>,
    trackers: Arc<Mutex<Trackers>>,
    runner: RunHandle,
    health: ProxierHealth,
) {
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut listed: Option<BTreeSet<NamespacedName>> = None;
    while let Some(ev) = stream.next().await {
        let changed = match ev {
            Ok(Event::Init) => {
                listed = Some(BTreeSet::new());
                false
            }
            Ok(Event::InitApply(s)) => {
                if let Some(l) = listed.as_mut() {
                    l.insert(svc_key(&s));
                }
                trackers.lock().services.update(&s)
            }
            Ok(Event::InitDone) => {
                let seen = listed.take().unwrap_or_default();
                let mut t = trackers.lock();
                let mut changed = false;
                for gone in t.services.known().difference(&seen) {
                    changed |= t.services.delete_name(gone);
                }
                let first = !t.services_synced;
                t.services_synced = true;
                changed || first
            }
            Ok(Event::Apply(s)) => trackers.lock().services.update(&s),
            Ok(Event::Delete(s)) => trackers.lock().services.delete(&s),
            Err(e) => {
                tracing::warn!(error = %e, "watching Services");
                false
            }
        };
        if changed {
            let m = metrics();
            m.service_changes_total.inc();
            m.service_changes_pending
                .set(trackers.lock().services.pending() as f64);
        }
        poke(changed, &runner, &health);
    }
}

/// Records EndpointSlice events.
pub async fn watch_endpoint_slices(
    api: Api<EndpointSlice>,
    trackers: Arc<Mutex<Trackers>>,
    runner: RunHandle,
    health: ProxierHealth,
) {
    // Upstream only watches slices that belong to a Service and are not headless.
    let cfg = watcher::Config::default().labels(&format!(
        "{LABEL_SERVICE_NAME},!service.kubernetes.io/headless"
    ));
    let mut stream = watcher::watcher(api, cfg).default_backoff().boxed();
    let mut listed: Option<BTreeSet<(NamespacedName, String)>> = None;
    while let Some(ev) = stream.next().await {
        let changed = match ev {
            Ok(Event::Init) => {
                listed = Some(BTreeSet::new());
                false
            }
            Ok(Event::InitApply(s)) => {
                if let (Some(l), Some(k)) = (listed.as_mut(), slice_key(&s)) {
                    l.insert(k);
                }
                trackers.lock().endpoints.update(&s)
            }
            Ok(Event::InitDone) => {
                let seen = listed.take().unwrap_or_default();
                let mut t = trackers.lock();
                let mut changed = false;
                for (svc, slice) in t.endpoints.known().difference(&seen) {
                    changed |= t.endpoints.delete_name(svc, slice);
                }
                let first = !t.endpoints_synced;
                t.endpoints_synced = true;
                changed || first
            }
            Ok(Event::Apply(s)) => trackers.lock().endpoints.update(&s),
            Ok(Event::Delete(s)) => trackers.lock().endpoints.delete(&s),
            Err(e) => {
                tracing::warn!(error = %e, "watching EndpointSlices");
                false
            }
        };
        if changed {
            let m = metrics();
            m.endpoint_changes_total.inc();
            m.endpoint_changes_pending
                .set(trackers.lock().endpoints.pending() as f64);
        }
        poke(changed, &runner, &health);
    }
}

/// Upstream's canary monitor: every sync period, off the sync path, checks that the backend's
/// kernel state is still there; when it is not, the next sync is a full one, at once.
async fn canary_monitor(
    probe: Box<dyn FnMut() -> bool + Send>,
    period: Duration,
    state_lost: Arc<AtomicBool>,
    runner: RunHandle,
) {
    let probe = Arc::new(Mutex::new(probe));
    loop {
        tokio::time::sleep(period).await;
        let p = probe.clone();
        let lost = tokio::task::spawn_blocking(move || (p.lock())())
            .await
            .unwrap_or(false);
        if lost {
            tracing::warn!("canary chain missing: a table was flushed; full resync");
            state_lost.store(true, Ordering::Relaxed);
            runner.run();
        }
    }
}

/// The node's IPv4 addresses (for --nodeport-addresses and load balancer source ranges).
pub fn local_ipv4_addresses() -> Vec<IpAddr> {
    let out = std::process::Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output();
    let Ok(out) = out else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect()
}

/// The rendering context from the configuration and the node's addresses.
pub fn render_context(config: &Config, node_ips: &[IpAddr]) -> RenderContext {
    RenderContext {
        masquerade_all: config.masquerade_all,
        cluster_cidr: config
            .cluster_cidrs
            .iter()
            .copied()
            .find(|c| c.addr.is_ipv4()),
        node_port_ips: match &config.node_port_addresses {
            NodePortAddresses::All => None,
            NodePortAddresses::Cidrs(cidrs) => Some(
                node_ips
                    .iter()
                    .copied()
                    .filter(|ip| cidrs.iter().any(|c| c.contains(*ip)))
                    .collect(),
            ),
        },
        node_ips: node_ips.to_vec(),
        masq_mark: format!("{:#x}", 1u32 << config.masquerade_bit),
    }
}

/// Removes every rule and chain the iptables proxier makes from this network namespace
/// (upstream's `kube-proxy --cleanup`), for `capstan uninstall`. Nothing to remove is no error.
pub fn cleanup() -> anyhow::Result<()> {
    let config = Config::resolve(&crate::ProxyArgs::default())?;
    let ctx = render_context(&config, &[]);
    let mut proxier = IptablesProxier::new(RealIptables::new(Flavour::detect()), ctx);
    proxier.cleanup()?;
    Ok(())
}

/// Runs the proxy until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let client = machinery::client::build_client(
        config.kubeconfig.as_deref(),
        &machinery::client::user_agent("proxy"),
    )
    .await?;
    let flavour = Flavour::detect();
    let node_ips = local_ipv4_addresses();
    let ctx = render_context(&config, &node_ips);
    tracing::info!(
        mode = "iptables",
        iptables = flavour.name(),
        hostname = %config.hostname,
        "starting the service proxy"
    );
    let proxier = IptablesProxier::new(RealIptables::new(flavour), ctx);
    let health = ProxierHealth::new(2 * config.sync_period);
    let trackers = Arc::new(Mutex::new(Trackers {
        services: ServiceChangeTracker::default(),
        endpoints: EndpointsChangeTracker::new(&config.hostname),
        services_synced: false,
        endpoints_synced: false,
    }));
    let runner =
        BoundedFrequencyRunner::new(config.min_sync_period, config.sync_period, BURST_SYNCS);
    let handle = runner.handle();
    let bind_ip: IpAddr = "0.0.0.0".parse().expect("an address");
    let service_health =
        ServiceHealthServer::new(bind_ip, health.clone(), tokio::runtime::Handle::current());
    let state_lost = Arc::new(AtomicBool::new(false));
    let probe = proxier.kernel_state_probe();
    let mut driver = SyncDriver::new(
        trackers.clone(),
        Box::new(proxier),
        health.clone(),
        Some(service_health),
        state_lost.clone(),
    );
    std::thread::Builder::new()
        .name("proxy-sync".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a runtime for the sync runner");
            rt.block_on(runner.run_loop(move || driver.sync_once()));
        })?;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(canary_monitor(
        probe,
        config.sync_period,
        state_lost,
        handle.clone(),
    ));
    if let Some(addr) = config.healthz_bind_address {
        let h = health.clone();
        tasks.spawn(async move {
            if let Err(e) = h.serve(addr).await {
                tracing::error!(%addr, error = %e, "healthz server");
            }
        });
    }
    if let Some(addr) = config.metrics_bind_address {
        tasks.spawn(async move {
            if let Err(e) = crate::metrics::serve(addr).await {
                tracing::error!(%addr, error = %e, "metrics server");
            }
        });
    }
    tasks.spawn(watch_services(
        Api::all(client.clone()),
        trackers.clone(),
        handle.clone(),
        health.clone(),
    ));
    tasks.spawn(watch_endpoint_slices(
        Api::all(client),
        trackers,
        handle,
        health,
    ));
    shutdown.await;
    tasks.abort_all();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxier::{ProxyError, SyncReport};

    /// One recorded sync: (full, changed Services, Service ports in the state).
    type Call = (bool, Vec<String>, usize);

    #[derive(Clone, Default)]
    struct Recorder {
        calls: Arc<Mutex<Vec<Call>>>,
        fail_next: Arc<AtomicBool>,
    }

    impl Proxier for Recorder {
        fn mode(&self) -> &'static str {
            "recorder"
        }
        fn sync(&mut self, req: SyncRequest<'_>) -> Result<SyncReport, ProxyError> {
            self.calls.lock().push((
                req.full,
                req.changed.iter().map(|s| s.to_string()).collect(),
                req.state.services.len(),
            ));
            if self.fail_next.swap(false, Ordering::Relaxed) {
                return Err(ProxyError::Failed {
                    command: "fake".into(),
                    status: "1".into(),
                    stderr: String::new(),
                });
            }
            Ok(SyncReport {
                full: req.full,
                ..Default::default()
            })
        }
        fn kernel_state_probe(&self) -> Box<dyn FnMut() -> bool + Send> {
            Box::new(|| false)
        }
        fn cleanup(&mut self) -> Result<(), ProxyError> {
            Ok(())
        }
    }

    fn service(name: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "ns", "name": name},
            "spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}
        }))
        .unwrap()
    }

    #[test]
    fn first_sync_waits_for_both_caches_then_is_full_then_partial() {
        let trackers = Arc::new(Mutex::new(Trackers {
            services: ServiceChangeTracker::default(),
            endpoints: EndpointsChangeTracker::new("n"),
            services_synced: false,
            endpoints_synced: false,
        }));
        let rec = Recorder::default();
        let lost = Arc::new(AtomicBool::new(false));
        let mut d = SyncDriver::new(
            trackers.clone(),
            Box::new(rec.clone()),
            ProxierHealth::new(Duration::from_secs(60)),
            None,
            lost.clone(),
        );
        trackers.lock().services.update(&service("a"));
        trackers.lock().services_synced = true;
        d.sync_once();
        assert!(rec.calls.lock().is_empty(), "EndpointSlices not listed yet");
        trackers.lock().endpoints_synced = true;
        d.sync_once();
        assert_eq!(rec.calls.lock()[0], (true, vec!["ns/a".to_string()], 1));

        trackers.lock().services.update(&service("b"));
        d.sync_once();
        assert_eq!(rec.calls.lock()[1], (false, vec!["ns/b".to_string()], 2));

        // A failed sync: its changes are carried into the next one, which is full.
        rec.fail_next.store(true, Ordering::Relaxed);
        trackers.lock().services.delete(&service("a"));
        d.sync_once();
        d.sync_once();
        assert_eq!(rec.calls.lock()[3], (true, vec!["ns/a".to_string()], 1));

        // The canary monitor's verdict makes the next sync full.
        lost.store(true, Ordering::Relaxed);
        d.sync_once();
        assert!(rec.calls.lock()[4].0);
        d.sync_once();
        assert!(!rec.calls.lock()[5].0);
    }

    #[test]
    fn node_ports_answer_only_on_the_node_addresses_in_nodeport_addresses() {
        let mut config = Config::resolve(&crate::config::ProxyArgs {
            nodeport_addresses: Some(vec!["192.168.0.0/24".into()]),
            ..Default::default()
        })
        .unwrap();
        let ips: Vec<IpAddr> = vec!["192.168.0.2".parse().unwrap(), "10.0.0.5".parse().unwrap()];
        let ctx = render_context(&config, &ips);
        assert_eq!(ctx.node_port_ips, Some(vec![ips[0]]));
        config.node_port_addresses = crate::config::NodePortAddresses::All;
        assert_eq!(render_context(&config, &ips).node_port_ips, None);
    }

    #[test]
    fn a_full_resync_happens_every_full_sync_period() {
        let trackers = Arc::new(Mutex::new(Trackers {
            services: ServiceChangeTracker::default(),
            endpoints: EndpointsChangeTracker::new("n"),
            services_synced: true,
            endpoints_synced: true,
        }));
        let rec = Recorder::default();
        let mut d = SyncDriver::new(
            trackers.clone(),
            Box::new(rec.clone()),
            ProxierHealth::new(Duration::from_secs(60)),
            None,
            Arc::new(AtomicBool::new(false)),
        )
        .with_full_sync_period(Duration::from_millis(300));
        d.sync_once();
        d.sync_once();
        d.sync_once();
        std::thread::sleep(Duration::from_millis(350));
        d.sync_once();
        d.sync_once();
        let full: Vec<bool> = rec.calls.lock().iter().map(|c| c.0).collect();
        assert_eq!(full, [true, false, false, true, false]);
    }
}

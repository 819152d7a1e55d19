//! The health check node ports of Services with `externalTrafficPolicy: Local` (upstream's
//! `pkg/proxy/healthcheck/service_health.go`): an external load balancer probes
//! `http://<node>:<healthCheckNodePort>/` to learn whether this node has local endpoints. One
//! HTTP server per port answers upstream's JSON
//! `{"service":{"namespace","name"},"localEndpoints":N,"serviceProxyHealthy":bool}` with 200 when
//! there is a local endpoint (and the proxy is healthy), 503 otherwise, and the headers
//! `X-Content-Type-Options: nosniff` and `X-Load-Balancing-Endpoint-Weight: N`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::http::{header, HeaderName, StatusCode};
use axum::response::IntoResponse;
use parking_lot::Mutex;

use crate::proxier_health::ProxierHealth;
use crate::service_port::NamespacedName;

#[derive(Debug, Default)]
struct Entry {
    local_endpoints: usize,
}

type Shared = Arc<Mutex<HashMap<NamespacedName, Entry>>>;

/// The running health check servers.
pub struct ServiceHealthServer {
    bind_ip: IpAddr,
    health: ProxierHealth,
    counts: Shared,
    servers: HashMap<NamespacedName, (u16, tokio::task::JoinHandle<()>)>,
    runtime: tokio::runtime::Handle,
}

impl ServiceHealthServer {
    pub fn new(bind_ip: IpAddr, health: ProxierHealth, runtime: tokio::runtime::Handle) -> Self {
        ServiceHealthServer {
            bind_ip,
            health,
            counts: Shared::default(),
            servers: HashMap::new(),
            runtime,
        }
    }

    /// The ports to serve: Service -> health check node port. Servers of Services no longer
    /// listed stop; new ones start.
    pub fn sync_services(&mut self, wanted: &BTreeMap<NamespacedName, u16>) {
        self.servers.retain(|svc, (port, task)| {
            let keep = wanted.get(svc) == Some(port);
            if !keep {
                task.abort();
            }
            keep
        });
        self.counts.lock().retain(|svc, _| wanted.contains_key(svc));
        for (svc, port) in wanted {
            if self.servers.contains_key(svc) {
                continue;
            }
            self.counts.lock().entry(svc.clone()).or_default();
            let addr = SocketAddr::new(self.bind_ip, *port);
            let (svc2, counts, health) = (svc.clone(), self.counts.clone(), self.health.clone());
            let task = self.runtime.spawn(async move {
                let app = axum::Router::new().fallback(move || {
                    let (svc, counts, health) = (svc2.clone(), counts.clone(), health.clone());
                    async move { respond(&svc, &counts, &health) }
                });
                match tokio::net::TcpListener::bind(addr).await {
                    Ok(l) => {
                        let _ = axum::serve(l, app).await;
                    }
                    Err(e) => tracing::error!(%addr, error = %e, "health check node port"),
                }
            });
            self.servers.insert(svc.clone(), (*port, task));
        }
    }

    /// Local endpoint counts per Service.
    pub fn sync_endpoints(&mut self, local: &BTreeMap<NamespacedName, usize>) {
        let mut counts = self.counts.lock();
        for (svc, e) in counts.iter_mut() {
            e.local_endpoints = local.get(svc).copied().unwrap_or(0);
        }
    }
}

impl Drop for ServiceHealthServer {
    fn drop(&mut self) {
        for (_, (_, t)) in self.servers.drain() {
            t.abort();
        }
    }
}

fn respond(
    svc: &NamespacedName,
    counts: &Shared,
    health: &ProxierHealth,
) -> axum::response::Response {
    let n = counts
        .lock()
        .get(svc)
        .map(|e| e.local_endpoints)
        .unwrap_or(0);
    let healthy = health.status().0;
    let body = serde_json::json!({
        "service": {"namespace": svc.namespace, "name": svc.name},
        "localEndpoints": n,
        "serviceProxyHealthy": healthy,
    });
    let code = if n > 0 && healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            (
                HeaderName::from_static("x-load-balancing-endpoint-weight"),
                n.to_string(),
            ),
        ],
        body.to_string(),
    )
        .into_response()
}

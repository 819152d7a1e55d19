//! The proxy's own health (upstream's `pkg/proxy/healthcheck/proxier_health.go`), served on
//! `--healthz-bind-address` as `/healthz` and `/livez`. Healthy means no change has waited for a
//! sync longer than the health timeout (twice the sync period): the runner records when a change
//! was queued and when a sync succeeded. The body is upstream's JSON (`lastUpdated`,
//! `currentTime`, `nodeEligible`); 200 when healthy, 503 when not.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;

#[derive(Debug)]
struct State {
    last_updated: Option<DateTime<Utc>>,
    /// The oldest change not yet synced.
    oldest_pending: Option<DateTime<Utc>>,
}

/// Shared health state.
#[derive(Debug, Clone)]
pub struct ProxierHealth {
    timeout: Duration,
    state: Arc<Mutex<State>>,
}

impl ProxierHealth {
    /// Starts unhealthy-if-no-sync: the start counts as a queued change.
    pub fn new(timeout: Duration) -> Self {
        ProxierHealth {
            timeout,
            state: Arc::new(Mutex::new(State {
                last_updated: None,
                oldest_pending: Some(Utc::now()),
            })),
        }
    }

    /// A change was recorded and waits for a sync.
    pub fn queued_update(&self) {
        let mut s = self.state.lock();
        if s.oldest_pending.is_none() {
            s.oldest_pending = Some(Utc::now());
        }
    }

    /// A sync succeeded.
    pub fn updated(&self) {
        let mut s = self.state.lock();
        s.last_updated = Some(Utc::now());
        s.oldest_pending = None;
    }

    /// Healthy, with the body to answer.
    pub fn status(&self) -> (bool, String) {
        let s = self.state.lock();
        let now = Utc::now();
        let healthy = match s.oldest_pending {
            None => true,
            Some(t) => (now - t).to_std().unwrap_or_default() < self.timeout,
        };
        let fmt = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let body = serde_json::json!({
            "lastUpdated": s.last_updated.map(fmt).unwrap_or_default(),
            "currentTime": fmt(now),
            "nodeEligible": true,
        });
        (healthy, body.to_string())
    }

    fn respond(&self) -> axum::response::Response {
        let (healthy, body) = self.status();
        let code = if healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (
            code,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            body,
        )
            .into_response()
    }

    /// Serves /healthz and /livez until the task is dropped.
    pub async fn serve(self, addr: SocketAddr) -> std::io::Result<()> {
        let h1 = self.clone();
        let h2 = self;
        let app = axum::Router::new()
            .route(
                "/healthz",
                axum::routing::get(move || async move { h1.respond() }),
            )
            .route(
                "/livez",
                axum::routing::get(move || async move { h2.respond() }),
            );
        let listener = tokio::net::TcpListener::bind(addr).await?;
        axum::serve(listener, app).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_until_a_change_waits_too_long() {
        let h = ProxierHealth::new(Duration::from_millis(50));
        assert!(h.status().0, "just started");
        std::thread::sleep(Duration::from_millis(80));
        assert!(!h.status().0, "never synced");
        h.updated();
        assert!(h.status().0);
        h.queued_update();
        assert!(h.status().0, "a fresh change");
        std::thread::sleep(Duration::from_millis(80));
        let (ok, body) = h.status();
        assert!(!ok, "a change waited longer than the timeout");
        assert!(body.contains("\"nodeEligible\":true"), "{body}");
    }
}

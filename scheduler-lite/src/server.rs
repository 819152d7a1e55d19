//! `/healthz` and `/metrics` over plain HTTP on `--bind-address` (upstream serves HTTPS on
//! 10259 with delegated authentication; a lab scheduler on loopback does not need it).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;

use crate::Scheduler;

/// Starts serving; returns the bound address.
pub async fn serve(addr: SocketAddr, sched: Arc<Scheduler>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let s = sched.clone();
                async move {
                    (
                        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        s.metrics.render(s.queue.pending()),
                    )
                }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("scheduler metrics server: {e}");
        }
    });
    Ok(local)
}

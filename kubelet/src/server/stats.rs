//! `GET /stats/summary` (upstream's `pkg/kubelet/server/stats` handler): the `stats/v1alpha1`
//! Summary of the node and its pods from the [`StatsProvider`](crate::stats::StatsProvider).
//! `only_cpu_and_memory=true` is accepted; the answer is the same (nothing here is costly
//! enough to leave out).

use axum::body::Body;
use axum::extract::State;
use axum::http::{Response, StatusCode};

use super::pods::json;
use super::ServerState;

/// `GET /stats/summary`.
pub async fn summary(State(state): State<ServerState>) -> Response<Body> {
    match state.stats.summary().await {
        Ok(s) => json(StatusCode::OK, &s),
        Err(e) => {
            let mut r = Response::new(Body::from(format!("Internal Error: {e}")));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        }
    }
}

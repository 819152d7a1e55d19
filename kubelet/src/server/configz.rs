//! `GET /configz` (upstream's `configz` handler): the effective KubeletConfiguration — the file's
//! settings with the flags applied and the defaults filled in — under the `kubeletconfig` key,
//! as `kubectl get --raw /api/v1/nodes/<node>/proxy/configz` users read it.

use axum::body::Body;
use axum::extract::State;
use axum::http::{Response, StatusCode};
use serde_json::json;

use super::pods::json;
use super::ServerState;
use crate::config::KubeletConfiguration;

/// The API version and kind the configuration is reported with.
const API_VERSION: &str = "kubelet.config.k8s.io/v1beta1";
const KIND: &str = "KubeletConfiguration";

/// `GET /configz`.
pub async fn configz(State(state): State<ServerState>) -> Response<Body> {
    json(StatusCode::OK, &configz_body(&state.config.settings))
}

/// `{"kubeletconfig": {...}}` with kind and apiVersion set (upstream fills them in too).
pub fn configz_body(settings: &KubeletConfiguration) -> serde_json::Value {
    let mut s = settings.clone();
    s.kind = KIND.into();
    s.api_version = API_VERSION.into();
    json!({ "kubeletconfig": s })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_under_kubeletconfig() {
        let s = KubeletConfiguration::default();
        let v = configz_body(&s);
        assert_eq!(v["kubeletconfig"]["kind"], "KubeletConfiguration");
        assert_eq!(v["kubeletconfig"]["apiVersion"], API_VERSION);
        assert_eq!(v["kubeletconfig"]["port"], s.port);
        assert!(v["kubeletconfig"]["syncFrequency"].is_string());
    }
}

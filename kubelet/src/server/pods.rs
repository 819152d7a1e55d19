//! `GET /pods` (upstream's `getPods`): the pods this kubelet runs, as a `v1 PodList`, from the
//! pod manager's [`PodView`](crate::pods::view::PodView) — what the kubelet was told to run (API
//! and static pods), not the runtime's view.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, Response, StatusCode};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::List;

use super::ServerState;

/// `GET /pods`.
pub async fn pods(State(state): State<ServerState>) -> Response<Body> {
    let list = pod_list(state.pods.all().iter().map(|p| (**p).clone()).collect());
    json(StatusCode::OK, &list)
}

/// The pods as a `PodList`, sorted by namespace and name so that the answer is stable.
pub fn pod_list(mut pods: Vec<Pod>) -> serde_json::Value {
    pods.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    let list = List::<Pod> {
        items: pods,
        metadata: Default::default(),
    };
    serde_json::to_value(&list).unwrap_or_default()
}

/// A JSON answer.
pub(crate) fn json(code: StatusCode, v: &impl serde::Serialize) -> Response<Body> {
    let mut r = Response::new(Body::from(serde_json::to_vec(v).unwrap_or_default()));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_list_of_the_pods() {
        let mut a = Pod::default();
        a.metadata.namespace = Some("ns".into());
        a.metadata.name = Some("b".into());
        let mut b = a.clone();
        b.metadata.name = Some("a".into());
        let v = pod_list(vec![a, b]);
        assert_eq!(v["kind"], "PodList");
        assert_eq!(v["apiVersion"], "v1");
        assert_eq!(v["items"][0]["metadata"]["name"], "a");
        assert_eq!(v["items"][1]["metadata"]["name"], "b");
    }
}

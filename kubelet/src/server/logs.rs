//! `GET /containerLogs/{namespace}/{pod}/{container}` (upstream's `getContainerLogs` and
//! `GetKubeletContainerLogs`): the query is a `PodLogOptions` (follow, previous, timestamps,
//! tailLines — or the old `tail`, sinceSeconds, sinceTime, limitBytes), the pod is looked up by
//! name among the kubelet's pods, the container in the runtime (by the pod-UID and
//! container-name labels), and its CRI log file is streamed with [`crate::logs`].
//!
//! Which container: the newest attempt; with `previous`, the one before it — except while the
//! pod status shows the container waiting to be restarted (CrashLoopBackOff), when the newest is
//! itself the last terminated one, as upstream reads `lastState.terminated`. Errors before any
//! output are plain-text bodies with upstream's codes and messages (400 for what the API server
//! passes on as BadRequest, 404 for an unknown pod or container, 422 for invalid options).

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, Response, StatusCode};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use tokio_stream::wrappers::ReceiverStream;

use super::ServerState;
use crate::logs::{self, LogOptions};
use crate::plan::labels;

/// `GET /containerLogs/{namespace}/{pod}/{container}`.
pub async fn container_logs(
    State(state): State<ServerState>,
    Path((namespace, pod_name, container)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response<Body> {
    match serve(&state, &namespace, &pod_name, &container, &query).await {
        Ok(r) => r,
        Err((code, message)) => text(code, message),
    }
}

type Failure = (StatusCode, String);

async fn serve(
    state: &ServerState,
    namespace: &str,
    pod_name: &str,
    container: &str,
    query: &HashMap<String, String>,
) -> Result<Response<Body>, Failure> {
    let opts = PodLogQuery::parse(query).map_err(|_| {
        (
            StatusCode::BAD_REQUEST,
            r#"{"message": "Unable to decode query."}"#.to_string(),
        )
    })?;
    if opts.validate().is_err() {
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            r#"{"message": "Invalid request."}"#.to_string(),
        ));
    }
    let pod = state.pods.get(namespace, pod_name).ok_or_else(|| {
        (
            StatusCode::NOT_FOUND,
            format!("pod {pod_name:?} does not exist"),
        )
    })?;
    if !has_container(&pod, container) {
        return Err((
            StatusCode::NOT_FOUND,
            format!("container {container:?} not found in pod {pod_name:?}"),
        ));
    }
    let bad = |m: String| (StatusCode::BAD_REQUEST, m);
    let id = find_container(state, &pod, container, opts.previous)
        .await
        .map_err(bad)?;
    let status = state
        .runtime
        .container_status(&id, false)
        .await
        .ok()
        .and_then(|r| r.status)
        .ok_or_else(|| bad(format!("unable to retrieve container logs for {id}")))?;
    let log_opts = LogOptions::new(
        opts.tail_lines,
        opts.limit_bytes,
        opts.since_seconds,
        opts.since_time,
        opts.follow,
        opts.timestamps,
        Utc::now(),
    );
    let (file, path) = logs::open_log(std::path::Path::new(&status.log_path), &log_opts)
        .await
        .map_err(|e| bad(e.to_string()))?;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let liveness = logs::RuntimeLiveness {
        runtime: state.runtime.clone(),
        container_id: id,
    };
    tokio::spawn(logs::stream_logs(file, path, log_opts, liveness, tx));
    let mut r = Response::new(Body::from_stream(ReceiverStream::new(rx)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    Ok(r)
}

fn text(code: StatusCode, message: String) -> Response<Body> {
    let mut r = Response::new(Body::from(message));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The `PodLogOptions` of the query (the kubelet reads the v1 parameters).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodLogQuery {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<i64>,
    pub limit_bytes: Option<i64>,
    pub since_seconds: Option<i64>,
    pub since_time: Option<DateTime<Utc>>,
}

impl PodLogQuery {
    /// Decodes the query; an unparsable value is an error (unknown parameters are ignored).
    pub fn parse(q: &HashMap<String, String>) -> Result<PodLogQuery, String> {
        let boolean = |k: &str| -> Result<bool, String> {
            match q.get(k).map(String::as_str) {
                None | Some("") => Ok(false),
                // Go's strconv.ParseBool.
                Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
                Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
                Some(v) => Err(format!("{k}: {v:?} is not a boolean")),
            }
        };
        let int = |k: &str| -> Result<Option<i64>, String> {
            q.get(k)
                .filter(|v| !v.is_empty())
                .map(|v| {
                    v.parse()
                        .map_err(|_| format!("{k}: {v:?} is not an integer"))
                })
                .transpose()
        };
        // The old `tail` parameter; `all` means no tail.
        let tail_lines = match q.get("tail").map(String::as_str) {
            Some("all") => None,
            Some(t) if !t.is_empty() => Some(
                t.parse()
                    .map_err(|_| format!("tail: {t:?} is not an integer"))?,
            ),
            _ => int("tailLines")?,
        };
        let since_time = q
            .get("sinceTime")
            .filter(|v| !v.is_empty())
            .map(|v| {
                DateTime::parse_from_rfc3339(v)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| format!("sinceTime: {v:?}: {e}"))
            })
            .transpose()?;
        Ok(PodLogQuery {
            follow: boolean("follow")?,
            previous: boolean("previous")?,
            timestamps: boolean("timestamps")?,
            tail_lines,
            limit_bytes: int("limitBytes")?,
            since_seconds: int("sinceSeconds")?,
            since_time,
        })
    }

    /// Upstream's `ValidatePodLogOptions`, messages as the API server words them.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        if self.tail_lines.is_some_and(|t| t < 0) {
            errs.push("tailLines: Invalid value: must be greater than or equal to 0".into());
        }
        if self.limit_bytes.is_some_and(|b| b < 1) {
            errs.push("limitBytes: Invalid value: must be greater than 0".into());
        }
        if self.since_seconds.is_some() && self.since_time.is_some() {
            errs.push(
                "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified".into(),
            );
        }
        if self.since_seconds.is_some_and(|s| s < 1) {
            errs.push("sinceSeconds: Invalid value: must be greater than 0".into());
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

/// Whether the pod has a container (regular, init or ephemeral) of this name.
fn has_container(pod: &Pod, name: &str) -> bool {
    let Some(spec) = &pod.spec else {
        return false;
    };
    spec.containers.iter().any(|c| c.name == name)
        || spec
            .init_containers
            .iter()
            .flatten()
            .any(|c| c.name == name)
        || spec
            .ephemeral_containers
            .iter()
            .flatten()
            .any(|c| c.name == name)
}

/// The API status of container `name`, wherever it is listed.
fn api_status<'a>(pod: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    let s = pod.status.as_ref()?;
    [
        &s.container_statuses,
        &s.init_container_statuses,
        &s.ephemeral_container_statuses,
    ]
    .into_iter()
    .flatten()
    .flatten()
    .find(|c| c.name == name)
}

/// The runtime ID of the container whose log is asked for, or upstream's message why there is
/// none.
async fn find_container(
    state: &ServerState,
    pod: &Pod,
    container: &str,
    previous: bool,
) -> Result<String, String> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let filter = cri::pb::ContainerFilter {
        label_selector: HashMap::from([
            (labels::POD_UID.to_string(), uid),
            (labels::CONTAINER_NAME.to_string(), container.to_string()),
        ]),
        ..Default::default()
    };
    let mut found = state
        .runtime
        .list_containers(Some(filter))
        .await
        .map_err(|e| {
            format!(
                "listing the containers of pod {pod_name:?}: {}",
                e.message()
            )
        })?;
    let api = api_status(pod, container);
    let waiting = api.and_then(|s| s.state.as_ref()?.waiting.as_ref());
    if previous {
        return pick_previous(&mut found, waiting.is_some())
            .map(|c| c.id.clone())
            .ok_or_else(|| {
                format!("previous terminated container {container:?} in pod {pod_name:?} not found")
            });
    }
    sort_newest_first(&mut found);
    if let Some(c) = found.first() {
        return Ok(c.id.clone());
    }
    Err(match (api, waiting) {
        (None, _) => format!("container {container:?} in pod {pod_name:?} is not available"),
        (_, Some(w)) => match w.reason.as_deref().unwrap_or_default() {
            "ErrImagePull" => format!(
                "container {container:?} in pod {pod_name:?} is waiting to start: image can't be pulled"
            ),
            "ImagePullBackOff" => format!(
                "container {container:?} in pod {pod_name:?} is waiting to start: trying and failing to pull image"
            ),
            reason => {
                format!("container {container:?} in pod {pod_name:?} is waiting to start: {reason}")
            }
        },
        (Some(_), None) => {
            format!("container {container:?} in pod {pod_name:?} is waiting to start - no logs yet")
        }
    })
}

/// Newest attempt first (creation time breaks ties).
fn sort_newest_first(found: &mut [cri::pb::Container]) {
    found.sort_by_key(|c| {
        std::cmp::Reverse((
            c.metadata.as_ref().map(|m| m.attempt).unwrap_or(0),
            c.created_at,
        ))
    });
}

/// The container `previous` means: the attempt before the newest — or the newest itself when it
/// has exited and the pod status shows the container waiting to be restarted (upstream reads
/// `lastState.terminated`, which is then the newest).
fn pick_previous(found: &mut [cri::pb::Container], waiting: bool) -> Option<&cri::pb::Container> {
    sort_newest_first(found);
    let newest_exited = found
        .first()
        .is_some_and(|c| c.state == cri::pb::ContainerState::ContainerExited as i32);
    if newest_exited && waiting {
        found.first()
    } else {
        found.get(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, attempt: u32, state: cri::pb::ContainerState) -> cri::pb::Container {
        cri::pb::Container {
            id: id.into(),
            metadata: Some(cri::pb::ContainerMetadata {
                name: "c".into(),
                attempt,
            }),
            state: state as i32,
            ..Default::default()
        }
    }

    #[test]
    fn previous_is_the_attempt_before_or_the_last_terminated() {
        use cri::pb::ContainerState::{ContainerExited as Exited, ContainerRunning as Running};
        let pick = |cs: &[cri::pb::Container], waiting| {
            let mut cs = cs.to_vec();
            pick_previous(&mut cs, waiting).map(|c| c.id.clone())
        };
        // Restarted and running again: the attempt before.
        let restarted = [container("a0", 0, Exited), container("a1", 1, Running)];
        assert_eq!(pick(&restarted, false).as_deref(), Some("a0"));
        // Crash-looping, waiting for the next start: the newest exited one.
        let looping = [container("a0", 0, Exited), container("a1", 1, Exited)];
        assert_eq!(pick(&looping, true).as_deref(), Some("a1"));
        // Exited for good (restartPolicy Never): the attempt before, here none.
        assert_eq!(pick(&[container("a0", 0, Exited)], false), None);
        assert_eq!(pick(&[container("a0", 0, Running)], false), None);
        assert_eq!(pick(&[], true), None);
    }

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn decodes_pod_log_options() {
        let o = PodLogQuery::parse(&q(&[
            ("follow", "true"),
            ("timestamps", "1"),
            ("tailLines", "5"),
            ("limitBytes", "10"),
            ("sinceTime", "2026-01-01T00:00:00Z"),
        ]))
        .unwrap();
        assert!(o.follow && o.timestamps && !o.previous);
        assert_eq!(o.tail_lines, Some(5));
        assert_eq!(o.limit_bytes, Some(10));
        assert!(o.since_time.is_some());
        assert_eq!(
            PodLogQuery::parse(&q(&[("tail", "3")])).unwrap().tail_lines,
            Some(3)
        );
        assert_eq!(
            PodLogQuery::parse(&q(&[("tail", "all"), ("tailLines", "3")]))
                .unwrap()
                .tail_lines,
            None
        );
        assert!(PodLogQuery::parse(&q(&[("follow", "yes")])).is_err());
        assert!(PodLogQuery::parse(&q(&[("tailLines", "x")])).is_err());
        assert!(PodLogQuery::parse(&q(&[("sinceTime", "yesterday")])).is_err());
    }

    #[test]
    fn validates_like_upstream() {
        let ok = PodLogQuery {
            tail_lines: Some(0),
            since_seconds: Some(1),
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
        for bad in [
            PodLogQuery {
                tail_lines: Some(-1),
                ..Default::default()
            },
            PodLogQuery {
                limit_bytes: Some(0),
                ..Default::default()
            },
            PodLogQuery {
                since_seconds: Some(0),
                ..Default::default()
            },
            PodLogQuery {
                since_seconds: Some(5),
                since_time: Some(Utc::now()),
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}

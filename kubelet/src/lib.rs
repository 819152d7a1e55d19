//! Capstan's kubelet: the node agent that registers this machine as a Node and runs the pods
//! bound to it.
//!
//! - `config`: KubeletConfiguration files and upstream's flags, resolved into the effective
//!   [`config::Config`] (paths of the root dir, the built-in runtime, logs, CNI, cgroups).
//! - `client`: the API client (kube-rs) built from a kubeconfig.
//! - `node`: Node registration, status and the node Lease.
//! - `runtime`: the kubelet's view of a CRI runtime (built-in in-process, or remote over gRPC);
//!   `runtime_status`: its periodic health check, feeding the Node's Ready condition.
//! - `plan`: upstream's computePodActions as a pure function, and the CRI configs for a pod.
//! - `pod_status`: upstream's generateAPIPodStatus as pure functions.
//! - `probe`: liveness, readiness and startup probe workers.
//! - `backoff`: the container restart back-off (CrashLoopBackOff) with an injectable clock.
//! - `qos`: QoS classes, the pod cgroup hierarchy and the CPU shares / quota conversions.
//! - `quantity`: resource quantities (`100m`, `1.5Gi`) as exact numbers.
//! - `env`: container environment variables.
//! - `events`: the event recorder (core/v1 Events, aggregated, written in the background).
//! - `volume`: volumes, the atomic writer, per-pod DNS files.
//! - `pods`, `pod_worker`, `pleg`, `status_manager`: the pod sources and dispatch, one task per
//!   pod, runtime events, the status writer.
//! - `container_gc`, `image_gc`, `container_log_manager`: housekeeping — dead containers and
//!   sandboxes, unused images, container log rotation; `local_path`: the data of released
//!   local-path volumes of this node.
//! - `static_pods`, `mirror_pods`: pods from `--pod-manifest-path` and their mirrors in the API.
//! - `object_cache`: the watched ConfigMaps, Secrets and Services pods read.
//! - `server`, `logs`: the kubelet's HTTPS server (`/containerLogs`, `/healthz`, `/pods`,
//!   `/configz`, `/metrics`, `/metrics/resource`, `/stats/summary`) and reading CRI log files.
//! - `metrics`, `stats`: the kubelet's Prometheus registry and the stats provider (node and pod
//!   usage, the `stats/v1alpha1` Summary).
//! - `agent`: [`Kubelet`], what `capstan kubelet` runs.

pub mod agent;
pub mod backoff;
pub mod certificate;
pub mod client;
pub mod config;
pub mod container_gc;
pub mod container_log_manager;
pub mod env;
pub mod events;
pub mod image_gc;
pub mod local_path;
pub mod logs;
pub mod metrics;
pub mod mirror_pods;
pub mod node;
pub mod object_cache;
pub mod plan;
pub mod pleg;
pub mod pod_status;
pub mod pod_worker;
pub mod pods;
pub mod probe;
pub mod qos;
pub mod runtime;
pub mod runtime_status;
pub mod server;
pub mod static_pods;
pub mod stats;
pub mod status_manager;
pub mod volume;

pub use machinery::quantity;

pub use agent::Kubelet;
